"""Files from outside, read within limits; files written so that a failure
never leaves a half-written one.

Reading. An .npy array (a file of its own, or an entry of an .npz) is read
header first: its dtype, shape and order are checked, its size against
limits.MAX_ELEMENTS and against the bytes the file really holds, and only
then is its data read, in a buffer of exactly that size. JSON from a file is
checked for nesting depth, and its integers for length, before Python's
parser (which recurses, and refuses integers of more than 4,300 digits)
sees them.

Writing. A file is written to a temporary file beside the target, then
renamed over it, so the previous file stays intact until the new one is
complete. Temporary names carry the writer's pid and host
(`.W.npz.1234@host.k3j2x8qa.tmp`): one that a process killed mid-write left
behind is recognised, and removed by the next write to the same path.
A lock file beside a target (`.W.npz.lock`, flock'ed) keeps two processes
from writing the same file in turn, and a write probe checks, before any
work, that the disk takes as many bytes as the file will need.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import math
import os
import re
import socket
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np

from graphc import limits
from graphc.errors import GraphcError

# --- arrays -------------------------------------------------------------------------

NPY_MAGIC = b"\x93NUMPY"
# numpy refuses headers longer than this itself (np.load's max_header_size).
_MAX_HEADER = 10_000
_CHUNK = 1 << 20


class ArrayProblem(Exception):
    """Why an .npy array cannot be read, said of the array ("is truncated: ...").

    kind: "corrupt" (a damaged or foreign file), "type" (well formed, but not
    numbers graphc reads) or "size" (well formed, beyond the limits)."""

    def __init__(self, reason: str, kind: str = "corrupt", hint: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.hint = hint


@dataclass(frozen=True)
class ArrayHeader:
    """What an .npy header says: enough to check an array before reading it."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    fortran_order: bool
    offset: int  # bytes before the data: magic, version, header

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


def _kind_problem(dtype: np.dtype[Any], kinds: str) -> str | None:
    """Why `dtype` is not one graphc reads here, or None."""
    if dtype.hasobject:
        return "holds pickled Python objects, which graphc never loads"
    if dtype.names is not None or dtype.subdtype is not None:
        return f"holds structured records ({dtype}), not plain numbers"
    if dtype.kind == "c" and "c" not in kinds:
        return f"holds complex numbers ({dtype}); graphc computes with real numbers"
    if dtype.kind not in kinds:
        return f"holds {dtype} values, not numbers" if "U" not in kinds else f"holds {dtype} values, not text"
    if dtype.kind in "biuf" and dtype.itemsize > 8:
        return f"holds {dtype} values; graphc reads numbers of at most 8 bytes"
    return None


