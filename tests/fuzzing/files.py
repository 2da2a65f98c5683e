"""The other things a person hands graphc: `--set` values, `.npy` inputs, `.npz` weights, MNIST files.

Each strategy draws the bytes (or the text) of one input, near what graphc expects: a value of
nearly the right shape, an .npy header that claims 10^12 rows, a checkpoint whose `meta` JSON has
one field changed to something absurd, an IDX file whose header lies about its size.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from .graphs import HUGE_INT

# --- --set values ----------------------------------------------------------------------

ODD_VALUES = (
    "null", "true", "false", '"3"', "[]", "[[]]", "[1, [2]]", "[[1, 2], [3]]", "1e400", "-1e400", HUGE_INT,
    "-" + HUGE_INT, "[" + HUGE_INT + "]", "nan", "NaN", "-inf", "Infinity", "-Infinity", "0x10", "1_000", "",
    " ", "=", "1=2", "[1,2", "{}", '{"a": 1}', "é", "\x00", "1\n2", "[1, 2, 3]", "1e-400", "-0", "[true]",
    "[null, 1]", '["1"]', "[" * 100_000 + "]" * 100_000, "[" * 50 + "1" + "]" * 50, "[" * 33 + "1" + "]" * 33,
    "1" * 400, "18446744073709551616", "-9223372036854775809", "9223372036854775807", "[1e308, 1e308]",
    "[[0, 1], [1, 0]]", "[0, 1]", "[-1, 0]", "[10, 0]", "[0.5, 0.5]", "[[0.5, 0.5], [0.5, 0.5]]", "2", "1.5",
)  # fmt: skip


def json_numbers() -> st.SearchStrategy:
    return st.one_of(
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from([0, 1, -1, 0.5, 2, 10, 1e-300]),
    )


def json_values() -> st.SearchStrategy:
    """Nested lists of numbers, mostly rectangular, sometimes not, sometimes with other JSON."""
    leaves = st.one_of(json_numbers(), st.sampled_from([None, True, "x"]))
    rectangular = st.integers(0, 3).flatmap(
        lambda rank: st.lists(st.integers(1, 4), min_size=rank, max_size=rank).flatmap(
            lambda shape: st.lists(json_numbers(), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))).map(
                lambda flat: np.array(flat, dtype=object).reshape(shape).tolist()
            )
        )
    )
    ragged = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4), max_leaves=12)
    return st.one_of(rectangular, rectangular, ragged)


@st.composite
def set_values(draw) -> str:
    """The text after `--set NAME=`."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.sampled_from(ODD_VALUES))
    if kind == 1:
        return draw(st.text(max_size=20))
    return json.dumps(draw(json_values()))


# --- .npy files --------------------------------------------------------------------------

DESCRS = (
    "<f8", "<f4", "<f2", ">f8", "<i8", "<i4", "|u1", "|i1", "<u8", "|b1", "<c16", "<U3", "|S3", "|V8", "|O",
    "<M8[s]", "<m8[D]", "f8", "x", "", "<f16", "[('a', '<f8')]", "<f8 ", "|V0",
)  # fmt: skip
HUGE_SHAPES = (
    (10**12,), (10**12, 784), (3, 10**17), (2**63 - 1,), (2**63,), (-1, 784), (0, 784), (0,), (2**31, 2**31),
    (1,) * 33, (1,) * 65, (3, 784), (3, 10), (3,), (), (4, 784), (784,), (1, 3, 784),
)  # fmt: skip


def npy_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


def _header(descr: str, fortran: str, shape: str, extra: str = "") -> bytes:
    text = "{'descr': " + descr + ", 'fortran_order': " + fortran + ", 'shape': " + shape + extra + ", }"
    return text.encode("latin-1", "replace")


