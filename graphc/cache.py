"""Where graphc keeps what it can always make again: Lark's parser tables and
the parsed MNIST arrays.

The directory is $GRAPHC_CACHE_DIR, else $XDG_CACHE_HOME/graphc, else
~/.cache/graphc. A cache only saves time: one that cannot be made, read or
written is passed over, never an error, and every file in it is written
atomically (a reader sees the old file or the new one, never half of one).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def cache_dir() -> Path:
    """The cache directory, whether or not it exists yet."""
    chosen = os.environ.get("GRAPHC_CACHE_DIR")
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "graphc"


def cache_file(name: str) -> Path | None:
    """`name` in the cache directory, which is made if need be; None where there
    is no directory to be had (a file in its place, no permission)."""
    directory = cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return directory / name if directory.is_dir() else None


def cache_folder(name: str) -> Path | None:
    """A directory `name` in the cache directory, made if need be; None as cache_file."""
    path = cache_file(name)
    if path is None:
        return None
    try:
        path.mkdir(exist_ok=True)
    except OSError:
        return None
    return path if path.is_dir() else None


def store(path: Path, write: Callable[[BinaryIO], object]) -> bool:
    """Write `path` atomically with `write(handle)`; False, and nothing left
    behind, where the directory refuses it."""
    from graphc.errors import GraphcError
    from graphc.fileio import atomic_open

    with contextlib.suppress(OSError, GraphcError):
        with atomic_open(path) as handle:
            write(handle)
        return True
    return False
