"""The book's two-layer net in plain numpy: the speed baseline.

"Deep Learning from Scratch" (Saito), chapter 5: Affine, Relu and
SoftmaxWithLoss layer objects in an OrderedDict, called in order forward and
in reverse backward, trained by ch05/train_neuralnet.py. Written here in our
own words but doing what the book's code does, step for step:

- the data as the book's load_mnist(normalize=True, one_hot_label=True) gives
  it: float32 images in [0, 1], float64 one-hot labels; float64 params drawn
  with np.random.randn, so every product promotes to float64;
- softmax as the book writes it (exp taken twice), cross-entropy on the
  probabilities with a 1e-7 guard, one-hot labels turned back into indices;
- Relu's backward zeroes the incoming gradient in place, as the book's does;
- each iteration draws a minibatch with np.random.choice, computes the
  gradient, updates, and then evaluates the loss on the batch once more to
  record it (`train_loss_list`), as train_neuralnet.py does.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np


def softmax(x: np.ndarray) -> np.ndarray:
    x = x - np.max(x, axis=-1, keepdims=True)
    return np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)


def cross_entropy_error(y: np.ndarray, t: np.ndarray) -> float:
    if t.size == y.size:  # one-hot labels -> class indices
        t = t.argmax(axis=1)
    batch_size = y.shape[0]
    return -np.sum(np.log(y[np.arange(batch_size), t] + 1e-7)) / batch_size


class Affine:
    def __init__(self, W: np.ndarray, b: np.ndarray):
        self.W, self.b = W, b
        self.x = self.original_x_shape = self.dW = self.db = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.original_x_shape = x.shape
        self.x = x.reshape(x.shape[0], -1)
        return np.dot(self.x, self.W) + self.b

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = np.dot(dout, self.W.T)
        self.dW = np.dot(self.x.T, dout)
        self.db = np.sum(dout, axis=0)
        return dx.reshape(*self.original_x_shape)


class Relu:
    def __init__(self) -> None:
        self.mask = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.mask = x <= 0
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dout[self.mask] = 0  # in place, as the book does
        return dout


class SoftmaxWithLoss:
    def __init__(self) -> None:
        self.loss = self.y = self.t = None

    def forward(self, x: np.ndarray, t: np.ndarray) -> float:
        self.t = t
        self.y = softmax(x)
        self.loss = cross_entropy_error(self.y, self.t)
        return self.loss

    def backward(self, dout: float = 1) -> np.ndarray:
        batch_size = self.t.shape[0]
        if self.t.size == self.y.size:
            return (self.y - self.t) / batch_size
        dx = self.y.copy()
        dx[np.arange(batch_size), self.t] -= 1
        return dx / batch_size


class TwoLayerNet:
    def __init__(
        self,
        input_size=784,
        hidden_size=50,
        output_size=10,
        weight_init_std=0.01,
        random: np.random.RandomState | None = None,
    ):
        randn = (random or np.random.RandomState(0)).randn
        self.params = {
            "W1": weight_init_std * randn(input_size, hidden_size),
            "b1": np.zeros(hidden_size),
            "W2": weight_init_std * randn(hidden_size, output_size),
            "b2": np.zeros(output_size),
        }
        self.layers = OrderedDict()
        self.layers["Affine1"] = Affine(self.params["W1"], self.params["b1"])
        self.layers["Relu1"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W2"], self.params["b2"])
        self.last_layer = SoftmaxWithLoss()

    def predict(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x: np.ndarray, t: np.ndarray) -> float:
        return self.last_layer.forward(self.predict(x), t)

    def accuracy(self, x: np.ndarray, t: np.ndarray) -> float:
        y = np.argmax(self.predict(x), axis=1)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        return np.sum(y == t) / float(x.shape[0])

    def gradient(self, x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        self.loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        return {
            "W1": self.layers["Affine1"].dW,
            "b1": self.layers["Affine1"].db,
            "W2": self.layers["Affine2"].dW,
            "b2": self.layers["Affine2"].db,
        }


def accuracy(net: TwoLayerNet, x: np.ndarray, t: np.ndarray) -> float:
    """t may be class indices (N,) or one-hot rows (N, C)."""
    return float(net.accuracy(x, t))


def train_reference(
    x_train: np.ndarray,
    t_train_onehot: np.ndarray,
    iters: int,
    batch: int = 100,
    lr: float = 0.1,
    seed: int = 0,
    evaluate_on: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """train_neuralnet.py's loop. With evaluate_on=(x_test, t_test), also the
    train and test accuracy over the full sets at every epoch (at
    i % iter_per_epoch == 0, i = 0 included), as the whole script does.

    Returns {"seconds", "iters", "params", "net", "loss", "train_acc", "test_acc", "evals"}.
    """
    random = np.random.RandomState(seed)
    net = TwoLayerNet(weight_init_std=0.01, random=random)
    train_size = x_train.shape[0]
    iter_per_epoch = max(train_size / batch, 1)
    train_loss_list, train_acc, test_acc, evals = [], float("nan"), float("nan"), 0
    began = time.perf_counter()
    for i in range(iters):
        batch_mask = random.choice(train_size, batch)
        x_batch = x_train[batch_mask]
        t_batch = t_train_onehot[batch_mask]
        grad = net.gradient(x_batch, t_batch)
        for key in ("W1", "b1", "W2", "b2"):
            net.params[key] -= lr * grad[key]
        train_loss_list.append(net.loss(x_batch, t_batch))
        if evaluate_on is not None and i % iter_per_epoch == 0:
            train_acc = net.accuracy(x_train, t_train_onehot)
            test_acc = net.accuracy(*evaluate_on)
            evals += 1
    seconds = time.perf_counter() - began
    return {
        "seconds": seconds,
        "iters": iters,
        "params": net.params,
        "net": net,
        "loss": float(train_loss_list[-1]) if iters else float("nan"),
        "train_acc": float(train_acc),
        "test_acc": float(test_acc),
        "evals": evals,
    }


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
    from _mnist import load_mnist

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    d = load_mnist()
    r = train_reference(d["x_train"], d["t_train_onehot"], n)
    print(
        f"numpy reference: {n} iters in {r['seconds']:.3f}s "
        f"({r['seconds'] / n * 1000:.3f} s/1000 it), last loss {r['loss']:.4f}, "
        f"test acc {accuracy(r['net'], d['x_test'], d['t_test']):.4f}"
    )
