"""Stage 5: shape and dtype inference over the checked graph.

Walks the nodes in topological order and asks each op's shape rule for its
output type. Symbolic dims (the batch `N`) flow through untouched. A mismatch
is reported at the operand that does not fit, with both shapes and names.

A const with no dtype written (every literal argument, as in `mul(x, 0.5)`,
and `const c = ...`) gets its dtype here, once, from the values that read it:

- read as softmax_loss's class indices: i64;
- otherwise, a scalar stays weak (dtype None): it is fed as a Python float,
  which numpy's promotion treats as weak, so f32 stays f32 (the generated
  code writes scalars inline, to the same effect);
- otherwise the dtype its readers compute in (f64 if nothing reads it).

Readers that disagree on an array's dtype are an error at the const. Class
indices whose values are known here (consts, literal defaults of inputs)
must be whole numbers in 0..classes-1; fed ones are checked when fed.
"""

from __future__ import annotations

import numpy as np

from graphc._gc import gc_paused
from graphc.check import CheckedGraph
from graphc.errors import Diagnostic, GraphcError, Span
from graphc.ir import (
    DTYPE_RANGES,
    ConstDecl,
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
            errors.append(Diagnostic(str(err), span, _hint(checked, decl, err)))
    if not errors:
        errors = _const_dtypes(checked, types)
    if not errors:
        errors = _class_indices(checked, types)
    if errors:
        raise GraphcError(diagnostics=errors)
    return types


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


def reads_class_indices(node: OpNode, types: dict[str, TensorType]) -> bool:
    """Whether `node` is a softmax_loss whose labels are class indices (not one-hot rows)."""
    return node.op.name == "softmax_loss" and types[node.args[1]].shape != types[node.args[0]].shape


def _const_dtypes(checked: CheckedGraph, types: dict[str, TensorType]) -> list[Diagnostic]:
    errors = []
    decls = checked.ir.decls
    for decl in decls.values():
        if not isinstance(decl, ConstDecl) or decl.type.dtype is not None:
            continue
        # dtype -> the first read that wants it: (reader, span of the read)
        wanted: dict[str, tuple[str, Span]] = {}
        for reader, position in checked.readers(decl.name):
            node = decls[reader]
            assert isinstance(node, OpNode)
            indices = position == 1 and reads_class_indices(node, types)
            dtype = "i64" if indices else types[reader].dtype
            assert dtype is not None  # an op's result always has a dtype
            wanted.setdefault(dtype, (reader, node.arg_spans[position]))
        if len(wanted) > 1 and (decl.value.ndim > 0 or "i64" in wanted):
            errors.append(_disagree(decl, wanted))
            continue
        if "i64" in wanted:
            dtype = "i64"
        elif decl.value.ndim == 0:
            dtype = None  # weak: fits every reader
        else:
            dtype = next(iter(wanted), "f64")
        for float_dtype, (reader, span) in wanted.items():
            bad = unrepresentable(decl.value, float_dtype)
            if bad is not None:
                held = (
                    f"`{decl.name}` is"
                    if decl.literal and decl.value.ndim == 0
                    else f"{_what(decl)} holds {number_text(bad)},"
                )
                errors.append(
                    Diagnostic(
                        f"{held} out of range for {float_dtype}, the dtype of `{reader}`",
                        span,
                        DTYPE_RANGES[float_dtype],
                    )
                )
                break
        types[decl.name] = TensorType(dtype, decl.type.shape)
    return errors


def _what(decl: ConstDecl) -> str:
    return f"literal `{decl.name}`" if decl.literal else f"const `{decl.name}`"


def _disagree(decl: ConstDecl, wanted: dict[str, tuple[str, Span]]) -> Diagnostic:
    (first, (reader1, _)), (second, (reader2, span)) = list(wanted.items())[:2]
    shape = decl.type.shape_text() if decl.type.shape else ""
    if decl.literal:
        hint = (
            "a literal has one dtype; declare a typed const for one reader, "
            f"e.g. `const c: {second}{shape} = {decl.name}`"
        )
    else:
        hint = f"give each reader a const of its own dtype, e.g. `const {decl.name}_{second}: {second}{shape} = ...`"
    return Diagnostic(f"{_what(decl)} is read as {first} by `{reader1}` and as {second} by `{reader2}`", span, hint)


def _class_indices(checked: CheckedGraph, types: dict[str, TensorType]) -> list[Diagnostic]:
    """Class indices known before running are whole numbers in range; an op's result is no label."""
    errors = []
    decls = checked.ir.decls
    for node in checked.ir.nodes():
        if not reads_class_indices(node, types):
            continue
        scores, labels = node.args
        classes = types[scores].shape[-1]
        source = decls[labels]
        if isinstance(source, OpNode):
            errors.append(
                Diagnostic(
                    f"class indices `{labels}` are computed by `{source.op.name}`; labels must be an input or a const",
                    node.arg_spans[1],
                    f"one-hot labels of shape {types[scores].shape_text()} may be computed",
                )
            )
            continue
        if isinstance(source, ConstDecl):
            values, what, span = source.value, _what(source), node.arg_spans[1]
        elif isinstance(source, InputDecl) and source.init is not None and source.init.kind == "value":
            values, what, span = source.init.value, f"input `{labels}`", source.init.span
        else:
            continue  # fed, or made up: checked as it is fed
        problem = index_problem(values, classes)
        if problem is not None:
            hint = f"`{scores}` {types[scores].shape_text()} has {classes} classes" if "lie in" in problem else None
            errors.append(Diagnostic(f"{what}: {problem}", span, hint))
    return errors


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
