"""PyTorch code generation: a graph as the source of a standalone `nn.Module`.

    graphc compile models/two_layer_net.graph --emit torch -o two_layer_net.py

The module imports torch and numpy, nothing of graphc. It defines one class,
named after the graph in CamelCase (`TwoLayerNet`), with

- the params as `nn.Parameter`s of their shapes and dtypes (zeros until
  loaded), batchnorm's running statistics as buffers (saved in its
  state_dict) and the consts as buffers (not saved: they are the graph's);
- `from_graphc(weights)` / `load_graphc(weights)`: the params (and running
  statistics) of a graphc checkpoint (`graphc train --save`: `params/NAME`,
  `state/NAME`; a plain .npz of params by name too), or of dicts of arrays by
  graphc name (`Program.params`, `Program.state`);
- `forward(*, x, t, ...)`: the graph's inputs by name, as keywords; returns a
  dict of the graph's outputs by name (and, after them, the scores the first
  reads when it is a loss, as ONNX export does). `self.training` picks the
  mode: dropout drops and batchnorm normalizes by the batch in train mode
  (torch's default), the book's eval formulas in eval mode (`model.eval()`).

Each forward line is one plan step, in plan order, written by one mapping
function per op (MAPPINGS), with the step and its `.graph` line as a comment.
Numbers follow graphc's semantics, so that autograd's gradients are graphc's:
a weak value (a literal with no dtype) is float64 and cast to the dtype it
meets; max_pool pads with zeros; avg_pool counts the padding; labels read as
class indices are int64. Dropout's masks are drawn from torch's generator,
not graphc's, so in train mode the numbers of a graph with dropout differ.

Nothing here imports torch: the generator writes text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from graphc import __version__
from graphc.codegen import _Names as _PythonNames
from graphc.ir import OpNode, TensorType
from graphc.plan import ForwardStep, Plan, make_inference_plan

_TORCH = {"f32": "torch.float32", "f64": "torch.float64", "i64": "torch.int64", None: "torch.float64"}
_NUMPY = {"f32": np.float32, "f64": np.float64, "i64": np.int64, None: np.float64}


class _Names(_PythonNames):
    """Python identifiers for the graph's names, as the numpy module's, none starting with `_`."""

    no_underscore_first = True


@dataclass
class _Emit:
    """One plan step's mapping at work: its operands as expressions, its lines."""

    step: ForwardStep
    types: dict[str, TensorType]
    value: Callable[[str], str]  # a graph value as an expression (a local, or self.W1)
    names: _Names
    lines: list[str] = field(default_factory=list)
    train: list[str] = field(default_factory=list)  # lines for train mode, where the modes differ
    eval: list[str] = field(default_factory=list)

    @property
    def out(self) -> str:
        return self.value(self.step.out)

    @property
    def dtype(self) -> str | None:
        return self.types[self.step.out].dtype

    @property
    def attrs(self) -> dict[str, Any]:
        return self.step.attrs

    def type(self, i: int) -> TensorType:
        return self.types[self.step.args[i]]

    def arg(self, i: int) -> str:
        """Operand i in the step's dtype: a weak value cast to what it meets, as numpy casts a Python float."""
        name = self.step.args[i]
        expression = self.value(name)
        if self.types[name].dtype == self.dtype:
            return expression
        return f"{expression}.to({_TORCH[self.dtype]})"

    def local(self, what: str) -> str:
        """A fresh local for a helper value of this step (`bn1_mu`)."""
        return self.names.add(f"{self.step.out}.{what}")

    def state(self, item: str) -> str:
        return self.value(f"{self.step.out}.{item}")


# --- the mappings: one function per op ------------------------------------------------


def _binary(symbol: str) -> Callable[[_Emit], None]:
    def emit(e: _Emit) -> None:  # torch broadcasts as numpy does
        e.lines.append(f"{e.out} = {e.arg(0)} {symbol} {e.arg(1)}")

    return emit


def _unary(function: str) -> Callable[[_Emit], None]:
    def emit(e: _Emit) -> None:
        e.lines.append(f"{e.out} = {function}({e.arg(0)})")

    return emit


def _square(e: _Emit) -> None:
    x = e.arg(0)
    e.lines.append(f"{e.out} = {x} * {x}")  # as graphc computes it


def _reduction(function: str) -> Callable[[_Emit], None]:
    def emit(e: _Emit) -> None:
        axis, keep, ndim = e.attrs["axis"], e.attrs["keepdims"] == "true", e.type(0).ndim
        if axis is None and (not keep or ndim == 0):
            e.lines.append(f"{e.out} = {function}({e.arg(0)})")
            return
        dims = tuple(range(ndim)) if axis is None else axis
        e.lines.append(f"{e.out} = {function}({e.arg(0)}, dim={dims!r}, keepdim={keep})")

    return emit