def read_array_header(stream: IO[bytes], kinds: str = "biuf") -> ArrayHeader:
    """Read and check an .npy header from `stream` (at the array's first byte).

    `kinds`: the dtype kinds accepted (numpy's letters: b, i, u, f; U and S for
    text). Raises ArrayProblem; reads at most the header's bytes.
    """
    start = _read_exactly(stream, 8, "its .npy header")
    if start[:6] != NPY_MAGIC:
        raise ArrayProblem("does not start with the .npy magic bytes (\\x93NUMPY)")
    version = (start[6], start[7])
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise ArrayProblem(f"is in .npy format version {version[0]}.{version[1]}, which graphc does not read")
    width = 2 if version == (1, 0) else 4
    length_bytes = _read_exactly(stream, width, "its .npy header")
    length = int.from_bytes(length_bytes, "little")
    if length > _MAX_HEADER:
        raise ArrayProblem(f"has an .npy header of {length:,} bytes; numpy never writes one over {_MAX_HEADER:,}")
    text = _read_exactly(stream, length, "its .npy header")
    if version == (3, 0):  # utf-8 rather than latin-1: only names in structured dtypes differ
        try:
            text = text.decode("utf-8").encode("latin-1")
        except UnicodeError:
            raise ArrayProblem("has an .npy header that is not readable text") from None
    try:
        reader = np.lib.format.read_array_header_1_0 if width == 2 else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = reader(io.BytesIO(length_bytes + text), max_header_size=_MAX_HEADER)
    except Exception as err:  # numpy's parser over untrusted text: ValueError, SyntaxError, tokenize's, ...
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ArrayProblem(f"has an .npy header numpy cannot read ({_clip(first, 80)})") from None
    problem = _kind_problem(dtype, kinds)
    if problem is not None:
        raise ArrayProblem(problem, "type")
    if len(shape) > limits.MAX_DIMS:
        raise ArrayProblem(f"claims {len(shape)} dimensions; graphc takes at most {limits.MAX_DIMS}", "size")
    if any(d < 0 for d in shape):
        raise ArrayProblem(f"claims the impossible shape {list(shape)}")
    header = ArrayHeader(tuple(shape), dtype, bool(fortran_order), 8 + width + length)
    if limits.too_many_elements(header.size):
        raise ArrayProblem(
            f"claims shape {list(shape)}: {header.size:,} numbers, more than graphc takes in one tensor",
            "size",
            limits.elements_hint(),
        )
    return header


def read_array_data(stream: IO[bytes], header: ArrayHeader) -> np.ndarray:
    """The array `header` describes, read from `stream` (just after the header).

    Reads exactly header.nbytes bytes into a buffer of that size: never more,
    whatever the stream holds. Raises ArrayProblem when it ends early.
    """
    if header.dtype.itemsize == 0:  # `<U0` and the like: nothing to read
        return np.zeros(header.shape, header.dtype)
    buffer = bytearray(header.nbytes)
    view = memoryview(buffer)
    done = 0
    while done < len(buffer):
        got = stream.readinto(view[done : done + _CHUNK])  # type: ignore[attr-defined]
        if not got:
            raise ArrayProblem(
                f"is truncated: its header claims {header.nbytes:,} bytes of data, the file holds {done:,}"
            )
        done += got
    array = np.frombuffer(buffer, dtype=header.dtype, count=header.size)
    if header.fortran_order:
        return array.reshape(header.shape[::-1]).transpose()
    return array.reshape(header.shape)


def _read_exactly(stream: IO[bytes], count: int, what: str) -> bytes:
    data = stream.read(count)
    if len(data) != count:
        raise ArrayProblem(f"ends before {what} does (the file is truncated)")
    return data


def load_npy(path: str | Path) -> np.ndarray:
    """One .npy file of numbers, checked header first (read_array_header).

    Raises ArrayProblem for a file that is not a readable array of numbers,
    OSError when it cannot be opened or read.
    """
    with open(path, "rb") as handle:
        head = handle.read(4)
        if head.startswith(b"PK"):
            raise ArrayProblem("holds several arrays (.npz); give one .npy array", "type")
        handle.seek(0)
        header = read_array_header(handle, "biuf")
        mode = os.fstat(handle.fileno())
        if stat.S_ISREG(mode.st_mode) and mode.st_size < header.offset + header.nbytes:
            held = max(mode.st_size - header.offset, 0)
            raise ArrayProblem(
                f"is truncated: its header claims {header.nbytes:,} bytes of data, the file holds {held:,}"
            )
        return read_array_data(handle, header)


# --- JSON ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HugeInt:
    """An integer literal too long to convert (a JSON number of thousands of
    digits); checks that want a number see something that is not one."""

    digits: int

    def __str__(self) -> str:
        return f"an integer of {self.digits:,} digits"


def _int_or_huge(text: str) -> int | HugeInt:
    digits = len(text.lstrip("-"))
    return int(text) if digits <= limits.MAX_INT_DIGITS else HugeInt(digits)


