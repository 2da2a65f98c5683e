"""How large an input graphc takes on: one place for every size limit.

A .graph file, a checkpoint, a data file or a command-line value can ask for
more than the machine has (`param W: [1000000, 1000000]`, an .npy header that
claims 10^12 rows, a gzip file that inflates to 12 GiB). graphc refuses such
inputs with a located error *before* it allocates anything large, so every
mistake is answered in bounded time and memory.

Each limit can be raised (or lowered) through an environment variable, for
the person whose model really is that large:

    GRAPHC_MAX_ELEMENTS      numbers in one tensor             (default 2**28: 2 GiB of f64)
    GRAPHC_MAX_RUN_ELEMENTS  numbers in all of a run's values  (default 2**24: 128 MiB of f64)
    GRAPHC_MAX_LINES         lines in one .graph file          (default 100,000)

The rest are fixed: they are far beyond anything a model needs.
"""

from __future__ import annotations

import math
import os


def _from_env(variable: str, default: int) -> int:
    """A positive whole number from the environment, else the default.

    A value that is not one is ignored rather than fatal: a limit must never
    be the reason graphc cannot start.
    """
    text = os.environ.get(variable, "").strip().replace("_", "")
    if text.isdigit() and len(text) <= 18 and int(text) > 0:
        return int(text)
    return default


# Numbers in one tensor: a param, a const, an input (fed or made up), a value
# computed by a step, an array in a checkpoint or a data file. MNIST's
# training images are 47 million; a 784-1000-1000-10 net holds 1.8 million.
MAX_ELEMENTS = _from_env("GRAPHC_MAX_ELEMENTS", 2**28)
ELEMENTS_VARIABLE = "GRAPHC_MAX_ELEMENTS"

# Numbers in all the values of one run of a graph together: its params,
# consts, inputs and every value computed from them (gradients take as much
# again). Time and memory grow with it, so a graph that asks for much more
# than a book's model needs is refused before anything is made: with the
# default, the two-layer net runs a batch of 10,000 MNIST images, and the
# largest run takes seconds, not minutes.
MAX_RUN_ELEMENTS = _from_env("GRAPHC_MAX_RUN_ELEMENTS", 2**24)
RUN_ELEMENTS_VARIABLE = "GRAPHC_MAX_RUN_ELEMENTS"

# Bytes of an ONNX model graphc import reads: 2**28 float32 numbers, the
# largest tensor graphc holds (protobuf itself stops at 2 GiB).
MAX_MODEL_BYTES = 2**30

# Lines in one .graph file; the largest graph in the benchmarks has 50,000 nodes.
MAX_LINES = _from_env("GRAPHC_MAX_LINES", 100_000)
LINES_VARIABLE = "GRAPHC_MAX_LINES"

# Characters in one line, and bytes in one .graph file: a person writes lines
# of a hundred characters, and the benchmarks' 50,000-node graphs are 1.3 MB.
# Both bound the parser's time before it starts (a line of 200,000
# characters of numbers takes it a second).
MAX_LINE_CHARS = 200_000
MAX_FILE_BYTES = 16 * 2**20

# Dims of one value. numpy 1.x stops at 32 (numpy 2 at 64); graphc holds to
# the smaller, so a file means the same with either.
MAX_DIMS = 32

# Digits in one integer literal. Python refuses to convert more than 4,300;
# anything past 20 digits is beyond every size and every i64 anyway.
MAX_INT_DIGITS = 4000

# Nesting of JSON read from files (a checkpoint's meta); Python's parser
# recurses and would exhaust the stack long before memory.
MAX_JSON_DEPTH = 64

# Characters of a source line shown in a diagnostic; longer lines are clipped
# around the spot the caret marks.
MAX_EXCERPT = 120

# Errors shown from one file: the first ones say what is wrong, and a file
# of thousands of mistakes is answered at once, not with pages of them.
MAX_ERRORS = 20

# Names a "did you mean" hint compares a misspelt name with: the ones that
# sort nearest to it, when a graph has more (a comparison costs microseconds,
# and a graph may have 100,000 names).
MAX_SUGGESTION_CANDIDATES = 400


def too_many_elements(count: int) -> bool:
    return count > MAX_ELEMENTS


def count_text(count: int) -> str:
    """A count of numbers as messages write it: 4,000,000,000,000, or about 10^40 past that."""
    if count < 10**21:
        return f"{count:,}"
    return f"about 10^{int(math.log10(count))}"  # log10, not str(): an int of 5,000 digits has no str


def run_hint() -> str:
    return (
        f"graphc runs a graph on at most {MAX_RUN_ELEMENTS:,} numbers in all its values; "
        f"raise the limit with {RUN_ELEMENTS_VARIABLE}=N"
    )


def elements_hint() -> str:
    return f"graphc refuses tensors of more than {MAX_ELEMENTS:,} numbers; raise the limit with {ELEMENTS_VARIABLE}=N"


# Characters of a checkpoint's `meta` JSON: a structure line per node and a
# record per epoch; a graph of 100,000 lines trained 10,000 epochs takes
# under half of this.
MAX_META_CHARS = 2**24
