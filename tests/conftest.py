"""Shared fixtures: paths to the models and to MNIST, a wheel built once; the fuzzer's options."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent

# Property tests draw the same examples on every run and machine (CI must not
# fail on a draw no one can reproduce), and keep no example database;
# `pytest --hypothesis-profile=explore` draws new ones, to look for trouble.
settings.register_profile("graphc", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile("graphc")
MODELS = ROOT / "models"

# The MNIST files live beside the repository, never in it; GRAPHC_DATA wins.
if not os.environ.get("GRAPHC_DATA"):
    shared = ROOT.parent / "shared" / "data"
    if (shared / "mnist").is_dir():
        os.environ["GRAPHC_DATA"] = str(shared)

# graphc's caches (Lark's parser tables, the parsed MNIST arrays) go to a
# directory of this test run's own, never the person's; subprocesses inherit it.
if not os.environ.get("GRAPHC_CACHE_DIR"):
    os.environ["GRAPHC_CACHE_DIR"] = tempfile.mkdtemp(prefix="graphc-tests-cache-")
    atexit.register(shutil.rmtree, os.environ["GRAPHC_CACHE_DIR"], ignore_errors=True)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("graphc fuzzer", "the long mode of tests/test_fuzz.py")
    group.addoption(
        "--fuzz",
        type=int,
        default=None,
        metavar="N",
        help="run the fuzzer's long mode on N inputs (also: GRAPHC_FUZZ=N); skipped otherwise",
    )
    group.addoption(
        "--fuzz-jobs",
        type=int,
        default=None,
        metavar="J",
        help="processes for the long mode (also: GRAPHC_FUZZ_JOBS=J; default: one per CPU)",
    )
    group.addoption(
        "--fuzz-report",
        default=None,
        metavar="PATH",
        help="write the long mode's findings, as markdown, to PATH (also: GRAPHC_FUZZ_REPORT)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fuzz_long: the fuzzer's long mode (run with --fuzz N or GRAPHC_FUZZ=N)")


@pytest.fixture
def models() -> Path:
    return MODELS


@pytest.fixture(autouse=True)
def _fresh_op_caches():
    """Each test renders and compiles the ops' formulas afresh, so that every
    test that relies on the renderer runs it (mutmut maps mutants to tests so)."""
    from graphc.ops import clear_caches

    clear_caches()


# Copied to a temporary directory before building, so that the build's
# scratch files (build/, *.egg-info) never land in the working tree and two
# test runs at once cannot trip over each other.
IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".hypothesis",
    "tests",
    "docs",
    "bench",
)


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """A wheel of graphc built from the repository, once a session (tests/test_install.py,
    tests/test_imports.py)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=IGNORE)
    out = work / "dist"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(out),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    [found] = out.glob("graphc-*.whl")
    return found
