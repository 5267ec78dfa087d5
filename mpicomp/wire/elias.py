"""Elias gamma and omega codes for positive integers on the package's LSB-first bit stream, in numba.

Universal prefix codes (Elias 1975) for ``1 <= n <= MAX_ELIAS``, with ``b(n)`` the bit length of n:

* gamma: ``b(n) - 1`` zero bits, a one bit, then the ``b(n) - 1`` bits of n below its leading one;
  ``2 floor(log2 n) + 1`` bits.
* omega (recursive): with ``n_0 = n`` and ``n_{i+1} = b(n_i) - 1`` while ``n_i > 1``, the groups
  ``n_m, ..., n_1, n_0`` (last one first), then a zero bit. Each group is its leading one bit
  followed by its ``b(n_i) - 1`` lower bits; the decoder starts at ``n = 1`` and, while it reads a one, reads ``n``
  more bits to form the next ``n``. ``1 + sum_i b(n_i)`` bits (``log2 n + log2 log2 n + ...``).

The bits after a leading one are stored least significant first, like every field of the stream
(:mod:`mpicomp.wire.bitpack`); code lengths and the prefix property are those of the textbook codes.

Kernels use bitpack's ``write_bits`` / ``read_bits`` / ``flush_bits`` accumulator. Readers take the
stream size in bits and the number of bits consumed so far, never read past the end, and return an
``ok`` flag instead of raising, so a malformed stream becomes a :class:`MessageError` in Python.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

from .bitpack import flush_bits, packed_nbytes, read_bits, write_bits
from .errors import MessageError

GAMMA = 0
OMEGA = 1
ELIAS_CODES = {"gamma": GAMMA, "omega": OMEGA}
MAX_ELIAS = 2**32  # largest codable integer: a gap of d + 1 for the largest u32 dimension
_MAX_GROUP_BITS = 33  # bit length of MAX_ELIAS
_ONE = np.uint64(1)


@njit(cache=True)
def bit_length(n):
    """Number of bits of ``n >= 1``: ``floor(log2 n) + 1``."""
    n = uint64(n)
    length = 0
    for shift in (32, 16, 8, 4, 2, 1):
        if n >> uint64(shift):
            n >>= uint64(shift)
            length += shift
    return length + 1


@njit(cache=True)
def elias_bits(n, code):
    """Code length in bits of ``n >= 1`` under ``code`` (GAMMA or OMEGA)."""
    if code == GAMMA:
        return 2 * bit_length(n) - 1
    total = 1
    n = uint64(n)
    while n > 1:
        length = bit_length(n)
        total += length
        n = uint64(length - 1)
    return total


@njit(cache=True)
def _write_wide(out, state, value, bits):
    """``write_bits`` for up to 64 bits, in chunks of at most 32."""
    value = uint64(value)
    while bits > 32:
        state = write_bits(out, state, value, 32)
        value >>= uint64(32)
        bits -= 32
    if bits > 0:
        state = write_bits(out, state, value, bits)
    return state


@njit(cache=True)
def write_elias(out, state, n, code):
    """Append the ``code`` codeword of ``1 <= n <= MAX_ELIAS``; returns the new writer state."""
    n = uint64(n)
    if code == GAMMA:
        k = bit_length(n) - 1
        low = n & ((_ONE << uint64(k)) - _ONE)
        return _write_wide(out, state, (_ONE << uint64(k)) | (low << uint64(k + 1)), 2 * k + 1)
    # Omega, built from the end: the final zero bit, then each group prepended (lower bits come first).
    word = uint64(0)
    length = 1
    while n > 1:
        k = bit_length(n) - 1
        group = _ONE | ((n & ((_ONE << uint64(k)) - _ONE)) << _ONE)
        word = group | (word << uint64(k + 1))
        length += k + 1
        n = uint64(k)
    return _write_wide(out, state, word, length)


@njit(cache=True)
def read_bits_checked(buf, state, consumed, total, bits):
    """Read ``bits`` (<= 64) bits unless that passes ``total`` bits; returns (value, state, consumed, ok)."""
    if consumed + bits > total:
        return uint64(0), state, consumed, False
    value = uint64(0)
    shift = 0
    while bits > 0:
        chunk = min(bits, 32)
        part, state = read_bits(buf, state, chunk)
        value |= uint64(part) << uint64(shift)
        shift += chunk
        bits -= chunk
        consumed += chunk
    return value, state, consumed, True


@njit(cache=True)
def read_elias(buf, state, consumed, total, code):
    """Read one codeword; returns (n, state, consumed, ok). ``ok`` is False on a truncated stream
    (``consumed`` would pass ``total`` bits) or a codeword for an integer above MAX_ELIAS."""
    if code == GAMMA:
        zeros = 0
        while True:
            bit, state, consumed, ok = read_bits_checked(buf, state, consumed, total, 1)
            if not ok:
                return uint64(0), state, consumed, False
            if bit:
                break
            zeros += 1
            if zeros >= _MAX_GROUP_BITS:
                return uint64(0), state, consumed, False
        low, state, consumed, ok = read_bits_checked(buf, state, consumed, total, zeros)
        n = (_ONE << uint64(zeros)) | low
        return n, state, consumed, ok and n <= uint64(MAX_ELIAS)
    n = _ONE
    while True:
        bit, state, consumed, ok = read_bits_checked(buf, state, consumed, total, 1)
        if not ok:
            return uint64(0), state, consumed, False
        if bit == 0:
            return n, state, consumed, n <= uint64(MAX_ELIAS)
        if n >= uint64(_MAX_GROUP_BITS):
            return uint64(0), state, consumed, False
        low, state, consumed, ok = read_bits_checked(buf, state, consumed, total, np.int64(n))
        if not ok:
            return uint64(0), state, consumed, False
        n = (_ONE << n) | low


@njit(cache=True)
def _lengths(values, code, out):
    for i in range(values.size):
        out[i] = elias_bits(values[i], code)


@njit(cache=True)
def _encode(values, code, out):
    state = (uint64(0), 0, 0)
    for i in range(values.size):
        state = write_elias(out, state, values[i], code)
    return flush_bits(out, state)


@njit(cache=True)
def _decode(buf, n, code, out):
    """Fill ``out[:n]``; returns the number of bits consumed, or -1 - i if codeword i is invalid."""
    state = (uint64(0), 0, 0)
    consumed = 0
    total = 8 * buf.size
    for i in range(n):
        value, state, consumed, ok = read_elias(buf, state, consumed, total, code)
        if not ok:
            return -1 - i
        out[i] = value
    return consumed


def _code_id(code: str) -> int:
    if code not in ELIAS_CODES:
        raise ValueError(f"Elias code must be one of {', '.join(ELIAS_CODES)}, got {code!r}")
    return ELIAS_CODES[code]


def _checked_values(values: np.ndarray) -> np.ndarray:
    values = np.ascontiguousarray(values)
    if values.size and (values.min() < 1 or values.max() > MAX_ELIAS):
        raise ValueError(f"Elias codes take integers in [1, {MAX_ELIAS}]")
    return values.astype(np.uint64, copy=False)


def elias_code_bits(values: np.ndarray, code: str = "omega") -> np.ndarray:
    """Codeword length in bits of each value (an int64 array of the same shape)."""
    code_id = _code_id(code)
    flat = _checked_values(np.asarray(values).ravel())
    out = np.empty(flat.size, dtype=np.int64)
    _lengths(flat, code_id, out)
    return out.reshape(np.shape(values))


def encode_elias(values: np.ndarray, code: str = "omega") -> np.ndarray:
    """Concatenated codewords of ``values`` (integers in [1, MAX_ELIAS]), zero-padded to whole bytes."""
    values = _checked_values(values)
    out = np.zeros(packed_nbytes(int(elias_code_bits(values, code).sum()), 1) + 8, dtype=np.uint8)
    return out[: _encode(values, _code_id(code), out)]


def decode_elias(buf: np.ndarray | bytes | memoryview, n: int, code: str = "omega") -> np.ndarray:
    """Inverse of :func:`encode_elias`: exactly ``n`` codewords filling ``buf`` up to zero padding.

    Raises :class:`MessageError` on a truncated stream, an invalid codeword, or trailing data.
    """
    code_id = _code_id(code)
    data = np.frombuffer(buf, dtype=np.uint8)
    out = np.empty(n, dtype=np.uint64)
    consumed = _decode(data, n, code_id, out)
    if consumed < 0:
        raise MessageError(f"Elias-{code} stream: codeword {-1 - consumed} of {n} is truncated or invalid")
    check_padding(data, consumed, f"Elias-{code} stream")
    return out


def check_padding(data: np.ndarray, consumed_bits: int, what: str) -> None:
    """A bit stream must end within its last byte and pad with zero bits; else :class:`MessageError`."""
    need = packed_nbytes(consumed_bits, 1)
    if data.size != need:
        raise MessageError(f"{what}: {data.size} bytes hold {consumed_bits} bits of codes, expected {need} bytes")
    if consumed_bits % 8 and int(data[-1]) >> (consumed_bits % 8):
        raise MessageError(f"{what}: nonzero padding bits after the last codeword")