@st.composite
def npy_files(draw, shape_hint: tuple[int, ...] = (3,)) -> bytes:
    """An .npy file: a real array (of the wanted shape or not), or a header that lies."""
    kind = draw(st.integers(0, 4))
    if kind == 0:  # a real array of some dtype and shape
        shape = draw(st.sampled_from([shape_hint, shape_hint[1:], (0,) + shape_hint[1:], (1,) + shape_hint, ()]))
        dtype = draw(st.sampled_from(["f8", "f4", "f2", "i8", "i4", "u1", "b1", "c16", "U3", "S2", "M8[s]", "V4"]))
        seed = draw(st.integers(0, 2**16))
        values = np.random.default_rng(seed).integers(-2, 12, size=shape)
        if draw(st.integers(0, 5)) == 0 and dtype.startswith("f") and values.size:
            values = values.astype(dtype)
            with np.errstate(over="ignore"):  # 1e300 is inf in f2 and f4
                values.flat[0] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e300]))
        try:
            return npy_bytes(np.asarray(values).astype(dtype))
        except (ValueError, TypeError, OverflowError):
            return npy_bytes(np.asarray(values))
    # A header written by hand: any descr, any shape, body bytes of any length.
    descr = repr(draw(st.sampled_from(DESCRS)))
    if draw(st.integers(0, 9)) == 0:
        descr = draw(st.sampled_from(["1", "None", "{'x': 1}", "'<f8'*2", "__import__('os')"]))
    fortran = draw(st.sampled_from(["False", "True", "0", "'yes'"]))
    shape = repr(draw(st.sampled_from(HUGE_SHAPES)))
    if draw(st.integers(0, 7)) == 0:
        shape = draw(st.sampled_from(["(3, -2)", "(3.0,)", "('3',)", "3", "[3]", "None", "(" * 5000 + ")" * 5000]))
    extra = draw(st.sampled_from(["", "", ", 'x': 1"]))
    header = _header(descr, fortran, shape, extra)
    if kind == 4 and draw(st.booleans()):
        header = draw(st.binary(max_size=60))
    version = draw(st.sampled_from([b"\x01\x00", b"\x01\x00", b"\x02\x00", b"\x03\x00", b"\x09\x09", b"\x00\x00"]))
    total = 10 + len(header) + 1
    pad = (64 - total % 64) % 64 if draw(st.integers(0, 5)) else draw(st.integers(0, 3))
    header = header + b" " * pad + b"\n"
    length = len(header) if draw(st.integers(0, 7)) else draw(st.integers(0, 70000))
    size_field = length.to_bytes(4 if version[0] >= 2 else 2, "little", signed=False) if length < 65536 else b"\xff\xff"
    body = draw(st.binary(max_size=200)) if draw(st.booleans()) else bytes(draw(st.sampled_from([0, 8, 24, 80, 6272])))
    magic = b"\x93NUMPY" if draw(st.integers(0, 15)) else draw(st.sampled_from([b"\x93NUMPX", b"", b"PK\x03\x04"]))
    return magic + version + size_field + header + body


# --- .npz weights ------------------------------------------------------------------------

ODD_JSON: tuple[Any, ...] = (
    None, True, False, -1, 0, 1, 10**12, 2**63, -(2**63) - 1, 2**128 + 1, 1.5, -0.0, float("nan"), float("inf"),
    "", "x" * 10_000, [], {}, [1], {"a": 1}, "float16", "sgd", "adam", "PCG64", "MT19937",
)  # fmt: skip


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def _paths(value, prefix=()):
    """Every key path into a JSON value: ("rng", "state", "inc"), ("history", 0, "loss"), ..."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value[:3]):
            yield from _paths(item, prefix + (i,))


def _set_path(value, path, new):
    if not path:
        return new
    head, *rest = path
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[head] = _set_path(value[head], rest, new)
    return copy


@dataclass(frozen=True, repr=False)
class Checkpoint:
    """A checkpoint's entries: array name -> .npy bytes, meta as parsed JSON."""

    entries: dict[str, bytes]
    meta: dict

    @functools.cached_property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: np.load(io.BytesIO(data), allow_pickle=False).shape for name, data in self.entries.items()}

    def __repr__(self) -> str:  # Hypothesis shows its strategies' arguments
        return f"Checkpoint({sorted(self.entries)})"

    @classmethod
    def read(cls, data: bytes) -> Checkpoint:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            entries = {name.removesuffix(".npy"): z.read(name) for name in z.namelist()}
        meta = json.loads(str(np.load(io.BytesIO(entries.pop("meta")), allow_pickle=False)))
        return cls(entries, meta)


