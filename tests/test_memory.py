"""Memory planning: the prediction is what the interpreter really holds, the
interpreter holds nothing dead, and adding gradients in place never writes
into an array anyone else holds."""

from __future__ import annotations

import dataclasses
import json
import textwrap
import weakref
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphc.cli import main
from graphc.compiler import front_end, front_end_file
from graphc.errors import GraphcError
from graphc.memory import bind_dims, fmt_bytes, predict_memory
from graphc.plan import grad_name, make_plan
from graphc.program import Program
from graphc.run import Interpreter

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted((ROOT / "models").glob("*.graph"))

# Fan-out summed in place mid-way through backward, and steps backward never
# reads (k: x is data), whose saved tensors must die at once.
FAN_OUT = textwrap.dedent("""
    graph fan {
        dim N = 3
        input x: [N, 4] = uniform(-1, 1)
        param w: [4] = normal(1)
        k = relu(x)
        a = mul(k, w)
        b = relu(a)
        c = mul(b, b)
        d = add(c, b)
        e = sigmoid(d)
        f = mul(e, k)
        g = softmax_loss(f, x)
        output g
    }
""")


def graphs_of(path) -> list:
    if path == "fan":
        return front_end(FAN_OUT, "fan.graph")
    return front_end_file(path)


GRAPHS = MODELS + ["fan", ROOT / "docs" / "modes" / "bn_dropout.graph"]


# --- measuring what the interpreter holds ------------------------------------------


def _base(array: np.ndarray) -> np.ndarray:
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def _leaves(*containers):
    """Every array and numpy scalar inside nested tuples, lists and dicts."""
    for x in containers:
        if isinstance(x, (np.ndarray, np.generic)):
            yield x
        elif isinstance(x, (tuple, list)):
            yield from _leaves(*x)
        elif isinstance(x, dict):
            yield from _leaves(*x.values())


def _arrays(*containers) -> dict[int, object]:
    """Every distinct base array (and numpy scalar) reachable from the containers."""
    found: dict[int, object] = {}
    for x in _leaves(*containers):
        base = _base(x) if isinstance(x, np.ndarray) else x
        found[id(base)] = base
    return found


def held_bytes(*containers) -> int:
    return sum(a.nbytes for a in _arrays(*containers).values())


def environment(program: Program, dims: dict[str, int], dtype=np.float64, seed: int = 0) -> dict[str, np.ndarray]:
    """Consts, params, state and random inputs of the declared shapes, as the trainer feeds them."""
    env = program.fixed_values()
    rng = np.random.default_rng(seed)
    for name in program.input_names:
        t = program.types[name]
        shape = tuple(dims[d] if isinstance(d, str) else d for d in t.shape)
        env[name] = rng.random(shape).astype(dtype)
    return env


def measure(plan, env) -> list[int]:
    """Bytes held after each step, as predict_memory counts them."""
    held: list[int] = []
    interpreter = Interpreter(
        plan, free=True, observe=lambda phase, i, *containers: held.append(held_bytes(env, *containers))
    )
    tape = interpreter.forward(env)
    interpreter.backward(tape, np.ones_like(env[plan.seed]))
    return held


CASES = [
    (path, batch, wrt, dtype)
    for path in GRAPHS
    for batch in (1, 7, 100)
    for wrt in ("all", "params")
    for dtype in ("float64", "float32")
]


@pytest.mark.parametrize("path, batch, wrt, dtype", CASES, ids=lambda v: getattr(v, "stem", str(v)))
def test_prediction_is_what_the_interpreter_holds(path, batch, wrt, dtype):
    for compiled in graphs_of(path):
        program = Program(compiled, dtype=dtype)
        plan = make_plan(program.checked, program.types, wrt=program.param_names if wrt == "params" else None)
        dims = bind_dims(plan, program.ir, batch)
        predicted = predict_memory(plan, dims)
        actual = measure(plan, environment(program, dims, np.dtype(dtype)))
        assert [s.held for s in predicted.steps] == actual
        assert predicted.peak == max(actual)


def test_two_layer_net_at_batch_100_holds_what_the_book_says(models):
    [compiled] = front_end_file(models / "two_layer_net.graph")
    plan = make_plan(compiled.checked, compiled.types, wrt=("W1", "b1", "W2", "b2"))
    memory = predict_memory(plan, bind_dims(plan, compiled.ir, 100))
    params = (784 * 50 + 50 + 50 * 10 + 10) * 8
    inputs = (100 * 784 + 100 * 10) * 8
    assert (memory.params, memory.inputs) == (params, inputs)
    forward = {s.label: s for s in memory.steps if s.phase == "forward"}
    relu = forward["relu1 = relu(affine1)"]
    assert dict(relu.made) == {"relu1": 100 * 50 * 8, "relu1.mask": 100 * 50}  # the mask is bool
    assert dict(relu.frees) == {"affine1": 100 * 50 * 8}
    # The peak: the last backward step, which holds every param's gradient,
    # the loss and the gradient it reads, d_affine1.
    assert memory.peak_step.phase == "backward" and memory.peak_step.number == 1
    assert memory.peak == params + inputs + 8 + params + 100 * 50 * 8


