"""Dense little-endian bit packing of unsigned b-bit integers (b = 1..32), in numba.

Value ``j`` occupies bits ``[j*b, (j+1)*b)`` of the byte stream, least significant bit
first; the last byte is zero-padded. A sign bitmap is the case b = 1, sparse indices the
case b = :func:`index_bits` (d).

Variable-length streams keep a bit position: :func:`put_bits` ORs a field into a zeroed buffer
with one unaligned 64-bit load and store (no branch), :func:`append_bits` appends through a 64-bit
register, storing as it goes (for long streams of short fields, such as Elias codes), and
:func:`peek_bits` reads the next 57 or more bits at once from a buffer with 8 bytes of slack
(:func:`padded`).

Fixed widths go faster: ``CHUNK_VALUES = 32`` values of b bits fill exactly b 32-bit words, so
chunk ``c`` starts at word ``b c`` whatever b is, and chunks are independent. Kernels pack a
chunk with :func:`pack_chunk` / :func:`unpack_chunk` on uint32 words; generated with b as a
compile-time constant, the chunk loop unrolls into constant shifts. Kernels take a chunk range
``[c0, c1)`` and release the GIL, so :func:`run_chunks` splits long vectors over
``numba.get_num_threads()`` Python threads (one serial kernel per width compiles in half the time
of a serial plus a ``prange`` variant; a thread hand-off costs tens of microseconds, paid only
above ``PARALLEL_MIN_CHUNKS`` chunks).

Bit planes of ``GROUP = 64`` integers (the layout of the sign + level quantizers): the intrinsics
:func:`plane_word` (bit t of 64 integers as one uint64 word: a vector compare and a mask move),
:func:`set_plane` / :func:`or_plane` (the inverse) and :func:`nonzero_word` (the mask of the
nonzero ones) work on any integer array, with no bounds check.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache, lru_cache
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import njit, uint8, uint32, uint64
from numba.core import types
from numba.extending import intrinsic

from .errors import MessageError

_U32 = np.uint64(32)
_ONE = np.uint64(1)

CHUNK_VALUES = 32
GROUP = 64  # integers per bit-plane word (plane_word, nonzero_word, set_plane, or_plane)
PARALLEL_MIN_CHUNKS = 4096  # below 128 Ki values one thread is faster than a hand-off to the pool
_COPY_BELOW_BYTES = 1 << 16  # packed sections up to 64 KiB are copied into words, not viewed


def llvm_intrinsic(typer: Callable[..., object]) -> Callable[..., Any]:
    """numba's ``@intrinsic``: ``typer(typingctx, *arg_types) -> (signature, codegen)`` becomes a function of
    the arguments alone, callable from jitted code (numba's stubs type the call with ``typingctx``)."""
    return intrinsic(typer)


def packed_nbytes(n: int, bits: int) -> int:
    """Bytes needed for ``n`` values of ``bits`` bits: ``ceil(n * bits / 8)``."""
    return (n * bits + 7) // 8


def index_bits(d: int) -> int:
    """Bits per sparse index in a vector of dimension d: ``max(1, ceil(log2 d))``."""
    return max(1, int(d - 1).bit_length())


def chunk_count(n: int) -> int:
    """Number of ``CHUNK_VALUES``-value chunks covering ``n`` values (the last may be partial)."""
    return (n + CHUNK_VALUES - 1) // CHUNK_VALUES


@njit(cache=True, inline="always")
def group_count(n):
    """Groups of ``GROUP`` values covering ``n`` values, the last one possibly partial."""
    return (n + GROUP - 1) // GROUP


def parallel_tasks(n: int) -> int:
    """Threads to split a kernel over ``n`` values into: 1 for short vectors, else ``numba.get_num_threads()``."""
    return 1 if chunk_count(n) < PARALLEL_MIN_CHUNKS else numba.get_num_threads()


@lru_cache(maxsize=1)
def _executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=numba.config.NUMBA_NUM_THREADS, thread_name_prefix="mpicomp-kernel")  # type: ignore[attr-defined]  # numba.config sets its options at import time, untyped


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
def load_u64(buf, pos):
    """The little-endian uint64 at bytes ``buf[pos : pos + 8]`` (one unaligned load once compiled)."""
    start = uint64(pos)  # unsigned indices: no negative-index wraparound, so the loads combine
    word = uint64(0)
    for k in range(8):
        word |= uint64(buf[start + uint64(k)]) << uint64(8 * k)
    return word


