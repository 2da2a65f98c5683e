"""A compiled graph ready to run: the Python API.

    program = graphc.compile_file("models/apple.graph")
    program.forward()            # {"price": 220.0}
    program.backward()           # {"apple": 2.2, "apple_num": 110.0, "tax": 200.0}

A Program owns its params (initialized from the graph's initializers with a
seed), validates what it is fed against the declared types, and runs the
plans through the interpreter.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from graphc import limits
from graphc.compiler import CompiledGraph, front_end, front_end_file, select
from graphc.errors import GraphcError, Span, did_you_mean
from graphc.initializers import concrete_shape, initialize
from graphc.ir import (
    DTYPE_RANGES,
    DTYPES,
    FLOAT_DTYPES,
    ConstDecl,
    Expectation,
    Initializer,
    InputDecl,
    OpNode,
    ParamDecl,
    TensorType,
    float_dtype,
    number_text,
    retype,
    shape_text,
    unrepresentable,
)
from graphc.ops import MODES
from graphc.plan import RNG, Plan, grad_name, make_inference_plan, make_plan
from graphc.run import Interpreter
from graphc.shapes import ONEHOT_HINT, class_index_read, index_problem, onehot_problem, state_types


def compile_source(
    text: str,
    path: str = "<string>",
    *,
    graph: str | None = None,
    dtype: str | None = None,
    seed: int = 0,
    mode: str = "train",
) -> Program:
    return Program(select(front_end(text, path), graph), dtype=dtype, seed=seed, mode=mode)


def compile_file(
    path: str | Path, *, graph: str | None = None, dtype: str | None = None, seed: int = 0, mode: str = "train"
) -> Program:
    return Program(select(front_end_file(path), graph), dtype=dtype, seed=seed, mode=mode)


@dataclass(frozen=True)
class ExpectResult:
    expectation: Expectation
    actual: np.ndarray | None
    ok: bool
    detail: str  # why it failed, or the tolerance it held to


class Params(MutableMapping):
    """The program's params by name; setting one checks its shape and dtype."""

    def __init__(self, program: Program):
        self._program = program
        self._values: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        return self._values[name]

    def __setitem__(self, name: str, value: Any) -> None:
        if name not in self._program.param_names:
            hint = did_you_mean(name, self._program.param_names)
            raise GraphcError(f"no param named `{name}` in graph `{self._program.name}`", hint=hint, code="E405")
        type_ = self._program.types[name]
        span = self._program.ir.decls[name].span
        array = _as_array(value, f"param `{name}`", span)
        if array.shape != type_.shape:
            raise GraphcError(
                f"param `{name}` has shape {list(type_.shape)}, got {list(array.shape)}", span, code="E403"
            )
        if array.dtype.kind not in "biuf":
            raise GraphcError(f"param `{name}` must be numeric, got {array.dtype}", span, code="E404")
        # A copy: optimizers update params in place, and must change neither
        # the caller's array nor a read-only one.
        self._values[name] = _cast(array, type_.dtype or "f64", f"param `{name}`", span, copy=True)

    def __delitem__(self, name: str) -> None:
        raise TypeError("params cannot be removed")

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return "Params(" + ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in self._values.items()) + ")"