# --- nothing dead is held ----------------------------------------------------------


class Tracker:
    """Weak references to every array an op call returns, and a check, before
    each op call and after each step, that every one still alive is held by
    the interpreter's env, tape or gradients (or is an argument of the call)."""

    def __init__(self, env: dict):
        self.env = env
        self.refs: list[weakref.ref] = []
        self.containers: tuple = ()
        self.leaks: list[str] = []

    def wrap(self, kind, step, function):
        def tracked(*args):
            self.check(f"before {kind} {getattr(step, 'out', getattr(step, 'node', ''))}", args)
            result = function(*args)
            self._track(result)
            return result

        return tracked

    def observe(self, phase, index, *containers):
        self.containers = containers
        self.check(f"after {phase} step {index}", ())

    def check(self, where: str, args) -> None:
        reachable = _reachable_ids(self.env, *self.containers, args)
        stray = [a.shape for a in self.alive() if id(a) not in reachable]
        if stray:
            self.leaks.append(f"{where}: {len(stray)} arrays held outside env, tape and grads: {stray}")

    def _track(self, x):
        if isinstance(x, np.ndarray):
            self.refs.append(weakref.ref(x))
        elif isinstance(x, (tuple, list)):
            for y in x:
                self._track(y)

    def alive(self) -> list[np.ndarray]:
        return [a for a in (r() for r in self.refs) if a is not None]


def _reachable_ids(*containers) -> set[int]:
    """The ids of every array reachable from the containers, views' bases included."""
    ids = set()
    for x in _leaves(*containers):
        while isinstance(x, np.ndarray):
            ids.add(id(x))
            x = x.base
    return ids


@pytest.mark.parametrize("path", GRAPHS, ids=lambda p: getattr(p, "stem", p))
@pytest.mark.parametrize("wrt", ["all", "params"])
def test_free_interpreter_holds_no_dead_array(path, wrt):
    for compiled in graphs_of(path):
        program = Program(compiled)
        plan = make_plan(program.checked, program.types, wrt=program.param_names if wrt == "params" else None)
        dims = bind_dims(plan, program.ir, 5)
        env = environment(program, dims)
        tracker = Tracker(env)
        live_names: list[set[str]] = []

        def observe(phase, index, *containers):
            tracker.observe(phase, index, *containers)  # noqa: B023 (called within this iteration)
            if phase == "forward":
                live_names.append(set(env))  # noqa: B023

        interpreter = Interpreter(plan, free=True, observe=observe, wrap=tracker.wrap)
        tape = interpreter.forward(env)
        grads = interpreter.backward(tape, np.ones_like(env[plan.seed]))
        assert not tracker.leaks
        assert all(entry is None for entry in tape), "backward releases every step's saved tensors"
        # After the pass only results are held: the gradients returned, the outputs.
        reachable = _reachable_ids(env, grads)
        assert all(id(a) in reachable for a in tracker.alive())
        fixed = set(plan.inputs) | set(program.fixed_values())  # and state, and the generator
        assert set(env) == fixed | set(plan.outputs)
        written = {w.target for s in plan.backward for w in s.writes}
        assert set(grads) - {grad_name(plan.seed)} == {grad_name(w) for w in plan.wrt} & written
        # env holds a forward value exactly while a later step reads it, or it is an output.
        assert len(live_names) == len(plan.forward)  # observed after every forward step
        for i, names in enumerate(live_names):
            later = {a for step in plan.forward[i:] for a in step.args}
            made = {step.out for step in plan.forward[: i + 1]}
            assert names - fixed == made & (later | set(plan.outputs) | {plan.forward[i].out}), i


# --- gradients added in place write into nobody else's array --------------------------


