"""Files, flags and outputs from outside graphc's own .graph source: every bad
one is a clean error (exit 2, no traceback), found before anything large is
allocated: checkpoints, --input arrays, --set values, MNIST files, batch
sizes, standard output, and the files training writes."""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphc
from graphc import data, fileio, limits
from graphc.checkpoint import checkpoint_bytes, read_checkpoint, save_checkpoint
from graphc.cli import main
from graphc.errors import GraphcError
from graphc.optim import SGD

ROOT = Path(__file__).resolve().parent.parent
NET = str(ROOT / "models" / "two_layer_net.graph")
APPLE = str(ROOT / "models" / "apple.graph")
DAMAGED = "hint: the file is damaged; use another checkpoint or train again"
TOO_MANY = f"hint: graphc refuses tensors of more than {limits.MAX_ELEMENTS:,} numbers; raise the limit with GRAPHC_MAX_ELEMENTS=N"
# Far above what compiling and running the models takes, far below what any
# of these files claims (the smallest claim is 3 GiB).
LITTLE = 300 * 2**20


def cli_error(capsys, *argv: object) -> str:
    """graphc's stderr for argv, which must end in status 2 with no traceback,
    having allocated little (tracemalloc sees numpy's and Python's allocations)."""
    tracemalloc.start()
    try:
        status = main([str(a) for a in argv])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err, err
    assert status == 2, err
    assert peak < LITTLE, f"{peak:,} bytes allocated"
    return err.rstrip("\n")


def cli_error_after_loading_data(capsys, *argv: object) -> str:
    """graphc's stderr for argv, which must end in status 2 with no traceback and
    no line of training output (MNIST itself is loaded first)."""
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err, err
    assert (status, out) == (2, ""), err
    return err.rstrip("\n")


def npy(descr: str, shape: tuple, data: bytes = b"", fortran: bool = False, version: int = 1) -> bytes:
    """An .npy file's bytes with the header given, whatever the data."""
    header = f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {shape!r}, }}".encode("latin-1")
    width = 2 if version == 1 else 4
    header += b" " * (63 - (8 + width + len(header)) % 64) + b"\n"
    return b"\x93NUMPY" + bytes([version, 0]) + len(header).to_bytes(width, "little") + header + data


def zeros_deflated(prefix: bytes, mebibytes: int) -> bytes:
    """A raw deflate stream of `prefix` then `mebibytes` MiB of zeros: one
    compressed MiB repeated, each after a full flush, so 3 GiB take 3 MB."""
    pack = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = pack.compress(prefix) + pack.flush(zlib.Z_FULL_FLUSH)
    mib = pack.compress(bytes(1 << 20)) + pack.flush(zlib.Z_FULL_FLUSH)
    assert pack.compress(bytes(1 << 20)) + pack.flush(zlib.Z_FULL_FLUSH) == mib  # self-contained
    return head + mib * mebibytes + pack.flush()


