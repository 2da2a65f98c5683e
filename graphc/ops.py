"""The op registry: each op defined once, in one class.

An op class holds everything every stage needs to know about it: its operands
and attributes (for the checker), its shape rule (for shape inference), its
forward and the local gradient rule of each operand (for the plan, the
interpreter, the code generator and the diagrams), and what it needs from
the other stages: which operands are labels, which are a loss's scores.

Forward and the rules are written once, as formulas (see "the notation"
below). The rule a learner reads in a plan, the line the code generator
writes and the function the interpreter runs are all made from that one
formula, so they cannot disagree, and generated code computes what the
interpreter computes, bit for bit.
"""

from __future__ import annotations

import ast
import copy
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from graphc.ir import Dim, TensorType, shape_text


def _bind(formulas: tuple[str, ...], attrs: Mapping[str, Any]) -> tuple[str, ...]:
    """Formulas with the op's numeric attributes written in as numbers (dropout's `ratio`)."""
    if not attrs:  # most nodes: planning a large graph asks for each of its formulas
        return formulas
    numbers = tuple((k, v) for k, v in attrs.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    return tuple(_bound(f, numbers) for f in formulas) if numbers else formulas


@functools.cache
def _bound(formula: str, numbers: tuple[tuple[str, Any], ...]) -> str:
    values = dict(numbers)

    class Bind(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.AST:
            return ast.Constant(values[node.id]) if node.id in values else node

    return "\n".join(ast.unparse(stmt) for stmt in Bind().visit(copy.deepcopy(_parse(formula))).body)


class ShapeError(Exception):
    """An operand does not fit the op; shape inference adds the source position."""

    def __init__(
        self,
        message: str,
        operand: int | None = None,
        attribute: str | None = None,
        hint: str | None = None,
        *,
        code: str,  # graphc/codes.py
    ):
        super().__init__(message)
        self.code = code
        self.operand = operand
        self.attribute = attribute  # the attribute at fault (`axis`), where the caret goes
        self.hint = hint


@dataclass(frozen=True)
class Attribute:
    """An attribute an op takes: its default, the values it allows, and what it means."""

    default: Any
    choices: tuple[str, ...] | None = None
    doc: str = ""
    # What is wrong with a value, as messages say it ("must be in [0, 1)"), or
    # None; elaboration refuses a value with a problem, naming what was written.
    problem: Callable[[Any], str | None] | None = None
    hint: str | None = None  # shown with that problem


# The modes a plan runs in: "train" (what training and, by default, run and
# gradcheck use) and "eval" (predicting). Only ops with `eval_*` formulas
# (dropout, batchnorm) behave differently in the two.
MODES = ("train", "eval")


@dataclass(frozen=True)
class Operand:
    """An operand as shape inference sees it: its value's name and type."""

    name: str
    type: TensorType


@dataclass(frozen=True)
class Own:
    """A tensor of the op's own that forward keeps for backward (relu's mask)."""

    like: str  # the operand (or "out") whose shape it has
    dtype: str | None = None  # None: the dtype of `like`
    computes: str | None = None  # its formula; None when forward's own statement makes it
    display: str | None = None  # how rules show it, as a formula; None: by its plan name (relu1.mask)


def _number_in(low: float, high: float, *, above: bool = False) -> Callable:  # pragma: no mutate block (runs at import)
    """An attribute's check: a number in [low, high), or in (low, high) if `above`."""
    # A partial of a module-level function rather than a closure: this runs at
    # import, the check when a graph is checked (where mutation testing can reach it).
    return functools.partial(_out_of_range, low, high, above)


def _out_of_range(low: float, high: float, above: bool, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "must be a number"
    if not (low < value if above else low <= value) or not value < high:
        return f"must be in {'(' if above else '['}{low:g}, {high:g})"
    return None


# --- numpy kernels ----------------------------------------------------------
# Functions formulas call. Generated modules get a copy of their source, so
# each is plain numpy and reads nothing else from this module.


def sigmoid(x):
    """1 / (1 + exp(-x)), computed stably."""
    # exp of -|x| never overflows; both branches of the logistic follow from it.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(e.dtype, copy=False)


def softmax_cross_entropy(y, t, mean=True):
    """Cross-entropy of softmax(y) against labels t, and softmax(y).

    t is one-hot rows shaped like y, or class indices. The loss is averaged
    over the batch when `mean`, else summed.
    """
    # log-softmax by log-sum-exp: shifting each row by its max keeps exp finite.
    # numpy reduces short rows one at a time; across a transposed copy it
    # reduces them all at once (4x faster for 10 classes).
    if y.ndim == 2 and y.shape[1] < 32:
        z = y - y.T.copy().max(axis=0)[:, None]
    else:
        z = y - y.max(axis=-1, keepdims=True)
    probs = np.exp(z)
    # Row sums as one product with ones: a BLAS call, not a reduction per row.
    total = probs @ np.ones((probs.shape[-1], 1), probs.dtype)
    probs /= total
    log_total = np.log(total)
    n = y.shape[0] if y.ndim == 2 else 1
    if t.shape == y.shape:
        loss = -np.sum(t.astype(z.dtype, copy=False) * (z - log_total))  # i64 one-hot labels too
    elif y.ndim == 2:  # class indices: -log p of each row's class is log_total - z there
        loss = log_total.sum() - z[np.arange(n), t].sum()
    else:
        loss = log_total[0] - z[t]
    if mean:
        loss = loss / n
    return np.asarray(loss, dtype=y.dtype), probs


def minus_labels(probs, t):
    """probs - t, for labels t as one-hot rows or as class indices."""
    if t.shape == probs.shape:
        return probs - t.astype(probs.dtype, copy=False)  # i64 one-hot labels must not make f32 into f64
    grad = probs.copy()
    if probs.ndim == 2:
        grad[np.arange(len(t)), t] -= 1
    else:
        grad[t] -= 1
    return grad


# --- the notation ---------------------------------------------------------------
#
# Formulas are Python expressions (forward: assignment statements) over the
# op's own names: its operands, `out`, `dout` (the gradient arriving at out)
# and its own tensors. They may call the numpy kernels above and the shape
# kernels below. Each formula is rendered for one audience and one set of
# operand types, with `{name}` placeholders where the names go:
#
#   people  "{dout} * {b}"            a plan shows  d_price * tax
#   code    "({dout} * {b}).sum(axis=0)"  the generated module and, compiled,
#                                     the interpreter run this
#
# Shape kernels depend on the operand types, which both audiences know: the
# sums that undo broadcasting are shown as `sum(..., axis=0)` and written as
# `.sum(axis=0)`, from one list of axes.
#
# An op's numeric attributes are written into its formulas as numbers
# (`ratio` -> 0.5). Ops that behave differently while predicting have
# eval_* formulas for mode "eval"; ops with state (batchnorm's running mean)
# name it in their formulas and update it in place, `running_mean[...] = ...`,
# in mode "train" only; ops that draw random numbers call `rng`, the run's
# numpy Generator. State and `rng` are forward's arguments after the operands.

Types = Mapping[str, TensorType]
# A kernel's template from its arguments: types of names, values of literals, None for the rest.
Template = Callable[[list[Any], Types], str]


@dataclass(frozen=True)
class Kernel:
    """A function formulas may call: how it reads for people and as code.

    Each is a template over the arguments ({0}, {1}), or a function that
    chooses one for the types of the arguments that are names (a literal
    argument's value, None for another expression) and of the op's names;
    None keeps the call as it is written.
    `function`, if any, is copied into generated modules. Arguments in
    `static` are read for their type only: a rule that names them does not
    read their values.
    """

    display: str | Template | None = None
    source: str | Template | None = None
    function: Callable | None = None
    static: tuple[int, ...] = ()

    def template(self, people: bool, args: list[Any], types: Types) -> str | None:
        template = self.display if people else self.source
        return template(args, types) if callable(template) else template


def _sum_axes(shape: Sequence[Dim], target: Sequence[Dim]) -> tuple[tuple[int, ...], tuple[int, ...], bool]:
    """The sums that undo broadcasting `target` to `shape`: the leading axes
    broadcasting added, the axes it stretched from 1 (kept as dims of 1), and
    whether the added ones are all the axes there are.

    A dim 1 in `target` against any other dim (a symbol included) was
    stretched; numpy gives the same sums if a symbol turns out to be 1.
    """
    lead = len(shape) - len(target)
    added = tuple(range(lead))
    stretched = tuple(i for i, d in enumerate(target) if d == 1 and shape[lead + i] != 1)
    return added, stretched, lead == len(shape)


def _axes(axes: tuple[int, ...]) -> str:
    return str(axes[0]) if len(axes) == 1 else str(axes)


def _sum_to(args: list[TensorType | None], types: Types, people: bool) -> str:
    """sum_to(g, a): `sum(g, axis=0)` for people, `g.sum(axis=0)` as code, from one list of axes."""
    target = args[1]
    assert target is not None, "sum_to's second argument names an operand"
    added, stretched, everything = _sum_axes(types["out"].shape, target.shape)
    text = "{0}"
    if added:
        axis = "" if everything else f"axis={_axes(added)}"
        text = f"sum({text}, {axis})" if people and axis else f"sum({text})" if people else f"{text}.sum({axis})"
    if stretched:
        axis = f"axis={_axes(stretched)}, keepdims=True"
        text = f"sum({text}, {axis})" if people else f"{text}.sum({axis})"
    return text


def _flat(x: TensorType) -> str:
    """x as a matrix: trailing dims flattened, as the book's Affine does."""
    return "{0}.reshape(len({0}), -1)" if x.ndim > 2 else "{0}"


def _flat_source(args: list[TensorType | None], types: Types) -> str:
    assert args[0] is not None
    return _flat(args[0])


def _unflat_source(args: list[TensorType | None], types: Types) -> str:
    x = args[1]
    assert x is not None
    if x.ndim <= 2:
        return "{0}"
    # Only the batch dim may be symbolic: the rest multiply to W's rows.
    return "{0}.reshape(" + ", ".join("-1" if isinstance(d, str) else str(d) for d in x.shape) + ")"


def _tdot(args: list[TensorType | None], types: Types, people: bool) -> str:
    """tdot(x, dout): a single row's outer product; else a matrix product, which sums over the batch."""
    x = args[0]
    assert x is not None
    if x.ndim == 1:
        return "outer({0}, {1})" if people else "np.outer({0}, {1})"
    if people:
        return "flat({0}).T @ {1}" if x.ndim > 2 else "{0}.T @ {1}"
    return _flat(x) + ".T @ {1}"


def _batch_source(args: list[TensorType | None], types: Types) -> str:
    probs = args[0]
    assert probs is not None
    return "len({0})" if probs.ndim == 2 else "1"  # one sample: a batch of one


def _reduced(x: TensorType, axis: int | None) -> tuple[Dim, ...]:
    return x.shape if axis is None else (x.shape[axis],)


def _spread(args: list[Any], types: Types, people: bool) -> str:
    """spread(g, x[, axis]): a reduction's gradient g copied to every element it
    reduced, shaped like x; with an axis, g lacks that axis and gets it back first."""
    x = args[1]
    assert x is not None
    g = "{0}"
    if len(args) > 2 and x.ndim > 1:  # of one axis, g is a scalar and broadcasts as it is
        axis = args[2] % x.ndim  # a literal axis, from the end if negative
        g = f"expand_dims({g}, {axis})" if people else f"np.expand_dims({g}, {axis})"
    return f"broadcast_to({g}, {{1}}.shape)" if people else f"np.broadcast_to({g}, np.shape({{1}})).copy()"


def _count(args: list[Any], types: Types, people: bool) -> str:
    """count(x[, axis]): how many numbers a mean averages; a symbolic dim's size
    is read at run time (`N` for people, as `batch` shows it)."""
    x = args[0]
    assert x is not None
    axis = args[1] % x.ndim if len(args) > 1 else None  # a literal axis
    dims = _reduced(x, axis)
    if all(isinstance(d, int) for d in dims):
        return str(_product(dims))
    if people:
        return " * ".join(str(d) for d in dims)
    return "np.size({0})" if axis is None else f"np.shape({{0}})[{axis}]"


def batchnorm_dx(dout, gamma, xc, std):
    """The book's BatchNormalization.backward: d loss / d x through the batch's mean and variance."""
    n = dout.shape[0]
    dxn = gamma * dout
    dxc = dxn / std
    dstd = -np.sum((dxn * xc) / (std * std), axis=0)
    dvar = 0.5 * dstd / std
    dxc += (2.0 / n) * xc * dvar
    dmu = np.sum(dxc, axis=0)
    return dxc - dmu / n


def im2col(x, fh, fw, stride, pad):
    """Every fh×fw window of x [N, C, H, W] as a column, as Caffe's im2col
    (the book's has them as rows): [N, C·fh·fw, OH·OW], channel-major down a
    column as W flattens, so that a convolution is one matrix product per image
    and its result is already [N, FN, OH·OW], with no transposes."""
    n, c, h, w = x.shape
    oh = (h + 2 * pad - fh) // stride + 1
    ow = (w + 2 * pad - fw) // stride + 1
    img = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)]) if pad else x
    col = np.empty((n, c, fh, fw, oh, ow), dtype=x.dtype)
    for i in range(fh):  # one strided slice per filter offset, not per pixel
        for j in range(fw):
            col[:, :, i, j] = img[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride]
    return col.reshape(n, c * fh * fw, oh * ow)


