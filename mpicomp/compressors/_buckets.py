"""Buckets and fixed-width bucket codes, shared by the vector quantizers (stovoq, hsq, cross-polytope).

A vector ``x in R^D`` is cut into ``L = ceil(D / size)`` buckets of ``size`` coordinates:
bucket l is ``x[l size : (l + 1) size]``, the last one zero-padded to ``size`` (its padding is
quantized like any coordinate and dropped on decode). Each bucket becomes one or a few codes of
a fixed number of bits, packed densely LSB first (:func:`mpicomp.wire.pack_uint`), bucket after
bucket; a payload is valid only with exactly that many bytes and zero padding bits.

Scalar side information per bucket (a radius, a magnitude) is sent as an index into a grid
``o_0 < ... < o_{Q-1}`` known to both sides, chosen by unbiased stochastic rounding: a value
``y in [o_j, o_{j+1}]`` becomes ``o_{j+1}`` with probability ``(y - o_j) / (o_{j+1} - o_j)``,
else ``o_j``, so that ``E o = y`` (the talk's scalar quantizer, with its probabilities the right
way round) and ``Var o = (o_{j+1} - y)(y - o_j)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..rng import RandomKey
from ..wire import Message, MessageError, pack_uint, packed_nbytes, unpack_uint
from .numeric import l2_norm


def check_integer(codec: str, what: str, value: object, lo: int, hi: int) -> int:
    """Validate an integer spec parameter in ``lo..hi`` (bools refused); ``what`` names it in the error."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ValueError(f"{codec}: {what} must be an integer in {lo}..{hi}, got {value!r}")
    return int(value)


def bucket_count(d: int, size: int) -> int:
    """Number of buckets of a d-dimensional vector: ``ceil(d / size)``."""
    return -(-d // size)


def to_buckets(x: np.ndarray, size: int) -> np.ndarray:
    """The ``(L, size)`` float64 array of buckets of ``x``, the last one zero-padded."""
    rows = np.zeros((bucket_count(x.size, size), size))
    rows.reshape(-1)[: x.size] = x
    return rows


def unit_buckets(codec: str, x: np.ndarray, size: int) -> tuple[float, np.ndarray]:
    """``(||x||_2, buckets of x / ||x||_2)``; the buckets are zeros for a zero vector, and a norm that
    overflows float64 is a ValueError naming the codec."""
    norm = l2_norm(x)
    if not np.isfinite(norm):
        raise ValueError(f"{codec}: ||x||_2 overflows float64; scale the vector down")
    return norm, to_buckets(x.astype(np.float64) / norm if norm > 0 else np.zeros(x.size), size)


def zero_codes(n: int, bits: int) -> np.ndarray:
    """The payload of ``n`` zero codes: what a zero vector sends."""
    return pack_uint(np.zeros(n, dtype=np.uint32), bits)


class BucketDecoder:
    """Mixin of the bucket codecs: decode, decode_add and the scaled add all go through the codec's
    one-pass :meth:`_write_buckets` (``Compressor``'s fused-decode hooks)."""

    def _decode_into(self, msg: Message, key: RandomKey | None, out: np.ndarray, accumulate: bool) -> None:
        self._write_buckets(msg, key, out, accumulate, 1.0)

    def _decode_scaled_add(self, msg: Message, key: RandomKey | None, out: np.ndarray, scale: float) -> None:
        self._write_buckets(msg, key, out, True, scale)

    def _write_buckets(
        self, msg: Message, key: RandomKey | None, out: np.ndarray, accumulate: bool, scale: float
    ) -> None:
        """Every bucket decoded into ``out`` or (``accumulate``) ``scale`` times it added."""
        raise NotImplementedError


@njit(cache=True, nogil=True)
def write_codewords(words, codes, shift, factors, shared, out, accumulate, scale):
    """Decode bucket by bucket: with bucket l's code ``c = i | k << shift``, bucket l of ``out`` gets
    ``(words[i] * factors[k]) * shared`` (the last bucket cut at ``out.size``), written, or with
    ``accumulate`` added times ``scale``; returns whether every such value is finite.

    That is checked once per whole bucket, on ``(max_j |words[i, j]| * factors[k]) * shared``: rounding
    is monotone, so no value exceeds it in magnitude and the largest word entry's value equals it (a
    cut last bucket checks its values one by one)."""
    d, size = out.size, words.shape[1]
    peaks = np.zeros(words.shape[0])
    for w in range(words.shape[0]):
        for j in range(size):
            peaks[w] = max(peaks[w], abs(words[w, j]))
    mask = (1 << shift) - 1
    finite = True
    for bucket in range(codes.size):
        lo = bucket * size
        i, factor = codes[bucket] & mask, factors[codes[bucket] >> shift]
        row, target = words[i], out[lo : min(lo + size, d)]
        if target.size == size:
            finite &= ((peaks[i] * factor) * shared) * 0.0 == 0.0  # false for Inf and NaN
        else:
            for j in range(target.size):
                finite &= ((row[j] * factor) * shared) * 0.0 == 0.0
        for j in range(target.size):
            value = (row[j] * factor) * shared
            if accumulate:
                target[j] += value * scale
            else:
                target[j] = value
    return finite


def unpack_codes(payload: memoryview, n: int, bits: int, codec: str) -> np.ndarray:
    """``n`` codes of ``bits`` bits (uint32); MessageError unless the payload has exactly their bytes
    and zero padding bits after the last code."""
    data = np.frombuffer(payload, dtype=np.uint8)
    if data.size != packed_nbytes(n, bits):
        raise MessageError(
            f"{codec}: payload of {data.size} bytes, {n} codes of {bits} bits need {packed_nbytes(n, bits)}"
        )
    used = n * bits % 8
    if used and data[-1] >> used:
        raise MessageError(f"{codec}: nonzero padding bits after the last code")
    return unpack_uint(data, n, bits)


def stochastic_round(values: np.ndarray, grid: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Indices k into the ascending ``grid`` with ``E grid[k] = values`` (values within the grid's range).

    ``values[i]`` in ``[grid[j], grid[j + 1]]`` goes up to ``j + 1`` when ``uniforms[i] <`` its
    fractional position ``(values[i] - grid[j]) / (grid[j + 1] - grid[j])`` (at least two points).
    """
    j = np.clip(np.searchsorted(grid, values, side="right") - 1, 0, grid.size - 2)
    low, high = grid[j], grid[j + 1]
    up = uniforms * (high - low) < values - low
    return j + up
