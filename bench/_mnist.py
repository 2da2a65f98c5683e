"""Minimal standalone MNIST loader for the benchmarks (no graphc dependency).

Reads the four canonical gzip'd IDX files from ``$GRAPHC_DATA/mnist`` or, when
GRAPHC_DATA is unset, from ``<repo>/../shared/data/mnist`` (`data_root`, which
the benchmarks also hand graphc as $GRAPHC_DATA).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

_FILES = {
    "train_img": "train-images-idx3-ubyte.gz",
    "train_lbl": "train-labels-idx1-ubyte.gz",
    "test_img": "t10k-images-idx3-ubyte.gz",
    "test_lbl": "t10k-labels-idx1-ubyte.gz",
}


def data_root() -> Path:
    """$GRAPHC_DATA, else the data directory beside the repository."""
    env = os.environ.get("GRAPHC_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def mnist_dir() -> Path:
    return data_root() / "mnist"


def _read(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    return np.frombuffer(raw, dtype=np.uint8, offset=offset)


def _one_hot(labels: np.ndarray, classes: int = 10) -> np.ndarray:
    # float64, as the book's _change_one_hot_label makes them (np.zeros' default).
    out = np.zeros((labels.size, classes))
    out[np.arange(labels.size), labels] = 1.0
    return out


def load_mnist(directory: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Return dict with keys x_train, x_train_bytes, t_train, t_train_onehot,
    x_test, x_test_bytes, t_test, t_test_onehot. Images: float32 (N, 784) in
    [0, 1], and the uint8 pixels they come from; labels: int64 (N,); one-hot:
    float64 (N, 10), as the book's."""
    d = Path(directory) if directory is not None else mnist_dir()
    out = {}
    for split in ("train", "test"):
        img = _read(d / _FILES[f"{split}_img"], 16).reshape(-1, 784)
        lbl = _read(d / _FILES[f"{split}_lbl"], 8).astype(np.int64)
        if img.shape[0] != lbl.shape[0]:
            raise ValueError(f"{split}: {img.shape[0]} images vs {lbl.shape[0]} labels")
        out[f"x_{split}"] = img.astype(np.float32) / np.float32(255.0)
        out[f"x_{split}_bytes"] = img
        out[f"t_{split}"] = lbl
        out[f"t_{split}_onehot"] = _one_hot(lbl)
    return out
