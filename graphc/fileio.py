"""Files written atomically: a failure never leaves a half-written file, and
the previous file stays intact until the new one is complete."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from graphc.errors import GraphcError


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """Open a temporary file beside `path`; on success it replaces `path`.

    Through a symlink, the file the link points to is replaced and the link
    kept. A device or a FIFO (`-o /dev/stdout`) cannot be replaced: it is
    written directly.
    """
    shown = str(path)  # messages name the path as the person wrote it
    path = Path(path)
    directory = path.parent
    try:
        mode = os.stat(path).st_mode  # through any link
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        with open(path, "wb") as handle:
            yield handle
        return
    if path.is_symlink():
        path = path.resolve()  # a dangling link too: its target is made
    if not path.parent.is_dir():
        raise GraphcError("cannot write: no such directory", where=shown, hint=f"create `{directory}` first")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise GraphcError(f"cannot write: {err.strerror}", where=shown) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _mode(path))  # mkstemp makes 0600; give what open() would
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _mode(path: Path) -> int:
    """The file's current permissions, or a new file's under the umask."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | Path, data: bytes) -> None:
    try:
        with atomic_open(path) as handle:
            handle.write(data)
    except OSError as err:
        raise GraphcError(f"cannot write: {err.strerror or err}", where=str(path)) from None