def zip_entries(entries: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as z:
        for name, data in entries.items():
            z.writestr(name + ".npy" if not name.endswith("/") else name, data)
    return out.getvalue()


@st.composite
def npz_files(draw, checkpoint: Checkpoint) -> bytes:
    """The checkpoint with one to three things changed: a meta field, the meta text, an array,
    the set of entries; stored or deflated; sometimes a byte flipped in the zip itself."""
    entries = dict(checkpoint.entries)
    meta_text = json.dumps(checkpoint.meta)
    meta = checkpoint.meta
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.integers(0, 5))
        if kind <= 1:  # one meta field to an odd value
            path = draw(st.sampled_from(list(_paths(meta))[1:]))
            meta = _set_path(meta, path, draw(st.sampled_from(ODD_JSON)))
            meta_text = json.dumps(meta)
        elif kind == 2:  # the meta text itself
            meta_text = draw(
                st.sampled_from(
                    [deep_json(100_000), deep_json(60), '{"format": "graphc-checkpoint", "version": ' + HUGE_INT + "}",
                     meta_text.replace('"iteration": ', '"iteration": ' + HUGE_INT[:4400] + "0"), "not json", "",
                     meta_text[: len(meta_text) // 2], meta_text.replace('"version": 1', '"version": 99'),
                     '{"format": "graphc-checkpoint"}', "[" + meta_text + "]",
                     meta_text.replace('"batch": 100', '"batch": 1000000000000'),
                     meta_text.replace('"structure_hash": "', '"structure_hash": "0')]
                )
            )  # fmt: skip
        elif kind == 3:  # an array replaced
            name = draw(st.sampled_from(sorted(entries)))
            entries[name] = draw(npy_files(shape_hint=checkpoint.shapes.get(name, (3,))))
        elif kind == 4:  # entries removed, added or renamed
            name = draw(st.sampled_from(sorted(entries)))
            change = draw(st.integers(0, 2))
            data = entries.pop(name)
            if change == 1:
                entries[
                    draw(st.sampled_from(["params/W9", "params/", "optimizer/x", "other", "params/b1/x", "W1"]))
                ] = data
            elif change == 2:
                entries[name] = data
                entries["params/W1" if name != "params/W1" else "params/b1"] = data
        else:  # meta as something other than one string
            entries["meta"] = npy_bytes(draw(st.sampled_from([np.zeros(3), np.array(["a", "b"]), np.array(b"{}")])))
    if "meta" not in entries:
        entries["meta"] = npy_bytes(np.array(meta_text))
    data = zip_entries(entries, draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])))
    if draw(st.integers(0, 5)) == 0:
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([data[i] ^ (1 << draw(st.integers(0, 7)))]) + data[i + 1 :]
    if draw(st.integers(0, 15)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return data


# --- MNIST IDX files -----------------------------------------------------------------------

MNIST_NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def idx_header(type_code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, type_code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def fake_mnist() -> dict[str, bytes]:
    """Raw IDX contents of a MNIST-shaped dataset: 60,000 + 10,000 blank-ish images, labels 0-9."""
    contents = {}
    for split, count in (("train", 60_000), ("test", 10_000)):
        images = np.zeros((count, 28, 28), np.uint8)
        images[:, 14, 14] = np.arange(count) % 256  # something to tell the images apart
        contents[f"{split}_images"] = idx_header(0x08, (count, 28, 28)) + images.tobytes()
        contents[f"{split}_labels"] = idx_header(0x08, (count,)) + (np.arange(count) % 10).astype(np.uint8).tobytes()
    return contents


@dataclass(frozen=True)
class MnistCase:
    """One MNIST file replaced: which, and its new bytes (as written, gzipped or not)."""

    role: str
    data: bytes | None  # None: the file is missing
    description: str


class Files(dict):
    """File contents by role, shown briefly (Hypothesis shows its strategies' arguments)."""

    def __repr__(self) -> str:
        return f"Files({sorted(self)})"


@st.composite
def mnist_files(draw, raw: Files, gzipped: Files) -> MnistCase:
    """One of the four files mutated: its header, its length, its labels, its gzip stream."""
    role = draw(st.sampled_from(sorted(raw)))
    content = raw[role]
    header_size = 16 if "images" in role else 8
    kind = draw(st.integers(0, 7))
    if kind == 0:  # the header's type code and dims
        dims = list(np.frombuffer(content[4:header_size], ">u4"))
        i = draw(st.integers(0, len(dims) - 1))
        dims[i] = draw(st.sampled_from([0, 1, 2**31 - 1, 2**32 - 1, 10**9, 59_999, 60_001, 27, 29]))
        type_code = draw(st.sampled_from([0x08, 0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0xFF]))
        ndim = len(dims) if draw(st.integers(0, 3)) else draw(st.sampled_from([0, 2, 4, 255]))
        head = bytes([0, 0, type_code, ndim]) + b"".join(int(d).to_bytes(4, "big") for d in dims)
        # Two gzip members, the header's and the (unchanged, compressed once) body's: one stream to a reader.
        body = _gzip(role, "body", lambda: content[header_size:])
        return MnistCase(role, gzip.compress(head) + body, f"header {head.hex()}")
    elif kind == 1:  # cut short or extended
        cut = draw(st.sampled_from([0, 1, 3, header_size - 1, header_size, len(content) // 2, len(content) - 1]))
        new, what = (content[:cut], f"cut at {cut}") if draw(st.booleans()) else (content + b"\x00" * 7, "7 bytes more")
    elif kind == 2 and "labels" in role:  # labels out of range
        at = draw(st.integers(header_size, len(content) - 1))
        label = draw(st.sampled_from([10, 11, 255]))
        new, what = content[:at] + bytes([label]) + content[at + 1 :], f"label {label} at {at}"
    elif kind == 3:  # the gzip stream damaged
        data = gzipped[role]
        at = draw(st.integers(0, len(data) - 1))
        flipped = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
        return MnistCase(role, flipped, f"gzip byte {at} flipped")
    elif kind == 4:  # not gzipped at all, or something else entirely
        other = draw(st.sampled_from([content[:64], b"", b"\x1f\x8b", b"PK\x03\x04", b"\x1f\x8b" + b"\x00" * 30]))
        return MnistCase(role, other, f"raw {other[:8]!r}...")
    elif kind == 5:  # missing
        return MnistCase(role, None, "missing")
    elif kind == 6:  # a gzip bomb: a small file that inflates far past what the header says
        bomb = gzipped[role] + _gzip("", "bomb", lambda: bytes(64 * 2**20))
        return MnistCase(role, bomb, "64 MiB of zeros after the data")
    else:  # another of the four files in its place
        other = draw(st.sampled_from(sorted(set(raw) - {role})))
        return MnistCase(role, gzipped[other], f"holds {other}")
    return MnistCase(role, _gzip(role, what, lambda: new), what)


_GZIPPED: dict[tuple[str, str], bytes] = {}


def _gzip(role: str, what: str, content) -> bytes:
    """gzip of content(), made once per (role, what): the train images take a while to compress."""
    if (role, what) not in _GZIPPED:
        if len(_GZIPPED) > 100:  # the long mode draws many; the common ones come back soon enough
            _GZIPPED.clear()
        _GZIPPED[(role, what)] = gzip.compress(content(), compresslevel=1)
    return _GZIPPED[(role, what)]
