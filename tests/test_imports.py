"""Imports: blocks from other files (relative to the importing file), from the
standard library inside the package (also from an installed wheel), and every
way an import can go wrong, with its whole message."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from helpers import ROOT, isolated

import graphc
from graphc.cli import main
from graphc.errors import GraphcError
from graphc.imports import std_dir
from graphc.testing import check_grads

LAYERS = """
import "more.graph"

block dense(x, n_out) {
    param W: [in(x), n_out] = he
    param b: [n_out] = zeros
    x -> affine(W, b) -> relu -> out
}
"""

# Uses `dense`, which it does not import: blocks of all the files a graph imports are one set.
MORE = """
block twice(x, n) {
    x -> dense(n) -> dense(n) -> out
}

# Graphs in an imported file are not compiled.
graph not_compiled {
    x = relu(undefined)
}
"""

MAIN = """
import "lib/layers.graph"

graph g {
    dim N = 2
    input x: f64[N, 4] = uniform(0, 1)
    x -> twice(3) as h -> dense(2) -> y
    output y
}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def text(block: str) -> str:
    return textwrap.dedent(block).strip("\n")


def error(path: Path) -> str:
    with pytest.raises(GraphcError) as info:
        graphc.compile_file(path)
    return info.value.render()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(tmp_path / "lib" / "layers.graph", LAYERS)
    write(tmp_path / "lib" / "more.graph", MORE)
    return write(tmp_path / "main.graph", MAIN)


