"""Numba kernels of the switch host encodings (:mod:`mpicomp.compressors.switch_encoding`): one pass each.

Blocks are ``block`` consecutive coordinates (the packet size); ``agreed[b]`` is block b's agreed
exponent and ``headroom`` is H. Powers of two are assembled from their float64 bit pattern, so
every scaling is exact. Inner loops run over 0-based slices of one block, which LLVM vectorizes
(indexing the whole array with ``range(lo, hi)`` runs 4-5x slower). A kernel that can meet bad
input returns its first index (or -1) instead of raising, so that callers can name it.
"""

from __future__ import annotations

import numpy as np
from numba import float32, float64, int64, njit, uint64

from ..rng import random_uniform
from ._levels import float64_bits, float64_from_bits
from .numeric import max_magnitude

EMPTY_BLOCK = -128  # the exponent of an all-zero block: below every real one
SMALLEST_EXPONENT = -127
_EXPONENT_MASK = uint64(0x7FF)


@njit(cache=True, inline="always")
def power_of_two(e):
    """``2^e`` for ``-1022 <= e <= 1023``, exactly."""
    return float64_from_bits(uint64(e + 1023) << uint64(52))


@njit(cache=True, nogil=True)
def fixed_block_exponents(x, block, out):
    """``out[b]``: the smallest e >= -127 with ``max_{i in b} |x_i| < 2^e`` (frexp's exponent of the
    block max), -128 for an all-zero block. Returns the first non-finite or ``>= 2^127`` index, or -1."""
    for b in range(out.size):
        lo = b * block
        values = x[lo : lo + block]
        largest = max_magnitude(values)  # NaN if the block holds one
        if not largest < 2.0**127:
            return lo + _first_at_least(values, 2.0**127)
        biased = int64((float64_bits(largest) >> uint64(52)) & _EXPONENT_MASK)
        out[b] = EMPTY_BLOCK if largest == 0.0 else max(biased - 1022, SMALLEST_EXPONENT)
    return -1


@njit(cache=True, inline="always")
def _first_at_least(values, bound):
    """The first j with ``|values[j]|`` NaN or ``>= bound`` (the caller knows there is one)."""
    for j in range(values.size):
        if not abs(float64(values[j])) < bound:
            return j
    return values.size


@njit(cache=True, nogil=True)
def fixed_to_integers(x, agreed, block, headroom, out):
    """``out_i = rint(x_i 2^(H - E_b))`` (round half to even); ``|out_i| <= 2^H`` when ``|x_i| < 2^E_b``."""
    for b in range(agreed.size):
        scale = power_of_two(headroom - agreed[b])
        values, integers = x[b * block : (b + 1) * block], out[b * block : (b + 1) * block]
        for j in range(values.size):
            integers[j] = np.rint(float64(values[j]) * scale)


@njit(cache=True, nogil=True)
def from_integers(total, agreed, block, headroom, out):
    """``out_i = 2^(E_b - H) total_i``, exact in float64 (``|total_i| < 2^31``)."""
    for b in range(agreed.size):
        scale = power_of_two(agreed[b] - headroom)
        integers, values = total[b * block : (b + 1) * block], out[b * block : (b + 1) * block]
        for j in range(integers.size):
            values[j] = float64(integers[j]) * scale


@njit(cache=True, nogil=True)
def natural_block_exponents(codes, block, bias, out):
    """``out[b]``: the largest k of block b's C_nat values ``±2^k`` (code ``e | negative << 8``,
    ``k = e - bias``), -128 if they are all zero."""
    for b in range(out.size):
        block_codes = codes[b * block : (b + 1) * block]
        largest = 0
        for j in range(block_codes.size):
            largest = max(largest, int64(block_codes[j] & 0xFF))
        out[b] = EMPTY_BLOCK if largest == 0 else largest - bias


