"""What the fuzzer runs graphc on, and what it requires of each run.

A `Target` pairs a Hypothesis strategy (built from a `Context`: the files a session makes once)
with a check that runs graphc on one drawn example and returns its `Finding`s: each a problem
(see `harness.problems`) with the command and the input that reproduce it. The normal tests and
the long mode run the same targets.
"""

from __future__ import annotations

import difflib
import gzip
import inspect
import json
import os
import re
import shutil
import tempfile
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

from .files import (
    MNIST_NAMES,
    Checkpoint,
    Files,
    MnistCase,
    fake_mnist,
    mnist_files,
    npy_files,
    npz_files,
    set_values,
)
from .graphs import GeneratedGraph, NearValidGraph, near_valid_graphs, valid_graphs
from .harness import Problem, SourceFile, mask, problems, run_graphc
from .mutate import Mutated, mutated

ROOT = Path(__file__).resolve().parent.parent.parent
MODELS = ROOT / "models"

# A small graph with every kind of input, for --set and --input: x floats with a batch dim,
# t one-hot labels, k class indices, s a scalar; W and b params.
ARGS_GRAPH = """\
graph args {
    dim N = 2
    input x: [N, 3] = uniform(0, 1)
    input t: [N, 2] = onehot from labels
    input k: i64[N] = [0, 1]
    input s = 1.5
    param W: [3, 2] = normal(0.1)
    param b: [2] = zeros
    h = affine(x, W, b)
    loss = softmax_loss(h, t)
    loss2 = softmax_loss(h, k)
    scaled = mul(loss2, s)
    total = add(loss, scaled)
    output total
}
"""
ARGS_SHAPES = {"x": (2, 3), "t": (2, 2), "k": (2,), "s": (), "W": (3, 2), "b": (2,)}


@dataclass(frozen=True)
class Context:
    """Files made once per session (or per long-mode run) and shared by every example."""

    work: Path
    args_graph: Path
    weights: Path  # a real checkpoint of models/two_layer_net.graph, from `graphc train`
    mnist_dir: Path  # MNIST-shaped IDX files (blank images), gzipped


def make_context(work: Path) -> Context:
    work.mkdir(parents=True, exist_ok=True)
    args_graph = work / "args.graph"
    args_graph.write_text(ARGS_GRAPH)
    mnist_dir = work / "mnist"
    mnist_dir.mkdir(exist_ok=True)
    for role, content in fake_mnist().items():
        (mnist_dir / MNIST_NAMES[role]).write_bytes(gzip.compress(content, compresslevel=1))
    weights = work / "W.npz"
    argv = ["train", str(MODELS / "two_layer_net.graph"), "--data-dir", str(mnist_dir), "--iters", "5"]
    outcome = run_graphc([*argv, "--optimizer", "adam", "--save", str(weights)], timeout=120)
    if outcome.status != 0:
        raise RuntimeError(f"cannot make the fuzzer's checkpoint:\n{outcome.stderr}")
    return Context(work, args_graph, weights, mnist_dir)


@dataclass(frozen=True)
class Finding:
    problem: Problem
    command: tuple[str, ...]  # argv, the input's path shown as its name
    input: bytes  # the input that was fuzzed: a .graph file, an .npy, a --set value...
    input_name: str  # FILE.graph, x.npy, W.npz, train-images-idx3-ubyte.gz, --set
    note: str = ""  # how the input was made (mutations, mistakes)

    @property
    def signature(self) -> str:
        return self.problem.signature

    def reproducer(self) -> str:
        """The command and the input, as a person reproduces them."""
        return f"$ graphc {' '.join(self.command)}\n{self.input_name}:\n{compact(self.input)}"