def _affine(e: _Emit) -> None:
    x = e.arg(0)
    if e.type(0).ndim > 2:  # the book's Affine flattens all but the batch axis
        x = f"{x}.reshape({x}.shape[0], -1)"
    e.lines.append(f"{e.out} = {x} @ {e.arg(1)} + {e.arg(2)}")


def _softmax_loss(e: _Emit) -> None:
    """Cross-entropy from log_softmax (log-sum-exp, stable); labels one-hot or class indices."""
    y, t = e.type(0), e.type(1)
    log_p = e.local("log_p")
    e.lines.append(f"{log_p} = F.log_softmax({e.arg(0)}, dim=-1)")
    if t.shape == y.shape:  # one-hot rows: -sum(t * log p)
        total = f"-({e.arg(1)} * {log_p}).sum()"
    elif y.ndim == 1:  # one sample, one class index
        total = f"-{log_p}[{e.value(e.step.args[1])}.long()]"
    else:  # each row's log p at its class
        labels = e.value(e.step.args[1])
        total = f"-{log_p}.gather(1, {labels}.long()[:, None]).sum()"
    if e.attrs["reduction"] == "mean" and y.ndim == 2:
        total = f"{total} / {e.value(e.step.args[0])}.shape[0]"
    e.lines.append(f"{e.out} = {total}")


def _dropout(e: _Emit) -> None:
    ratio = e.attrs["ratio"]
    x = e.arg(0)
    # The book's dropout: kept where a uniform draw exceeds ratio, not rescaled; predicting, scaled.
    e.train.append(f"{e.out} = {x} * (torch.rand_like({x}) > {ratio!r})")
    e.eval.append(f"{e.out} = {x} * {1.0 - ratio!r}")


def _batchnorm(e: _Emit) -> None:
    """By the batch's statistics while training (and the running ones moved), else by the running ones."""
    x, gamma, beta = e.arg(0), e.arg(1), e.arg(2)
    eps, momentum = e.attrs["eps"], e.attrs["momentum"]
    mu, xc, var, std, xn = (e.local(w) for w in ("mu", "xc", "var", "std", "xn"))
    mean, variance = e.state("running_mean"), e.state("running_var")
    e.train += [
        f"{mu} = {x}.mean(dim=0)",
        f"{xc} = {x} - {mu}",
        f"{var} = ({xc} ** 2).mean(dim=0)",
        f"{std} = torch.sqrt({var} + {eps!r})",
        "with torch.no_grad():",
        f"    {mean}.copy_({momentum!r} * {mean} + (1 - {momentum!r}) * {mu})",
        f"    {variance}.copy_({momentum!r} * {variance} + (1 - {momentum!r}) * {var})",
    ]
    e.eval += [f"{xc} = {x} - {mean}", f"{std} = torch.sqrt({variance} + {eps!r})"]
    e.lines += [f"{xn} = {xc} / {std}", f"{e.out} = {gamma} * {xn} + {beta}"]


def _padded(e: _Emit) -> str:
    """x with `pad` zeros around each image, as graphc pads (max_pool's windows may pick a padded 0)."""
    pad = e.attrs["pad"]
    return f"F.pad({e.arg(0)}, ({pad}, {pad}, {pad}, {pad}))" if pad else e.arg(0)


def _conv2d(e: _Emit) -> None:
    stride, pad = e.attrs["stride"], e.attrs["pad"]
    e.lines.append(f"{e.out} = F.conv2d({e.arg(0)}, {e.arg(1)}, {e.arg(2)}, stride={stride}, padding={pad})")


def _max_pool(e: _Emit) -> None:
    size, stride = e.attrs["size"], e.attrs["stride"]
    e.lines.append(f"{e.out} = F.max_pool2d({_padded(e)}, kernel_size={size}, stride={stride})")


def _avg_pool(e: _Emit) -> None:
    # Padded first: every window averages size² numbers, zeros included, as graphc's.
    size, stride = e.attrs["size"], e.attrs["stride"]
    e.lines.append(f"{e.out} = F.avg_pool2d({_padded(e)}, kernel_size={size}, stride={stride})")


def _flatten(e: _Emit) -> None:
    x = e.arg(0)
    e.lines.append(f"{e.out} = {x}.reshape({x}.shape[0], -1)")