def test_imports_are_relative_to_the_importing_file(project: Path, monkeypatch, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not the directory of any file
    program = graphc.compile_file(project)
    assert list(program.compiled.ir.instances) == ["h", "h.dense1", "h.dense2", "y"]
    assert {n: p.shape for n, p in program.params.items()} == {
        "h.dense1.W": (4, 3),
        "h.dense1.b": (3,),
        "h.dense2.W": (3, 3),
        "h.dense2.b": (3,),
        "y.W": (3, 2),
        "y.b": (2,),
    }
    assert program.forward()["y"].shape == (2, 2)
    assert all(row.ok for row in check_grads(program))


def test_a_file_imported_twice_brings_its_blocks_once(project: Path, tmp_path: Path):
    write(tmp_path / "lib" / "both.graph", 'import "layers.graph"\nimport "more.graph"\n')
    write(tmp_path / "diamond.graph", 'import "lib/both.graph"\nimport "lib/more.graph"\n' + MAIN.split("\n", 2)[2])
    program = graphc.compile_file(tmp_path / "diamond.graph")
    assert "y.W" in program.params


def test_an_import_cycle_is_an_error_at_the_import_that_closes_it(tmp_path: Path, monkeypatch):
    write(tmp_path / "a.graph", 'import "b.graph"\ngraph g {\n    input x = 1\n    output x\n}\n')
    write(tmp_path / "b.graph", 'import "a.graph"\n')
    monkeypatch.chdir(tmp_path)
    assert error(Path("a.graph")) == text("""
        b.graph:1:8: error[E141]: import cycle: a.graph -> b.graph -> a.graph
         1 | import "a.graph"
           |        ^^^^^^^^^
        hint: a file cannot import itself, even through others
    """)


def test_a_file_that_imports_itself(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.graph", 'import "a.graph"\ngraph g {\n    input x = 1\n    output x\n}\n')
    assert error(Path("a.graph")) == text("""
        a.graph:1:8: error[E141]: import cycle: a.graph -> a.graph
         1 | import "a.graph"
           |        ^^^^^^^^^
        hint: a file cannot import itself, even through others
    """)


def test_a_missing_or_unreadable_import(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lib").mkdir()
    write(tmp_path / "m.graph", 'import "nope.graph"\nimport "lib"\ngraph g {\n    input x = 1\n    output x\n}\n')
    assert error(Path("m.graph")) == text("""
        m.graph:1:8: error[E140]: cannot import `nope.graph`: no such file
         1 | import "nope.graph"
           |        ^^^^^^^^^^^^
        hint: looked for nope.graph; an import's path is relative to the file that imports it
        m.graph:2:8: error[E140]: cannot import `lib`: is a directory, not a .graph file
         2 | import "lib"
           |        ^^^^^
        hint: looked for lib; an import's path is relative to the file that imports it
    """)


def test_an_import_of_a_path_with_a_nul_character(tmp_path: Path, monkeypatch):
    # Found by the fuzzer: resolving the path raised ValueError, an internal error. (The excerpt
    # shows the NUL as U+FFFD.)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "n.graph").write_bytes(b'import "a\x00b"\ngraph g {\n    input x = 1\n    output x\n}\n')
    assert error(Path("n.graph")) == text("""
        n.graph:1:8: error[E140]: cannot import: no file has such a name
         1 | import "a\ufffdb"
           |        ^^^^^
        hint: a NUL character (\\x00) is in the path
    """)


def test_a_mistake_in_an_imported_file_is_shown_there_with_the_import(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "lib" / "bad.graph", "block b(x) {\n    x -> relu ->\n}\n")
    write(tmp_path / "m.graph", 'import "lib/bad.graph"\ngraph g {\n    input x = 1\n    output x\n}\n')
    assert error(Path("m.graph")) == text("""
        lib/bad.graph:2:17: error[E003]: unexpected end of line; expected `repeat` or a name
         2 |     x -> relu ->
           |                 ^
        m.graph:1:8: note: imported here
         1 | import "lib/bad.graph"
           |        ^^^^^^^^^^^^^^^
        hint: a statement ends at the end of its line; it goes on to the next only inside `( )` or `[ ]`, or where the next line starts with `->`
    """)


def test_a_shape_error_in_an_imported_block_shows_the_use(project: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "s.graph",
        'import "lib/layers.graph"\ngraph g {\n    input x: f64[N, 4]\n    param V: [3, 3] = he\n'
        "    x -> dense(2) -> affine(V, 0) -> y\n    output y\n}\n",
    )
    assert error(Path("s.graph")) == text("""
        s.graph:5:29: error[E201]: shape mismatch in `affine`: `dense1` has 2 features, `V` expects 3 (`dense1` is [N, 2], `V` is [3, 3])
         5 |     x -> dense(2) -> affine(V, 0) -> y
           |                             ^
        hint: param `V` is declared f64[3, 3] at line 4
    """)


def test_two_imports_that_define_one_block(project: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "other.graph", "block dense(x) {\n    x -> relu -> out\n}\n")
    write(tmp_path / "m.graph", 'import "lib/layers.graph"\nimport "other.graph"\n' + MAIN.split("\n", 2)[2])
    assert error(Path("m.graph")) == text("""
        m.graph:2:8: error[E142]: `import "other.graph"` brings in block `dense` a second time
         2 | import "other.graph"
           |        ^^^^^^^^^^^^^
        hint: `dense` is first defined at lib/layers.graph:3:7 and again at other.graph:1:7; import only one of the two
    """)


def test_a_block_defined_in_the_file_and_imported(project: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "m.graph",
        'import "lib/layers.graph"\nblock dense(x) {\n    x -> relu -> out\n}\n' + MAIN.split("\n", 2)[2],
    )
    assert error(Path("m.graph")) == text("""
        m.graph:2:7: error[E102]: duplicate definition of block `dense`
         2 | block dense(x) {
           |       ^^^^^
        hint: `dense` is first defined at lib/layers.graph:3:7; pick another name
    """)


def test_the_command_line_follows_imports(project: Path, capsys):
    assert main(["check", str(project)]) == 0
    assert "h.dense1.affine1" in capsys.readouterr().out


# --- the standard library ------------------------------------------------------------

STD_USE = """
import "std/layers.graph"

graph g {
    dim N = 2
    input x: f64[N, 5] = uniform(0, 1)
    input t: f64[N, 3] = onehot
    x -> dense(4) -> sigmoid_dense(4) -> linear(3) -> y
    loss = softmax_loss(y, t)
    output loss
}
"""


def test_the_standard_library_ships_dense_and_the_chapter_6_units():
    std = (std_dir() / "layers.graph").read_text()
    for block in ("linear(x, n_out)", "dense(x, n_out)", "sigmoid_dense(x, n_out)", "bn_relu_dropout(x, n_out, ratio)"):
        assert f"block {block} {{" in std
    assert "x -> affine(W, b) -> batchnorm(gamma, beta) -> relu -> dropout(ratio=ratio) -> out" in std


def test_std_blocks_from_the_source_tree(tmp_path: Path):
    program = graphc.compile_file(write(tmp_path / "m.graph", STD_USE))
    ir = program.compiled.ir
    assert [(n.name, n.op.name) for n in ir.nodes()] == [
        ("dense1.affine1", "affine"),
        ("dense1", "relu"),
        ("sigmoid_dense1.affine1", "affine"),
        ("sigmoid_dense1", "sigmoid"),
        ("y", "affine"),
        ("loss", "softmax_loss"),
    ]
    assert [i.block for i in ir.instances.values()] == ["dense", "sigmoid_dense", "linear"]
    # He for dense and linear, Xavier for sigmoid_dense, as the book initializes them.
    assert [(p.name, p.init.kind) for p in ir.params()][::2] == [
        ("dense1.W", "he"),
        ("sigmoid_dense1.W", "xavier"),
        ("y.W", "he"),
    ]
    assert all(row.ok for row in check_grads(program))


PROGRAM = textwrap.dedent("""
    import json
    import graphc
    program = graphc.compile_file("m.graph")
    print(json.dumps({"graphc": graphc.__file__, "params": {k: list(v.shape) for k, v in program.params.items()}}))
""")


def test_std_blocks_from_an_installed_wheel(wheel: Path, tmp_path: Path):
    names = zipfile.ZipFile(wheel).namelist()
    assert "graphc/std/layers.graph" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "work"
    write(work / "m.graph", STD_USE)
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, cwd=work, env=isolated(site), timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert Path(report["graphc"]).resolve().is_relative_to(site.resolve())
    assert report["params"] == {
        "dense1.W": [5, 4],
        "dense1.b": [4],
        "sigmoid_dense1.W": [4, 4],
        "sigmoid_dense1.b": [4],
        "y.W": [4, 3],
        "y.b": [3],
    }


def test_the_wheel_holds_the_source_trees_standard_library(wheel: Path):
    shipped = zipfile.ZipFile(wheel).read("graphc/std/layers.graph").decode()
    assert shipped == (ROOT / "graphc" / "std" / "layers.graph").read_text()


def test_a_file_of_blocks_alone_is_checked_but_has_nothing_to_run(capsys):
    layers = std_dir() / "layers.graph"
    assert main(["check", str(layers)]) == 0
    assert capsys.readouterr().out.endswith(": ok, 0 graphs, 0 warnings\n")
    assert main(["run", str(layers)]) == 2
    assert (
        capsys.readouterr().err
        == text(f"""
        {layers}: error[E113]: no graph to run: the file holds only blocks
        hint: a file of blocks is for `import "FILE"` in a file with a graph; `graphc check` checks how its blocks are defined
    """)
        + "\n"
    )
    with pytest.raises(GraphcError, match="no graph to run: the file holds only blocks"):
        graphc.compile_file(layers)
