"""argparse types the benchmarks share: a wrong number on their command
lines is a usage error naming it, not a traceback."""

from __future__ import annotations

import argparse
from collections.abc import Callable

# graphc's own, which `graphc gradcheck --rtol/--eps` take: one wording for both.
from graphc.commands.common import positive_number

__all__ = ["at_least", "positive_number"]


def at_least(least: int) -> Callable[[str], int]:
    """An argparse type: a whole number at least `least`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"takes a whole number, got `{text}`") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value

    return parse
