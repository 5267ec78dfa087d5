"""Overflow-safe reductions shared by the codecs (numba kernels over float32 or float64 vectors).

Summed naively, ``||x||_2^2`` over- or underflows once some ``x_i^2`` leaves the float64 range
(and ``||x||_1`` once the sum passes it). The rescaled forms divide by a scale ``M`` first:
``||x||_2 = M sqrt(sum_i (x_i / M)^2)`` and ``||x||_1 / d = M (sum_i |x_i| / M) / d`` with
``M = max_i |x_i|``, or a power of two near it (the divisions are then exact): the largest term
is about 1, so no square overflows and the ones that underflow are negligible.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_PLAIN_BELOW = 1e-100  # max |x_i| in (1e-100, 1e100): the squares are summed unscaled, safely
_PLAIN_ABOVE = 1e100


@njit(cache=True)
def max_magnitude(x: np.ndarray) -> float:
    """``max_i |x_i|`` in float64 (0 for an empty vector)."""
    largest = 0.0
    for i in range(x.size):
        largest = max(largest, abs(np.float64(x[i])))
    return largest


@njit(cache=True, fastmath={"reassoc"})  # reassociation lets the sum vectorize
def _sum_squares(x):
    """``sum_i x_i^2`` in float64, unscaled."""
    total = 0.0
    for i in range(x.size):  # an indexed loop: LLVM vectorizes it (it does not for `for v in x`)
        total += np.float64(x[i]) * np.float64(x[i])
    return total


@njit(cache=True)  # no fastmath: reassociation may factor the division out and overflow
def rescaled_l2_norm(x: np.ndarray, lo: int, hi: int, scale: float) -> float:
    """``M sqrt(sum_{lo <= i < hi} (x_i / M)^2)`` with ``M = scale > 0``: the 2-norm of ``x[lo:hi]``."""
    total = 0.0
    for i in range(lo, hi):
        t = np.float64(x[i]) / scale
        total += t * t
    return scale * np.sqrt(total)


@njit(cache=True)
def l2_norm(x: np.ndarray) -> float:
    """``||x||_2`` in float64 without overflow or underflow (rescaled by ``max |x_i|`` outside [1e-100, 1e100])."""
    largest = max_magnitude(x)
    if largest == 0.0:
        return 0.0
    if _PLAIN_BELOW < largest < _PLAIN_ABOVE:
        return np.sqrt(_sum_squares(x))
    return rescaled_l2_norm(x, 0, x.size, largest)


@njit(cache=True)  # no fastmath: reassociation may factor the division out of the sum and overflow
def rescaled_mean_magnitude(x: np.ndarray) -> float:
    """``||x||_1 / d`` as ``M (sum_i |x_i| / M) / d``, ``M = max_i |x_i|``: for when the plain sum overflows."""
    largest = max_magnitude(x)
    total = 0.0
    for i in range(x.size):
        total += abs(np.float64(x[i])) / largest
    return largest * (total / x.size)
