"""Printed figures keep only the digits rounding cannot change, so that the
same graph prints the same text whatever the BLAS, the CPU or the thread
count: a statistic that is zero in exact arithmetic prints as 0, and no
figure shows a digit finer than ROUNDING_ULPS units in the last place of its
dtype, at the scale it was computed at."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from graphc.commands.common import fmt_array, fmt_named, fmt_number
from graphc.figures import ROUNDING_ULPS, rounding_error, stable_number

ROOT = Path(__file__).resolve().parent.parent


def zero_mean(shape: tuple[int, ...], dtype=np.float64, seed: int = 0) -> np.ndarray:
    """Random numbers whose mean is zero in exact arithmetic: each row and its negation."""
    rng = np.random.default_rng(seed)
    half = rng.normal(size=(shape[0] // 2, *shape[1:]))
    return np.concatenate([half, -half]).astype(dtype)


def ulps(array: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`array` with every element moved by up to `count` units in the last
    place of its largest element: what another summation order might give."""
    rng = np.random.default_rng(seed)
    step = np.spacing(np.abs(array).max())
    return (array + rng.integers(-count, count + 1, size=array.shape) * step).astype(array.dtype)


# --- the bound ------------------------------------------------------------------


def test_the_bound_is_a_thousand_roundings_of_the_dtype():
    assert ROUNDING_ULPS == 1024
    assert rounding_error(np.float64) == 1024 * 2.0**-52
    assert rounding_error(np.float32) == 1024 * 2.0**-23
    assert rounding_error(np.int64) == rounding_error(np.float64)  # statistics of integers are float64 sums


@pytest.mark.parametrize(
    "value, uncertainty, digits, text",
    [
        (2.304718609123, 0.0, 10, "2.304718609"),
        (2.304718609123, 5e-4, 10, "2.305"),  # no digit finer than the uncertainty
        (2.304718609123, 5e-4, 3, "2.3"),  # nor more than asked for
        (1.23456e-10, 2.3e-13, 4, "1.23e-10"),
        (-3.886e-19, 2.3e-14, 4, "0"),  # rounding noise beside the scale
        (5e-14, 2.3e-13, 4, "0"),
        (4e-13, 2.3e-13, 4, "0"),  # above the bound, but its first digit is not
        (0.0, 0.0, 4, "0"),
        (-0.0, 0.0, 4, "0"),
        (-1e-300, 0.0, 4, "-1e-300"),
        (float("nan"), 1.0, 4, "nan"),
        (float("inf"), 1.0, 4, "inf"),
        (float("-inf"), 1.0, 4, "-inf"),
    ],
)
def test_stable_number(value, uncertainty, digits, text):
    assert stable_number(value, uncertainty, digits) == text


# --- a mean that is zero in exact arithmetic ------------------------------------------------


@pytest.mark.parametrize("dtype, label", [(np.float64, "f64"), (np.float32, "f32")])
def test_a_mean_that_is_zero_up_to_rounding_prints_as_0(dtype, label):
    array = zero_mean((500, 10), dtype)
    assert np.mean(array, dtype=np.float64) == 0  # exactly, as built
    norm = fmt_array(array).split("norm ")[1]
    for seed in range(20):
        noisy = ulps(array, 8, seed)
        assert np.mean(noisy, dtype=np.float64) != 0
        assert fmt_array(noisy) == f"{label}[500, 10]  mean 0  norm {norm}"


