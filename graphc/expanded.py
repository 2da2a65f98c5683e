"""A graph with its blocks expanded, written back as .graph text
(`graphc compile FILE --emit expanded`).

Every value is written as elaboration made it: a block's params and values
under their instance names (`h1.W`, `h1.affine1`), every chain as one
`name = op(args)` per node, attributes only where they differ from the op's
defaults. The text compiles to the same graph, params drawn in the same
order, so a run of it gives the same numbers for a seed.
"""

from __future__ import annotations

import json
import re

import numpy as np

from graphc.compiler import CompiledGraph
from graphc.ir import ConstDecl, Decl, InputDecl, OpNode, ParamDecl, TensorType, compact

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def expanded_text(compiled: CompiledGraph) -> str:
    ir = compiled.ir
    lines = [f"# graph `{ir.name}` with its blocks expanded", f"graph {ir.name} {{"]
    lines += [f"    dim {name} = {size}" for name, size in ir.dims.items()]
    owner: str | None = None
    for name, decl in ir.decls.items():
        if isinstance(decl, ConstDecl) and decl.literal:
            continue  # written where it is read, as its value
        here = ir.owners.get(name)
        if here != owner and here is not None:
            use = ir.instances[here].span
            where = f"line {use.line}" if use.source is ir.source else str(use)
            lines.append(f"    # {here}: a use of block `{ir.instances[here].block}` at {where}")
        owner = here
        lines.append("    " + _statement(decl))
    if ir.outputs:
        lines.append("    output " + ", ".join(name for name, _ in ir.outputs))
    lines += ["    expect " + expect.describe() for expect in ir.expects]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _statement(decl: Decl) -> str:
    if isinstance(decl, InputDecl):
        text = f"input {decl.name}: {_type(decl.type)}"
        if decl.init is not None:
            text += " = " + (_value(decl.init.value) if decl.init.value is not None else decl.init.describe())
        return text + (f" from {decl.role}" if decl.role else "")
    if isinstance(decl, ParamDecl):
        init = _value(decl.init.value) if decl.init.value is not None else decl.init.describe()
        return f"param {decl.name}: {_type(decl.type)} = {init}"
    if isinstance(decl, ConstDecl):
        return f"const {decl.name}: {_type(decl.type)} = {_value(decl.value)}"
    assert isinstance(decl, OpNode)
    args = list(decl.args)
    for key, value in decl.attrs.items():
        if value != decl.op.attributes[key].default:
            args.append(f"{key}={_attr(value)}")
    return f"{decl.name} = {decl.op.name}({', '.join(args)})"


def _type(type_: TensorType) -> str:
    """`f64[N, 784]`; a const with no dtype written (`[3]`) stays without one."""
    shape = type_.shape_text()
    return f"{type_.dtype}{shape}" if type_.dtype is not None else shape


def _value(value: np.ndarray) -> str:
    """A literal: one number when the value is one number filling its shape, else nested lists."""
    return json.dumps(compact(np.asarray(value)).tolist())


def _attr(value: object) -> str:
    if isinstance(value, str):
        return value if _WORD.fullmatch(value) else json.dumps(value, ensure_ascii=False)
    return json.dumps(value)
