"""What several test modules share: the two-layer net, a slice of MNIST to train
on quickly, the command line run in-process, checkpoint surgery, and an
environment that sees only an unpacked wheel."""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import graphc
from graphc import cli
from graphc.data import load_mnist
from graphc.errors import GraphcError
from graphc.train import TrainData, prepare_data

ROOT = Path(__file__).resolve().parent.parent
NET = ROOT / "models" / "two_layer_net.graph"
BENCH = ROOT / "bench"


def two_layer_net(dtype: str = "float32", seed: int = 0) -> graphc.Program:
    return graphc.compile_file(NET, dtype=dtype, seed=seed)


def mnist_slice(program: graphc.Program, train: int, test: int) -> TrainData:
    """The first `train` training and `test` test images of MNIST, prepared for
    `program`: epochs of a few iterations, for tests of the loop rather than of
    what it learns."""
    (x_train, y_train), (x_test, y_test) = load_mnist(dtype=np.float32, progress=False)  # cached per process
    return prepare_data(program, (x_train[:train], y_train[:train]), (x_test[:test], y_test[:test]), name="mnist")


def graphc_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """`graphc ARGV...` run in-process: its status, stdout and stderr."""
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def error_of(call: Callable[..., object], *args: Any, **kwargs: Any) -> str:
    """The rendered GraphcError that call(*args, **kwargs) raises."""
    with pytest.raises(GraphcError) as err:
        call(*args, **kwargs)
    return err.value.render()


def rewrite_meta(path: Path, edit: Callable[[dict[str, Any]], object]) -> Path:
    """Rewrite a checkpoint's meta JSON by edit(meta), which changes it in place."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = dict(npz)
    meta = json.loads(str(arrays["meta"]))
    edit(meta)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    return path


def isolated(site: Path) -> dict[str, str]:
    """The environment, with only the unpacked wheel on PYTHONPATH.

    numpy, lark and networkx come from the interpreter's own site-packages
    (sys.executable is the venv's python); the source tree is nowhere on the path.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONPATH=str(site), PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def bench_modules(*names: str) -> Iterator[dict[str, Any]]:
    """The benchmark scripts' modules by name, imported with bench/ on the path
    (as the scripts import each other), and MNIST as bench/_mnist.py loads it;
    for a module-scoped fixture to yield from."""
    sys.path.insert(0, str(BENCH))
    try:
        modules = {name: importlib.import_module(name) for name in names}
        yield {"mnist": importlib.import_module("_mnist").load_mnist(), **modules}
    finally:
        sys.path.remove(str(BENCH))


def made_up_feeds(program: graphc.Program, plan: Any, types: dict, batch: int, seed: int) -> dict[str, np.ndarray]:
    """Inputs of `plan` at batch size `batch` (every symbolic dim), of the `types` an exporter
    gives them: labels valid (class indices or one-hot rows), the rest in (0, 1)."""
    rng = np.random.default_rng(seed)
    classes = {
        s.args[t]: plan.types[s.args[y]].shape[-1] for s in plan.forward for t, y in s.op.label_positions().items()
    }
    feeds = {}
    for name in plan.inputs:
        shape = tuple(batch if isinstance(d, str) else d for d in types[name].shape)
        if types[name].dtype == "i64":
            feeds[name] = rng.integers(0, classes[name], shape)
        elif name in classes:
            feeds[name] = np.eye(classes[name])[rng.integers(0, classes[name], shape[:-1])]
        else:
            feeds[name] = rng.uniform(0, 1, shape)
        feeds[name] = program.feed(name, feeds[name])
    return feeds


def needs(what: str, present: bool, install: str) -> None:
    """Skip a test whose outside tool (a browser, an npm package, an extra) is
    missing, saying how to install it; under CI (GRAPHC_REQUIRE_ALL=1, set by
    .ci/run, which installs everything) a missing tool fails the test instead,
    so a broken install can never pass as a skip."""
    if present:
        return
    message = f"{what} is not installed ({install})"
    if os.environ.get("GRAPHC_REQUIRE_ALL") == "1":
        pytest.fail(message + "; GRAPHC_REQUIRE_ALL=1 asks for every tool", pytrace=False)
    pytest.skip(message)
