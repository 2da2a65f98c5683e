"""Printed figures that do not depend on the machine: the command line's
summaries and the diagrams' edge labels both print through here.

Printed figures keep only the digits rounding cannot change. How a BLAS sums
(its kernel, the CPU, the thread count) moves a float result by a few units in
the last place per rounding; a matrix product over 784 features and a sum over
a batch round about a thousand times. So a value is taken as known to within
ROUNDING_ULPS units in the last place of its dtype, relative to the scale it
was computed at (its tensor's largest magnitude; a scalar's own): a figure
prints no digit finer than that, and one that does not reach it prints as 0
(the mean of a gradient that is zero in exact arithmetic, for one).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

ROUNDING_ULPS = 1024


def rounding_error(dtype: Any) -> float:
    """The relative error rounding may have left in a float of `dtype` (for
    integers, in the float64 statistics computed from them)."""
    kind = np.dtype(dtype)
    return ROUNDING_ULPS * float(np.finfo(kind if kind.kind == "f" else np.float64).eps)


def stable_number(value: float, uncertainty: float, digits: int) -> str:
    """`value` to at most `digits` significant digits, none finer than
    `uncertainty`; `0` when not even its first digit is above it."""
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if value == 0 or abs(value) <= uncertainty:
        return "0"
    if uncertainty > 0:
        first = math.floor(math.log10(abs(value)))
        finest = math.ceil(math.log10(uncertainty))  # the finest decimal place rounding leaves alone
        digits = min(digits, first - finest + 1)
        if digits < 1:
            return "0"
    text = f"{value:.{digits}g}"
    return "0" if float(text) == 0 else text  # -0 as 0
