"""The statistical checks themselves must fail on a biased or too-noisy compressor."""

from __future__ import annotations

import numpy as np
import pytest

from mpicomp.testing import assert_mean_close, assert_second_moment_below, assert_unbiased

RNG = np.random.default_rng(0)
X = RNG.standard_normal(50)
NOISE = RNG.standard_normal((400, 50))


def test_unbiased_passes_on_unbiased_noise():
    assert_unbiased(X + NOISE, X)


def test_unbiased_detects_a_five_percent_bias_hidden_in_noise():
    """Bias b = 0.05 x, noise sd 0.1: E T = (||b||^2 + tr Cov/N) / (tr Cov/N) = (0.0025 ||x||^2 + 1.25e-3) / 1.25e-3,
    about 100 for ||x||^2 ~ 50, far above the threshold 20 (a 1% bias, T ~ 5, would rightly pass at N = 400)."""
    with pytest.raises(AssertionError, match="bias detected"):
        assert_unbiased(1.05 * X + 0.1 * NOISE, X)


def test_deterministic_but_wrong_output_fails():
    with pytest.raises(AssertionError, match="deterministic output differs|bias detected"):
        assert_unbiased(np.tile(X + 1e-3, (10, 1)), X)


def test_exact_coordinates_are_set_aside():
    samples = X + NOISE
    samples[:, :5] = X[:5]
    assert_unbiased(samples, X)
    assert_unbiased(np.tile(X, (10, 1)), X)


def test_second_moment_bound_detects_excess_variance():
    """E||noise||^2 = 50; a bound of 45 is below it by far more than 5 standard errors (sd ~10 / sqrt(400))."""
    assert_second_moment_below(X + NOISE, X, 55.0, "noise")
    with pytest.raises(AssertionError, match="exceeds bound"):
        assert_second_moment_below(X + NOISE, X, 45.0, "noise")


def test_mean_close_detects_a_shift_of_ten_standard_errors():
    """400 unit normals: standard error 0.05; a shift of 0.5 is 10 of them, beyond z = 5."""
    values = NOISE[:, 0]
    assert_mean_close(values, 0.0, "noise")
    with pytest.raises(AssertionError, match=r"noise: measured .* off by"):
        assert_mean_close(values + 0.5, 0.0, "noise")