@njit(cache=True, nogil=True)
def natural_relative_codes(codes, agreed, block, headroom, bias, state, out):
    """``r | negative << 8`` with ``r = k - (E_b - H) + 1`` for ``k >= E_b - H``; below, ``r = 1`` with
    probability ``2^(k - E_b + H)`` (the ``i``-th uniform of ``state``), else 0; 0 for a zero."""
    for b in range(agreed.size):
        floor = agreed[b] - headroom
        lo = b * block
        block_codes, relative = codes[lo : lo + block], out[lo : lo + block]
        below = False
        for j in range(block_codes.size):  # branch-free: values in range (the usual case), 0 below it
            code = int64(block_codes[j])
            e = code & 0xFF
            shift = e - bias - floor
            below |= (e != 0) & (shift < 0)
            relative[j] = (shift + 1) | (code >> 8 << 8) if (e != 0) & (shift >= 0) else 0
        if below:  # shift >= -253 for exponents of C_nat: 2^shift is a normal float64
            for j in range(block_codes.size):
                e = int64(block_codes[j] & 0xFF)
                shift = e - bias - floor
                if e != 0 and shift < 0 and random_uniform(state, lo + j) < power_of_two(shift):
                    relative[j] = 1 | (int64(block_codes[j] >> 8) << 8)


@njit(cache=True, nogil=True)
def float32_block_exponents(x, block, out):
    """SwitchML's packet exponent: ``out[b]`` = the float32 exponent field of ``max_{i in b} |x_i|``
    minus 126 (so ``2^out[b] > max |x_i|``; -126 for an all-zero block). Returns the first index
    that is not finite or is ``>= 2^127`` (its exponent would not fit int8), or -1."""
    for b in range(out.size):
        lo = b * block
        values = x[lo : lo + block]
        largest = max_magnitude(values)  # exact: a float32 in float64; NaN if the block holds one
        if not largest < 2.0**127:
            return lo + _first_at_least(values, 2.0**127)
        if largest < 2.0**-126:  # zero or subnormal: float32 exponent field 0
            out[b] = -126
        else:  # the float64 exponent of a normal float32, plus 1
            out[b] = int64((float64_bits(largest) >> uint64(52)) & _EXPONENT_MASK) - 1022
    return -1


@njit(cache=True, inline="always")
def switchml_scale(n_workers, exponent):
    """SwitchML's float32 scale ``INT32_MAX / (n 2^e)``: the denominator in float32, the quotient in
    float64 rounded to float32 (``inf`` when it exceeds float32, i.e. for blocks below ~2^-97)."""
    denominator = float32(n_workers) * float32(power_of_two(exponent))
    return float32(float64(2147483647) / float64(denominator))


@njit(cache=True, nogil=True)
def switchml_to_integers(x, agreed, block, n_workers, out):
    """``out_i = round(x_i * s_b)`` with SwitchML's float32 scale ``s_b`` and float32 product, ties away
    from zero; 0 where the scale overflowed float32 (SwitchML decodes such a block to 0)."""
    for b in range(agreed.size):
        scale = switchml_scale(n_workers, agreed[b])
        values, integers = x[b * block : (b + 1) * block], out[b * block : (b + 1) * block]
        if scale == np.inf:
            integers[:] = 0
            continue
        for j in range(values.size):
            product = float64(values[j] * scale)  # float32 product, exact in float64, and so is adding 1/2
            integers[j] = np.trunc(product + np.copysign(0.5, product))


@njit(cache=True, nogil=True)
def switchml_from_integers(total, agreed, block, n_workers, out):
    """``out_i = float32(total_i) / s_b`` in float32, as SwitchML's hosts dequantize (0 where ``s_b = inf``)."""
    for b in range(agreed.size):
        scale = switchml_scale(n_workers, agreed[b])
        integers, values = total[b * block : (b + 1) * block], out[b * block : (b + 1) * block]
        for j in range(integers.size):
            values[j] = float32(integers[j]) / scale


@njit(cache=True, nogil=True)
def atp_to_integers(x, block, scale, out, overflowed):
    """``out_i = rint(float32(x_i * scale))`` (ties to even, as ATP's AVX conversion); a block with a
    value outside int32 saturates it and sets ``overflowed[b]`` (ATP then sends the block as float32)."""
    for b in range(overflowed.size):
        values, integers = x[b * block : (b + 1) * block], out[b * block : (b + 1) * block]
        over = False
        for j in range(values.size):
            product = float64(values[j] * scale)
            if product >= 2147483647.5 or product < -2147483648.5 or product != product:
                over = True
                product = 2147483647.0 if product > 0 else -2147483648.0
            integers[j] = np.rint(product)
        overflowed[b] = over


@njit(cache=True, nogil=True)
def atp_from_integers(total, scale, out):
    """``out_i = float32(total_i) / scale`` in float32, as ATP's hosts dequantize."""
    for i in range(total.size):
        out[i] = float32(total[i]) / scale