def compact(data: bytes, limit: int = 2000) -> str:
    """Bytes shown for a person: text as it is (runs of one character as `⟪'[' × 20000⟫`,
    odd characters escaped), other bytes as a Python literal; long inputs cut."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None:
        shown = repr(data)
    else:
        shown = "".join(c if c.isprintable() or c in "\n" else repr(c)[1:-1] for c in text)
    shown = re.sub(r"(.)\1{15,}", lambda m: f"⟪{m[1]!r} × {len(m[0])}⟫", shown)
    return shown if len(shown) <= limit else shown[:limit] + f"... ({len(data):,} bytes in all)"


@dataclass(frozen=True)
class Target:
    name: str
    strategy: Callable[[Context], st.SearchStrategy]
    check: Callable[[Context, Any], list[Finding]]
    share: float  # of the long mode's inputs


# --- graph files ----------------------------------------------------------------------------


def _feed_arguments(feeds: dict[str, np.ndarray], directory: Path, as_npy: bool) -> list[str]:
    argv = []
    for name, value in feeds.items():
        if as_npy:
            path = directory / f"{name[:50]}.npy"
            np.save(path, value)
            argv += ["--input", f"{name}={path}"]
        else:
            argv += ["--set", f"{name}={json.dumps(value.tolist())}"]
    return argv


def check_graph_bytes(
    data: bytes,
    commands: list[list[str]],
    note: str = "",
    expect: Callable[[list[str], Any], list[Problem]] | None = None,
) -> list[Finding]:
    """Run each command (FILE standing for the graph file) on `data`; every problem found.

    A command of the file alone must answer with diagnostics that point into the file.
    `expect(argv, outcome)` adds what a particular input requires (a valid graph: exit 0).
    """
    findings = []
    with tempfile.TemporaryDirectory(prefix="graphc-fuzz-") as tmp:
        path = Path(tmp) / "FILE.graph"
        path.write_bytes(data)
        source = SourceFile(str(path), data.decode("utf-8", "replace").removeprefix("\ufeff"))
        for command in commands:
            argv = [str(path) if a == "FILE" else a.replace("{tmp}", tmp) for a in command]
            outcome = run_graphc(argv)
            alone = len(command) == 2 or command[:3] == ["compile", "FILE", "--emit"] and len(command) == 4
            found = problems(outcome, source if alone else None)
            if expect is not None and outcome.status is not None and not found:
                found = expect(command, outcome)
            shown = tuple(a.replace(tmp, "TMP") for a in argv)
            findings += [Finding(p, shown, data, "FILE.graph", note) for p in found]
    return findings


FILE_COMMANDS = [
    ["check", "FILE"],
    ["run", "FILE"],
    ["compile", "FILE", "--emit", "python"],
    ["explain", "FILE"],
    ["fmt", "--check", "FILE"],
]


def _valid_expectations(graph: GeneratedGraph, mode: str) -> Callable[[list[str], Any], list[Problem]]:
    def expect(command: list[str], outcome) -> list[Problem]:
        allowed = {"check": (0,), "compile": (0,), "run": (0, 1) if graph.has_expects else (0,), "gradcheck": (0, 1)}
        allowed |= {"explain": (0,), "fmt": (0, 1), "draw": (0,), "time": (0,)}
        exporting = command[0] == "compile" and ("onnx" in command or "torch" in command)
        if exporting and outcome.status == 2 and set(re.findall(r"error\[(\w+)\]", outcome.stderr)) == {"E906"}:
            return []  # an op the exporter does not cover, refused as it should be
        if outcome.status not in allowed[command[0]]:
            first = next((line for line in outcome.stderr.splitlines() if ": error[" in line), outcome.stderr[:200])
            message = re.split(r": error\[\w+\]: ", first, maxsplit=1)[-1]
            return [Problem("valid graph rejected", mask(message), outcome.stderr[:2000])]
        if command[0] == "compile" and "python" in command:
            try:
                compile(outcome.stdout, "<generated>", "exec")
            except SyntaxError as err:
                return [Problem("generated module", f"SyntaxError: {err.msg}", outcome.stdout[:2000])]
        if command[:4] == ["compile", "FILE", "--emit", "expanded"]:
            return _expanded_problems(graph, outcome.stdout, mode)
        return []

    return expect


def _expanded_problems(graph: GeneratedGraph, expanded: str, mode: str) -> list[Problem]:
    """`compile --emit expanded` writes a .graph file that compiles to the graph it expands:
    the same plan, step for step."""
    from graphc.compiler import front_end
    from graphc.errors import GraphcError
    from graphc.plan import make_plan

    original = front_end(graph.text, "FILE.graph")[0]
    try:
        [again] = front_end(expanded, "expanded.graph")
    except GraphcError as err:
        message = str(err)
        return [Problem("expanded graph rejected", mask(message.splitlines()[0]), f"{message}\n{expanded}"[:3000])]
    plans = [make_plan(g.checked, g.types, mode=mode).text() for g in (original, again)]
    if plans[0] != plans[1]:
        diff = "\n".join(difflib.unified_diff(*(p.splitlines() for p in plans), "graph", "expanded", lineterm=""))
        return [Problem("expanded graph differs", "its plan is not the graph's", diff[:3000])]
    return []


def check_valid_graph(context: Context, drawn: tuple[GeneratedGraph, bool, str, str]) -> list[Finding]:
    graph, as_npy, extra, mode = drawn
    with tempfile.TemporaryDirectory(prefix="graphc-feeds-") as tmp:
        feeds = _feed_arguments(graph.feeds, Path(tmp), as_npy)
        moded = ["--mode", mode] if mode == "eval" else []  # train is every command's default
        commands = [
            ["check", "FILE"],
            ["run", "FILE", *feeds, *moded],
            ["compile", "FILE", "--emit", "python", *moded],
            ["gradcheck", "FILE", *feeds, *moded],
            [extra.split()[0], "FILE", *extra.split()[1:], *moded],
            ["explain", "FILE", *feeds, *moded],
            ["fmt", "--check", "FILE"],
            ["draw", "FILE", "-o", "{tmp}/steps.html", *feeds, *moded],
        ]
        if graph.second_graph:
            commands.append(["run", "FILE", "--graph", graph.second_graph])
        return check_graph_bytes(graph.text.encode("utf-8"), commands, "valid", _valid_expectations(graph, mode))


def valid_strategy(context: Context) -> st.SearchStrategy:
    # A command of each: compile's other forms (exports, the expanded graph), time.
    extras = st.sampled_from(
        ["compile --emit plan", "compile --emit json", "compile --emit dot", "compile --emit python --wrt params",
         "compile --emit plan --batch 3", "compile --emit python --dtype float32", "compile --emit json --wrt inputs",
         "compile --emit expanded", "compile --emit expanded", "compile --emit torch",
         "compile --emit onnx -o {tmp}/m.onnx", "compile --emit onnx --train-step -o {tmp}/m.onnx",
         "time --iters 1 --warmup 0"]
    )  # fmt: skip
    return st.tuples(valid_graphs(), st.booleans(), extras, MODES)


MODES = st.sampled_from(["train", "train", "eval"])  # train mode is the default


def check_near_valid(context: Context, case: NearValidGraph) -> list[Finding]:
    data = case.text.encode("utf-8", "surrogatepass")
    feeds = _feed_arguments(case.feeds, Path("/nonexistent"), as_npy=False)
    commands = FILE_COMMANDS + ([["run", "FILE", *feeds]] if feeds else [])
    return check_graph_bytes(data, commands, "mistakes: " + ", ".join(case.mistakes))


def model_seeds() -> dict[str, bytes]:
    return Files({path.name: path.read_bytes() for path in sorted(MODELS.glob("*.graph"))})


def mutated_strategy(context: Context) -> st.SearchStrategy:
    return mutated(model_seeds())


def check_mutated(context: Context, m: Mutated) -> list[Finding]:
    return check_graph_bytes(m.data, FILE_COMMANDS, f"{m.seed}: " + "; ".join(m.steps))


# --- generated code against the interpreter (issue 9, 2b) ------------------------------------


def import_source(source: str) -> types.ModuleType:
    module = types.ModuleType("generated")
    exec(compile(source, "<generated>", "exec"), module.__dict__)
    return module


def _differences(what: str, actual: dict, expected: dict) -> list[str]:
    if set(actual) != set(expected):
        return [f"{what}: module has {sorted(actual)}, interpreter {sorted(expected)}"]
    found = []
    for name in expected:
        a, e = np.asarray(actual[name]), np.asarray(expected[name])
        if a.shape != e.shape or a.dtype != e.dtype:
            found.append(f"{what} `{name}`: module {a.dtype}{list(a.shape)}, interpreter {e.dtype}{list(e.shape)}")
        elif not np.allclose(a, e, rtol=1e-12, atol=1e-12, equal_nan=True):
            found.append(f"{what} `{name}`: module {a.tolist()}, interpreter {e.tolist()}")
    return found


def compare_codegen(graph: GeneratedGraph, mode: str = "train") -> list[str]:
    """How the generated module and the interpreter differ on `graph` in `mode`: forward (and the
    running statistics it moves), backward, and one training step's loss and param gradients.
    [] if they agree to 1e-12. Both draw dropout's masks from generators in the same state."""
    from graphc.codegen import load_module, python_module
    from graphc.compiler import front_end
    from graphc.program import Program

    compiled = front_end(graph.text, "g.graph")[0]
    program = Program(compiled, seed=0, mode=mode)
    feeds = {n: program.feed(n, v) for n, v in {**program.default_feeds(), **graph.feeds}.items()}
    module = import_source(python_module(compiled, mode=mode))
    params = module.init_params(0)
    found = _differences("param", params, dict(program.params))
    if found:
        return found

    def same_draws() -> np.random.Generator:
        generator = np.random.default_rng()
        generator.bit_generator.state = program.rng.bit_generator.state
        return generator

    # The module's keywords are the graph's input names, renamed where Python needs it.
    parameters = list(inspect.signature(module.forward).parameters)
    keywords = dict(zip(program.plan.inputs, parameters[1:]))
    state = {name: value.copy() for name, value in program.state.items()}
    extra = {"state": state} if "state" in parameters else {}
    extra |= {"rng": same_draws()} if "rng" in parameters else {}
    # NaN and inf (div by 0, exp of 1000) are results to compare, as the CLI reports them, not warnings.
    with np.errstate(all="ignore"):
        outputs, saved = module.forward(params, **{keywords[n]: v for n, v in feeds.items()}, **extra)
        grads = module.backward(params, saved)
    found += _differences("output", outputs, program.forward(**feeds))
    found += _differences("state", state, program.state)
    found += _differences("gradient", grads, program.backward())
    if program.param_names:
        model = load_module(compiled, mode=mode)
        state = {name: value.copy() for name, value in program.state.items()}
        with np.errstate(all="ignore"):  # as training runs it
            loss, param_grads = model.loss_and_grads(dict(program.params), feeds, **model.extra(state, same_draws()))
            expected_loss, expected_grads = program.loss_and_grads(feeds)
        found += _differences("training loss", {"loss": loss}, {"loss": expected_loss})
        found += _differences("training gradient", param_grads, expected_grads)
        found += _differences("training state", state, program.state)
    return found


