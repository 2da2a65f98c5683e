"""Tests for graphc.data: IDX reading, MNIST download and loading.

Everything runs on tiny IDX files written here and a local http.server,
except one test on the real MNIST files (skipped when they are absent).
"""

from __future__ import annotations

import errno
import functools
import gzip
import hashlib
import http.server
import io
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from graphc import data
from graphc.data import (
    MNIST_FILES,
    MNIST_SHA256,
    download_mnist,
    load_mnist,
    mnist_dir,
    read_idx,
    sha256_of_content,
)
from graphc.errors import GraphcError

NAMES = list(MNIST_FILES.values())
FIX = (
    "put the four MNIST files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in {d}, "
    "or pass --data-dir DIR to use a directory that holds them, "
    "or set GRAPHC_DATA=DIR to use DIR/mnist"
)


# ---------------------------------------------------------------- helpers


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """Serialize `arr` as IDX with the given type code (big-endian)."""
    dtype = data.IDX_TYPES[code]
    header = bytes([0, 0, code, arr.ndim]) + np.array(arr.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(arr, dtype=dtype).tobytes()


def gz(payload: bytes) -> bytes:
    # mtime=0: identical input gives identical bytes, so tests are reproducible.
    return gzip.compress(payload, mtime=0)


def tiny_mnist(n_train: int = 6, n_test: int = 4, seed: int = 0) -> dict[str, bytes]:
    """Gzipped IDX content of a tiny MNIST look-alike, by file name."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    return {name: gz(idx_bytes(a)) for name, a in arrays.items()}


def digests(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(gzip.decompress(b)).hexdigest() for name, b in files.items()}


def write_files(directory: Path, files: dict[str, bytes]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (directory / name).write_bytes(content)


def render(excinfo: pytest.ExceptionInfo[GraphcError]) -> str:
    assert str(excinfo.value) == excinfo.value.render()
    return excinfo.value.render()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # No test may reach the real mirrors or the person's cache by accident.
    monkeypatch.delenv("GRAPHC_DATA", raising=False)
    monkeypatch.setenv("GRAPHC_MNIST_MIRROR", "http://127.0.0.1:9/")
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    data.clear_cache()
    yield
    data.clear_cache()


@pytest.fixture
def small_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "MNIST_COUNTS", {"train": 6, "test": 4})


class Server:
    """A local HTTP server over a directory, recording the paths requested."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                super().do_GET()

        handler = functools.partial(Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        # A short poll interval so shutdown() at teardown returns at once.
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "served")
    s.root.mkdir()
    yield s
    s.close()


def closed_port() -> int:
    # Bind then close: nothing listens there, so connecting is refused at once.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in NAMES)


# ---------------------------------------------------------------- read_idx


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip_ubyte(tmp_path: Path, compress: bool) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    payload = idx_bytes(arr)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    path.write_bytes(gz(payload) if compress else payload)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize(
    "code, values",
    [
        (0x09, np.array([-128, -1, 0, 127])),
        (0x0B, np.array([-32768, -2, 300, 32767])),
        (0x0C, np.array([-(2**31), -5, 70000, 2**31 - 1])),
        (0x0D, np.array([-1.5, 0.0, 3.25, 1e30])),
        (0x0E, np.array([-1e300, 0.1, 2.0, np.pi])),
    ],
)
def test_read_idx_round_trip_all_types(tmp_path: Path, code: int, values: np.ndarray) -> None:
    arr = values.reshape(2, 2)
    path = tmp_path / "v.idx"
    path.write_bytes(idx_bytes(arr, code))
    out = read_idx(path)
    assert out.dtype == data.IDX_TYPES[code].newbyteorder("=")
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, arr.astype(out.dtype))


def test_read_idx_detects_gzip_by_magic_without_gz_name(tmp_path: Path) -> None:
    arr = np.array([1, 2, 3], dtype=np.uint8)
    path = tmp_path / "labels.idx"
    path.write_bytes(gz(idx_bytes(arr)))
    np.testing.assert_array_equal(read_idx(path), arr)