@njit(cache=True, inline="always")
def store_u64(out, pos, word):
    """Write ``word`` little-endian to ``out[pos : pos + 8]`` (one unaligned store once compiled)."""
    start = uint64(pos)  # unsigned indices: no negative-index wraparound, so the stores combine
    for k in range(8):
        out[start + uint64(k)] = uint8(word >> uint64(8 * k))


@njit(cache=True, inline="always")
def store_chunk(out, pos, words):
    """Write the uint32 ``words`` little-endian to the bytes ``out`` from byte ``pos`` on, as far as
    ``out`` reaches (a packed section's last, partial chunk); word by word where all of them fit."""
    start = uint64(pos)  # unsigned indices: no negative-index wraparound, so the stores combine
    if pos + 4 * words.size <= out.size:
        for w in range(words.size):
            for k in range(4):
                out[start + uint64(4 * w + k)] = uint8(words[w] >> uint32(8 * k))
    else:
        for b in range(out.size - pos):
            out[start + uint64(b)] = uint8(words[b >> 2] >> uint32(8 * (b & 3)))


@njit(cache=True, inline="always")
def load_chunk(buf, pos, words):
    """Inverse of :func:`store_chunk`: ``words`` from the bytes ``buf`` at ``pos``, zero past its end."""
    start = uint64(pos)
    if pos + 4 * words.size <= buf.size:
        for w in range(words.size):
            word = uint32(0)
            for k in range(4):
                word |= uint32(buf[start + uint64(4 * w + k)]) << uint32(8 * k)
            words[w] = word
    else:
        words[:] = 0
        for b in range(buf.size - pos):
            words[b >> 2] |= uint32(buf[start + uint64(b)]) << uint32(8 * (b & 3))


_LOW_BYTES = np.uint64(0x00FF00FF00FF00FF)
_LOW_PAIRS = np.uint64(0x0000FFFF0000FFFF)
_LOW_QUADS = np.uint64(0x00000000FFFFFFFF)


@njit(cache=True, inline="always")
def pack_octets(octets, count, out, pos, limit, bits):
    """Pack ``8 count`` byte codes (each ``< 2**bits``, ``bits <= 8``), read 8 at a time as the
    little-endian words ``octets[:count]``, densely into ``out`` from byte ``pos`` on, writing no
    byte at or past ``limit``: the layout of :func:`pack_chunk`, 8 codes making exactly ``bits``
    bytes. Each word is squeezed in three shift-and-mask steps (pairs, quads, octets: a loop that
    vectorizes), then stored with one unaligned 8-byte store whose spare bytes the next overwrites."""
    for o in range(count):
        word = octets[o]
        word = (word & _LOW_BYTES) | ((word & ~_LOW_BYTES) >> uint64(8 - bits))
        word = (word & _LOW_PAIRS) | ((word & ~_LOW_PAIRS) >> uint64(16 - 2 * bits))
        octets[o] = (word & _LOW_QUADS) | ((word & ~_LOW_QUADS) >> uint64(32 - 4 * bits))
    for o in range(count):
        at = pos + bits * o
        if at + 8 <= limit:
            store_u64(out, at, octets[o])
        else:
            for k in range(min(bits, limit - at)):
                out[at + k] = uint8(octets[o] >> uint64(8 * k))


