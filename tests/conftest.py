"""Shared fixtures: paths to the models and to MNIST."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"

# The MNIST files live beside the repository, never in it; GRAPHC_DATA wins.
if not os.environ.get("GRAPHC_DATA"):
    shared = ROOT.parent / "shared" / "data"
    if (shared / "mnist").is_dir():
        os.environ["GRAPHC_DATA"] = str(shared)


@pytest.fixture
def models() -> Path:
    return MODELS


@pytest.fixture(autouse=True)
def _fresh_op_caches():
    """Each test renders and compiles the ops' formulas afresh, so that every
    test that relies on the renderer runs it (mutmut maps mutants to tests so)."""
    from graphc.ops import clear_caches

    clear_caches()
