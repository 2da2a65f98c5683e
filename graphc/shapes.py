"""Stage 5: shape and dtype inference over the checked graph.

Walks the nodes in topological order and asks each op's shape rule for its
output type. Symbolic dims (the batch `N`) flow through untouched. A mismatch
is reported at the operand that does not fit, with both shapes and names.

A const with no dtype written (every literal argument, as in `mul(x, 0.5)`,
and `const c = ...`), and a node that reads only such consts (`mul(2, 3)`),
gets its dtype here, once, from the values that read it:

- read as class indices (a label operand, see Op.labels): i64;
- otherwise, a scalar stays weak (dtype None): it is fed as a Python float,
  which numpy's promotion treats as weak, so f32 stays f32 (the generated
  code writes scalars inline, to the same effect);
- otherwise the dtype its readers compute in (if nothing reads it, the
  graph's float dtype, or f64 where it has both).

Readers that disagree on an array's dtype are an error at the value. Labels
whose values are known here (consts, literal defaults of inputs) must be
valid: class indices whole numbers in 0..classes-1, one-hot rows
non-negative and summing to 1; fed ones are checked when fed."""

from __future__ import annotations

import numpy as np

from graphc._gc import gc_paused
from graphc.check import CheckedGraph
from graphc.errors import Diagnostic, GraphcError, Span
from graphc.ir import (
    DTYPE_RANGES,
    ConstDecl,
    Decl,
    Dim,
    InputDecl,
    OpNode,
    ParamDecl,
    TensorType,
    compact,
    number_text,
    unrepresentable,
)
from graphc.ops import Operand, ShapeError


@gc_paused
def infer_shapes(checked: CheckedGraph) -> dict[str, TensorType]:
    types: dict[str, TensorType] = {}
    errors: list[Diagnostic] = []
    for name in checked.order:
        decl = checked.ir.decls[name]
        if isinstance(decl, (InputDecl, ParamDecl, ConstDecl)):
            types[name] = decl.type
            continue
        assert isinstance(decl, OpNode)
        if any(arg not in types for arg in decl.args):
            continue  # an operand already failed; its error is reported
        operands = [Operand(arg, types[arg]) for arg in decl.args]
        try:
            types[name] = decl.op.infer(operands, decl.attrs)
        except ShapeError as err:
            span = decl.arg_spans[err.operand] if err.operand is not None else decl.call_span
            span = decl.attr_spans.get(err.attribute or "", span)  # an attribute at fault, where written
            errors.append(Diagnostic(str(err), span, err.hint or _hint(checked, decl, err), code=err.code))
    if not errors:
        errors = _weak_dtypes(checked, types)
    if not errors:
        errors = _labels(checked, types)
    if errors:
        raise GraphcError(code=None, diagnostics=errors)
    return types


def state_types(checked: CheckedGraph, types: dict[str, TensorType]) -> dict[str, TensorType]:
    """Every op's state by plan name (bn1.running_mean), each with its type: the operand's it is shaped like."""
    result = {}
    for name in checked.order:
        node = checked.ir.decls[name]
        if isinstance(node, OpNode):
            for item, like in node.op.state.items():
                result[f"{name}.{item}"] = types[node.args[node.op.operands.index(like)]]
    return result


def _hint(checked: CheckedGraph, node: OpNode, err: ShapeError) -> str | None:
    """Point at where the offending operand's shape comes from."""
    if err.operand is None:
        return None
    arg = node.args[err.operand]
    decl = checked.ir.decls[arg]
    if isinstance(decl, (InputDecl, ParamDecl)):
        kind = "input" if isinstance(decl, InputDecl) else "param"
        return f"{kind} `{arg}` is declared {decl.type} at line {decl.span.line}"
    return None


def class_index_read(node: OpNode, position: int, types: dict[str, TensorType]) -> bool:
    """Whether `node` reads its operand at `position` as class indices: a
    label operand (Op.labels) shaped as the scores it labels, less their last dim."""
    scored = node.op.label_positions().get(position)
    return scored is not None and types[node.args[position]].shape != types[node.args[scored]].shape


