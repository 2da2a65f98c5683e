"""The README's command examples are what graphc prints today."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _updater():
    spec = importlib.util.spec_from_file_location("update_readme", ROOT / "docs" / "update_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_readme_examples_are_current():
    updater = _updater()
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = updater.blocks(text)
    assert len(blocks) >= 8
    for command, body in blocks:
        assert body == updater.run(command), f"README example `{command}` is stale: run python docs/update_readme.py"


def test_readme_starts_with_the_two_setup_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [line for line in text.splitlines() if line.startswith("python3 -m venv")]
    assert commands[0].endswith("pip install . && graphc run models/apple.graph")
    assert commands[1].endswith('pip install ".[test]" && pytest')
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci.splitlines()
