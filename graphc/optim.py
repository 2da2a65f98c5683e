"""Optimizers: how a param moves, given its gradient.

The four of the book's chapter 6, each a small class over named arrays:

    SGD       W -= lr * dW
    Momentum  v = 0.9 v - lr * dW;  W += v
    AdaGrad   h += dW * dW;  W -= lr * dW / (sqrt(h) + 1e-7)
    Adam      m, v: running means of dW and dW^2, bias-corrected by the step size

Updates are in place, on the very arrays the Program holds, and every state
array has its param's dtype: a float32 model stays float32 throughout. Each
update writes through one scratch buffer per param, so a step allocates
nothing.

The state (per-param slot arrays and the step count) is a flat dict of
arrays, `state_dict()`, which a checkpoint stores as is and
`load_state_dict` puts back, so a resumed run continues bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from graphc.errors import GraphcError, did_you_mean

EPS = 1e-7  # the book's guard against dividing by zero in AdaGrad and Adam


class Optimizer:
    name: ClassVar[str]
    default_lr: ClassVar[float]
    slots: ClassVar[tuple[str, ...]] = ()  # per-param state arrays

    def __init__(self, params: Mapping[str, np.ndarray], lr: float | None = None):
        self.lr = float(self.default_lr if lr is None else lr)
        self.names = tuple(params)
        self.steps = 0  # updates done
        self.state: dict[str, dict[str, np.ndarray]] = {
            slot: {name: np.zeros_like(params[name]) for name in self.names} for slot in self.slots
        }
        self._scratch = {name: np.empty_like(params[name]) for name in self.names}

    # Whether step() can take gradients already multiplied by lr. The trainer
    # then seeds backward with lr instead of 1: every gradient is linear in
    # the seed, so they come out scaled, and SGD and momentum save a pass over
    # every param.
    takes_lr_scaled: ClassVar[bool] = False

    def step(
        self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray], *, lr_scaled: bool = False
    ) -> None:
        """Move every param that has a gradient, in place. With lr_scaled, the
        gradients are lr * d loss / d param (where takes_lr_scaled)."""
        if lr_scaled and not self.takes_lr_scaled:
            raise ValueError(f"{self.name} needs the gradients themselves, not scaled by lr")
        self.steps += 1
        self._prepare()
        update = self._update_scaled if lr_scaled else self._update
        for name in self.names:
            grad = grads.get(name)
            if grad is not None:
                update(name, params[name], grad, self._scratch[name])

    def _prepare(self) -> None:
        """Per-step scalars (Adam's bias-corrected step size)."""

    def _update(self, name: str, param: np.ndarray, grad: np.ndarray, scratch: np.ndarray) -> None:
        raise NotImplementedError

    def _update_scaled(self, name: str, param: np.ndarray, scaled_grad: np.ndarray, scratch: np.ndarray) -> None:
        raise NotImplementedError

    def hyperparams(self) -> dict[str, float]:
        return {"lr": self.lr}

    # --- state ----------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """`steps` and one `slot/param` array per slot and param."""
        state = {"steps": np.array(self.steps, dtype=np.int64)}
        for slot, arrays in self.state.items():
            for name, array in arrays.items():
                state[f"{slot}/{name}"] = array
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Put back what state_dict gave; raises GraphcError naming what does not fit."""
        state = {key: np.asarray(value) for key, value in state.items()}
        self.check_state(state, {name: array.shape for name, array in self._scratch.items()})
        steps = np.asarray(state["steps"])
        if int(steps) < 0:
            raise GraphcError(f"{self.name} state `steps` must be a count, got {steps!r}", code="E710")
        for slot in self.slots:
            for name in self.names:
                np.copyto(self.state[slot][name], state[f"{slot}/{name}"], casting="unsafe")
        self.steps = int(steps)

    @classmethod
    def check_state(cls, state: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Raise a GraphcError naming what in `state` does not fit params of these
        shapes. Its values are arrays, or anything with their shape and dtype
        (a checkpoint's .npy headers, checked before their data is read)."""
        expected = ["steps"] + [f"{slot}/{name}" for slot in cls.slots for name in shapes]
        for key in expected:
            if key not in state:
                raise GraphcError(f"{cls.name} state has no `{key}`", code="E710")
        for key in state:
            if key not in expected:
                raise GraphcError(f"{cls.name} state has `{key}`, which this model has no use for", code="E710")
        for slot in cls.slots:
            for name, shape in shapes.items():
                value = state[f"{slot}/{name}"]
                if tuple(value.shape) != tuple(shape):
                    raise GraphcError(
                        f"{cls.name} state `{slot}/{name}` has shape {list(value.shape)}, "
                        f"param `{name}` has {list(shape)}",
                        code="E710",
                    )
        steps = state["steps"]
        if tuple(steps.shape) != () or np.dtype(steps.dtype).kind not in "iu":
            shown = repr(steps) if isinstance(steps, np.ndarray) else f"{steps.dtype}{list(steps.shape)}"
            raise GraphcError(f"{cls.name} state `steps` must be a count, got {shown}", code="E710")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in self.hyperparams().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """W -= lr * dW"""

    name = "sgd"
    default_lr = 0.1  # the book's chapter 5 training loop
    takes_lr_scaled = True

    def _update(self, name: str, param: np.ndarray, grad: np.ndarray, scratch: np.ndarray) -> None:
        np.multiply(grad, self.lr, out=scratch)
        self._update_scaled(name, param, scratch, scratch)

    def _update_scaled(self, name: str, param: np.ndarray, scaled_grad: np.ndarray, scratch: np.ndarray) -> None:
        param -= scaled_grad


class Momentum(Optimizer):
    """v = momentum * v - lr * dW;  W += v"""

    name = "momentum"
    default_lr = 0.01
    slots = ("v",)
    takes_lr_scaled = True

    def __init__(self, params: Mapping[str, np.ndarray], lr: float | None = None, momentum: float = 0.9):
        super().__init__(params, lr)
        self.momentum = float(momentum)

    def hyperparams(self) -> dict[str, float]:
        return {"lr": self.lr, "momentum": self.momentum}

    def _update(self, name: str, param: np.ndarray, grad: np.ndarray, scratch: np.ndarray) -> None:
        np.multiply(grad, self.lr, out=scratch)
        self._update_scaled(name, param, scratch, scratch)

    def _update_scaled(self, name: str, param: np.ndarray, scaled_grad: np.ndarray, scratch: np.ndarray) -> None:
        v = self.state["v"][name]
        v *= self.momentum
        v -= scaled_grad
        param += v


class AdaGrad(Optimizer):
    """h += dW * dW;  W -= lr * dW / (sqrt(h) + eps): each weight's step shrinks with its history."""

    name = "adagrad"
    default_lr = 0.01
    slots = ("h",)

    def _update(self, name: str, param: np.ndarray, grad: np.ndarray, scratch: np.ndarray) -> None:
        h = self.state["h"][name]
        np.multiply(grad, grad, out=scratch)
        h += scratch
        np.sqrt(h, out=scratch)
        scratch += EPS
        np.divide(grad, scratch, out=scratch)
        scratch *= self.lr
        param -= scratch


class Adam(Optimizer):
    """m += (1 - beta1)(dW - m);  v += (1 - beta2)(dW^2 - v);  W -= lr_t * m / (sqrt(v) + eps)

    with lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t), which undoes the bias
    of m and v towards their zero start in the first steps.
    """

    name = "adam"
    default_lr = 0.001
    slots = ("m", "v")

    def __init__(
        self, params: Mapping[str, np.ndarray], lr: float | None = None, beta1: float = 0.9, beta2: float = 0.999
    ):
        super().__init__(params, lr)
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self._lr_t = self.lr

    def hyperparams(self) -> dict[str, float]:
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2}

    def _prepare(self) -> None:
        t = self.steps
        self._lr_t = self.lr * math.sqrt(1.0 - self.beta2**t) / (1.0 - self.beta1**t)

    def _update(self, name: str, param: np.ndarray, grad: np.ndarray, scratch: np.ndarray) -> None:
        m, v = self.state["m"][name], self.state["v"][name]
        np.subtract(grad, m, out=scratch)
        scratch *= 1.0 - self.beta1
        m += scratch
        np.multiply(grad, grad, out=scratch)
        scratch -= v
        scratch *= 1.0 - self.beta2
        v += scratch
        np.sqrt(v, out=scratch)
        scratch += EPS
        np.divide(m, scratch, out=scratch)
        scratch *= self._lr_t
        param -= scratch