MAPPINGS: dict[str, Callable[[_Emit], None]] = {
    "mul": _binary("*"),
    "add": _binary("+"),
    "sub": _binary("-"),
    "div": _binary("/"),
    "relu": _unary("torch.relu"),
    "sigmoid": _unary("torch.sigmoid"),
    "tanh": _unary("torch.tanh"),
    "exp": _unary("torch.exp"),
    "log": _unary("torch.log"),
    "square": _square,
    "sum": _reduction("torch.sum"),
    "mean": _reduction("torch.mean"),
    "affine": _affine,
    "softmax_loss": _softmax_loss,
    "dropout": _dropout,
    "batchnorm": _batchnorm,
    "conv2d": _conv2d,
    "max_pool": _max_pool,
    "avg_pool": _avg_pool,
    "flatten": _flatten,
}


# --- the module -------------------------------------------------------------------


# Attributes of nn.Module a param, state or const must not shadow (its name then gains a `_`).
_MODULE_ATTRIBUTES = set(dir(object)) | {
    *("training", "forward", "train", "eval", "parameters", "buffers", "children", "modules", "state_dict"),
    *("load_state_dict", "to", "cpu", "cuda", "double", "float", "half", "type", "apply", "zero_grad"),
    *("register_buffer", "register_parameter", "add_module", "named_parameters", "named_buffers", "requires_grad_"),
    *("get_parameter", "get_buffer", "dump_patches", "call_super_init", "extra_repr", "named_modules"),
    *("GRAPHC_INPUTS", "GRAPHC_PARAMS", "GRAPHC_STATE", "from_graphc", "load_graphc"),
}


def class_name(graph: str) -> str:
    """The module's class: the graph's name in CamelCase (two_layer_net -> TwoLayerNet)."""
    name = "".join(part[:1].upper() + part[1:] for part in re.split(r"[\W_]+", graph))
    if not name or name[0].isdigit():
        name = "Graph" + name
    return name


def torch_outputs(program: Any) -> tuple[str, ...]:
    """The graph's outputs, and after them the scores the first one reads if it is a loss."""
    from graphc.export_onnx import export_outputs  # onnx itself is not imported

    return tuple(export_outputs(program))


def torch_types(plan: Plan) -> dict[str, TensorType]:
    """Every value's type: graphc's, with labels read as class indices int64."""
    from graphc.export_onnx import onnx_types  # onnx itself is not imported

    return onnx_types(plan)


def _where(span: Any) -> str:
    """`file:line` of a step, the standard library's as `import` names it (no machine's own path)."""
    from graphc.imports import STD_PREFIX, std_dir

    path = Path(str(span.source.path))
    if path.is_relative_to(std_dir()):
        return f"{STD_PREFIX}{path.relative_to(std_dir()).as_posix()}:{span.line}"
    return f"{span.source.path}:{span.line}"


def _literal(value: np.ndarray) -> str:
    """An array as a Python literal that reads back to the same numbers (repr of floats round-trips)."""
    return repr(value.tolist())


def _concrete(t: TensorType, value: Any) -> tuple[int, ...]:
    shape = np.shape(value)
    return shape if len(shape) == t.ndim else tuple(d for d in t.shape if isinstance(d, int))


def torch_module(program: Any) -> str:
    """The source of a module defining the program's graph as an nn.Module (see the module's docstring)."""
    outputs = torch_outputs(program)
    plan = make_inference_plan(program.checked, program.types, outputs, mode="train")
    from graphc.export_onnx import refuse_unmapped

    refuse_unmapped(plan, program, MAPPINGS, "PyTorch code generation")
    types = torch_types(plan)
    names = _Names({"self", "torch", "F", "nn", "np", "device"})
    members = _Names(_MODULE_ATTRIBUTES)
    member_of: dict[str, str] = {}
    # Every param and running statistic of the graph, as its checkpoints hold them; the consts forward reads.
    for name in (*program.param_names, *program.state, *plan.consts):
        member_of[name] = members.add(name)

    def value(name: str) -> str:
        return f"self.{member_of[name]}" if name in member_of else names.add(name)

    cls = class_name(program.name)
    source = program.ir.source.path
    lines = [
        f'"""Graph `{program.name}` of {source} as a PyTorch module, written by graphc {__version__}',
        "(graphc compile --emit torch). It imports torch and numpy only.",
        "",
        f'    model = {cls}.from_graphc("weights.npz")  # a checkpoint of graphc train --save',
        f"    outputs = model({', '.join(f'{n}=...' for n in plan.inputs)})",
        "",
        "forward takes the graph's inputs as keywords and returns a dict of its outputs",
        "(and of the scores a loss reads). model.train() (the default) and model.eval()",
        "select graphc's train and eval modes; dropout's masks come from torch's generator,",
        "not graphc's.",
        '"""',
        "",
        "import numpy as np",
        "import torch",
        "import torch.nn.functional as F",
        "from torch import nn",
        "",
        "",
        f"class {cls}(nn.Module):",
        f'    """Graph `{program.name}`. GRAPHC_*: graphc names -> forward keywords and attributes."""',
        "",
        "    GRAPHC_INPUTS = {" + ", ".join(f"{n!r}: {value(n)!r}" for n in plan.inputs) + "}",
        "    GRAPHC_PARAMS = {" + ", ".join(f"{n!r}: {member_of[n]!r}" for n in program.param_names) + "}",
        "    GRAPHC_STATE = {" + ", ".join(f"{n!r}: {member_of[n]!r}" for n in program.state) + "}",
        "",
        "    def __init__(self):",
        "        super().__init__()",
    ]
    for name in program.param_names:
        shape = tuple(np.shape(program.params[name]))
        t = types[name]
        lines.append(f"        self.{member_of[name]} = nn.Parameter(torch.zeros({shape!r}, dtype={_TORCH[t.dtype]}))")
    for item, t in program.state_types.items():
        zeros = f"torch.zeros({tuple(program.state[item].shape)!r}, dtype={_TORCH[t.dtype]})"
        lines.append(f"        self.register_buffer({member_of[item]!r}, {zeros})")
    for name in plan.consts:
        t = types[name]
        values = np.broadcast_to(np.asarray(program.consts[name], _NUMPY[t.dtype]), _concrete(t, program.consts[name]))
        lines.append(
            f"        self.register_buffer({member_of[name]!r}, "
            f"torch.tensor({_literal(np.asarray(values))}, dtype={_TORCH[t.dtype]}), persistent=False)"
        )
    lines += _LOADERS.replace("CLASS", cls).splitlines()
    lines += _forward(plan, program, types, value, names)
    return "\n".join(lines) + "\n"