def test_read_idx_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.idx.gz"
    with pytest.raises(GraphcError) as e:
        read_idx(path)
    assert render(e) == f"{path}: error[E601]: no such file"


def test_read_idx_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "page.idx"
    path.write_bytes(b"<html>not data</html>")
    with pytest.raises(GraphcError) as e:
        read_idx(path)
    assert render(e) == (
        f"{path}: error[E608]: not an IDX file: magic number 0x3c68746d, expected 0x0000080N\n"
        "hint: an IDX file starts with two zero bytes, a type code (0x08 unsigned byte, "
        "0x09 signed byte, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64) "
        "and the number of dimensions"
    )


def test_read_idx_unknown_type_code_and_zero_dims(tmp_path: Path) -> None:
    path = tmp_path / "x.idx"
    path.write_bytes(bytes([0, 0, 0x07, 1, 0, 0, 0, 0]))
    with pytest.raises(GraphcError) as e:
        read_idx(path)
    assert e.value.message == "not an IDX file: unknown type code 0x07 in magic number 0x00000701"
    path.write_bytes(bytes([0, 0, 0x08, 0]))
    with pytest.raises(GraphcError) as e:
        read_idx(path)
    assert e.value.message == "not an IDX file: magic number 0x00000800 declares 0 dimensions"


def test_read_idx_empty_and_short(tmp_path: Path) -> None:
    path = tmp_path / "x.idx"
    path.write_bytes(b"")
    with pytest.raises(GraphcError) as e:
        read_idx(path)
    assert render(e) == f"{path}: error[E608]: not an IDX file: the file is empty"
    path.write_bytes(b"\0\0\x08")
    with pytest.raises(GraphcError) as e:
        read_idx(path)
    assert e.value.message == "not an IDX file: only 3 bytes, too short for the 4-byte magic number"


def test_read_idx_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "x.idx"
    path.write_bytes(bytes([0, 0, 0x08, 3, 0, 0, 0, 5]))
    with pytest.raises(GraphcError) as e:
        read_idx(path)
    assert e.value.message == ("truncated IDX file: header declares 3 dimensions (16 bytes of header), found 8 bytes")


def test_read_idx_truncated_data(tmp_path: Path) -> None:
    # A header promising all 60000 training images, followed by 1234 bytes.
    header = bytes([0, 0, 0x08, 3]) + np.array([60000, 28, 28], dtype=">u4").tobytes()
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gz(header + bytes(1234)))
    with pytest.raises(GraphcError) as e:
        read_idx(path)
    assert render(e) == (
        f"{path}: error[E608]: truncated IDX file: header says 60000 images of 28x28 "
        "(47040000 bytes of data), found 1234 bytes\n"
        "hint: delete the file and download it again"
    )


def test_read_idx_trailing_bytes(tmp_path: Path) -> None:
    path = tmp_path / "labels.idx"
    path.write_bytes(idx_bytes(np.zeros(5, dtype=np.uint8)) + b"xyz")
    with pytest.raises(GraphcError) as e:
        read_idx(path)
    assert render(e) == (
        f"{path}: error[E608]: IDX file has 3 trailing bytes: header says 5 entries "
        "(5 bytes of data), found 8 bytes\n"
        "hint: delete the file and download it again"
    )


def test_read_idx_size_accounts_for_itemsize(tmp_path: Path) -> None:
    path = tmp_path / "m.idx"
    path.write_bytes(idx_bytes(np.zeros((2, 3)), 0x0E)[:-8])
    with pytest.raises(GraphcError) as e:
        read_idx(path)
    assert e.value.message == ("truncated IDX file: header says 2 rows of 3 (48 bytes of data), found 40 bytes")


