"""graphc: a compiler for declarative computational-graph files.

import graphc
program = graphc.compile_file("models/apple.graph")
program.forward()     # {"price": array(220.)}
program.backward()    # {"apple": 2.2, "apple_num": 110.0, "tax": 200.0}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from graphc.errors import GraphcError

if TYPE_CHECKING:
    from graphc.program import Program, compile_file, compile_source

__all__ = ["GraphcError", "Program", "compile_file", "compile_source"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The Program (numpy, networkx, Lark) loads on first use, not with the package:
    # `graphc --help` imports graphc.cli, and with it this package, and needs none of it.
    if name in ("Program", "compile_file", "compile_source"):
        import graphc.program

        return getattr(graphc.program, name)
    raise AttributeError(f"module 'graphc' has no attribute {name!r}")
