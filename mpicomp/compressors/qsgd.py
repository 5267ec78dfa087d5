"""QSGD (Alistarh, Grubic, Li, Tomioka, Vojnovic 2017) with its Elias coding of the sparse levels.

``Q_s(x)_i = ||x||_2 sign(x_i) l_i / s`` where ``l_i`` rounds ``r_i = s |x_i| / ||x||_2`` to
``floor(r_i) + 1`` with probability ``r_i - floor(r_i)`` and down otherwise (``E l_i = r_i``).
Unbiased with ``E||Q_s(x) - x||^2 <= min(d/s^2, sqrt(d)/s) ||x||^2`` (their Lemma 3.1).

Wire: ``||x||_2`` as the one float64 codec scalar; the payload is a bit stream holding, for each
nonzero level in index order, the Elias code of the gap to it (from position -1), its sign bit
(1 = negative) and the Elias code of ``l_i``; then the Elias code of the gap to the end sentinel at
position d, which terminates the stream. ``x = 0`` has an empty payload.

Encoding is one pass over spans of ``SPAN`` coordinates: a vectorized loop rounds the span into
levels (coordinate i compares its uniform ``(u >> 11) 2^-53``, ``u = random_u64(state, i)``,
with ``r_i - floor(r_i)``), then a sequential writer visits only the nonzero levels, 64 coordinates
at a time through their nonzero mask. The norm comes from the pass that also rejects NaN and Inf.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache, lru_cache

import numpy as np
from numba import float64, int32, int64, njit, uint64
from numba.cpython.unsafe.numbers import trailing_zeros
from scipy.special import erfc

from ..rng import GOLDEN, RandomKey, key_states, mix64
from ..wire import Message, MessageError
from ..wire.bitpack import (
    GROUP,
    append_bits,
    finish_bits,
    nonzero_word,
    packed_nbytes,
    padded,
    peek_bits,
    prefetch_for_write,
)
from ..wire.elias import (
    ELIAS_CODES,
    append_elias,
    check_padding,
    codeword_table,
    elias_bits,
    elias_code_bits,
    read_elias,
)
from ._levels import block_scales, random_counter, uniform_grid
from .base import Compressor, check_scalar, naming_row
from .numeric import float64_bits
from .registry import register

SPAN = 2048  # coordinates rounded per vectorized loop (a multiple of GROUP)
CLEAR_SPAN = 1024  # the decoder zeroes its output a block of this many coordinates at a time
TRIPLE_BITS = 12  # the decoder's table reads (gap, sign, level) triples of up to 12 bits in one lookup
_HALF_ULP = 2.0**-53
_TRUNCATED, _GAP_PAST_END, _LEVEL_ABOVE_S = 1, 2, 3
_DECODE_ERRORS = {
    _TRUNCATED: "truncated stream or invalid Elias codeword",
    _GAP_PAST_END: "a gap jumps past the end of the vector",
    _LEVEL_ABOVE_S: "a level exceeds s",
}


@njit(cache=True, nogil=True)
def _round_span(x, state, lo, hi, pre, mult, s, levels):
    """``levels[j] = l_i`` for ``i = lo + j < hi``: ``r_i = min((|x_i| pre) mult, s)`` and
    ``l_i = floor(r_i) + [U_i < r_i - floor(r_i)]`` with ``U_i = (u >> 11) 2^-53`` (the uniform of
    :func:`mpicomp.rng.random_uniform`, assembled from bit patterns: a uint64-to-float conversion
    does not vectorize on AVX2). A plain loop of its own, so that it vectorizes."""
    values, out = x[lo:hi], levels[: hi - lo]
    cap = float64(s)
    counter = random_counter(state, lo)  # u = random_u64(state, lo + j), as a running counter
    unit = pre == 1.0  # (|x_i| 1) mult = |x_i| mult: a multiply fewer, same bits
    for j in range(values.size):
        magnitude = abs(float64(values[j]))
        r = min(magnitude * mult if unit else magnitude * pre * mult, cap)
        low = np.floor(r)
        u = mix64(counter)
        counter += GOLDEN
        uniform = uniform_grid(u) + (_HALF_ULP if (u >> uint64(11)) & uint64(1) else 0.0)
        out[j] = int32(low) + int32(uniform < r - low)  # r <= s < 2^31: int32 conversions vectorize


@njit(cache=True, nogil=True, inline="never")
def _append_triple(out, acc, fill, byte, gap, negative, level, code):
    """Append Elias(gap), the sign bit and Elias(level) field by field: the writer's rare path, kept out
    of line (inlined, its loops cost the table path 1.2 ns per coordinate in registers)."""
    acc, fill, byte = append_elias(out, acc, fill, byte, gap, code)
    acc, fill, byte = append_bits(out, acc, fill, byte, negative, 1)
    return append_elias(out, acc, fill, byte, level, code)


@njit(cache=True, nogil=True)
def _encode_stream(x, state, pre, mult, s, code, codewords, sign_levels, levels, out):
    """Round ``x`` span by span into ``levels`` (:func:`_round_span`) and write into ``out``, per
    nonzero level, Elias(gap), the sign bit and Elias(l_i); then Elias(gap to d). Returns the
    stream length in bits.

    Gaps and levels below ``codewords.size`` (nearly all) take their fields from the tables
    (:func:`mpicomp.wire.elias.codeword_table`; :func:`_sign_level_table` at ``2 l_i + [x_i < 0]``,
    the sign read off the bit pattern of the nonzero ``x_i``), and the three fields go out as one
    append (at most 25 + 1 + 25 bits). Indices are unsigned: no wraparound check for negative ones."""
    d = x.size
    acc, fill, byte = uint64(0), 0, 0
    previous = -1
    limit = uint64(codewords.size)
    for lo in range(0, d, SPAN):
        hi = min(lo + SPAN, d)
        _round_span(x, state, lo, hi, pre, mult, s, levels)
        levels[hi - lo :] = 0
        for k in range(0, hi - lo, GROUP):
            mask = nonzero_word(levels, k)
            while mask:
                j = int(trailing_zeros(mask))  # type: ignore[call-arg]  # numba's stubs give intrinsics a typingctx parameter
                mask &= mask - uint64(1)
                i = lo + k + j
                gap, level = uint64(i - previous), uint64(levels[k + j])
                negative = float64_bits(float64(x[i])) >> uint64(63)
                if gap < limit and level < limit:
                    gap_code, field = codewords[gap], sign_levels[(level << uint64(1)) | negative]
                    gap_bits = gap_code & uint64(0xFF)
                    word = (gap_code >> uint64(8)) | ((field >> uint64(8)) << gap_bits)
                    acc, fill, byte = append_bits(out, acc, fill, byte, word, int(gap_bits + (field & uint64(0xFF))))
                else:
                    acc, fill, byte = _append_triple(out, acc, fill, byte, gap, negative, level, code)
                previous = i
    acc, fill, byte = append_elias(out, acc, fill, byte, d - previous, code)
    return finish_bits(out, acc, fill, byte)


@njit(cache=True, nogil=True)
def _encode_streams(
    rows, states, norms, pres, mults, s, code, codewords, sign_levels, levels, out, head, tail, offsets
):
    """The stream of every row (:func:`_encode_stream`) back to back in ``out``: message j takes
    ``out[offsets[j] : offsets[j + 1]]``, ``head`` bytes of framing, its payload (empty for a zero row) and ``tail``
    bytes. The writer's stores past a payload's end land in the framing, written after."""
    position = 0
    for j in range(rows.shape[0]):
        offsets[j] = position
        start = position + head
        bits = 0
        if norms[j] != 0.0:
            bits = _encode_stream(
                rows[j], states[j], pres[j], mults[j], s, code, codewords, sign_levels, levels, out[start:]
            )
        position = start + ((bits + 7) >> 3) + tail
    offsets[rows.shape[0]] = position


@cache
def _sign_level_table(code: int) -> np.ndarray:
    """The writer's table of the sign and level fields: entry ``2 l + n`` (``n`` = 1 for negative) is
    ``(n | Elias(l) << 1) << 8 | (1 + length)`` for each level ``l`` of :func:`codeword_table`."""
    levels = codeword_table(code)
    negative = np.arange(2, dtype=np.uint64)[None, :]
    words = (levels[:, None] >> np.uint64(8) << np.uint64(1)) | negative
    return ((words << np.uint64(8)) | ((levels[:, None] & np.uint64(0xFF)) + np.uint64(1))).ravel()


@njit(cache=True)
def _fill_triple_table(code, bits, table):
    """``table[p]``: when the low ``bits`` bits of p start with a whole (gap, sign, level) triple of
    the stream, ``length | negative << 8 | gap << 16 | level << 32``; else 0."""
    buf = np.zeros(16, dtype=np.uint8)
    for p in range(table.size):
        for k in range(8):
            buf[k] = (p >> (8 * k)) & 0xFF
        gap, position, ok = read_elias(buf, 0, bits, code)
        if not ok or position >= bits:
            continue
        negative = peek_bits(buf, position) & uint64(1)
        level, position, ok = read_elias(buf, position + 1, bits, code)
        if ok:
            table[p] = uint64(position) | (negative << uint64(8)) | (gap << uint64(16)) | (level << uint64(32))


@cache
def _triple_table(code: int) -> np.ndarray:
    """The decoder's table over the next ``TRIPLE_BITS`` bits (see :func:`_fill_triple_table`)."""
    table = np.zeros(1 << TRIPLE_BITS, dtype=np.uint64)
    _fill_triple_table(code, TRIPLE_BITS, table)
    return table


