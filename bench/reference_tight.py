"""The floor: the two-layer net's training step as tight as plain numpy gets.

One function, float32 throughout, class-index labels, no layer objects, no
gradient for the input images. It does all graphc does for speed: minibatch
rows drawn 100 iterations at a time; each minibatch gathered from the uint8
pixels and divided by 255 as it is drawn (a quarter of the memory traffic of
float32 rows); the learning rate folded into the loss's gradient, so every
update is one subtraction; row maxima and sums of the scores taken across the
batch. Nobody would write a model this way by hand; it is here to show how
close graphc's plans come to the fastest numpy can do on this machine.
"""

from __future__ import annotations

import time

import numpy as np


def train_tight(
    x_bytes: np.ndarray, t_train: np.ndarray, iters: int, batch: int = 100, lr: float = 0.1, seed: int = 0
) -> dict:
    """x_bytes uint8 (N, 784) pixels; t_train int64 class indices."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    W1 = (0.01 * rng.standard_normal((784, 50))).astype(f32)
    b1 = np.zeros(50, f32)
    W2 = (0.01 * rng.standard_normal((50, 10))).astype(f32)
    b2 = np.zeros(10, f32)
    params = {"W1": W1, "b1": b1, "W2": W2, "b2": b2}
    pixels = np.empty((batch, x_bytes.shape[1]), np.uint8)
    xb = np.empty((batch, x_bytes.shape[1]), f32)
    tb = np.empty(batch, np.int64)
    rows = np.arange(batch)
    ones = np.ones((10, 1), f32)  # row sums as a product
    scale = f32(lr / batch)  # d loss / d scores carries lr: the gradients come out times lr
    size = len(x_bytes)
    began = time.perf_counter()
    for i in range(iters):
        if i % 100 == 0:  # rows for 100 iterations per call: the same rows, fewer calls
            block = rng.integers(0, size, (100, batch))
        index = block[i % 100]
        np.take(x_bytes, index, axis=0, out=pixels)
        np.divide(pixels, f32(255), out=xb, dtype=f32)
        np.take(t_train, index, out=tb)
        h = xb @ W1
        h += b1
        mask = h > 0
        h *= mask
        y = h @ W2
        y += b2
        y -= y.T.copy().max(axis=0)[:, None]  # across the batch, not one short row at a time
        e = np.exp(y)
        e /= e @ ones
        e[rows, tb] -= 1
        e *= scale
        dW2 = h.T @ e
        db2 = e.sum(axis=0)
        dh = e @ W2.T
        dh *= mask
        dW1 = xb.T @ dh
        db1 = dh.sum(axis=0)
        for param, grad in ((W1, dW1), (b1, db1), (W2, dW2), (b2, db2)):
            param -= grad
    return {"seconds": time.perf_counter() - began, "iters": iters, "params": params}


def predict_tight(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    h = np.maximum(x @ params["W1"] + params["b1"], 0)
    return (h @ params["W2"] + params["b2"]).argmax(axis=1)