class WeightDecay:
    """The book's L2 penalty (chapter 6): ½λ Σ‖W‖² over the weights, added to
    the loss, and its gradient λW, added to each weight's gradient before the
    optimizer sees it (as the book's MultiLayerNet does, whatever the optimizer).

    Biases are not weights. Like the optimizers, it allocates nothing per step:
    each weight has one scratch array, holding W² and then its decayed gradient.
    """

    def __init__(self, params: Mapping[str, np.ndarray], weights: Sequence[str], lam: float):
        self.lam = float(lam)
        self.weights = tuple(weights)
        self._scratch = {name: np.empty_like(params[name]) for name in self.weights}

    def penalty(self, params: Mapping[str, np.ndarray]) -> float:
        """½λ Σ‖W‖², summed by numpy's pairwise sum (not BLAS), so it is the same everywhere."""
        total = 0.0
        for name in self.weights:
            total += float(np.multiply(params[name], params[name], out=self._scratch[name]).sum())
        return 0.5 * self.lam * total

    def add_gradient(
        self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray], scale: float = 1.0
    ) -> dict[str, np.ndarray]:
        """grads with scale·λW added to each weight's; scale is what backward was
        seeded with (the lr, for optimizers that take lr-scaled gradients).
        The gradients given are not written into."""
        decayed = dict(grads)
        for name in self.weights:
            if name in grads:
                grad = np.multiply(params[name], scale * self.lam, out=self._scratch[name])
                grad += grads[name]
                decayed[name] = grad
        return decayed


OPTIMIZERS: dict[str, type[Optimizer]] = {cls.name: cls for cls in (SGD, Momentum, AdaGrad, Adam)}


def make_optimizer(name: str, params: Mapping[str, np.ndarray], lr: float | None = None) -> Optimizer:
    """The optimizer called `name` over `params`; lr None takes its default."""
    cls = OPTIMIZERS.get(name)
    if cls is None:
        hint = did_you_mean(name, OPTIMIZERS) or "optimizers: " + ", ".join(OPTIMIZERS)
        raise GraphcError(f"unknown optimizer `{name}`", hint=hint, code="E503")
    return cls(params, lr)