def col2im(col, x, fh, fw, stride, pad):
    """im2col undone for gradients: each column's numbers added back to the
    pixels of x they came from (windows overlap, so a pixel sums them); padding dropped."""
    n, c, h, w = x.shape
    oh = (h + 2 * pad - fh) // stride + 1
    ow = (w + 2 * pad - fw) // stride + 1
    col = col.reshape(n, c, fh, fw, oh, ow)
    img = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=col.dtype)
    for i in range(fh):
        for j in range(fw):
            img[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride] += col[:, :, i, j]
    # A copy when padded: the gradient must not keep the padded image alive.
    return img[:, :, pad : h + pad, pad : w + pad].copy() if pad else img


def window_max(x, size, stride, pad):
    """Max pooling of x [N, C, H, W]: the max of each size×size window (over
    zero padding) and which of its offsets, row by row, held it; both [N, C, OH, OW].

    One strided view of x per offset, compared with the running max: no copy
    of the windows. The first max wins, as argmax's: a later offset only where
    it is greater; np.maximum keeps a NaN, as np.max does.
    """
    n, c, h, w = x.shape
    oh = (h + 2 * pad - size) // stride + 1
    ow = (w + 2 * pad - size) // stride + 1
    img = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)]) if pad else x
    out = img[:, :, : stride * oh : stride, : stride * ow : stride].copy()
    # Offsets in a byte while they fit (a window of up to 16×16): an eighth of the traffic of int64.
    offset = np.uint8 if size * size <= 256 else np.int64
    arg_max = np.zeros(out.shape, dtype=offset)
    greater = np.empty(out.shape, dtype=bool)
    for k in range(1, size * size):
        i, j = divmod(k, size)
        window = img[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride]
        np.greater(window, out, out=greater)
        # Offsets come in increasing order, so the last one greater is the
        # largest k·greater: an update without a branch per pixel.
        np.maximum(arg_max, greater.view(np.uint8) * offset(k), out=arg_max)
        np.maximum(out, window, out=out)
    return out, arg_max.astype(np.int64)


def window_scatter(dout, arg_max, x, size, stride, pad):
    """Max pooling's gradient: each window's dout added to the pixel of x where
    its max was (windows that overlap add up); padding dropped.

    dout · (arg_max == k) rather than a masked copy, which is several times
    slower: a NaN or infinite dout reaches its whole window, as relu's dout · mask does.
    """
    n, c, h, w = x.shape
    _, _, oh, ow = dout.shape
    shape = (n, c, h + 2 * pad, w + 2 * pad)
    if stride == size and shape[2] == size * oh and shape[3] == size * ow:
        # The windows tile the image: each pixel is written once, nothing to add.
        img = np.empty(shape, dtype=dout.dtype)
        for k in range(size * size):
            i, j = divmod(k, size)
            np.multiply(dout, arg_max == k, out=img[:, :, i::size, j::size])
    else:
        img = np.zeros(shape, dtype=dout.dtype)
        for k in range(size * size):
            i, j = divmod(k, size)
            img[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride] += dout * (arg_max == k)
    return img[:, :, pad : h + pad, pad : w + pad].copy() if pad else img