def zip_of(entries: list[tuple], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip archive of (name, content) entries, or (name, content, declared size,
    compressed data) where the data need not be the content (a bomb: CRC 0, as
    it is refused or cut short before its CRC is ever checked)."""
    local, central = b"", b""
    for name, content, *lie in entries:
        raw = name.encode()
        size, payload = lie if lie else (len(content), zlib.compress(content)[2:-4])
        crc = 0 if lie else zlib.crc32(content)
        fields = (20, 0, method, 0, 0x21, crc, len(payload), size, len(raw))
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, *fields, 0, 0, 0, 0, 0, len(local)) + raw
        local += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", *fields, 0) + raw + payload
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(local), 0)
    return local + central + end


def net_checkpoint(path: Path, **meta_changes) -> Path:
    """A training checkpoint of the two-layer net, with meta fields replaced."""
    program = graphc.compile_file(NET, seed=0)
    save_checkpoint(
        path, program, iteration=5, optimizer=SGD(program.params), rng=np.random.default_rng(0), batch=100, seed=0
    )
    if meta_changes:
        with np.load(path, allow_pickle=False) as npz:
            arrays = dict(npz)
        meta = json.loads(str(arrays["meta"]))
        meta.update(meta_changes)
        arrays["meta"] = np.array(json.dumps(meta))
        np.savez(path, **arrays)
    return path


def with_meta_text(path: Path, edit) -> Path:
    """Replace a checkpoint's meta JSON text by edit(text)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = dict(npz)
    arrays["meta"] = np.array(edit(str(arrays["meta"])))
    np.savez(path, **arrays)
    return path


# --- checkpoints: array headers -----------------------------------------------------


def test_an_array_header_claiming_a_trillion_numbers(tmp_path, capsys):
    path = tmp_path / "w.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("W1.npy", npy("<f4", (1000000, 1000000)))  # and no data: numpy tries to allocate 3.6 TiB
    assert cli_error(capsys, "run", NET, "--weights", path) == (
        f"{path}: error[E801]: `W1` claims shape [1000000, 1000000]: 1,000,000,000,000 numbers, "
        f"more than graphc takes in one tensor\n{TOO_MANY}"
    )


def test_a_zip_bomb_is_refused_by_its_declared_size(tmp_path, capsys):
    path = tmp_path / "w.npz"
    payload = zeros_deflated(npy("<f8", (3 * 2**27,)), 3 * 1024)  # 3 GiB of zeros after the header
    assert len(payload) < 4 * 2**20
    path.write_bytes(zip_of([("W1.npy", b"", 128 + 3 * 2**30, payload)]))
    assert cli_error(capsys, "run", NET, "--weights", path) == (
        f"{path}: error[E801]: `W1` would inflate to 3,221,225,600 bytes, more than graphc reads for one array\n{TOO_MANY}"
    )


def net_params(names=("W1", "b1", "W2", "b2")) -> list[tuple[str, bytes]]:
    """The two-layer net's params as .npz entries, numpy's bytes."""
    program = graphc.compile_file(NET, seed=0)
    entries = []
    for name in names:
        stream = io.BytesIO()
        np.save(stream, program.params[name])
        entries.append((f"{name}.npy", stream.getvalue()))
    return entries


def test_a_zip_bomb_that_hides_its_size_is_read_no_further_than_it_says(tmp_path, capsys):
    path = tmp_path / "w.npz"
    payload = zeros_deflated(npy("<f8", (784, 50)), 3 * 1024)  # inflates to 3 GiB all the same
    bomb = ("W1.npy", b"", 128 + 784 * 50 * 8, payload)
    path.write_bytes(zip_of([bomb, *net_params(("b1", "W2", "b2"))]))
    assert cli_error(capsys, "run", NET, "--weights", path) == (
        f"{path}: error[E701]: corrupt or truncated .npz file (Bad CRC-32 for file 'W1.npy')\n{DAMAGED}"
    )


def test_headers_are_checked_against_the_graph_before_any_data_is_read(tmp_path, capsys):
    path = tmp_path / "w.npz"
    content = npy("<f8", (1000,), bytes(8000))
    wrong = [(f"{name}.npy", b"", len(content), zlib.compress(content)[2:-4]) for name in ("W1", "b1")]
    path.write_bytes(zip_of(wrong))  # CRC 0: reading their data to the end would say so
    assert cli_error(capsys, "run", NET, "--weights", path) == (
        f"{path}: error[E707]: tensor `W1` has shape [1000], but param `W1` of graph `two_layer_net` has shape [784, 50]\n"
        "hint: the weights were saved from a graph with different layer sizes"
    )


@pytest.mark.parametrize(
    "descr, shape, fortran, reason, hint",
    [
        ("|O", (2,), False, "holds pickled Python objects, which graphc never loads", "numbers"),
        ("<c16", (2,), False, "holds complex numbers (complex128); graphc computes with real numbers", "numbers"),
        ("<U3", (2,), False, "holds <U3 values, not numbers", "numbers"),
        ([("a", "<f8"), ("b", "<i4")], (2,), False, "holds structured records", "numbers"),
        ("<M8[s]", (2,), False, "holds datetime64[s] values, not numbers", "numbers"),
        ("<f8", (-3,), False, "claims the impossible shape [-3]", "damaged"),
        ("<f8", (1,) * 40, False, "claims 40 dimensions; graphc takes at most 32", None),
        ("<f8", "3", False, "has an .npy header numpy cannot read", "damaged"),
    ],
)
def test_entries_that_are_not_arrays_of_numbers(tmp_path, capsys, descr, shape, fortran, reason, hint):
    path = tmp_path / "w.npz"
    content = npy(descr, shape, fortran=fortran)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("W1.npy", content)
    err = cli_error(capsys, "run", NET, "--weights", path)
    code = "E801" if hint is None else "E702"  # beyond graphc's limits, or not numbers / damaged
    assert err.startswith(f"{path}: error[{code}]: `W1` {reason}")
    assert err.endswith(
        {"numbers": "\nhint: store numbers only, e.g. numpy.savez(path, W1=W1)", "damaged": "\n" + DAMAGED, None: ""}[
            hint
        ]
    )
    assert err.count("\n") == (0 if hint is None else 1)


def test_a_fortran_order_checkpoint_loads_as_numpy_saved_it(tmp_path):
    program = graphc.compile_file(NET, seed=3)
    path = tmp_path / "w.npz"
    np.savez(path, **{n: np.asfortranarray(program.params[n]) for n in program.param_names})
    loaded = read_checkpoint(path)
    for name in program.param_names:
        assert np.array_equal(loaded.params[name], program.params[name])


@pytest.mark.parametrize(
    "entries, message",
    [
        ([("W1.txt", b"hello")], "corrupt checkpoint: entry `W1.txt` is not an .npy array"),
        ([("W1.npy", b"x"), ("W1.npy", b"x")], "corrupt checkpoint: two entries are named `W1.npy`"),
        (
            [("W1.npy", npy("<f8", (2,), bytes(21)))],
            "corrupt checkpoint: entry `W1` holds 149 bytes, but its .npy header accounts for 144",
        ),
    ],
)
def test_malformed_archives(tmp_path, capsys, entries, message):
    path = tmp_path / "w.npz"
    path.write_bytes(zip_of(entries))
    assert cli_error(capsys, "run", NET, "--weights", path) == f"{path}: error[E702]: {message}\n{DAMAGED}"


def test_an_entry_compressed_as_numpy_never_does(tmp_path, capsys):
    path = tmp_path / "w.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_BZIP2) as archive:
        archive.writestr("W1.npy", npy("<f8", (2,), bytes(16)))
    assert cli_error(capsys, "run", NET, "--weights", path) == (
        f"{path}: error[E702]: corrupt checkpoint: entry `W1` is compressed in a way numpy never writes (zip method 12)\n"
        f"{DAMAGED}"
    )


@pytest.mark.parametrize("cut", [30, 200, 2000])
def test_truncated_checkpoints(tmp_path, capsys, cut):
    path = net_checkpoint(tmp_path / "w.npz")
    path.write_bytes(path.read_bytes()[:cut])
    assert cli_error(capsys, "run", NET, "--weights", path).startswith(
        f"{path}: error[E701]: corrupt or truncated .npz"
    )


def test_a_refused_file_is_closed(tmp_path, capsys):
    import gc
    import warnings

    path = tmp_path / "w.npz"
    path.write_bytes(b"PK\x03\x04")
    npy_path = tmp_path / "x.npy"
    npy_path.write_bytes(npy("<f8", (10**12,)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["run", NET, "--weights", str(path)]) == 2
        assert main(["run", NET, "--input", f"x={npy_path}"]) == 2
        gc.collect()
    capsys.readouterr()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_an_empty_file_and_an_empty_zip(tmp_path, capsys):
    path = tmp_path / "w.npz"
    path.write_bytes(b"")
    assert cli_error(capsys, "run", NET, "--weights", path) == (
        f"{path}: error[E701]: not an .npz file (it does not start as a zip archive does)\n"
        "hint: weights are written by `graphc train --save W.npz` or numpy.savez"
    )
    zipfile.ZipFile(path, "w").close()
    assert cli_error(capsys, "run", NET, "--weights", path) == (
        f"{path}: error[E706]: no tensor for param `W1` of graph `two_layer_net`\nhint: the file holds nothing"
    )


# --- checkpoints: meta ----------------------------------------------------------------


def test_meta_nested_thousands_deep(tmp_path, capsys):
    path = net_checkpoint(tmp_path / "w.npz")
    with_meta_text(path, lambda text: text[:-1] + ', "x": ' + "[" * 100000 + "]" * 100000 + "}")
    assert cli_error(capsys, "run", NET, "--weights", path) == (
        f"{path}: error[E702]: corrupt checkpoint: its `meta` entry is JSON nested 100,001 deep; "
        f"graphc reads JSON at most {limits.MAX_JSON_DEPTH} deep\n{DAMAGED}"
    )


def test_brackets_inside_strings_do_not_nest():
    assert fileio.json_depth('{"a": "[[[[{{{{\\"[[[[", "b": [[1]]}') == 3
    assert fileio.json_depth("[" * 70) == 70


def test_meta_integers_of_thousands_of_digits(tmp_path, capsys):
    path = net_checkpoint(tmp_path / "w.npz")
    with_meta_text(path, lambda text: text.replace('"batch": 100', '"batch": 1' + "0" * 5000))
    assert cli_error(capsys, "run", NET, "--weights", path) == (
        f"{path}: error[E702]: corrupt checkpoint: meta field `batch` must be a whole number at least 1, "
        f"got an integer of 5,001 digits\n{DAMAGED}"
    )
    path = net_checkpoint(tmp_path / "w.npz", iteration=10**30)
    assert cli_error(capsys, "run", NET, "--weights", path) == (
        f"{path}: error[E702]: corrupt checkpoint: meta field `iteration` must be a whole number at most "
        f"9223372036854775807, got 1000000000000000000000000000000\n{DAMAGED}"
    )


@pytest.mark.parametrize(
    "change, field, message",
    [
        ({"state": {"state": -1, "inc": 1}}, "rng.state.state", "a whole number from 0 to 2**128 - 1, got -1"),
        ({"state": {"state": 1, "inc": 2**130}}, "rng.state.inc", "a whole number from 0 to 2**128 - 1, got "),
        ({"has_uint32": 7}, "rng.has_uint32", "0 or 1, got 7"),
        ({"uinteger": -5}, "rng.uinteger", "a whole number from 0 to 2**32 - 1, got -5"),
        ({"state": [1, 2]}, "rng.state", "a PCG64 generator's state and increment, got [1, 2]"),
    ],
)
def test_meta_rng_state_out_of_range(tmp_path, capsys, change, field, message):
    path = net_checkpoint(tmp_path / "w.npz")
    state = np.random.default_rng(0).bit_generator.state
    net_checkpoint(path, rng={**state, **change})
    err = cli_error(capsys, "train", NET, "--resume", path, "--iters", 10)
    assert err.startswith(f"{path}: error[E702]: corrupt checkpoint: meta field `{field}` must be {message}")
    assert err.endswith(DAMAGED)


def test_meta_batch_of_a_trillion(tmp_path, capsys):
    path = net_checkpoint(tmp_path / "w.npz", batch=10**12)
    assert cli_error(capsys, "train", NET, "--resume", path, "--iters", 10) == (
        f"{path}: error[E801]: the checkpoint's batch size 1000000000000 (meta field `batch`): one step would hold `x` "
        f"of shape [1000000000000, 784], 784,000,000,000,000 numbers, more than graphc takes in one tensor\n{TOO_MANY}"
    )


def test_meta_optimizer_with_a_hyperparameter_it_does_not_have(tmp_path, capsys):
    path = net_checkpoint(tmp_path / "w.npz", optimizer={"name": "sgd", "lr": 0.1, "beta1": 0.9})
    assert cli_error(capsys, "run", NET, "--weights", path) == (
        f"{path}: error[E702]: corrupt checkpoint: meta field `optimizer` must be sgd's hyperparameters (lr), "
        f'got {{"name": "sgd", "lr": 0.1, "beta1": 0.9}}\n{DAMAGED}'
    )


def test_a_structure_hash_that_does_not_match_its_own_lines(tmp_path, capsys):
    path = net_checkpoint(tmp_path / "w.npz", structure_hash="0" * 64)
    assert cli_error(capsys, "run", NET, "--weights", path) == (
        f"{path}: error[E702]: corrupt checkpoint: meta field `structure_hash` is not the SHA-256 of meta field "
        f"`structure`: the file was edited or damaged\n{DAMAGED}"
    )


def test_optimizer_state_is_checked_against_the_graph_before_it_is_read(tmp_path, capsys):
    path = net_checkpoint(tmp_path / "w.npz")
    with np.load(path, allow_pickle=False) as npz:
        arrays = dict(npz)
    arrays["optimizer/v/W1"] = np.zeros(3)
    np.savez(path, **arrays)
    assert cli_error(capsys, "eval", NET, "--weights", path) == (
        f"{path}: error[E710]: corrupt training state: sgd state has `v/W1`, which this model has no use for"
    )


def test_meta_optimizer_named_by_something_not_a_name(tmp_path, capsys):
    path = net_checkpoint(tmp_path / "w.npz", optimizer={"name": {"sgd": 1}})
    assert cli_error(capsys, "run", NET, "--weights", path) == (
        f"{path}: error[E702]: corrupt checkpoint: meta field `optimizer.name` must be one of sgd, momentum, adagrad, "
        f'adam, got {{"sgd": 1}}\n{DAMAGED}'
    )


def test_weights_of_another_graph(tmp_path, capsys):
    path = tmp_path / "w.npz"
    save_checkpoint(path, graphc.compile_file(APPLE))
    assert cli_error(capsys, "run", NET, "--weights", path) == (
        f"{path}: error[E706]: no tensor for param `W1` of graph `two_layer_net`\nhint: the file holds nothing"
    )


# --- --input arrays -------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, count",
    [((10**12, 784), "784,000,000,000,000"), ((3, 10**17), "300,000,000,000,000,000")],
)
def test_an_npy_header_claiming_too_many_numbers(tmp_path, capsys, shape, count):
    path = tmp_path / "x.npy"
    path.write_bytes(npy("<f8", shape))
    assert cli_error(capsys, "run", NET, "--input", f"x={path}") == (
        f"<command line>:1:11: error[E801]: cannot read {path} as a .npy array: it claims shape {list(shape)}: "
        f"{count} numbers, more than graphc takes in one tensor\n"
        f" 1 | --input x={path}\n"
        f"   |           {'^' * len(str(path))}\n"
        f"{TOO_MANY}"
    )


@pytest.mark.parametrize(
    "content, reason",
    [
        (npy("<f8", (3, 784), bytes(100)), "is truncated: its header claims 18,816 bytes of data, the file holds 100"),
        (npy("|O", (3, 784)), "holds pickled Python objects, which graphc never loads"),
        (npy("<c8", (3, 784)), "holds complex numbers (complex64); graphc computes with real numbers"),
        (npy("<U5", (3, 784)), "holds <U5 values, not numbers"),
        (npy("<f16", (3, 784)), "holds float128 values; graphc reads numbers of at most 8 bytes"),
        (npy("<f8", (3, 784), version=9), "is in .npy format version 9.0, which graphc does not read"),
        (b"\x93NUMPY\x02\x00\xff\xff\xff\x7f", "has an .npy header of 2,147,483,647 bytes; numpy never writes one"),
        (b"\x93NUMPY\x01", "ends before its .npy header does (the file is truncated)"),
        (b"PK\x03\x04 an npz", "holds several arrays (.npz); give one .npy array"),
    ],
)
def test_npy_files_that_are_not_what_they_claim(tmp_path, capsys, content, reason):
    path = tmp_path / "x.npy"
    path.write_bytes(content)
    err = cli_error(capsys, "run", NET, "--input", f"x={path}")
    assert err.startswith(f"<command line>:1:11: error[E606]: cannot read {path} as a .npy array: it {reason}")


def test_an_npy_header_that_python_cannot_tokenize(tmp_path, capsys):
    path = tmp_path / "x.npy"
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (3,"
    header += b" " * (117 - len(header)) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)
    assert cli_error(capsys, "run", NET, "--input", f"x={path}").startswith(
        f"<command line>:1:11: error[E606]: cannot read {path} as a .npy array: it has an .npy header numpy cannot read ("
    )


def test_a_fortran_order_input_reads_as_numpy_saved_it(tmp_path, capsys):
    x = np.asfortranarray(np.random.default_rng(0).random((3, 784)))
    np.save(tmp_path / "x.npy", x)
    assert main(["run", NET, "--input", f"x={tmp_path / 'x.npy'}", "--json"]) == 0
    expected = graphc.compile_file(NET, seed=0).forward(x=np.ascontiguousarray(x))["loss"]
    assert json.loads(capsys.readouterr().out)["outputs"]["loss"] == pytest.approx(float(expected), rel=1e-12)


# --- --set values -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, message",
    [
        ("null", "`null` is not a number or a list of numbers"),
        ("true", "`true` is not a number or a list of numbers"),
        ('"3"', '`"3"` is not a number or a list of numbers'),
        ('{"a": 1}', '`{"a": 1}` is not a number or a list of numbers'),
        ("[1, null]", "`[1, null]` is not a list of numbers: it holds null"),
        ('[[1, 2], [3, "4"]]', '`[[1, 2], [3, "4"]]` is not a list of numbers: it holds "4"'),
    ],
)
def test_set_takes_numbers_only(capsys, value, message):
    column = len("--set apple=") + 1
    assert cli_error(capsys, "run", APPLE, "--set", f"apple={value}") == (
        f"<command line>:1:{column}: error[E406]: {message}\n"
        f" 1 | --set apple={value}\n"
        f"   | {' ' * (column - 1)}{'^' * len(value)}\n"
        "hint: write a number such as 1.5e-3, or a list such as [[1, 2], [3, 4]]"
    )


