"""Error codes: every diagnostic has one, every code in graphc/codes.py is used and
has an example that really produces it, `graphc explain CODE` shows it, and
docs/errors.md lists every code."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import pytest
from helpers import graphc_cli, needs

from graphc.codes import BY_CODE, CODES, RETIRED, explain_code, run_example
from graphc.errors import GraphcError

ROOT = Path(__file__).resolve().parent.parent
GRAPHC = ROOT / "graphc"

# Constructors of diagnostics, and helpers that pass a code on to one.
CONSTRUCTORS = {"GraphcError", "Diagnostic", "ShapeError", "_OutputFailed", "error"}


def _calls() -> list[tuple[Path, ast.Call]]:
    found = []
    for path in sorted(GRAPHC.rglob("*.py")):
        if path.name in ("errors.py", "codes.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                if name in CONSTRUCTORS:
                    found.append((path, node))
    return found


def _literal_codes() -> dict[str, list[str]]:
    """Every `code="E..."` written in graphc/ (outside the catalogue), with where."""
    used: dict[str, list[str]] = {}
    for path in sorted(GRAPHC.rglob("*.py")):
        if path.name == "codes.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "code":
                for value in ast.walk(node.value):  # a literal, or a choice of literals
                    if isinstance(value, ast.Constant) and re.fullmatch(r"[A-Z]\d{3}", str(value.value)):
                        used.setdefault(value.value, []).append(f"{path.relative_to(ROOT)}:{value.lineno}")
    return used


def test_every_diagnostic_is_made_with_a_code():
    # mypy checks it too (`code` has no default); this names the place.
    missing = [
        f"{path.relative_to(ROOT)}:{call.lineno}"
        for path, call in _calls()
        if not any(k.arg in ("code", "diagnostics") for k in call.keywords)
        and not (isinstance(call.func, ast.Attribute) and call.func.attr == "error" and not call.args)
    ]
    assert missing == []


def test_a_diagnostic_cannot_be_made_without_a_code():
    with pytest.raises(TypeError):
        GraphcError("no code")  # type: ignore[call-arg]


def test_the_codes_used_are_the_codes_catalogued():
    used = _literal_codes()
    assert sorted(set(used) - set(BY_CODE)) == []  # every code used is explained
    assert sorted(set(BY_CODE) - set(used)) == []  # and every code explained is used
    assert not set(RETIRED) & set(used)  # a retired code is never reported again


def test_the_catalogue_is_well_formed():
    codes = [c.code for c in CODES]
    assert len(codes) == len(set(codes)) and not set(codes) & set(RETIRED)
    assert codes == sorted(codes, key=lambda c: (c[0] == "W", c))  # errors in order, then warnings
    for entry in CODES:
        assert re.fullmatch(r"[EW]\d{3}", entry.code)
        assert entry.title and entry.explanation.endswith(".") and entry.fix.endswith(".")
        assert entry.example.command.startswith("graphc ") or entry.example.python


# Examples that train on MNIST take a few seconds each.
TRAINING = sorted(
    c.code for c in CODES if c.example.command.startswith("graphc train") and "--data-dir" not in c.example.command
)
QUICK = [c.code for c in CODES if c.code not in TRAINING]


@pytest.mark.parametrize("code", QUICK)
def test_the_example_of_each_code_produces_it(code):
    message, produced = run_example(BY_CODE[code].example)
    assert produced == code, message
    assert f"{BY_CODE[code].severity}[{code}]: " in message


@pytest.mark.slow
@pytest.mark.parametrize("code", TRAINING)
def test_the_training_examples_produce_their_codes(code):
    example = BY_CODE[code].example
    if "import torch" in example.setup:  # E910's: the workers' job needs the distributed extra
        needs("PyTorch", importlib.util.find_spec("torch") is not None, 'pip install "graphc[distributed]"')
    message, produced = run_example(example)
    assert produced == code, message


def test_explain_prints_the_explanation_the_example_its_message_and_the_fix(capsys):
    status, out, err = graphc_cli(capsys, "explain", "e103")
    assert (status, err) == (0, "")
    assert out == (
        "E103: unknown op or block\n"
        "\n"
        "A call names an op that does not exist and no block of that name is defined or\n"
        "imported.\n"
        "\n"
        "For example, bad.graph:\n"
        "\n"
        "    graph g {\n"
        "        input x: [2, 3]\n"
        "        h = rleu(x)\n"
        "        output h\n"
        "    }\n"
        "\n"
        "`graphc check bad.graph` says:\n"
        "\n"
        "bad.graph:3:9: error[E103]: unknown op `rleu`\n"
        " 3 |     h = rleu(x)\n"
        "   |         ^^^^\n"
        "hint: did you mean `relu`?\n"
        "\n"
        "Fix: Correct the name (the hint suggests the closest op); `graphc` ops are\n"
        "listed in docs/language.md.\n"
    )


def test_explain_shows_a_python_example_and_a_command_line_one(capsys):
    status, out, _ = graphc_cli(capsys, "explain", "E407")
    assert status == 0
    assert "this Python:\n\n    import graphc\n" in out
    assert (
        "\nraises:\n\ngraphc: error[E407]: backward() needs a forward() first\nhint: call program.forward(...) first\n"
        in out
    )
    status, out, _ = graphc_cli(capsys, "explain", "E405")
    assert (
        "`graphc run bad.graph --set z=1` says:\n\n<command line>:1:7: error[E405]: no input or param named `z`" in out
    )


def test_explain_a_warning(capsys):
    status, out, _ = graphc_cli(capsys, "explain", "W001")
    assert status == 0
    assert "bad.graph:4:5: warning[W001]: unused node `z`\n" in out


def test_explain_an_unknown_code_suggests_the_nearest(capsys):
    status, out, err = graphc_cli(capsys, "explain", "E1033")
    assert (status, out) == (2, "")
    assert err == (
        "graphc explain: error[E501]: `E1033` is not an error code\n"
        "hint: give a code such as E012, as a message shows it: `error[E012]`\n"
    )
    with pytest.raises(GraphcError) as raised:
        explain_code("E199")
    assert raised.value.render() == (
        "graphc explain: error[E501]: unknown error code `E199`\nhint: did you mean `E129`?"
    )


def test_explain_leaves_the_directory_and_environment_as_they_were(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = (Path.cwd(), dict(os.environ))
    explain_code("E509")  # its example empties PATH
    assert (Path.cwd(), dict(os.environ)) == before
    assert list(tmp_path.iterdir()) == []


def test_the_errors_page_lists_every_code_with_its_title():
    page = (ROOT / "docs" / "errors.md").read_text()
    listed = re.findall(r"^\| `([EW]\d{3})` \| (.+?) \|$", page, flags=re.M)
    assert listed == [(c.code, c.title) for c in CODES]


# --- check --json --------------------------------------------------------------------------


def _check_json(capsys, tmp_path, text: str | None, *flags: str) -> tuple[int, dict, str]:
    if text is not None:
        (tmp_path / "m.graph").write_text(text)
    status, out, err = graphc_cli(capsys, "check", "m.graph", "--json", *flags)
    return status, json.loads(out), err


def _at(line: int, column: int, end_line: int, end_column: int) -> dict:
    return {"line": line, "column": column, "end_line": end_line, "end_column": end_column}


def test_check_json_gives_every_error_with_its_code_place_and_hints(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, data, err = _check_json(
        capsys, tmp_path, "graph g {\n    input x = 2\n    y = rleu(x)\n    z = sigmoud(y)\n    output z\n}\n"
    )
    assert (status, err) == (2, "")
    assert data == {
        "file": "m.graph",
        "ok": False,
        "diagnostics": [
            {
                "code": "E103",
                "severity": "error",
                "file": "m.graph",
                **_at(3, 9, 3, 13),
                "message": "unknown op `rleu`",
                "hints": ["did you mean `relu`?"],
                "notes": [],
                "related": [],
            },
            {
                "code": "E103",
                "severity": "error",
                "file": "m.graph",
                **_at(4, 9, 4, 16),
                "message": "unknown op `sigmoud`",
                "hints": ["did you mean `sigmoid`?"],
                "notes": [],
                "related": [],
            },
        ],
    }


def test_check_json_gives_a_cycle_its_related_lines(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, data, _ = _check_json(
        capsys, tmp_path, "graph g {\n    input x = 2\n    a = mul(x, b)\n    b = add(a, x)\n    output b\n}\n"
    )
    assert status == 2
    [cycle] = data["diagnostics"]
    assert (cycle["code"], cycle["message"]) == ("E301", "cycle: `a` -> `b` -> `a`")
    assert {k: cycle[k] for k in ("line", "column", "end_line", "end_column")} == _at(3, 5, 3, 18)
    assert cycle["related"] == [{"file": "m.graph", **_at(4, 5, 4, 18)}]


def test_check_json_gives_the_uses_a_mistake_in_a_block_came_through_as_notes(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = (
        "block dense(x, n) {\n    param W: [in(x), n] = zeros\n    out = affine(x, W, W)\n}\n"
        "graph g {\n    input x: [2, 3]\n    y = dense(x, 4)\n    output y\n}\n"
    )
    status, data, _ = _check_json(capsys, tmp_path, text)
    assert status == 2
    [error] = data["diagnostics"]
    assert error["code"] == "E201"
    assert {k: error[k] for k in ("file", "line", "column")} == {"file": "m.graph", "line": 3, "column": 24}
    assert error["notes"] == [{"message": "in this use of `dense`", "file": "m.graph", **_at(7, 9, 7, 20)}]


def test_check_json_of_a_file_that_is_not_there_points_at_no_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, data, _ = _check_json(capsys, tmp_path, None)
    assert status == 2
    assert data["diagnostics"] == [
        {
            "code": "E601",
            "severity": "error",
            "file": "m.graph",
            **dict.fromkeys(("line", "column", "end_line", "end_column")),
            "message": "no such file",
            "hints": [],
            "notes": [],
            "related": [],
        }
    ]


def test_check_json_of_a_clean_file_has_no_diagnostics_and_of_one_with_warnings_the_warnings(
    capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    status, data, _ = _check_json(capsys, tmp_path, "graph g {\n    input x = 2\n    y = mul(x, x)\n    output y\n}\n")
    assert (status, data["ok"], data["diagnostics"], data["warnings"]) == (0, True, [], [])
    assert data["graphs"][0]["graph"] == "g"
    status, data, err = _check_json(
        capsys, tmp_path, "graph g {\n    input x = 2\n    y = mul(x, x)\n    z = add(x, x)\n    output y\n}\n"
    )
    assert (status, data["ok"]) == (0, True)
    assert data["diagnostics"] == [
        {
            "code": "W001",
            "severity": "warning",
            "file": "m.graph",
            **_at(4, 5, 4, 6),
            "message": "unused node `z`",
            "hints": ["nothing reads it and it is not an output"],
            "notes": [],
            "related": [],
        }
    ]
    assert data["warnings"] == [
        "m.graph:4:5: warning[W001]: unused node `z`\n 4 |     z = add(x, x)\n   |     ^\n"
        "hint: nothing reads it and it is not an output"
    ]


def test_an_example_that_needs_a_missing_extra_is_shown_without_its_message(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # as without graphc's onnx extra: `import onnx` fails
    status, out, err = graphc_cli(capsys, "explain", "E908")
    assert (status, err) == (0, "")
    assert "`graphc import model.onnx -o model.graph` says:\n\n(shown when onnx is installed)\n\nFix: " in out


def test_the_distributed_example_without_torch_is_shown_without_its_message(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as without graphc's distributed extra: `import torch` fails
    status, out, err = graphc_cli(capsys, "explain", "E910")
    assert (status, err) == (0, "")
    assert (
        "    import torch  # --workers needs it: the distributed extra\n"
        "    import os\n"
        "    os.environ['GRAPHC_TEST_WORKER_DIES'] = '1:2'  # as if worker 1 were killed\n\n"
        "`graphc train bad.graph --iters 4 --batch 10 --workers 2` says:\n\n"
        "(shown when torch is installed)\n\nFix: "
    ) in out
    assert "E509" not in out