def window_mean(x, size, stride, pad):
    """Average pooling of x [N, C, H, W]: the mean of each size×size window,
    the zero padding counted (as PyTorch's default), [N, C, OH, OW]."""
    n, c, h, w = x.shape
    oh = (h + 2 * pad - size) // stride + 1
    ow = (w + 2 * pad - size) // stride + 1
    img = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)]) if pad else x
    out = img[:, :, : stride * oh : stride, : stride * ow : stride].copy()
    for k in range(1, size * size):  # one strided view per offset, as window_max
        i, j = divmod(k, size)
        out += img[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride]
    out /= size * size
    return out


def window_share(dout, height, width, size, stride, pad):
    """Average pooling's gradient: each window's dout / size² added to each of
    its pixels of an image height × width (windows that overlap add up); padding dropped."""
    n, c, oh, ow = dout.shape
    share = dout / (size * size)
    img = np.zeros((n, c, height + 2 * pad, width + 2 * pad), dtype=dout.dtype)
    for k in range(size * size):
        i, j = divmod(k, size)
        img[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride] += share
    return img[:, :, pad : height + pad, pad : width + pad].copy() if pad else img


def _share_source(args: list[Any], types: Types) -> str:
    """window_share(dout, x, size, stride, pad) as code: x's height and width are numbers, its values unread."""
    x = args[1]
    assert x is not None
    height, width = x.shape[2:]
    return f"window_share({{0}}, {height}, {width}, {{2}}, {{3}}, {{4}})"


def _maps_source(args: list[TensorType | None], types: Types) -> str:
    """Each image's rows of pixels [N, FN, OH·OW] as feature maps [N, FN, OH, OW] (a view)."""
    _, fn, oh, ow = types["out"].shape
    return f"{{0}}.reshape(len({{0}}), {fn}, {oh}, {ow})"


def _pixels_source(args: list[TensorType | None], types: Types) -> str:
    """Feature maps [N, FN, OH, OW] as each image's rows of pixels [N, FN, OH·OW] (a view)."""
    maps = args[0]
    assert maps is not None
    _, fn, oh, ow = maps.shape
    assert isinstance(oh, int) and isinstance(ow, int)
    return f"{{0}}.reshape(len({{0}}), {fn}, {oh * ow})"


KERNELS: dict[str, Kernel] = {
    # g, shaped like out, summed back to the shape of operand a (undoes broadcasting).
    "sum_to": Kernel(functools.partial(_sum_to, people=True), functools.partial(_sum_to, people=False), static=(1,)),
    # x as a matrix (a no-op for x of one or two dims).
    "flat": Kernel("{0}", _flat_source),
    # g, shaped like flat(x), reshaped back to x's shape.
    "unflat": Kernel("{0}", _unflat_source, static=(1,)),
    # xᵀ · dout, summed over the batch.
    "tdot": Kernel(functools.partial(_tdot, people=True), functools.partial(_tdot, people=False)),
    # The number of rows of a batch (1 for a single sample).
    "batch": Kernel("N", _batch_source),
    # A sum's or mean's gradient spread back over x's shape (a fresh array).
    "spread": Kernel(functools.partial(_spread, people=True), functools.partial(_spread, people=False)),
    # The number of values a mean averages over: a size, or N read at run time.
    "count": Kernel(functools.partial(_count, people=True), functools.partial(_count, people=False)),
    "minus_labels": Kernel("{0} - {1}", function=minus_labels),
    "sigmoid": Kernel(function=sigmoid),
    "softmax_cross_entropy": Kernel(function=softmax_cross_entropy),
    "batchnorm_dx": Kernel(function=batchnorm_dx),
    # Windows of an image as columns, and their gradients back onto the image.
    "im2col": Kernel("im2col({0})", function=im2col),
    "col2im": Kernel("col2im({0}, {1})", function=col2im),
    "window_max": Kernel("max(windows({0}))", function=window_max),
    "window_scatter": Kernel("scatter({0}, {1}, {2})", function=window_scatter),
    "window_mean": Kernel("mean(windows({0}))", function=window_mean),
    # dout / size² to every pixel of its window; x only for its shape (not kept).
    "window_share": Kernel("share({0}, {1})", _share_source, function=window_share, static=(1,)),
    # Rows of pixels per image [N, FN, OH·OW] as feature maps [N, FN, OH, OW], and back.
    "maps": Kernel("{0}", _maps_source),
    "pixels": Kernel("pixels({0})", _pixels_source),
    # Each image's windows as rows (im2col's columns transposed), and a sum over the images.
    "window_rows": Kernel("window_rows({0})", "np.swapaxes({0}, 1, 2)"),
    "over_images": Kernel("sum({0}, axis=0)", "{0}.sum(axis=0)"),
    # Filters [FN, C, FH, FW] as rows of FN.
    "filter_rows": Kernel("flat({0})", "{0}.reshape(len({0}), -1)"),
    "per_channel": Kernel("sum({0}, axis=(0, 2, 3))", "{0}.sum(axis=(0, 2, 3))"),
}


@functools.cache
def _parse(formula: str) -> ast.Module:
    return ast.parse(formula)


def _expression(text: str) -> ast.expr:
    """A fresh tree of an expression (transformers change the trees they visit)."""
    tree = copy.deepcopy(_parse(text).body[0])
    assert isinstance(tree, ast.Expr)
    return tree.value


def _placeholder(i: int) -> str:
    return f"__arg{i}__"


class _Render(ast.NodeTransformer):
    """A formula's tree, for people or as code, with `{name}` placeholders."""

    def __init__(self, op: Op, types: Types, people: bool):
        self.op = op
        self.types = types
        self.people = people
        self.local = set(op.operands) | set(op.own) | set(op.state) | {"out", "dout"}

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id not in self.local:
            return node
        own = self.op.own.get(node.id)
        if self.people and own is not None and own.display is not None:
            return self.visit(_expression(own.display))
        return ast.Name("{" + node.id + "}")

    def visit_Call(self, node: ast.Call) -> ast.AST:
        kernel = KERNELS.get(node.func.id) if isinstance(node.func, ast.Name) else None
        arg_types = [self.types.get(a.id) if isinstance(a, ast.Name) else _constant(a) for a in node.args]
        template = kernel.template(self.people, arg_types, self.types) if kernel is not None else None
        if template is None:
            return self.generic_visit(node)
        args = [self.visit(a) for a in node.args]
        text = template.format(*map(_placeholder, range(len(args))))
        return _Substitute(dict(zip(map(_placeholder, range(len(args))), args))).visit(_expression(text))


