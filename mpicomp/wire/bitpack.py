"""Dense little-endian bit packing of unsigned b-bit integers (b = 1..32), in numba.

Value ``j`` occupies bits ``[j*b, (j+1)*b)`` of the byte stream, least significant bit
first; the last byte is zero-padded. A sign bitmap is the case b = 1, sparse indices the
case b = :func:`index_bits` (d).

Fused encoders (which quantize and pack in one pass) use the same layout through
:class:`BitWriter`-style inline helpers :func:`write_bits` / :func:`read_bits` on a
``uint64`` accumulator.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

from .errors import MessageError

_U8 = np.uint64(8)
_U16 = np.uint64(16)
_U24 = np.uint64(24)
_U32 = np.uint64(32)
_BYTE = np.uint64(0xFF)


def packed_nbytes(n: int, bits: int) -> int:
    """Bytes needed for ``n`` values of ``bits`` bits: ``ceil(n * bits / 8)``."""
    return (n * bits + 7) // 8


def index_bits(d: int) -> int:
    """Bits per sparse index in a vector of dimension d: ``max(1, ceil(log2 d))``."""
    return max(1, int(d - 1).bit_length())


@njit(cache=True, inline="always")
def write_bits(out, state, value, bits):
    """Append the low ``bits`` (<= 32) bits of ``value``; ``state = (acc, nacc, pos)``.

    Flushes whole 32-bit words to ``out`` (a uint8 array); call :func:`flush_bits` at the end.
    """
    acc, nacc, pos = state
    acc |= (uint64(value) & ((uint64(1) << uint64(bits)) - uint64(1))) << uint64(nacc)
    nacc += bits
    if nacc >= 32:
        out[pos] = acc & _BYTE
        out[pos + 1] = (acc >> _U8) & _BYTE
        out[pos + 2] = (acc >> _U16) & _BYTE
        out[pos + 3] = (acc >> _U24) & _BYTE
        acc >>= _U32
        nacc -= 32
        pos += 4
    return acc, nacc, pos


@njit(cache=True, inline="always")
def flush_bits(out, state):
    """Write the remaining ``< 32`` accumulated bits; returns the number of bytes written."""
    acc, nacc, pos = state
    while nacc > 0:
        out[pos] = acc & _BYTE
        acc >>= _U8
        nacc -= 8
        pos += 1
    return pos


@njit(cache=True, inline="always")
def read_bits(buf, state, bits):
    """Read the next ``bits`` (<= 32) bits; ``state = (acc, nacc, pos)``. Returns (value, state).

    The caller guarantees that ``buf`` holds enough bytes (checked once, before the loop).
    """
    acc, nacc, pos = state
    while nacc < bits:
        byte = uint64(buf[pos]) if pos < buf.size else uint64(0)
        acc |= byte << uint64(nacc)
        nacc += 8
        pos += 1
    value = acc & ((uint64(1) << uint64(bits)) - uint64(1))
    acc >>= uint64(bits)
    nacc -= bits
    return value, (acc, nacc, pos)


@njit(cache=True)
def _pack(values, bits, out):
    state = (uint64(0), 0, 0)
    for i in range(values.size):
        state = write_bits(out, state, values[i], bits)
    flush_bits(out, state)


@njit(cache=True)
def _unpack(buf, n, bits, out):
    state = (uint64(0), 0, 0)
    for i in range(n):
        value, state = read_bits(buf, state, bits)
        out[i] = value


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= 32:
        raise ValueError(f"bits per value must be in 1..32, got {bits}")


def pack_uint(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack non-negative integers ``< 2**bits`` densely; returns a uint8 array."""
    _check_bits(bits)
    values = np.ascontiguousarray(values)
    if values.size and (values.min() < 0 or int(values.max()) >> bits):
        raise ValueError(f"values must lie in [0, 2**{bits}) to be packed with {bits} bits")
    out = np.zeros(packed_nbytes(values.size, bits), dtype=np.uint8)
    _pack(values.astype(np.uint64, copy=False), bits, out)
    return out


def unpack_uint(buf: np.ndarray | bytes | memoryview, n: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_uint`; raises :class:`MessageError` if ``buf`` is too short or too long."""
    _check_bits(bits)
    data = np.frombuffer(buf, dtype=np.uint8)
    need = packed_nbytes(n, bits)
    if data.size != need:
        raise MessageError(f"bit-packed section holds {data.size} bytes, {n} values of {bits} bits need {need}")
    out = np.empty(n, dtype=np.uint32)
    _unpack(data, n, bits, out)
    return out


def pack_signs(negative: np.ndarray) -> np.ndarray:
    """Sign bitmap: bit ``j`` is 1 where ``negative[j]`` is true."""
    return np.packbits(np.asarray(negative, dtype=bool), bitorder="little")


def unpack_signs(buf: np.ndarray | bytes | memoryview, n: int) -> np.ndarray:
    """Inverse of :func:`pack_signs` (boolean array, True = negative)."""
    data = np.frombuffer(buf, dtype=np.uint8)
    if data.size != packed_nbytes(n, 1):
        raise MessageError(f"sign bitmap holds {data.size} bytes, {n} signs need {packed_nbytes(n, 1)}")
    return np.unpackbits(data, count=n, bitorder="little").astype(bool)
