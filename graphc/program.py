"""A compiled graph ready to run: the Python API.

    program = graphc.compile_file("models/apple.graph")
    program.forward()            # {"price": 220.0}
    program.backward()           # {"apple": 2.2, "apple_num": 110.0, "tax": 200.0}

A Program owns its params (initialized from the graph's initializers with a
seed), validates what it is fed against the declared types, and runs the
plans through the interpreter.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from graphc.compiler import CompiledGraph, front_end, front_end_file, select
from graphc.errors import GraphcError, did_you_mean
from graphc.initializers import initialize
from graphc.ir import DTYPES, ConstDecl, Expectation, OpNode, TensorType
from graphc.plan import Plan, grad_name, make_inference_plan, make_plan
from graphc.run import Interpreter

FLOAT_DTYPES = {"float32": "f32", "float64": "f64", "f32": "f32", "f64": "f64"}


def compile_source(
    text: str, path: str = "<string>", *, graph: str | None = None, dtype: str | None = None, seed: int = 0
) -> Program:
    return Program(select(front_end(text, path), graph), dtype=dtype, seed=seed)


def compile_file(path: str | Path, *, graph: str | None = None, dtype: str | None = None, seed: int = 0) -> Program:
    return Program(select(front_end_file(path), graph), dtype=dtype, seed=seed)


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
            raise GraphcError(f"no param named `{name}` in graph `{self._program.name}`", hint=hint)
        type_ = self._program.types[name]
        array = np.asarray(value)
        if array.shape != type_.shape:
            raise GraphcError(
                f"param `{name}` has shape {list(type_.shape)}, got {list(array.shape)}",
                self._program.ir.decls[name].span,
            )
        if array.dtype.kind not in "biuf":
            raise GraphcError(f"param `{name}` must be numeric, got {array.dtype}", self._program.ir.decls[name].span)
        self._values[name] = array.astype(DTYPES[type_.dtype], copy=False)

    def __delitem__(self, name: str) -> None:
        raise TypeError("params cannot be removed")

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return "Params(" + ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in self._values.items()) + ")"


class Program:
    def __init__(self, compiled: CompiledGraph, *, dtype: str | None = None, seed: int = 0):
        self.compiled = compiled
        self.checked = compiled.checked
        self.ir = compiled.ir
        self.name = compiled.name
        self.seed = seed
        if dtype is not None and dtype not in FLOAT_DTYPES:
            raise GraphcError(f"unknown dtype `{dtype}`", hint="use float32 or float64")
        self.dtype = FLOAT_DTYPES.get(dtype) if dtype else None
        self.types = {name: self._retype(t) for name, t in compiled.types.items()}
        self.input_names = tuple(d.name for d in self.ir.inputs())
        self.param_names = tuple(d.name for d in self.ir.params())
        self.outputs = tuple(name for name, _ in self.ir.outputs)
        self.label_inputs = frozenset(self._label_inputs())
        self.plan: Plan = make_plan(self.checked, self.types)
        self._interpreter = Interpreter(self.plan, free=False)
        param_rng, input_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
        self.params = Params(self)
        for decl in self.ir.params():
            self.params[decl.name] = initialize(decl.init, self._concrete(decl.type), param_rng)
        self._made_up: dict[str, np.ndarray] = {}
        for decl in self.ir.inputs():
            if decl.init is not None and decl.init.kind != "value":
                # Elaboration made sure every symbolic dim here has a `dim` size.
                self._made_up[decl.name] = initialize(decl.init, self._concrete(decl.type), input_rng)
        self.consts = self._consts()
        self.values: dict[str, np.ndarray] = {}  # every forward value of the last run
        self.gradients: dict[str, np.ndarray] = {}  # every gradient of the last run, by value name
        self._tape: list | None = None
        self._lean: dict[tuple, Interpreter] = {}

    # --- types and values ----------------------------------------------------

    def _retype(self, t: TensorType) -> TensorType:
        """Apply a dtype override to every float value."""
        if self.dtype and t.dtype in ("f32", "f64"):
            return TensorType(self.dtype, t.shape)
        return t

    def _concrete(self, t: TensorType) -> TensorType:
        shape = tuple(self.ir.dims[d] if isinstance(d, str) else d for d in t.shape)
        return TensorType(t.dtype or self.dtype or "f64", shape)

    def _label_inputs(self) -> list[str]:
        """Inputs read only as softmax_loss labels: class indices are welcome there."""
        graph = self.checked.graph
        labels = []
        for name in self.input_names:
            uses = [(v, k) for _, v, k in graph.out_edges(name, keys=True)]
            if uses and all(self.ir.decls[v].op.name == "softmax_loss" and k == 1 for v, k in uses):
                labels.append(name)
        return labels

    def _consts(self) -> dict[str, np.ndarray]:
        consts = {}
        for decl in self.ir.decls.values():
            if not isinstance(decl, ConstDecl):
                continue
            dtype = self.types[decl.name].dtype
            if dtype is None:
                # A literal takes the dtype of the node that reads it, so f32 stays f32.
                readers = [self.types[v].dtype for v in self.checked.graph.successors(decl.name) if v in self.types]
                dtype = next((d for d in readers if d), self.dtype or "f64")
            consts[decl.name] = decl.value.astype(DTYPES[dtype])
        return consts

    def input_type(self, name: str) -> TensorType:
        return self.types[name]

    def default_feeds(self) -> dict[str, np.ndarray]:
        """Inputs that have a value without being fed: literals and made-up data."""
        feeds = dict(self._made_up)
        for decl in self.ir.inputs():
            if decl.init is not None and decl.init.kind == "value":
                feeds[decl.name] = self._cast_value(decl.init.value, decl.name)
        return feeds

    def _cast_value(self, value: np.ndarray, name: str) -> np.ndarray:
        """A literal default as the input's dtype; a scalar fills a declared shape."""
        t = self.types[name]
        if value.ndim == 0 and t.shape:
            unbound = [d for d in t.shape if isinstance(d, str) and d not in self.ir.dims]
            if unbound:
                raise GraphcError(
                    f"input `{name}`: a single number cannot fill symbolic dim `{unbound[0]}`",
                    self.ir.decls[name].span,
                    f"declare its size, e.g. `dim {unbound[0]} = 2`, or give a full list",
                )
            value = np.broadcast_to(value, self._concrete(t).shape)
        return value.astype(DTYPES[t.dtype])

    def feed(self, name: str, value: Any, bindings: dict[str, tuple[int, str]] | None = None) -> np.ndarray:
        """Check `value` for input `name`; returns it as the array the plan reads.

        bindings collects the sizes of symbolic dims across inputs (N = 100).
        """
        if name not in self.input_names:
            hint = did_you_mean(name, self.input_names) or (
                "inputs: " + ", ".join(f"`{n}`" for n in self.input_names) if self.input_names else "this graph has no inputs"
            )
            raise GraphcError(f"no input named `{name}` in graph `{self.name}`", hint=hint)
        decl = self.ir.decls[name]
        t = self.types[name]
        try:
            array = np.asarray(value)
        except (ValueError, TypeError) as err:
            raise GraphcError(f"input `{name}`: cannot make an array: {err}", decl.span) from None
        if array.dtype.kind not in "biuf":
            raise GraphcError(f"input `{name}` must be numeric, got {array.dtype}", decl.span)
        shape = t.shape
        if name in self.label_inputs and array.dtype.kind in "iu" and array.ndim == len(shape) - 1 and len(shape) >= 1:
            classes = shape[-1]
            shape = shape[:-1]
            if isinstance(classes, int) and array.size and (array.min() < 0 or array.max() >= classes):
                raise GraphcError(
                    f"input `{name}`: class indices must lie in 0..{classes - 1}, got {array.min()}..{array.max()}",
                    decl.span,
                )
            target = np.int64
        elif t.dtype == "i64":
            if array.dtype.kind not in "biu":
                raise GraphcError(f"input `{name}` is i64, got {array.dtype} values", decl.span)
            target = np.int64
        else:
            target = DTYPES[t.dtype]
        if array.ndim != len(shape) or any(isinstance(d, int) and d != n for d, n in zip(shape, array.shape)):
            declared = "[" + ", ".join(str(d) for d in shape) + "]"
            raise GraphcError(
                f"input `{name}` expects shape {declared}, got {list(array.shape)}",
                decl.span,
                None if name not in self.label_inputs else f"labels may also be class indices of shape {TensorType(None, t.shape[:-1]).shape_text()}",
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
                        )
                    bindings.setdefault(d, (n, name))
        return array.astype(target, copy=False)

    def _environment(self, feeds: dict[str, Any]) -> dict[str, np.ndarray]:
        env: dict[str, np.ndarray] = dict(self.consts)
        env.update(self.params)
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
                )
        return env

    # --- running ------------------------------------------------------------

    def forward(self, **feeds: Any) -> dict[str, np.ndarray]:
        """Run forward; returns the outputs. Missing inputs take their defaults."""
        env = self._environment(feeds)
        with np.errstate(all="ignore"):  # NaN and inf are reported, not warned about
            self._tape = self._interpreter.forward(env)
        self.values = env
        self.gradients = {}
        return {name: env[name] for name in self.outputs}

    def backward(self, seed: Any = None) -> dict[str, np.ndarray]:
        """Backprop from the first output; the gradient of every input and param.

        Inputs read only as labels get none (softmax_loss does not
        differentiate its labels); values with no path to the output get zeros.
        """
        if self._tape is None:
            raise GraphcError("backward() needs a forward() first", hint="call program.forward(...) first")
        output = self.plan.seed
        out_value = self.values[output]
        if seed is None:
            seed = np.ones_like(out_value)
        else:
            seed = np.asarray(seed, dtype=np.asarray(out_value).dtype)
            if seed.shape != np.shape(out_value):
                raise GraphcError(f"seed has shape {list(seed.shape)}, output `{output}` has {list(np.shape(out_value))}")
        with np.errstate(all="ignore"):
            grads = self._interpreter.backward(list(self._tape), seed)
        self.gradients = {name[2:]: g for name, g in grads.items()}
        result: dict[str, np.ndarray] = {}
        seen: set[int] = set()
        for name in self.plan.wrt:
            if name in self.plan.disconnected:
                result[name] = np.zeros_like(self.values[name], dtype=self._grad_dtype(name))
            elif grad_name(name) in grads:
                grad = grads[grad_name(name)]
                # add() hands one gradient to both operands: give each its own array.
                if id(grad) in seen or grad is seed:
                    grad = np.array(grad, copy=True)
                seen.add(id(grad))
                result[name] = grad
        return result

    def _grad_dtype(self, name: str) -> np.dtype:
        dtype = np.asarray(self.values[name]).dtype
        return dtype if dtype.kind == "f" else np.dtype(np.float64)

    def lean(self, wrt: tuple[str, ...] | None = None, seed: str | None = None) -> Interpreter:
        """An interpreter that frees values as soon as they are dead (for training)."""
        key = (wrt, seed)
        if key not in self._lean:
            plan = make_plan(self.checked, self.types, wrt=self.param_names if wrt is None else wrt, seed=seed)
            self._lean[key] = Interpreter(plan, free=True)
        return self._lean[key]

    def loss_and_grads(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One training step's arithmetic: the loss and the gradient of every param.

        Feeds are used as given (already checked with `feed`), for speed.
        """
        interpreter = self.lean()
        env = dict(self.consts)
        env.update(self.params)
        env.update(feeds)
        tape = interpreter.forward(env)
        loss = env[interpreter.plan.seed]
        grads = interpreter.backward(tape, np.ones_like(loss))
        return loss, {name: grads[grad_name(name)] for name in self.param_names if grad_name(name) in grads}

    def inference(self, targets: tuple[str, ...]) -> Interpreter:
        key = ("inference", targets)
        if key not in self._lean:
            self._lean[key] = Interpreter(make_inference_plan(self.checked, self.types, targets), free=True)
        return self._lean[key]

    def evaluate(self, targets: tuple[str, ...], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Forward only, to `targets`, nothing kept for backward."""
        env = dict(self.consts)
        env.update(self.params)
        env.update(feeds)
        self.inference(targets).forward(env)
        return {t: env[t] for t in targets}

    def scores_name(self) -> str:
        """The value whose argmax is the prediction: the scores fed to the loss."""
        node = self.ir.decls[self.plan.seed]
        if isinstance(node, OpNode) and node.op.name == "softmax_loss":
            return node.args[0]
        return self.plan.seed

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
                    results.append(ExpectResult(expect, None, False, f"`{expect.target}` gets no gradient from `{self.plan.seed}`"))
                    continue
            else:
                actual = self.values.get(expect.target)
            results.append(_compare(expect, np.asarray(actual, dtype=np.float64)))
        return results

    def describe_feeds(self) -> dict[str, TensorType]:
        return {name: self.types[name] for name in self.input_names}

    def __repr__(self) -> str:
        return f"<graphc.Program {self.name}: {len(self.plan.forward)} forward steps, {len(self.plan.backward)} backward>"

    # Jupyter draws a Program: as SVG where Graphviz is installed, else as a
    # Mermaid block; with the values and gradients of the last run, if any.

    def _repr_svg_(self) -> str | None:
        from graphc.draw import program_svg

        return program_svg(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        from graphc.draw import program_mimebundle

        return program_mimebundle(self)


DEFAULT_RTOL = 1e-9
DEFAULT_ATOL = 1e-12


def _compare(expect: Expectation, actual: np.ndarray) -> ExpectResult:
    expected = expect.value
    try:
        np.broadcast_shapes(expected.shape, actual.shape)
    except ValueError:
        return ExpectResult(expect, actual, False, f"shape {list(actual.shape)}, expected {list(expected.shape)}")
    if expected.shape != actual.shape and expected.ndim > 0:
        return ExpectResult(expect, actual, False, f"shape {list(actual.shape)}, expected {list(expected.shape)}")
    if expect.tolerance is not None:
        ok = bool(np.all(np.abs(actual - expected) <= expect.tolerance))
        detail = f"within {expect.tolerance:g}"
    else:
        ok = bool(np.allclose(actual, expected, rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL))
        detail = f"relative {DEFAULT_RTOL:g}"
    return ExpectResult(expect, actual, ok, detail)