# A JSON string, escapes included; brackets inside one do not nest.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def json_depth(text: str) -> int:
    """How deep the arrays and objects of JSON `text` nest (an upper bound for
    text that is not JSON), without parsing it."""
    bare = _JSON_STRING.sub("", text).encode("utf-8", "surrogatepass")
    codes = np.frombuffer(bare, np.uint8)
    deepest = level = 0
    for start in range(0, len(codes), _CHUNK):
        chunk = codes[start : start + _CHUNK]
        steps = (chunk == ord("[")).astype(np.int32) + (chunk == ord("{")) - (chunk == ord("]")) - (chunk == ord("}"))
        if len(steps):
            running = np.cumsum(steps, dtype=np.int64) + level
            deepest = max(deepest, int(running.max()))
            level = int(running[-1])
    return deepest


class JSONProblem(ValueError):
    """JSON text that cannot be read: not JSON, or (with its depth) nested too deep."""

    def __init__(self, reason: str, depth: int | None = None):
        super().__init__(reason)
        self.depth = depth


def parse_json(text: str) -> Any:
    """json.loads within limits: nesting at most limits.MAX_JSON_DEPTH deep;
    integers of more than limits.MAX_INT_DIGITS digits become HugeInt."""
    depth = json_depth(text)
    if depth > limits.MAX_JSON_DEPTH:
        raise JSONProblem(f"nested {depth:,} deep; graphc reads JSON at most {limits.MAX_JSON_DEPTH} deep", depth)
    try:
        return json.loads(text, parse_int=_int_or_huge)
    except RecursionError:  # only if the limit was raised past what the parser's stack takes
        raise JSONProblem(f"nested {depth:,} deep, too deep to read", depth) from None
    except ValueError as err:
        raise JSONProblem(str(err)) from None


def shown_json(value: Any, width: int = 40) -> str:
    """A JSON value as a message shows it: clipped, HugeInt by its length."""
    try:
        text = json.dumps(value, default=str)
    except (ValueError, RecursionError):
        text = type(value).__name__
    return _clip(text, width)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


# --- atomic writes ------------------------------------------------------------------


def _host() -> str:
    """This machine's name as a temporary file's name carries it."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"


def _temporary_pattern(name: str) -> re.Pattern[str]:
    """Temporary files of a write to `name`: `.NAME.PID@HOST.RANDOM.tmp`."""
    return re.compile(rf"\.{re.escape(name)}\.(\d+)@([A-Za-z0-9-]*)\.[A-Za-z0-9_]+\.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process, or a pid we cannot ask about: not ours to judge
    return True


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporary files that writes to `path` by processes now dead
    (on this host) left behind; returns what was removed."""
    path = Path(path)
    pattern, host = _temporary_pattern(path.name), _host()
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        found = pattern.fullmatch(entry.name)
        if found is None or found.group(2) != host:
            continue  # another machine's write (a shared disk): its pids are not ours
        pid = int(found.group(1))
        if pid != os.getpid() and not _alive(pid):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """Open a temporary file beside `path`; on success it replaces `path`.

    Through a symlink, the file the link points to is replaced and the link
    kept. A device or a FIFO (`-o /dev/stdout`) cannot be replaced: it is
    written directly. Temporary files that dead writers left beside `path`
    are removed first.
    """
    shown = str(path)  # messages name the path as the person wrote it
    if not shown:
        raise GraphcError("cannot write: the file name is empty", code="E604")
    path = Path(path)
    directory = path.parent
    try:
        mode = os.stat(path).st_mode  # through any link
    except OSError:
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        raise GraphcError("cannot write: is a directory", where=shown, hint="give a file name", code="E602")
    if mode is not None and not stat.S_ISREG(mode):
        with open(path, "wb") as handle:
            yield handle
        return
    if path.is_symlink():
        path = path.resolve()  # a dangling link too: its target is made
    if not path.parent.is_dir():
        raise GraphcError(
            "cannot write: no such directory", where=shown, hint=f"create `{directory}` first", code="E604"
        )
    remove_stale_temporaries(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}@{_host()}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise GraphcError(f"cannot write: {err.strerror}", where=shown, code="E604") from None
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
        raise GraphcError(f"cannot write: {err.strerror or err}", where=str(path), code="E604") from None


