"""Numba kernels of the switch host encodings (the host side of :mod:`mpicomp.methods.in_network`): one pass each.

Blocks are ``block`` consecutive coordinates (the packet size); ``agreed[b]`` is block b's agreed
exponent and ``headroom`` is H. Powers of two are assembled from their float64 bit pattern, so
every scaling is exact. Inner loops run over 0-based slices of one block, which LLVM vectorizes
(indexing the whole array with ``range(lo, hi)`` runs 4-5x slower). A kernel that can meet bad
input returns its first index (or -1) instead of raising, so that callers can name it.
"""

from __future__ import annotations

import numpy as np
from numba import float64, int64, njit, uint64

from ..rng import random_uniform
from ._levels import float64_bits, float64_from_bits

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
        largest = 0.0
        for j in range(values.size):
            largest = max(largest, abs(float64(values[j])))
        if not largest < 2.0**127:  # also NaN
            for j in range(values.size):
                if not abs(float64(values[j])) < 2.0**127:
                    return lo + j
        biased = int64((float64_bits(largest) >> uint64(52)) & _EXPONENT_MASK)
        out[b] = EMPTY_BLOCK if largest == 0.0 else max(biased - 1022, SMALLEST_EXPONENT)
    return -1


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
        for j in range(block_codes.size):
            e = int64(block_codes[j] & 0xFF)
            shift = e - bias - floor
            if e == 0:
                r = 0
            elif shift >= 0:
                r = shift + 1
            else:  # shift >= -253 for exponents of C_nat: 2^shift is a normal float64
                r = int64(random_uniform(state, lo + j) < power_of_two(shift))
            relative[j] = r | (int64(block_codes[j] >> 8) << 8) if r > 0 else 0