def check_codegen(context: Context, drawn: tuple[GeneratedGraph, str]) -> list[Finding]:
    graph, mode = drawn
    data = graph.text.encode("utf-8")
    try:
        differences = compare_codegen(graph, mode)
    except Exception as err:  # noqa: BLE001 - every exception is a finding here
        import traceback

        frames = [
            f
            for f in traceback.extract_tb(err.__traceback__)
            if f.filename in ("<generated>",) or "/graphc/" in f.filename
        ]
        where = f"{Path(frames[-1].filename).name}:{frames[-1].name}" if frames else "?"
        cause = f"{type(err).__name__} in {where}"
        detail = "".join(traceback.format_exception(err)[-6:])
        return [
            Finding(
                Problem("codegen vs interpreter", cause, detail),
                ("(python)", "compare", "FILE", "--mode", mode),
                data,
                "FILE.graph",
            )
        ]
    return [
        Finding(
            Problem("codegen vs interpreter", mask(d.split(":")[0]), d),
            ("(python)", "compare", "FILE", "--mode", mode),
            data,
            "FILE.graph",
        )
        for d in differences
    ]


def codegen_strategy(context: Context) -> st.SearchStrategy:
    return st.tuples(valid_graphs(dtype="f64"), MODES)


# --- command-line values and files -----------------------------------------------------------