class Program:
    """mode: "train" (the default) or "eval", the mode of `plan`, which forward
    and backward run; predictions (`evaluate`) are always made in eval mode.

    `state` holds what ops keep across runs (batchnorm's running mean and
    variance, by plan name: bn1.running_mean), zeros at first, updated in
    place by every forward in train mode; `rng`, seeded from `seed`, draws
    dropout's masks."""

    def __init__(self, compiled: CompiledGraph, *, dtype: str | None = None, seed: int = 0, mode: str = "train"):
        if mode not in MODES:
            raise GraphcError(
                f"unknown mode `{mode}`", hint=did_you_mean(mode, MODES) or "modes: train, eval", code="E503"
            )
        self.compiled = compiled
        self.checked = compiled.checked
        self.ir = compiled.ir
        self.name = compiled.name
        self.seed = seed
        if dtype is not None and dtype not in FLOAT_DTYPES:
            raise GraphcError(f"unknown dtype `{dtype}`", hint="use float32 or float64", code="E503")
        self.dtype = float_dtype(dtype)
        self.types = retype(compiled.types, self.dtype)
        self.input_names = tuple(d.name for d in self.ir.inputs())
        self.param_names = tuple(d.name for d in self.ir.params())
        self.outputs = tuple(name for name, _ in self.ir.outputs)
        self.label_inputs = self.checked.label_inputs
        self._classes = self._class_counts()
        self._one_hot_labels = self._one_hot_label_inputs()
        self.mode = mode
        self.plan: Plan = make_plan(self.checked, self.types, mode=mode)
        self._interpreter = Interpreter(self.plan, free=False)
        param_rng, input_rng, self.rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
        self.state_types = state_types(self.checked, self.types)
        self.state: dict[str, np.ndarray] = {
            name: np.zeros(concrete_shape(t, self.ir.dims), DTYPES[t.dtype or "f64"])
            for name, t in self.state_types.items()
        }
        self.params = Params(self)
        self._check_budget(self._made_here(), self.ir.dims)  # before any of it is allocated
        for decl in self.ir.params():
            self.params[decl.name] = self._initialize(decl.name, decl.init, param_rng)
        self._defaults: dict[str, np.ndarray] = {}  # made-up inputs and literal defaults
        for input_decl in self.ir.inputs():
            if input_decl.init is not None:
                # Elaboration made sure every symbolic dim here has a size.
                self._defaults[input_decl.name] = self._initialize(input_decl.name, input_decl.init, input_rng)
        self.consts = self._consts()
        self.values: dict[str, np.ndarray] = {}  # every forward value of the last run
        self.gradients: dict[str, np.ndarray] = {}  # every gradient of the last run, by value name
        self._tape: list | None = None
        self._draws: Mapping[str, Any] | None = None
        self._lean: dict[tuple, Interpreter] = {}
        self._sizes_checked: set[tuple] = set()  # dim sizes check_sizes has found within the limits

    # --- types and values ----------------------------------------------------

    def _initialize(self, name: str, init: Initializer, rng: np.random.Generator) -> np.ndarray:
        """The first value of a param or an input, as a GraphcError at its declaration if it cannot be made."""
        t = self.types[name]
        dtype = t.dtype or "f64"  # params and inputs always have one
        concrete = TensorType(dtype, concrete_shape(t, self.ir.dims))
        decl = self.ir.decls[name]
        if init.kind == "value":  # a literal; --dtype float32 may leave it out of range
            _cast(init.value, dtype, f"{'param' if name in self.param_names else 'input'} `{name}`", init.span)
        try:
            return initialize(init, concrete, rng)
        except (MemoryError, ValueError):  # numpy's "array is too big", "maximum allowed dimension exceeded"
            raise GraphcError(
                f"`{name}` {concrete} is too large to allocate ({concrete.size():,} numbers of "
                f"{DTYPES[dtype].itemsize} bytes)",
                decl.span,
                code="E801",
            ) from None

    def _class_counts(self) -> dict[str, list]:
        """For each input read as class indices (labels, see Op.labels), the number of classes of each reader."""
        counts: dict[str, list] = {}
        for name, node, position in self._label_reads():
            if class_index_read(node, position, self.types):
                scores = node.args[node.op.label_positions()[position]]
                counts.setdefault(name, []).append(self.types[scores].shape[-1])
        return counts

    def _one_hot_label_inputs(self) -> frozenset[str]:
        """Inputs read as one-hot label rows: checked, when fed as rows, to be rows summing to 1."""
        return frozenset(
            name for name, node, position in self._label_reads() if not class_index_read(node, position, self.types)
        )

    def _label_reads(self) -> Iterator[tuple[str, OpNode, int]]:
        """(input, reader, position) for every read of an input as a label operand."""
        for name in self.input_names:
            for reader, position in self.checked.readers(name):
                node = self.ir.decls[reader]
                assert isinstance(node, OpNode)
                if position in node.op.label_positions():
                    yield name, node, position

    def _consts(self) -> dict[str, Any]:
        """Consts as the plan reads them: arrays of their dtype; a weak scalar (dtype None) as a
        Python float, which numpy's promotion leaves the other operand's dtype."""
        consts: dict[str, Any] = {}
        for decl in self.ir.decls.values():
            if not isinstance(decl, ConstDecl):
                continue
            dtype = self.types[decl.name].dtype
            what = f"literal `{decl.name}`" if decl.literal else f"const `{decl.name}`"
            if dtype is None:
                if self.dtype is not None:  # every reader computes in self.dtype
                    _cast(decl.value, self.dtype, what, decl.span)
                consts[decl.name] = float(decl.value)
            else:
                value = _cast(decl.value, dtype, what, decl.span)
                # A const of one number is a read-only view until a run needs the array.
                consts[decl.name] = value if value.flags.writeable else np.array(value)
        return consts

    def default_feeds(self) -> dict[str, np.ndarray]:
        """Inputs that have a value without being fed: literals and made-up data."""
        return dict(self._defaults)

    def feed(self, name: str, value: Any, bindings: dict[str, tuple[int, str]] | None = None) -> np.ndarray:
        """Check `value` for input `name`; returns it as the array the plan reads.

        bindings collects the sizes of symbolic dims across inputs (N = 100).
        """
        if name not in self.input_names:
            hint = did_you_mean(name, self.input_names) or (
                "inputs: " + ", ".join(f"`{n}`" for n in self.input_names)
                if self.input_names
                else "this graph has no inputs"
            )
            raise GraphcError(f"no input named `{name}` in graph `{self.name}`", hint=hint, code="E405")
        decl = self.ir.decls[name]
        t = self.types[name]
        array = _as_array(value, f"input `{name}`", decl.span)
        if array.dtype.kind not in "biuf":
            raise GraphcError(f"input `{name}` must be numeric, got {array.dtype}", decl.span, code="E404")
        shape, dtype = t.shape, t.dtype or "f64"  # an input always has a dtype
        classes = self._classes.get(name, [])  # the readers' class counts, where `name` is class indices
        one_hot = name in self.label_inputs and not classes and len(shape) >= 1
        if one_hot and array.dtype.kind in "biu" and array.ndim == len(shape) - 1:
            # one-hot labels given as class indices
            classes, shape, dtype = [shape[-1]], shape[:-1], "i64"
        elif t.dtype == "i64" and array.dtype.kind not in "biu":
            raise GraphcError(f"input `{name}` is i64, got {array.dtype} values", decl.span, code="E404")
        if array.ndim != len(shape) or any(isinstance(d, int) and d != n for d, n in zip(shape, array.shape)):
            raise GraphcError(
                f"input `{name}` expects shape {shape_text(shape)}, got {list(array.shape)}",
                decl.span,
                f"labels may also be class indices of shape {shape_text(t.shape[:-1])}" if one_hot else None,
                code="E403",
            )
        empty = next((d for d, n in zip(shape, array.shape) if isinstance(d, str) and n < 1), None)
        if empty is not None:
            raise GraphcError(
                f"input `{name}` has {empty} = 0; every size must be at least 1",
                decl.span,
                f"give `{name}` at least one row" if shape and empty == shape[0] else None,
                code="E210",
            )
        if bindings is not None:
            for d, n in zip(shape, array.shape):
                if isinstance(d, str):
                    if d in bindings and bindings[d][0] != n:
                        size, first = bindings[d]
                        raise GraphcError(
                            f"input `{name}` has {d} = {n}, but `{first}` has {d} = {size}",
                            decl.span,
                            f"every input must agree on the size of `{d}`",
                            code="E206",
                        )
                    bindings.setdefault(d, (n, name))
        if name in self._one_hot_labels and array.ndim == len(t.shape):  # rows, not class indices
            problem = onehot_problem(array)
            if problem is not None:
                raise GraphcError(f"input `{name}`: {problem}", decl.span, code="E402")
        for count in classes:
            problem = index_problem(array, count)
            if problem is not None:
                raise GraphcError(f"input `{name}`: {problem}", decl.span, code="E402")
        if classes and name in self.label_inputs:
            dtype = "i64"  # whole numbers, as checked; declared `input t: [N]`, they would index as floats
        return _cast(array, dtype, f"input `{name}`", decl.span)

    def _environment(self, feeds: dict[str, Any]) -> dict[str, Any]:
        env = self.fixed_values()
        defaults = self.default_feeds()
        bindings: dict[str, tuple[int, str]] = {}
        for name in feeds:
            if name not in self.input_names:
                self.feed(name, feeds[name])  # raises: unknown input
        for name in self.input_names:
            if name in feeds:
                env[name] = self.feed(name, feeds[name], bindings)
            elif name in defaults:
                env[name] = self.feed(name, defaults[name], bindings)
            else:
                decl = self.ir.decls[name]
                raise GraphcError(
                    f"input `{name}` has no value",
                    decl.span,
                    f"give it one: `--set {name}=VALUE` or `--input {name}=FILE.npy` on the command line, "
                    f"a keyword argument in Python, or a default in the graph (`input {name} = ...`)",
                    code="E401",
                )
        self.check_sizes({d: n for d, (n, _) in bindings.items()})
        return env

    def check_sizes(self, dims: dict[str, int]) -> None:
        """Refuse, before anything is computed, a run in which one value would hold more
        than limits.MAX_ELEMENTS numbers, or all of them together more than
        limits.MAX_RUN_ELEMENTS, given the sizes of the symbolic dims (N = 100).

        Declared inputs, params and consts are within the first limit (elaboration
        saw to it); a value computed from them may not be: `add` of [N, 1] and [1, M].
        forward calls it with the dims of what it is fed; a command that feeds its
        own batches (train, time) can call it with theirs before making them.
        """
        key = tuple(sorted(dims.items()))
        if key in self._sizes_checked:
            return
        for name in self.checked.order:
            count = self.types[name].size(dims)
            if count is not None and limits.too_many_elements(count):
                t = self.types[name]
                sizes = ", ".join(f"{d} = {dims[d]}" for d in dict.fromkeys(t.shape) if isinstance(d, str))
                raise GraphcError(
                    f"`{name}` {t.shape_text()} would hold {limits.count_text(count)} numbers"
                    + (f" with {sizes}" if sizes else ""),
                    self.ir.decls[name].span,
                    limits.elements_hint(),
                    code="E801",
                )
        self._check_budget(self.checked.order, dims)
        self._sizes_checked.add(key)

    def _made_here(self) -> list[str]:
        """The values a Program makes before any run: params, consts, inputs with a value in the graph."""
        return [
            name
            for name, decl in self.ir.decls.items()
            if isinstance(decl, (ParamDecl, ConstDecl)) or (isinstance(decl, InputDecl) and decl.init is not None)
        ]

    def _check_budget(self, names: Iterable[str], dims: dict[str, int]) -> None:
        """The values `names` hold at most limits.MAX_RUN_ELEMENTS numbers together; else an
        error at the largest of them."""
        counts = {name: count for name in names if (count := self.types[name].size(dims)) is not None}
        total = sum(counts.values())
        if total <= limits.MAX_RUN_ELEMENTS:
            return
        largest = max(counts, key=lambda name: counts[name])
        sizes = ", ".join(f"{d} = {n}" for d, n in sorted(dims.items()))
        raise GraphcError(
            f"a run of graph `{self.name}` would hold {limits.count_text(total)} numbers in all"
            + (f" with {sizes}" if sizes else "")
            + f", {limits.count_text(counts[largest])} of them in `{largest}` {self.types[largest].shape_text()}",
            self.ir.decls[largest].span,
            limits.run_hint(),
            code="E801",
        )

    # --- running ------------------------------------------------------------

    def forward(self, /, **feeds: Any) -> dict[str, np.ndarray]:
        """Run forward; returns the outputs. Missing inputs take their defaults."""
        env = self._environment(feeds)
        self._draws = self.rng.bit_generator.state  # what this forward draws from, for replay()
        with np.errstate(all="ignore"):  # NaN and inf are reported, not warned about
            self._tape = self._interpreter.forward(env)
        self._check_computed_labels(env)
        for name in (RNG, *self.state):  # not values of this run
            del env[name]
        self.values = env
        self.gradients = {}
        return {name: env[name] for name in self.outputs}

    def replay(self) -> dict[str, Any]:
        """What running the last forward again needs besides its values: copies of
        the state, and a generator that draws the masks that forward drew."""
        assert self._draws is not None, "replay() needs a forward() first"
        rng = np.random.default_rng()
        rng.bit_generator.state = self._draws
        return {**{name: value.copy() for name, value in self.state.items()}, RNG: rng}

    def _check_computed_labels(self, env: dict[str, Any]) -> None:
        """One-hot labels computed by an op are checked once computed, as fed ones are when fed."""
        for node in self.ir.nodes():
            for position in node.op.label_positions():
                labels = self.ir.decls[node.args[position]]
                if not isinstance(labels, OpNode):
                    continue
                problem = onehot_problem(np.asarray(env[labels.name]))
                if problem is not None:
                    raise GraphcError(
                        f"labels `{labels.name}` computed by `{labels.op.name}`: {problem}",
                        node.arg_spans[position],
                        ONEHOT_HINT,
                        code="E402",
                    )

    def backward(self, seed: Any = None) -> dict[str, np.ndarray]:
        """Backprop from the first output; the gradient of every input and param.

        Inputs read only as labels get none (no op differentiates its
        labels); values with no path to the output get zeros.
        """
        if self._tape is None:
            raise GraphcError("backward() needs a forward() first", hint="call program.forward(...) first", code="E407")
        output = self.checked.output  # the plan's seed
        out_value = self.values[output]
        if seed is None:
            seed = np.ones_like(out_value)
        else:
            seed = np.asarray(seed, dtype=np.asarray(out_value).dtype)
            if seed.shape != np.shape(out_value):
                raise GraphcError(
                    f"seed has shape {list(seed.shape)}, output `{output}` has {list(np.shape(out_value))}", code="E407"
                )
        # The interpreter hands back no two gradients as one array, and none as the seed.
        with np.errstate(all="ignore"):
            grads = self._interpreter.backward(list(self._tape), seed)
        self.gradients = {name[2:]: g for name, g in grads.items()}
        result: dict[str, np.ndarray] = {}
        for name in self.plan.wrt:
            if name in self.plan.disconnected:
                result[name] = np.zeros_like(self.values[name], dtype=self._grad_dtype(name))
            elif grad_name(name) in grads:
                result[name] = grads[grad_name(name)]
        return result

    def _grad_dtype(self, name: str) -> np.dtype:
        dtype = np.asarray(self.values[name]).dtype
        return dtype if dtype.kind == "f" else np.dtype(np.float64)

    def lean(self, wrt: tuple[str, ...] | None = None, seed: str | None = None) -> Interpreter:
        """An interpreter that frees values as soon as they are dead (for training)."""
        key = (wrt, seed)
        if key not in self._lean:
            wrt = self.param_names if wrt is None else wrt
            plan = make_plan(self.checked, self.types, wrt=wrt, seed=seed, mode=self.mode)
            self._lean[key] = Interpreter(plan, free=True)
        return self._lean[key]

    def loss_and_grads(
        self,
        feeds: dict[str, np.ndarray],
        dout: np.ndarray | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One training step's arithmetic: the loss and the gradient of every param
        (times dout, the seed of backward: ones by default).

        Feeds are used as given (already checked with `feed`), for speed.
        """
        interpreter = self.lean()
        env = self.fixed_values()
        env.update(feeds)
        tape = interpreter.forward(env)
        assert interpreter.plan.seed is not None  # lean() plans backward from the loss
        loss = env[interpreter.plan.seed]
        grads = interpreter.backward(tape, np.ones_like(loss) if dout is None else dout)
        return loss, {name: grads[grad_name(name)] for name in self.param_names if grad_name(name) in grads}

    def inference(self, targets: tuple[str, ...], mode: str = "eval") -> Interpreter:
        key = ("inference", targets, mode)
        if key not in self._lean:
            self._lean[key] = Interpreter(make_inference_plan(self.checked, self.types, targets, mode), free=True)
        return self._lean[key]

    def evaluate(self, targets: tuple[str, ...], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Forward only, to `targets`, in eval mode, nothing kept for backward."""
        env = self.fixed_values()
        env.update(feeds)
        self.inference(targets).forward(env)
        return {t: env[t] for t in targets}

    def fixed_values(self) -> dict[str, Any]:
        """An environment's values that are not fed: consts, params, state, the generator."""
        env: dict[str, Any] = dict(self.consts)
        env.update(self.params)
        env.update(self.state)
        env[RNG] = self.rng
        return env

    def scores_name(self) -> str:
        """The value whose argmax is the prediction: the scores fed to the loss (Op.scores)."""
        return self.checked.scores(self.checked.output) or self.checked.output

    # --- expectations --------------------------------------------------------

    def expectations(self) -> list[ExpectResult]:
        """Check the graph's `expect` lines against the last forward and backward."""
        results = []
        for expect in self.ir.expects:
            if expect.of_grad:
                actual = self.gradients.get(expect.target)
                if actual is None and expect.target in self.plan.disconnected:
                    actual = np.zeros_like(self.values[expect.target])
                if actual is None:
                    results.append(
                        ExpectResult(expect, None, False, f"`{expect.target}` gets no gradient from `{self.plan.seed}`")
                    )
                    continue
            else:
                actual = self.values.get(expect.target)
            results.append(_compare(expect, np.asarray(actual, dtype=np.float64)))
        return results

    def __repr__(self) -> str:
        return (
            f"<graphc.Program {self.name}: {len(self.plan.forward)} forward steps, {len(self.plan.backward)} backward>"
        )

    # Jupyter draws a Program: as SVG where Graphviz is installed, else as a
    # Mermaid block; with the values and gradients of the last run, if any.

    def _repr_svg_(self) -> str | None:
        from graphc.draw import program_svg

        return program_svg(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        from graphc.draw import program_mimebundle

        return program_mimebundle(self)


def _as_array(value: Any, what: str, span: Span) -> np.ndarray:
    try:
        return np.asarray(value)
    except (ValueError, TypeError, OverflowError) as err:
        raise GraphcError(f"{what}: cannot make an array: {err}", span, code="E406") from None


def _cast(array: Any, dtype: str, what: str, span: Span, copy: bool = False) -> np.ndarray:
    """`array` as `dtype`, or a GraphcError at `span` naming a value the dtype cannot hold."""
    bad = unrepresentable(array, dtype)
    if bad is not None:
        raise GraphcError(
            f"{what}: {number_text(bad)} is out of range for {dtype}", span, DTYPE_RANGES[dtype], code="E212"
        )
    return np.asarray(array).astype(DTYPES[dtype], copy=copy)


DEFAULT_RTOL = 1e-9
DEFAULT_ATOL = 1e-12


def _compare(expect: Expectation, actual: np.ndarray) -> ExpectResult:
    expected = expect.value
    # One number holds for every element; a list must have the value's shape. (Not
    # numpy's broadcasting, which stops at 32 dims with a RuntimeError.)
    if expected.ndim > 0 and expected.shape != actual.shape:
        return ExpectResult(expect, actual, False, f"shape {list(actual.shape)}, expected {list(expected.shape)}")
    if expect.tolerance is not None:
        ok = bool(np.all(np.abs(actual - expected) <= expect.tolerance))
        detail = f"within {expect.tolerance:g}"
    else:
        ok = bool(np.allclose(actual, expected, rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL))
        detail = f"relative {DEFAULT_RTOL:g}"
    return ExpectResult(expect, actual, ok, detail)