def _weak_dtypes(checked: CheckedGraph, types: dict[str, TensorType]) -> list[Diagnostic]:
    """Give consts without a dtype, and nodes of weak operands only, the dtype their readers need.

    Readers come later in the topological order, so walking it backwards
    meets every reader resolved before the value it reads.
    """
    found: list[tuple[int, Diagnostic]] = []
    decls = checked.ir.decls
    # What nothing reads (an output) takes the graph's float dtype, if it has one.
    floats = {t.dtype for t in types.values() if t.dtype in ("f32", "f64")}
    unread = floats.pop() if len(floats) == 1 else "f64"
    for name in reversed(checked.order):
        decl = decls[name]
        if types[name].dtype is not None or not isinstance(decl, (ConstDecl, OpNode)):
            continue
        wanted = _wanted_dtypes(checked, name, types)
        shape = types[name].shape
        # A const's value decides whether it is a scalar (`const c: [3] = 2` stays one number).
        scalar = decl.value.ndim == 0 if isinstance(decl, ConstDecl) else not shape
        if len(wanted) > 1 and (not scalar or "i64" in wanted):
            found.append((checked.ir.order[name], _disagree(decl, wanted)))
            continue
        if "i64" in wanted:
            dtype: str | None = "i64"
        elif scalar:
            dtype = None  # weak: fits every reader
        else:
            dtype = next(iter(wanted), unread)
        if isinstance(decl, ConstDecl):
            problem = _out_of_range(decl, wanted)
            if problem is not None:
                found.append((checked.ir.order[name], problem))
        types[name] = TensorType(dtype, shape)
    return [diagnostic for _, diagnostic in sorted(found, key=lambda item: item[0])]


def _wanted_dtypes(checked: CheckedGraph, name: str, types: dict[str, TensorType]) -> dict[str, tuple[str, Span]]:
    """dtype -> the first read that wants it: (reader, span of the read). A weak reader wants none."""
    wanted: dict[str, tuple[str, Span]] = {}
    for reader, position in checked.readers(name):
        node = checked.ir.decls[reader]
        assert isinstance(node, OpNode)
        dtype = "i64" if class_index_read(node, position, types) else types[reader].dtype
        if dtype is not None:
            wanted.setdefault(dtype, (reader, node.arg_spans[position]))
    return wanted


def _out_of_range(decl: ConstDecl, wanted: dict[str, tuple[str, Span]]) -> Diagnostic | None:
    for float_dtype, (reader, span) in wanted.items():
        bad = unrepresentable(decl.value, float_dtype)
        if bad is not None:
            held = (
                f"`{decl.name}` is"
                if decl.literal and decl.value.ndim == 0
                else f"{_what(decl)} holds {number_text(bad)},"
            )
            return Diagnostic(
                f"{held} out of range for {float_dtype}, the dtype of `{reader}`",
                span,
                DTYPE_RANGES[float_dtype],
                code="E212",
            )
    return None


def _what(decl: Decl) -> str:
    if isinstance(decl, ConstDecl):
        return f"literal `{decl.name}`" if decl.literal else f"const `{decl.name}`"
    return f"`{decl.name}`"


def _disagree(decl: Decl, wanted: dict[str, tuple[str, Span]]) -> Diagnostic:
    (first, (reader1, _)), (second, (reader2, span)) = list(wanted.items())[:2]
    if isinstance(decl, ConstDecl):
        shape = decl.type.shape_text() if decl.type.shape else ""
        if decl.literal:
            hint = (
                "a literal has one dtype; declare a typed const for one reader, "
                f"e.g. `const c: {second}{shape} = {decl.name}`"
            )
        else:
            hint = (
                f"give each reader a const of its own dtype, e.g. `const {decl.name}_{second}: {second}{shape} = ...`"
            )
    else:
        hint = "it computes on consts alone, which take one dtype; declare the consts it reads with a dtype"
    return Diagnostic(
        f"{_what(decl)} is read as {first} by `{reader1}` and as {second} by `{reader2}`", span, hint, code="E214"
    )