def _constant(node: ast.expr) -> Any:
    """A literal argument's value (a reduction's axis, `-1` included), for kernel templates; else None."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


class _Substitute(ast.NodeTransformer):
    def __init__(self, args: dict[str, ast.AST]):
        self.args = args

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return copy.deepcopy(self.args[node.id]) if node.id in self.args else node


_TEMPLATES: dict[tuple, str] = {}


def _template(op: Op, formula: str, types: Types, people: bool) -> str:
    """The formula rendered with `{name}` placeholders (cached: plans render thousands).

    `types` holds the operands' and out's; dout's and the own tensors' follow from them."""
    # dtypes and shapes as plain tuples: hashing them is cheaper than hashing TensorTypes.
    out = types["out"]
    key = (op.name, formula, people, out.dtype, out.shape, *[(types[n].dtype, types[n].shape) for n in op.operands])
    text = _TEMPLATES.get(key)
    if text is None:
        every = dict(types, dout=types["out"])
        every.update((item, op.own_tensor_type(item, types)) for item in op.own)
        every.update((item, types[like]) for item, like in op.state.items())
        tree = _Render(op, every, people).visit(copy.deepcopy(_parse(formula)))
        text = _TEMPLATES[key] = "\n".join(ast.unparse(stmt) for stmt in tree.body)
    return text


def _factor_dout(tree: ast.expr) -> ast.expr | None:
    """`tree` divided by `dout`, where `tree` is `dout` times or over other
    factors (`dout * b`, `-dout * out / b`): `b`, `-out / b`; else None."""
    if isinstance(tree, ast.Name) and tree.id == "dout":
        return ast.Constant(1)
    if isinstance(tree, ast.UnaryOp) and isinstance(tree.op, ast.USub):
        inner = _factor_dout(tree.operand)
        if inner is None:
            return None
        if isinstance(inner, ast.Constant) and isinstance(inner.value, (int, float)):
            return ast.Constant(-inner.value)
        return ast.UnaryOp(ast.USub(), inner)
    if not isinstance(tree, ast.BinOp) or not isinstance(tree.op, (ast.Mult, ast.Div)):
        return None
    left, right = _mentions_dout(tree.left), _mentions_dout(tree.right)
    if left and not right:
        factor = _factor_dout(tree.left)
        if factor is None:
            return None
        if isinstance(tree.op, ast.Mult) and isinstance(factor, ast.Constant) and factor.value in (1, -1):
            return tree.right if factor.value == 1 else ast.UnaryOp(ast.USub(), tree.right)  # 1 * b is b
        return ast.BinOp(factor, tree.op, tree.right)
    if right and not left and isinstance(tree.op, ast.Mult):
        factor = _factor_dout(tree.right)
        if factor is None:
            return None
        return (
            tree.left
            if isinstance(factor, ast.Constant) and factor.value == 1
            else ast.BinOp(tree.left, ast.Mult(), factor)
        )
    return None  # dout in a divisor, or in both factors


def _mentions_dout(tree: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "dout" for n in ast.walk(tree))


def _names_read(formula: str, local: set[str]) -> tuple[str, ...]:
    """The op's names a formula reads, in order of appearance; a kernel's static arguments are not read."""
    found: dict[str, None] = {}

    def walk(node: ast.AST) -> None:
        if isinstance(node, ast.Name) and node.id in local:
            found[node.id] = None
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in KERNELS:
            static = KERNELS[node.func.id].static
            for i, arg in enumerate(node.args):
                if i not in static:
                    walk(arg)
            for keyword in node.keywords:
                walk(keyword)
        else:
            for child in ast.iter_child_nodes(node):
                walk(child)

    walk(_parse(formula))
    return tuple(found)


def _kernels_called(formula: str) -> list[Callable]:
    return [
        KERNELS[node.func.id].function  # type: ignore[misc]
        for node in ast.walk(_parse(formula))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in KERNELS
        and KERNELS[node.func.id].function is not None
    ]


# --- compiled steps -------------------------------------------------------------


@dataclass(frozen=True)
class StepCode:
    """One step of an op at given types, as the interpreter runs it.

    forward(*operands) -> (out, saved): saved holds `Op.saves` in order
    (None when not taped). backward(saved, dout) -> one gradient per operand,
    None where not needed. The attributes and which gradients are needed are
    part of the source. Neither writes into what it is given: a gradient can
    be shared by several consumers in a DAG.
    """

    source: str
    forward: Callable[..., tuple[Any, Any]]
    backward: Callable[..., tuple[Any, ...]]


_COMPILED: dict[str, StepCode] = {}


_READS: dict[tuple[str, str], tuple[str, ...]] = {}


def clear_caches() -> None:
    """Forget every rendered formula, compiled step and what each rule reads:
    the next use works them out afresh (for tests that want each case to run
    the renderer, as a mutation tester needs to see which tests exercise it)."""
    _TEMPLATES.clear()
    _COMPILED.clear()
    _READS.clear()


def _compile(source: str, namespace: dict[str, Any]) -> StepCode:
    """Compile a step's source once; steps alike in all but their names share it."""
    code = _COMPILED.get(source)
    if code is None:
        scope = dict(namespace)
        exec(compile(source, "<graphc op>", "exec"), scope)
        code = _COMPILED[source] = StepCode(source, scope["forward"], scope["backward"])
    return code


# --- ops ---------------------------------------------------------------------------


