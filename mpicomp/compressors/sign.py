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
from ..wire import Message, MessageError, packed_nbytes
from .base import Compressor, check_scalar
from .numeric import rescaled_mean_magnitude
from .registry import register


@njit(cache=True, inline="always")
def _sign_byte(x, first, count, total):
    """Bits ``[x_i < 0]`` of coordinates ``first .. first + count - 1`` (LSB first) and the running ``sum |x_i|``."""
    bits = 0
    for j in range(count):
        value = np.float64(x[first + j])
        total += abs(value)
        bits |= int(value < 0) << j
    return bits, total


@njit(cache=True, fastmath={"reassoc"})  # reassociation lets the sum vectorize; no finiteness assumed
def _sign_bitmap(x, out):
    """Pack the sign bitmap of x into ``out`` in one pass; returns ``sum |x_i|`` (inf if it overflows)."""
    total = 0.0
    full = x.size // 8
    for byte in range(full):
        out[byte], total = _sign_byte(x, 8 * byte, 8, total)
    if x.size % 8:
        out[full], total = _sign_byte(x, 8 * full, x.size % 8, total)
    return total


@njit(cache=True)
def _expand_signs(bitmap, scale, out):
    """``out[i] = -scale`` if bit i of the LSB-first bitmap is set, else ``+scale``; False if a padding bit is set."""
    d = out.size
    values = np.array((scale, -scale))
    for byte in range(d // 8):
        bits = bitmap[byte]
        for j in range(8):
            out[8 * byte + j] = values[(bits >> j) & 1]
    tail = d % 8
    if tail:
        bits = bitmap[d // 8]
        for j in range(tail):
            out[d - tail + j] = values[(bits >> j) & 1]
        return bits >> tail == 0
    return True


@register
class Sign(Compressor):
    """Scaled sign: one bit per coordinate plus ``||x||_1 / d``; contractive, alpha = 1/d (worst case)."""

    name = "sign"
    unbiased = False
    n_scalars = 1

    def alpha(self, d: int) -> float:
        return 1.0 / d

    def expected_bits(self, d: int) -> float:
        return float(d)

    def _encode(self, x: np.ndarray, key: RandomKey) -> tuple[tuple[float, ...], np.ndarray]:
        bitmap = np.empty(packed_nbytes(x.size, 1), dtype=np.uint8)
        total = _sign_bitmap(x, bitmap)
        if not x.size:
            return (0.0,), bitmap
        return (total / x.size if np.isfinite(total) else rescaled_mean_magnitude(x),), bitmap

    def _decode(self, msg: Message, key: RandomKey | None) -> np.ndarray:
        scale = check_scalar(msg.scalars[0], "sign scale")
        bitmap = np.frombuffer(msg.payload, dtype=np.uint8)
        if bitmap.size != packed_nbytes(msg.d, 1):
            raise MessageError(f"sign: bitmap of {bitmap.size} bytes, d={msg.d} signs need {packed_nbytes(msg.d, 1)}")
        out = np.empty(msg.d)
        if not _expand_signs(bitmap, scale, out):
            raise MessageError("sign: nonzero padding bits after the last sign")
        return out
