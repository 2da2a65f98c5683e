"""Stage 5: shape and dtype inference over the checked graph.

Walks the nodes in topological order and asks each op's shape rule for its
output type. Symbolic dims (the batch `N`) flow through untouched. A mismatch
is reported at the operand that does not fit, with both shapes and names.
"""

from __future__ import annotations

from graphc._gc import gc_paused
from graphc.check import CheckedGraph
from graphc.errors import Diagnostic, GraphcError
from graphc.ir import ConstDecl, InputDecl, OpNode, ParamDecl, TensorType
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