class _Probe(Exception):
    """Aborts a trial write, so that the file is never replaced."""


def probe_write(path: str | Path, size: int = 0) -> None:
    """Check that `path` can be written with `size` bytes, before the work that
    makes them: write that many bytes (and fsync them) to a temporary file
    beside it, then remove it. A device is written to as it is (`/dev/full`
    fails, `/dev/null` takes anything); a FIFO or a socket is left alone.

    Raises GraphcError: no such directory, no permission, a full disk.
    """
    target = Path(path)
    if target.is_dir():
        raise GraphcError("is a directory", where=str(path), hint="give a file name", code="E602")
    try:
        mode: int | None = os.stat(target).st_mode
    except OSError:
        mode = None  # nothing there yet
    if mode is not None and (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return  # opening one would wait for a reader
    device = mode is not None and not stat.S_ISREG(mode)
    zeros = bytes(min(size, _CHUNK))
    try:
        with atomic_open(target) as handle:
            left = size
            while left > 0:
                left -= handle.write(zeros[: min(left, len(zeros))])
            handle.flush()
            if not device:  # a device need not sync (/dev/null cannot); a file on a full disk fails here
                os.fsync(handle.fileno())
            raise _Probe
    except _Probe:
        pass
    except OSError as err:
        reason = err.strerror or str(err)
        if err.errno in (errno.ENOSPC, errno.EDQUOT) and size > 0:
            reason += f" (a trial write of {size:,} bytes, what the file will take, failed)"
        raise GraphcError(f"cannot write: {reason}", where=str(path), code="E604") from None


# --- locks --------------------------------------------------------------------------


def lock_path(path: str | Path) -> Path:
    path = Path(path)
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def exclusive_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (a flock'ed `.NAME.lock` beside it)
    for the block: a second process asking for it meanwhile gets a
    GraphcError naming the first. The lock file is removed on release."""
    where = str(path)
    target = lock_path(path)
    fd = _acquire(target, where)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode())
    except OSError:
        pass  # the lock holds without the note; only the other process's message loses the pid
    try:
        yield
    finally:
        # Removed while still held: a process that opened the old file finds,
        # once it has the lock, that the path is no longer its file, and retries.
        with contextlib.suppress(OSError):
            os.unlink(target)
        os.close(fd)


def _acquire(target: Path, where: str) -> int:
    while True:
        try:
            fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise GraphcError(f"cannot lock: {err.strerror or err} ({target})", where=where, code="E605") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            owner = _read_owner(fd)
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise GraphcError(f"cannot lock: {err.strerror or err} ({target})", where=where, code="E605") from None
            raise GraphcError(
                f"another graphc process{owner} is writing this file",
                where=where,
                hint="wait for it to finish, or write to another file",
                code="E605",
            ) from None
        try:
            same = os.stat(target).st_ino == os.fstat(fd).st_ino
        except OSError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder removed the file as we opened it: take the new one


def _read_owner(fd: int) -> str:
    """` (pid 1234 on host)`, from the note the lock's holder wrote, or ``."""
    try:
        note = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""
    pid, at, host = note.partition("@")
    return f" (pid {pid} on {host})" if at and pid.isdigit() else ""


__all__ = [
    "ArrayHeader",
    "ArrayProblem",
    "HugeInt",
    "JSONProblem",
    "atomic_open",
    "exclusive_lock",
    "json_depth",
    "load_npy",
    "parse_json",
    "probe_write",
    "read_array_data",
    "read_array_header",
    "remove_stale_temporaries",
    "shown_json",
    "write_bytes",
    "write_text",
]
