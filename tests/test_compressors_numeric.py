"""Overflow-safe reductions of mpicomp.compressors.numeric, checked against math.hypot and exact values."""

import math

import numpy as np
import pytest

from mpicomp.compressors.numeric import (
    first_non_finite,
    l2_norm,
    max_magnitude,
    rescaled_l2_norm,
    rescaled_mean_magnitude,
)


@pytest.mark.parametrize(
    ("scale", "dtype"),
    [(s, np.float64) for s in (2.0**-1060, 1e-300, 1e-120, 1.0, 1e120, 1e300)]
    + [(s, np.float32) for s in (1e-42, 1e-20, 1.0, 1e30)],
)
def test_l2_norm_matches_hypot_at_any_scale(scale: float, dtype: type) -> None:
    x = (np.random.default_rng(0).standard_normal(1000) * scale).astype(dtype)
    expected = math.hypot(*x.astype(np.float64))
    assert l2_norm(x) == pytest.approx(expected, rel=1e-13)
    assert rescaled_l2_norm(x, 10, 500, max_magnitude(x[10:500])) == pytest.approx(
        math.hypot(*x[10:500].astype(np.float64)), rel=1e-13
    )


def test_l2_norm_overflows_only_when_the_norm_does() -> None:
    assert l2_norm(np.array([1.5e308, 1.5e308])) == np.inf
    assert l2_norm(np.array([1e308, -1e300])) == pytest.approx(1e308, rel=1e-15)
    assert l2_norm(np.zeros(3)) == 0.0 and l2_norm(np.zeros(0)) == 0.0


def test_rescaled_mean_magnitude_where_the_plain_sum_overflows() -> None:
    x = np.array([1e308, -1e308, 1e308, 0.0])
    assert rescaled_mean_magnitude(x) == pytest.approx(0.75e308, rel=1e-15)
    assert max_magnitude(x) == 1e308 and max_magnitude(np.zeros(0)) == 0.0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_max_magnitude_and_first_non_finite_match_numpy(dtype: type) -> None:
    """The bit-pattern passes agree with NumPy: the largest |x_i| (subnormals, -0.0 included), the
    first NaN or Inf wherever it sits in a block, NaN from the max when x holds one."""
    tiny = np.finfo(dtype).smallest_subnormal
    x = (np.random.default_rng(1).standard_normal(10_000) * 1e-3).astype(dtype)
    x[::7] = -0.0
    x[5] = -tiny
    assert max_magnitude(x) == np.abs(x).max() and first_non_finite(x) == -1
    assert max_magnitude(np.array([-0.0, tiny], dtype=dtype)) == tiny
    for bad, value in ((0, np.nan), (4095, -np.inf), (4096, np.inf), (9999, -np.nan)):
        y = x.copy()
        y[bad] = value
        y[-1 if bad < 9999 else 0] = np.inf  # a later (or earlier) non-finite does not hide the first
        assert first_non_finite(y) == (bad if bad < 9999 else 0)
        assert np.isnan(max_magnitude(y)) == np.isnan(value)


@pytest.mark.parametrize(
    ("what", "values"),
    [
        ("sum above 2^958, max in range", [2.0**479.5, 1.0]),
        ("max above 2^480: squares overflow", [2.0**600, -(2.0**600), 3.0]),
        ("sum below n 2^-958, max below 2^-480", [2.0**-481, -(2.0**-481), 2.0**-482]),
        ("squares underflow to a zero sum", [2.0**-540, -(2.0**-541), 0.0]),
        ("subnormal squares, a nonzero sum", [2.0**-530 * (1 + 2.0**-40), 3.3 * 2.0**-531, 0.0]),
        ("sum just inside the settled range", [2.0**-478, 2.0**-478, 2.0**-478]),
        ("zero block", [0.0, -0.0, 0.0]),
    ],
)
def test_block_norms_where_the_sum_of_squares_alone_does_not_settle_them(what: str, values: list[float]) -> None:
    """``block_scales`` reads a block's max only when its sum of squares leaves ``[n 2^-958, 2^958]``;
    every block's 2-norm equals the exact one (``math.hypot``) on either side of those edges, in a
    vector whose other blocks are ordinary."""
    from mpicomp.compressors._levels import block_scales

    block = len(values)
    ordinary = np.random.default_rng(2).standard_normal(2 * block)
    x = np.concatenate([ordinary[:block], values, ordinary[block:]])
    norms, mult, pre = block_scales(x, block, 2, 4.0)
    expected = [math.hypot(*x[b * block : (b + 1) * block]) for b in range(3)]
    np.testing.assert_allclose(norms, expected, rtol=1e-15, err_msg=what)
    assert np.isfinite(mult).all() and np.isfinite(pre).all()


def test_block_norms_report_nan_before_an_overflowing_block() -> None:
    """NaN or Inf anywhere in x is the error, even after a block whose 2-norm overflows."""
    from mpicomp.compressors._levels import block_scales

    x = np.concatenate([np.full(4, 1e308), [np.nan, 1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match=r"x\[4\]"):
        block_scales(x, 4, 2, 1.0)
    with pytest.raises(ValueError, match="exceeds the float64 range"):
        block_scales(np.nan_to_num(x), 4, 2, 1.0)
