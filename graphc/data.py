"""MNIST: reading IDX files, finding or downloading the data, loading arrays.

The four canonical MNIST files live in one directory, chosen by `mnist_dir`:

    1. the `data_dir` argument (the command line's --data-dir), else
    2. $GRAPHC_DATA/mnist, else
    3. ~/.cache/graphc/mnist

Missing files are downloaded from a list of mirrors (or the single base URL
in $GRAPHC_MNIST_MIRROR), checked against the SHA-256 of their decompressed
content, and written through graphc.fileio.atomic_open (a temporary file
beside the target, renamed into place, with the permissions open() would
give), so a failed or interrupted download never leaves a partial file where
a good one should be.

Every problem a person can cause (a missing directory, no network, a
truncated or corrupt file) becomes a GraphcError naming the file and what
is wrong with it; nothing here shows a traceback to a person.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import json
import math
import os
import sys
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from graphc import limits
from graphc.errors import GraphcError
from graphc.fileio import atomic_open

__all__ = [
    "DEFAULT_MIRRORS",
    "IDX_TYPES",
    "MNIST_COUNTS",
    "MNIST_FILES",
    "MNIST_SHA256",
    "clear_cache",
    "download_mnist",
    "load_mnist",
    "mnist_dir",
    "read_idx",
    "sha256_of_content",
    "verify_mnist",
]

# --------------------------------------------------------------------------
# IDX files

# IDX type code -> element dtype. IDX data is big-endian whatever the host.
IDX_TYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_IDX_LAYOUT_HINT = (
    "an IDX file starts with two zero bytes, a type code (0x08 unsigned byte, "
    "0x09 signed byte, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64) "
    "and the number of dimensions"
)
_GZIP_MAGIC = b"\x1f\x8b"


# The most an IDX file graphc reads may hold, unless the caller knows better:
# a header of MAX_DIMS dims and MAX_ELEMENTS numbers of the widest type.
def _default_max_bytes() -> int:
    return 4 + 4 * limits.MAX_DIMS + 8 * limits.MAX_ELEMENTS


def read_idx(path: str | os.PathLike[str], max_bytes: int | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or raw) into an array of its declared shape.

    The file is treated as gzip if its name ends in .gz or it starts with the
    gzip magic bytes. It is decompressed as a stream, and refused as soon as
    it holds more than `max_bytes` (default: what graphc's size limits
    allow; load_mnist passes each MNIST file's own size), so a gzip bomb
    costs no more than that. The header and the file length are checked
    exactly: a truncated file or trailing bytes are errors, not silently
    ignored.

    Unsigned-byte data is returned as a read-only view on the file's bytes
    (no copy); multi-byte types are converted to native byte order.
    Raises GraphcError (where=the path) on any problem.
    """
    where = str(path)
    p = Path(path)
    limit = _default_max_bytes() if max_bytes is None else max_bytes
    try:
        with open(p, "rb") as handle:
            magic = handle.read(2)
            handle.seek(0)
            if p.name.endswith(".gz") or magic == _GZIP_MAGIC:
                data = _gunzip(handle, magic, limit, where)
            else:
                size = os.fstat(handle.fileno()).st_size
                if size > limit:
                    raise GraphcError(
                        f"is {size:,} bytes, more than the {limit:,} this file can hold",
                        where=where,
                        hint="delete the file and download it again",
                        code="E607",
                    )
                data = handle.read(limit + 1)
    except FileNotFoundError:
        raise GraphcError("no such file", where=where, code="E601") from None
    except IsADirectoryError:
        raise GraphcError("is a directory, expected an IDX file", where=where, code="E602") from None
    except OSError as e:
        raise GraphcError(f"cannot read file: {e.strerror or e}", where=where, code="E603") from None
    return _parse_idx(data, where)