def test_set_integers_of_thousands_of_digits(capsys):
    err = cli_error(capsys, "run", APPLE, "--set", "apple=1" + "0" * 5000)
    assert err.startswith(
        "<command line>:1:13: error[E406]: `100000000000000000000000000000000000000000000000000000000...` is "
        "an integer of 5,001 digits, beyond any number graphc computes with"
    )


def test_set_nested_deep(capsys):
    err = cli_error(capsys, "run", APPLE, "--set", "apple=" + "[" * 5000 + "]" * 5000)
    assert err.startswith(
        "<command line>:1:13: error[E406]: `[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[...` is nested "
        f"5,000 deep; graphc reads JSON at most {limits.MAX_JSON_DEPTH} deep"
    )


def test_values_with_control_characters_stay_on_one_line(capsys):
    assert cli_error(capsys, "run", APPLE, "--set", "apple=1\n2").splitlines()[0] == (
        "<command line>:1:13: error[E406]: cannot read `1\\n2` as a number or a list"
    )
    assert cli_error(capsys, "train", NET, "--iters", "1\x1b[2J") == (
        "graphc: error[E502]: --iters takes a whole number, got `1\\x1b[2J`\nhint: e.g. `--iters 100`"
    )


# --- batch sizes ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["train", "time"])
def test_a_batch_of_a_billion(capsys, command):
    assert cli_error(capsys, command, NET, "--batch", "1e9") == (
        "graphc: error[E801]: --batch 1000000000: one step would hold `x` of shape [1000000000, 784], "
        f"784,000,000,000 numbers, more than graphc takes in one tensor\n{TOO_MANY}"
    )