def _forward(
    plan: Plan, program: Any, types: dict[str, TensorType], value: Callable[[str], str], names: _Names
) -> list[str]:
    decls = program.ir.decls
    signature = ", ".join(value(n) for n in plan.inputs)
    lines = ["", f"    def forward(self, *, {signature}):" if signature else "    def forward(self):"]
    if plan.inputs:
        lines.append("        device = next(iter([*self.parameters(), *self.buffers()]), torch.empty(0)).device")
    for name in plan.inputs:
        dtype = _TORCH[types[name].dtype]
        lines.append(f"        {value(name)} = torch.as_tensor({value(name)}, dtype={dtype}, device=device)")
    for step in plan.forward:
        node = decls[step.out]
        assert isinstance(node, OpNode)
        e = _Emit(step, types, value, names)
        MAPPINGS[step.op.name](e)
        lines.append(f"        # {step.text()}  ({_where(node.call_span)})")
        if e.train or e.eval:
            lines += ["        if self.training:", *(f"            {line}" for line in e.train)]
            lines += ["        else:", *(f"            {line}" for line in e.eval)]
        lines += [f"        {line}" for line in e.lines]
    returned = ", ".join(f"{n!r}: {value(n)}" for n in plan.outputs)
    lines.append(f"        return {{{returned}}}")
    return lines


# The loaders every generated class has (CLASS: its name).
_LOADERS = '''
    @classmethod
    def from_graphc(cls, weights, state=None):
        """A model holding graphc's params: see load_graphc."""
        model = cls()
        model.load_graphc(weights, state)
        return model

    def load_graphc(self, weights, state=None):
        """Copy in graphc's params and running statistics: `weights` is the path of a
        graphc checkpoint (graphc train --save: params/NAME and state/NAME entries; a
        plain .npz of params by name too) or a dict of arrays by graphc name (a
        Program's params, with its state in `state`). Every param must be there."""
        if not hasattr(weights, "keys"):
            with np.load(weights, allow_pickle=False) as archive:
                entries = {key: archive[key] for key in archive.files}
            weights = {key[len("params/"):]: v for key, v in entries.items() if key.startswith("params/")} or {
                key: v for key, v in entries.items() if key in self.GRAPHC_PARAMS
            }
            state = {key[len("state/"):]: v for key, v in entries.items() if key.startswith("state/")}
        for table, values, must in ((self.GRAPHC_PARAMS, weights, True), (self.GRAPHC_STATE, state or {}, False)):
            for name, attribute in table.items():
                if name not in values:
                    if must:
                        raise KeyError(f"no values for param `{name}` of CLASS")
                    continue
                target = getattr(self, attribute)
                array = torch.as_tensor(np.asarray(values[name]), dtype=target.dtype)
                if tuple(array.shape) != tuple(target.shape):
                    raise ValueError(f"`{name}` is {list(array.shape)}, CLASS wants {list(target.shape)}")
                with torch.no_grad():
                    target.copy_(array)
        return self
'''.rstrip("\n")


__all__ = ["MAPPINGS", "class_name", "torch_module", "torch_outputs", "torch_types"]
