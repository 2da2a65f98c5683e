"""Sanity check: train each reference for N iterations (default 1000) and print
seconds per 1000 iterations and test accuracy.

    python bench/reference_smoke.py [iters]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _mnist import load_mnist  # noqa: E402
from reference_numpy import accuracy, train_reference  # noqa: E402
from reference_torch import accuracy_torch, train_torch  # noqa: E402


def main(iters: int = 1000) -> int:
    try:
        from threadpoolctl import threadpool_info

        for info in threadpool_info():
            print(f"BLAS: {info.get('internal_api')} {info.get('version')} "
                  f"threads={info.get('num_threads')} arch={info.get('architecture')} "
                  f"({Path(info.get('filepath', '')).name})")
    except ImportError:
        pass

    d = load_mnist()
    r = train_reference(d["x_train"], d["t_train_onehot"], iters)
    acc = accuracy(r["net"], d["x_test"], d["t_test"])
    print(f"numpy reference : {r['seconds'] / iters * 1000:7.3f} s/1000 it  "
          f"loss {r['loss']:.4f}  test acc {acc:.4f}")

    rt = train_torch(d["x_train"], d["t_train"], iters)
    if rt is not None:
        acc_t = accuracy_torch(rt["model"], d["x_test"], d["t_test"])
        print(f"torch {rt['torch_version']} f32 : {rt['seconds'] / iters * 1000:7.3f} s/1000 it  "
              f"loss {rt['loss']:.4f}  test acc {acc_t:.4f}  threads {rt['threads']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