@njit(cache=True, inline="always")
def unpack_octets(packed, pos, count, bits, octets):
    """Inverse of :func:`pack_octets`: the ``8 count`` byte codes of ``bits`` bits (``bits <= 8``)
    packed densely in ``packed`` from byte ``pos`` on, into ``octets[:count]`` (uint64 words of 8 codes
    each; bytes past the end of ``packed`` read as 0). Each group of ``bits`` bytes is one unaligned
    8-byte load, spread by the three shift-and-mask steps of the packer undone (a loop that vectorizes)."""
    low_byte = (_ONE << uint64(bits)) - _ONE
    keep = (_ONE << uint64(8 * bits)) - _ONE if bits < 8 else ~uint64(0)
    spread_quads = (_ONE << uint64(4 * bits)) - _ONE
    spread_pairs = ((_ONE << uint64(2 * bits)) - _ONE) * uint64(0x0000000100000001)
    spread_bytes = low_byte * uint64(0x0001000100010001)
    whole = max(0, min(count, (packed.size - pos - 8) // bits + 1))  # groups whose 8-byte load fits
    for o in range(whole):
        octets[o] = load_u64(packed, pos + bits * o)
    for o in range(whole, count):
        at = pos + bits * o
        word = uint64(0)
        for k in range(max(0, min(8, packed.size - at))):
            word |= uint64(packed[at + k]) << uint64(8 * k)
        octets[o] = word
    for o in range(count):
        word = octets[o] & keep
        word = (word & spread_quads) | ((word >> uint64(4 * bits)) & spread_quads) << uint64(32)
        word = (word & spread_pairs) | ((word >> uint64(2 * bits)) & spread_pairs) << uint64(16)
        octets[o] = (word & spread_bytes) | ((word >> uint64(bits)) & spread_bytes) << uint64(8)


@njit(cache=True, inline="always")
def put_bits(out, position, value, bits):
    """OR ``value < 2**bits`` (``bits <= 57``) into the stream ``out`` at bit ``position``; returns
    the position after it. ``out`` (uint8) must be zeroed and have 8 bytes of room past the byte of
    ``position``; branch-free (one unaligned 64-bit load and store)."""
    pos = position >> 3
    store_u64(out, pos, load_u64(out, pos) | (uint64(value) << uint64(position & 7)))
    return position + bits


@njit(cache=True, inline="always")
def append_bits(out, acc, fill, byte, value, bits):
    """Append ``value < 2**bits`` (``bits <= 56``) to a stream written through a register: ``acc``
    holds the ``fill < 8`` bits not yet complete, which belong at byte ``byte`` of ``out``. Branch-free:
    the register is stored (8 bytes at ``byte``) and its whole bytes are dropped. Returns the new
    ``(acc, fill, byte)``.

    Unlike :func:`put_bits`, nothing is read back from ``out`` (a load overlapping the previous
    unaligned store at another offset cannot be forwarded and stalls), and ``out`` need not be
    zeroed; :func:`finish_bits` stores the last partial byte."""
    acc |= uint64(value) << uint64(fill)
    fill += bits
    store_u64(out, byte, acc)
    whole = fill >> 3
    return acc >> uint64(8 * whole), fill & 7, byte + whole


@njit(cache=True, inline="always")
def finish_bits(out, acc, fill, byte):
    """Store the register of :func:`append_bits` (8 bytes at ``byte``: ``out`` needs that room);
    returns the stream length in bits."""
    store_u64(out, byte, acc)
    return 8 * byte + fill


@njit(cache=True, inline="always")
def peek_bits(buf, position):
    """The stream's 64 bits from bit ``position`` on (bit 0 = bit ``position``), of which the low 57
    are valid; ``buf`` must have 8 readable bytes from byte ``position // 8`` on (see :func:`padded`)."""
    return load_u64(buf, position >> 3) >> uint64(position & 7)


def padded(data: np.ndarray) -> np.ndarray:
    """A copy of the bytes ``data`` followed by 8 zero bytes, for :func:`peek_bits` up to its end."""
    out = np.zeros(data.size + 8, dtype=np.uint8)
    out[: data.size] = data
    return out


def _group_pointer(context, builder, signature, args):
    """Pointer to the ``GROUP`` integers ``array[start : start + GROUP]`` (the first two arguments)
    as one LLVM vector, and the LLVM type of an element."""
    array_type = signature.args[0]
    data = context.make_array(array_type)(context, builder, args[0]).data
    element = context.get_data_type(array_type.dtype)
    pointer = builder.gep(data, [context.cast(builder, args[1], signature.args[1], types.intp)])
    return builder.bitcast(pointer, ir.VectorType(element, GROUP).as_pointer()), element


def _splat(builder, value, element):
    """The vector of ``GROUP`` copies of the scalar ``value`` (of LLVM type ``element``)."""
    vector = ir.VectorType(element, GROUP)
    single = builder.insert_element(ir.Constant(vector, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(single, single, ir.Constant(ir.VectorType(ir.IntType(32), GROUP), [0] * GROUP))


def _group_array(array) -> bool:
    return isinstance(array, types.Array) and array.ndim == 1 and isinstance(array.dtype, types.Integer)


@llvm_intrinsic
def plane_word(typingctx, codes, start, bit):
    """``sum_j ((codes[start + j] >> bit) & 1) << j`` over ``j < GROUP = 64``: bit plane ``bit`` of 64
    integer codes as one uint64 word (a vector compare and mask move; no bounds check)."""
    if not (_group_array(codes) and isinstance(start, types.Integer) and isinstance(bit, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        pointer, element = _group_pointer(context, builder, signature, args)
        values = builder.load(pointer, align=1)
        shift = context.cast(builder, args[2], signature.args[2], signature.args[0].dtype)
        selected = builder.and_(values, _splat(builder, builder.shl(ir.Constant(element, 1), shift), element))
        hit = builder.icmp_unsigned("!=", selected, ir.Constant(values.type, None))
        return builder.bitcast(hit, ir.IntType(GROUP))

    return types.uint64(codes, start, bit), codegen


@llvm_intrinsic
def nonzero_word(typingctx, values, start):
    """``sum_j [values[start + j] != 0] << j`` over ``j < GROUP = 64``: the nonzero mask of 64
    integers as one uint64 word (no bounds check)."""
    if not (_group_array(values) and isinstance(start, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        pointer, _ = _group_pointer(context, builder, signature, args)
        loaded = builder.load(pointer, align=1)
        nonzero = builder.icmp_unsigned("!=", loaded, ir.Constant(loaded.type, None))
        return builder.bitcast(nonzero, ir.IntType(GROUP))

    return types.uint64(values, start), codegen


def _spread_plane(accumulate: bool):
    """Codegen of ``(codes, start, word, bit)``: the 64 bits of ``word`` as integers shifted left by
    ``bit``, stored to (``accumulate``: ORed into) ``codes[start : start + 64]``."""

    def codegen(context, builder, signature, args):
        pointer, element = _group_pointer(context, builder, signature, args)
        word = context.cast(builder, args[2], signature.args[2], types.uint64)
        bits = builder.bitcast(word, ir.VectorType(ir.IntType(1), GROUP))
        shift = context.cast(builder, args[3], signature.args[3], signature.args[0].dtype)
        plane = builder.shl(builder.zext(bits, pointer.type.pointee), _splat(builder, shift, element))
        if accumulate:
            plane = builder.or_(builder.load(pointer, align=1), plane)
        builder.store(plane, pointer, align=1)
        return context.get_dummy_value()

    return codegen


@llvm_intrinsic
def set_plane(typingctx, codes, start, word, bit):
    """``codes[start + j] = ((word >> j) & 1) << bit`` for ``j < GROUP = 64`` (no bounds check)."""
    if not (_group_array(codes) and all(isinstance(t, types.Integer) for t in (start, word, bit))):
        return None
    return types.void(codes, start, word, bit), _spread_plane(False)


@llvm_intrinsic
def or_plane(typingctx, codes, start, word, bit):
    """``codes[start + j] |= ((word >> j) & 1) << bit`` for ``j < GROUP = 64``: the inverse of
    :func:`plane_word`, one plane at a time (no bounds check)."""
    if not (_group_array(codes) and all(isinstance(t, types.Integer) for t in (start, word, bit))):
        return None
    return types.void(codes, start, word, bit), _spread_plane(True)


@njit(cache=True, inline="always")
def pack_chunk(codes, first, words, w, bits):
    """Pack the ``CHUNK_VALUES`` codes ``codes[first : first + CHUNK_VALUES]`` (each ``< 2**bits``)
    into ``words[w : w + bits]``.

    ``words`` is a uint32 view of the output. Inlined into kernels where ``bits`` is a
    compile-time constant, the loop unrolls into straight-line shifts (several times faster).
    """
    acc = uint64(0)
    nacc = 0
    for k in range(CHUNK_VALUES):
        acc |= uint64(codes[first + k]) << uint64(nacc)
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


def specialized(tag: str) -> Callable[[Callable[..., object]], Callable[..., Any]]:
    """Decorator for the kernels a factory generates per parameter set: appends ``_tag`` to the
    function's qualname, then compiles it (``njit``, cached, without the GIL).

    Numba names a compiled function after its qualname and a per-process counter, and cached code
    keeps the counter of the process that compiled it; two closures of one factory, loaded from the
    cache into one process, could then share a symbol, and a kernel call the other's code. One
    qualname per specialization keeps their symbols (and cache files) apart.
    """

    def compile_kernel(function: Callable[..., object]) -> Callable[..., Any]:
        function.__qualname__ = f"{function.__qualname__}_{tag}"
        return njit(cache=True, nogil=True)(function)

    return compile_kernel


@cache
def _packer(bits: int) -> Callable[..., int]:
    """Kernel ``(values, words, c0, c1) -> first value >= 2**bits or -1`` with ``bits`` compiled in."""

    @specialized(f"bits{bits}")
    def pack_range(values, words, c0, c1):
        tail = np.zeros(CHUNK_VALUES, dtype=np.uint64)  # the last chunk, zero-padded, if it is partial
        bad = -1
        for c in range(c0, c1):
            chunk = values[c * CHUNK_VALUES : (c + 1) * CHUNK_VALUES]  # a slice from 0: no wraparound checks
            seen = uint64(0)
            for k in range(chunk.size):
                seen |= uint64(chunk[k])
            if chunk.size == CHUNK_VALUES:
                pack_chunk(chunk, 0, words, c * bits, bits)  # straight from the values: no copy to reload
            else:
                for k in range(chunk.size):
                    tail[k] = uint64(chunk[k])
                pack_chunk(tail, 0, words, c * bits, bits)
            if seen >> uint64(bits) and bad < 0:
                for k in range(chunk.size):
                    if uint64(chunk[k]) >> uint64(bits):
                        bad = c * CHUNK_VALUES + k
                        break
        return bad

    return pack_range


_BYTE_SPAN = 2048  # byte codes copied to a zero-padded scratch and packed per span (a multiple of CHUNK_VALUES)


@cache
def _byte_packer(bits: int) -> Callable[..., int]:
    """:func:`_packer` for uint8 values and ``bits <= 8``: spans copied into a zero-padded scratch (the
    packer squeezes in place) and packed 8 codes at a time by :func:`pack_octets`, the same layout."""

    @specialized(f"bytes{bits}")
    def pack_bytes_range(values, words, c0, c1):
        packed = words.view(np.uint8)
        scratch = np.zeros(_BYTE_SPAN, dtype=np.uint8)
        octets = scratch.view(np.uint64)
        limit = min(packed.size, 4 * bits * c1)  # a thread's chunks only
        chunks = _BYTE_SPAN // CHUNK_VALUES
        for s0 in range(c0, c1, chunks):
            s1 = min(c1, s0 + chunks)
            span = values[s0 * CHUNK_VALUES : min(values.size, s1 * CHUNK_VALUES)]
            seen = uint8(0)
            for k in range(span.size):  # a plain loop: it vectorizes
                scratch[k] = span[k]
                seen |= span[k]
            scratch[span.size :] = 0
            if seen >> bits:
                for k in range(span.size):
                    if span[k] >> bits:
                        return s0 * CHUNK_VALUES + k
            pack_octets(octets, (s1 - s0) * CHUNK_VALUES // 8, packed, 4 * bits * s0, limit, bits)
        return -1

    return pack_bytes_range


@cache
def _unpacker(bits: int) -> Callable[..., int]:
    """Kernel ``(main, tail, out, c0, c1) -> -1`` with ``bits`` compiled in."""

    @specialized(f"bits{bits}")
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


@cache
def _byte_unpacker(bits: int) -> Callable[..., int]:
    """:func:`_unpacker` for ``bits <= 8``, straight from the bytes ``(data, out, c0, c1) -> -1``: spans
    spread 8 codes at a time by :func:`unpack_octets`, then widened into ``out``."""

    @specialized(f"bytes{bits}")
    def unpack_bytes_range(data, out, c0, c1):
        scratch = np.empty(_BYTE_SPAN, dtype=np.uint8)
        octets = scratch.view(np.uint64)
        chunks = _BYTE_SPAN // CHUNK_VALUES
        for s0 in range(c0, c1, chunks):
            s1 = min(c1, s0 + chunks)
            unpack_octets(data, 4 * bits * s0, (s1 - s0) * CHUNK_VALUES // 8, bits, octets)
            target = out[s0 * CHUNK_VALUES : min(out.size, s1 * CHUNK_VALUES)]
            for k in range(target.size):  # a plain loop: it vectorizes
                target[k] = scratch[k]
        return -1

    return unpack_bytes_range


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
    packer = _byte_packer(bits) if values.dtype == np.uint8 and bits <= 8 else _packer(bits)
    bad = run_chunks(packer, values.size, values, words)
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
    if bits <= 8:
        run_chunks(_byte_unpacker(bits), n, data, out)
        return out
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


@llvm_intrinsic
def prefetch_for_write(typingctx, array, index):
    """Hint that ``array[index]`` will be written soon (``llvm.prefetch`` for writing, into every
    cache level); no effect on results, and no fault for an index out of bounds."""
    if not (isinstance(array, types.Array) and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        pointer = builder.gep(data, [context.cast(builder, args[1], signature.args[1], types.intp)])
        byte_pointer = builder.bitcast(pointer, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        signature_type = ir.FunctionType(ir.VoidType(), [byte_pointer.type, i32, i32, i32])
        prefetch = builder.module.declare_intrinsic("llvm.prefetch", [byte_pointer.type], signature_type)
        builder.call(prefetch, [byte_pointer, ir.Constant(i32, 1), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.none(array, index), codegen
