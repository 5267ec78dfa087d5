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

Writers append codewords through bitpack's register writer (``append_bits``), readers look ahead
with ``peek_bits``; :func:`codeword_table` gives the codewords of small integers in one load, for
kernels that code many of them. Readers take the stream size in bits, never read
past the end, and return an ``ok`` flag instead of raising, so a malformed stream becomes a
:class:`MessageError` in Python.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from numba import njit, uint64
from numba.cpython.unsafe.numbers import leading_zeros, trailing_zeros

from .bitpack import append_bits, finish_bits, packed_nbytes, padded, peek_bits
from .errors import MessageError

GAMMA = 0
OMEGA = 1
ELIAS_CODES = {"gamma": GAMMA, "omega": OMEGA}
MAX_ELIAS = 2**32  # largest codable integer: a gap of d + 1 for the largest u32 dimension
_MAX_GROUP_BITS = 33  # bit length of MAX_ELIAS
_GROUP_MASK = np.uint64((1 << _MAX_GROUP_BITS) - 1)
_ONE = np.uint64(1)
CODEWORD_TABLE = 1 << 13  # encoder table entries: every level of QSGD up to s = 8191


@njit(cache=True, inline="always")
def bit_length(n):
    """Number of bits of ``n >= 1``: ``floor(log2 n) + 1``."""
    return 64 - int(leading_zeros(uint64(n)))  # type: ignore[call-arg]  # numba's stubs give intrinsics a typingctx parameter


@njit(cache=True, inline="always")
def _low_bits(n, k):
    """The ``k < 64`` bits of ``n`` below bit k."""
    return uint64(n) & ((_ONE << uint64(k)) - _ONE)


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


@njit(cache=True, inline="always")
def omega_word(n):
    """The Elias omega codeword of ``1 <= n <= MAX_ELIAS`` as ``(word, length)``, its first bit in bit
    0 of ``word``; at most 45 bits. Built from the end: the final zero bit, then each group
    prepended (lower bits first)."""
    n = uint64(n)
    word = uint64(0)
    length = 1
    while n > 1:
        k = bit_length(n) - 1
        word = _ONE | (_low_bits(n, k) << _ONE) | (word << uint64(k + 1))
        length += k + 1
        n = uint64(k)
    return word, length


@njit(cache=True, inline="always")
def append_elias(out, acc, fill, byte, n, code):
    """Append the ``code`` codeword of ``1 <= n <= MAX_ELIAS`` with bitpack's ``append_bits``;
    returns the new ``(acc, fill, byte)``."""
    if code == GAMMA:  # k zero bits, then the one bit and the k low bits (two fields: up to 65 bits)
        k = bit_length(n) - 1
        acc, fill, byte = append_bits(out, acc, fill, byte, uint64(0), k)
        return append_bits(out, acc, fill, byte, _ONE | (_low_bits(n, k) << _ONE), k + 1)
    word, length = omega_word(n)
    return append_bits(out, acc, fill, byte, word, length)


@njit(cache=True, inline="always")
def read_elias(buf, position, total, code):
    """Read one codeword at bit ``position`` of a stream of ``total`` bits in ``buf`` (padded: see
    ``peek_bits``); returns ``(n, position after it, ok)``. ``ok`` is False on a truncated stream (the
    codeword passes ``total`` bits) or a codeword for an integer above MAX_ELIAS."""
    if code == GAMMA:
        window = peek_bits(buf, position)
        if window & _GROUP_MASK == 0:  # 33 zeros or more: longer than any valid prefix
            return uint64(0), position, False
        zeros = int(trailing_zeros(window))  # type: ignore[call-arg]  # numba's stubs give intrinsics a typingctx parameter
        end = position + 2 * zeros + 1
        if end > total:
            return uint64(0), position, False
        n = (_ONE << uint64(zeros)) | _low_bits(peek_bits(buf, position + zeros + 1), zeros)
        return n, end, n <= uint64(MAX_ELIAS)
    n = _ONE
    while True:
        if position >= total:
            return uint64(0), position, False
        window = peek_bits(buf, position)  # the flag bit and up to 33 more bits: within the 57 valid
        if window & _ONE == 0:
            return n, position + 1, n <= uint64(MAX_ELIAS)
        if n >= uint64(_MAX_GROUP_BITS):
            return uint64(0), position, False
        width = int(n)
        if position + 1 + width > total:
            return uint64(0), position, False
        n = (_ONE << n) | _low_bits(window >> _ONE, width)
        position += 1 + width


@njit(cache=True)
def _codeword_table(code, size, table):
    """``table[n] = word << 8 | length`` for ``1 <= n < size`` (for size 2^13, at most 25 bits)."""
    for n in range(1, size):
        if code == GAMMA:
            k = bit_length(n) - 1
            word, length = (_ONE | (_low_bits(n, k) << _ONE)) << uint64(k), 2 * k + 1
        else:
            word, length = omega_word(n)
        table[n] = (word << uint64(8)) | uint64(length)


@cache
def codeword_table(code: int) -> np.ndarray:
    """Encoder lookup table: ``table[n] = word << 8 | length``, the codeword of each ``n < CODEWORD_TABLE``
    as :func:`append_bits` takes it (``table[0]`` is unused)."""
    table = np.zeros(CODEWORD_TABLE, dtype=np.uint64)
    _codeword_table(code, CODEWORD_TABLE, table)
    return table


@njit(cache=True)
def _lengths(values, code, out):
    for i in range(values.size):
        out[i] = elias_bits(values[i], code)


@njit(cache=True)
def _encode(values, code, out):
    """Write the codewords of ``values`` into ``out``; returns the stream length in bits."""
    acc, fill, byte = uint64(0), 0, 0
    for i in range(values.size):
        acc, fill, byte = append_elias(out, acc, fill, byte, values[i], code)
    return finish_bits(out, acc, fill, byte)


@njit(cache=True)
def _decode(buf, total, n, code, out):
    """Fill ``out[:n]`` from the ``total`` bits of the padded ``buf``; returns the number of bits
    consumed, or -1 - i if codeword i is invalid."""
    position = 0
    for i in range(n):
        value, position, ok = read_elias(buf, position, total, code)
        if not ok:
            return -1 - i
        out[i] = value
    return position


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
    out = np.empty(packed_nbytes(int(elias_code_bits(values, code).sum()), 1) + 8, dtype=np.uint8)
    return out[: packed_nbytes(_encode(values, _code_id(code), out), 1)]


def decode_elias(buf: np.ndarray | bytes | memoryview, n: int, code: str = "omega") -> np.ndarray:
    """Inverse of :func:`encode_elias`: exactly ``n`` codewords filling ``buf`` up to zero padding.

    Raises :class:`MessageError` on a truncated stream, an invalid codeword, or trailing data.
    """
    code_id = _code_id(code)
    data = np.frombuffer(buf, dtype=np.uint8)
    out = np.empty(n, dtype=np.uint64)
    consumed = _decode(padded(data), 8 * data.size, n, code_id, out)
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
