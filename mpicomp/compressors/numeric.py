"""Overflow-safe reductions shared by the codecs (numba kernels over float32 or float64 vectors).

Summed naively, ``||x||_2^2`` over- or underflows once some ``x_i^2`` leaves the float64 range
(and ``||x||_1`` once the sum passes it). The rescaled forms divide by a scale ``M`` first:
``||x||_2 = M sqrt(sum_i (x_i / M)^2)`` and ``||x||_1 / d = M (sum_i |x_i| / M) / d`` with
``M = max_i |x_i|``, or a power of two near it (the divisions are then exact): the largest term
is about 1, so no square overflows and the ones that underflow are negligible.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import types

from ..wire.bitpack import llvm_intrinsic

_PLAIN_BELOW = 1e-100  # max |x_i| in (1e-100, 1e100): the squares are summed unscaled, safely
_PLAIN_ABOVE = 1e100


_FINITE_BLOCK = 4096  # coordinates per vectorized max reduction in first_non_finite


@llvm_intrinsic
def float64_bits(typingctx, value):
    """The IEEE-754 bit pattern of a float64 as a uint64 (an LLVM bitcast, no memory round trip)."""
    if value != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.uint64(types.float64), codegen


@llvm_intrinsic
def float64_from_bits(typingctx, pattern):
    """The float64 whose IEEE-754 bit pattern is the uint64 ``pattern`` (an LLVM bitcast)."""
    if pattern != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.uint64), codegen


@llvm_intrinsic
def float32_from_bits(typingctx, pattern):
    """The float32 whose IEEE-754 bit pattern is the uint32 ``pattern`` (an LLVM bitcast)."""
    if pattern != types.uint32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


@njit(cache=True, nogil=True)
def _first_non_finite(words, magnitude, infinity):
    """The first i with ``words[i] & magnitude >= infinity``, or -1: per block the largest
    ``words[i] & magnitude`` (an unsigned max, which vectorizes as well as a bare read; a flag ORed
    from compares ran 15 % slower), a block that reaches ``infinity`` searched."""
    for lo in range(0, words.size, _FINITE_BLOCK):
        block = words[lo : lo + _FINITE_BLOCK]
        top = words.dtype.type(0)
        for j in range(block.size):
            top = max(top, block[j] & magnitude)
        if top >= infinity:
            for j in range(block.size):
                if (block[j] & magnitude) >= infinity:
                    return lo + j
    return -1


def first_non_finite(x: np.ndarray) -> int:
    """The first i with ``x_i`` NaN or Inf, or -1 (a contiguous float32 or float64 vector).

    The bits of a non-finite float without its sign are at least those of infinity: an integer
    compare, which vectorizes (a float compare with NaN does not).
    """
    if x.dtype == np.float64:
        return int(first_non_finite_pattern(x.view(np.uint64)))
    return int(_first_non_finite(x.view(np.uint32), np.uint32(2**31 - 1), np.uint32(0x7F800000)))


@njit(cache=True, nogil=True)
def first_non_finite_pattern(words):
    """:func:`first_non_finite` of the float64 bit patterns ``words`` (uint64), for other kernels."""
    return _first_non_finite(words, np.uint64(2**63 - 1), np.uint64(0x7FF0000000000000))


@njit(cache=True, inline="always")
def _largest_pattern(words, magnitude):
    """``max_i words[i] & magnitude`` (an integer max: it vectorizes, a float max does not)."""
    top = words.dtype.type(0)
    for i in range(words.size):
        top = max(top, words[i] & magnitude)
    return top


@njit(cache=True)
def max_magnitude(x: np.ndarray) -> float:
    """``max_i |x_i|`` in float64 (0 for an empty vector, NaN if x holds one), from the largest bit
    pattern without the sign (a NaN's lies above infinity's)."""
    if x.itemsize == 8:
        return float64_from_bits(_largest_pattern(x.view(np.uint64), np.uint64(0x7FFFFFFFFFFFFFFF)))
    return np.float64(float32_from_bits(np.uint32(_largest_pattern(x.view(np.uint32), np.uint32(0x7FFFFFFF)))))


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
