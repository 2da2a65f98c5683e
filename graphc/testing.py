"""Gradient checking: backprop against central differences, per tensor.

Used by the test suite and by `graphc gradcheck` alike. Runs in float64:
central differences in float32 cannot resolve errors anywhere near 1e-6.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from graphc.errors import GraphcError
from graphc.plan import RNG
from graphc.program import Program

# Central differences err by O(eps^2) in truncation and O(1e-16 / eps) in
# rounding; 1e-5 balances the two for values of order 1.
DEFAULT_EPS = 1e-5
DEFAULT_RTOL = 1e-6
# A central difference of a loss L rounds to within about ulp(L) / eps: a
# gradient no larger than this many of those is zero as far as differences
# can tell (a bias right before a batchnorm, whose mean the normalization
# takes away), and its relative error measures only rounding.
NOISE_ULPS = 64


@dataclass(frozen=True)
class GradCheck:
    name: str
    shape: tuple[int, ...]  # the tensor's
    max_abs_error: float  # NaN where the errors cannot be measured (see problem)
    max_rel_error: float  # max |backprop - numerical| over the larger of their max magnitudes
    ok: bool
    problem: str | None = None  # why backprop's gradient cannot be compared: its shape
    zero: bool = False  # both gradients are zero up to the differences' rounding (see NOISE_ULPS)


def numerical_gradients(
    program: Program, feeds: dict[str, Any], names: list[str], eps: float = DEFAULT_EPS, draws: Any = None
) -> dict[str, np.ndarray]:
    """d output / d name for each name, by central differences on float64 copies.

    Every forward draws what the program's generator draws from `draws` (a
    state of its bit generator; default: its state now), so dropout's masks
    stay fixed while the inputs move. State (running statistics) is copied for
    each forward: the differences leave the program's own as they find it.
    """
    seed = program.plan.seed
    assert seed is not None  # a training plan's
    if draws is None:
        draws = program.rng.bit_generator.state
    program.rng.bit_generator.state = draws
    state = {k: v.astype(np.float64) for k, v in program.state.items()}
    env: dict[str, Any] = {}
    program.forward(**feeds)  # validates the feeds and fills in defaults
    for k, v in state.items():
        program.state[k][...] = v
    for name in program.input_names + program.param_names:
        env[name] = np.array(
            program.values[name], dtype=np.float64 if np.asarray(program.values[name]).dtype.kind == "f" else None
        )
    # Weak scalar consts are Python floats already; class indices stay integers.
    env.update(
        {
            k: v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
            for k, v in program.consts.items()
        }
    )
    interpreter = program.inference((seed,), program.mode)
    replay = np.random.default_rng()

    def loss() -> float:
        replay.bit_generator.state = draws
        env[RNG] = replay
        env.update((k, v.copy()) for k, v in state.items())
        interpreter.forward(env)
        return float(np.sum(env[seed]))

    result = {}
    with np.errstate(all="ignore"):
        for name in names:
            array = env[name]
            grad = np.zeros(array.shape, dtype=np.float64)
            flat, gflat = array.reshape(-1), grad.reshape(-1)
            for i in range(flat.size):
                original = flat[i]
                flat[i] = original + eps
                plus = loss()
                flat[i] = original - eps
                minus = loss()
                flat[i] = original
                gflat[i] = (plus - minus) / (2 * eps)
            result[name] = grad
    return result


def check_grads(
    program: Program, feeds: dict[str, Any] | None = None, *, eps: float = DEFAULT_EPS, rtol: float = DEFAULT_RTOL
) -> list[GradCheck]:
    """Compare backprop with numerical gradients for every input and param that gets one."""
    if any(t.dtype == "f32" for t in program.types.values()):
        raise GraphcError("gradient checks run in float64; compile the program without dtype=float32", code="E407")
    feeds = feeds or {}
    draws = program.rng.bit_generator.state  # backprop's masks are the ones the differences hold fixed
    program.forward(**feeds)
    analytic = program.backward()
    names = [n for n in analytic if np.asarray(program.values[n]).dtype.kind == "f"]
    numeric = numerical_gradients(program, feeds, names, eps, draws)
    assert program.plan.seed is not None  # a training plan's
    with np.errstate(all="ignore"):  # inf and NaN (inf - inf) are compared and reported, not warned about
        return _compared(program, names, analytic, numeric, eps, rtol)


def _compared(
    program: Program,
    names: list[str],
    analytic: dict[str, Any],
    numeric: dict[str, np.ndarray],
    eps: float,
    rtol: float,
) -> list[GradCheck]:
    assert program.plan.seed is not None
    loss = float(np.sum(program.values[program.plan.seed]))
    noise = NOISE_ULPS * float(np.finfo(np.float64).eps) * max(abs(loss), 1.0) / eps
    rows = []
    for name in names:
        a = np.asarray(analytic[name], dtype=np.float64)
        n = numeric[name]
        if a.shape != n.shape:
            problem = f"backprop gave a gradient of shape {list(a.shape)} for `{name}` of shape {list(n.shape)}"
            rows.append(GradCheck(name, n.shape, float("nan"), float("nan"), False, problem))
            continue
        abs_error = float(np.max(np.abs(a - n))) if a.size else 0.0
        scale = max(float(np.max(np.abs(a))) if a.size else 0.0, float(np.max(np.abs(n))) if n.size else 0.0)
        rel_error = abs_error / scale if scale > 0 else 0.0
        zero = 0 < scale <= noise
        ok = bool(np.isfinite(abs_error)) and (rel_error <= rtol or zero)
        rows.append(GradCheck(name, a.shape, abs_error, rel_error, ok, zero=zero))
    return rows
