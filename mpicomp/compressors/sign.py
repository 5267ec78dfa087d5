"""Scaled sign (Karimireddy, Rebjock, Stich, Jaggi 2019, EF-SignSGD): ``C(x) = (||x||_1 / d) sign(x)``.

``||C(x) - x||^2 = ||x||^2 - ||x||_1^2 / d``, so C is contractive with
``alpha(x) = ||x||_1^2 / (d ||x||_2^2) >= 1/d`` (Cauchy-Schwarz; equality for a single nonzero).
Zeros take sign +1, which keeps exactly one bit per coordinate and leaves the identity above intact.
Wire: ``||x||_1 / d`` as the one float64 codec scalar, then the sign bitmap (bit i = 1 when x_i < 0).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..rng import RandomKey
from ..wire import Message, pack_signs, unpack_signs
from ..wire.elias import check_padding
from .base import Compressor, check_scalar
from .registry import register
from .terngrad import max_magnitude


@njit(cache=True)
def mean_magnitude(x):
    """``||x||_1 / d`` in float64 without overflow (summed as ``|x_i| / max |x_j|``, then rescaled)."""
    largest = max_magnitude(x)
    if largest == 0.0:
        return 0.0
    total = 0.0
    for v in x:
        total += abs(np.float64(v)) / largest
    return largest * (total / x.size)


@register
class Sign(Compressor):
    """Scaled sign: one bit per coordinate plus ``||x||_1 / d``; contractive, alpha = 1/d (worst case)."""

    name = "sign"
    unbiased = False
    n_scalars = 1

    def __init__(self) -> None:
        """No spec parameters."""

    def alpha(self, d: int) -> float:
        return 1.0 / d

    def expected_bits(self, d: int) -> float:
        return float(d)

    def _encode(self, x: np.ndarray, key: RandomKey) -> tuple[tuple[float, ...], np.ndarray]:
        return (mean_magnitude(x),), pack_signs(x < 0)

    def _decode(self, msg: Message, key: RandomKey | None) -> np.ndarray:
        scale = check_scalar(msg.scalars[0], "sign scale")
        negative = unpack_signs(msg.payload, msg.d)
        check_padding(np.frombuffer(msg.payload, dtype=np.uint8), msg.d, "sign bitmap")
        return np.where(negative, -scale, scale)
