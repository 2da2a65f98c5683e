"""Pause Python's cycle collector while a compiler stage runs.

Each stage allocates one small object per token, node, edge or step and keeps
nearly all of them. Every 700 allocations the collector wakes and scans the
young objects, and the older generations again and again as they grow: on a
10,000-node graph that is about 40% of the front end's time, and it finds
nothing, because the stages make no reference cycles to collect. The stages
therefore run with the collector paused; it resumes (if it was on) when the
outermost paused stage returns, with what the stage made moved to the oldest
generation unscanned, and collects as usual from then on.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def gc_paused(function: F) -> F:
    """Decorate a stage so that it runs with the cycle collector paused."""

    @functools.wraps(function)
    def paused(*args, **kwargs):
        if not gc.isenabled():  # already paused, by an outer stage or the caller
            return function(*args, **kwargs)
        gc.disable()
        try:
            return function(*args, **kwargs)
        finally:
            _age_young_objects()
            gc.enable()

    return paused  # type: ignore[return-value]


def _age_young_objects() -> None:
    """Move every object the collector tracks to its oldest generation, without scanning any.

    What a paused stage made (and the modules it imported: numpy, networkx and
    Lark load inside the commands) waits in the youngest generation, tens of
    thousands of objects after a `graphc check`; the first allocation after
    the pause would scan them all at once (10-50 ms), to find nothing. Nearly
    all of it lives as long as the program, which is what the oldest generation
    is for; a full collection (rare, and at exit) still finds any cycle there.
    gc.freeze() moves every tracked object to the permanent generation, and
    gc.unfreeze() moves them all to the oldest one: each a list splice.
    """
    gc.freeze()
    gc.unfreeze()


def spare_the_exit_collection() -> None:
    """Put every object out of reach of the full collection Python makes as it exits.

    Called when the command has finished and the process is about to end: that
    last collection walks every object still alive (numpy's, networkx's and
    Lark's among them), 30-70 ms of a `graphc check`, to free memory the system
    takes back whole a moment later. Frozen objects are still freed when their
    references go; only cycles left unreachable at exit are not collected, and
    Python promises no finalizer at exit anyway (atexit handlers and
    weakref.finalize run as before).
    """
    gc.freeze()
