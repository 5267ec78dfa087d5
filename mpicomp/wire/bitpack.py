"""Dense little-endian bit packing of unsigned b-bit integers (b = 1..32), in numba.

Value ``j`` occupies bits ``[j*b, (j+1)*b)`` of the byte stream, least significant bit
first; the last byte is zero-padded. A sign bitmap is the case b = 1, sparse indices the
case b = :func:`index_bits` (d).

Fused encoders (which quantize and pack in one pass) use the same layout through the
inline accumulator helpers :func:`write_bits` / :func:`flush_bits` / :func:`read_bits`,
whose state is ``(acc, nacc, pos)``: a ``uint64`` bit accumulator, the number of valid bits
in it, and the next byte position.

Speed: ``CHUNK_VALUES = 32`` values of b bits fill exactly b 32-bit words, so chunk ``c``
starts at byte ``4 b c`` whatever b is. Chunks are independent, which lets kernels pack or
unpack them in parallel (``prange`` over groups of chunks) and, inside a full chunk, read
whole words with :func:`read_word_bits`. :func:`parallel_tasks` picks the number of tasks
(0 = run serially: for short vectors a thread launch costs more than the work).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange, uint64

from .errors import MessageError

_U8 = np.uint64(8)
_U16 = np.uint64(16)
_U24 = np.uint64(24)
_U32 = np.uint64(32)
_BYTE = np.uint64(0xFF)
_ONE = np.uint64(1)

CHUNK_VALUES = 32
PARALLEL_MIN_CHUNKS = 2048  # below 64 Ki values one thread is faster than a parallel launch
TASKS_PER_THREAD = 4


def packed_nbytes(n: int, bits: int) -> int:
    """Bytes needed for ``n`` values of ``bits`` bits: ``ceil(n * bits / 8)``."""
    return (n * bits + 7) // 8


def index_bits(d: int) -> int:
    """Bits per sparse index in a vector of dimension d: ``max(1, ceil(log2 d))``."""
    return max(1, int(d - 1).bit_length())


def chunk_count(n: int) -> int:
    """Number of ``CHUNK_VALUES``-value chunks covering ``n`` values (the last may be partial)."""
    return (n + CHUNK_VALUES - 1) // CHUNK_VALUES


def parallel_tasks(n: int) -> int:
    """Parallel tasks for a kernel over ``n`` values: 0 (serial) for short vectors, else a few per thread."""
    chunks = chunk_count(n)
    if chunks < PARALLEL_MIN_CHUNKS or numba.get_num_threads() < 2:
        return 0
    return min(chunks, TASKS_PER_THREAD * numba.get_num_threads())


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

    Refills byte by byte, so afterwards ``pos`` is the number of bytes touched. Reads past the
    end of ``buf`` yield zero bits; the caller checks the buffer size once, before the loop.
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


@njit(cache=True, inline="always")
def read_word_bits(buf, state, bits):
    """:func:`read_bits` refilling a whole little-endian 32-bit word at a time (no bounds test).

    Only for the inside of a full chunk: ``CHUNK_VALUES`` reads of ``bits`` bits started at the
    chunk's first byte consume exactly its ``bits`` words, so no refill passes the chunk's end.
    """
    acc, nacc, pos = state
    if nacc < bits:
        word = uint64(buf[pos]) | (uint64(buf[pos + 1]) << _U8) | (uint64(buf[pos + 2]) << _U16)
        word |= uint64(buf[pos + 3]) << _U24
        acc |= word << uint64(nacc)
        nacc += 32
        pos += 4
    value = acc & ((uint64(1) << uint64(bits)) - uint64(1))
    acc >>= uint64(bits)
    nacc -= bits
    return value, (acc, nacc, pos)


@njit(cache=True, inline="always")
def chunk_state(chunk, bits):
    """Fresh accumulator state positioned at the first byte of chunk ``chunk``."""
    return uint64(0), 0, 4 * bits * chunk


@njit(cache=True, inline="always")
def task_chunks(task, ntasks, nchunks):
    """The chunk range ``[c0, c1)`` of parallel task ``task`` out of ``ntasks``."""
    return nchunks * task // ntasks, nchunks * (task + 1) // ntasks


@njit(cache=True)
def first_flagged(flags):
    """Smallest non-negative entry of ``flags`` (per-task first bad index), or -1 if none."""
    best = -1
    for f in flags:
        if f >= 0 and (best < 0 or f < best):
            best = f
    return best


@njit(cache=True)
def _pack_range(values, bits, out, c0, c1):
    """Pack the values of chunks ``[c0, c1)``; returns the first index of a value ``>= 2**bits`` or -1."""
    bad = -1
    n = values.size
    for c in range(c0, c1):
        state = chunk_state(c, bits)
        for i in range(c * CHUNK_VALUES, min(n, (c + 1) * CHUNK_VALUES)):
            value = uint64(values[i])
            if value >> uint64(bits) and bad < 0:
                bad = i
            state = write_bits(out, state, value, bits)
        flush_bits(out, state)
    return bad


@njit(cache=True, parallel=True)
def _pack_parallel(values, bits, out, ntasks):
    nchunks = (values.size + CHUNK_VALUES - 1) // CHUNK_VALUES
    flags = np.empty(ntasks, dtype=np.int64)
    for t in prange(ntasks):
        c0, c1 = task_chunks(t, ntasks, nchunks)
        flags[t] = _pack_range(values, bits, out, c0, c1)
    return first_flagged(flags)


@njit(cache=True)
def _unpack_range(buf, n, bits, out, c0, c1):
    """Unpack the values of chunks ``[c0, c1)`` of ``n`` values into ``out``."""
    for c in range(c0, c1):
        state = chunk_state(c, bits)
        lo = c * CHUNK_VALUES
        if lo + CHUNK_VALUES <= n:
            for i in range(lo, lo + CHUNK_VALUES):
                value, state = read_word_bits(buf, state, bits)
                out[i] = value
        else:
            for i in range(lo, n):
                value, state = read_bits(buf, state, bits)
                out[i] = value


@njit(cache=True, parallel=True)
def _unpack_parallel(buf, n, bits, out, ntasks):
    nchunks = (n + CHUNK_VALUES - 1) // CHUNK_VALUES
    for t in prange(ntasks):
        c0, c1 = task_chunks(t, ntasks, nchunks)
        _unpack_range(buf, n, bits, out, c0, c1)


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= 32:
        raise ValueError(f"bits per value must be in 1..32, got {bits}")


def pack_uint(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack non-negative integers ``< 2**bits`` densely; returns a uint8 array."""
    _check_bits(bits)
    values = np.ascontiguousarray(values)
    if values.dtype == np.bool_:
        values = values.view(np.uint8)
    if values.dtype.kind not in "iu":
        raise ValueError(f"pack_uint packs integer arrays, got dtype {values.dtype}")
    values = values.reshape(-1)
    out = np.empty(packed_nbytes(values.size, bits), dtype=np.uint8)
    ntasks = parallel_tasks(values.size)
    if ntasks:
        bad = _pack_parallel(values, bits, out, ntasks)
    else:
        bad = _pack_range(values, bits, out, 0, chunk_count(values.size))
    if bad >= 0:
        raise ValueError(f"values must lie in [0, 2**{bits}) to be packed with {bits} bits; value[{bad}] = {values[bad]}")
    return out


def unpack_uint(buf: np.ndarray | bytes | memoryview, n: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_uint`; raises :class:`MessageError` if ``buf`` is too short or too long."""
    _check_bits(bits)
    data = np.frombuffer(buf, dtype=np.uint8)
    need = packed_nbytes(n, bits)
    if data.size != need:
        raise MessageError(f"bit-packed section holds {data.size} bytes, {n} values of {bits} bits need {need}")
    out = np.empty(n, dtype=np.uint32)
    ntasks = parallel_tasks(n)
    if ntasks:
        _unpack_parallel(data, n, bits, out, ntasks)
    else:
        _unpack_range(data, n, bits, out, 0, chunk_count(n))
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
