"""Plain-numpy reference of the two-layer net (Affine-ReLU-Affine-SoftmaxWithLoss)
from "Deep Learning from Scratch" ch. 5, used as a training-speed baseline.

Fed as the book feeds it: float32 images in [0, 1], float32 one-hot labels,
float64 parameters (so the matmuls promote to float64).
"""
from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np


class Affine:
    def __init__(self, W: np.ndarray, b: np.ndarray):
        self.W = W
        self.b = b
        self.x = None
        self.in_shape = None
        self.dW = None
        self.db = None

    def forward(self, x):
        self.in_shape = x.shape
        self.x = x.reshape(x.shape[0], -1)
        return self.x @ self.W + self.b

    def backward(self, dout):
        self.dW = self.x.T @ dout
        self.db = dout.sum(axis=0)
        dx = dout @ self.W.T
        return dx.reshape(self.in_shape)


class Relu:
    def __init__(self):
        self.mask = None

    def forward(self, x):
        self.mask = x <= 0
        y = x.copy()
        y[self.mask] = 0
        return y

    def backward(self, dout):
        dx = dout.copy()
        dx[self.mask] = 0
        return dx


def _softmax(a):
    shifted = a - a.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def _cross_entropy(y, t):
    # one-hot t, as the book computes it
    n = y.shape[0]
    return -np.sum(t * np.log(y + 1e-7)) / n


class SoftmaxWithLoss:
    def __init__(self):
        self.y = None
        self.t = None
        self.loss = None

    def forward(self, x, t):
        self.t = t
        self.y = _softmax(x)
        self.loss = _cross_entropy(self.y, t)
        return self.loss

    def backward(self, dout=1):
        n = self.t.shape[0]
        return (self.y - self.t) * dout / n


class TwoLayerNet:
    def __init__(self, input_size=784, hidden_size=50, output_size=10,
                 weight_init_std=0.01, seed=0, rng=None):
        rng = rng if rng is not None else np.random.default_rng(seed)
        self.params = {
            "W1": weight_init_std * rng.standard_normal((input_size, hidden_size)),
            "b1": np.zeros(hidden_size),
            "W2": weight_init_std * rng.standard_normal((hidden_size, output_size)),
            "b2": np.zeros(output_size),
        }
        self.layers = OrderedDict()
        self.layers["Affine1"] = Affine(self.params["W1"], self.params["b1"])
        self.layers["Relu1"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W2"], self.params["b2"])
        self.last_layer = SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.last_layer.forward(self.predict(x), t)

    def gradient(self, x, t):
        self.loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        a1, a2 = self.layers["Affine1"], self.layers["Affine2"]
        return {"W1": a1.dW, "b1": a1.db, "W2": a2.dW, "b2": a2.db}


def accuracy(net: TwoLayerNet, x: np.ndarray, t: np.ndarray) -> float:
    """t may be int labels (N,) or one-hot (N, C)."""
    pred = np.argmax(net.predict(x), axis=1)
    if t.ndim != 1:
        t = np.argmax(t, axis=1)
    return float(np.mean(pred == t))


def train_reference(x_train, t_train_onehot, iters, batch=100, lr=0.1, seed=0) -> dict:
    """Book's SGD loop. Returns {"seconds", "iters", "params", "net", "loss"}.

    Parameters are updated in place (params[key] -= lr * grad[key]), so the
    Affine layers keep seeing the live arrays, exactly as in the book.
    """
    rng = np.random.default_rng(seed)
    net = TwoLayerNet(weight_init_std=0.01, rng=rng)
    train_size = x_train.shape[0]
    loss = float("nan")
    t0 = time.perf_counter()
    for _ in range(iters):
        idx = rng.choice(train_size, batch)
        xb = x_train[idx]
        tb = t_train_onehot[idx]
        grad = net.gradient(xb, tb)
        for key in ("W1", "b1", "W2", "b2"):
            net.params[key] -= lr * grad[key]
    seconds = time.perf_counter() - t0
    if iters:
        loss = float(net.last_layer.loss)
    return {"seconds": seconds, "iters": iters, "params": net.params,
            "net": net, "loss": loss}



def train_reference_script(x_train, t_train_onehot, x_test, t_test_onehot, iters=10000, batch=100, lr=0.1,
                           seed=0) -> dict:
    """The book's whole train_neuralnet.py: the SGD loop, plus train and test
    accuracy over the full sets at every epoch (at i % iters_per_epoch == 0,
    i = 0 included). Returns {"seconds", "train_acc", "test_acc", "evals"}."""
    rng = np.random.default_rng(seed)
    net = TwoLayerNet(weight_init_std=0.01, rng=rng)
    train_size = x_train.shape[0]
    iter_per_epoch = max(train_size / batch, 1)
    train_acc = test_acc = float("nan")
    evals = 0
    t0 = time.perf_counter()
    for i in range(iters):
        idx = rng.choice(train_size, batch)
        grad = net.gradient(x_train[idx], t_train_onehot[idx])
        for key in ("W1", "b1", "W2", "b2"):
            net.params[key] -= lr * grad[key]
        if i % iter_per_epoch == 0:
            train_acc = accuracy(net, x_train, t_train_onehot)
            test_acc = accuracy(net, x_test, t_test_onehot)
            evals += 1
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "train_acc": train_acc, "test_acc": test_acc, "evals": evals, "net": net}

if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
    from _mnist import load_mnist

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    d = load_mnist()
    r = train_reference(d["x_train"], d["t_train_onehot"], n)
    print(f"numpy reference: {n} iters in {r['seconds']:.3f}s "
          f"({r['seconds'] / n * 1000:.3f} s/1000 it), last loss {r['loss']:.4f}, "
          f"test acc {accuracy(r['net'], d['x_test'], d['t_test']):.4f}")