class Op:
    name: ClassVar[str]
    operands: ClassVar[tuple[str, ...]]
    attributes: ClassVar[dict[str, Attribute]] = {}
    # Forward, as statements in the notation, that set `out`.
    computes: ClassVar[tuple[str, ...]]
    # The local gradient of each differentiable operand, as a formula over
    # `dout`, the operands, `out` and the op's own tensors.
    rules: ClassVar[dict[str, str]]
    own: ClassVar[dict[str, Own]] = {}
    # Elementwise ops broadcast their operands (their rules sum back with sum_to).
    broadcasts: ClassVar[bool] = False
    # Operands that are labels, each with the operand it labels: read as one-hot
    # rows shaped like it or as class indices (its shape without the last dim),
    # never differentiated (graphc.check, shapes, program).
    labels: ClassVar[dict[str, str]] = {}
    # Operands read as weights: `train --weight-decay` decays the params read
    # here (affine's W; never a bias).
    weights: ClassVar[tuple[str, ...]] = ()
    # A loss's scores: the operand whose argmax is the prediction (eval, codegen's predict).
    scores: ClassVar[str | None] = None
    # Ops that behave differently while predicting give their forward, own
    # tensors and rules in mode "eval" here; None: as in mode "train".
    eval_computes: ClassVar[tuple[str, ...] | None] = None
    eval_own: ClassVar[dict[str, str | None]] = {}  # own tensor -> its formula in eval mode
    eval_rules: ClassVar[dict[str, str] | None] = None
    # Forward draws random numbers (dropout's mask) from `rng`, the run's
    # numpy Generator, which the interpreter and generated modules pass in.
    random: ClassVar[bool] = False
    # State: tensors of the op's own that outlive a run (batchnorm's running
    # mean), each shaped like the operand named; neither params nor gradients.
    # Forward reads them; a training forward updates them in place by `updates`.
    state: ClassVar[dict[str, str]] = {}
    updates: ClassVar[dict[str, str]] = {}
    # How a diagram draws the op, as the book does (`×` for mul); None: by its name.
    symbol: ClassVar[str | None] = None
    # Operands the op is defined on only where positive (log's x) or away from
    # 0 (div's b): the tests draw their values positive.
    positive: ClassVar[tuple[str, ...]] = ()
    # Operand shapes for the registry-wide tests, broadcasting included.
    examples: ClassVar[tuple[tuple[tuple[int, ...], ...], ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:  # pragma: no mutate block (runs at import)
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            clash = ({"out", "dout", "attrs", "saved", "needs", "np", "rng"} | set(KERNELS)) & set(cls.operands)
            assert not clash, f"op {cls.name}: operand names {clash} are taken by the notation"

    def infer(self, args: Sequence[Operand], attrs: dict[str, Any]) -> TensorType:
        raise NotImplementedError

    # --- the formulas for given attributes (ops with attributes may override) ---

    def forward_formulas(self, attrs: Mapping[str, Any]) -> tuple[str, ...]:
        return _bind(self.computes, attrs)

    def rule_formula(self, operand: str, attrs: Mapping[str, Any]) -> str:
        return _bind((self.rules[operand],), attrs)[0]

    # --- ... and mode: the eval_* formulas where an op has them ---

    def forward_in(self, mode: str, attrs: Mapping[str, Any]) -> tuple[str, ...]:
        if mode == "eval" and self.eval_computes is not None:
            return _bind(self.eval_computes, attrs)
        return self.forward_formulas(attrs)

    def rule_in(self, mode: str, operand: str, attrs: Mapping[str, Any]) -> str:
        if mode == "eval" and self.eval_rules is not None:
            return _bind((self.eval_rules[operand],), attrs)[0]
        return self.rule_formula(operand, attrs)

    def own_formula(self, item: str, attrs: Mapping[str, Any], mode: str = "train") -> str | None:
        """How forward computes an own tensor; None when a forward statement makes it (or nothing, in this mode)."""
        formula = self.eval_own.get(item, self.own[item].computes) if mode == "eval" else self.own[item].computes
        return _bind((formula,), attrs)[0] if formula is not None else None

    def update_formulas(self, attrs: Mapping[str, Any], mode: str = "train") -> tuple[str, ...]:
        """A training forward's in-place updates of the op's state; none in eval mode."""
        if mode != "train":
            return ()
        return _bind(tuple(f"{item}[...] = {formula}" for item, formula in self.updates.items()), attrs)

    # --- what other stages ask -------------------------------------------------

    def differentiable(self, operand: int) -> bool:
        return self.operands[operand] in self.rules

    def reads(self, operand: int, attrs: Mapping[str, Any], mode: str = "train") -> tuple[str, ...]:
        """What the operand's rule reads from the forward pass: operands, "out", own tensors."""
        formula = self.rule_in(mode, self.operands[operand], attrs)
        key = (self.name, formula)
        if key not in _READS:  # plans ask for every node
            _READS[key] = _names_read(formula, set(self.operands) | set(self.own) | {"out"})
        return _READS[key]

    @functools.cached_property
    def saves(self) -> tuple[str, ...]:
        """Everything backward reads from a training forward pass, operands first."""
        return self.saves_in("train")

    @functools.cache  # noqa: B019 (ops are registered once and live as long as the program)
    def saves_in(self, mode: str) -> tuple[str, ...]:
        """Everything backward reads from the forward pass in `mode`, operands first."""
        defaults = {k: a.default for k, a in self.attributes.items()}
        items = dict.fromkeys(
            item for i in range(len(self.operands)) if self.differentiable(i) for item in self.reads(i, defaults, mode)
        )
        return tuple(
            sorted(items, key=lambda item: self.operands.index(item) if item in self.operands else len(self.operands))
        )

    def arguments(self) -> tuple[str, ...]:
        """The parameters of its compiled forward: operands, then state, then `rng` if it draws."""
        return (*self.operands, *self.state, *(("rng",) if self.random else ()))

    @functools.cached_property
    def passes_gradient_through(self) -> tuple[str, ...]:
        """Operands whose gradient may be `dout` itself (add's, when nothing was
        broadcast): such a gradient must never be added into in place."""
        passing = []
        for operand, formula in self.rules.items():
            tree = _expression(formula)
            while (
                isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.func.id in ("sum_to", "unflat")
            ):
                tree = tree.args[0]
            if isinstance(tree, ast.Name) and tree.id == "dout":
                passing.append(operand)
        return tuple(passing)

    def own_tensor_type(self, item: str, types: Types) -> TensorType:
        """The type of a tensor of the op's own ("mask"), from the types of the operands and "out"."""
        own = self.own[item]
        like = types[own.like]
        return TensorType(own.dtype or like.dtype, like.shape)

    def label_positions(self) -> dict[int, int]:
        """Label operand -> the operand it labels, by position."""
        return {self.operands.index(t): self.operands.index(y) for t, y in self.labels.items()}

    def helpers(self, attrs: Mapping[str, Any], mode: str = "train") -> list[Callable]:
        """The numpy kernels its formulas call, for the generated module to copy."""
        formulas = list(self.forward_in(mode, attrs)) + list(self.update_formulas(attrs, mode))
        formulas += [f for item in self.own if (f := self.own_formula(item, attrs, mode))]
        formulas += [self.rule_in(mode, o, attrs) for o in self.rules]
        return list(dict.fromkeys(f for formula in formulas for f in _kernels_called(formula)))

    # --- rendering ------------------------------------------------------------------

    def rule(
        self, operand: int, names: Mapping[str, str], attrs: Mapping[str, Any], types: Types, mode: str = "train"
    ) -> str:
        """The local rule for the operand's gradient as people read it, names substituted."""
        return _template(self, self.rule_in(mode, self.operands[operand], attrs), types, True).format_map(names)

    def grad_source(
        self, operand: int, names: Mapping[str, str], attrs: Mapping[str, Any], types: Types, mode: str = "train"
    ) -> str:
        """The operand's gradient as numpy source, already summed to its shape."""
        return _template(self, self.rule_in(mode, self.operands[operand], attrs), types, False).format_map(names)

    def render(self, formula: str, names: Mapping[str, str], types: Types, people: bool = True) -> str:
        """Any formula in the op's notation (a forward statement, a local
        derivative), rendered as its rules are, names substituted."""
        return _template(self, formula, types, people).format_map(names)

    def local_derivative(self, operand: int, attrs: Mapping[str, Any], types: Types, mode: str = "train") -> str | None:
        """The operand's rule read as the chain rule's product, `dout` times a
        local derivative, element by element: that derivative's formula (mul's
        `b`, add's `1`, sigmoid's `out * (1 - out)`), or None where the rule is
        no such product at these types: a matrix product, a sum that undoes
        broadcasting, a kernel (softmax's, batchnorm's)."""
        tree = _expression(self.rule_in(mode, self.operands[operand], attrs))
        if isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.func.id == "sum_to":
            added, stretched, _ = _sum_axes(types["out"].shape, types[self.operands[operand]].shape)
            if added or stretched:
                return None
            tree = tree.args[0]
        factor = _factor_dout(tree)
        if factor is None or any(isinstance(n, (ast.Call, ast.Subscript, ast.Attribute)) for n in ast.walk(factor)):
            return None
        return ast.unparse(factor)

    def _own_needed(self, formulas: Sequence[str], attrs: Mapping[str, Any], mode: str) -> set[str]:
        """The own tensors these formulas read, and those the formulas of those read (dropout's mask)."""
        needed: set[str] = set()
        pending = list(formulas)
        while pending:
            for item in _names_read(pending.pop(), set(self.own)):
                formula = self.own_formula(item, attrs, mode)
                if item not in needed and formula is not None:
                    needed.add(item)
                    pending.append(formula)
        return needed

    def forward_source(
        self, names: Mapping[str, str], attrs: Mapping[str, Any], types: Types, taped: bool, mode: str = "train"
    ) -> list[str]:
        """Lines that set `out`: the own tensors forward reads (and, when taped,
        those backward reads), a training forward's state updates, then `out`.

        A result of weak scalars only (`mul(2, 3)`, dtype None) is made a
        Python float, weak like them, so that it adapts to what reads it.
        """
        forward = self.forward_in(mode, attrs)
        updates = self.update_formulas(attrs, mode)
        needed = self._own_needed((*forward, *updates), attrs, mode)
        lines = []
        for item in self.own:
            formula = self.own_formula(item, attrs, mode)
            if formula is not None and (taped or item in needed):
                lines.append(f"{item} = {formula}")
        lines += updates
        for formula in forward:
            tree = _parse(formula).body[0]
            if isinstance(tree, ast.Assign) and isinstance(tree.targets[0], ast.Tuple) and not taped:
                # `out, probs = ...`: only out is wanted.
                formula = f"out = ({ast.unparse(tree.value)})[0]"
            elif types["out"].dtype is None and isinstance(tree, ast.Assign):
                formula = f"out = float({ast.unparse(tree.value)})"
            lines.append(formula)
        return [_template(self, line, types, False).format_map(names) for line in lines]

    # --- the interpreter's functions ----------------------------------------------

    def compile(
        self,
        attrs: Mapping[str, Any],
        types: Types,
        *,
        taped: bool = True,
        needs: Sequence[bool] | None = None,
        mode: str = "train",
    ) -> StepCode:
        """The forward and backward functions of one step at these types.

        Their source is the generated module's, with the op's own names: the
        interpreter runs what the code generator writes. forward takes the
        op's `arguments()`: operands, state, rng.
        """
        if needs is None:
            needs = [self.differentiable(i) for i in range(len(self.operands))]
        names = {n: n for n in (*self.operands, *self.own, *self.state, "out", "dout")}
        saves = self.saves_in(mode)
        saved = ", ".join(saves)
        lines = [f"def forward({', '.join(self.arguments())}):"]
        lines += ["    " + line for line in self.forward_source(names, attrs, types, taped, mode)]
        lines.append(
            f"    return out, ({saved},)" if taped and saves else f"    return out, {'()' if taped else 'None'}"
        )
        lines += ["", "", "def backward(saved, dout):"]
        if saves:
            lines.append(f"    {saved}, = saved")
        grads = [self.grad_source(i, names, attrs, types, mode) if need else "None" for i, need in enumerate(needs)]
        lines.append(f"    return ({', '.join(grads)},)")
        namespace: dict[str, Any] = {"np": np}
        namespace.update((f.__name__, f) for f in self.helpers(attrs, mode))
        return _compile("\n".join(lines) + "\n", namespace)

    def types_of(self, attrs: Mapping[str, Any], *values: Any) -> dict[str, TensorType]:
        """The types of concrete operand values and of the result: what `compile` needs to run them."""
        types = {name: value_type(v) for name, v in zip(self.operands, values)}
        types["out"] = self.infer([Operand(n, types[n]) for n in self.operands], dict(attrs))
        return types

    def __repr__(self) -> str:
        return f"<op {self.name}>"


def value_type(value: Any) -> TensorType:
    """A value's type as graphc writes it: a Python float is weak (dtype None)."""
    if type(value) is float:  # not numpy's float64, which is a float but strong
        return TensorType(None, ())
    array = np.asarray(value)
    dtype = {"float32": "f32", "float64": "f64", "int64": "i64", "bool": "bool"}[array.dtype.name]
    return TensorType(dtype, array.shape)


REGISTRY: dict[str, Op] = {}


def register(cls: type[Op]) -> type[Op]:  # pragma: no mutate block (runs at import)
    REGISTRY[cls.name] = cls()
    return cls


# --- shape helpers -----------------------------------------------------------


def _describe(arg: Operand) -> str:
    return f"`{arg.name}` {arg.type.shape_text()}"


def _floats(op: str, args: Sequence[Operand], what: str = "float operands") -> None:
    """Ops compute in floats: only labels may be i64 (class indices)."""
    for i, a in enumerate(args):
        if a.type.dtype == "i64":
            raise ShapeError(f"`{op}` needs {what}, `{a.name}` is i64", i, code="E203")


def _result_dtype(op: str, args: Sequence[Operand], what: str = "float operands") -> str | None:
    """The operands' common float dtype. A weak value (dtype None) adapts to
    the others, as numpy's Python floats do; of weak values only, the result
    is weak too, and shape inference gives it the dtype its readers need."""
    _floats(op, args, what)
    strong = [a for a in args if a.type.dtype is not None]
    for a in strong[1:]:
        if a.type.dtype != strong[0].type.dtype:
            raise ShapeError(
                f"dtype mismatch in `{op}`: `{strong[0].name}` is {strong[0].type.dtype}, `{a.name}` is {a.type.dtype}",
                args.index(a),
                code="E203",
            )
    return strong[0].type.dtype if strong else None


def broadcast(op: str, a: Operand, b: Operand) -> tuple[Dim, ...]:
    """numpy's broadcasting rule over symbolic dims: equal, or one of them 1."""
    try:
        return broadcast_shapes(a.type.shape, b.type.shape)
    except BroadcastClash as clash:
        raise ShapeError(
            f"shape mismatch in `{op}`: cannot broadcast {_describe(a)} with {_describe(b)} "
            f"(dim {clash.dims[0]} vs {clash.dims[1]})",
            1,
            code="E201",
        ) from None


class BroadcastClash(Exception):
    def __init__(self, dims: tuple[Dim, Dim]):
        self.dims = dims


def broadcast_shapes(sa: Sequence[Dim], sb: Sequence[Dim]) -> tuple[Dim, ...]:
    """The shape two shapes broadcast to; BroadcastClash names the first two dims that do not."""
    out: list[Dim] = []
    for i in range(1, max(len(sa), len(sb)) + 1):
        da = sa[-i] if i <= len(sa) else 1
        db = sb[-i] if i <= len(sb) else 1
        if da == db or db == 1:
            out.append(da)
        elif da == 1:
            out.append(db)
        else:
            raise BroadcastClash((da, db))
    return tuple(reversed(out))


def _fits(bias: Sequence[Dim], shape: tuple[Dim, ...]) -> bool:
    """Whether a bias broadcasts to `shape` and leaves it as it is."""
    try:
        return broadcast_shapes(shape, bias) == shape
    except BroadcastClash:
        return False


# --- the ops -----------------------------------------------------------------


class _Elementwise2(Op):
    operands = ("a", "b")
    broadcasts = True
    examples = (((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 3), (4, 1)), ((), (2, 3)))

    def infer(self, args, attrs):
        a, b = args
        dtype = _result_dtype(self.name, args)
        return TensorType(dtype, broadcast(self.name, a, b))


@register
class Mul(_Elementwise2):
    name = "mul"
    symbol = "×"
    computes = ("out = a * b",)
    rules = {"a": "sum_to(dout * b, a)", "b": "sum_to(dout * a, b)"}


@register
class Add(_Elementwise2):
    name = "add"
    symbol = "+"
    computes = ("out = a + b",)
    # The gradient passes through: where nothing is summed it is `dout`
    # itself, which the interpreter knows not to write into.
    rules = {"a": "sum_to(dout, a)", "b": "sum_to(dout, b)"}


class _Elementwise1(Op):
    operands = ("x",)
    examples = (((3, 4),), ((5,),), ((),), ((2, 3, 2),))

    def infer(self, args, attrs):
        (x,) = args
        return TensorType(_result_dtype(self.name, args, "a float operand"), x.type.shape)


@register
class Relu(_Elementwise1):
    name = "relu"
    # np.maximum, not x * mask: -inf gives 0 rather than NaN, and -0.0 gives 0.
    computes = ("out = np.maximum(x, 0)",)
    # The mask `x > 0`, kept from forward: a byte a value instead of x itself.
    own = {"mask": Own("out", "bool", computes="x > 0")}
    rules = {"x": "dout * mask"}


@register
class Sigmoid(_Elementwise1):
    name = "sigmoid"
    computes = ("out = sigmoid(x)",)
    rules = {"x": "dout * out * (1 - out)"}


@register
class Affine(Op):
    name = "affine"
    operands = ("x", "W", "b")
    # As the book's Affine, an x of more than 2 dims is flattened after the
    # first; the bias is added into the fresh product, not into a third array.
    computes = ("out = flat(x) @ W", "out += b")
    rules = {"x": "unflat(dout @ W.T, x)", "W": "tdot(x, dout)", "b": "sum_to(dout, b)"}
    weights = ("W",)
    examples = (((4, 3), (3, 5), (5,)), ((2, 3, 2), (6, 4), (4,)), ((3,), (3, 2), (2,)), ((4, 3), (3, 2), (4, 2)))

    def infer(self, args, attrs):
        x, w, b = args
        dtype = _result_dtype(self.name, args)
        if w.type.ndim != 2:
            raise ShapeError(f"affine: `{w.name}` must be a matrix, got shape {w.type.shape_text()}", 1, code="E202")
        if x.type.ndim == 0:
            raise ShapeError(f"affine: `{x.name}` must have at least one dim, got a scalar", 0, code="E202")
        fan_in, fan_out = w.type.shape
        if x.type.ndim == 1:
            batch: tuple[Dim, ...] = ()
            features: Dim = x.type.shape[0]
        else:
            batch = x.type.shape[:1]
            trailing = x.type.shape[1:]
            features = _product(trailing)
        if features != fan_in:
            raise ShapeError(
                f"shape mismatch in `affine`: `{x.name}` has {features} features, "
                f"`{w.name}` expects {fan_in} "
                f"(`{x.name}` is {x.type.shape_text()}, `{w.name}` is {w.type.shape_text()})",
                1,
                code="E201",
            )
        out = batch + (fan_out,)
        if not _fits(b.type.shape, out):
            raise ShapeError(
                f"shape mismatch in `affine`: bias `{b.name}` {b.type.shape_text()} does not fit x·W {shape_text(out)}",
                2,
                code="E201",
            )
        return TensorType(dtype, out)


@register
class SoftmaxLoss(Op):
    name = "softmax_loss"
    operands = ("y", "t")
    attributes = {"reduction": Attribute("mean", ("mean", "sum"), "average over the batch, or sum")}
    labels = {"t": "y"}
    scores = "y"
    computes = ("out, probs = softmax_cross_entropy(y, t)",)
    own = {"probs": Own("y", display="softmax(y)")}
    # d(mean loss)/dy = (softmax(y) - t) / N: each row's loss counts 1/N.
    rules = {"y": "dout * minus_labels(probs, t) / batch(probs)"}
    examples = (((4, 3), (4, 3)), ((5,), (5,)), ((4, 3), (4,)))

    def forward_formulas(self, attrs):
        if attrs["reduction"] == "sum":
            return ("out, probs = softmax_cross_entropy(y, t, mean=False)",)
        return self.computes

    def rule_formula(self, operand, attrs):
        if attrs["reduction"] == "sum":
            return "dout * minus_labels(probs, t)"
        return self.rules[operand]

    def infer(self, args, attrs):
        y, t = args
        _floats(self.name, [y], "float scores")
        if y.type.ndim not in (1, 2):
            raise ShapeError(
                f"softmax_loss: scores `{y.name}` must be [N, classes] or [classes], got {y.type.shape_text()}",
                0,
                code="E202",
            )
        if t.type.shape == y.type.shape:
            if y.type.dtype and t.type.dtype and t.type.dtype != "i64" and t.type.dtype != y.type.dtype:
                raise ShapeError(
                    f"dtype mismatch in `softmax_loss`: `{y.name}` is {y.type.dtype}, `{t.name}` is {t.type.dtype}",
                    1,
                    code="E203",
                )
        elif t.type.shape == y.type.shape[:-1]:
            pass  # integer class indices
        else:
            raise ShapeError(
                f"shape mismatch in `softmax_loss`: labels `{t.name}` {t.type.shape_text()} fit neither "
                f"one-hot {y.type.shape_text()} nor class indices {shape_text(y.type.shape[:-1])} "
                f"for scores `{y.name}`",
                1,
                code="E201",
            )
        return TensorType(y.type.dtype, ())  # of weak scores (consts without a dtype), weak too


@register
class Sub(_Elementwise2):
    name = "sub"
    symbol = "−"
    computes = ("out = a - b",)
    rules = {"a": "sum_to(dout, a)", "b": "sum_to(-dout, b)"}


@register
class Div(_Elementwise2):
    name = "div"
    symbol = "÷"
    # np.divide, not `/`: of two weak scalars (Python floats) `/` raises on a
    # zero divisor, where numpy gives inf or NaN as it does for arrays.
    computes = ("out = np.divide(a, b)",)
    # d(a/b)/db = -a/b² = -out/b: the quotient forward kept, as the book's
    # division node does. A zero in b is the user's, as in numpy.
    rules = {"a": "sum_to(dout / b, a)", "b": "sum_to(-dout * out / b, b)"}
    positive = ("b",)


@register
class Tanh(_Elementwise1):
    name = "tanh"
    # np.tanh is ±1 for large |x|, never inf/inf, so the rule stays finite.
    computes = ("out = np.tanh(x)",)
    rules = {"x": "dout * (1 - out * out)"}


@register
class Exp(_Elementwise1):
    name = "exp"
    computes = ("out = np.exp(x)",)
    rules = {"x": "dout * out"}


@register
class Log(_Elementwise1):
    name = "log"
    computes = ("out = np.log(x)",)
    rules = {"x": "dout / x"}
    positive = ("x",)


@register
class Square(_Elementwise1):
    name = "square"
    computes = ("out = x * x",)
    rules = {"x": "dout * 2 * x"}


def _whole_number(value: Any) -> str | None:
    # type(), not isinstance: not True, not 1.0, not a list of axes
    return None if type(value) is int else "must be a whole number"


class _Reduction(Op):
    """sum and mean, over one axis or (axis absent) all of them."""

    operands = ("x",)
    attributes = {
        "axis": Attribute(
            None,
            doc="the axis to reduce, negative from the end; absent: every axis",
            problem=_whole_number,
        ),
        "keepdims": Attribute("false", ("false", "true"), "keep each reduced axis as a dim of 1"),
    }
    examples = (((3, 4),), ((5,),), ((2, 3, 2),), ((),))

    def infer(self, args, attrs):
        (x,) = args
        dtype = _result_dtype(self.name, args, "a float operand")
        axis = attrs["axis"]
        if axis is not None and not -x.type.ndim <= axis < x.type.ndim:
            n = x.type.ndim
            hint = (
                f"`{x.name}` is a scalar: leave `axis` out"
                if n == 0
                else f"`{x.name}` has {n} ax{'is' if n == 1 else 'es'}: 0 to {n - 1}, or -{n} to -1 from the end"
            )
            raise ShapeError(f"axis {axis} is out of range for {_describe(x)}", 0, "axis", hint, code="E204")
        reduced = range(x.type.ndim) if axis is None else (axis % x.type.ndim,)
        if attrs["keepdims"] == "true":
            shape = tuple(1 if i in reduced else d for i, d in enumerate(x.type.shape))
        else:
            shape = tuple(d for i, d in enumerate(x.type.shape) if i not in reduced)
        return TensorType(dtype, shape)

    def forward_formulas(self, attrs):
        axis = "" if attrs["axis"] is None else f", axis={attrs['axis']}"
        keep = ", keepdims=True" if attrs["keepdims"] == "true" else ""
        return (f"out = np.{self.name}(x{axis}{keep})",)

    def spread(self, attrs: Mapping[str, Any]) -> str:
        """dout back over x's shape: kept dims of 1 broadcast as they are; a dropped axis comes back first."""
        if attrs["axis"] is None or attrs["keepdims"] == "true":
            return "spread(dout, x)"
        return f"spread(dout, x, {attrs['axis']})"


@register
class Sum(_Reduction):
    name = "sum"
    computes = ("out = np.sum(x)",)
    # Each summed element moves the sum one for one: it gets dout, unchanged.
    rules = {"x": "spread(dout, x)"}

    def rule_formula(self, operand, attrs):
        return self.spread(attrs)


@register
class Mean(_Reduction):
    name = "mean"
    computes = ("out = np.mean(x)",)
    # As sum's, divided by how many were averaged (N, when that is the batch).
    rules = {"x": "spread(dout / count(x), x)"}

    def rule_formula(self, operand, attrs):
        count = "count(x)" if attrs["axis"] is None else f"count(x, {attrs['axis']})"
        return self.spread(attrs).replace("dout", f"dout / {count}")


@register
class Dropout(_Elementwise1):
    """The book's Dropout: while training, each element is kept where a uniform
    draw exceeds `ratio` and zeroed elsewhere; while predicting, every element
    is kept and scaled by the fraction training keeps."""

    name = "dropout"
    attributes = {
        "ratio": Attribute(
            0.5,
            doc="the fraction of elements training drops",
            problem=_number_in(0, 1),
            hint="the book drops half: `ratio=0.5`; `ratio=0` keeps everything",
        )
    }
    random = True
    own = {"mask": Own("x", "bool", computes="rng.random(np.shape(x)) > ratio")}
    computes = ("out = x * mask",)
    rules = {"x": "dout * mask"}
    eval_own = {"mask": None}
    eval_computes = ("out = x * (1.0 - ratio)",)
    eval_rules = {"x": "dout * (1.0 - ratio)"}


@register
class BatchNorm(Op):
    """The book's BatchNormalization over the batch axis: each feature is
    normalized by the batch's mean and variance while training (which also
    move the running mean and variance), by the running ones while predicting,
    then scaled by gamma and shifted by beta."""

    name = "batchnorm"
    operands = ("x", "gamma", "beta")
    attributes = {
        "momentum": Attribute(
            0.9,
            doc="how much of the running statistics each training step keeps",
            problem=_number_in(0, 1),
            hint="the book's is `momentum=0.9`",
        ),
        "eps": Attribute(
            1e-7,
            doc="added to the variance before its square root",
            problem=_number_in(0, 1, above=True),
            hint="a small positive number keeps a feature of zero variance finite, e.g. `eps=1e-7`",
        ),
    }
    state = {"running_mean": "gamma", "running_var": "gamma"}
    own = {
        "mu": Own("gamma", computes="x.mean(axis=0)"),
        "xc": Own("x", computes="x - mu"),
        "var": Own("gamma", computes="np.mean(xc ** 2, axis=0)"),
        # eps inside the root: a feature constant over the batch has variance 0.
        "std": Own("gamma", computes="np.sqrt(var + eps)"),
        "xn": Own("x", computes="xc / std"),
    }
    updates = {
        "running_mean": "momentum * running_mean + (1 - momentum) * mu",
        "running_var": "momentum * running_var + (1 - momentum) * var",
    }
    computes = ("out = gamma * xn + beta",)
    rules = {
        "x": "batchnorm_dx(dout, gamma, xc, std)",
        "gamma": "sum_to(xn * dout, gamma)",
        "beta": "sum_to(dout, beta)",
    }
    # Predicting, the statistics are the running ones: constants, so x's rule is a scaling.
    eval_own = {"mu": None, "xc": "x - running_mean", "var": None, "std": "np.sqrt(running_var + eps)"}
    eval_rules = {"x": "dout * gamma / std", "gamma": "sum_to(xn * dout, gamma)", "beta": "sum_to(dout, beta)"}
    examples = (((4, 3), (3,), (3,)), ((3, 5), (5,), (5,)))

    def infer(self, args, attrs):
        x, gamma, beta = args
        dtype = _result_dtype(self.name, args)
        if x.type.ndim != 2:
            raise ShapeError(
                f"batchnorm: `{x.name}` must be a batch of rows [N, features], got {x.type.shape_text()}",
                0,
                code="E202",
            )
        features = x.type.shape[1:]
        for i, p in ((1, gamma), (2, beta)):
            if p.type.shape != features:
                raise ShapeError(
                    f"shape mismatch in `batchnorm`: `{p.name}` {p.type.shape_text()} must be one number per "
                    f"feature of `{x.name}` {x.type.shape_text()}, {shape_text(features)}",
                    i,
                    code="E201",
                )
        return TensorType(dtype, x.type.shape)


def _positive_whole(value: Any) -> str | None:
    return None if type(value) is int and value > 0 else "must be a positive whole number"


def _whole_at_least_0(value: Any) -> str | None:
    return None if type(value) is int and value >= 0 else "must be a whole number, 0 or more"


def _window_out(
    op: str, what: str, size: Dim, window: int, stride: int, pad: int, window_at: tuple[int, str | None]
) -> int:
    """The book's output size (size + 2·pad − window) / stride + 1, or a ShapeError
    saying why there is none: at `stride` if it does not divide, at the window
    (conv2d's W, max_pool's size: `window_at`) if the window is too large."""
    assert isinstance(size, int)
    reach = size + 2 * pad - window
    arithmetic = f"({size} + 2·{pad} − {window}) / {stride} + 1"
    if reach < 0:
        raise ShapeError(
            f"{op}: the output {what} {arithmetic} is less than 1: the window is larger than the padded input",
            *window_at,
            f"padded, the input is {size + 2 * pad} across, the window {window}",
            code="E205",
        )
    if reach % stride:
        raise ShapeError(
            f"{op}: the output {what} {arithmetic} is not a whole number",
            0,
            "stride",
            f"`stride` must divide {size} + 2·{pad} − {window} = {reach}",
            code="E205",
        )
    return reach // stride + 1


def _image(op: str, x: Operand) -> tuple[Dim, Dim, int, int]:
    """x's N, C, H, W; H and W must be known sizes."""
    if x.type.ndim != 4:
        raise ShapeError(
            f"{op}: `{x.name}` must be a batch of images [N, C, H, W], got {x.type.shape_text()}", 0, code="E202"
        )
    n, c, h, w = x.type.shape
    if not isinstance(h, int) or not isinstance(w, int):
        raise ShapeError(
            f"{op}: the height and width of `{x.name}` {x.type.shape_text()} must be numbers", 0, code="E202"
        )
    return n, c, h, w


_WINDOW_ATTRIBUTES = {
    "stride": Attribute(1, doc="how far the window moves each step", problem=_positive_whole),
    "pad": Attribute(0, doc="zeros added around each image's border", problem=_whole_at_least_0),
}


@register
class Conv2d(Op):
    """The book's Convolution: each filter slid over the padded image, its
    windows as rows (im2col), so that forward and backward are each one
    matrix product."""

    name = "conv2d"
    operands = ("x", "W", "b")
    attributes = _WINDOW_ATTRIBUTES
    # The image's windows as columns, kept for W's gradient as the book keeps self.col.
    own = {"col": Own("x", computes="im2col(x, np.shape(W)[2], np.shape(W)[3], stride, pad)")}
    # One matrix product per image, [FN, C·FH·FW] · [C·FH·FW, OH·OW]: the
    # result is already laid out [N, FN, OH, OW], and the bias goes into it.
    computes = ("out = filter_rows(W) @ col", "out += b[:, None]", "out = maps(out)")
    rules = {
        "x": "col2im(filter_rows(W).T @ pixels(dout), x, np.shape(W)[2], np.shape(W)[3], stride, pad)",
        "W": "unflat(over_images(pixels(dout) @ window_rows(col)), W)",
        "b": "per_channel(dout)",
    }
    weights = ("W",)
    examples = (((2, 3, 5, 5), (4, 3, 3, 3), (4,)), ((1, 1, 4, 3), (2, 1, 2, 2), (2,)))

    def infer(self, args, attrs):
        x, w, b = args
        dtype = _result_dtype(self.name, args)
        n, c, h, width = _image(self.name, x)
        if w.type.ndim != 4:
            raise ShapeError(
                f"conv2d: filters `{w.name}` must be [FN, C, FH, FW], got {w.type.shape_text()}", 1, code="E202"
            )
        fn, fc, fh, fw = w.type.shape
        if not all(isinstance(d, int) for d in w.type.shape):
            raise ShapeError(
                f"conv2d: the shape of filters `{w.name}` {w.type.shape_text()} must be numbers", 1, code="E202"
            )
        if fc != c:
            raise ShapeError(
                f"shape mismatch in `conv2d`: `{x.name}` has {c} channels, filters `{w.name}` expect {fc} "
                f"(`{x.name}` is {x.type.shape_text()}, `{w.name}` is {w.type.shape_text()})",
                1,
                code="E201",
            )
        if b.type.shape != (fn,):
            raise ShapeError(
                f"shape mismatch in `conv2d`: bias `{b.name}` {b.type.shape_text()} must be one number per filter, "
                f"{shape_text((fn,))}",
                2,
                code="E201",
            )
        stride, pad = attrs["stride"], attrs["pad"]
        oh = _window_out(self.name, "height", h, fh, stride, pad, (1, None))
        ow = _window_out(self.name, "width", width, fw, stride, pad, (1, None))
        return TensorType(dtype, (n, fn, oh, ow))

    def own_tensor_type(self, item, types):
        x, w, out = types["x"], types["W"], types["out"]
        n, fn, oh, ow = out.shape
        _, c, fh, fw = w.shape
        return TensorType(x.dtype, (n, _product((c, fh, fw)), oh * ow))


@register
class MaxPool(Op):
    """The book's Pooling: the max of each size×size window; backward sends
    each window's gradient to where its max was (the argmax forward keeps)."""

    name = "max_pool"
    operands = ("x",)
    attributes = {"size": Attribute(2, doc="the window's height and width", problem=_positive_whole)}
    attributes.update(_WINDOW_ATTRIBUTES)
    attributes["stride"] = Attribute(2, doc="how far the window moves each step", problem=_positive_whole)
    own = {"arg_max": Own("out", "i64")}
    computes = ("out, arg_max = window_max(x, size, stride, pad)",)
    rules = {"x": "window_scatter(dout, arg_max, x, size, stride, pad)"}
    examples = (((2, 3, 4, 4),), ((1, 2, 6, 4),))

    def infer(self, args, attrs):
        (x,) = args
        dtype = _result_dtype(self.name, args, "a float operand")
        n, c, h, w = _image(self.name, x)
        size, stride, pad = attrs["size"], attrs["stride"], attrs["pad"]
        oh = _window_out(self.name, "height", h, size, stride, pad, (0, "size"))
        ow = _window_out(self.name, "width", w, size, stride, pad, (0, "size"))
        return TensorType(dtype, (n, c, oh, ow))


@register
class Flatten(Op):
    """Each sample's numbers in one row: [N, ...] -> [N, product of the rest]."""

    name = "flatten"
    operands = ("x",)
    computes = ("out = flat(x).copy()",)
    rules = {"x": "unflat(dout, x)"}
    examples = (((2, 3, 2, 2),), ((3, 4, 2),), ((4, 3),))

    def infer(self, args, attrs):
        (x,) = args
        dtype = _result_dtype(self.name, args, "a float operand")
        if x.type.ndim < 2:
            raise ShapeError(f"flatten: `{x.name}` must be a batch [N, ...], got {x.type.shape_text()}", 0, code="E202")
        return TensorType(dtype, (x.type.shape[0], _product(x.type.shape[1:])))


@register
class AvgPool(Op):
    """Average pooling: the mean of each size×size window; backward shares
    each window's gradient equally among its pixels. Keeps nothing."""

    name = "avg_pool"
    operands = ("x",)
    attributes = MaxPool.attributes
    computes = ("out = window_mean(x, size, stride, pad)",)
    rules = {"x": "window_share(dout, x, size, stride, pad)"}
    examples = MaxPool.examples
    infer = MaxPool.infer


def _product(dims: Sequence[Dim]) -> Dim:
    total = 1
    for d in dims:
        if isinstance(d, str):
            return "*".join(str(x) for x in dims)  # symbolic: compare as text
        total *= d
    return total
