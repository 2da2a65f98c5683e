"""The VS Code extension in editors/vscode: its TextMate grammar passes its scope tests
(editors/vscode/tests/*.graph, run by vscode-tmgrammar-test from npm on VS Code's own
engine, vscode-textmate with Oniguruma), a wrong assertion fails them, its word lists are
graphc's, and its manifest names what exists."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import needs

from graphc import initializers, ir
from graphc.ops import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
EXTENSION = ROOT / "editors" / "vscode"
GRAMMAR = EXTENSION / "syntaxes" / "graph.tmLanguage.json"
TOOL = EXTENSION / "node_modules" / ".bin" / "vscode-tmgrammar-test"


def _run_tool(*tests: str) -> subprocess.CompletedProcess[str]:
    needs("vscode-tmgrammar-test", TOOL.exists() and shutil.which("npx") is not None, "cd editors/vscode && npm ci")
    return subprocess.run(
        ["npx", "--no-install", "vscode-tmgrammar-test", "--grammar", str(GRAMMAR), *tests],
        cwd=EXTENSION,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_grammar_passes_its_scope_tests():
    tests = sorted(p.name for p in (EXTENSION / "tests").glob("*.graph"))
    assert len(tests) >= 2
    result = _run_tool("tests/*.graph")
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(re.findall(r"tests/(\S+\.graph) run successfuly", result.stdout)) == tests


def test_a_wrong_scope_assertion_fails(tmp_path):
    wrong = tmp_path / "wrong.graph"
    wrong.write_text('# SYNTAX TEST "source.graphc"\n    y = relu(x)\n#       ^^^^ keyword.other.graphc\n')
    result = _run_tool(str(wrong))
    assert result.returncode != 0
    assert "missing required scopes: keyword.other.graphc" in result.stdout
    assert "actual: source.graphc support.function.op.graphc" in result.stdout


def _patterns(node: object) -> list[dict]:
    """Every pattern of the grammar, nested ones included."""
    if isinstance(node, dict):
        return ([node] if "match" in node else []) + [p for v in node.values() for p in _patterns(v)]
    if isinstance(node, list):
        return [p for v in node for p in _patterns(v)]
    return []


def _words(scope: str) -> set[str]:
    """The words of the grammar's patterns for `scope`, whole-word alternatives `(?:a|b|c)`."""
    found: set[str] = set()
    for pattern in _patterns(json.loads(GRAMMAR.read_text())):
        if pattern.get("name") == scope:
            for group in re.findall(r"\(\?:([a-z0-9_|]+)\)", pattern["match"]):
                found |= set(group.split("|"))
    return found


def test_the_grammar_knows_every_op_initializer_dtype_and_keyword():
    assert _words("support.function.op.graphc") == set(REGISTRY), "add the new op to graph.tmLanguage.json"
    assert _words("support.function.initializer.graphc") == set(initializers.KINDS)
    assert _words("support.type.dtype.graphc") == set(ir.DTYPES)
    grammar = json.loads(GRAMMAR.read_text())
    text = json.dumps(grammar)
    lark = (ROOT / "grammars" / "graphc.lark").read_text()
    for keyword in set(re.findall(r'"([a-z][a-z0-9]*)"', lark)) - set(ir.DTYPES):
        assert re.search(rf"[(|:]{keyword}[|)]", text), f"the grammar does not highlight the keyword `{keyword}`"


def test_the_manifest_names_the_language_its_grammar_and_configuration():
    manifest = json.loads((EXTENSION / "package.json").read_text())
    (language,) = manifest["contributes"]["languages"]
    (grammar,) = manifest["contributes"]["grammars"]
    assert language["extensions"] == [".graph"]
    assert grammar["language"] == language["id"]
    assert grammar["scopeName"] == json.loads(GRAMMAR.read_text())["scopeName"] == "source.graphc"
    assert (EXTENSION / grammar["path"]).resolve() == GRAMMAR
    configuration = json.loads((EXTENSION / language["configuration"]).read_text())
    assert configuration["comments"] == {"lineComment": "#"}
    assert configuration["brackets"] == [["{", "}"], ["[", "]"], ["(", ")"]]
    lock = json.loads((EXTENSION / "package-lock.json").read_text())
    assert "node_modules/vscode-tmgrammar-test" in lock["packages"]


@pytest.mark.parametrize("path", sorted((EXTENSION / "tests").glob("*.graph")), ids=lambda p: p.name)
def test_the_scope_tests_are_valid_graphc(path):
    from graphc.parse import parse

    parse(path.read_text())  # each test file is a real .graph file, so it shows real syntax