def _gunzip(handle: BinaryIO, magic: bytes, limit: int, where: str) -> bytes:
    """The decompressed content of a gzip file, read no further than `limit` bytes."""
    if magic != _GZIP_MAGIC:
        # Decompressing would fail anyway; say why in plain words.
        raise GraphcError(
            "not a gzip file: the name ends in .gz but the file does not start with the gzip magic bytes 1f 8b",
            where=where,
            hint="rename the file without .gz if it is a raw IDX file, or download it again",
            code="E607",
        )
    try:
        with gzip.GzipFile(fileobj=handle, mode="rb") as stream:
            data = stream.read(limit + 1)
    except EOFError:
        reason = "the compressed data ends early (the file is truncated)"
    except zlib.error as e:
        reason = str(e)
    except gzip.BadGzipFile as e:  # bad CRC, bad header, ...
        reason = str(e) or type(e).__name__
    else:
        if len(data) > limit:
            raise GraphcError(
                f"decompresses to more than {limit:,} bytes, the most this file can hold",
                where=where,
                hint="delete the file and download it again",
                code="E607",
            )
        return data
    raise GraphcError(
        f"corrupt gzip file: {reason}",
        where=where,
        hint="delete the file and download it again",
        code="E607",
    )


def _parse_idx(data: bytes, where: str) -> np.ndarray:
    size = len(data)
    if size == 0:
        raise GraphcError("not an IDX file: the file is empty", where=where, code="E608")
    if size < 4:
        raise GraphcError(
            f"not an IDX file: only {size} bytes, too short for the 4-byte magic number",
            where=where,
            code="E608",
        )
    magic = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0:
        raise GraphcError(
            f"not an IDX file: magic number 0x{magic:08x}, expected 0x0000080N",
            where=where,
            hint=_IDX_LAYOUT_HINT,
            code="E608",
        )
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        raise GraphcError(
            f"not an IDX file: unknown type code 0x{code:02x} in magic number 0x{magic:08x}",
            where=where,
            hint=_IDX_LAYOUT_HINT,
            code="E608",
        )
    if ndim == 0:
        raise GraphcError(
            f"not an IDX file: magic number 0x{magic:08x} declares 0 dimensions",
            where=where,
            hint=_IDX_LAYOUT_HINT,
            code="E608",
        )
    if ndim > limits.MAX_DIMS:
        raise GraphcError(
            f"not an IDX file graphc reads: magic number 0x{magic:08x} declares {ndim} dimensions, "
            f"more than {limits.MAX_DIMS}",
            where=where,
            code="E608",
        )
    header = 4 + 4 * ndim
    if size < header:
        raise GraphcError(
            f"truncated IDX file: header declares {ndim} dimensions ({header} bytes of header), found {size} bytes",
            where=where,
            code="E608",
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[code]
    # Python ints: the product of four u32 dimensions can overflow int64.
    count = math.prod(dims)
    expected = count * dtype.itemsize
    found = size - header
    if found != expected:
        what = "truncated IDX file" if found < expected else (f"IDX file has {found - expected} trailing bytes")
        raise GraphcError(
            f"{what}: header says {_describe(dims)} ({expected} bytes of data), found {found} bytes",
            where=where,
            hint="delete the file and download it again",
            code="E608",
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)
    if dtype.itemsize > 1:
        # Native byte order so later arithmetic is not slowed by byte swaps.
        arr = arr.astype(dtype.newbyteorder("="))
    return arr


def _describe(dims: tuple[int, ...]) -> str:
    """Dimensions in words, for error messages: '60000 images of 28x28'."""
    if len(dims) == 1:
        return f"{dims[0]} entries"
    rest = "x".join(str(d) for d in dims[1:])
    noun = "rows" if len(dims) == 2 else "images"
    return f"{dims[0]} {noun} of {rest}"


def sha256_of_content(path: str | os.PathLike[str], max_bytes: int | None = None) -> str:
    """SHA-256 (hex) of a file's content, decompressed first if it is gzip.

    Hashing the decompressed bytes makes the check independent of how a
    mirror chose to compress (gzip headers carry names and timestamps).
    Content past `max_bytes` (default: the size of the MNIST file of that
    name, else what graphc's limits allow) is refused, not hashed.
    """
    where = str(path)
    limit = max_bytes if max_bytes is not None else _max_bytes_of(Path(path).name)
    try:
        with open(path, "rb") as f:
            return _content_digest(f, where, limit)
    except FileNotFoundError:
        raise GraphcError("no such file", where=where, code="E601") from None
    except OSError as e:
        raise GraphcError(f"cannot read file: {e.strerror or e}", where=where, code="E603") from None


def _content_digest(f: BinaryIO, where: str, limit: int) -> str:
    """SHA-256 of an open file's content, decompressed first if it is gzip;
    a GraphcError as soon as the content passes `limit` bytes."""
    h = hashlib.sha256()
    is_gzip = f.read(2) == _GZIP_MAGIC
    f.seek(0)
    stream: Any = gzip.GzipFile(fileobj=f, mode="rb") if is_gzip else f
    seen = 0
    try:
        while chunk := stream.read(1 << 20):
            seen += len(chunk)
            if seen > limit:
                raise GraphcError(
                    f"holds more than {limit:,} bytes, the most this file can hold",
                    where=where,
                    hint="delete the file and download it again",
                    code="E607",
                )
            h.update(chunk)
    except EOFError:
        raise GraphcError(
            "corrupt gzip file: the compressed data ends early (the file is truncated)",
            where=where,
            code="E607",
        ) from None
    except (zlib.error, gzip.BadGzipFile) as e:
        raise GraphcError(f"corrupt gzip file: {e}", where=where, code="E607") from None
    return h.hexdigest()


# --------------------------------------------------------------------------
# Where MNIST lives

# Role -> file name. Roles key the structure checks; names are on disk.
MNIST_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

# SHA-256 of the DECOMPRESSED content of each file.
MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

# Number of examples in each split; checked on every load.
MNIST_COUNTS: dict[str, int] = {"train": 60000, "test": 10000}

DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

_ENV_DATA = "GRAPHC_DATA"
_ENV_MIRROR = "GRAPHC_MNIST_MIRROR"
_IMAGE_SHAPE = (28, 28)
PIXEL_MAX = 255  # normalized images are the bytes divided by this
_NUM_CLASSES = 10


def mnist_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The MNIST directory: `data_dir`, else $GRAPHC_DATA/mnist, else ~/.cache/graphc/mnist."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    root = os.environ.get(_ENV_DATA)
    if root:  # an empty variable means unset, as shells often leave it
        return Path(root).expanduser() / "mnist"
    return Path.home() / ".cache" / "graphc" / "mnist"


def _fix_hint(directory: Path) -> str:
    names = ", ".join(MNIST_FILES.values())
    return (
        f"put the four MNIST files ({names}) in {directory}, "
        f"or pass --data-dir DIR to use a directory that holds them, "
        f"or set {_ENV_DATA}=DIR to use DIR/mnist"
    )


def _mirrors() -> list[str]:
    env = os.environ.get(_ENV_MIRROR, "").strip()
    return env.split() if env else list(DEFAULT_MIRRORS)


# --------------------------------------------------------------------------
# Downloading


class _MirrorFailed(Exception):
    """One mirror could not supply a good copy; the next one is tried."""


class _WriteFailed(Exception):
    """The local disk refused the data; no other mirror can fix that. Its text is why."""


def download_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    checksums: Mapping[str, str] | None = None,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Download whichever of the four MNIST files are missing; return the directory.

    `mirrors` are base URLs tried in order (default: $GRAPHC_MNIST_MIRROR,
    whitespace-separated, else DEFAULT_MIRRORS). `checksums` maps each file
    name to the SHA-256 of its decompressed content (default: MNIST_SHA256;
    tests pass their own for tiny files). Existing files are never touched.
    Each file is downloaded into memory (the largest is 10 MB), verified, then
    written atomically (fileio.atomic_open): nothing is left on any failure.
    `progress` shows a tqdm bar on stderr, only when stderr is a terminal.
    """
    directory = mnist_dir(data_dir)
    bases = list(mirrors) if mirrors is not None else _mirrors()
    table = MNIST_SHA256 if checksums is None else checksums
    missing = [n for n in MNIST_FILES.values() if not (directory / n).exists()]
    if not missing:
        return directory
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GraphcError(
            f"cannot create the MNIST data directory: {e.strerror or e}",
            where=str(directory),
            hint=_fix_hint(directory),
            code="E604",
        ) from None
    for name in missing:
        _download_one(directory, name, bases, table[name], progress, timeout)
    return directory


def _download_one(
    directory: Path,
    name: str,
    bases: Sequence[str],
    sha256: str,
    progress: bool,
    timeout: float,
) -> None:
    failures: list[str] = []
    for base in bases:
        url = base if base.endswith("/") else base + "/"
        url += name
        try:
            _fetch_verified(url, directory, name, sha256, progress, timeout)
            return
        except _MirrorFailed as e:
            failures.append(f"  {url}: {e}")
        except _WriteFailed as e:
            raise GraphcError(
                f"cannot write {name} into the MNIST data directory: {e}",
                where=str(directory),
                hint=_fix_hint(directory),
                code="E604",
            ) from None
    tried = "\n".join(failures) if failures else "  (no mirrors configured)"
    raise GraphcError(
        f"MNIST file {name} is missing and could not be downloaded:\n{tried}",
        where=str(directory),
        hint=_fix_hint(directory),
        code="E609",
    )


def _fetch_verified(url: str, directory: Path, name: str, sha256: str, progress: bool, timeout: float) -> None:
    target = directory / name
    downloaded = io.BytesIO()
    limit = _max_bytes_of(name)
    # A gzip of `limit` bytes is at most a little longer than they are.
    _fetch(url, downloaded, name, progress, timeout, limit + limit // 100 + 4096)
    downloaded.seek(0)
    # Checked before anything is written: a bad copy never reaches the disk.
    try:
        got = _content_digest(downloaded, url, limit)
    except GraphcError as e:
        raise _MirrorFailed(f"downloaded data is not usable: {e.message}") from None
    if got != sha256.lower():
        raise _MirrorFailed(
            f"checksum mismatch: SHA-256 of the decompressed content is {got}, expected {sha256.lower()}"
        )
    if target.exists():
        return  # someone else put a file there meanwhile: keep theirs
    try:
        with atomic_open(target) as out:
            out.write(downloaded.getbuffer())
    except GraphcError as e:
        raise _WriteFailed(e.message.removeprefix("cannot write: ")) from None
    except OSError as e:
        raise _WriteFailed(e.strerror or str(e)) from None


def _fetch(url: str, out: BinaryIO, name: str, progress: bool, timeout: float, most: int) -> None:
    """Stream `url` into `out`, at most `most` bytes; network problems become _MirrorFailed."""
    # Only downloads need these; `import graphc.data` (at every start of the
    # command line, through graphc.train) stays light.
    import http.client
    import urllib.error
    import urllib.request

    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "graphc"})
    show = progress and is_tty(sys.stderr)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            with tqdm(
                total=total,
                desc=name,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=sys.stderr,
                disable=not show,
                leave=False,
            ) as bar:
                while chunk := response.read(1 << 16):
                    received += len(chunk)
                    if received > most:
                        raise _MirrorFailed(f"sent more than {most:,} bytes, more than the file can take")
                    out.write(chunk)
                    bar.update(len(chunk))
            if total is not None and received != total:
                raise _MirrorFailed(f"connection closed after {received} of {total} bytes")
    except urllib.error.HTTPError as e:
        raise _MirrorFailed(f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, TimeoutError):
            raise _MirrorFailed(f"timed out after {timeout:g} s") from None
        raise _MirrorFailed(str(reason)) from None
    except TimeoutError:
        raise _MirrorFailed(f"timed out after {timeout:g} s") from None
    except http.client.HTTPException as e:
        raise _MirrorFailed(f"{type(e).__name__}: {e}") from None
    except OSError as e:  # reset connections, TLS errors, ...
        raise _MirrorFailed(str(e) or type(e).__name__) from None


def is_tty(stream: Any) -> bool:
    """Whether `stream` is a terminal (where progress bars go)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def verify_mnist(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Check the four files against MNIST_SHA256 (slow: decompresses everything)."""
    directory = mnist_dir(data_dir)
    for role, name in MNIST_FILES.items():
        path = directory / name
        got = sha256_of_content(path, mnist_bytes(role))
        if got != MNIST_SHA256[name]:
            raise GraphcError(
                f"checksum mismatch: SHA-256 of the decompressed content is {got}, expected {MNIST_SHA256[name]}",
                where=str(path),
                hint="delete the file and run again to download a fresh copy",
                code="E610",
            )
    return directory


# --------------------------------------------------------------------------
# Loading

Split = tuple[np.ndarray, np.ndarray]

# Loads are cached per process: decompressing the training images costs
# ~0.2 s, and tests and benchmarks load many times. Keys include each file's
# size and mtime so a replaced file is read again.
_raw_cache: dict[tuple[Any, ...], tuple[Split, Split]] = {}
_cache: dict[tuple[Any, ...], tuple[Split, Split]] = {}


def clear_cache() -> None:
    """Forget every cached load (frees the memory)."""
    _raw_cache.clear()
    _cache.clear()


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    normalize: bool = True,
    flatten: bool = True,
    one_hot: bool = False,
    dtype: Any = np.float32,
    download: bool = True,
    progress: bool = True,
) -> tuple[Split, Split]:
    """Load MNIST as ((x_train, t_train), (x_test, t_test)).

    x: `dtype`, scaled to [0, 1] if `normalize` (else 0..255), shaped
    (N, 784) if `flatten` else (N, 1, 28, 28). t: (N, 10) one-hot in `dtype`
    if `one_hot`, else int64 class indices. N is 60000 for train, 10000 test.

    Missing files are downloaded (unless `download` is False). The structure
    of every file is checked on every load; checksums only on download (see
    `verify_mnist`). Results are cached per process and the SAME arrays are
    returned by repeated calls, so they are READ-ONLY (writeable=False);
    copy them (np.array(x)) to modify.
    """
    directory = mnist_dir(data_dir)
    np_dtype = np.dtype(dtype)
    if np_dtype.kind not in "fiu":
        raise GraphcError(f"cannot load MNIST as dtype {np_dtype}: expected a numeric dtype", code="E503")
    if normalize and np_dtype.kind != "f":
        raise GraphcError(
            f"cannot normalize MNIST to [0, 1] in dtype {np_dtype}",
            hint="use a floating dtype such as float32, or do not normalize",
            code="E503",
        )

    paths = {role: directory / name for role, name in MNIST_FILES.items()}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        if not download:
            raise GraphcError(
                "MNIST files missing: " + ", ".join(missing),
                where=str(directory),
                hint=_fix_hint(directory),
                code="E609",
            )
        download_mnist(directory, progress=progress)

    stamp = _stamp(directory, paths)
    key = (stamp, normalize, flatten, one_hot, np_dtype.str)
    if key in _cache:
        return _cache[key]
    raw = _raw_cache.get(stamp)
    if raw is None:
        raw = _cached_splits(directory, paths)
        clear_cache()  # keep one directory's data at a time: bounds memory
        _raw_cache[stamp] = raw
    result = tuple((_images(x, normalize, flatten, np_dtype), _labels(t, one_hot, np_dtype)) for x, t in raw)
    _cache[key] = result  # type: ignore[assignment]
    return result  # type: ignore[return-value]


def _stamp(directory: Path, paths: Mapping[str, Path]) -> tuple[Any, ...]:
    stats = []
    for p in paths.values():
        try:
            st = p.stat()
        except OSError as e:
            raise GraphcError(f"cannot read file: {e.strerror or e}", where=str(p), code="E603") from None
        stats.append((st.st_size, st.st_mtime_ns, st.st_ino))
    return (str(directory.resolve()), tuple(stats))


def _max_bytes_of(name: str) -> int:
    """The most a file called `name` may hold: an MNIST file's own size, else the limits'."""
    roles = {file: role for role, file in MNIST_FILES.items()}
    return mnist_bytes(roles[name]) if name in roles else _default_max_bytes()


def mnist_bytes(role: str) -> int:
    """The most an MNIST file's decompressed content may hold, by role: its data,
    and a header of any IDX length (so that a file of the wrong layout is still
    read far enough to say what is wrong with it)."""
    count = MNIST_COUNTS[role.split("_")[0]]
    data = count * math.prod(_IMAGE_SHAPE) if role.endswith("images") else count
    return 4 + 4 * limits.MAX_DIMS + data


def _read_splits(paths: Mapping[str, Path]) -> tuple[Split, Split]:
    splits = []
    for split in ("train", "test"):
        images_path, labels_path = paths[f"{split}_images"], paths[f"{split}_labels"]
        # The known sizes as hard limits: a gzip bomb is refused after that many bytes.
        images = read_idx(images_path, mnist_bytes(f"{split}_images"))
        labels = read_idx(labels_path, mnist_bytes(f"{split}_labels"))
        _check_split(split, images, images_path, labels, labels_path)
        splits.append((images, labels))
    return splits[0], splits[1]


# --------------------------------------------------------------------------
# The parsed arrays, cached between processes
#
# Decompressing and parsing the four files costs about half a second a
# process; their bytes, saved as .npy and memory-mapped, load in
# milliseconds. They go in the cache directory (graphc.cache), never beside
# the data, which may be shared or read-only, under a name made from the data
# directory's path. sources.json records each source file's size, mtime and
# inode, and its SHA-256: a file whose stat differs is hashed again, and the
# arrays are used only if its bytes are the ones they were parsed from.
# Anything wrong with the cache (missing, stale, corrupt, unwritable) means
# parsing the files as before, never an error.

_CACHE_VERSION = 1


def _cache_folder(directory: Path) -> Path | None:
    from graphc.cache import cache_folder

    return cache_folder("mnist-" + hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16])


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stat_of(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def _cached_splits(directory: Path, paths: Mapping[str, Path]) -> tuple[Split, Split]:
    """The four files' arrays: from the cache where it holds these files' bytes,
    else parsed from the files (and cached for the next process)."""
    folder = _cache_folder(directory)
    if folder is None:
        return _read_splits(paths)
    with contextlib.suppress(Exception):  # noqa: BLE001 -- any fault in the cache: parse, as with no cache
        cached = _load_cached(folder, paths)
        if cached is not None:
            return cached
    splits = _read_splits(paths)
    _save_cached(folder, paths, splits)
    return splits


def _load_cached(folder: Path, paths: Mapping[str, Path]) -> tuple[Split, Split] | None:
    record = json.loads((folder / "sources.json").read_text(encoding="utf-8"))
    if record.get("version") != _CACHE_VERSION:
        return None
    sources = record["sources"]
    touched = False
    for role, path in paths.items():
        known, now = sources[role], _stat_of(path)
        if {k: known[k] for k in now} != now:
            if _file_sha256(path) != known["sha256"]:
                return None  # another file: the arrays are stale
            known.update(now)  # the same bytes, touched or copied: trust it again without hashing
            touched = True
    arrays = {role: np.load(folder / f"{role}-{record['key']}.npy", mmap_mode="r").view(np.ndarray) for role in paths}
    splits = []
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        _check_split(split, images, paths[f"{split}_images"], labels, paths[f"{split}_labels"])
        splits.append((images, labels))
    if touched:
        _write_record(folder, record)
    return splits[0], splits[1]


def _save_cached(folder: Path, paths: Mapping[str, Path], splits: tuple[Split, Split]) -> None:
    """The arrays first, then the record that vouches for them, each written atomically;
    best effort: a cache that cannot be written is not an error."""
    from graphc.cache import store

    try:
        sources = {role: {**_stat_of(path), "sha256": _file_sha256(path)} for role, path in paths.items()}
    except OSError:
        return
    key = hashlib.sha256(json.dumps(sources, sort_keys=True).encode()).hexdigest()[:16]
    (train_images, train_labels), (test_images, test_labels) = splits
    arrays = {"train_images": train_images, "train_labels": train_labels}
    arrays |= {"test_images": test_images, "test_labels": test_labels}
    for role, array in arrays.items():
        if not store(folder / f"{role}-{key}.npy", functools.partial(np.save, arr=array)):
            return
    _write_record(folder, {"version": _CACHE_VERSION, "key": key, "sources": sources})
    for old in folder.glob("*.npy"):  # arrays of files no longer there
        if not old.name.endswith(f"-{key}.npy"):
            with contextlib.suppress(OSError):
                old.unlink()


def _write_record(folder: Path, record: dict[str, Any]) -> None:
    from graphc.cache import store

    store(folder / "sources.json", lambda handle: handle.write(json.dumps(record, indent=1).encode()))


def _check_split(split: str, images: np.ndarray, images_path: Path, labels: np.ndarray, labels_path: Path) -> None:
    hint = "this is not the canonical MNIST file; delete it to download a fresh copy"
    for arr, path in ((images, images_path), (labels, labels_path)):
        if arr.dtype != np.uint8:
            raise GraphcError(
                f"expected unsigned-byte data (IDX type 0x08), found {arr.dtype}",
                where=str(path),
                hint=hint,
                code="E611",
            )
    if images.ndim != 3 or images.shape[1:] != _IMAGE_SHAPE:
        shape = "x".join(str(d) for d in images.shape)
        raise GraphcError(
            f"expected images of shape N x 28 x 28, found {shape}",
            where=str(images_path),
            hint=hint,
            code="E611",
        )
    if labels.ndim != 1:
        shape = "x".join(str(d) for d in labels.shape)
        raise GraphcError(
            f"expected a 1-dimensional list of labels, found shape {shape}",
            where=str(labels_path),
            hint=hint,
            code="E611",
        )
    want = MNIST_COUNTS[split]
    if len(images) != want:
        raise GraphcError(
            f"expected {want} {split} images, found {len(images)}",
            where=str(images_path),
            hint=hint,
            code="E611",
        )
    if len(labels) != len(images):
        raise GraphcError(
            f"{len(labels)} labels for {len(images)} images in {images_path.name}",
            where=str(labels_path),
            hint=hint,
            code="E611",
        )
    if len(labels) and int(labels.max()) >= _NUM_CLASSES:
        bad = int(np.argmax(labels >= _NUM_CLASSES))
        raise GraphcError(
            f"label {int(labels[bad])} at index {bad} is out of range 0..9",
            where=str(labels_path),
            hint=hint,
            code="E611",
        )


def _images(raw: np.ndarray, normalize: bool, flatten: bool, dtype: np.dtype[Any]) -> np.ndarray:
    x = raw.astype(dtype, copy=normalize)  # the bytes themselves, when they are asked for
    if normalize:
        x /= dtype.type(PIXEL_MAX)  # in place: no second full-size temporary
    x = x.reshape((len(x), -1) if flatten else (len(x), 1, *_IMAGE_SHAPE))
    x.setflags(write=False)
    return x


def _labels(raw: np.ndarray, one_hot: bool, dtype: np.dtype[Any]) -> np.ndarray:
    if one_hot:
        t = np.zeros((len(raw), _NUM_CLASSES), dtype=dtype)
        t[np.arange(len(raw)), raw] = 1
    else:
        t = raw.astype(np.int64)
    t.setflags(write=False)
    return t
