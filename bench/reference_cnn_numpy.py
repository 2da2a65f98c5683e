"""The numpy reference for SimpleConvNet: the book's chapter-7 layers, written tight.

The book's SimpleConvNet (conv 30 filters 5x5, ReLU, max-pool 2x2, affine
100, ReLU, affine 10, softmax with cross-entropy; weight_init_std 0.01) and
its Adam, with the book's algorithms as common/layers.py and common/util.py
have them: im2col as rows [N·OH·OW, C·FH·FW] (one strided slice per filter
offset), the convolution as `col @ W.T`, pooling by im2col, `np.max` and
`np.argmax` over each window's row, col2im for the gradients. Written as
one function instead of layer objects, float32 throughout, class-index
labels, no gradient for the input images, the Adam update in place: what a
person who knows numpy writes from the chapter, without graphc's tricks
(im2col as columns, pooling on strided views).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def im2col(img: np.ndarray, fh: int, fw: int, stride: int = 1, pad: int = 0) -> np.ndarray:
    """The book's im2col (common/util.py): every window as a row, [N·OH·OW, C·FH·FW]."""
    n, c, h, w = img.shape
    oh = (h + 2 * pad - fh) // stride + 1
    ow = (w + 2 * pad - fw) // stride + 1
    padded = np.pad(img, [(0, 0), (0, 0), (pad, pad), (pad, pad)]) if pad else img
    col = np.empty((n, c, fh, fw, oh, ow), dtype=img.dtype)
    for y in range(fh):
        for x in range(fw):
            col[:, :, y, x] = padded[:, :, y : y + stride * oh : stride, x : x + stride * ow : stride]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(n * oh * ow, -1)


def col2im(col: np.ndarray, shape: tuple[int, ...], fh: int, fw: int, stride: int = 1, pad: int = 0) -> np.ndarray:
    """The book's col2im: each row added back onto the pixels it came from."""
    n, c, h, w = shape
    oh = (h + 2 * pad - fh) // stride + 1
    ow = (w + 2 * pad - fw) // stride + 1
    col = col.reshape(n, oh, ow, c, fh, fw).transpose(0, 3, 4, 5, 1, 2)
    img = np.zeros((n, c, h + 2 * pad + stride - 1, w + 2 * pad + stride - 1), dtype=col.dtype)
    for y in range(fh):
        for x in range(fw):
            img[:, :, y : y + stride * oh : stride, x : x + stride * ow : stride] += col[:, :, y, x]
    return img[:, :, pad : h + pad, pad : w + pad]


def init_params(seed: int = 0, std: float = 0.01) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    f32 = np.float32
    return {
        "W1": (std * rng.standard_normal((30, 1, 5, 5))).astype(f32),
        "b1": np.zeros(30, f32),
        "W2": (std * rng.standard_normal((30 * 12 * 12, 100))).astype(f32),
        "b2": np.zeros(100, f32),
        "W3": (std * rng.standard_normal((100, 10))).astype(f32),
        "b3": np.zeros(10, f32),
    }


def train_cnn_numpy(
    x_train: np.ndarray,
    t_train: np.ndarray,
    iters: int,
    batch: int = 100,
    lr: float = 0.001,
    seed: int = 0,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """x_train float32 [N, 1, 28, 28] in [0, 1]; t_train int64 class indices.
    on_step(step) after each update (steps count from 1).

    Returns {"seconds" (the loop only), "iters", "params", "loss" (the last)}.
    """
    params = init_params(seed)
    names = list(params)
    m = {k: np.zeros_like(p) for k, p in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    beta1, beta2 = 0.9, 0.999
    rng = np.random.default_rng(seed)
    rows = np.arange(batch)
    fn, fh, fw = 30, 5, 5
    loss = float("nan")
    began = time.perf_counter()
    for step in range(1, iters + 1):
        index = rng.integers(0, len(x_train), batch)
        x = x_train[index]
        t = t_train[index]
        W1, b1, W2, b2, W3, b3 = (params[k] for k in names)
        # Convolution: im2col rows times the filters as columns.
        n = len(x)
        col = im2col(x, fh, fw)  # [N·24·24, 25]
        conv = col @ W1.reshape(fn, -1).T
        conv += b1
        # ReLU.
        mask1 = conv <= 0
        conv[mask1] = 0
        # Pooling: each 2x2 window of the maps [N, 30, 24, 24] as a row.
        maps = conv.reshape(n, 24, 24, fn).transpose(0, 3, 1, 2)
        pool_col = im2col(maps, 2, 2, 2).reshape(-1, 4)
        arg_max = np.argmax(pool_col, axis=1)
        pooled = np.max(pool_col, axis=1).reshape(n, 12, 12, fn).transpose(0, 3, 1, 2)
        # Affine, ReLU, affine, softmax with loss.
        flat = pooled.reshape(n, -1)
        h = flat @ W2
        h += b2
        mask2 = h <= 0
        h[mask2] = 0
        y = h @ W3
        y += b3
        y -= y.max(axis=1, keepdims=True)
        e = np.exp(y)
        e /= e.sum(axis=1, keepdims=True)
        loss = float(-np.mean(np.log(e[rows, t] + 1e-7)))
        # Backward.
        e[rows, t] -= 1
        e /= n
        dW3 = h.T @ e
        db3 = e.sum(axis=0)
        dh = e @ W3.T
        dh[mask2] = 0
        dW2 = flat.T @ dh
        db2 = dh.sum(axis=0)
        dpooled = (dh @ W2.T).reshape(pooled.shape)
        dout = dpooled.transpose(0, 2, 3, 1)
        dmax = np.zeros((dout.size, 4), dtype=dout.dtype)
        dmax[np.arange(arg_max.size), arg_max.flatten()] = dout.flatten()
        dmaps = col2im(dmax.reshape(dout.shape + (4,)).reshape(n * 12 * 12, -1), maps.shape, 2, 2, 2)
        dconv = dmaps.transpose(0, 2, 3, 1).reshape(-1, fn)
        dconv[mask1] = 0
        db1 = dconv.sum(axis=0)
        dW1 = (col.T @ dconv).T.reshape(W1.shape)
        # The book's Adam.
        lr_t = np.float32(lr * np.sqrt(1.0 - beta2**step) / (1.0 - beta1**step))
        for k, grad in zip(names, (dW1, db1, dW2, db2, dW3, db3)):
            m[k] += np.float32(1 - beta1) * (grad - m[k])
            v[k] += np.float32(1 - beta2) * (grad**2 - v[k])
            params[k] -= lr_t * m[k] / (np.sqrt(v[k]) + np.float32(1e-7))
        if on_step is not None:
            on_step(step)
    return {"seconds": time.perf_counter() - began, "iters": iters, "params": params, "loss": loss}


def predict_cnn_numpy(params: dict[str, np.ndarray], x: np.ndarray, chunk: int = 1000) -> np.ndarray:
    """Class indices for images [N, 1, 28, 28]."""
    predicted = []
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk]
        n = len(part)
        conv = np.maximum(im2col(part, 5, 5) @ params["W1"].reshape(30, -1).T + params["b1"], 0)
        maps = conv.reshape(n, 24, 24, 30).transpose(0, 3, 1, 2)
        pooled = im2col(maps, 2, 2, 2).reshape(-1, 4).max(axis=1).reshape(n, 12, 12, 30).transpose(0, 3, 1, 2)
        h = np.maximum(pooled.reshape(n, -1) @ params["W2"] + params["b2"], 0)
        predicted.append((h @ params["W3"] + params["b3"]).argmax(axis=1))
    return np.concatenate(predicted)
