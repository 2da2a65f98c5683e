"""The installed package finds its grammar outside the source tree.

Builds a real wheel from the repository, checks the grammar is inside it,
unpacks it into a temporary directory and runs a model there with nothing
of the source tree on the path.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from helpers import ROOT, isolated

PROGRAM = textwrap.dedent("""
    import json, sys
    import graphc, graphc.grammars, graphc.parse
    program = graphc.compile_file("apple.graph")
    price = float(program.forward()["price"])
    grads = {name: float(g) for name, g in program.backward().items()}
    print(json.dumps({
        "graphc": graphc.__file__,
        "grammars": graphc.grammars.__file__,
        "grammar": graphc.parse.grammar_text()[:40],
        "price": price,
        "grads": grads,
        "path": sys.path,
    }))
""")


def test_wheel_carries_the_grammar(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    assert "graphc/grammars/graphc.lark" in names
    assert "graphc/grammars/__init__.py" in names
    assert "graphc/parse.py" in names
    grammar = zipfile.ZipFile(wheel).read("graphc/grammars/graphc.lark").decode()
    assert grammar == (ROOT / "grammars" / "graphc.lark").read_text()


def test_unpacked_wheel_compiles_and_runs_a_model(wheel: Path, tmp_path: Path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    shutil.copy(ROOT / "models" / "apple.graph", cwd / "apple.graph")
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, cwd=cwd, env=isolated(site), timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert Path(report["graphc"]).resolve() == (site / "graphc" / "__init__.py").resolve()
    assert Path(report["grammars"]).resolve() == (site / "graphc" / "grammars" / "__init__.py").resolve()
    assert not Path(report["graphc"]).resolve().is_relative_to(ROOT)
    assert not any(entry and Path(entry).resolve() == ROOT for entry in report["path"])
    assert report["grammar"].startswith("// The graphc language")
    assert report["price"] == pytest.approx(220, abs=1e-12)
    assert report["grads"] == pytest.approx({"apple": 2.2, "apple_num": 110, "tax": 200}, abs=1e-12)


def test_unpacked_wheel_runs_the_command_line(wheel: Path, tmp_path: Path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    shutil.copy(ROOT / "models" / "apple.graph", tmp_path / "apple.graph")
    result = subprocess.run(
        [sys.executable, "-m", "graphc", "run", "apple.graph", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=isolated(site),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outputs"]["price"] == pytest.approx(220, abs=1e-12)