def test_the_gradient_of_the_last_weights_prints_its_mean_as_0():
    # d_W2 = relu1.T @ d_y, and each row of d_y sums to 0 (softmax minus a one-hot
    # row): its mean is zero in exact arithmetic, rounding noise (-3.886e-19 on one
    # machine, -3.053e-19 on another) in floats.
    out = subprocess.run(
        [sys.executable, "-m", "graphc", "run", "models/two_layer_net.graph"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (w2,) = [line for line in out.splitlines() if line.startswith("  W2 ")]
    assert w2.split() == ["W2", "f64[50,", "10]", "mean", "0", "norm", "0.5003"]


def test_float32_figures_are_known_to_fewer_digits():
    # A mean of 1e-6 of the largest value is a real figure in float64 and
    # rounding noise in float32 (where 1024 ulps are 1.2e-4 of it).
    array = zero_mean((500, 10))
    array[0, 0] += 1e-6 * np.abs(array).max() * array.size
    mean = np.mean(array)
    assert mean == pytest.approx(1e-6 * np.abs(array).max())
    assert fmt_array(array).split("  ")[1] == f"mean {mean:.4g}"
    assert fmt_array(array.astype(np.float32)).split("  ")[1] == "mean 0"


def test_a_mean_just_above_rounding_keeps_only_its_stable_digits():
    array = zero_mean((1000, 1))[:, 0]
    largest = np.abs(array).max()
    array[0] += 1.23456e-10 * largest * array.size  # mean 1.23456e-10 x the largest
    summary = fmt_array(array)
    mean = float(summary.split("mean ")[1].split()[0])
    assert summary.split("  ")[1] == f"mean {mean:.3g}"  # three digits: the fourth is within 1024 ulps
    assert mean == pytest.approx(1.23456e-10 * largest, rel=1e-2)


def test_norms_print_four_digits_in_float64_and_what_float32_holds():
    assert fmt_array(np.full(16, 0.25)) == "f64[16]  mean 0.25  norm 1"
    array = np.full(100, 0.987654)
    assert fmt_array(array) == "f64[100]  mean 0.9877  norm 9.877"
    # float32: 1024 ulps of 9.87654 are 1.2e-3, so the hundredths are the finest digit
    assert fmt_array(array.astype(np.float32)) == "f32[100]  mean 0.988  norm 9.88"


# --- scalars -------------------------------------------------------------------------------


def test_scalars():
    assert fmt_array(np.float64(220.00000000000003)) == "220"  # 100 * 2 * 1.1
    assert fmt_array(np.float64(2.3047186091234)) == "2.304718609"
    assert fmt_array(2.3047186091234) == "2.304718609"  # a Python float is a float64
    assert fmt_array(np.float32(2.3047186)) == "2.305"
    assert fmt_array(np.float32(220)) == "220"
    assert fmt_array(np.float64(-1e-300)) == "-1e-300"  # a scalar is its own scale: never rounded to 0
    assert fmt_array(np.int64(10**12)) == "1000000000000"  # integers are exact
    assert fmt_number(3, np.int64) == "3"
    assert fmt_number(0.1 + 0.2) == "0.3"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nan_and_infinities(dtype):
    assert fmt_array(dtype("nan")) == "nan"
    assert fmt_array(dtype("inf")) == "inf"
    assert fmt_array(dtype("-inf")) == "-inf"
    small = np.array([1.5, np.nan, np.inf, -np.inf], dtype)
    assert fmt_array(small) == "[1.5, nan, inf, -inf]"
    large = np.arange(20, dtype=dtype)
    large[3], large[4] = np.nan, -np.inf
    label = "f64" if dtype == np.float64 else "f32"
    assert fmt_array(large) == f"{label}[20]  mean 9.15  norm 49.45  (1 NaN, 1 inf)"
    assert fmt_array(np.full(20, np.nan, dtype)) == f"{label}[20]  mean 0  norm 0  (20 NaN, 0 inf)"


# --- small arrays in full ------------------------------------------------------------------


def test_an_element_that_is_rounding_noise_beside_the_largest_prints_as_0():
    assert fmt_array(np.array([1.0, -3e-17, 0.5])) == "[1, 0, 0.5]"
    assert fmt_array(np.array([1e-17, 2e-17])) == "[1e-17, 2e-17]"  # the scale is the array's own
    assert fmt_array(np.array([1.0, 1e-6], np.float32)) == "[1, 0]"
    assert fmt_array(np.array([1.0, 1e-6])) == "[1, 1e-06]"


def test_small_arrays_print_six_digits_at_most():
    b2 = np.array([0.0992890123456, -0.566783456, 0.1])
    assert fmt_array(b2) == "[0.099289, -0.566783, 0.1]"
    # float32: 1024 ulps of the largest, 0.567, are 7e-5: nothing finer than 1e-4
    assert fmt_array(b2.astype(np.float32)) == "[0.0993, -0.5668, 0.1]"
    assert fmt_array(np.array([[1, 2], [3, 4]])) == "[[1, 2], [3, 4]]"


def test_the_same_figures_under_a_few_ulps_of_noise():
    # A gradient recomputed in another order: every figure stays put.
    rng = np.random.default_rng(7)
    values = {
        "loss": np.float64(2.302585092994046),
        "b": zero_mean((10,)),
        "W": zero_mean((50, 10)),
        "x": rng.normal(size=(3, 784)) * 1e-4,
    }
    shown = fmt_named(values)
    assert shown[2] == "  W     f64[50, 10]  mean 0  norm " + fmt_array(values["W"]).split("norm ")[1]
    for seed in range(10):
        noisy = {name: ulps(np.asarray(v), 2, seed) if np.ndim(v) else v for name, v in values.items()}
        assert fmt_named(noisy) == shown