@st.composite
def dag_graphs(draw):
    """Random DAGs of add, mul, relu and sigmoid with fan-out and broadcasting."""
    values = {"x": "[3]", "y": "[2, 3]", "p": "[3]", "s": "[]", "q": "[2, 1]"}
    lines = []
    names = list(values)
    for i in range(draw(st.integers(2, 9))):
        op = draw(st.sampled_from(["add", "mul", "relu", "sigmoid", "add", "mul"]))
        a = draw(st.sampled_from(names))
        if op in ("add", "mul"):
            b = draw(st.sampled_from(names))
            lines.append(f"v{i} = {op}({a}, {b})")
        else:
            lines.append(f"v{i} = {op}({a})")
        names.append(f"v{i}")
    # Sum a few values into the output so that several paths reach it.
    out = names[-1]
    for j, extra in enumerate(draw(st.lists(st.sampled_from(names[5:]), max_size=3))):
        lines.append(f"w{j} = add({out}, {extra})")
        out = f"w{j}"
    head = [
        "graph g {",
        "    input x: [3] = uniform(-1, 1)",
        "    input y: [2, 3] = uniform(-1, 1)",
        "    param p: [3] = normal(1)",
        "    param s: [] = normal(1)",
        "    param q: [2, 1] = normal(1)",
    ]
    return "\n".join(head + ["    " + line for line in lines] + [f"    output {out}", "}", ""])


def _out_of_place(plan):
    """The same plan with every fan-out sum made into a fresh array."""
    steps = tuple(
        dataclasses.replace(step, writes=tuple(dataclasses.replace(w, in_place=False) for w in step.writes))
        for step in plan.backward
    )
    return dataclasses.replace(plan, backward=steps)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dag_graphs(), st.integers(0, 2**16))
def test_in_place_sums_never_write_into_anyone_elses_array(text, seed):
    [compiled] = front_end(text, "dag.graph")
    program = Program(compiled, seed=seed)
    plan = make_plan(program.checked, program.types)
    env = dict(program.consts)
    env.update(program.params)
    env.update(program.default_feeds())
    before = {k: np.array(v, copy=True) for k, v in env.items()}
    interpreter = Interpreter(plan, free=True)
    tape = interpreter.forward(env)
    out = env[plan.seed]
    seed_array = np.full(np.shape(out), 1.5)
    grads = interpreter.backward(tape, seed_array)
    # The caller's arrays are as they were: inputs, params, consts, the seed.
    for name, value in before.items():
        np.testing.assert_array_equal(env[name], value, err_msg=name)
    np.testing.assert_array_equal(seed_array, 1.5)
    # No gradient handed back is another's array, the seed, or a value's.
    held = [g for g in grads.values() if isinstance(g, np.ndarray)]
    ids = [id(_base(g)) for g in held]
    assert len(set(ids)) == len(ids)
    assert id(seed_array) not in ids
    assert not set(ids) & {id(_base(v)) for v in env.values() if isinstance(v, np.ndarray)}
    # And adding in place changed nothing: the same plan summing into fresh arrays agrees.
    env2 = {k: np.array(v, copy=True) for k, v in before.items()}
    reference = Interpreter(_out_of_place(plan), free=True)
    expected = reference.backward(reference.forward(env2), np.full(np.shape(out), 1.5))
    assert set(grads) == set(expected)
    for name in expected:
        np.testing.assert_array_equal(grads[name], expected[name], err_msg=name)


def test_loss_and_grads_hands_back_separate_arrays():
    [compiled] = front_end(
        textwrap.dedent("""
        graph g {
            param p: [3] = normal(1)
            param q: [3] = normal(1)
            s = add(p, q)
            output s
        }
    """),
        "g.graph",
    )
    program = Program(compiled)
    loss, grads = program.loss_and_grads({})
    assert grads["p"] is not grads["q"]
    grads["p"] += 1  # an optimizer's in-place update touches one gradient only
    np.testing.assert_array_equal(grads["q"], np.ones(3))


# --- float32 end to end ------------------------------------------------------------------


@pytest.mark.parametrize("path", GRAPHS, ids=lambda p: getattr(p, "stem", p))
@pytest.mark.parametrize("wrt", ["all", "params"])
def test_float32_step_makes_only_float32(path, wrt):
    for compiled in graphs_of(path):
        program = Program(compiled, dtype="float32")
        plan = make_plan(program.checked, program.types, wrt=program.param_names if wrt == "params" else None)
        dims = bind_dims(plan, program.ir, 4)
        env = environment(program, dims, np.float32)
        made: list[tuple[str, str, np.dtype]] = []

        def wrap(kind, step, function):
            def checked(*args):
                result = function(*args)
                for a in _arrays(result).values():
                    made.append((kind, getattr(step, "out", getattr(step, "node", "")), a.dtype))  # noqa: B023
                return result

            return checked

        def observe(phase, index, *containers):
            for a in _arrays(env, *containers).values():  # noqa: B023
                made.append((phase, f"held after step {index}", a.dtype))  # noqa: B023

        interpreter = Interpreter(plan, free=True, observe=observe, wrap=wrap)
        tape = interpreter.forward(env)
        grads = interpreter.backward(tape, np.ones_like(env[plan.seed]))
        made += [("result", name, np.asarray(g).dtype) for name, g in grads.items()]
        assert made
        assert not [m for m in made if m[2].kind == "f" and m[2] != np.float32]


