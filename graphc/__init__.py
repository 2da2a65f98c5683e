"""graphc: a compiler for declarative computational-graph files.

import graphc
program = graphc.compile_file("models/apple.graph")
program.forward()     # {"price": array(220.)}
program.backward()    # {"apple": 2.2, "apple_num": 110.0, "tax": 200.0}
"""

from graphc.errors import GraphcError
from graphc.program import Program, compile_file, compile_source

__all__ = ["GraphcError", "Program", "compile_file", "compile_source"]
__version__ = "0.1.0"