def test_read_idx_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "a.idx.gz"
    path.write_bytes(gz(idx_bytes(np.arange(100, dtype=np.uint8)))[:-12])
    with pytest.raises(GraphcError) as e:
        read_idx(path)
    assert render(e) == (
        f"{path}: error[E607]: corrupt gzip file: the compressed data ends early "
        "(the file is truncated)\n"
        "hint: delete the file and download it again"
    )


def test_read_idx_gzip_bad_crc(tmp_path: Path) -> None:
    payload = idx_bytes(np.arange(100, dtype=np.uint8))
    blob = bytearray(gz(payload))
    blob[-8:-4] = b"\0\0\0\0"  # zero the CRC32 in the trailer
    path = tmp_path / "a.idx.gz"
    path.write_bytes(bytes(blob))
    with pytest.raises(GraphcError) as e:
        read_idx(path)
    assert render(e) == (
        f"{path}: error[E607]: corrupt gzip file: CRC check failed 0x0 != 0xc6aa1900\n"
        "hint: delete the file and download it again"
    )


def test_read_idx_gzip_corrupt_stream(tmp_path: Path) -> None:
    blob = bytearray(gz(idx_bytes(np.arange(100, dtype=np.uint8))))
    blob[10] = 0xFF  # first byte of the deflate stream: an invalid block type
    path = tmp_path / "a.idx.gz"
    path.write_bytes(bytes(blob))
    with pytest.raises(GraphcError) as e:
        read_idx(path)
    assert render(e) == (
        f"{path}: error[E607]: corrupt gzip file: Error -3 while decompressing data: "
        "invalid block type\n"
        "hint: delete the file and download it again"
    )


def test_read_idx_gz_name_but_not_gzip(tmp_path: Path) -> None:
    path = tmp_path / "a.idx.gz"
    path.write_bytes(idx_bytes(np.zeros(3, dtype=np.uint8)))
    with pytest.raises(GraphcError) as e:
        read_idx(path)
    assert render(e) == (
        f"{path}: error[E607]: not a gzip file: the name ends in .gz but the file does not "
        "start with the gzip magic bytes 1f 8b\n"
        "hint: rename the file without .gz if it is a raw IDX file, or download it again"
    )


def test_read_idx_directory(tmp_path: Path) -> None:
    with pytest.raises(GraphcError) as e:
        read_idx(tmp_path)
    assert render(e) == f"{tmp_path}: error[E602]: is a directory, expected an IDX file"


# ---------------------------------------------------------------- mnist_dir


def test_mnist_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert mnist_dir() == Path.home() / ".cache" / "graphc" / "mnist"
    monkeypatch.setenv("GRAPHC_DATA", str(tmp_path))
    assert mnist_dir() == tmp_path / "mnist"
    assert mnist_dir(tmp_path / "mine") == tmp_path / "mine"
    assert mnist_dir(str(tmp_path / "mine")) == tmp_path / "mine"
    monkeypatch.setenv("GRAPHC_DATA", "")
    assert mnist_dir() == Path.home() / ".cache" / "graphc" / "mnist"


# ---------------------------------------------------------------- download


def test_download_from_local_mirror(server: Server, tmp_path: Path, capsys) -> None:
    files = tiny_mnist()
    write_files(server.root, files)
    target = tmp_path / "mnist"
    out = download_mnist(target, mirrors=[server.url], checksums=digests(files), progress=False)
    assert out == target
    for name, content in files.items():
        assert (target / name).read_bytes() == content
    assert leftovers(target) == []
    assert sorted(server.requests) == sorted("/" + n for n in NAMES)
    assert capsys.readouterr().err == ""
    # Everything present now: a second call touches nothing.
    download_mnist(target, mirrors=[server.url], checksums=digests(files), progress=False)
    assert len(server.requests) == 4


def test_downloaded_files_get_the_mode_open_would_give(server: Server, tmp_path: Path) -> None:
    files = tiny_mnist()
    write_files(server.root, files)
    umask = os.umask(0o022)
    try:
        target = download_mnist(tmp_path / "mnist", mirrors=[server.url], checksums=digests(files), progress=False)
    finally:
        os.umask(umask)
    assert {(target / n).stat().st_mode & 0o777 for n in NAMES} == {0o644}  # not mkstemp's 0600


