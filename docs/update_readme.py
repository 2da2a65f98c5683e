"""Refresh the command examples in README.md from real runs.

Every block introduced by a marker line `<!-- run: graphc ARGS -->` is
replaced by `$ graphc ARGS` and what the command prints (stdout, then
stderr), run from the repository root. tests/test_readme.py checks that the
README is current, so an example never drifts from what graphc does.

    python docs/update_readme.py          # rewrite README.md
    python docs/update_readme.py --check  # exit 1 if anything is stale
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARKER = re.compile(r"^<!-- run: (?P<command>.+?) -->\n```(?P<lang>\w*)\n(?P<body>.*?)^```$", re.M | re.S)


def run(command: str) -> str:
    args = shlex.split(command)
    assert args[0] == "graphc", command
    env = dict(os.environ, COLUMNS="100", PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "graphc", *args[1:]], cwd=ROOT, env=env, capture_output=True, text=True
    )
    output = result.stdout + result.stderr
    return f"$ {command}\n{output.rstrip()}\n"


def refresh(text: str) -> str:
    def replace(match: re.Match) -> str:
        command = match["command"]
        return f"<!-- run: {command} -->\n```{match['lang']}\n{run(command)}```"

    return MARKER.sub(replace, text)


def blocks(text: str) -> list[tuple[str, str]]:
    """(command, block body) for every marked example."""
    return [(m["command"], m["body"]) for m in MARKER.finditer(text)]


def main(argv: list[str]) -> int:
    text = README.read_text(encoding="utf-8")
    fresh = refresh(text)
    if "--check" in argv:
        if fresh != text:
            print("README.md examples are stale; run python docs/update_readme.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
