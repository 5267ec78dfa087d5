"""QSGD (Alistarh, Grubic, Li, Tomioka, Vojnovic 2017) with its Elias coding of the sparse levels.

``Q_s(x)_i = ||x||_2 sign(x_i) l_i / s`` where ``l_i`` rounds ``r_i = s |x_i| / ||x||_2`` to
``floor(r_i) + 1`` with probability ``r_i - floor(r_i)`` and down otherwise (``E l_i = r_i``).
Unbiased with ``E||Q_s(x) - x||^2 <= min(d/s^2, sqrt(d)/s) ||x||^2`` (their Lemma 3.1).

Wire: ``||x||_2`` as the one float64 codec scalar; the payload is a bit stream holding, for each
nonzero level in index order, the Elias code of the gap to it (from position -1), its sign bit
(1 = negative) and the Elias code of ``l_i``; then the Elias code of the gap to the end sentinel at
position d, which terminates the stream. ``x = 0`` has an empty payload.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit, uint64
from scipy.special import erfc

from ..rng import RandomKey, random_uniform
from ..wire import Message, MessageError
from ..wire.bitpack import flush_bits, packed_nbytes, write_bits
from ..wire.elias import (
    ELIAS_CODES,
    check_padding,
    elias_bits,
    elias_code_bits,
    read_bits_checked,
    read_elias,
    write_elias,
)
from .base import Compressor, check_scalar
from .numeric import l2_norm
from .registry import register

_TRUNCATED, _GAP_PAST_END, _LEVEL_ABOVE_S = 1, 2, 3
_DECODE_ERRORS = {
    _TRUNCATED: "truncated stream or invalid Elias codeword",
    _GAP_PAST_END: "a gap jumps past the end of the vector",
    _LEVEL_ABOVE_S: "a level exceeds s",
}


@njit(cache=True)
def _quantize(x, norm, s, state, code, levels):
    """Fill ``levels`` with ``sign(x_i) l_i``, ``l_i`` the stochastic rounding of ``r_i = |x_i| (s / norm)``
    (capped at s) with the i-th uniform of ``state``; returns the stream length in bits."""
    scale = s / norm
    bits = 0
    previous = -1
    for i in range(x.size):
        r = abs(np.float64(x[i])) * scale
        low = np.floor(r)
        level = min(np.int64(low) + (1 if random_uniform(state, i) < r - low else 0), s)
        levels[i] = -level if x[i] < 0 else level
        if level:
            bits += elias_bits(i - previous, code) + 1 + elias_bits(level, code)
            previous = i
    return bits + elias_bits(x.size - previous, code)


@njit(cache=True)
def _write_stream(levels, code, out):
    """Per nonzero level: Elias(gap), sign bit, Elias(|level|); then Elias(gap to the sentinel at d)."""
    stream = (uint64(0), 0, 0)
    previous = -1
    for i in range(levels.size):
        level = np.int64(levels[i])
        if level:
            stream = write_elias(out, stream, i - previous, code)
            stream = write_bits(out, stream, level < 0, 1)
            stream = write_elias(out, stream, abs(level), code)
            previous = i
    stream = write_elias(out, stream, levels.size - previous, code)
    return flush_bits(out, stream)


@njit(cache=True)
def _read_stream(buf, d, s, unit, code, out):
    """Fill ``out`` (zeroed) with ``±l unit``; returns (status, bits consumed), status 0 when valid."""
    stream = (uint64(0), 0, 0)
    consumed = 0
    total = 8 * buf.size
    position = -1
    while True:
        gap, stream, consumed, ok = read_elias(buf, stream, consumed, total, code)
        if not ok:
            return _TRUNCATED, consumed
        position += np.int64(gap)
        if position == d:
            return 0, consumed
        if position > d:
            return _GAP_PAST_END, consumed
        negative, stream, consumed, ok = read_bits_checked(buf, stream, consumed, total, 1)
        if not ok:
            return _TRUNCATED, consumed
        level, stream, consumed, ok = read_elias(buf, stream, consumed, total, code)
        if not ok:
            return _TRUNCATED, consumed
        if level > uint64(s):
            return _LEVEL_ABOVE_S, consumed
        out[position] = -(np.float64(level) * unit) if negative else np.float64(level) * unit


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

    def __init__(self, s: int | None = None, code: str = "omega") -> None:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 1 <= s < 2**31:
            raise ValueError(f"qsgd: s (number of levels) must be an int in [1, 2**31), got {s!r}")
        if code not in ELIAS_CODES:
            raise ValueError(f"qsgd: code must be one of {', '.join(ELIAS_CODES)}, got {code!r}")
        self.s = int(s)
        self.code = code
        self._level_dtype = np.int8 if s < 2**7 else (np.int16 if s < 2**15 else np.int32)  # signed levels

    @property
    def params(self) -> dict[str, object]:
        return {"s": self.s} if self.code == "omega" else {"s": self.s, "code": self.code}

    def omega(self, d: int) -> float:
        return min(d / self.s**2, np.sqrt(d) / self.s)

    def expected_bits(self, d: int) -> float:
        return gaussian_stream_bits(d, self.s, self.code) if d else 0.0

    def _encode(self, x: np.ndarray, key: RandomKey) -> tuple[tuple[float, ...], np.ndarray]:
        norm = l2_norm(x)
        if not np.isfinite(norm):
            raise ValueError(f"{self.spec}: ||x||_2 exceeds the float64 range; scale the vector down")
        if norm == 0.0:
            return (0.0,), np.empty(0, dtype=np.uint8)
        code = ELIAS_CODES[self.code]
        levels = np.empty(x.size, dtype=self._level_dtype)
        bits = _quantize(x, norm, self.s, key.state, code, levels)
        out = np.zeros(packed_nbytes(bits, 1) + 8, dtype=np.uint8)
        return (norm,), out[: _write_stream(levels, code, out)]

    def _decode(self, msg: Message, key: RandomKey | None) -> np.ndarray:
        norm = check_scalar(msg.scalars[0], "qsgd norm")
        out = np.zeros(msg.d)
        data = np.frombuffer(msg.payload, dtype=np.uint8)
        if norm == 0.0:
            if data.size:
                raise MessageError(f"qsgd: zero norm but a payload of {data.size} bytes")
            return out
        status, consumed = _read_stream(data, msg.d, self.s, norm / self.s, ELIAS_CODES[self.code], out)
        if status:
            raise MessageError(f"qsgd: malformed level stream: {_DECODE_ERRORS[status]}")
        check_padding(data, consumed, "qsgd level stream")
        return out
