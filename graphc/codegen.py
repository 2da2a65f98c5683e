"""Code generation: a compiled graph as a standalone, readable numpy module.

    graphc compile models/two_layer_net.graph --emit python -o two_layer_net.py

The module imports numpy and nothing else. It has

    init_params(seed=0)                -> params, as graphc's Program makes them
    forward(params, *, x, t)           -> (outputs, saved)
    backward(params, saved, dout=None) -> gradients by value name (dout: ones by default)
    loss_and_grads(params, *, x, t, dout=None) -> (loss, gradients)
    scores(params, *, x), predict(...) -> forward only, to the loss's scores
    example_inputs(seed=0)             -> the graph's made-up inputs, if it has them
    init_state()                       -> zero running statistics, if an op keeps any

A graph with batchnorm or dropout has forward, loss_and_grads and scores take
`state=` (the running statistics, which a training forward updates in place)
and `rng=` (the numpy Generator dropout draws its masks from): the same
arguments graphc's interpreter reads, so the same draws give the same numbers.
forward and backward are the plan of one mode, "train" by default (`--mode`);
scores and predict always predict, in eval mode.

Only the plan is read (its steps, their saves and frees, the gradient writes
and their rules), with the types and initializers of the compiled graph. Each
forward step is one line named after the plan's value; each backward line
carries its local rule as a comment; `del` lines let arrays go where the plan
frees them, so the module holds what the interpreter holds. Each op's lines
come from its formulas in graphc.ops (`forward_source`, `grad_source`): the
interpreter compiles the very same source for each step, and the kernels it
calls (stable sigmoid, log-softmax cross-entropy) are copied from graphc.ops
verbatim, so generated and interpreted arithmetic agree to the last bit.

`load_module(compiled, dtype)` compiles the same source in memory, for the
trainer and `graphc time`.
"""

from __future__ import annotations

import builtins
import inspect
import keyword
import re
import textwrap
import types as pytypes
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphc import __version__, initializers
from graphc.compiler import CompiledGraph
from graphc.errors import GraphcError
from graphc.ir import (
    FLOAT_DTYPES,
    ConstDecl,
    Initializer,
    InputDecl,
    OpNode,
    ParamDecl,
    TensorType,
    float_dtype,
    numpy_name,
    retype,
)
from graphc.plan import (
    BackwardStep,
    ForwardStep,
    Plan,
    grad_name,
    make_inference_plan,
    make_plan,
    shared_gradients,
)
from graphc.shapes import class_index_read, state_types

# Names the module defines or uses itself; a value called so is renamed (`np_`).
_OWN_NAMES = {
    "np",
    "DTYPE",
    "PARAM_SHAPES",
    "params",
    "saved",
    "dout",
    "outputs",
    "grads",
    "inputs",
    "seed",
    "param_rng",
    "input_rng",
    "forward",
    "backward",
    "loss_and_grads",
    "init_params",
    "example_inputs",
    "scores",
    "predict",
    "as_labels",
    "name",
    "value",
    "grad",
    "state",
    "rng",
    "init_state",
}


# --- names -------------------------------------------------------------------------


class _Names:
    """Python identifiers for values, gradients and saved tensors: the graph's
    own names wherever they are valid and free, else the nearest that is.

    Values and saved tensors are keyed by their plan names (`relu1`,
    `relu1.mask`), gradients by ("d", value): a value may itself be called
    `d_x`, and its gradient is not x's.
    """

    # Whether a name may not start with `_` (PyTorch modules: nn.Module's own
    # attributes are `_parameters`, and a class mangles `self.__x`).
    no_underscore_first = False

    def __init__(self, reserved: set[str]):
        self.taken = set(reserved)
        self.of: dict[str | tuple[str, str], str] = {}

    def add(self, name: str | tuple[str, str], wanted: str | None = None) -> str:
        if name in self.of:
            return self.of[name]
        assert wanted is not None or isinstance(name, str)
        base = re.sub(r"\W", "_", wanted or name)  # type: ignore[arg-type]
        if not base or base[0].isdigit() or (self.no_underscore_first and base[0] == "_"):
            base = "v_" + base
        ident = base
        while ident in self.taken or keyword.iskeyword(ident) or keyword.issoftkeyword(ident):
            ident += "_"
        self.taken.add(ident)
        self.of[name] = ident
        return ident

    def __getitem__(self, name: str) -> str:
        return self.of[name]

    def grad(self, gradient: str) -> str:
        """The identifier of a plan gradient (`d_x`)."""
        return self.of[("d", gradient)]