def test_float32_training_step_through_program(models):
    program = Program(front_end_file(models / "two_layer_net.graph")[0], dtype="float32")
    feeds = {
        "x": program.feed("x", np.random.default_rng(0).random((8, 784), dtype=np.float32)),
        "t": program.feed("t", np.arange(8) % 10),
    }
    loss, grads = program.loss_and_grads(feeds)
    assert np.asarray(loss).dtype == np.float32
    assert {g.dtype for g in grads.values()} == {np.dtype(np.float32)}
    assert {p.dtype for p in program.params.values()} == {np.dtype(np.float32)}


# --- the command line ------------------------------------------------------------------


def test_emit_plan_with_batch_prints_the_memory_table(models, capsys):
    argv = ["compile", str(models / "two_layer_net.graph"), "--emit", "plan", "--batch", "100", "--wrt", "params"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "memory of one step at N = 100: what is held once each step has run, before it frees anything" in out
    assert "relu1 39.1 KiB, relu1.mask 4.9 KiB" in out
    [peak] = [line for line in out.splitlines() if line.strip().startswith("peak ")]
    [compiled] = front_end_file(models / "two_layer_net.graph")
    program = Program(compiled)
    plan = make_plan(compiled.checked, program.types, wrt=program.param_names)
    actual = max(measure(plan, environment(program, {"N": 100})))
    assert f"({actual:,} bytes)" in peak
    assert "d_x" not in out  # --wrt params: a training step


def test_emit_json_with_batch_has_a_memory_section(models, capsys):
    assert main(["compile", str(models / "two_layer_net.graph"), "--emit", "json", "--batch", "10"]) == 0
    data = json.loads(capsys.readouterr().out)
    memory = data["memory"]
    assert memory["dims"] == {"N": 10}
    assert memory["peak"] == max(s["held"] for s in memory["steps"])
    assert [s["phase"] for s in memory["steps"]] == ["forward"] * 4 + ["backward"] * 4


def test_memory_json_names_frees_and_shares_as_the_table_does(models, capsys):
    assert main(["compile", str(models / "fanout.graph"), "--emit", "json", "--batch", "1"]) == 0
    steps = json.loads(capsys.readouterr().out)["memory"]["steps"]
    add = next(s for s in steps if s["phase"] == "backward" and s["label"] == "add")
    assert add["shares"] == [{"name": "d_square", "array_of": "d_f"}, {"name": "d_xy", "array_of": "d_f"}]
    assert add["makes"] == [] and add["frees"] == []
    assert main(["compile", str(models / "fanout.graph"), "--batch", "1"]) == 0
    table = capsys.readouterr().out
    assert "       step                 holds  makes                         frees" in table.splitlines()
    assert "d_square is d_f, d_xy is d_f" in table


def test_emit_plan_without_batch_is_unchanged(models, capsys):
    assert main(["compile", str(models / "two_layer_net.graph")]) == 0
    assert "memory" not in capsys.readouterr().out


def test_batch_sizes_are_checked(models, capsys):
    assert main(["compile", str(models / "two_layer_net.graph"), "--batch", "0"]) == 2
    assert "--batch must be at least 1, got 0" in capsys.readouterr().err


def test_a_dim_without_a_size_is_an_error():
    [compiled] = front_end("graph g {\n input x: [M, 2]\n y = relu(x)\n output y\n}\n", "g.graph")
    plan = make_plan(compiled.checked, compiled.types)
    with pytest.raises(GraphcError, match="dim `M` has no size"):
        bind_dims(plan, compiled.ir, None)
    assert bind_dims(plan, compiled.ir, 3) == {"M": 3}


def test_a_dim_without_a_size_is_shown_where_it_is_used(tmp_path, capsys):
    path = tmp_path / "g.graph"
    path.write_text("graph g {\n    input x: f64[N, K]\n    y = relu(x)\n    output y\n}\n")
    assert main(["compile", str(path), "--batch", "4"]) == 2
    assert capsys.readouterr().err == (
        f"{path}:2:11: error: dim `K` has no size\n"
        " 2 |     input x: f64[N, K]\n"
        "   |           ^\n"
        "hint: declare `dim K = SIZE` in the graph\n"
    )


def test_wrt_names_are_checked(models, capsys):
    assert main(["compile", str(models / "two_layer_net.graph"), "--wrt", "W1,W11"]) == 2
    err = capsys.readouterr().err
    assert "--wrt: no input or param named `W11` in graph `two_layer_net`" in err
    assert "did you mean `W1`?" in err


def test_fmt_bytes():
    assert [fmt_bytes(n) for n in (0, 1023, 1024, 1536, 5 * 2**20)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 KiB",
        "5.0 MiB",
    ]
