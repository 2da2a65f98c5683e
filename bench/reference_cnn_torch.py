"""PyTorch CPU reference of SimpleConvNet: the same layers, init and Adam.

Conv2d(1, 30, 5), ReLU, MaxPool2d(2, 2), Linear(4320, 100), ReLU,
Linear(100, 10), CrossEntropyLoss (mean), Adam(lr 0.001, eps 1e-7 as the
book's), weights normal(0, 0.01) and zero biases, batch 100 drawn with
torch's generator. torch is optional: train_cnn_torch returns None (with a
message on stderr) when it is not importable. Tested with torch==2.13.0 (CPU wheel).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def train_cnn_torch(
    x_train: np.ndarray,
    t_train: np.ndarray,
    iters: int,
    batch: int = 100,
    lr: float = 0.001,
    seed: int = 0,
    threads: int = 1,
    on_step: Callable[[int], None] | None = None,
) -> dict | None:
    """x_train float32 [N, 1, 28, 28] in [0, 1]; t_train int64 class indices.
    on_step(step) after each update (steps count from 1).

    Returns {"seconds" (the loop only), "iters", "model", "loss" (the last),
    "threads", "torch_version"}, or None when torch is not importable.
    """
    try:
        import torch
        from torch import nn
    except ImportError as exc:
        print(f"reference_cnn_torch: torch not importable ({exc}); skipping", file=sys.stderr)
        return None

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 30, 5),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(30 * 12 * 12, 100),
        nn.ReLU(),
        nn.Linear(100, 10),
    )
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                layer.weight.normal_(0.0, 0.01, generator=gen)
                layer.bias.zero_()
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-7)

    x = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32))
    t = torch.from_numpy(np.asarray(t_train, dtype=np.int64))
    loss = None
    began = time.perf_counter()
    for step in range(1, iters + 1):
        index = torch.randint(0, len(x), (batch,), generator=gen)
        loss = loss_fn(model(x[index]), t[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step(step)
    seconds = time.perf_counter() - began
    return {
        "seconds": seconds,
        "iters": iters,
        "model": model,
        "loss": float(loss.detach()) if loss is not None else float("nan"),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }


def predict_cnn_torch(model: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).argmax(dim=1).numpy()