@st.composite
def set_arguments(draw) -> list[str]:
    names = st.sampled_from([*ARGS_SHAPES, "nope", "", " x", "x ", "X", "total", "h", "N", "é"])
    argv = []
    for _ in range(draw(st.integers(1, 3))):
        argv += ["--set", f"{draw(names)}={draw(set_values())}"]
    if draw(st.integers(0, 9)) == 0:
        argv += ["--set", draw(st.sampled_from(["x", "=", "x=", "=1", "x==1"]))]
    return argv


def set_strategy(context: Context) -> st.SearchStrategy:
    return st.tuples(set_arguments(), st.sampled_from(["run", "gradcheck"]))


def check_set(context: Context, drawn: tuple[list[str], str]) -> list[Finding]:
    argv, command = drawn
    outcome = run_graphc([command, str(context.args_graph), *argv])
    shown = (command, "args.graph", *argv)
    value = " ".join(argv).encode("utf-8", "surrogatepass")
    return [Finding(p, shown, value, "--set") for p in problems(outcome)]


def npy_strategy(context: Context) -> st.SearchStrategy:
    names = st.sampled_from(list(ARGS_SHAPES) + ["two_layer_net:x", "two_layer_net:t"])
    return names.flatmap(
        lambda name: st.tuples(
            st.just(name),
            npy_files(shape_hint=(3, 784) if name == "two_layer_net:x" else ARGS_SHAPES.get(name, (3, 10))),
        )
    )


