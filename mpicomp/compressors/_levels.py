"""Shared numba kernels of the sign + level quantizers (dither, natdither, block, natural).

Each coordinate ``x_i`` of block ``b`` (blocks of ``block`` coordinates; one block for the
whole vector except in ``block``) is sent as one code of ``bits = level_bits + 1`` bits::

    code = level | negative << level_bits        (dense LSB-first, mpicomp.wire.bitpack layout)

where ``level`` indexes the magnitude ``scale_b * level / s`` (LINEAR) or
``scale_b * 2^(level + e_min - 1)`` (POW2, level > 0), and ``negative`` is 1 only for
``x_i < 0`` with ``level > 0`` (so each decoded value has exactly one code). The level is a
stochastic rounding of the normalised magnitude ``r_i = min(|x_i| * pre_b * mult_b, cap)``
(see :func:`block_scales`):

* ``LINEAR`` (uniform levels 0, 1, ..., s; random dithering): ``level = floor(r_i + xi_i)``,
  ``xi_i`` uniform on the grid ``{k 2^-52}`` of [0, 1), so ``E level = r_i`` up to ``2^-52``.
* ``POW2`` (power-of-two levels; natural compression and natural dithering): with
  ``2^e <= r_i < 2^(e+1)`` and ``e >= e_min``, ``level = e - e_min + 1`` plus one with
  probability ``(r_i - 2^e) / 2^e``, read off the float64 bit pattern: the exponent field is
  ``e``, the 52 mantissa bits ``m`` give the probability ``m / 2^52`` exactly (a random 52-bit
  integer below ``m``). Below ``2^e_min`` the choice is between 0 and ``2^e_min`` with
  probability ``r_i / 2^e_min`` (a grid uniform ``xi_i`` as above, exact up to ``2^-52``). So
  ``E 2^(level + e_min - 1) = r_i``.

Randomness: coordinate ``i`` uses the word ``random_u64(state, i)`` of the message's RandomKey,
so encoding is a pure function of ``(x, key)`` whatever the number of threads.

Kernels are generated per ``(kind, level_bits)`` with both as compile-time constants (the
bit-packing loop then unrolls into constant shifts) and cached on disk by numba. They work on
chunk ranges without the GIL (``bitpack.run_chunks`` splits long vectors over threads), span by
span: a plain, vectorizable loop per block run (de)quantizes ``SPAN_CHUNKS`` chunks through a
scratch array and a second loop (un)packs them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
from llvmlite import ir
from numba import float64, int32, int64, njit, uint32, uint64
from numba.core import types
from numba.extending import intrinsic

from ..rng import random_u64
from ..wire import MessageError
from ..wire.bitpack import (
    CHUNK_VALUES,
    chunk_words,
    pack_chunk,
    packed_nbytes,
    packed_words,
    parallel_tasks,
    run_chunks,
    run_split,
    unpack_chunk,
    word_buffer,
)
from .numeric import rescaled_l2_norm

LINEAR = 0
POW2 = 1

SPAN_CHUNKS = 64  # kernels quantize / dequantize 64 chunks (2048 coordinates) at a time via scratch
_SEGMENT = 1 << 16  # norm partial sums run over segments of at most this many coordinates
_RESCALE_BELOW = 2.0**-480  # max |x_i| outside [2^-480, 2^480]: squares would under/overflow
_RESCALE_ABOVE = 2.0**480
_PRESCALE_BELOW = 2.0**-900  # norms outside [2^-900, 2^900]: 1/norm would leave the normal range
_PRESCALE_ABOVE = 2.0**900
_MANTISSA = np.uint64((1 << 52) - 1)
_ONE_PATTERN = np.uint64(0x3FF0000000000000)  # bit pattern of 1.0


@intrinsic
def float64_bits(typingctx, value):
    """The IEEE-754 bit pattern of a float64 as a uint64 (an LLVM bitcast, no memory round trip)."""
    if value != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.uint64(types.float64), codegen


@intrinsic
def float64_from_bits(typingctx, pattern):
    """The float64 whose IEEE-754 bit pattern is the uint64 ``pattern`` (an LLVM bitcast)."""
    if pattern != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.uint64), codegen


@njit(cache=True, inline="always")
def uniform_grid(u):
    """``(u >> 12) 2^-52``: uniform on the 2^52-point grid of [0, 1), from the top 52 bits of ``u``.

    Built as ``float(1 + m 2^-52) - 1`` from the bit pattern (exact), since converting a uint64 to
    a float does not vectorize on AVX2.
    """
    return float64_from_bits(_ONE_PATTERN | (u >> uint64(12))) - 1.0


@njit(cache=True, inline="always")
def pow2_level(r, u, e_min, tiny_scale):
    """Unbiased power-of-two rounding of ``r >= 0`` (see module docstring); ``tiny_scale = 2^-e_min``.

    Branch-free (both cases computed, one selected) so that chunk loops vectorize.
    """
    pattern = float64_bits(r)
    e = int64(pattern >> uint64(52)) - 1023
    normal = e - e_min + 1 + int64((u >> uint64(12)) < (pattern & _MANTISSA))
    tiny = int64(uniform_grid(u) < r * tiny_scale)
    return normal if e >= e_min else tiny


@njit(cache=True, inline="always")
def _quantize(kind, xi, r, u, e_min, tiny_scale, level_bits):
    """The code ``level | negative << level_bits`` of one coordinate with normalised magnitude r."""
    if kind == LINEAR:
        low = int64(int32(r))  # r <= s < 2^31: the int32 conversion vectorizes, int64 would not
        level = low + int64(uniform_grid(u) < r - low)
    else:
        level = pow2_level(r, u, e_min, tiny_scale)
    negative = uint32(xi < 0.0) & uint32(level > 0)
    return uint32(level) | (negative << uint32(level_bits))


@njit(cache=True, inline="always")
def _dequantize(kind, code, level_bits, max_level, inv_max, e_min, scale):
    """``(value, invalid)`` of one code: ``±scale level / max_level`` or ``±scale 2^(level + e_min - 1)``.

    The power of two is assembled from its bit pattern (exponent field ``level + e_min + 1022``);
    an out-of-range level decodes to garbage but is flagged invalid, as are a negative zero and a
    nonzero level in a block of scale 0.
    """
    level = int64(code & uint32((1 << level_bits) - 1))
    negative = code >> uint32(level_bits)
    invalid = (level > max_level) | ((negative == 1) & (level == 0)) | ((level > 0) & (scale == 0.0))
    if kind == LINEAR:  # level / s, exactly 1 at the top level; level < 2^31 (int32: vectorizes)
        magnitude = (1.0 if level == max_level else float64(int32(level)) * inv_max) * scale
    else:
        power = float64_from_bits(uint64(level + e_min + 1022) << uint64(52))
        magnitude = (power if level > 0 else 0.0) * scale
    return (-magnitude if negative else magnitude), invalid


@njit(cache=True, inline="always")
def _first_invalid(codes, c, d, kind, block, scale, e_min, max_level, level_bits):
    """First coordinate of chunk ``c`` (codes ``codes``) with an invalid code, ``>= d`` for nonzero
    padding, or -1."""
    for k in range(CHUNK_VALUES):
        i = c * CHUNK_VALUES + k
        if i >= d:
            if codes[k] != 0:
                return i
        elif _dequantize(kind, codes[k], level_bits, max_level, 1.0, e_min, scale[i // block])[1]:
            return i
    return -1


@njit(cache=True, nogil=True)
def _quantize_run(x, state, scratch, lo, start, stop, pre, mult, kind, level_bits, e_min, tiny_scale, cap, limit):
    """Codes of coordinates ``[start, stop)`` (one block: ``pre``, ``mult``) into ``scratch[i - lo]``.

    A plain loop in a function of its own (not inlined: inside the span loop it stops
    vectorizing and runs 2x slower). Returns True if some ``|x_i| > limit`` (or NaN).
    """
    over = False
    values, codes = x[start:stop], scratch[start - lo : stop - lo]  # 0-based slices vectorize
    for j in range(values.size):
        xi = float64(values[j])
        a = abs(xi)
        over |= not a <= limit  # also NaN
        r = min(a * pre * mult, cap)  # (|x_i| * pre) * mult: pre * mult alone may overflow
        codes[j] = _quantize(kind, xi, r, random_u64(state, start + j), e_min, tiny_scale, level_bits)
    return over


@njit(cache=True, nogil=True)
def _dequantize_run(scratch, lo, start, stop, out, scale, kind, level_bits, max_level, e_min):
    """Values of coordinates ``[start, stop)`` (one block of scale ``scale``) from ``scratch[i - lo]``.

    Returns True if some code is invalid (see :func:`_dequantize`).
    """
    inv_max = 1.0 / max_level
    invalid = False
    for i in range(start, stop):
        value, bad = _dequantize(kind, scratch[i - lo], level_bits, max_level, inv_max, e_min, scale)
        out[i] = value
        invalid |= bad
    return invalid


@njit(cache=True, inline="always")
def _run_end(start, hi, b, edge, block):
    """Advance ``(b, edge)`` to the block holding coordinate ``start``; returns ``(b, edge, stop)``
    with ``stop = min(hi, edge)`` the end of the run of ``[start, hi)`` inside that block."""
    while start >= edge:
        b += 1
        edge += block
    return b, edge, min(hi, edge)


@cache
def _encoder(kind: int, level_bits: int):
    """Encode kernel over a chunk range for one ``(kind, level_bits)``, both compile-time constants.

    Span by span (``SPAN_CHUNKS`` chunks): :func:`_quantize_run` writes the codes of each block
    run into a scratch array, then the chunks are packed from it. Returns the first index whose
    ``|x_i|`` exceeds ``limit``, or -1.
    """
    bits = level_bits + 1

    @njit(cache=True, nogil=True)
    def encode_range(x, state, block, mult, pre, cap, limit, e_min, tiny_scale, words, c0, c1):
        scratch = np.zeros(SPAN_CHUNKS * CHUNK_VALUES, dtype=np.uint32)
        over = False
        b = c0 * CHUNK_VALUES // block
        edge = (b + 1) * block
        for s0 in range(c0, c1, SPAN_CHUNKS):
            s1 = min(c1, s0 + SPAN_CHUNKS)
            lo = s0 * CHUNK_VALUES
            hi = min(s1 * CHUNK_VALUES, x.size)
            start = lo
            while start < hi:
                b, edge, stop = _run_end(start, hi, b, edge, block)
                over |= _quantize_run(
                    x, state, scratch, lo, start, stop, pre[b], mult[b], kind, level_bits, e_min, tiny_scale, cap,
                    limit,
                )
                start = stop
            scratch[hi - lo :] = 0
            for c in range(s0, s1):
                k = (c - s0) * CHUNK_VALUES
                pack_chunk(scratch[k : k + CHUNK_VALUES], words, c * bits, bits)
        if over:
            for i in range(c0 * CHUNK_VALUES, min(c1 * CHUNK_VALUES, x.size)):
                if not abs(float64(x[i])) <= limit:  # also NaN
                    return i
        return -1

    return encode_range


@cache
def _decoder(kind: int, level_bits: int):
    """Decode kernel over a chunk range for one ``(kind, level_bits)``, both compile-time constants.

    Span by span: the chunks are unpacked into a scratch array, then :func:`_dequantize_run`
    decodes each block run. Returns the first coordinate with an invalid code (``>= d``: nonzero
    padding), or -1.
    """
    bits = level_bits + 1

    @njit(cache=True, nogil=True)
    def decode_range(main, tail, block, scale, e_min, max_level, out, c0, c1):
        scratch = np.empty(SPAN_CHUNKS * CHUNK_VALUES, dtype=np.uint32)
        b = c0 * CHUNK_VALUES // block
        edge = (b + 1) * block
        for s0 in range(c0, c1, SPAN_CHUNKS):
            s1 = min(c1, s0 + SPAN_CHUNKS)
            for c in range(s0, s1):
                words, w = chunk_words(main, tail, c, bits)
                k = (c - s0) * CHUNK_VALUES
                unpack_chunk(words, w, bits, scratch[k : k + CHUNK_VALUES])
            lo = s0 * CHUNK_VALUES
            hi = min(s1 * CHUNK_VALUES, out.size)
            invalid = False
            start = lo
            while start < hi:
                b, edge, stop = _run_end(start, hi, b, edge, block)
                invalid |= _dequantize_run(scratch, lo, start, stop, out, scale[b], kind, level_bits, max_level, e_min)
                start = stop
            for i in range(hi - lo, (s1 - s0) * CHUNK_VALUES):
                invalid |= scratch[i] != 0
            if invalid:
                for c in range(s0, s1):
                    k = (c - s0) * CHUNK_VALUES
                    bad = _first_invalid(
                        scratch[k : k + CHUNK_VALUES], c, out.size, kind, block, scale, e_min, max_level, level_bits
                    )
                    if bad >= 0:
                        return bad
        return -1

    return decode_range


@njit(cache=True, nogil=True, fastmath={"nnan", "nsz", "reassoc"})
def _stats_range(x, block, seg, per_block, out_max, out_sumsq, g0, g1):
    """Max |x_i| and sum of x_i^2 over segments ``[g0, g1)`` (``per_block`` segments per block).

    Reassociation lets the reductions vectorize; "no NaN" holds since the input is finite (the
    sums of squares may overflow to inf, which is allowed and handled by the caller).
    """
    d = x.size
    for g in range(g0, g1):
        b = g // per_block
        lo = b * block + (g % per_block) * seg
        hi = min(lo + seg, (b + 1) * block, d)
        top = 0.0
        total = 0.0
        for i in range(lo, hi):
            a = abs(float64(x[i]))
            top = max(top, a)
            total += a * a
        out_max[g] = top
        out_sumsq[g] = total
    return -1


@njit(cache=True, nogil=True)
def _finish_scales(x, block, per_block, tops, sumsq, p_inf, level_scale, norms, mult, pre):
    """Per block: the p-norm from the segment partials, then ``mult`` and ``pre`` (see :func:`block_scales`).

    A block whose max ``|x_i|`` lies outside ``[2^-480, 2^480]`` has its 2-norm summed again by
    :func:`~mpicomp.compressors.numeric.rescaled_l2_norm`, scaled by a power of two near that max
    (exact). Returns the first block whose 2-norm overflows, or -1.
    """
    for b in range(norms.size):
        top = 0.0
        total = 0.0
        for j in range(b * per_block, (b + 1) * per_block):
            top = max(top, tops[j])
            total += sumsq[j]
        if p_inf:
            norm = top
        elif top > 0.0 and (top < _RESCALE_BELOW or top > _RESCALE_ABOVE):
            scale = math.ldexp(1.0, max(-1000, min(1000, math.frexp(top)[1])))
            norm = rescaled_l2_norm(x, b * block, min((b + 1) * block, x.size), scale)
        else:
            norm = math.sqrt(total)
        if not math.isfinite(norm):
            return b
        norms[b] = norm
        pre[b] = 2.0**600 if norm < _PRESCALE_BELOW else (2.0**-600 if norm > _PRESCALE_ABOVE else 1.0)
        mult[b] = level_scale / (norm * pre[b]) if norm > 0.0 else 0.0
    return -1


def block_scales(x: np.ndarray, block: int, p: float, level_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per block ``v_b`` of ``block`` coordinates: ``(||v_b||_p, mult_b, pre_b)`` for p = 2 or inf.

    ``(|x_i| * pre_b) * mult_b = level_scale |x_i| / ||v_b||_p``, where the power of two ``pre_b``
    keeps ``mult_b`` a normal float for extreme norms; a zero block gets ``mult_b = 0``. Sums of
    squares are rescaled where they would under- or overflow; a 2-norm beyond the float64 range
    raises ValueError.
    """
    d = x.size
    nblocks = -(-d // block)
    seg = min(block, _SEGMENT)
    per_block = -(-block // seg)
    tops = np.empty(nblocks * per_block)
    sumsq = np.empty(nblocks * per_block)
    run_split(_stats_range, tops.size, parallel_tasks(d), x, block, seg, per_block, tops, sumsq)
    norms, mult, pre = np.empty(nblocks), np.empty(nblocks), np.empty(nblocks)
    bad = _finish_scales(x, block, per_block, tops, sumsq, p == np.inf, level_scale, norms, mult, pre)
    if bad >= 0:
        raise ValueError(f"the 2-norm of block {bad} exceeds the float64 range; rescale the vector before compressing")
    return norms, mult, pre


@dataclass(frozen=True)
class LevelCode:
    """One sign + level code: how magnitudes map to levels and levels back to magnitudes.

    ``level_bits`` bits hold levels ``0..max_level``; relative to the block scale, a POW2 level
    decodes to ``2^(level + e_min - 1)`` (0 for level 0), a LINEAR one to ``level / max_level``.
    ``cap`` clamps the normalised magnitude, ``limit`` is the largest encodable ``|x_i|``.
    """

    kind: int
    max_level: int
    level_bits: int
    cap: float
    limit: float = np.inf
    e_min: int = 0

    @property
    def bits(self) -> int:
        """Bits per coordinate: the level plus one sign bit."""
        return self.level_bits + 1

    @property
    def tiny_scale(self) -> float:
        """``2^-e_min``, the inverse of the smallest nonzero POW2 level."""
        return float(np.ldexp(1.0, -self.e_min))


def linear_code(s: int) -> LevelCode:
    """Uniform levels ``0, 1, ..., s`` (random dithering with s levels)."""
    return LevelCode(LINEAR, s, max(1, int(s).bit_length()), float(s))


def pow2_code(e_min: int, max_level: int, level_bits: int, cap: float, limit: float = np.inf) -> LevelCode:
    """Levels ``0`` and ``2^(e_min + k - 1)`` for ``k = 1..max_level`` (natural compression / dithering)."""
    return LevelCode(POW2, max_level, level_bits, cap, limit, e_min)


def encode_levels(
    x: np.ndarray, state: np.uint64, code: LevelCode, block: int, mult: np.ndarray, pre: np.ndarray
) -> np.ndarray:
    """Quantize ``x`` to codes and pack them; returns the packed bytes (uint8, ``ceil(d bits / 8)``)."""
    d = x.size
    words = word_buffer(d, code.bits)
    args = (x, np.uint64(state), max(block, 1), mult, pre, code.cap, code.limit, code.e_min, code.tiny_scale, words)
    bad = run_chunks(_encoder(code.kind, code.level_bits), d, *args)
    if bad >= 0:
        raise ValueError(
            f"x[{bad}] = {x[bad]!r}: magnitudes above {code.limit!r} cannot be encoded by this codec; "
            "rescale the vector"
        )
    return words.view(np.uint8)[: packed_nbytes(d, code.bits)]


def quantize_levels(x: np.ndarray, state: np.uint64, code: LevelCode) -> np.ndarray:
    """The unpacked codes (uint32) of ``x`` as one block of unit scale: what :func:`encode_levels`
    packs for ``block = d`` and ``mult = pre = 1`` (natural compression), in one pass that also
    rejects NaN, Inf and magnitudes above ``code.limit`` (ValueError)."""
    codes = np.empty(x.size, dtype=np.uint32)
    args = (code.kind, code.level_bits, code.e_min, code.tiny_scale, code.cap, code.limit)
    if _quantize_run(x, np.uint64(state), codes, 0, 0, x.size, 1.0, 1.0, *args):
        bad = int(np.flatnonzero(~(np.abs(x) <= code.limit))[0])
        raise ValueError(
            f"x[{bad}] = {x[bad]!r}: only finite magnitudes up to {code.limit!r} can be encoded by this codec"
        )
    return codes


def decode_levels(payload: np.ndarray, d: int, code: LevelCode, block: int, scale: np.ndarray, what: str) -> np.ndarray:
    """Unpack and dequantize ``d`` codes; MessageError on any invalid code.

    ``x_i = ±scale_b 2^(level + e_min - 1)`` (POW2) or ``±scale_b level / max_level`` (LINEAR).
    """
    need = packed_nbytes(d, code.bits)
    if payload.size != need:
        raise MessageError(
            f"{what}: packed section holds {payload.size} bytes, d={d} codes of {code.bits} bits need {need}"
        )
    main, tail = packed_words(payload, d, code.bits)
    out = np.empty(d, dtype=np.float64)
    args = (main, tail, max(block, 1), scale, code.e_min, code.max_level, out)
    bad = run_chunks(_decoder(code.kind, code.level_bits), d, *args)
    if bad >= d:
        raise MessageError(f"{what}: nonzero padding bits after the last code")
    if bad >= 0:
        raise MessageError(
            f"{what}: invalid code for coordinate {bad} "
            "(level out of range, negative zero, or nonzero level in a zero-norm block)"
        )
    return out


def check_levels(codec: str, s: object, largest: int) -> int:
    """Validate a number of nonzero levels ``s``: an integer in ``1..largest``."""
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 1 <= s <= largest:
        raise ValueError(f"{codec}: s (number of nonzero levels) must be an integer in 1..{largest}, got {s!r}")
    return int(s)


def check_norm_order(codec: str, p: object) -> float:
    """Validate the norm order ``p``: 2 or inf (``"inf"`` accepted); returns 2 or ``float('inf')``."""
    if isinstance(p, str) and p.strip().lower() in ("inf", "+inf"):
        return np.inf
    if not isinstance(p, bool) and isinstance(p, (int, float, np.integer, np.floating)) and p in (2, np.inf):
        return 2 if p == 2 else np.inf
    raise ValueError(f"{codec}: p (norm order) must be 2 or inf, got {p!r}")


def rounding_variance_bound(d: int, step: float, p: float) -> float:
    """``sup_x sum_i v_i / ||x||^2`` for per-coordinate variances ``v_i <= min(step^2/4, step r_i) N^2``.

    Here ``N = ||x||_p``, ``r_i = |x_i| / N`` and ``step`` is the width of the rounding interval
    at the bottom of the scale (``1/s`` for random dithering). p = 2: with ``u_i = r_i^2``,
    ``sum_i u_i = 1`` and ``min(step^2/4, step sqrt(u))`` concave, Jensen gives
    ``min(d step^2/4, sqrt(d) step)`` (the form of Alistarh et al. 2017, Lemma 3.1). p = inf: the
    coordinate with ``r_i = 1`` rounds exactly and ``||x||^2 / N^2 = 1 + sum_{others} r_i^2``, so
    the bound is the root R of ``m max_t (min(step^2/4, step t) - R t^2) = R`` over the other
    ``m = d - 1`` coordinates: ``R = step sqrt(m) / 2`` if ``step sqrt(m) >= 4``, else
    ``4 m step^2 / (16 + m step^2)``.
    """
    if d <= 0:
        return 0.0
    if p == 2:
        return float(min(d * step * step / 4.0, np.sqrt(d) * step))
    m = d - 1
    if step * np.sqrt(m) >= 4.0:
        return float(step * np.sqrt(m) / 2.0)
    return float(4.0 * m * step * step / (16.0 + m * step * step))
