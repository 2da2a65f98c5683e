"""Byte-level mutations: what a crash, a bad copy-paste, an editor or a fuzzer does to a file.

`mutated(seeds)` draws one of the seed files and stacks one to five mutations on its bytes: bit
flips, interesting bytes and tokens inserted, ranges deleted, duplicated, repeated or swapped,
numbers replaced by odd ones, another seed spliced in, the end cut off. The result may well
not be UTF-8. Hypothesis draws every position, so a failure shrinks to few, small mutations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hypothesis import strategies as st

from .graphs import ODD_CHARACTERS, ODD_NUMBERS

MAX_SIZE = 300_000  # bytes a mutated file may grow to

INTERESTING_BYTES = b'\x00\xff\x80\xc3\xe2\xf0\x0a\x0d\x09\x7f"#{}[](),=->:.+_0123456789eN '
INTERESTING_TOKENS = (
    tuple(
        t.encode("utf-8")
        for t in (
            "->",
            "==",
            "(",
            ")",
            "[",
            "]",
            "{",
            "}",
            ",",
            ":",
            "=",
            "#",
            '"',
            "as ",
            " from ",
            " within ",
            "grad(",
            "graph g {",
            "input ",
            "param ",
            "const ",
            "output ",
            "expect ",
            "dim N = ",
            "f32",
            "i64",
            "f64",
            "relu",
            "mul(",
            "affine(",
            "softmax_loss(",
            "reduction=sum",
            "zeros",
            "onehot",
            "normal(",
            "\r\n",
            "\n",
            "\t",
            "\n}\n",
            "[[[[[[[[",
            "]]]]]]]]",
            "a" * 1000,
        )  # fmt: skip
    )
    + tuple(t.encode("utf-8") for t in ODD_NUMBERS + ODD_CHARACTERS)
    + (
        b"\xff",
        b"\xc3",
        b"\xed\xa0\x80",
        b"\xef\xbb\xbf",
        b"\xf4\x90\x80\x80",
        b"\xc0\xaf",
        b"\xe2\x82",
    )
)


@dataclass(frozen=True)
class Mutated:
    data: bytes
    seed: str  # the file it was made from
    steps: tuple[str, ...]  # what was done, for a person reading a failure


def _position(draw, data: bytes, end: bool = True) -> int:
    return draw(st.integers(0, len(data) if end else max(len(data) - 1, 0)))


def _range(draw, data: bytes) -> tuple[int, int]:
    start = _position(draw, data)
    length = draw(st.integers(0, min(64, len(data) - start)))
    return start, start + length


def _flip_bit(draw, data, seeds):
    if not data:
        return data, "flip (empty)"
    i = _position(draw, data, end=False)
    bit = draw(st.integers(0, 7))
    return data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1 :], f"flip bit {bit} of byte {i}"


def _set_byte(draw, data, seeds):
    if not data:
        return data, "set (empty)"
    i = _position(draw, data, end=False)
    byte = draw(st.sampled_from(INTERESTING_BYTES))
    return data[:i] + bytes([byte]) + data[i + 1 :], f"byte {i} = {byte:#04x}"


def _insert_token(draw, data, seeds):
    i = _position(draw, data)
    token = draw(st.sampled_from(INTERESTING_TOKENS))
    return data[:i] + token + data[i:], f"insert {token[:20]!r} at {i}"


def _delete(draw, data, seeds):
    start, end = _range(draw, data)
    return data[:start] + data[end:], f"delete {start}:{end}"


def _duplicate(draw, data, seeds):
    start, end = _range(draw, data)
    at = _position(draw, data)
    return data[:at] + data[start:end] + data[at:], f"copy {start}:{end} to {at}"


def _repeat(draw, data, seeds):
    start, end = _range(draw, data)
    times = draw(st.sampled_from([2, 10, 1000]))
    return data[:start] + data[start:end] * times + data[end:], f"repeat {start}:{end} x{times}"


def _swap(draw, data, seeds):
    a, b = sorted((_range(draw, data), _range(draw, data)))
    if a[1] > b[0]:
        return data, "swap (overlap)"
    return data[: a[0]] + data[b[0] : b[1]] + data[a[1] : b[0]] + data[a[0] : a[1]] + data[b[1] :], f"swap {a} {b}"


def _odd_number(draw, data, seeds):
    numbers = list(re.finditer(rb"\d+(\.\d+)?", data))
    if not numbers:
        return data, "number (none)"
    m = draw(st.sampled_from(numbers))
    odd = draw(st.sampled_from(ODD_NUMBERS)).encode()
    return data[: m.start()] + odd + data[m.end() :], f"number at {m.start()} = {odd[:20]!r}"


def _splice(draw, data, seeds):
    name = draw(st.sampled_from(sorted(seeds)))
    other = seeds[name]
    cut = _position(draw, data)
    start = _position(draw, other)
    return data[:cut] + other[start:], f"splice {name}[{start}:] at {cut}"


def _truncate(draw, data, seeds):
    cut = _position(draw, data)
    return data[:cut], f"truncate at {cut}"


def _line_ends(draw, data, seeds):
    style = draw(st.sampled_from([b"\r\n", b"\r", b"\n\n", b" ", b"\x85", b"\xe2\x80\xa8"]))
    return data.replace(b"\n", style), f"line ends {style!r}"


MUTATIONS = (
    _flip_bit, _set_byte, _insert_token, _delete, _duplicate, _repeat, _swap, _odd_number, _splice,
    _truncate, _line_ends,
)  # fmt: skip


@st.composite
def mutated(draw, seeds: dict[str, bytes], max_steps: int = 5) -> Mutated:
    """One seed file with one to `max_steps` mutations; `seeds` maps names to contents."""
    name = draw(st.sampled_from(sorted(seeds)))
    data = seeds[name]
    steps = []
    for _ in range(draw(st.integers(1, max_steps))):
        mutation = draw(st.sampled_from(MUTATIONS))
        data, step = mutation(draw, data, seeds)
        data = data[:MAX_SIZE]
        steps.append(step)
    return Mutated(data, name, tuple(steps))