def test_a_trainer_refuses_a_minibatch_beyond_the_limit():
    from graphc.train import Trainer, TrainOptions, prepare_data

    program = graphc.compile_file(NET)
    x, y = np.zeros((10, 784)), np.arange(10) % 10
    data = prepare_data(program, (x, y), (x, y))
    with pytest.raises(GraphcError) as err:
        Trainer(program, data, TrainOptions(batch=10**9))
    assert err.value.render() == (
        "graphc: error[E801]: batch size 1000000000: a minibatch of 1,000,000,000 rows of 784 numbers is more than "
        f"graphc takes in one tensor\n{TOO_MANY}"
    )


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--iters", "1.5", "--iters takes a whole number, got `1.5`"),
        ("--iters", "nan", "--iters takes a whole number, got `nan`"),
        ("--iters", "inf", "--iters takes a whole number, got `inf`"),
        ("--iters", "", "--iters takes a whole number, got ``"),
        ("--iters", "1e30", "--iters takes a whole number, got `1e30`"),
        ("--iters", "1" + "0" * 30, "--iters must be at most 9223372036854775807, got 1" + "0" * 30),
        ("--seed", "9" * 5000, "--seed takes a whole number, got `" + "9" * 57 + "...`"),
        ("--lr", "nan", "--lr must be a positive number, got nan"),
        ("--lr", "inf", "--lr must be a positive number, got inf"),
    ],
)
def test_odd_flag_values(capsys, flag, value, message):
    assert cli_error(capsys, "train", NET, flag, value).startswith(f"graphc: error[E502]: {message}\n")


