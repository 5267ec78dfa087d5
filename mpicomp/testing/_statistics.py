"""Sample statistics for compressors, with thresholds derived from the sampling math.

Given N independent draws C_1(x), ..., C_N(x):

* Unbiasedness. With ``m = mean_k C_k(x)`` and ``V = tr Cov C(x)`` (estimated by the sample
  covariance trace), ``E||m - x||^2 = ||E C(x) - x||^2 + V / N``. The statistic
  ``T = ||m - x||^2 / (V / N)`` has mean 1 when C is unbiased; its tail is heaviest when all
  variance lies along one direction, where ``T ~ chi2_1`` (CLT). The check fails when
  ``T > chi2_1.isf(p)``: an unbiased compressor fails with probability at most ``p`` (default
  ``P(chi2_1 > 20) = 7.7e-6``).
* Means. ``mean(v) = E v`` within ``z`` standard errors ``sd(v)/sqrt(N)`` (two-sided CLT), failing
  a correct expectation with probability ``p = 2 P(Z > z)`` (default z = 5, ``p = 5.7e-7``).
* Second moment bounds. ``e_k = ||C_k(x) - x||^2`` are i.i.d. with mean ``E``; by the CLT
  ``mean(e) <= E + z sd(e) / sqrt(N)`` except with probability ``p = P(Z > z)`` (default z = 5,
  ``p = 2.9e-7``). So ``mean(e) <= bound + z sd(e)/sqrt(N)`` is asserted for
  ``bound = omega ||x||^2`` (unbiased) or ``(1 - alpha) ||x||^2`` (contractive).

Seeds are fixed, so a check's outcome is reproducible; ``p`` is its probability over seeds.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from ..compressors import Compressor
from ..rng import RandomKey

CHI2_1_TAIL = 20.0  # P(chi2_1 > 20) = 7.7e-6
Z_TAIL = 5.0  # P(Z > 5) = 2.9e-7
MEAN_FALSE_FAILURE = float(stats.chi2.sf(CHI2_1_TAIL, 1))
MOMENT_FALSE_FAILURE = float(stats.norm.sf(Z_TAIL))
MEAN_CLOSE_FALSE_FAILURE = 2 * MOMENT_FALSE_FAILURE
SEED = 12345


def draws(compressor: Compressor, x: np.ndarray, n: int, seed: int = SEED) -> np.ndarray:
    """``n`` decoded compressions of ``x`` with keys (seed, k, 0, 0), k = 0..n-1; shape (n, d)."""
    out = np.empty((n, x.size))
    for k in range(n):
        key = RandomKey(seed, k, 0, 0)
        out[k] = compressor.decode(compressor.encode(x, key), x.size, key)
    return out


def assert_unbiased(samples: np.ndarray, x: np.ndarray, false_failure: float = MEAN_FALSE_FAILURE) -> None:
    """Assert ``E C(x) = x``: ``T = ||mean - x||^2 / (tr Cov / N)`` below ``chi2_1.isf(false_failure)``."""
    # Coordinates reproduced exactly by every draw add nothing in exact arithmetic, but the float
    # mean of identical values is not exact; the statistic is taken over the others.
    exact = (np.ptp(samples, axis=0) == 0) & (samples[0] == x)
    if exact.all():
        return
    samples, x = samples[:, ~exact], x[~exact]
    n = samples.shape[0]
    err = float(np.sum((samples.mean(axis=0) - x) ** 2))
    trace = float(np.sum(samples.var(axis=0, ddof=1)))
    if trace == 0.0:
        raise AssertionError(f"deterministic output differs from x by {np.sqrt(err):.3e}")
    t = err / (trace / n)
    threshold = float(stats.chi2.isf(false_failure, 1))
    assert t < threshold, (
        f"bias detected: ||mean - x||^2 = {err:.3e} is {t:.1f}x its sampling variance over {n} draws "
        f"(an unbiased compressor exceeds {threshold:.1f}x with probability {false_failure:.1e})"
    )


def mean_with_error(values: np.ndarray) -> tuple[float, float]:
    """Sample mean and its standard error ``sd / sqrt(N)``."""
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(values.size))


def assert_mean_close(
    measured: np.ndarray, expected: float, what: str, false_failure: float = MEAN_CLOSE_FALSE_FAILURE
) -> None:
    """Assert ``E measured = expected``: the sample mean within ``z = Phi^-1(1 - false_failure/2)``
    standard errors (plus 1e-12 relative for rounding when the values are deterministic)."""
    mean, error = mean_with_error(np.asarray(measured, dtype=np.float64))
    slack = float(stats.norm.isf(false_failure / 2)) * error + 1e-12 * abs(expected)
    assert abs(mean - expected) <= slack, (
        f"{what}: measured {mean:.5g} +- {error:.2g} ({measured.size} draws), expected {expected:.5g}: "
        f"off by {mean - expected:+.3g}, allowed +-{slack:.2g}"
    )


def assert_second_moment_below(
    samples: np.ndarray, x: np.ndarray, bound: float, what: str, false_failure: float = MOMENT_FALSE_FAILURE
) -> None:
    """Assert ``E||C(x) - x||^2 <= bound`` up to ``z = Phi^-1(1 - false_failure)`` standard errors."""
    e = np.sum((samples - x) ** 2, axis=1)
    # z standard errors of sampling slack, plus 1e-12 relative for rounding when e is deterministic
    slack = float(stats.norm.isf(false_failure)) * e.std(ddof=1) / np.sqrt(e.size) + 1e-12 * bound
    assert e.mean() <= bound + slack, (
        f"{what}: measured E||C(x)-x||^2 = {e.mean():.4e} exceeds bound {bound:.4e} by {e.mean() - bound:.3e} "
        f"(sampling slack {slack:.1e} over {e.size} draws)"
    )


def assert_omega(compressor: Compressor, samples: np.ndarray, x: np.ndarray) -> None:
    """``E||C(x) - x||^2 <= omega(d) ||x||^2``."""
    omega = compressor.omega(x.size)
    assert omega is not None, f"{compressor.spec} declares no omega"
    assert_second_moment_below(samples, x, omega * float(x @ x), f"{compressor.spec} omega={omega:.4g}")


def assert_alpha(compressor: Compressor, samples: np.ndarray, x: np.ndarray) -> None:
    """``E||C(x) - x||^2 <= (1 - alpha(d)) ||x||^2``."""
    alpha = compressor.alpha(x.size)
    assert alpha is not None, f"{compressor.spec} declares no alpha"
    assert_second_moment_below(samples, x, (1 - alpha) * float(x @ x), f"{compressor.spec} alpha={alpha:.4g}")


def fixed_vectors(d: int, seed: int = 7) -> dict[str, np.ndarray]:
    """Fixed test vectors of dimension d: dense, sparse, with zeros, huge and tiny magnitudes."""
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal(d)
    sparse = np.zeros(d)
    sparse[rng.choice(d, size=max(1, d // 20), replace=False)] = rng.standard_normal(max(1, d // 20))
    zeros = dense * (rng.random(d) < 0.5)
    return {
        "dense": dense,
        "sparse": sparse,
        "half-zeros": zeros,
        "huge": dense * 1e30,
        "tiny": dense * 1e-30,
        "heavy-tailed": rng.standard_cauchy(d),
    }
