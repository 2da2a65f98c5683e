"""How large an input graphc takes on: one place for every size limit.

A .graph file, a checkpoint, a data file or a command-line value can ask for
more than the machine has (`param W: [1000000, 1000000]`, an .npy header that
claims 10^12 rows, a gzip file that inflates to 12 GiB). graphc refuses such
inputs with a located error *before* it allocates anything large, so every
mistake is answered in bounded time and memory.

Each limit can be raised (or lowered) through an environment variable, for
the person whose model really is that large:

    GRAPHC_MAX_ELEMENTS   numbers in one tensor      (default 2**28: 2 GiB of f64)
    GRAPHC_MAX_LINES      lines in one .graph file   (default 100,000)

The rest are fixed: they are far beyond anything a model needs.
"""

from __future__ import annotations

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

# Lines in one .graph file; the largest graph in the benchmarks has 50,000 nodes.
MAX_LINES = _from_env("GRAPHC_MAX_LINES", 100_000)
LINES_VARIABLE = "GRAPHC_MAX_LINES"

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


def too_many_elements(count: int) -> bool:
    return count > MAX_ELEMENTS


def elements_hint() -> str:
    return f"graphc refuses tensors of more than {MAX_ELEMENTS:,} numbers; raise the limit with {ELEMENTS_VARIABLE}=N"


# Characters of a checkpoint's `meta` JSON: a structure line per node and a
# record per epoch; a graph of 100,000 lines trained 10,000 epochs takes
# under half of this.
MAX_META_CHARS = 2**24