# --- MNIST ------------------------------------------------------------------------------


def gzip_bomb(prefix: bytes, mebibytes: int) -> bytes:
    """A gzip file of `prefix` then `mebibytes` MiB of zeros (its CRC is never reached)."""
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + zeros_deflated(prefix, mebibytes) + bytes(8)


@pytest.fixture
def mnist_copy(tmp_path) -> Path:
    """A directory linking the real MNIST files, for one of them to be replaced."""
    directory = tmp_path / "mnist"
    directory.mkdir()
    for name in data.MNIST_FILES.values():
        (directory / name).symlink_to(data.mnist_dir() / name)
    return directory


def test_a_gzip_bomb_among_the_mnist_files(mnist_copy, capsys):
    path = mnist_copy / "train-images-idx3-ubyte.gz"
    path.unlink()
    header = bytes([0, 0, 8, 3]) + np.array([60000, 28, 28], ">u4").tobytes()
    path.write_bytes(gzip_bomb(header, 12 * 1024))  # 12 GiB of images
    assert cli_error(capsys, "train", NET, "--data-dir", mnist_copy, "--iters", 1) == (
        f"{path}: error[E607]: decompresses to more than {data.mnist_bytes('train_images'):,} bytes, "
        "the most this file can hold\nhint: delete the file and download it again"
    )