@njit(cache=True, nogil=True, inline="never")
def _read_triple(buf, position, total, d, s, code, index):
    """Read one (gap, sign, level) triple at bit ``position`` codeword by codeword (the decoder's rare
    path, out of line). Returns ``(status, index, negative, level, position after it)`` with status -1
    for a triple, 0 at the end sentinel, else an error code (then ``level`` is 0)."""
    gap, position, ok = read_elias(buf, position, total, code)
    index += int64(gap)
    if not ok:
        return _TRUNCATED, index, uint64(0), uint64(0), position
    if index >= d:
        return (0 if index == d else _GAP_PAST_END), index, uint64(0), uint64(0), position
    if position >= total:
        return _TRUNCATED, index, uint64(0), uint64(0), position
    negative = peek_bits(buf, position) & uint64(1)
    level, position, ok = read_elias(buf, position + 1, total, code)
    if not ok:
        return _TRUNCATED, index, negative, uint64(0), position
    if level > uint64(s):
        return _LEVEL_ABOVE_S, index, negative, uint64(0), position
    return -1, index, negative, level, position


@njit(cache=True, nogil=True)
def _read_stream(buf, total, d, s, unit, code, triples, out, accumulate):
    """Decode the ``total`` bits of the padded stream ``buf`` (see ``peek_bits``): write ``±l unit`` at
    each coded position of ``out`` and zeros elsewhere (``accumulate``: add ``±l unit`` at the coded
    positions). Returns ``(status, bits consumed)``, status 0 when the stream is valid.

    A (gap, sign, level) triple within ``TRIPLE_BITS`` bits (nearly all) is one lookup in ``triples``
    (:func:`_triple_table`) on a 64-bit window of the stream held in a register, which is shifted
    past it and reloaded once fewer than ``TRIPLE_BITS`` of its 57 valid bits are left: the parse is a
    chain of one table load and one shift per triple, and the sign picks ``±unit`` without a branch.
    Others, and the final gap, are read codeword by codeword (:func:`_read_triple`).
    """
    units = np.array([unit, -unit])
    mask = uint64(triples.size - 1)
    base, used, window = 0, 0, peek_bits(buf, 0)  # the window holds the stream from bit base + used
    index = -1
    cleared = 0  # without accumulate, out[:cleared] is zeroed (see _clear_span)
    while True:
        entry = triples[window & mask]
        length = int(entry & uint64(0xFF))
        gap = int64(entry >> uint64(16)) & 0xFFFF
        level = entry >> uint64(32)
        negative = (entry >> uint64(8)) & uint64(1)
        if entry and index + gap < d and base + used + length <= total and level <= uint64(s):
            index += gap
            used += length
            window >>= uint64(length)
            if used > 57 - TRIPLE_BITS:
                base, used = base + used, 0
                window = peek_bits(buf, base)
        else:
            status, index, negative, level, base = _read_triple(buf, base + used, total, d, s, code, index)
            used, window = 0, peek_bits(buf, base)
            if status >= 0:
                if not accumulate:
                    out[cleared:] = 0.0
                return status, base
        value = float64(level) * units[negative]
        if accumulate:
            out[index] += value
        else:
            if index >= cleared:
                cleared = _clear_span(out, cleared, index)
            out[index] = value