# --- the module --------------------------------------------------------------------


def python_module(
    compiled: CompiledGraph, *, dtype: str | None = None, wrt: tuple[str, ...] | None = None, mode: str = "train"
) -> str:
    """The source of a standalone numpy module for `compiled`.

    dtype ("float32" or "float64") overrides the graph's float dtype, as
    Program(dtype=...) does; wrt names the values backward differentiates
    (default: every input and param, as `graphc run` shows them); mode is
    the plan's forward and backward run in.
    """
    return _Writer(compiled, dtype, wrt, mode).module()


@dataclass
class GeneratedModel:
    """A generated module compiled in memory, with the trainer's calling convention."""

    source: str
    module: pytypes.ModuleType
    input_names: dict[str, str]  # graph input name -> the module's keyword
    param_names: tuple[str, ...]
    disconnected: tuple[str, ...] = ()  # params with no path to the loss: backward gives them zeros
    takes_state: bool = False  # forward takes `state=`, the running statistics
    takes_rng: bool = False  # forward takes `rng=`, the generator dropout draws from

    def extra(self, state: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, Any]:
        """The keyword arguments besides params and inputs: state and generator, where the module takes them."""
        return {**({"state": state} if self.takes_state else {}), **({"rng": rng} if self.takes_rng else {})}

    def loss_and_grads(
        self,
        params: dict[str, np.ndarray],
        feeds: dict[str, Any],
        dout: np.ndarray | None = None,
        **extra: Any,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The loss and the gradient of every param, as Program.loss_and_grads; feeds by input name,
        `extra` the state and generator (see `extra`).

        As there, a param with no path to the loss gets no gradient (rather than zeros)."""
        loss, grads = self.module.loss_and_grads(
            params, **{self.input_names[n]: v for n, v in feeds.items()}, dout=dout, **extra
        )
        for name in self.disconnected:
            del grads[name]
        return loss, grads


def load_module(
    compiled: CompiledGraph, dtype: str | None = None, wrt: tuple[str, ...] | None = None, mode: str = "train"
) -> GeneratedModel:
    """Generate the module (gradients of the params only, by default) and import it in memory."""
    params = tuple(d.name for d in compiled.ir.params())
    writer = _Writer(compiled, dtype, params if wrt is None else wrt, mode)
    source = writer.module()
    module = pytypes.ModuleType(f"graphc_generated_{compiled.name}")
    module.__file__ = f"<graphc: {compiled.name}>"
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    inputs = {n: writer.names[n] for n in writer.plan.inputs}
    return GeneratedModel(
        source, module, inputs, params, writer.plan.disconnected, bool(writer.state), writer.draws(writer.plan)
    )


class _Writer:
    def __init__(self, compiled: CompiledGraph, dtype: str | None, wrt: tuple[str, ...] | None, mode: str = "train"):
        if dtype is not None and dtype not in FLOAT_DTYPES:
            raise GraphcError(f"unknown dtype `{dtype}`", hint="use float32 or float64", code="E503")
        self.compiled = compiled
        self.ir = compiled.ir
        override = float_dtype(dtype)
        self.types = retype(compiled.types, override)
        self.plan = make_plan(compiled.checked, self.types, wrt=wrt, mode=mode)
        self.state = state_types(compiled.checked, self.types)
        floats = {t.dtype for t in self.types.values() if t.dtype in ("f32", "f64")}
        if len(floats) > 1:
            raise GraphcError(
                f"graph `{compiled.name}` mixes f32 and f64 values; a generated module has one float dtype",
                compiled.ir.span,
                hint="give one with --dtype float32 or --dtype float64",
                code="E907",
            )
        self.float = override or (floats.pop() if floats else "f64")
        self.decls = self.ir.decls
        self.labels = compiled.checked.label_inputs
        self.shared = set(shared_gradients(self.plan))
        assert self.plan.seed is not None  # a training plan's
        self.seed: str = self.plan.seed
        self.scores = compiled.checked.scores(self.seed)
        self.inference = make_inference_plan(compiled.checked, self.types, (self.scores,)) if self.scores else None
        self._name_everything()

    # --- names and values -----------------------------------------------------

    def _name_everything(self) -> None:
        helpers = {f.__name__ for f in self._helpers()}
        self.names = _Names(_OWN_NAMES | helpers | set(dir(builtins)))
        self.literals: dict[str, str] = {}  # literal consts written inline: "0.5" -> "0.5"
        for name, decl in self.decls.items():
            if isinstance(decl, ConstDecl) and decl.literal and self.types[name].dtype is None:
                # A weak scalar (see shapes.py): written inline, as the interpreter feeds it.
                self.literals[name] = _literal(decl.value)
            elif isinstance(decl, ConstDecl) and decl.literal:
                self.names.add(name, "const")
            else:
                self.names.add(name)
        for step in self.plan.forward:
            for own in (*step.op.own, *step.op.state):  # relu1.mask -> relu1_mask
                self.names.add(f"{step.out}.{own}", f"{self.names[step.out]}_{own}")
        for name in self.decls:
            if name in self.names.of:  # literals written inline get no gradient
                self.names.add(("d", grad_name(name)), "d_" + self.names[name])

    def _one_hot(self, name: str) -> bool:
        """Whether a label input is read as one-hot rows (else as class indices)."""
        reads = self.compiled.checked.readers(name)
        return not any(class_index_read(self._node(reader), position, self.types) for reader, position in reads)

    def _input(self, name: str) -> InputDecl:
        decl = self.decls[name]
        assert isinstance(decl, InputDecl), name
        return decl

    def _param(self, name: str) -> ParamDecl:
        decl = self.decls[name]
        assert isinstance(decl, ParamDecl), name
        return decl

    def _const(self, name: str) -> ConstDecl:
        decl = self.decls[name]
        assert isinstance(decl, ConstDecl), name
        return decl

    def _node(self, name: str) -> OpNode:
        decl = self.decls[name]
        assert isinstance(decl, OpNode), name
        return decl

    def expr(self, name: str) -> str:
        """A value as the module reads it: its variable, or a literal written inline."""
        return self.literals.get(name) or self.names[name]

    def dtype_source(self, dtype: str | None) -> str:
        dtype = dtype or self.float
        return "DTYPE" if dtype == self.float else f"np.{numpy_name(dtype)}"

    def _helpers(self) -> list[Callable]:
        helpers: list[Callable] = []
        for plan in (self.plan, self.inference):
            if plan is not None:
                for step in plan.forward:
                    helpers.extend(f for f in step.op.helpers(step.attrs, plan.mode) if f not in helpers)
        return helpers

    def draws(self, plan: Plan) -> bool:
        """Whether the plan's forward draws random numbers (dropout, training)."""
        return plan.mode == "train" and any(step.op.random for step in plan.forward)

    def extra_parameters(self, plan: Plan) -> list[str]:
        """forward's and scores' parameters besides params and inputs: `state`, `rng`."""
        reads_state = any(step.state for step in plan.forward)
        return ["state"] * reads_state + ["rng"] * self.draws(plan)

    def call(self, plan: Plan) -> str:
        """The arguments that pass a function's inputs, state and generator on to forward or scores."""
        names = [self.names[n] for n in plan.inputs] + self.extra_parameters(plan)
        return ", ".join(f"{n}={n}" for n in names)

    def extra_reads(self, plan: Plan) -> list[str]:
        """forward's and scores' first lines: defaults for state and generator, and the state each step reads."""
        lines = []
        if any(step.state for step in plan.forward):
            updated = "  # updated in place" if plan.mode == "train" else ""
            lines.append(f"    state = init_state() if state is None else state{updated}")
        if self.draws(plan):
            # By default, the generator graphc.compile_file(..., seed=0) draws from.
            lines.append(
                "    rng = np.random.default_rng(np.random.SeedSequence(0).spawn(3)[2]) if rng is None else rng"
            )
        lines += [f'    {self.names[item]} = state["{item}"]' for step in plan.forward for item in step.state]
        return lines

    # --- the pieces ---------------------------------------------------------

    def module(self) -> str:
        parts = [self.header(), "import numpy as np\n", self.constants()]
        helpers = self.helper_source()
        if helpers:
            parts.append(helpers)
        parts.append(self.init_params())
        if self.state:
            parts.append(self.init_state())
        parts += [self.forward(), self.backward(), self.loss_and_grads()]
        if self.inference is not None:
            parts.append(self.scores_function())
        examples = self.example_inputs()
        if examples:
            parts.append(examples)
            parts.append(self.main())
        return "\n\n\n".join(p.rstrip("\n") for p in parts) + "\n"

    def header(self) -> str:
        plan, ir = self.plan, self.ir
        inputs = "".join(f", {self.names[n]}=..." for n in plan.inputs)
        extra = "".join(f", {p}={p}" for p in self.extra_parameters(plan))
        lines = [
            f'"""{ir.name}: the graph as plain numpy, forward and backward.',
            "",
            f"Generated by graphc {__version__} from {ir.source.path}. It imports numpy",
            "and nothing else; to change the network, edit the .graph file and generate",
            "this module again rather than editing it.",
            "",
            "    params = init_params(seed=0)",
            *self.header_extras(),
            f"    outputs, saved = forward(params{inputs}{extra})",
            "    grads = backward(params, saved)   # d " + self.seed + " / d each value below",
            f"    loss, grads = loss_and_grads(params{inputs}{extra})",
            "",
        ]
        lines.append(f"Floats are {numpy_name(self.float)} (DTYPE).")
        if any(step.op.eval_computes is not None or step.state for step in plan.forward):
            predicts = "; scores() and predict() predict, in eval mode" if self.inference is not None else ""
            lines.append(f"forward and backward run in {plan.mode} mode{predicts}.")
        if plan.params:
            lines += ["", "Params:"]
            lines += _table([(self.names[n], str(self.types[n]), self._param(n).init.describe()) for n in plan.params])
        if plan.inputs:
            lines += ["", "Inputs:"]
            rows: list[tuple[str, ...]] = []
            for n in plan.inputs:
                decl = self._input(n)
                notes = [f"from {decl.role}"] if decl.role else []
                if n in self.labels and self._one_hot(n):
                    classes = TensorType(None, self.types[n].shape[:-1]).shape_text()
                    notes.append(f"one-hot rows, or class indices {classes}")
                elif n in self.labels:
                    notes.append("class indices")
                if decl.init is not None and decl.init.value is not None:
                    value = decl.init.value
                    notes.append(f"= {_literal(value).strip('()')}" if value.ndim == 0 else "has a value")
                elif decl.init is not None:
                    notes.append(f"example_inputs() makes it up as {decl.init.describe()}")
                note = "; ".join(notes)
                rows.append((self.names[n], str(self.types[n]), note))
            lines += _table(rows)
        lines += ["", f"Outputs: {', '.join(plan.outputs)}; backward starts from {plan.seed}."]
        got = [grad_name(w) for w in plan.wrt if self._gets_gradient(w)]
        lines.append(textwrap.fill("Gradients: " + (", ".join(got) if got else "none") + ".", 79))
        lines.append('"""')
        return "\n".join(lines) + "\n"

    def header_extras(self) -> list[str]:
        """The usage lines that make the state and generator forward takes, if it takes them."""
        lines = []
        if any(step.state for step in self.plan.forward):
            note = "updated by every forward" if self.plan.mode == "train" else "read, as training left them"
            lines.append(f"    state = init_state()            # running statistics, {note}")
        if self.draws(self.plan):
            lines.append("    rng = np.random.default_rng(0)  # dropout's masks are drawn from it")
        return lines

    def _gets_gradient(self, name: str) -> bool:
        return name in self.plan.disconnected or self._written(name)

    def _written(self, name: str) -> bool:
        return name == self.plan.seed or any(w.target == grad_name(name) for s in self.plan.backward for w in s.writes)

    def constants(self) -> str:
        lines = [f"DTYPE = np.{numpy_name(self.float)}"]
        if self.plan.params:
            shapes = ", ".join(f'"{n}": {_shape(self.types[n].shape)}' for n in self.plan.params)
            lines.append(f"PARAM_SHAPES = {{{shapes}}}")
        consts = [n for n in self.plan.consts if n not in self.literals]
        if consts:
            lines.append("")
            for n in consts:
                lines.append(f"{self.names[n]} = {self.const_value(n, self._const(n).value)}")
        return "\n".join(lines) + "\n"

    def const_value(self, name: str, value: np.ndarray) -> str:
        dtype = self.types[name].dtype
        if dtype is None:
            return repr(float(value))  # a weak scalar: a Python float, as the interpreter has it, so f32 stays f32
        if value.size > 1 and not any(value.strides):  # one number filling its declared shape
            return f"np.full({value.shape!r}, {value.flat[0].item()!r}, dtype={self.dtype_source(dtype)})"
        return f"np.array({value.tolist()!r}, dtype={self.dtype_source(dtype)})"

    def helper_source(self) -> str:
        helpers = self._helpers()
        sources = [_function_source(f) for f in helpers]
        if self.labels:
            sources.append(
                "def as_labels(t):\n"
                '    """Labels as the graph reads them: one-hot rows in DTYPE, or class indices."""\n'
                "    t = np.asarray(t)\n"
                '    return t.astype(DTYPE, copy=False) if t.dtype.kind == "f" else t.astype(np.int64, copy=False)\n'
            )
        return "\n\n\n".join(s.rstrip("\n") for s in sources) + "\n" if sources else ""  # PEP 8's two blank lines

    def init_params(self) -> str:
        lines = [
            "def init_params(seed=0):",
            '    """Fresh params from the graph\'s initializers; the same numbers as',
            '    graphc.compile_file(..., seed=seed).params."""',
        ]
        if not self.plan.params:
            return "\n".join(lines + ["    return {}"]) + "\n"
        if any(initializers.uses_rng(self._param(n).init) for n in self.plan.params):
            lines.append("    param_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[0])")
        lines.append("    return {")
        for n in self.plan.params:
            init = self._param(n).init
            lines.append(f'        "{n}": {self.init_source(init, self.types[n], "param_rng")},')
        lines.append("    }")
        return "\n".join(lines) + "\n"

    def init_state(self) -> str:
        lines = [
            "def init_state():",
            '    """The running statistics before any training: zeros, as graphc\'s Program starts them."""',
            "    return {",
        ]
        for name, t in self.state.items():
            shape = _shape(initializers.concrete_shape(t, self.ir.dims))
            lines.append(f'        "{name}": np.zeros({shape}, dtype={self.dtype_source(t.dtype)}),')
        lines.append("    }")
        return "\n".join(lines) + "\n"

    def init_source(self, init: Initializer, t: TensorType, rng: str) -> str:
        """The initializer's expression (graphc/initializers.py), for a concrete type."""
        return initializers.source(init, initializers.concrete_shape(t, self.ir.dims), self.dtype_source(t.dtype), rng)

    # --- forward ------------------------------------------------------------------

    def signature(self, inputs: tuple[str, ...], *extra: str) -> str:
        """params, then the inputs (and any `extra` parameters) by keyword."""
        parts = ["params"]
        if inputs or extra:
            parts.append("*")
        for n in inputs:
            default = self.default(n)
            parts.append(self.names[n] + (f"={default}" if default is not None else ""))
        return ", ".join(parts + list(extra))

    def default(self, name: str) -> str | None:
        """An input's value in the graph (`input tax = 1.1`), if it has one."""
        init = self._input(name).init
        if init is None or init.value is None:
            return None
        value, shape = init.value, self.types[name].shape
        if shape and value.ndim == 0:
            if any(isinstance(d, str) for d in shape):
                return None
            return f"np.full({_shape(shape)}, {value.item()!r})"
        return repr(value.tolist())

    def coerce(self, inputs: tuple[str, ...]) -> list[str]:
        lines = []
        for n in inputs:
            v = self.names[n]
            if n in self.labels:
                lines.append(f"    {v} = as_labels({v})")
            else:
                lines.append(f"    {v} = np.asarray({v}, {self.dtype_source(self.types[n].dtype)})")
        return lines

    def step_lines(self, step: ForwardStep, taped: bool, mode: str) -> list[tuple[str, str]]:
        """A forward step's lines, each with the comment it gets."""
        node = self._node(step.out)
        v = {op_name: self.expr(arg) for op_name, arg in zip(node.op.operands, node.args)}
        v["out"] = self.names[step.out]
        for own in (*node.op.own, *node.op.state):
            v[own] = self.names[f"{step.out}.{own}"]
        types = {op_name: self.types[arg] for op_name, arg in zip(node.op.operands, node.args)}
        types["out"] = self.types[step.out]
        lines = node.op.forward_source(v, node.attrs, types, taped, mode)
        return _commented(lines, step.text())

    def forward(self) -> str:
        plan = self.plan
        saved = self.saved_items()
        read = {a for s in plan.forward for a in s.args}
        lines = [
            f"def forward({self.signature(plan.inputs, *(f'{p}=None' for p in self.extra_parameters(plan)))}):",
            '    """The outputs, and `saved`: what backward reads."""',
        ]
        lines += self.extra_reads(plan)
        # The params the steps read, and those that are outputs themselves.
        lines += [f'    {self.names[n]} = params["{n}"]' for n in plan.params if n in read or n in plan.outputs]
        lines += self.coerce(plan.inputs)
        saved_names = set(saved)
        rows: list[tuple[str, str]] = []
        for step in plan.forward:
            rows += self.step_lines(step, step.taped, plan.mode)
            dead = [self.names[n] for n in step.frees if n not in saved_names]
            if dead:
                rows.append((f"del {', '.join(dead)}", ""))
        lines += _aligned(rows)
        outputs = ", ".join(f'"{n}": {self.expr(n)}' for n in plan.outputs)
        lines.append(f"    outputs = {{{outputs}}}")
        if saved:
            lines.append("    saved = {")
            lines += [f'        "{self.names[n]}": {self.names[n]},' for n in saved]
            lines.append("    }")
        else:
            lines.append("    saved = {}")
        lines.append("    return outputs, saved")
        return "\n".join(lines) + "\n"

    def saved_items(self) -> list[str]:
        """What backward reads from forward, besides params and consts, in order."""
        items = [item for step in self.plan.forward for item in step.saves]
        items += [n for n in self.plan.disconnected if isinstance(self.decls[n], InputDecl)]  # zeros of its shape
        items.append(self.seed)  # backward's default dout is ones shaped like it
        fixed = (ParamDecl, ConstDecl)  # backward reads them where forward does
        return [item for item in dict.fromkeys(items) if not isinstance(self.decls.get(item), fixed)]

    # --- backward ------------------------------------------------------------------

    def backward(self) -> str:
        plan = self.plan
        saved = self.saved_items()
        lines = [
            "def backward(params, saved, dout=None):",
            f'    """d {plan.seed} / d each input and param, from what forward saved,',
            f"    starting from dout (default: ones shaped like {plan.seed}).",
            "",
            "    Empties `saved` as it goes, so each saved array is freed once its last",
            '    reader has run."""',
        ]
        lines += self.backward_reads(saved)
        seed = self.names.grad(grad_name(self.seed))
        lines.append(f"    {seed} = np.ones_like({self.expr(self.seed)}) if dout is None else dout")
        last = self.last_readers()
        for j, step in enumerate(plan.backward):
            lines += self.backward_step(j, step, last, saved)
        lines += self.gradients_returned()
        return "\n".join(lines) + "\n"

    def backward_reads(self, saved: list[str]) -> list[str]:
        """backward's first lines: the params its rules read, then what forward saved."""
        plan = self.plan
        reads = {item for s in plan.backward for w in s.writes for item in w.reads}
        params_read = [n for n in plan.params if n in reads or n == plan.seed]
        disconnected_params = [n for n in plan.disconnected if n in plan.params]
        lines = [f'    {self.names[n]} = params["{n}"]' for n in dict.fromkeys(params_read + disconnected_params)]
        lines += [f'    {self.names[n]} = saved.pop("{self.names[n]}")' for n in saved]
        return lines

    def last_readers(self) -> dict[str, int]:
        """The last backward step that reads each saved item: it goes after that."""
        last: dict[str, int] = {}
        for j, step in enumerate(self.plan.backward):
            for item in self.plan.forward[step.forward_index].saves:
                last[item] = j
        return last

    def backward_step(self, j: int, step: BackwardStep, last: dict[str, int], saved: list[str]) -> list[str]:
        """One backward step's lines: each gradient it writes, with its rule as the plan shows it, then `del`s."""
        node = self._node(step.node)
        fstep = self.plan.forward[step.forward_index]
        v = {op_name: self.expr(arg) for op_name, arg in zip(node.op.operands, node.args)}
        v["out"] = self.names[step.node]
        v["dout"] = self.names.grad(step.dout)
        for item, own in fstep.own_saves():
            v[own] = self.names[item]
        types = {op_name: self.types[arg] for op_name, arg in zip(node.op.operands, node.args)}
        types["out"] = self.types[step.node]
        lines = [f"    # {fstep.text()}"]
        body = []
        for w in step.writes:
            target = self.names.grad(w.target)
            expr = node.op.grad_source(w.operand, v, node.attrs, types, self.plan.mode)
            if not w.accumulate:
                code = f"{target} = {expr}"
            elif w.in_place:
                code = f"{target} += {expr}"
            else:
                code = f"{target} = {target} + {expr}"
            body.append((code, f"{w.target} {'+=' if w.accumulate else '='} {w.rule}"))
        width = max(len(c) for c, _ in body)
        lines += [f"    {c.ljust(width)}  # {r}" for c, r in body]
        # What dies here; inputs are the caller's, and stay.
        dead = [
            self.names[i]
            for i in fstep.saves
            if last.get(i) == j and i in saved and not isinstance(self.decls.get(i), InputDecl)
        ]
        dead += [self.names.grad(g) for g in step.frees]
        if dead:
            lines.append(f"    del {', '.join(dict.fromkeys(dead))}")
        return lines

    def gradients_returned(self) -> list[str]:
        """backward's return: each wanted gradient, zeros where nothing connects it to the seed."""
        plan = self.plan
        lines = ["    return {"]
        for n in plan.wrt:
            if n in plan.disconnected:
                value = self.names[n]
                dtype = "" if self.types[n].dtype in ("f32", "f64") else ", dtype=np.float64"
                lines.append(f'        "{n}": np.zeros_like({value}{dtype}),  # no path to {plan.seed}')
            elif self._written(n):
                g = self.names.grad(grad_name(n))
                copy = grad_name(n) in self.shared
                lines.append(
                    f'        "{n}": {"np.copy(" + g + ")" if copy else g},'
                    + ("  # its own array: add passed one gradient to several" if copy else "")
                )
        lines.append("    }")
        return lines

    def loss_and_grads(self) -> str:
        plan = self.plan
        extra = [f"{p}=None" for p in self.extra_parameters(plan)]
        call = self.call(plan)
        return (
            "\n".join(
                [
                    f"def loss_and_grads({self.signature(plan.inputs, *extra, 'dout=None')}):",
                    f'    """One training step\'s arithmetic: {plan.seed} and its gradients (times dout)."""',
                    f"    outputs, saved = forward(params{', ' + call if call else ''})",
                    f'    return outputs["{plan.seed}"], backward(params, saved, dout)',
                ]
            )
            + "\n"
        )

    def scores_function(self) -> str:
        plan = self.inference
        assert plan is not None
        read = {a for s in plan.forward for a in s.args}
        extra = [f"{p}=None" for p in self.extra_parameters(plan)]
        lines = [
            f"def scores({self.signature(plan.inputs, *extra)}):",
            f'    """Forward only, to `{self.scores}`, the scores the loss reads: no labels,',
            '    nothing kept for backward."""',
        ]
        lines += self.extra_reads(plan)
        lines += [f'    {self.names[n]} = params["{n}"]' for n in plan.params if n in read]
        lines += self.coerce(plan.inputs)
        rows: list[tuple[str, str]] = []
        for step in plan.forward:
            rows += self.step_lines(step, taped=False, mode=plan.mode)
            dead = [self.names[n] for n in step.frees]
            if dead:
                rows.append((f"del {', '.join(dead)}", ""))
        lines += _aligned(rows)
        assert self.scores is not None
        lines.append(f"    return {self.names[self.scores]}")
        call = self.call(plan)
        lines += [
            "",
            "",
            f"def predict({self.signature(plan.inputs, *extra)}):",
            '    """The predicted class of each row: the argmax of the scores."""',
            f"    return scores(params{', ' + call if call else ''}).argmax(axis=-1)",
        ]
        return "\n".join(lines) + "\n"

    def example_inputs(self) -> str | None:
        """The inputs graphc makes up when none are given, if every input has one."""
        inputs = [self._input(n) for n in self.plan.inputs]
        if not inputs or any(d.init is None for d in inputs):
            return None
        lines = [
            "def example_inputs(seed=0):",
            '    """The inputs graphc makes up when it is given none: the same numbers',
            '    as graphc.compile_file(..., seed=seed).default_feeds()."""',
        ]
        if any(initializers.uses_rng(d.init) for d in self.ir.inputs() if d.init is not None):
            lines.append("    input_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[1])")
        lines.append("    return {")
        # In declaration order, as Program draws them, so the random streams agree.
        for decl in self.ir.inputs():
            assert decl.init is not None  # every input has one, or there is no example_inputs
            source = self.init_source(decl.init, self.types[decl.name], "input_rng")
            lines.append(f'        "{self.names[decl.name]}": {source},')
        lines.append("    }")
        return "\n".join(lines) + "\n"

    def main(self) -> str:
        return textwrap.dedent("""\
            if __name__ == "__main__":
                # A smoke test: one step on the made-up inputs.
                params = init_params(seed=0)
                outputs, saved = forward(params, **example_inputs(seed=0))
                for name, value in outputs.items():
                    print(name, "=", value)
                for name, grad in backward(params, saved).items():
                    print(f"d_{name}", np.shape(grad), "norm", float(np.linalg.norm(grad)))
            """)


# --- small pieces ---------------------------------------------------------------


def _function_source(function: Callable) -> str:
    """A kernel's source, from its `def` on: a tool that decorates it (a mutation
    tester's trampoline) leaves the generated module the kernel as written."""
    lines = inspect.getsource(function).splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("def "))
    return "".join(lines[start:])


def _shape(shape: tuple) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["    " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _commented(lines: list[str], comment: str) -> list[tuple[str, str]]:
    """The line that sets the step's value gets the step as the graph writes it."""
    return [(line, "") for line in lines[:-1]] + [(lines[-1], comment)]


def _aligned(rows: list[tuple[str, str]], indent: str = "    ", limit: int = 48) -> list[str]:
    """Code lines with their comments in one column (lines longer than `limit` aside)."""
    width = max([len(code) for code, comment in rows if comment and len(code) <= limit] + [0])
    return [indent + (f"{code.ljust(width)}  # {comment}" if comment else code) for code, comment in rows]


def _literal(value: np.ndarray) -> str:
    """A scalar const as Python source: weakly typed, so f32 stays f32."""
    number = value.item()
    if isinstance(number, float) and not np.isfinite(number):
        return f"float({str(number)!r})"
    text = repr(number)
    return f"({text})" if text.startswith("-") else text