@pytest.mark.parametrize(
    "content, code, message",  # gzip's mtime fixed: the same bytes, so the same test ids, in every process
    [
        (
            gzip.compress(b"\0\0\x08\x01" + (10000).to_bytes(4, "big") + bytes(9999), mtime=0),
            "E608",
            "truncated IDX file",
        ),
        (
            gzip.compress(b"\0\0\x08\x01" + (10000).to_bytes(4, "big") + bytes(10001), mtime=0),
            "E608",
            "IDX file has 1 trailing",
        ),
        (gzip.compress(b"\0\0\x08\x50" + bytes(400), mtime=0), "E608", "not an IDX file graphc reads"),
        (
            gzip.compress(b"\x00\x00\x0d\x01" + (10000).to_bytes(4, "big") + bytes(40000), mtime=0),
            "E607",
            "decompresses to more",
        ),
        (b"\x1f\x8b garbage", "E607", "corrupt gzip file"),
        (
            gzip.compress(b"\0\0\x08\x01" + (10000).to_bytes(4, "big") + bytes(10000), mtime=0)[:-30],
            "E607",
            "corrupt gzip file",
        ),
        (b"", "E607", "not a gzip file"),
    ],
)
def test_broken_mnist_labels(mnist_copy, capsys, content, code, message):
    path = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    path.unlink()
    path.write_bytes(content)
    assert cli_error(capsys, "train", NET, "--data-dir", mnist_copy, "--iters", 1).startswith(
        f"{path}: error[{code}]: {message}"
    )


def test_a_raw_idx_file_longer_than_it_can_be(tmp_path):
    path = tmp_path / "labels.idx"
    path.write_bytes(b"\0\0\x08\x01" + (10).to_bytes(4, "big") + bytes(10))
    with pytest.raises(GraphcError) as err:
        data.read_idx(path, max_bytes=12)
    assert err.value.render() == (
        f"{path}: error[E607]: is 18 bytes, more than the 12 this file can hold\nhint: delete the file and download it again"
    )


# --- standard output --------------------------------------------------------------------


def graphc_process(*argv: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "graphc", *argv], capture_output=True, text=True, timeout=120, **options
    )


FULL = "graphc: error[E604]: cannot write to standard output: No space left on device\n"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
@pytest.mark.parametrize("argv", [["compile", NET, "--emit", "python"], ["--help"]])
def test_a_full_standard_output(argv):
    """In a process of its own: nothing is left for Python's flush at exit to fail on."""
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "graphc", *argv], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120
        )
    assert (done.returncode, done.stderr) == (2, FULL)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
@pytest.mark.parametrize("argv", [["compile", APPLE], ["check", NET], ["run", APPLE, "--json"], ["draw", APPLE]])
def test_every_command_reports_a_full_standard_output(argv, capsys, monkeypatch):
    with open("/dev/full", "w") as full:
        monkeypatch.setattr(sys, "stdout", full)
        status = main(argv)
        monkeypatch.undo()
    assert (status, capsys.readouterr().err) == (2, FULL)


def test_no_standard_output_at_all():
    done = subprocess.run(
        f"{sys.executable} -m graphc compile {APPLE} >&-", shell=True, capture_output=True, text=True, timeout=120
    )
    assert (done.returncode, done.stderr) == (2, "graphc: error[E604]: cannot write to standard output: it is closed\n")


def test_a_closed_pipe_is_quiet():
    done = subprocess.run(
        f"{sys.executable} -m graphc compile {NET} --emit python | head -c 10",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout == '"""two_lay' and done.stderr == ""


def test_a_file_name_that_is_not_utf8_on_a_strict_stdout(tmp_path):
    path = tmp_path / "\udcff.graph"  # the byte 0xff, as Python spells it in a file name
    shutil.copy(APPLE, path)
    done = graphc_process("run", str(path), env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"})
    assert done.returncode == 0, done.stderr
    assert "\\udcff.graph:14  price == 220" in done.stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compile", APPLE, "-o", ""], "graphc: error[E604]: cannot write: the file name is empty"),
        (["draw", APPLE, "-o", "."], "graphc draw: error[E507]: cannot tell what to draw from the extension of `.`"),
    ],
)
def test_outputs_that_are_no_file(capsys, argv, message):
    assert cli_error(capsys, *argv).startswith(message)