@njit(cache=True, nogil=True)
def _add_streams(data, starts, lengths, norms, s, code, triples, targets, each, factor):
    """``targets[j if each else 0] += factor C(m_j)`` for every payload ``data[starts[j] : starts[j] + lengths[j]]``
    with norm ``norms[j]``, in order; the bits of ``decode_add`` of each: where ``factor`` is 1 the levels are added
    in place (:func:`_read_stream`), else the vector is decoded whole, scaled and added. Returns the first bad
    message (an invalid norm, a malformed stream or padding), else -1. A payload within 8 bytes of the end of
    ``data`` is read from a padded copy (see ``peek_bits``)."""
    d = targets.shape[1]
    scratch = np.empty(0 if factor == 1.0 else d)
    for j in range(starts.size):
        row = targets[j if each else 0]
        norm, start, length = norms[j], starts[j], lengths[j]
        if not (norm >= 0.0 and norm < np.inf):
            return j
        if norm == 0.0:
            if length:
                return j
            if factor != 1.0:
                for i in range(d):
                    row[i] += 0.0 * factor
            continue
        sink = row if factor == 1.0 else scratch
        if start + length + 8 <= data.size:
            status, consumed = _read_stream(
                data[start:], 8 * length, d, s, norm / s, code, triples, sink, factor == 1.0
            )
        else:
            padded_copy = np.zeros(length + 8, dtype=np.uint8)
            padded_copy[:length] = data[start : start + length]
            status, consumed = _read_stream(padded_copy, 8 * length, d, s, norm / s, code, triples, sink, factor == 1.0)
        if status or length != (consumed + 7) >> 3 or (consumed & 7 and data[start + length - 1] >> (consumed & 7)):
            return j
        if factor != 1.0:
            for i in range(d):
                row[i] += scratch[i] * factor
    return -1


