"""Scaled sign (Karimireddy, Rebjock, Stich, Jaggi 2019, EF-SignSGD): ``C(x) = (||x||_1 / d) sign(x)``.

``||C(x) - x||^2 = ||x||^2 - ||x||_1^2 / d``, so C is contractive with
``alpha(x) = ||x||_1^2 / (d ||x||_2^2) >= 1/d`` (Cauchy-Schwarz; equality for a single nonzero).
Zeros take sign +1, which keeps exactly one bit per coordinate and leaves the identity above intact.
Wire: ``||x||_1 / d`` as the one float64 codec scalar, then the sign bitmap (bit i = 1 when x_i < 0).
"""

from __future__ import annotations

import numpy as np
from numba import float64, njit, uint64

from ..rng import RandomKey
from ..wire import Message, MessageError, packed_nbytes
from ..wire.bitpack import GROUP, load_u64, set_plane
from .base import Compressor, check_scalar, non_finite_input
from .numeric import first_non_finite, float64_bits, float64_from_bits, rescaled_mean_magnitude
from .registry import register

_SPAN = 2048  # coordinates per vectorized loop (a multiple of GROUP)


@njit(cache=True, inline="always")
def _tail_word(bitmap, base):
    """The little-endian word of the bytes ``bitmap[base:]`` (fewer than 8), zero-extended."""
    word = uint64(0)
    for k in range(bitmap.size - base):
        word |= uint64(bitmap[base + k]) << uint64(8 * k)
    return word


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
def _expand_signs(bitmap, scale, out, accumulate):
    """``out[i] = -scale`` if bit i of the LSB-first bitmap is set, else ``+scale`` (``accumulate``:
    added to out); False if a padding bit is set. Span by span: the words spread into flags, then a
    vectorized loop flips the sign bit of ``scale``'s pattern."""
    d = out.size
    flags = np.empty(_SPAN, dtype=np.uint8)
    pattern = float64_bits(float64(scale))
    for lo in range(0, d, _SPAN):
        target = out[lo : min(d, lo + _SPAN)]
        for k in range(0, target.size, GROUP):
            base = (lo + k) // 8
            word = load_u64(bitmap, base) if base + 8 <= bitmap.size else _tail_word(bitmap, base)
            set_plane(flags, k, word, 0)
        for j in range(target.size):
            value = float64_from_bits(pattern ^ (uint64(flags[j]) << uint64(63)))  # -scale: the sign flipped
            if accumulate:
                target[j] += value
            else:
                target[j] = value
    tail = d % 8
    return tail == 0 or bitmap[d // 8] >> tail == 0


@register
class Sign(Compressor):
    """Scaled sign: one bit per coordinate plus ``||x||_1 / d``; contractive, alpha = 1/d (worst case)."""

    name = "sign"
    unbiased = False
    n_scalars = 1
    checks_finite = True  # a non-finite sum |x_i| is searched for NaN / Inf

    def alpha(self, d: int) -> float:
        return 1.0 / d

    def expected_bits(self, d: int) -> float:
        return float(d)

    def payload_bytes(self, d: int) -> int:
        return packed_nbytes(d, 1)

    def _encode_into(self, x: np.ndarray, key: RandomKey, payload: np.ndarray) -> tuple[float, ...]:
        total = _sign_bitmap(x, payload)
        if not x.size:
            return (0.0,)
        if np.isfinite(total):
            return (total / x.size,)
        bad = first_non_finite(x)
        if bad >= 0:
            raise non_finite_input(x, bad)
        return (rescaled_mean_magnitude(x),)

    def _decode_into(self, msg: Message, key: RandomKey | None, out: np.ndarray, accumulate: bool) -> None:
        scale = check_scalar(msg.scalars[0], "sign scale")
        bitmap = np.frombuffer(msg.payload, dtype=np.uint8)
        if bitmap.size != packed_nbytes(msg.d, 1):
            raise MessageError(f"sign: bitmap of {bitmap.size} bytes, d={msg.d} signs need {packed_nbytes(msg.d, 1)}")
        if not _expand_signs(bitmap, scale, out, accumulate):
            raise MessageError("sign: nonzero padding bits after the last sign")