def _labels(checked: CheckedGraph, types: dict[str, TensorType]) -> list[Diagnostic]:
    """Labels known before running are valid: class indices whole numbers in
    range, one-hot rows non-negative and summing to 1; class indices are no op's result."""
    errors = []
    for node in checked.ir.nodes():
        for position in node.op.label_positions():
            problem = _label_problem(checked, node, position, types)
            if problem is not None:
                errors.append(problem)
    return errors


def _label_problem(
    checked: CheckedGraph, node: OpNode, position: int, types: dict[str, TensorType]
) -> Diagnostic | None:
    labels, scores = node.args[position], node.args[node.op.label_positions()[position]]
    source = checked.ir.decls[labels]
    indices = class_index_read(node, position, types)
    if isinstance(source, OpNode):
        if not indices:
            return None  # one-hot rows, checked as they are computed
        return Diagnostic(
            f"class indices `{labels}` are computed by `{source.op.name}`; labels must be an input or a const",
            node.arg_spans[position],
            f"one-hot labels of shape {types[scores].shape_text()} may be computed",
            code="E402",
        )
    if isinstance(source, ConstDecl):
        values, what, span = source.value, _what(source), node.arg_spans[position]
    elif isinstance(source, InputDecl) and source.init is not None and source.init.value is not None:
        values, what, span = source.init.value, f"input `{labels}`", source.init.span
    else:
        return None  # fed, or made up: checked as it is fed
    classes = types[scores].shape[-1]
    problem = label_problem(values, classes if indices else None)
    if problem is None:
        return None
    if indices:
        hint = f"`{scores}` {types[scores].shape_text()} has {classes} classes" if "lie in" in problem else None
    else:
        hint = ONEHOT_HINT
    return Diagnostic(f"{what}: {problem}", span, hint, code="E402")


ONEHOT_HINT = "labels shaped like the scores are one-hot rows, or probabilities: non-negative, each row summing to 1"


# Label rows must sum to 1 this closely: labels saved in float32 are off by ~1e-7.
LABEL_SUM_TOLERANCE = 1e-6


def label_problem(values: np.ndarray, classes: Dim | None) -> str | None:
    """What is wrong with `values` as labels, or None: class indices for
    `classes` classes (a size or a symbol), or, with classes None, one-hot rows."""
    return onehot_problem(values) if classes is None else index_problem(values, classes)


def onehot_problem(values: np.ndarray) -> str | None:
    """What is wrong with `values` as one-hot label rows, or None.

    softmax_loss's gradient softmax(y) - t is the derivative of its loss
    -sum(t * log softmax(y)) only for rows that sum to 1: one-hot rows, or
    probabilities (smoothed labels).
    """
    values = np.asarray(values)
    if values.size == 0 or values.ndim == 0:
        return None
    rows = values.reshape(-1, values.shape[-1]).astype(np.float64)
    where = "" if values.ndim == 1 else " in row {row}"
    negative = ~(rows >= 0)  # NaN too
    if negative.any():
        row, column = (int(i) for i in np.argwhere(negative)[0])
        return f"labels must be non-negative, got {number_text(rows[row, column].item())}" + where.format(row=row)
    sums = rows.sum(axis=1)
    off = ~(np.abs(sums - 1) <= LABEL_SUM_TOLERANCE)
    if off.any():
        row = int(np.argmax(off))
        what = "the labels sum" if values.ndim == 1 else f"row {row} sums"
        return f"label rows must sum to 1, {what} to {number_text(sums[row].item())}"
    return None


def index_problem(values: np.ndarray, classes) -> str | None:
    """What is wrong with `values` as class indices for `classes` classes (a size or a symbol), or None."""
    values = compact(values)  # one number broadcast to a shape: checked once
    if values.dtype.kind == "f":
        fractions = values[~np.isfinite(values) | (values != np.floor(values))]
        if fractions.size:
            return f"class indices must be whole numbers, got {number_text(fractions.flat[0].item())}"
    if isinstance(classes, int) and values.size:
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi >= classes:
            return f"class indices must lie in 0..{classes - 1}, got {lo if lo == hi else f'{lo}..{hi}'}"
    return None