def test_an_output_that_is_a_directory(tmp_path, capsys):
    assert cli_error(capsys, "compile", APPLE, "-o", tmp_path) == (
        f"{tmp_path}: error[E602]: cannot write: is a directory\nhint: give a file name"
    )
    assert cli_error(capsys, "train", NET, "--log", tmp_path) == (
        f"graphc: error[E602]: --log {tmp_path}: is a directory\nhint: give a file name"
    )


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
@pytest.mark.parametrize("flag, size", [("--log", "4,096"), ("--plot", "262,144")])
def test_training_outputs_on_a_full_device_fail_before_training(capsys, flag, size):
    assert cli_error(capsys, "train", NET, flag, "/dev/full") == (
        f"graphc: error[E604]: {flag} /dev/full: cannot write: No space left on device "
        f"(a trial write of {size} bytes, what the file will take, failed)"
    )


def test_an_output_file_on_a_full_device(capsys):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    assert cli_error(capsys, "compile", NET, "-o", "/dev/full") == (
        "/dev/full: error[E604]: cannot write: No space left on device"
    )


# --- saving: temporary files, locks, the write probe -----------------------------------


SLOW_SAVE = """
import sys, time
import numpy as np
import graphc
from graphc.checkpoint import save_checkpoint

def stalled(handle, **arrays):  # half a checkpoint, then a pause to be killed in
    handle.write(b"PK\\x03\\x04 half a checkpoint")
    handle.flush()
    print("writing", flush=True)
    time.sleep(600)

np.savez = stalled
save_checkpoint(sys.argv[2], graphc.compile_file(sys.argv[1]))
"""


def temporaries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_kill_9_during_a_save_leaves_a_temporary_file_the_next_save_removes(tmp_path):
    path = tmp_path / "w.npz"
    save_checkpoint(path, graphc.compile_file(APPLE))
    before = path.read_bytes()
    writer = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, APPLE, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "writing\n"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
    (left,) = temporaries(tmp_path)
    assert left.startswith(f".w.npz.{writer.pid}@{fileio._host()}.")
    assert path.read_bytes() == before  # the old checkpoint is intact

    # A save by a live process on this host (or any process on another) is left alone.
    alive = tmp_path / f".w.npz.{os.getppid()}@{fileio._host()}.abcdefgh.tmp"
    elsewhere = tmp_path / ".w.npz.1@some-other-host.abcdefgh.tmp"
    other_file = tmp_path / f".v.npz.{writer.pid}@{fileio._host()}.abcdefgh.tmp"
    for keep in (alive, elsewhere, other_file):
        keep.write_bytes(b"")
    save_checkpoint(path, graphc.compile_file(APPLE))
    assert temporaries(tmp_path) == sorted(p.name for p in (alive, elsewhere, other_file))
    assert read_checkpoint(path).graph == "buy_apple"


def test_a_second_training_into_the_same_file_is_refused(tmp_path, capsys):
    path = tmp_path / "w.npz"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from graphc.fileio import exclusive_lock\n"
            "with exclusive_lock(sys.argv[1]):\n"
            "    print('locked', flush=True)\n"
            "    time.sleep(600)\n",
            str(path.resolve()),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        assert cli_error(capsys, "train", NET, "--iters", 5, "--save", path) == (
            f"graphc: error[E605]: --save {path}: another graphc process (pid {holder.pid} on {socket.gethostname()}) "
            "is writing this file\nhint: wait for it to finish, or write to another file"
        )
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    # The kernel dropped the dead holder's lock; its lock file is taken over, then removed.
    with fileio.exclusive_lock(path.resolve()):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_lock_is_held_while_training_and_released_after(tmp_path, capsys, monkeypatch):
    import graphc.train as command  # the train command takes load_data from here when it runs

    path = tmp_path / "w.npz"
    seen = []

    def load_data(*args, **kwargs):  # where training would start: is the file locked?
        with pytest.raises(GraphcError) as err:
            with fileio.exclusive_lock(path.resolve()):
                pass
        seen.append(err.value.message)
        raise GraphcError("stopped by the test", code="E901")

    monkeypatch.setattr(command, "load_data", load_data)
    assert cli_error(capsys, "train", NET, "--iters", 5, "--save", path) == "graphc: error[E901]: stopped by the test"
    assert seen == [f"another graphc process (pid {os.getpid()} on {socket.gethostname()}) is writing this file"]
    assert list(tmp_path.iterdir()) == []  # the lock file went with the lock
    with fileio.exclusive_lock(path.resolve()):
        pass


def test_the_write_probe_writes_what_the_checkpoint_will_take(tmp_path, capsys, monkeypatch):
    program = graphc.compile_file(NET)
    data.load_mnist(progress=False)  # the parser's and MNIST's caches are written (and synced) before the disk fills up
    sizes = []

    def no_space(fd: int) -> None:  # a disk with room for the empty file the first check writes
        sizes.append(os.fstat(fd).st_size)
        if sizes[-1]:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", no_space)
    path = tmp_path / "w.npz"
    expected = 2 * checkpoint_bytes(program, "adam", 1)  # no file there yet: two saves' worth
    err = cli_error_after_loading_data(capsys, "train", NET, "--iters", 5, "--optimizer", "adam", "--save", path)
    assert err == (
        f"graphc: error[E604]: --save {path}: cannot write: No space left on device "
        f"(a trial write of {expected:,} bytes, what the file will take, failed)"
    )
    assert sizes == [0, expected] and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
