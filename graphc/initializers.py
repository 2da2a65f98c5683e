"""Initializers: how a param, or an input graphc makes up, gets its first value.

Each is written once, as a numpy expression over the shape, the dtype and a
random generator. A Program evaluates the expression to initialize itself;
the code generator copies it into the generated module's init_params. So
both give the same numbers by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphc.ir import DTYPES, Initializer, TensorType


@dataclass(frozen=True)
class InitKind:
    name: str
    params: tuple[str, ...]  # the numbers it takes, e.g. ("std",)
    expression: str  # numpy, over {shape} {dtype} {rng} {fan_in} {classes} {rows} and the params
    doc: str

    @property
    def usage(self) -> str:
        return f"{self.name}({', '.join(self.params)})" if self.params else self.name

    def source(self, args: tuple[float, ...], shape: tuple[int, ...], dtype: str, rng: str) -> str:
        """The expression for one concrete shape; dtype and rng are names in scope."""
        if self.name == "onehot" and not shape:
            return f"np.ones((), {dtype})"  # a scalar label: the one class there is
        numbers = {name: repr(float(value)) for name, value in zip(self.params, args)}
        return self.expression.format(
            shape=repr(shape),
            dtype=dtype,
            rng=rng,
            fan_in=shape[0] if shape else 1,
            classes=shape[-1] if shape else 1,
            rows=repr(shape[:-1]),
            **numbers,
        )


KINDS: dict[str, InitKind] = {
    kind.name: kind
    for kind in (
        InitKind("zeros", (), "np.zeros({shape}, {dtype})", "all zeros"),
        InitKind("ones", (), "np.ones({shape}, {dtype})", "all ones"),
        InitKind(
            "normal",
            ("std",),
            "({std} * {rng}.standard_normal({shape})).astype({dtype})",
            "Gaussian with mean 0 and the given standard deviation",
        ),
        InitKind(
            "uniform",
            ("low", "high"),
            "{rng}.uniform({low}, {high}, {shape}).astype({dtype})",
            "uniform between low and high",
        ),
        # He et al.: std sqrt(2 / fan_in), for layers followed by ReLU.
        InitKind(
            "he",
            (),
            "(np.sqrt(2.0 / {fan_in}) * {rng}.standard_normal({shape})).astype({dtype})",
            "Gaussian with std sqrt(2 / fan_in)",
        ),
        # Glorot, as the book states it: std sqrt(1 / fan_in).
        InitKind(
            "xavier",
            (),
            "(np.sqrt(1.0 / {fan_in}) * {rng}.standard_normal({shape})).astype({dtype})",
            "Gaussian with std sqrt(1 / fan_in)",
        ),
        InitKind(
            "onehot",
            (),
            "np.eye({classes}, dtype={dtype})[{rng}.integers(0, {classes}, size={rows})]",
            "rows that are random one-hot vectors (made-up labels)",
        ),
    )
}


def concrete_shape(t: TensorType, dims: dict[str, int]) -> tuple[int, ...]:
    return tuple(dims[d] if isinstance(d, str) else int(d) for d in t.shape)


def uses_rng(init: Initializer) -> bool:
    return init.kind in KINDS and "{rng}" in KINDS[init.kind].expression


def source(init: Initializer, shape: tuple[int, ...], dtype: str, rng: str) -> str:
    """Python source that makes the first value, for the code generator."""
    if init.kind == "value":
        assert init.value is not None
        if init.value.ndim > 0:  # a list has the shape it has: its symbols take their sizes from it
            return f"np.asarray({init.value.tolist()!r}, {dtype})"
        return f"np.full({shape!r}, {init.value.item()!r}, {dtype})"
    return KINDS[init.kind].source(init.args, shape, dtype, rng)


def initialize(init: Initializer, t: TensorType, rng: np.random.Generator) -> np.ndarray:
    """The first value of a param or an input, in its dtype and concrete shape."""
    shape = concrete_shape(t, {})
    dtype = DTYPES[t.dtype or "f64"]
    if init.kind == "value":  # data, not code: no need to go through source text
        assert init.value is not None
        return np.broadcast_to(init.value, shape).astype(dtype)
    return eval(source(init, shape, "dtype", "rng"), {"np": np}, {"dtype": dtype, "rng": rng})