@njit(cache=True, nogil=True, inline="never")
def _clear_span(out, start, index):
    """Zero ``out`` from ``start`` to the end of the ``CLEAR_SPAN`` block holding ``index``, and prefetch
    the next block for writing; returns that end. The decoder zeroes just ahead of its writes, which
    then land in cache (a fill of ``out`` first would stream it through memory twice), and the
    prefetch overlaps the next block's misses with decoding (stores alone leave the hardware
    prefetchers idle: 15.6 -> 14.7 ms at d = 2^24)."""
    end = min(out.size, (index // CLEAR_SPAN + 1) * CLEAR_SPAN)
    out[start:end] = 0.0
    for t in range(end, min(out.size, end + CLEAR_SPAN), 8):  # one cache line of float64 per hint
        prefetch_for_write(out, t)
    return end


def _level_tail(j: np.ndarray, d: int, s: int) -> np.ndarray:
    """``P(l >= j)`` (integers ``j >= 1``) for one coordinate of a standard Gaussian x with ``||x||_2 = sqrt d``.

    ``r = s |z| / sqrt(d)`` is half-normal with scale ``sigma = s / sqrt(d)`` and density f; stochastic
    rounding gives ``P(l >= j) = E clip(r - j + 1, 0, 1) = int_{j-1}^{j} (r - j + 1) f(r) dr + P(r >= j)``,
    in closed form with ``P(r >= t) = erfc(t / (sigma sqrt 2))`` and
    ``int_a^b r f(r) dr = sigma sqrt(2/pi) (exp(-a^2 / 2 sigma^2) - exp(-b^2 / 2 sigma^2))``. Levels are
    capped at s (the mass of ``r > s``, i.e. ``|z| > sqrt d``, rounds to s), so the tail is 0 beyond s.
    """
    sigma = s / np.sqrt(d)
    above = erfc(j / (sigma * np.sqrt(2.0)))
    above_previous = erfc((j - 1) / (sigma * np.sqrt(2.0)))
    moment = sigma * np.sqrt(2.0 / np.pi) * (np.exp(-0.5 * ((j - 1) / sigma) ** 2) - np.exp(-0.5 * (j / sigma) ** 2))
    tail = moment - (j - 1) * (above_previous - above) + above
    return np.where(j <= s, np.clip(tail, 0.0, 1.0), 0.0)


def _dyadic_blocks(end: int) -> tuple[np.ndarray, np.ndarray]:
    """Block starts ``2^m`` and ends ``min(2^(m+1), end)`` covering ``[1, end)``: Elias lengths are
    constant on each block (they depend on the bit length only)."""
    starts = 2 ** np.arange(max(1, int(end - 1).bit_length()), dtype=np.float64)
    return starts, np.minimum(2 * starts, end)


@lru_cache(maxsize=64)
def gaussian_stream_bits(d: int, s: int, code: str) -> float:
    """Expected payload bits of QSGD on a standard Gaussian x in dimension d (large-d model).

    Nonzero levels are independent with probability ``p = P(l >= 1)``. The expected number of gaps
    of length ``>= g`` (the final one, to the sentinel at d, included) is
    ``T(g) = q^(g-1) (p (d - g + 1) + 1)`` for ``1 <= g <= d + 1``, ``q = 1 - p``. With the Elias
    length L constant on dyadic blocks ``[a, b)``:
    ``bits = sum_blocks L(a) (T(a) - T(b)) + d sum_blocks (1 + L(a)) (P(l >= a) - P(l >= b))``
    (gap codes, then a sign bit and a level code per nonzero).
    """
    p = float(_level_tail(np.array([1.0]), d, s)[0])

    def gaps_at_least(g: np.ndarray) -> np.ndarray:
        return np.where(g <= d + 1, np.power(1.0 - p, g - 1.0) * (p * (d - g + 1.0) + 1.0), 0.0)

    starts, ends = _dyadic_blocks(d + 2)
    lengths = elias_code_bits(starts.astype(np.uint64), code)
    gap_bits = float(np.sum(lengths * (gaps_at_least(starts) - gaps_at_least(ends))))
    starts, ends = _dyadic_blocks(s + 1)
    lengths = elias_code_bits(starts.astype(np.uint64), code)
    level_bits = d * float(np.sum((1 + lengths) * (_level_tail(starts, d, s) - _level_tail(ends, d, s))))
    return gap_bits + level_bits


@register
class QSGD(Compressor):
    """QSGD with s levels: ``Q_s(x) = ||x||_2 sign(x) l / s``, omega = min(d/s^2, sqrt(d)/s); Elias-coded.

    ``code`` picks the integer code for gaps and levels: ``omega`` (Elias recursive, as in the paper)
    or ``gamma``. :meth:`expected_bits` is the expected code length for a standard Gaussian x (see
    :func:`gaussian_stream_bits`). The paper's Theorem 3.2 is a worst case over x instead,
    ``(3 + (3/2 + o(1)) log(2(s^2 + d) / (s(s + sqrt d)))) s(s + sqrt d) + 32`` bits (about
    ``2.8 d + 32`` for s = sqrt d); its o(1) term makes it unusable as an exact reference.
    """

    name = "qsgd"
    unbiased = True
    n_scalars = 1
    checks_finite = True  # the norm pass rejects NaN and Inf

    def __init__(self, s: int | None = None, code: str = "omega") -> None:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 1 <= s < 2**31:
            raise ValueError(f"qsgd: s (number of levels) must be an int in [1, 2**31), got {s!r}")
        if code not in ELIAS_CODES:
            raise ValueError(f"qsgd: code must be one of {', '.join(ELIAS_CODES)}, got {code!r}")
        self.s = int(s)
        self.code = code
        self._level_dtype = np.uint8 if s < 2**8 else (np.uint16 if s < 2**16 else np.uint32)
        self._stream = np.empty(0, dtype=np.uint8)  # the writer's output, kept from call to call (grown)

    @property
    def params(self) -> dict[str, object]:
        return {"s": self.s} if self.code == "omega" else {"s": self.s, "code": self.code}

    def omega(self, d: int) -> float:
        return min(d / self.s**2, np.sqrt(d) / self.s)

    def expected_bits(self, d: int) -> float:
        return gaussian_stream_bits(d, self.s, self.code) if d else 0.0

    def _stream_bits_bound(self, d: int) -> int:
        """An upper bound on the payload bits in dimension d: a gap g costs at most ``3 g`` bits under
        either code and the gaps sum to ``d + 1``; each of at most d nonzeros adds a sign bit and a
        level code of at most ``elias_bits(s)`` bits (code lengths do not decrease with n)."""
        return 3 * (d + 1) + d * (1 + elias_bits(self.s, ELIAS_CODES[self.code]))

    def _encode(self, x: np.ndarray, key: RandomKey) -> tuple[tuple[float, ...], np.ndarray]:
        norms, mult, pre = block_scales(x, max(x.size, 1), 2, float(self.s))
        norm = float(norms[0]) if norms.size else 0.0
        if norm == 0.0:
            return (0.0,), np.empty(0, dtype=np.uint8)
        levels = np.empty(SPAN, dtype=self._level_dtype)
        capacity = packed_nbytes(self._stream_bits_bound(x.size), 1) + 8
        if self._stream.size < capacity:  # a fresh buffer would cost a page fault per 4 KiB written
            self._stream = np.empty(capacity, dtype=np.uint8)
        out = self._stream
        code = ELIAS_CODES[self.code]
        bits = _encode_stream(
            x,
            np.uint64(key.state),
            pre[0],
            mult[0],
            self.s,
            code,
            codeword_table(code),
            _sign_level_table(code),
            levels,
            out,
        )
        return (norm,), out[: packed_nbytes(bits, 1)]

    def _decode_into(self, msg: Message, key: RandomKey | None, out: np.ndarray, accumulate: bool) -> None:
        norm = check_scalar(msg.scalars[0], "qsgd norm")
        data = np.frombuffer(msg.payload, dtype=np.uint8)
        if norm == 0.0:
            if data.size:
                raise MessageError(f"qsgd: zero norm but a payload of {data.size} bytes")
            if not accumulate:
                out.fill(0.0)
            return
        code = ELIAS_CODES[self.code]
        status, consumed = _read_stream(
            padded(data), 8 * data.size, msg.d, self.s, norm / self.s, code, _triple_table(code), out, accumulate
        )
        if status:
            raise MessageError(f"qsgd: malformed level stream: {_DECODE_ERRORS[status]}")
        check_padding(data, consumed, "qsgd level stream")

    def _encode_rows_packed(
        self, rows: np.ndarray, keys: Sequence[RandomKey], head: int, tail: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every row's norm from one pass (:func:`block_scales` with one block a row), then every stream from one
        :func:`_encode_streams` call; a row with NaN or Inf raises encode's error, naming it."""
        m, d = rows.shape
        try:
            norms, mult, pre = block_scales(rows.reshape(-1), max(d, 1), 2, float(self.s))
        except ValueError:
            for r, (row, key) in enumerate(zip(rows, keys, strict=True)):
                naming_row(r, self._encode, row, key)
            raise
        if not d:
            norms = mult = pre = np.zeros(m)
        stream_bytes = packed_nbytes(self._stream_bits_bound(d), 1)
        out = np.empty(m * (head + stream_bytes + tail) + 8, dtype=np.uint8)
        offsets = np.empty(m + 1, dtype=np.int64)
        code = ELIAS_CODES[self.code]
        levels = np.empty(SPAN, dtype=self._level_dtype)
        tables = codeword_table(code), _sign_level_table(code)
        _encode_streams(
            rows, key_states(keys), norms, pre, mult, self.s, code, *tables, levels, out, head, tail, offsets
        )
        return out, offsets, norms.reshape(m, 1)

    def _add_payload_packed(
        self, data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, scalars: np.ndarray, out: np.ndarray
    ) -> int:
        return self._add_packed(data, starts, lengths, scalars, out.reshape(1, -1), False, 1.0)

    def _add_payload_packed_each(
        self,
        data: np.ndarray,
        starts: np.ndarray,
        lengths: np.ndarray,
        scalars: np.ndarray,
        targets: np.ndarray,
        factor: float,
    ) -> int:
        return self._add_packed(data, starts, lengths, scalars, targets, True, factor)

    def _add_packed(
        self,
        data: np.ndarray,
        starts: np.ndarray,
        lengths: np.ndarray,
        scalars: np.ndarray,
        targets: np.ndarray,
        each: bool,
        factor: float,
    ) -> int:
        """:func:`_add_streams` with this codec's levels and tables."""
        code = ELIAS_CODES[self.code]
        norms = np.ascontiguousarray(scalars[:, 0])
        return int(_add_streams(data, starts, lengths, norms, self.s, code, _triple_table(code), targets, each, factor))
