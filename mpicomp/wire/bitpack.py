"""Dense little-endian bit packing of unsigned b-bit integers (b = 1..32), in numba.

Value ``j`` occupies bits ``[j*b, (j+1)*b)`` of the byte stream, least significant bit
first; the last byte is zero-padded. A sign bitmap is the case b = 1, sparse indices the
case b = :func:`index_bits` (d).

Variable-length streams (Elias codes) use the inline accumulator helpers :func:`write_bits` /
:func:`flush_bits` / :func:`read_bits`, whose state is ``(acc, nacc, pos)``: a ``uint64`` bit
accumulator, the number of valid bits in it, and the next byte position.

Fixed widths go faster: ``CHUNK_VALUES = 32`` values of b bits fill exactly b 32-bit words, so
chunk ``c`` starts at word ``b c`` whatever b is, and chunks are independent. Kernels (here and
in the fused quantizers) pack a chunk with :func:`pack_chunk` / :func:`unpack_chunk` on uint32
words; generated with b as a compile-time constant, the chunk loop unrolls into constant shifts.
Kernels take a chunk range ``[c0, c1)`` and release the GIL, so :func:`run_chunks` splits long
vectors over ``numba.get_num_threads()`` Python threads (one serial kernel per width compiles
in half the time of a serial plus a ``prange`` variant; a thread hand-off costs tens of
microseconds, paid only above ``PARALLEL_MIN_CHUNKS`` chunks).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache, lru_cache

import numba
import numpy as np
from numba import njit, uint32, uint64

from .errors import MessageError

_U8 = np.uint64(8)
_U16 = np.uint64(16)
_U24 = np.uint64(24)
_U32 = np.uint64(32)
_BYTE = np.uint64(0xFF)
_ONE = np.uint64(1)

CHUNK_VALUES = 32
PARALLEL_MIN_CHUNKS = 4096  # below 128 Ki values one thread is faster than a hand-off to the pool
_COPY_BELOW_BYTES = 1 << 16  # packed sections up to 64 KiB are copied into words, not viewed


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
    """Threads to split a kernel over ``n`` values into: 1 for short vectors, else ``numba.get_num_threads()``."""
    return 1 if chunk_count(n) < PARALLEL_MIN_CHUNKS else numba.get_num_threads()


@lru_cache(maxsize=1)
def _executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=numba.config.NUMBA_NUM_THREADS, thread_name_prefix="mpicomp-kernel")


def run_split(kernel: Callable[..., int], count: int, ntasks: int, *args: object) -> int:
    """Call ``kernel(*args, lo, hi)`` on ``ntasks`` ranges covering ``[0, count)``, in threads if ``ntasks > 1``.

    Kernels return the first flagged index of their range or -1; the smallest flagged index of
    all ranges (or -1) is returned.
    """
    if ntasks <= 1 or count < 2:
        return kernel(*args, 0, count)
    bounds = [count * t // ntasks for t in range(ntasks + 1)]
    results = list(_executor().map(lambda t: kernel(*args, bounds[t], bounds[t + 1]), range(ntasks)))
    flagged = [r for r in results if r >= 0]
    return min(flagged) if flagged else -1


def run_chunks(kernel: Callable[..., int], n: int, *args: object) -> int:
    """:func:`run_split` over the chunks of ``n`` values, threaded for long vectors."""
    return run_split(kernel, chunk_count(n), parallel_tasks(n), *args)


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
def pack_chunk(codes, words, w, bits):
    """Pack the ``CHUNK_VALUES`` codes of ``codes`` (each ``< 2**bits``) into ``words[w : w + bits]``.

    ``words`` is a uint32 view of the output. Inlined into kernels where ``bits`` is a
    compile-time constant, the loop unrolls into straight-line shifts (several times faster).
    """
    acc = uint64(0)
    nacc = 0
    for k in range(CHUNK_VALUES):
        acc |= uint64(codes[k]) << uint64(nacc)
        nacc += bits
        if nacc >= 32:
            words[w] = uint32(acc)
            w += 1
            acc >>= _U32
            nacc -= 32


@njit(cache=True, inline="always")
def unpack_chunk(words, w, bits, codes):
    """Inverse of :func:`pack_chunk`: the ``CHUNK_VALUES`` codes stored in ``words[w : w + bits]``."""
    mask = (_ONE << uint64(bits)) - _ONE
    acc = uint64(0)
    nacc = 0
    for k in range(CHUNK_VALUES):
        if nacc < bits:
            acc |= uint64(words[w]) << uint64(nacc)
            w += 1
            nacc += 32
        codes[k] = acc & mask
        acc >>= uint64(bits)
        nacc -= bits


def word_buffer(n: int, bits: int) -> np.ndarray:
    """Uninitialised uint32 output for ``n`` values: whole chunks, ``bits`` words each."""
    return np.empty(chunk_count(n) * bits, dtype=np.uint32)


def packed_words(buf: np.ndarray, n: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """The packed bytes of ``n`` values of ``bits`` bits as read-only uint32 words ``(main, tail)``.

    ``main`` holds the whole chunks, ``tail`` the last, partial chunk zero-padded to ``bits``
    words (see :func:`chunk_words`). Short buffers are copied into one zero-padded array (then
    ``main is tail``); long ones are viewed in place (copied only if not 4-byte aligned).
    ``buf`` (uint8) must hold exactly ``packed_nbytes(n, bits)`` bytes (checked by the caller).
    """
    if buf.size <= _COPY_BELOW_BYTES:
        words = np.zeros(chunk_count(n) * bits, dtype=np.uint32)
        words.view(np.uint8)[: buf.size] = buf
        words.flags.writeable = False
        return words, words
    full = n // CHUNK_VALUES * bits * 4
    main = buf[:full].view(np.uint32)
    if not main.flags.aligned:
        main = main.copy()
    main.flags.writeable = False  # one read-only array type for every caller: one compiled kernel
    tail = np.zeros(bits, dtype=np.uint32)
    tail.view(np.uint8)[: buf.size - full] = buf[full:]
    tail.flags.writeable = False
    return main, tail


@njit(cache=True, inline="always")
def chunk_words(main, tail, c, bits):
    """Words array and first word of chunk ``c`` in a :func:`packed_words` pair."""
    w = c * bits
    if w < main.size:
        return main, w
    return tail, 0


@cache
def _packer(bits: int) -> Callable[..., int]:
    """Kernel ``(values, words, c0, c1) -> first value >= 2**bits or -1`` with ``bits`` compiled in."""

    @njit(cache=True, nogil=True)
    def pack_range(values, words, c0, c1):
        codes = np.empty(CHUNK_VALUES, dtype=np.uint64)
        bad = -1
        n = values.size
        for c in range(c0, c1):
            lo = c * CHUNK_VALUES
            m = min(CHUNK_VALUES, n - lo)
            seen = uint64(0)
            for k in range(m):
                codes[k] = uint64(values[lo + k])
                seen |= codes[k]
            for k in range(m, CHUNK_VALUES):
                codes[k] = 0
            if seen >> uint64(bits) and bad < 0:
                for k in range(m):
                    if codes[k] >> uint64(bits):
                        bad = lo + k
                        break
            pack_chunk(codes, words, c * bits, bits)
        return bad

    return pack_range


@cache
def _unpacker(bits: int) -> Callable[..., int]:
    """Kernel ``(main, tail, out, c0, c1) -> -1`` with ``bits`` compiled in."""

    @njit(cache=True, nogil=True)
    def unpack_range(main, tail, out, c0, c1):
        codes = np.empty(CHUNK_VALUES, dtype=np.uint64)
        n = out.size
        for c in range(c0, c1):
            words, w = chunk_words(main, tail, c, bits)
            unpack_chunk(words, w, bits, codes)
            lo = c * CHUNK_VALUES
            for k in range(min(CHUNK_VALUES, n - lo)):
                out[lo + k] = codes[k]
        return -1

    return unpack_range


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= 32:
        raise ValueError(f"bits per value must be in 1..32, got {bits}")


def pack_uint(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack non-negative integers ``< 2**bits`` densely; returns a uint8 array."""
    _check_bits(bits)
    values = np.ascontiguousarray(values).reshape(-1)
    if values.dtype == np.bool_:
        values = values.view(np.uint8)
    if values.dtype.kind not in "iu":
        raise ValueError(f"pack_uint packs integer arrays, got dtype {values.dtype}")
    words = word_buffer(values.size, bits)
    bad = run_chunks(_packer(bits), values.size, values, words)
    if bad >= 0:
        raise ValueError(
            f"values must lie in [0, 2**{bits}) to be packed with {bits} bits; value[{bad}] = {values[bad]}"
        )
    return words.view(np.uint8)[: packed_nbytes(values.size, bits)]


def unpack_uint(buf: np.ndarray | bytes | memoryview, n: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_uint`; raises :class:`MessageError` if ``buf`` is too short or too long."""
    _check_bits(bits)
    data = np.frombuffer(buf, dtype=np.uint8)
    need = packed_nbytes(n, bits)
    if data.size != need:
        raise MessageError(f"bit-packed section holds {data.size} bytes, {n} values of {bits} bits need {need}")
    out = np.empty(n, dtype=np.uint32)
    main, tail = packed_words(data, n, bits)
    run_chunks(_unpacker(bits), n, main, tail, out)
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