def test_a_checkpoint_to_a_full_device_fails_before_training(capsys):
    expected = 2 * checkpoint_bytes(graphc.compile_file(NET), "sgd", 1)
    assert cli_error_after_loading_data(capsys, "train", NET, "--iters", 5, "--save", "/dev/full") == (
        "graphc: error[E604]: --save /dev/full: cannot write: No space left on device "
        f"(a trial write of {expected:,} bytes, what the file will take, failed)"
    )


def test_the_size_estimate_is_never_short(tmp_path):
    from graphc.checkpoint import EpochRecord
    from graphc.optim import Adam

    program = graphc.compile_file(NET)
    record = EpochRecord(12, 7200, 0.123456789012, 0.987654321098, 0.987654321098, 123456.789012)
    for optimizer in (None, SGD(program.params), Adam(program.params)):
        path = tmp_path / "w.npz"
        save_checkpoint(path, program, optimizer=optimizer, rng=np.random.default_rng(), history=[record] * 17)
        estimate = checkpoint_bytes(program, optimizer.name if optimizer else None, 17)
        assert path.stat().st_size <= estimate <= path.stat().st_size * 1.1
    # A run asked to go on for ever is not refused, nor probed with the disk's every byte.
    assert checkpoint_bytes(program, "adam", 10**18) == checkpoint_bytes(program, "adam", 1000) < 2 * 2**20


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 512 KiB tmpfs (root only; skipped where mounting is not allowed)."""
    directory = tmp_path / "disk"
    directory.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(directory)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield directory
    subprocess.run(["umount", str(directory)], check=True)


def test_a_full_disk_is_found_before_training(small_disk, capsys):
    path = small_disk / "w.npz"
    expected = 2 * checkpoint_bytes(graphc.compile_file(NET), "sgd", 1)
    assert 512 * 1024 < expected  # two saves do not fit, one would
    err = cli_error_after_loading_data(capsys, "train", NET, "--iters", 5, "--save", path)
    assert err == (
        f"graphc: error[E604]: --save {path}: cannot write: No space left on device "
        f"(a trial write of {expected:,} bytes, what the file will take, failed)"
    )
    assert list(small_disk.iterdir()) == []


# --- mutations: whatever the bytes, a checkpoint or a GraphcError -------------------

TINY = """graph tiny {
    input x: f64[N, 4] = uniform(0, 1) from images
    input t: f64[N, 3] = onehot from labels
    dim N = 2
    param W: [4, 3] = normal(0.1)
    param b: [3] = zeros
    x -> affine(W, b) -> y
    loss = softmax_loss(y, t)
    output loss
}
"""


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> tuple[bytes, bytes, graphc.Program]:
    """A training checkpoint of a tiny graph (Adam, so it has optimizer state) and
    an .npy input, as bytes, and the graph's Program (which reading leaves alone)."""
    from graphc.optim import Adam

    directory = tmp_path_factory.mktemp("tiny")
    program = graphc.compile_source(TINY, "tiny.graph")
    save_checkpoint(directory / "w.npz", program, optimizer=Adam(program.params), rng=np.random.default_rng(0))
    np.save(directory / "x.npy", np.zeros((2, 4)))
    return (directory / "w.npz").read_bytes(), (directory / "x.npy").read_bytes(), program


# (position as a fraction of the length, what to do, a byte)
edits = st.lists(
    st.tuples(st.floats(0, 1), st.sampled_from(["set", "delete", "insert", "cut"]), st.integers(0, 255)),
    min_size=1,
    max_size=6,
)


def mutated(content: bytes, changes: list[tuple[float, str, int]]) -> bytes:
    data = bytearray(content)
    for where, what, byte in changes:
        i = min(int(where * len(data)), max(len(data) - 1, 0))
        if what == "set" and data:
            data[i] = byte
        elif what == "delete":
            del data[i : i + byte % 16 + 1]
        elif what == "insert":
            data[i:i] = bytes([byte]) * (byte % 8 + 1)
        else:
            del data[i:]
    return bytes(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=edits)
def test_a_mutated_checkpoint_reads_or_is_a_graphc_error(tiny_files, tmp_path, changes):
    path = tmp_path / "w.npz"
    path.write_bytes(mutated(tiny_files[0], changes))
    with contextlib.suppress(GraphcError):
        checkpoint = read_checkpoint(path, tiny_files[2])
        assert set(checkpoint.params) == {"W", "b"}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=edits)
def test_a_mutated_npy_reads_or_is_a_clean_problem(tiny_files, tmp_path, changes):
    path = tmp_path / "x.npy"
    path.write_bytes(mutated(tiny_files[1], changes))
    with contextlib.suppress(fileio.ArrayProblem):
        array = fileio.load_npy(path)
        assert array.size <= limits.MAX_ELEMENTS


meta_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    field=st.sampled_from(["iteration", "batch", "seed", "optimizer", "rng", "history", "dtype", "graph"]),
    value=meta_values,
)
def test_any_meta_field_value_reads_or_is_a_graphc_error(tiny_files, tmp_path, field, value):
    path = tmp_path / "w.npz"
    path.write_bytes(tiny_files[0])
    with np.load(path, allow_pickle=False) as npz:
        arrays = dict(npz)
    meta = json.loads(str(arrays["meta"]))
    meta[field] = value
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    with contextlib.suppress(GraphcError):
        read_checkpoint(path, tiny_files[2])