def test_download_uses_env_mirror_and_falls_back(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = tiny_mnist()
    write_files(server.root / "m", files)
    # The first mirror 404s on everything; the second (no trailing slash) works.
    monkeypatch.setenv("GRAPHC_MNIST_MIRROR", f"{server.url}absent/ {server.url}m")
    target = tmp_path / "mnist"
    download_mnist(target, checksums=digests(files), progress=False)
    assert all((target / n).read_bytes() == files[n] for n in NAMES)
    assert server.requests.count("/absent/train-images-idx3-ubyte.gz") == 1
    assert leftovers(target) == []


def test_download_only_fetches_missing_and_never_clobbers(server: Server, tmp_path: Path) -> None:
    files = tiny_mnist()
    write_files(server.root, files)
    target = tmp_path / "mnist"
    target.mkdir()
    mine = b"a file the person put here"
    (target / "train-images-idx3-ubyte.gz").write_bytes(mine)
    download_mnist(target, mirrors=[server.url], checksums=digests(files), progress=False)
    assert (target / "train-images-idx3-ubyte.gz").read_bytes() == mine
    assert "/train-images-idx3-ubyte.gz" not in server.requests
    assert len(server.requests) == 3


def test_download_checksum_mismatch_leaves_nothing(server: Server, tmp_path: Path) -> None:
    files = tiny_mnist()
    write_files(server.root, files)
    sums = digests(files)
    good = sums["train-labels-idx1-ubyte.gz"]
    sums["train-labels-idx1-ubyte.gz"] = "0" * 64
    target = tmp_path / "mnist"
    target.mkdir()
    previous = b"previous good copy"
    (target / "train-images-idx3-ubyte.gz").write_bytes(previous)
    with pytest.raises(GraphcError) as e:
        download_mnist(target, mirrors=[server.url], checksums=sums, progress=False)
    assert render(e) == (
        f"{target}: error[E609]: MNIST file train-labels-idx1-ubyte.gz is missing and could "
        "not be downloaded:\n"
        f"  {server.url}train-labels-idx1-ubyte.gz: checksum mismatch: SHA-256 of the "
        f"decompressed content is {good}, expected {'0' * 64}\n"
        f"hint: {FIX.format(d=target)}"
    )
    assert (target / "train-images-idx3-ubyte.gz").read_bytes() == previous
    assert not (target / "train-labels-idx1-ubyte.gz").exists()
    assert leftovers(target) == []


def test_download_checks_real_table_by_default(server: Server, tmp_path: Path) -> None:
    write_files(server.root, tiny_mnist())
    target = tmp_path / "mnist"
    with pytest.raises(GraphcError) as e:
        download_mnist(target, mirrors=[server.url], progress=False)
    assert f"expected {MNIST_SHA256['train-images-idx3-ubyte.gz']}" in e.value.message
    assert sorted(p.name for p in target.iterdir()) == []


def test_download_corrupt_gzip_from_mirror(server: Server, tmp_path: Path) -> None:
    files = tiny_mnist()
    sums = digests(files)
    files["train-images-idx3-ubyte.gz"] = files["train-images-idx3-ubyte.gz"][:-20]
    write_files(server.root, files)
    target = tmp_path / "mnist"
    with pytest.raises(GraphcError) as e:
        download_mnist(target, mirrors=[server.url], checksums=sums, progress=False)
    assert e.value.message.endswith(
        "train-images-idx3-ubyte.gz: downloaded data is not usable: corrupt gzip file: "
        "the compressed data ends early (the file is truncated)"
    )
    assert list(target.iterdir()) == []


def test_download_progress_bar_only_on_a_terminal(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    files = tiny_mnist()
    write_files(server.root, files)
    # progress=True but stderr is captured (not a TTY): no bar.
    download_mnist(tmp_path / "a", mirrors=[server.url], checksums=digests(files))
    assert capsys.readouterr().err == ""

    class FakeTTY(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    download_mnist(tmp_path / "b", mirrors=[server.url], checksums=digests(files))
    assert "train-images-idx3-ubyte.gz" in tty.getvalue()
    tty2 = FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty2)
    download_mnist(tmp_path / "c", mirrors=[server.url], checksums=digests(files), progress=False)
    assert tty2.getvalue() == ""


def test_no_network_error_names_dir_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    monkeypatch.setenv("GRAPHC_MNIST_MIRROR", f"http://127.0.0.1:{port}/")
    monkeypatch.setenv("GRAPHC_DATA", str(tmp_path))
    target = tmp_path / "mnist"
    with pytest.raises(GraphcError) as e:
        load_mnist(progress=False)
    text = render(e)
    refused = f"[Errno {errno.ECONNREFUSED}] {os.strerror(errno.ECONNREFUSED)}"
    assert text == (
        f"{target}: error[E609]: MNIST file train-images-idx3-ubyte.gz is missing and could "
        "not be downloaded:\n"
        f"  http://127.0.0.1:{port}/train-images-idx3-ubyte.gz: {refused}\n"
        f"hint: {FIX.format(d=target)}"
    )
    assert list(target.iterdir()) == []


def test_download_timeout(tmp_path: Path) -> None:
    # A socket that listens but never answers: the connect succeeds, the read times out.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        url = f"http://127.0.0.1:{s.getsockname()[1]}/"
        with pytest.raises(GraphcError) as e:
            download_mnist(tmp_path / "m", mirrors=[url], progress=False, timeout=0.2)
    assert f"  {url}train-images-idx3-ubyte.gz: timed out after 0.2 s" in e.value.message
    assert list((tmp_path / "m").iterdir()) == []


def test_download_http_error_on_all_mirrors(server: Server, tmp_path: Path) -> None:
    with pytest.raises(GraphcError) as e:
        download_mnist(tmp_path / "m", mirrors=[server.url, server.url + "x/"], progress=False)
    assert e.value.message == (
        "MNIST file train-images-idx3-ubyte.gz is missing and could not be downloaded:\n"
        f"  {server.url}train-images-idx3-ubyte.gz: HTTP 404 File not found\n"
        f"  {server.url}x/train-images-idx3-ubyte.gz: HTTP 404 File not found"
    )


# ---------------------------------------------------------------- load_mnist


def test_load_mnist_options(tmp_path: Path, small_counts: None) -> None:
    files = tiny_mnist()
    write_files(tmp_path, files)
    images = gzip.decompress(files["train-images-idx3-ubyte.gz"])[16:]
    raw = np.frombuffer(images, dtype=np.uint8).reshape(6, 28, 28)

    (x, t), (xt, tt) = load_mnist(tmp_path, download=False)
    assert x.shape == (6, 784) and x.dtype == np.float32
    assert xt.shape == (4, 784)
    np.testing.assert_allclose(x, raw.reshape(6, 784) / 255, rtol=1e-6)
    assert t.dtype == np.int64 and t.tolist() == [0, 1, 2, 3, 4, 5]
    assert tt.tolist() == [0, 3, 6, 9]
    assert not x.flags.writeable and not t.flags.writeable

    (x, t), _ = load_mnist(tmp_path, normalize=False, flatten=False, one_hot=True, dtype=np.float64, download=False)
    assert x.shape == (6, 1, 28, 28) and x.dtype == np.float64
    np.testing.assert_array_equal(x[:, 0], raw)
    assert t.shape == (6, 10) and t.dtype == np.float64
    np.testing.assert_array_equal(t.argmax(axis=1), np.arange(6))
    assert t.sum() == 6


def test_load_mnist_cache(tmp_path: Path, small_counts: None, monkeypatch) -> None:
    write_files(tmp_path, tiny_mnist())
    first = load_mnist(tmp_path, download=False)
    calls = []
    monkeypatch.setattr(data, "read_idx", lambda p: calls.append(p))
    assert load_mnist(tmp_path, download=False)[0][0] is first[0][0]
    # Other options reuse the decoded files too.
    load_mnist(tmp_path, one_hot=True, download=False)
    assert calls == []


def test_load_mnist_downloads_missing(server: Server, tmp_path: Path, small_counts, monkeypatch):
    files = tiny_mnist()
    write_files(server.root, files)
    monkeypatch.setattr(data, "MNIST_SHA256", digests(files))
    monkeypatch.setenv("GRAPHC_MNIST_MIRROR", server.url)
    (x, t), _ = load_mnist(tmp_path / "m", progress=False)
    assert x.shape == (6, 784) and len(server.requests) == 4


def test_load_mnist_missing_without_download(tmp_path: Path) -> None:
    write_files(tmp_path, {"t10k-labels-idx1-ubyte.gz": b""})
    with pytest.raises(GraphcError) as e:
        load_mnist(tmp_path, download=False)
    assert render(e) == (
        f"{tmp_path}: error[E609]: MNIST files missing: train-images-idx3-ubyte.gz, "
        "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz\n"
        f"hint: {FIX.format(d=tmp_path)}"
    )


def test_load_mnist_structure_errors(tmp_path: Path, small_counts: None) -> None:
    hint = "hint: this is not the canonical MNIST file; delete it to download a fresh copy"
    files = tiny_mnist()

    def fails(name: str, content: bytes) -> str:
        write_files(tmp_path, {**files, name: content})
        with pytest.raises(GraphcError) as e:
            load_mnist(tmp_path, download=False)
        return render(e)

    path = tmp_path / "train-images-idx3-ubyte.gz"
    bad = gz(idx_bytes(np.zeros((6, 28, 27), dtype=np.uint8)))
    assert fails(path.name, bad) == (
        f"{path}: error[E611]: expected images of shape N x 28 x 28, found 6x28x27\n{hint}"
    )
    bad = gz(idx_bytes(np.zeros((5, 28, 28), dtype=np.uint8)))
    assert fails(path.name, bad) == f"{path}: error[E611]: expected 6 train images, found 5\n{hint}"
    bad = gz(idx_bytes(np.zeros((1, 28, 28)), 0x0D))  # 6 float32 images would be larger than the file can be
    assert fails(path.name, bad) == (
        f"{path}: error[E611]: expected unsigned-byte data (IDX type 0x08), found float32\n{hint}"
    )
    bad = gz(idx_bytes(np.zeros((6, 28, 28)), 0x0D))
    assert fails(path.name, bad) == (
        f"{path}: error[E607]: decompresses to more than 4,836 bytes, the most this file can hold\n"
        "hint: delete the file and download it again"
    )
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad = gz(idx_bytes(np.array([1, 2, 3], dtype=np.uint8)))
    assert fails(path.name, bad) == (f"{path}: error[E611]: 3 labels for 4 images in t10k-images-idx3-ubyte.gz\n{hint}")
    bad = gz(idx_bytes(np.array([1, 2, 12, 3], dtype=np.uint8)))
    assert fails(path.name, bad) == (f"{path}: error[E611]: label 12 at index 2 is out of range 0..9\n{hint}")
    bad = gz(idx_bytes(np.zeros((4, 1), dtype=np.uint8)))
    assert fails(path.name, bad) == (
        f"{path}: error[E611]: expected a 1-dimensional list of labels, found shape 4x1\n{hint}"
    )


def test_load_mnist_canonical_counts_by_default(tmp_path: Path) -> None:
    write_files(tmp_path, tiny_mnist())
    with pytest.raises(GraphcError) as e:
        load_mnist(tmp_path, download=False)
    assert e.value.message == "expected 60000 train images, found 6"


def test_load_mnist_bad_dtype(tmp_path: Path) -> None:
    with pytest.raises(GraphcError) as e:
        load_mnist(tmp_path, dtype=np.int32)
    assert render(e) == (
        "graphc: error[E503]: cannot normalize MNIST to [0, 1] in dtype int32\n"
        "hint: use a floating dtype such as float32, or do not normalize"
    )


# ---------------------------------------------------------------- real data


def real_mnist_dir() -> Path | None:
    candidates = [Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"]
    if os.environ.get("GRAPHC_DATA"):
        candidates.append(Path(os.environ["GRAPHC_DATA"]) / "mnist")
    for d in candidates:
        if all((d / n).is_file() for n in NAMES):
            return d
    return None


# Captured at import, before the autouse fixture clears GRAPHC_DATA.
REAL_DIR = real_mnist_dir()


@pytest.mark.skipif(REAL_DIR is None, reason="real MNIST files not found")
def test_real_mnist() -> None:
    assert REAL_DIR is not None
    for name in NAMES:
        assert sha256_of_content(REAL_DIR / name) == MNIST_SHA256[name], name
    assert data.verify_mnist(REAL_DIR) == REAL_DIR
    (x, t), (xt, tt) = load_mnist(REAL_DIR, download=False)
    assert x.shape == (60000, 784) and xt.shape == (10000, 784)
    assert x.dtype == np.float32 and xt.dtype == np.float32
    assert t.shape == (60000,) and tt.shape == (10000,) and t.dtype == np.int64
    assert 0.0 <= x.min() and x.max() == 1.0 and 0.0 <= xt.min() and xt.max() == 1.0
    assert set(np.unique(t)) == set(range(10)) and set(np.unique(tt)) == set(range(10))
    assert t[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first training labels


# ---------------------------------------------------------------- the parsed arrays, cached between processes


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per time the .gz files are parsed (not loaded from the cache)."""
    calls: list[int] = []
    read = data._read_splits

    def counting(paths):
        calls.append(1)
        return read(paths)

    monkeypatch.setattr(data, "_read_splits", counting)
    return calls


def as_new_process(directory: Path):
    data.clear_cache()  # the per-process cache forgotten: what a new process would load
    return load_mnist(directory, normalize=False, dtype=np.uint8, download=False)


def parsed(directory: Path):
    return tuple(
        (read_idx(directory / MNIST_FILES[f"{split}_images"]), read_idx(directory / MNIST_FILES[f"{split}_labels"]))
        for split in ("train", "test")
    )


def assert_same_arrays(loaded, expected) -> None:
    for (x, t), (ex, et) in zip(loaded, expected):
        assert x.dtype == np.uint8 and x.tobytes() == ex.tobytes()
        assert t.tobytes() == et.astype(np.int64).tobytes()


def cache_files() -> list[Path]:
    return sorted(p for p in Path(os.environ["GRAPHC_CACHE_DIR"]).rglob("*") if p.is_file())


def test_the_first_load_parses_and_caches_the_next_loads_the_cache(tmp_path, small_counts, parses) -> None:
    write_files(tmp_path, tiny_mnist())
    first = as_new_process(tmp_path)
    assert len(parses) == 1
    names = [p.name for p in cache_files()]
    assert "sources.json" in names and len(names) == 5  # the record and four .npy files
    second = as_new_process(tmp_path)
    assert len(parses) == 1  # from the cache
    assert_same_arrays(second, parsed(tmp_path))
    assert_same_arrays(first, parsed(tmp_path))
    assert not second[0][0].flags.writeable
    # Every dtype and layout is made from the cached bytes alike.
    data.clear_cache()
    (x, _), _ = load_mnist(tmp_path, dtype=np.float64, download=False)
    assert x.tobytes() == (parsed(tmp_path)[0][0].reshape(6, 784) / 255.0).tobytes()
    assert len(parses) == 1


def test_a_changed_source_file_rebuilds_the_cache(tmp_path, small_counts, parses) -> None:
    write_files(tmp_path, tiny_mnist(seed=0))
    as_new_process(tmp_path)
    write_files(tmp_path, tiny_mnist(seed=1))  # other images, the same sizes
    loaded = as_new_process(tmp_path)
    assert len(parses) == 2
    assert_same_arrays(loaded, parsed(tmp_path))
    assert len([p for p in cache_files() if p.suffix == ".npy"]) == 4  # the stale arrays are gone
    as_new_process(tmp_path)
    assert len(parses) == 2


def test_a_touched_source_file_with_the_same_bytes_keeps_the_cache(tmp_path, small_counts, parses) -> None:
    write_files(tmp_path, tiny_mnist())
    as_new_process(tmp_path)
    path = tmp_path / MNIST_FILES["train_images"]
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert_same_arrays(as_new_process(tmp_path), parsed(tmp_path))
    assert len(parses) == 1  # hashed, found the same, and recorded with its new time


@pytest.mark.parametrize("damage", ["truncated array", "garbage array", "garbage record", "no record", "old version"])
def test_a_corrupt_cache_is_rebuilt_never_an_error(tmp_path, small_counts, parses, damage) -> None:
    write_files(tmp_path, tiny_mnist())
    as_new_process(tmp_path)
    [record] = [p for p in cache_files() if p.name == "sources.json"]
    array = next(p for p in cache_files() if p.name.startswith("train_images"))
    if damage == "truncated array":
        array.write_bytes(array.read_bytes()[:200])
    elif damage == "garbage array":
        array.write_bytes(b"\x93NUMPY garbage" * 10)
    elif damage == "garbage record":
        record.write_text("{not json")
    elif damage == "no record":
        record.unlink()
    else:
        record.write_text(record.read_text().replace('"version": 1', '"version": 0'))
    assert_same_arrays(as_new_process(tmp_path), parsed(tmp_path))
    assert len(parses) == 2
    as_new_process(tmp_path)
    assert len(parses) == 2  # rebuilt whole


def test_an_unusable_cache_dir_only_costs_the_parse(tmp_path, small_counts, parses, monkeypatch) -> None:
    write_files(tmp_path / "m", tiny_mnist())
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "a-file"))
    assert_same_arrays(as_new_process(tmp_path / "m"), parsed(tmp_path / "m"))
    as_new_process(tmp_path / "m")
    assert len(parses) == 2
    if Path("/proc/self").is_dir():  # a directory even root cannot write in
        monkeypatch.setenv("GRAPHC_CACHE_DIR", "/proc")
        assert_same_arrays(as_new_process(tmp_path / "m"), parsed(tmp_path / "m"))


def test_the_cache_never_writes_beside_the_data(tmp_path, small_counts) -> None:
    write_files(tmp_path / "m", tiny_mnist())
    before = sorted(os.listdir(tmp_path / "m"))
    (tmp_path / "m").chmod(0o555)
    try:
        as_new_process(tmp_path / "m")
        as_new_process(tmp_path / "m")
    finally:
        (tmp_path / "m").chmod(0o755)
    assert sorted(os.listdir(tmp_path / "m")) == before
    assert len(cache_files()) == 5


def test_a_broken_source_file_is_reported_even_with_a_cache(tmp_path, small_counts) -> None:
    write_files(tmp_path, tiny_mnist())
    as_new_process(tmp_path)
    (tmp_path / MNIST_FILES["train_labels"]).write_bytes(b"not gzip at all")
    with pytest.raises(GraphcError, match="train-labels-idx1-ubyte.gz"):
        as_new_process(tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(REAL_DIR is None, reason="real MNIST files not found")
def test_real_mnist_from_the_cache_is_the_parsed_mnist(parses) -> None:
    assert REAL_DIR is not None
    first = as_new_process(REAL_DIR)
    second = as_new_process(REAL_DIR)
    assert len(parses) == 1
    expected = parsed(REAL_DIR)
    assert_same_arrays(first, expected)
    assert_same_arrays(second, expected)
