"""PyTorch CPU reference of the same 784-50-10 network and hyperparameters.

torch is optional: train_torch returns None (with a message) when it is not
importable. Tested with torch==2.13.0 (CPU wheel).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def train_torch(
    x_train: np.ndarray,
    t_train_int: np.ndarray,
    iters: int,
    batch: int = 100,
    lr: float = 0.1,
    seed: int = 0,
    dtype: str = "float32",
    threads: int | None = None,
) -> dict | None:
    """Train 784-50-10 (Linear-ReLU-Linear, CrossEntropyLoss mean, plain SGD).

    x_train: float (N, 784) numpy array in [0, 1]; t_train_int: int labels (N,).
    Returns {"seconds", "iters", "params" (numpy, book names W1 b1 W2 b2 with
    W as (in, out)), "model", "loss", "threads", "torch_version"} or None.
    """
    try:
        import torch
        from torch import nn
    except ImportError as exc:
        print(f"reference_torch: torch not importable ({exc}); skipping", file=sys.stderr)
        return None

    threads = threads or _cores()  # default: one per core available, torch's own choice
    torch.set_num_threads(threads)
    tdtype = {"float32": torch.float32, "float64": torch.float64}[dtype]

    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(784, 50), nn.ReLU(), nn.Linear(50, 10)).to(tdtype)
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, 0.01, generator=gen)
                m.bias.zero_()
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=lr)

    x = torch.as_tensor(x_train).to(tdtype).contiguous()
    t = torch.as_tensor(t_train_int).to(torch.int64)
    n = x.shape[0]
    loss = None
    t0 = time.perf_counter()
    for _ in range(iters):
        idx = torch.randint(0, n, (batch,), generator=gen)
        out = model(x[idx])
        loss = loss_fn(out, t[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0

    l1, l2 = model[0], model[2]
    params = {
        "W1": l1.weight.detach().T.numpy().copy(),
        "b1": l1.bias.detach().numpy().copy(),
        "W2": l2.weight.detach().T.numpy().copy(),
        "b2": l2.bias.detach().numpy().copy(),
    }
    return {
        "seconds": seconds,
        "iters": iters,
        "params": params,
        "model": model,
        "loss": float(loss.detach()) if loss is not None else float("nan"),
        "threads": threads,
        "torch_version": torch.__version__,
    }


def accuracy_torch(model: Any, x: np.ndarray, t_int: np.ndarray) -> float:
    import torch

    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        pred = model(torch.as_tensor(x).to(dtype)).argmax(dim=1).numpy()
    return float((pred == t_int).mean())


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _mnist import load_mnist

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    d = load_mnist()
    r = train_torch(d["x_train"], d["t_train"], n)
    if r is not None:
        print(
            f"torch {r['torch_version']} float32 CPU ({r['threads']} threads): "
            f"{n} iters in {r['seconds']:.3f}s ({r['seconds'] / n * 1000:.3f} s/1000 it), "
            f"last loss {r['loss']:.4f}, "
            f"test acc {accuracy_torch(r['model'], d['x_test'], d['t_test']):.4f}"
        )