def check_npy(context: Context, drawn: tuple[str, bytes]) -> list[Finding]:
    name, data = drawn
    graph = str(context.args_graph)
    if name.startswith("two_layer_net:"):
        graph, name = str(MODELS / "two_layer_net.graph"), name.split(":")[1]
    with tempfile.TemporaryDirectory(prefix="graphc-npy-") as tmp:
        path = Path(tmp) / f"{name}.npy"
        path.write_bytes(data)
        argv = ["run", graph, "--input", f"{name}={path}"]
        outcome = run_graphc(argv)
    shown = ("run", Path(graph).name, "--input", f"{name}={name}.npy")
    return [Finding(p, shown, data, f"{name}.npy") for p in problems(outcome)]


def npz_strategy(context: Context) -> st.SearchStrategy:
    checkpoint = Checkpoint.read(context.weights.read_bytes())
    return st.tuples(npz_files(checkpoint), st.sampled_from(["run", "run", "eval", "train"]))


def check_npz(context: Context, drawn: tuple[bytes, str]) -> list[Finding]:
    data, command = drawn
    model = str(MODELS / "two_layer_net.graph")
    with tempfile.TemporaryDirectory(prefix="graphc-npz-") as tmp:
        path = Path(tmp) / "W.npz"
        path.write_bytes(data)
        argv = {
            "run": ["run", model, "--weights", str(path)],
            "eval": ["eval", model, "--weights", str(path), "--data-dir", str(context.mnist_dir)],
            "train": ["train", model, "--resume", str(path), "--data-dir", str(context.mnist_dir), "--iters", "6"],
        }[command]
        outcome = run_graphc(argv)
    shown = tuple(a.replace(str(path), "W.npz").replace(str(context.mnist_dir), "MNIST") for a in argv)
    return [Finding(p, shown, data, "W.npz") for p in problems(outcome)]


def mnist_strategy(context: Context) -> st.SearchStrategy:
    raw = Files(_fake_mnist_raw())
    gzipped = Files({role: (context.mnist_dir / MNIST_NAMES[role]).read_bytes() for role in MNIST_NAMES})
    return mnist_files(raw, gzipped)


_RAW: dict[str, bytes] = {}


def _fake_mnist_raw() -> dict[str, bytes]:
    if not _RAW:
        _RAW.update(fake_mnist())
    return _RAW


def check_mnist(context: Context, case: MnistCase) -> list[Finding]:
    model = str(MODELS / "two_layer_net.graph")
    with tempfile.TemporaryDirectory(prefix="graphc-mnist-") as tmp:
        for role, name in MNIST_NAMES.items():
            if role != case.role:
                shutil.copyfile(context.mnist_dir / name, Path(tmp) / name)
            elif case.data is not None:
                (Path(tmp) / name).write_bytes(case.data)
        argv = ["eval", model, "--weights", str(context.weights), "--data-dir", tmp]
        # Offline: a missing file sends graphc to a mirror that refuses at once.
        saved = os.environ.get("GRAPHC_MNIST_MIRROR")
        os.environ["GRAPHC_MNIST_MIRROR"] = "http://127.0.0.1:9/"
        try:
            outcome = run_graphc(argv)
        finally:
            if saved is None:
                del os.environ["GRAPHC_MNIST_MIRROR"]
            else:
                os.environ["GRAPHC_MNIST_MIRROR"] = saved
    shown = ("eval", "two_layer_net.graph", "--weights", "W.npz", "--data-dir", "DIR")
    data = case.data if case.data is not None else b""
    return [Finding(p, shown, data, MNIST_NAMES[case.role], case.description) for p in problems(outcome)]


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("valid", valid_strategy, check_valid_graph, 0.25),
        Target("near_valid", lambda c: near_valid_graphs(), check_near_valid, 0.25),
        Target("mutated", mutated_strategy, check_mutated, 0.25),
        Target("codegen", codegen_strategy, check_codegen, 0.10),
        Target("set", set_strategy, check_set, 0.05),
        Target("npy", npy_strategy, check_npy, 0.05),
        Target("npz", npz_strategy, check_npz, 0.04),
        Target("mnist", mnist_strategy, check_mnist, 0.01),
    )
}
