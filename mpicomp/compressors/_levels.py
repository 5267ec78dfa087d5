"""Shared numba kernels of the sign + level quantizers (dither, natdither, block).

Each coordinate ``x_i`` of block ``b`` (blocks of ``block`` coordinates; one block for the
whole vector except in ``block``) is sent as one code of ``P = level_bits + 1`` bits::

    code = level | negative << level_bits

where ``level`` indexes the magnitude ``scale_b * level / s`` (LINEAR) or
``scale_b * 2^(level + e_min - 1)`` (POW2, level > 0), and ``negative`` is 1 only for
``x_i < 0`` with ``level > 0`` (so each decoded value has exactly one code). The level is a
stochastic rounding of the normalised magnitude ``r_i = min(|x_i| * pre_b * mult_b, cap)``
(see :func:`block_scales`):

* ``LINEAR`` (uniform levels 0, 1, ..., s; random dithering): ``level = floor(r_i) + [xi_i < r_i - floor(r_i)]``,
  ``xi_i`` uniform on the grid ``{k 2^-52}`` of [0, 1), so ``E level = r_i`` up to ``2^-52``.
* ``POW2`` (power-of-two levels; natural dithering): with ``2^e <= r_i < 2^(e+1)`` and
  ``e >= e_min``, ``level = e - e_min + 1`` plus one with probability ``(r_i - 2^e) / 2^e``, read
  off the float64 bit pattern: the exponent field is ``e``, the 52 mantissa bits ``m`` give the
  probability ``m / 2^52`` exactly (a random 52-bit integer below ``m``). Below ``2^e_min`` the
  choice is between 0 and ``2^e_min`` with probability ``r_i / 2^e_min`` (a grid uniform ``xi_i``
  as above, exact up to ``2^-52``). So ``E 2^(level + e_min - 1) = r_i``.

Layout (bit planes, ``d P`` bits in all, ``ceil(d P / 8)`` bytes): coordinates form groups of
``GROUP = 64`` (the last one holds ``n = d mod 64`` if that is not 0). Group g contributes P
fields of ``n_g`` bits to an LSB-first bit stream (bit k of the stream is bit ``k mod 8`` of byte
``k // 8``): field t is bit plane t of the group's codes, its bit j bit t of coordinate
``64 g + j``'s code (planes ``0..level_bits - 1`` hold the level, plane ``level_bits`` the sign).
A whole group is thus P little-endian uint64 words at byte ``8 P g``; the last byte is zero-padded.
Planes turn packing into a vector compare per plane and unpacking into a mask spread
(:func:`mpicomp.wire.bitpack.plane_word`, :func:`~mpicomp.wire.bitpack.or_plane`) for any P.

Randomness: coordinate ``i`` uses the word ``random_u64(state, i) = mix64(state + (i + 1) GOLDEN)``
of the message's RandomKey, so encoding is a pure function of ``(x, key)`` whatever the number of
threads. Loops keep ``state + (i + 1) GOLDEN`` as a running counter (:func:`random_counter`): an
induction variable vectorizes without a 64-bit multiply per coordinate.

Kernels are generated per ``(kind, level_bits)`` with both as compile-time constants and cached
on disk by numba. They work on group ranges without the GIL (``bitpack.run_split`` splits long
vectors over threads), span by span (``SPAN_GROUPS`` groups): a plain, vectorizable loop per block
run (de)quantizes the span through a scratch array of codes, and the planes are packed from (or
spread into) it. NaN and Inf are caught by the norm pass (:func:`block_scales`), invalid codes by
an integer flag in the decode loop; the search for the culprit runs only on that error path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np
from numba import float64, int32, int64, literally, njit, uint32, uint64

from ..rng import GOLDEN, mix64
from ..wire import MessageError
from ..wire.bitpack import (
    GROUP,
    group_count,
    load_u64,
    or_plane,
    packed_nbytes,
    parallel_tasks,
    peek_bits,
    plane_word,
    put_bits,
    run_split,
    set_plane,
    specialized,
    store_u64,
)
from .base import non_finite_input
from .numeric import float64_bits, float64_from_bits, rescaled_l2_norm

LINEAR = 0
POW2 = 1
_KIND_NAMES = {LINEAR: "linear", POW2: "pow2"}

SPAN_GROUPS = 32  # kernels quantize / dequantize 32 groups (2048 coordinates) at a time via scratch
_SPAN = SPAN_GROUPS * GROUP
_SEGMENT = 1 << 16  # norm partial sums run over segments of at most this many coordinates
_RESCALE_BELOW = 2.0**-480  # max |x_i| outside [2^-480, 2^480]: squares would under/overflow
_RESCALE_ABOVE = 2.0**480
_SETTLED_SUMS_BELOW = 2.0**-958  # per coordinate: a sum of squares in [n 2^-958, 2^958] settles the 2-norm
_SETTLED_SUMS_ABOVE = 2.0**958
_NON_FINITE = -2  # _finish_scales: NaN or Inf in x
_PRESCALE_BELOW = 2.0**-900  # norms outside [2^-900, 2^900]: 1/norm would leave the normal range
_PRESCALE_ABOVE = 2.0**900
_MANTISSA = np.uint64((1 << 52) - 1)
_MAGNITUDE = np.uint64((1 << 63) - 1)  # all bits of a float64 but the sign
_ONE_PATTERN = np.uint64(0x3FF0000000000000)  # bit pattern of 1.0


@njit(cache=True, inline="always")
def uniform_grid(u):
    """``(u >> 12) 2^-52``: uniform on the 2^52-point grid of [0, 1), from the top 52 bits of ``u``.

    Built as ``float(1 + m 2^-52) - 1`` from the bit pattern (exact), since converting a uint64 to
    a float does not vectorize on AVX2.
    """
    return float64_from_bits(_ONE_PATTERN | (u >> uint64(12))) - 1.0


@njit(cache=True, inline="always")
def random_counter(state, i):
    """``state + (i + 1) GOLDEN``: ``mix64`` of it is ``random_u64(state, i)``, and adding ``GOLDEN``
    moves it to coordinate ``i + 1``."""
    return uint64(state) + (uint64(i) + uint64(1)) * GOLDEN


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
        low = np.floor(r)  # <= s < 2^31: converted through int32, which vectorizes (int64 would not)
        level = int64(int32(low)) + int64(uniform_grid(u) < r - low)
    else:
        level = pow2_level(r, u, e_min, tiny_scale)
    negative = uint32(xi < 0.0) & uint32(level > 0)
    return uint32(level) | (negative << uint32(level_bits))


@njit(cache=True, inline="always")
def _dequantize(kind, code, level_bits, max_level, inv_max, e_min, scale):
    """``(value, invalid)`` of one code: ``±scale level / max_level`` or ``±scale 2^(level + e_min - 1)``.

    The power of two is assembled from its bit pattern (exponent field ``level + e_min + 1022``);
    an out-of-range level decodes to garbage but is flagged invalid (``invalid = 1``), as are a
    negative zero and a nonzero level in a block of scale 0.
    """
    level = int64(code & uint32((1 << level_bits) - 1))
    negative = uint32(code) >> uint32(level_bits)
    invalid = uint32(level > max_level) | (negative & uint32(level == 0)) | uint32((level > 0) & (scale == 0.0))
    if kind == LINEAR:  # level / s, exactly 1 at the top level; level < 2^31 (int32: vectorizes)
        magnitude = (1.0 if level == max_level else float64(int32(level)) * inv_max) * scale
    else:
        power = float64_from_bits(uint64(level + e_min + 1022) << uint64(52))
        magnitude = (power if level > 0 else 0.0) * scale
    return (-magnitude if negative else magnitude), invalid


@njit(cache=True, inline="always")
def _run_end(start, hi, b, edge, block):
    """Advance ``(b, edge)`` to the block holding coordinate ``start``; returns ``(b, edge, stop)``
    with ``stop = min(hi, edge)`` the end of the run of ``[start, hi)`` inside that block."""
    while start >= edge:
        b += 1
        edge += block
    return b, edge, min(hi, edge)


@njit(cache=True, nogil=True)
def _store_last_group(payload, base, scratch, k, planes, count):
    """The planes of the last, partial group (``count < 64`` codes at ``scratch[k:]``, zeros after
    them) as P fields of ``count`` bits from byte ``base`` on, to the end of ``payload``. Not
    inlined: in the group loop it slows the whole encode kernel down by a third."""
    fields = np.zeros(8 * planes + 8, dtype=np.uint8)
    position = 0
    for t in range(planes):
        word = plane_word(scratch, k, t)
        position = put_bits(fields, position, word & uint64(0xFFFFFFFF), min(count, 32))
        if count > 32:
            position = put_bits(fields, position, word >> uint64(32), count - 32)
    payload[base:] = fields[: payload.size - base]


@njit(cache=True, nogil=True)
def _load_last_group(payload, base, scratch, k, planes, count):
    """Inverse of :func:`_store_last_group`: the codes of the last group into ``scratch[k : k + 64]``
    (zeros after the ``count`` codes)."""
    fields = np.zeros(8 * planes + 8, dtype=np.uint8)
    fields[: payload.size - base] = payload[base:]
    low = uint64((1 << min(count, 32)) - 1)
    high = uint64((1 << max(count - 32, 0)) - 1)
    for t in range(planes):
        position = t * count
        word = (peek_bits(fields, position) & low) | ((peek_bits(fields, position + 32) & high) << uint64(32))
        if t == 0:
            set_plane(scratch, k, word, 0)
        else:
            or_plane(scratch, k, word, t)


def code_dtype(bits: int) -> type[np.unsignedinteger]:
    """The narrowest unsigned integer type holding codes of ``bits`` bits (the kernels' scratch)."""
    return np.uint8 if bits <= 8 else (np.uint16 if bits <= 16 else np.uint32)


@njit(cache=True, nogil=True)
def quantize_run(x, state, scratch, lo, start, stop, pre, mult, cap, e_min, tiny_scale, kind, level_bits):
    """Codes of coordinates ``[start, stop)`` (one block: ``pre``, ``mult``) into ``scratch[i - lo]``.

    A plain loop in a function of its own (not inlined: inside the span loop it stops vectorizing
    and runs 2x slower). ``kind`` and ``level_bits`` are compiled in (``literally``: one specialization
    per code, which folds the sign's shift and the level arithmetic: 4 % (LINEAR) to 7 % (POW2) faster per code), and
    ``pre = 1`` (every norm in ``[2^-900, 2^900]``) skips its multiply, which is exact. Module-level,
    so that the factories' kernels close over plain constants only (numba's disk cache keys on the
    closure, and a compiled function in it differs from process to process).
    """
    literally(kind)
    literally(level_bits)
    values, codes = x[start:stop], scratch[start - lo : stop - lo]  # 0-based slices vectorize
    counter = random_counter(state, start)
    unit = pre == 1.0
    for j in range(values.size):
        xi = float64(values[j])
        r = min(abs(xi) * mult if unit else abs(xi) * pre * mult, cap)  # pre * mult alone may overflow
        codes[j] = _quantize(kind, xi, r, mix64(counter), e_min, tiny_scale, level_bits)
        counter += GOLDEN


@njit(cache=True, nogil=True)
def dequantize_run(scratch, lo, start, stop, out, scale, max_level, e_min, kind, level_bits, accumulate, factor):
    """Values of coordinates ``[start, stop)`` (one block of scale ``scale``) from ``scratch[i - lo]``,
    written (``accumulate``: ``factor`` times them added, the product rounded first) into ``out``; nonzero if
    some code is invalid (see :func:`_dequantize`). ``kind`` and ``level_bits`` compiled in, and
    module-level, as in :func:`quantize_run`."""
    literally(kind)
    literally(level_bits)
    inv_max = 1.0 / max_level
    codes, target = scratch[start - lo : stop - lo], out[start:stop]
    invalid = uint32(0)
    for j in range(codes.size):
        value, bad = _dequantize(kind, uint32(codes[j]), level_bits, max_level, inv_max, e_min, scale)
        if accumulate and factor == 1.0:  # loop-invariant: unswitched, so the plain sum has no multiply
            target[j] += value
        elif accumulate:
            target[j] += factor * value
        else:
            target[j] = value
        invalid |= bad
    return invalid


@cache
def _encoder(kind: int, level_bits: int):
    """Encode kernel over a group range of every row, for one ``(kind, level_bits)``, both compile-time
    constants: row r of ``rows`` (block scales ``mult[r]``, ``pre[r]``, draws from ``states[r]``) into
    ``messages[r, start:]``, its ``ceil(d P / 8)`` code bytes.

    Span by span (``SPAN_GROUPS`` groups): ``quantize_run`` writes the codes of each block run into
    a scratch array, then each group's bit planes are stored, P words (the last group: P fields
    of ``d mod 64`` bits). One vector is one row (its groups split over threads by ``run_split``);
    a rank's workers' short vectors are many rows of one call.
    """
    planes = level_bits + 1
    dtype = code_dtype(planes)
    tag = f"{_KIND_NAMES[kind]}{level_bits}"

    @specialized(tag)
    def encode_range(rows, states, block, mult, pre, cap, e_min, tiny_scale, messages, start, g0, g1):
        scratch = np.empty(_SPAN, dtype=dtype)
        d = rows.shape[1]
        nbytes = (d * planes + 7) // 8
        for r in range(rows.shape[0]):
            x, state, payload = rows[r], states[r], messages[r, start : start + nbytes]
            b = g0 * GROUP // block
            edge = (b + 1) * block
            for s0 in range(g0, g1, SPAN_GROUPS):
                s1 = min(g1, s0 + SPAN_GROUPS)
                lo = s0 * GROUP
                hi = min(s1 * GROUP, d)
                first = lo
                while first < hi:
                    b, edge, stop = _run_end(first, hi, b, edge, block)
                    quantize_run(
                        x,
                        state,
                        scratch,
                        lo,
                        first,
                        stop,
                        pre[r, b],
                        mult[r, b],
                        cap,
                        e_min,
                        tiny_scale,
                        kind,
                        level_bits,
                    )
                    first = stop
                scratch[hi - lo :] = 0  # past d: the last group's planes get zero high bits
                for g in range(s0, s1):
                    k = (g - s0) * GROUP
                    base = g * GROUP * planes // 8
                    count = min(GROUP, d - g * GROUP)
                    if count == GROUP:
                        for t in range(planes):
                            store_u64(payload, base + 8 * t, plane_word(scratch, k, t))
                    else:
                        _store_last_group(payload, base, scratch, k, planes, count)
        return -1

    return encode_range


@cache
def _decoder(kind: int, level_bits: int, accumulate: bool):
    """Decode kernel over a group range of every row, for one ``(kind, level_bits)``, writing
    (``accumulate``: adding ``factor`` times the values, row after row) into its target: ``targets[0]`` for every
    row (a sum), or ``targets[r]`` for row r (``(m, d)``); all three compile-time constants.

    Row r is the codes ``payloads[r]`` with block scales ``scales[r]``. Span by span: the groups' bit
    planes are spread into a scratch array of codes, then ``dequantize_run`` decodes each block run.
    Returns the first row holding an invalid code (its sum stops there), else -1.
    """
    planes = level_bits + 1
    dtype = code_dtype(planes)
    tag = f"{_KIND_NAMES[kind]}{level_bits}{'_add' if accumulate else ''}"

    @specialized(tag)
    def decode_range(payloads, block, scales, e_min, max_level, targets, factor, g0, g1):
        scratch = np.empty(_SPAN, dtype=dtype)
        d = targets.shape[1]
        for r in range(payloads.shape[0]):
            payload, scale = payloads[r], scales[r]
            out = targets[r] if targets.shape[0] > 1 else targets[0]
            invalid = uint32(0)
            b = g0 * GROUP // block
            edge = (b + 1) * block
            for s0 in range(g0, g1, SPAN_GROUPS):
                s1 = min(g1, s0 + SPAN_GROUPS)
                for g in range(s0, s1):
                    k = (g - s0) * GROUP
                    base = g * GROUP * planes // 8
                    count = min(GROUP, d - g * GROUP)
                    if count == GROUP:
                        set_plane(scratch, k, load_u64(payload, base), 0)
                        for t in range(1, planes):
                            or_plane(scratch, k, load_u64(payload, base + 8 * t), t)
                    else:
                        _load_last_group(payload, base, scratch, k, planes, count)
                lo = s0 * GROUP
                hi = min(s1 * GROUP, d)
                first = lo
                while first < hi:
                    b, edge, stop = _run_end(first, hi, b, edge, block)
                    invalid |= dequantize_run(
                        scratch,
                        lo,
                        first,
                        stop,
                        out,
                        scale[b],
                        max_level,
                        e_min,
                        kind,
                        level_bits,
                        accumulate,
                        factor,
                    )
                    first = stop
            if invalid:
                return r
        return -1

    return decode_range


@njit(cache=True, nogil=True)
def _first_invalid(payload, d, kind, level_bits, block, scale, e_min, max_level):
    """The first coordinate whose code is invalid (see :func:`_dequantize`), or -1; reads each code
    bit by bit from the plane layout (searched only after a decode kernel flagged one)."""
    planes = level_bits + 1
    for i in range(d):
        g, j = divmod(i, GROUP)
        count = min(GROUP, d - g * GROUP)
        code = uint32(0)
        for t in range(planes):
            position = g * GROUP * planes + t * count + j
            code |= uint32((payload[position >> 3] >> (position & 7)) & 1) << uint32(t)
        if _dequantize(kind, code, level_bits, max_level, 1.0, e_min, scale[i // block])[1]:
            return i
    return -1


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _stats_range(x, block, seg, per_block, squares, out, g0, g1):
    """Per segment ``g`` in ``[g0, g1)`` (``per_block`` segments per block): ``out[g]`` is the sum of
    x_i^2 (``squares``) or the max |x_i|.

    The max is taken over the bit patterns of ``|x_i|`` (integers: the reduction vectorizes, and a
    NaN, whose pattern lies above infinity's, comes out as NaN); reassociation lets the sum
    vectorize (it may overflow to inf, which the caller handles). Either runs as fast as a bare read
    of x (both in one loop took 30 % longer).
    """
    d = x.size
    for g in range(g0, g1):
        b = g // per_block
        lo = b * block + (g % per_block) * seg
        hi = min(lo + seg, (b + 1) * block, d)
        out[g] = _sum_of_squares(x[lo:hi]) if squares else _max_magnitude(x[lo:hi])
    return -1


@njit(cache=True, nogil=True, fastmath={"reassoc"}, inline="always")
def _sum_of_squares(values):
    total = 0.0
    for j in range(values.size):
        value = float64(values[j])
        total += value * value
    return total


@njit(cache=True, nogil=True, inline="always")
def _max_magnitude(values):
    """``max |v_j|`` (NaN if a value is NaN), as the largest bit pattern of ``|v_j|``."""
    top = uint64(0)
    for j in range(values.size):
        top = max(top, float64_bits(float64(values[j])) & _MAGNITUDE)
    return float64_from_bits(top)


@njit(cache=True, nogil=True)
def _finish_scales(x, block, per_block, partials, p_inf, level_scale, norms, mult, pre):
    """Per block: the p-norm from the segment ``partials`` (maxima for p = inf, else sums of squares),
    then ``mult`` and ``pre`` (see :func:`block_scales`).

    A 2-norm block of n coordinates whose sum of squares S is finite with ``n 2^-958 <= S <= 2^958``
    has its max in ``[2^-480, 2^480]`` (``S / n <= max^2 <= S``, a factor 4 to spare for rounding):
    its norm is ``sqrt S``. Any other block has its max read: outside that range its 2-norm is summed
    again by :func:`~mpicomp.compressors.numeric.rescaled_l2_norm`, scaled by a power of two near the
    max (exact). Returns the first block whose norm overflows, :data:`_NON_FINITE` for NaN or Inf in
    x, or -1.
    """
    for b in range(norms.size):
        lo, hi = b * block, min((b + 1) * block, x.size)
        total = 0.0
        for j in range(b * per_block, (b + 1) * per_block):
            if p_inf and not math.isfinite(partials[j]):  # a NaN would be lost by max
                return _NON_FINITE
            total = max(total, partials[j]) if p_inf else total + partials[j]
        if p_inf:
            norm = total
        elif (hi - lo) * _SETTLED_SUMS_BELOW <= total <= _SETTLED_SUMS_ABOVE:
            norm = math.sqrt(total)
        else:
            top = _max_magnitude(x[lo:hi])
            if not _RESCALE_BELOW <= top <= _RESCALE_ABOVE:  # or NaN
                if not math.isfinite(top):
                    return _NON_FINITE
                scale = math.ldexp(1.0, max(-1000, min(1000, math.frexp(top)[1])))
                norm = rescaled_l2_norm(x, lo, hi, scale) if top > 0.0 else 0.0
            else:
                norm = math.sqrt(total)
        if not math.isfinite(norm):
            return b
        norms[b] = norm
        pre[b] = 2.0**600 if norm < _PRESCALE_BELOW else (2.0**-600 if norm > _PRESCALE_ABOVE else 1.0)
        mult[b] = level_scale / (norm * pre[b]) if norm > 0.0 else 0.0
    return -1


@njit(cache=True, nogil=True)
def scales_of_rows(rows, block, p_inf, level_scale, norms, mult, pre):
    """:func:`block_scales` of every row of ``rows`` into row r of ``norms``, ``mult`` and ``pre`` (``(m,
    blocks)`` arrays), one thread; returns ``(r, flag)`` for the first row whose :func:`_finish_scales`
    flagged something (``flag``), else ``(-1, -1)``."""
    seg = min(block, _SEGMENT)
    per_block = -(-block // seg)
    partials = np.empty(norms.shape[1] * per_block)
    for r in range(rows.shape[0]):
        x = rows[r]
        _stats_range(x, block, seg, per_block, not p_inf, partials, 0, partials.size)
        bad = _finish_scales(x, block, per_block, partials, p_inf, level_scale, norms[r], mult[r], pre[r])
        if bad != -1:
            return r, bad
    return -1, -1


def _block_count(d: int, block: int) -> int:
    return -(-d // block)


def block_scales(x: np.ndarray, block: int, p: float, level_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per block ``v_b`` of ``block`` coordinates: ``(||v_b||_p, mult_b, pre_b)`` for p = 2 or inf.

    ``(|x_i| * pre_b) * mult_b = level_scale |x_i| / ||v_b||_p``, where the power of two ``pre_b``
    keeps ``mult_b`` a normal float for extreme norms; a zero block gets ``mult_b = 0``. Sums of
    squares are rescaled where they would under- or overflow. ValueError for NaN or Inf in ``x``
    (:func:`~mpicomp.compressors.base.non_finite_input`) and for a 2-norm beyond the float64 range.
    One pass over x, split over threads for a long vector: maxima for p = inf, sums of squares for
    p = 2 (a block's max is read only where its sum is extreme, see :func:`_finish_scales`).
    """
    d = x.size
    nblocks = _block_count(d, block)
    seg = min(block, _SEGMENT)
    per_block = -(-block // seg)
    p_inf = p == np.inf
    partials = np.empty(nblocks * per_block)
    run_split(_stats_range, partials.size, parallel_tasks(d), x, block, seg, per_block, not p_inf, partials)
    norms, mult, pre = np.empty(nblocks), np.empty(nblocks), np.empty(nblocks)
    bad = _finish_scales(x, block, per_block, partials, p_inf, level_scale, norms, mult, pre)
    if bad != -1:
        raise _scales_error(x, bad, nblocks)
    return norms, mult, pre


def _scales_error(x: np.ndarray, bad: int, nblocks: int) -> ValueError:
    """The error for a flag of :func:`_finish_scales`: NaN or Inf in ``x`` (in any block, first), or the
    2-norm of block ``bad`` beyond the float64 range."""
    if bad == _NON_FINITE or not np.isfinite(x).all():
        return non_finite_input(x, int(np.flatnonzero(~np.isfinite(x))[0]))
    where = f"block {bad} of x" if nblocks > 1 else "x"
    return ValueError(f"the 2-norm of {where} exceeds the float64 range; rescale the vector before compressing")


@dataclass(frozen=True)
class LevelCode:
    """One sign + level code: how magnitudes map to levels and levels back to magnitudes.

    ``level_bits`` bits hold levels ``0..max_level``; relative to the block scale, a POW2 level
    decodes to ``2^(level + e_min - 1)`` (0 for level 0), a LINEAR one to ``level / max_level``.
    ``cap`` clamps the normalised magnitude.
    """

    kind: int
    max_level: int
    level_bits: int
    cap: float
    e_min: int = 0

    @property
    def bits(self) -> int:
        """Bits per coordinate: the level plus one sign bit."""
        return self.level_bits + 1

    @cached_property
    def tiny_scale(self) -> float:
        """``2^-e_min``, the inverse of the smallest nonzero POW2 level."""
        return float(np.ldexp(1.0, -self.e_min))

    def nbytes(self, d: int) -> int:
        """Bytes of the codes of d coordinates: ``ceil(d * bits / 8)``."""
        return packed_nbytes(d, self.bits)


def linear_code(s: int) -> LevelCode:
    """Uniform levels ``0, 1, ..., s`` (random dithering with s levels)."""
    return LevelCode(LINEAR, s, max(1, int(s).bit_length()), float(s))


def pow2_code(e_min: int, max_level: int, level_bits: int, cap: float) -> LevelCode:
    """Levels ``0`` and ``2^(e_min + k - 1)`` for ``k = 1..max_level`` (natural dithering)."""
    return LevelCode(POW2, max_level, level_bits, cap, e_min)


def encode_levels(
    x: np.ndarray, state: np.uint64, code: LevelCode, block: int, p: float, payload: np.ndarray
) -> np.ndarray:
    """Quantize ``x`` relative to the p-norms of its blocks of ``block`` coordinates and write its codes in
    the bit-plane layout into ``payload`` (uint8, ``code.nbytes(d)`` bytes); returns the block norms.
    ValueError as :func:`block_scales`. A short vector is one row of :func:`encode_level_rows` (the same
    kernels, so the same bits), a long one is split over threads."""
    d, block = x.size, max(block, 1)
    if parallel_tasks(d) == 1:
        norms, row, bad = _quantize_rows(
            x.reshape(1, d), np.array([state], dtype=np.uint64), code, block, p, payload, 0
        )
        if row != -1:
            raise _scales_error(x, bad, norms.shape[1])
        return norms[0]
    norms, mult, pre = block_scales(x, block, p, code.cap)
    scales = (block, mult.reshape(1, -1), pre.reshape(1, -1), code.cap, code.e_min, code.tiny_scale)
    args = (x.reshape(1, d), np.array([state], dtype=np.uint64), *scales, payload.reshape(1, -1), 0)
    run_split(_encoder(code.kind, code.level_bits), group_count(d), parallel_tasks(d), *args)
    return norms


def encode_level_rows(
    rows: np.ndarray, states: np.ndarray, code: LevelCode, block: int, p: float, messages: np.ndarray, start: int
) -> np.ndarray:
    """Every row of the ``(m, d)`` array ``rows`` of short vectors (draws from ``states[r]``) quantized relative
    to its block p-norms, its codes written at ``messages[r, start:]`` (``(m, frame)`` uint8, C-contiguous),
    one kernel call for the scales and one for the codes: the bytes of :func:`encode_levels` of each row;
    returns the ``(m, blocks)`` norms. ValueError naming the first row with NaN or Inf or a 2-norm beyond
    the float64 range."""
    norms, row, bad = _quantize_rows(rows, states, code, max(block, 1), p, messages, start)
    if row != -1:
        error = _scales_error(rows[row], bad, norms.shape[1])
        raise ValueError(f"row {row}: {error}") from error
    return norms


def _quantize_rows(
    rows: np.ndarray, states: np.ndarray, code: LevelCode, block: int, p: float, messages: np.ndarray, start: int
) -> tuple[np.ndarray, int, int]:
    """:func:`scales_of_rows`, then (all rows fine) the codes of every row at ``messages[r, start:]``
    (a 1-D ``messages``: one row); returns the norms and the flagged ``(row, flag)`` or ``(-1, -1)``."""
    m, d = rows.shape
    norms, mult, pre = (np.empty((m, _block_count(d, block))) for _ in range(3))
    row, bad = scales_of_rows(rows, block, p == np.inf, code.cap, norms, mult, pre)
    if row == -1:
        args = (rows, states, block, mult, pre, code.cap, code.e_min, code.tiny_scale, messages.reshape(m, -1), start)
        _encoder(code.kind, code.level_bits)(*args, 0, group_count(d))
    return norms, row, bad


def decode_levels(
    payload: np.ndarray,
    code: LevelCode,
    block: int,
    scale: np.ndarray,
    what: str,
    out: np.ndarray,
    accumulate: bool,
    factor: float = 1.0,
) -> None:
    """Dequantize the ``d = out.size`` codes of ``payload`` into ``out`` (``accumulate``: add ``factor`` times
    them to it, the bits of the product then the sum); MessageError on a wrong length, nonzero padding or any
    invalid code.

    ``x_i = ±scale_b 2^(level + e_min - 1)`` (POW2) or ``±scale_b level / max_level`` (LINEAR).
    """
    d = out.size
    need = code.nbytes(d)
    if payload.size != need:
        raise MessageError(
            f"{what}: packed section holds {payload.size} bytes, d={d} codes of {code.bits} bits need {need}"
        )
    used = d * code.bits % 8
    if used and payload[-1] >> used:
        raise MessageError(f"{what}: nonzero padding bits after the last code")
    block = max(block, 1)
    args = (payload.reshape(1, -1), block, scale.reshape(1, -1), code.e_min, code.max_level, out[np.newaxis], factor)
    if run_split(_decoder(code.kind, code.level_bits, accumulate), group_count(d), parallel_tasks(d), *args) < 0:
        return
    bad = _first_invalid(payload, d, code.kind, code.level_bits, block, scale, code.e_min, code.max_level)
    raise MessageError(
        f"{what}: invalid code for coordinate {bad} "
        "(level out of range, negative zero, or nonzero level in a zero-norm block)"
    )


def add_level_rows(
    payloads: np.ndarray, code: LevelCode, block: int, scales: np.ndarray, targets: np.ndarray, factor: float
) -> int:
    """``target += factor *`` the values of every row of codes ``payloads`` (``(m, code.nbytes(d))`` uint8) with
    block scales ``scales[r]``, row after row, the target ``targets[0]`` of every row (a sum) or ``targets[r]``
    of row r (``(m, d)``): the bits of :func:`decode_levels` of each in turn, one kernel call; returns the first
    row with a scale that is negative or not finite, nonzero padding or an invalid code (the rows before it
    added), else -1."""
    d = targets.shape[1]
    flagged = _padded(payloads, d, code) | ~((scales >= 0.0) & np.isfinite(scales)).all(axis=1)
    end = int(np.argmax(flagged)) if flagged.any() else len(payloads)
    rows, row_scales = np.array(payloads[:end], order="C"), np.array(scales[:end], dtype=np.float64, order="C")
    kernel = _decoder(code.kind, code.level_bits, True)
    bad = kernel(rows, max(block, 1), row_scales, code.e_min, code.max_level, targets, factor, 0, group_count(d))
    return int(bad) if bad != -1 else (end if end < len(payloads) else -1)


def _padded(payloads: np.ndarray, d: int, code: LevelCode) -> np.ndarray:
    """Per row of codes: whether a padding bit after the last code is set."""
    used = d * code.bits % 8
    return payloads[:, -1] >> used != 0 if used else np.zeros(len(payloads), dtype=bool)


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
