"""Sparsifiers: Rand-K and Top-K, and the selection API that composition (``natural∘randk``) reuses.

A sparsifier keeps ``k`` of the ``d`` coordinates: ``S(x) = sum_{i in I} v_i e_i`` for an index set
``I`` of size ``k`` and values ``v``. Its payload is an index section (``k`` indices of
``index_bits(d)`` bits each, ascending, or nothing when both sides derive ``I`` from the shared key)
followed by the ``k`` values as little-endian float64 or float32.

``k`` is a count (int >= 1, capped at d) or a fraction of d (float in (0, 1], ``max(1, round(k d))``).

The selection API used by both the sparsifiers and :class:`mpicomp.compressors.compose.Compose`:
:meth:`Sparsifier.select` -> (indices, values), :meth:`Sparsifier.encode_indices`,
:meth:`Sparsifier.decode_indices`, :meth:`Sparsifier.index_nbytes`.
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from collections.abc import Iterator, Sequence

import numpy as np
from numba import float64, njit, uint64
from numba.cpython.unsafe.numbers import trailing_zeros

from ..rng import GOLDEN, RandomKey, key_states, random_below
from ..wire import (
    Message,
    MessageError,
    index_bits,
    pack_uint,
    packed_nbytes,
    unpack_uint,
)
from ..wire.bitpack import GROUP, append_bits, finish_bits, nonzero_word, parallel_tasks, run_split, store_u64
from .base import VALUE_DTYPES, Compressor, check_dtype, naming_row, non_finite_input, require_key
from .numeric import first_non_finite, first_non_finite_pattern, float64_bits
from .registry import register

ENTRY_BYTES = 1 << 22  # a block of sparse messages is read as arrays about this many bytes at a time
_HASH_EMPTY = -1
_BITMAP_RATIO = 1024  # k >= d / 1024: a d-bit membership bitmap beats a hash set plus a sort


def resolve_count(k: float, d: int) -> int:
    """Coordinates kept in dimension d: ``min(k, d)`` for a count, ``max(1, round(k d))`` for a fraction."""
    if isinstance(k, float):
        return min(d, max(1, round(k * d)))
    return min(d, k)


def _check_count(name: str, k: object) -> int | float:
    if isinstance(k, bool) or not isinstance(k, (int, float, np.integer, np.floating)):
        raise ValueError(  # noqa: TRY004  (a bad spec value is a ValueError, like every spec error)
            f"{name}: parameter k must be a count (int >= 1) or a fraction (float in (0, 1]), got {k!r}"
        )
    if isinstance(k, (int, np.integer)):
        if k < 1:
            raise ValueError(f"{name}: k as a count must be an int >= 1, got {k}")
        return int(k)
    if not 0.0 < k <= 1.0:
        raise ValueError(f"{name}: k as a fraction must be a float in (0, 1], got {k}")
    return float(k)


@njit(cache=True, inline="always")
def _hash_insert(table, shift, value):
    """Insert ``value >= 0`` into an open-addressing table; False if it was already there."""
    mask = table.size - 1
    slot = np.int64((uint64(value) * GOLDEN) >> uint64(shift)) & mask
    while table[slot] != _HASH_EMPTY:
        if table[slot] == value:
            return False
        slot = (slot + 1) & mask
    table[slot] = value
    return True


@njit(cache=True, inline="always")
def _floyd_draw(state, d, k, j):
    """Step j of Floyd's algorithm: (candidate t uniform on {0..d-k+j}, fallback d-k+j if t is taken)."""
    top = d - k + j
    return np.int64(random_below(state, j, top + 1)), top


@njit(cache=True)
def _floyd_sparse(state, d, k, out):
    """Floyd's algorithm with an O(k) hash set, then a sort: for k << d."""
    bits = 1
    while (1 << bits) < 2 * k:
        bits += 1
    table = np.full(1 << bits, _HASH_EMPTY, dtype=np.int64)
    for j in range(k):
        t, top = _floyd_draw(state, d, k, j)
        if not _hash_insert(table, 64 - bits, t):
            t = top
            _hash_insert(table, 64 - bits, t)
        out[j] = t
    out.sort()


@njit(cache=True)
def _floyd_bitmap(state, d, k, out):
    """Floyd's algorithm with a d-bit membership bitmap, collected in ascending order word by word
    (the set bits of each 64-bit word by trailing-zero count): for k above d / ``_BITMAP_RATIO``.

    ``out`` has one spare slot past the k indices: the collection writes a word's first two set bits
    without branching (a trailing-zero count of 0 is 64; the index advances by 1 only for a set bit),
    since at these densities a word holds 0, 1 or 2 of them unpredictably; more go through a loop."""
    if out.size <= k:
        raise ValueError("_floyd_bitmap needs k + 1 slots")
    taken = np.zeros((d + 63) // 64, dtype=np.uint64)
    for j in range(k):
        t, top = _floyd_draw(state, d, k, j)
        if (taken[t >> 6] >> uint64(t & 63)) & uint64(1):
            t = top
        taken[t >> 6] |= uint64(1) << uint64(t & 63)
    j = 0
    for w in range(taken.size):
        word = taken[w]
        base = 64 * w
        for _ in range(2):
            out[j] = base + int(trailing_zeros(word))  # type: ignore[call-arg]  # numba's stubs give intrinsics a typingctx parameter
            j += word != 0
            word &= word - uint64(1)
        while word:
            out[j] = base + int(trailing_zeros(word))  # type: ignore[call-arg]
            word &= word - uint64(1)
            j += 1


@njit(cache=True, inline="always")
def _pick_digit(hist, k):
    """Scan a 2**16-bin histogram from the top: (bin holding the k-th largest entry, entries above it)."""
    above = 0
    digit = hist.size - 1
    while above + hist[digit] < k:
        above += hist[digit]
        digit -= 1
    return digit, above


@njit(cache=True)
def _top_k_indices(words, k, key_bits, out):
    """Indices of the k largest |x_i|, ascending; ties at the threshold go to the lowest indices.

    ``words`` is x viewed as unsigned integers; their low ``key_bits`` bits (the sign bit cleared)
    order like |x|. Radix select on 16-bit digits from the top: one histogram pass over x finds
    the top digit of the k-th largest key, later digits are resolved on the few candidates left;
    a last pass collects the indices.
    """
    keep = (uint64(1) << uint64(key_bits)) - uint64(1)
    shift = key_bits - 16
    hist = np.zeros(65536, dtype=np.int64)
    for i in range(words.size):
        hist[(uint64(words[i]) & keep) >> uint64(shift)] += 1
    digit, greater = _pick_digit(hist, k)
    candidates = np.empty(hist[digit], dtype=np.uint64)
    n = 0
    for i in range(words.size):
        w = uint64(words[i]) & keep
        if w >> uint64(shift) == uint64(digit):
            candidates[n] = w
            n += 1
    while shift > 0:
        shift = max(shift - 16, 0)
        hist[:] = 0
        for c in range(n):
            hist[(candidates[c] >> uint64(shift)) & uint64(0xFFFF)] += 1
        digit, above = _pick_digit(hist, k - greater)
        greater += above
        kept = 0
        for c in range(n):
            if (candidates[c] >> uint64(shift)) & uint64(0xFFFF) == uint64(digit):
                candidates[kept] = candidates[c]
                kept += 1
        n = kept
    threshold = candidates[0]
    ties = k - greater
    j = 0
    for i in range(words.size):
        w = uint64(words[i]) & keep
        if w > threshold or (w == threshold and ties > 0):
            if w == threshold:
                ties -= 1
            out[j] = i
            j += 1


_SELECTED, _FAILED, _NON_FINITE = 0, 1, 2  # outcomes of _top_k_sampled
_SPAN = 2048  # coordinates compared per vectorized loop in _top_k_sampled (a multiple of GROUP)
_SAMPLE = 1 << 12  # sampled keys from which _top_k_sampled bounds the threshold (at most: d / 8 of them)
_SAMPLED_FROM_D = 1 << 11  # shorter vectors: quickselect on the whole vector (256 sampled keys at least)


@njit(cache=True)
def _sample_size(d):
    """Keys :func:`_top_k_sampled` samples from a vector of d: ``min(_SAMPLE, d // 8)``."""
    return min(_SAMPLE, d // 8)


@njit(cache=True)
def _sample_plan(d, k):
    """(rank of the bound among the ``S = _sample_size(d)`` sampled keys, room for the candidates) of
    :func:`_top_k_sampled`: ``k_s + 4 sqrt(k_s) + 8`` with ``k_s = k S / d``, and about
    twice the candidates expected above that bound."""
    size = _sample_size(d)
    expected = k * size / d
    rank = int(expected + 4.0 * np.sqrt(expected) + 8.0)
    return rank, 2 * rank * (d // size + 1) + 64


class SelectionScratch:
    """The candidates' indices and keys that :func:`top_k_indices` keeps across calls (grown, never
    shrunk): fresh multi-MB temporaries on every call cost a page fault per 4 KiB they touch."""

    def __init__(self) -> None:
        self._words = np.empty(0, dtype=np.uint64)

    def buffers(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(int64 indices, uint64 keys), ``size`` entries each."""
        if self._words.size < 2 * size:
            self._words = np.empty(2 * size, dtype=np.uint64)
        return self._words[:size].view(np.int64), self._words[size : 2 * size]


@njit(cache=True)
def _top_k_sampled(words, k, key_bits, infinity, out, candidates, keys):
    """:func:`_top_k_indices` in one pass over x when a sample finds a bound (``d >= _SAMPLED_FROM_D``):
    ``_SELECTED``, or ``_FAILED`` (out untouched) if it does not, or ``_NON_FINITE`` if some key is at least
    ``infinity`` (the key of Inf: x holds NaN or Inf). ``candidates`` and ``keys`` are scratch of
    the size :func:`_sample_plan` gives.

    The keys of ``S = _sample_size(d)`` evenly spaced coordinates give the bound: the ``k_s + 4 sqrt(k_s) + 8``-th
    largest of them (by quickselect), ``k_s = k S / d`` the expected number above the k-th largest key, so
    that the bound lies below it unless x is built against the stride. One pass collects the
    coordinates whose keys are at or above the bound (ascending), with their keys; if there are at
    least k (and no more than room was made for: about twice the expected count), they hold every key at or above the
    k-th largest, and a selection among them (quickselect for fewer than ``_SELECT_BELOW_D``, else the radix
    select) picks the same set as on the whole of x. NaN and
    Inf are among the candidates (their keys are at least ``infinity``: above a finite bound, or
    the bound is one of them, whose coordinate is then a candidate), so only those are checked.
    """
    d = words.size
    keep = (uint64(1) << uint64(key_bits)) - uint64(1)
    size = _sample_size(d)
    stride = d // size
    sample = np.empty(size, dtype=np.uint64)
    for j in range(size):
        sample[j] = uint64(words[j * stride]) & keep
    rank, capacity = _sample_plan(d, k)
    if rank >= size:
        return _FAILED
    bound, found = _kth_smallest(sample, size - rank)
    if not found:
        return _FAILED
    above = np.zeros(_SPAN, dtype=np.uint8)
    n = 0
    for lo in range(0, d, _SPAN):
        span = words[lo : lo + _SPAN]
        for j in range(span.size):  # a plain compare loop: it vectorizes
            above[j] = (uint64(span[j]) & keep) >= bound
        above[span.size :] = 0
        for g in range(0, span.size, GROUP):
            mask = nonzero_word(above, g)
            while mask:
                if n == capacity:
                    return _FAILED
                at = g + int(trailing_zeros(mask))  # type: ignore[call-arg]  # numba's stubs give intrinsics a typingctx parameter
                candidates[n] = lo + at
                keys[n] = uint64(span[at]) & keep  # read while the span is in cache
                mask &= mask - uint64(1)
                n += 1
    if n < k:
        return _FAILED
    top = uint64(0)
    for c in range(n):
        top = max(top, keys[c])
    if top >= infinity:
        return _NON_FINITE
    if n == k:
        out[:] = candidates[:k]
        return _SELECTED
    if n < _SELECT_BELOW_D:  # positions among the candidates, then their indices
        _top_k_by_quickselect(keys[:n], k, key_bits, out, np.empty(n, dtype=np.uint64))
    else:
        _top_k_indices(keys[:n], k, key_bits, out)
    for j in range(k):
        out[j] = candidates[out[j]]
    return _SELECTED


_SELECT_BELOW_D = 1 << 15  # below: quickselect (no fixed cost); above, the radix select's 0.2 ms histogram pays


@njit(cache=True)
def _kth_smallest(keys, kth):
    """``keys[kth]`` as if ``keys`` were sorted (Hoare's quickselect with a median-of-three pivot, in place),
    and whether it finished within ``2 log2(d) + 16`` partitions (else the caller selects another way: a
    pivot sequence built against median-of-three would take O(d^2))."""
    lo, hi = 0, keys.size - 1
    rounds = 2 * int(np.log2(keys.size + 1)) + 16
    while hi > lo:
        rounds -= 1
        if rounds < 0:
            return keys[kth], False
        a, b, c = keys[lo], keys[(lo + hi) >> 1], keys[hi]
        pivot = max(min(a, b), min(max(a, b), c))
        i, j = lo, hi
        while i <= j:
            while keys[i] < pivot:
                i += 1
            while keys[j] > pivot:
                j -= 1
            if i <= j:
                keys[i], keys[j] = keys[j], keys[i]
                i += 1
                j -= 1
        if kth <= j:
            hi = j
        elif kth >= i:
            lo = i
        else:
            break
    return keys[kth], True


@njit(cache=True)
def _top_k_by_quickselect(words, k, key_bits, out, keys):
    """:func:`_top_k_indices` for short vectors (1 <= k < d): the k-th largest magnitude key ``t`` by
    quickselect on a copy of the keys (into ``keys``, d entries of scratch), then, in index order, every key
    above ``t`` and the first keys equal to it until there are k; the radix select when quickselect gives up."""
    keep = (uint64(1) << uint64(key_bits)) - uint64(1)
    for i in range(words.size):
        keys[i] = uint64(words[i]) & keep
    threshold, found = _kth_smallest(keys, words.size - k)
    if not found:
        _top_k_indices(words, k, key_bits, out)
        return
    ties = k
    for i in range(words.size):
        ties -= (uint64(words[i]) & keep) > threshold
    j = 0
    for i in range(words.size):
        key = uint64(words[i]) & keep
        if key > threshold or (key == threshold and ties > 0):
            ties -= key == threshold
            out[j] = i
            j += 1


@njit(cache=True, nogil=True)
def _top_k_rows(rows, k, bits, split, messages, start, keys, indices, candidates):
    """Top-K payloads of the float64 rows of ``rows`` (short: 1 <= k < d < ``_SELECT_BELOW_D``), row r's at
    ``messages[r, start:]``: its indices (:func:`top_k_indices`' choice: above a sampled bound where that applies
    and finds one, else :func:`_top_k_by_quickselect`) as a stream of ``bits``-bit fields, least significant bit
    first (the bytes of :func:`pack_uint`, ``split`` of them), then its k values as float64. ``keys`` (d entries or
    the sample plan's room, the larger) and ``candidates`` (the plan's room), and ``indices`` (k) are scratch.
    Returns the first row holding NaN or Inf (rows before it are written), else -1."""
    d = rows.shape[1]
    sampled = k <= d // 8 and d >= _SAMPLED_FROM_D
    infinity = uint64(0x7FF0000000000000)
    for r in range(rows.shape[0]):
        x = rows[r]
        words = x.view(np.uint64)
        if first_non_finite_pattern(words) >= 0:
            return r
        if not sampled or _top_k_sampled(words, k, 63, infinity, indices, candidates, keys) != _SELECTED:
            _top_k_by_quickselect(words, k, 63, indices, keys[:d])
        payload = messages[r, start:]
        _store_index_stream(payload, indices, bits)
        for j in range(k):
            store_u64(payload, split + 8 * j, float64_bits(x[indices[j]]))
    return -1


@njit(cache=True, inline="always")
def _store_index_stream(payload, indices, bits):
    """``indices`` as a stream of ``bits``-bit fields from byte 0 of ``payload``, least significant bit first (the
    bytes of :func:`pack_uint`); its 8-byte stores may run past the stream, into what the caller writes next."""
    acc, fill, byte = uint64(0), 0, 0
    for j in range(indices.size):
        acc, fill, byte = append_bits(payload, acc, fill, byte, indices[j], bits)
    finish_bits(payload, acc, fill, byte)


@njit(cache=True, inline="always")
def _draw_random_k(state, d, k, out):
    """``out[:k]``: the ascending k-subset of {0..d-1} that Floyd's algorithm draws from ``state``, with the hash
    set for ``k << d`` and the bitmap (which needs ``out``'s spare slot ``k``) above; both make the same choices."""
    if k * _BITMAP_RATIO < d:
        _floyd_sparse(state, d, k, out[:k])
    else:
        _floyd_bitmap(state, d, k, out)


@njit(cache=True, nogil=True)
def _random_k_rows(states, d, k, out):
    """Row r of ``out`` (``(m, k + 1)`` int64, the last column scratch): :func:`random_k_indices` of
    ``(d, k, states[r])``."""
    for r in range(states.size):
        _draw_random_k(states[r], d, k, out[r])


@njit(cache=True, nogil=True)
def _rand_k_rows(rows, states, k, scale, bits, split, send, messages, start, indices):
    """Rand-K payloads of the float64 rows of ``rows`` (short), row r's at ``messages[r, start:]``: its
    indices (:func:`random_k_indices` of ``states[r]``, into the ``k + 1`` slots of scratch ``indices``) as a stream of
    ``bits``-bit fields when ``send`` (``split`` bytes, as :func:`pack_uint` writes them), then its k values
    ``x_i (d/k)`` (``scale``) as float64. Returns the first row with a value beyond the float64 range (rows
    before it are written), else -1."""
    for r in range(rows.shape[0]):
        x = rows[r]
        _draw_random_k(states[r], x.size, k, indices)
        payload = messages[r, start:]
        if send:
            _store_index_stream(payload, indices[:k], bits)
        for j in range(k):
            value = float64(x[indices[j]]) * scale
            if not np.isfinite(value):
                return r
            store_u64(payload, split + 8 * j, float64_bits(value))
    return -1


@njit(cache=True, nogil=True)
def _add_rows_entries(targets, indices, values, scale, clear):
    """:func:`add_entries` of row r's sparse vector (``indices[r]``, ``values[r]``) into ``targets[r]``, added
    ``scale`` times (finite), for every row: the gathered sums, every -0.0 of the row cleared (``clear``: a
    ``scale`` without its sign bit), the sums scattered."""
    sums = np.empty(indices.shape[1])
    for r in range(targets.shape[0]):
        out = targets[r]
        _gather_sums(out, indices[r], values[r], scale, sums)
        if clear:
            _clear_negative_zeros(out.view(np.uint64), 0, out.size)
        _scatter(out, indices[r], sums)


def _part_of(states: np.ndarray | None, part: slice) -> np.ndarray | None:
    return None if states is None else states[part]


def _block_entries(
    payloads: np.ndarray, k: int, bits: int, split: int, dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray]:
    """The ``(m, k)`` int64 indices and float64 values of ``m`` sparse payloads (rows of ``payloads``: ``split``
    bytes of k ``bits``-bit indices, bit-packed least significant bit first as :func:`pack_uint` writes them, then
    k values of ``dtype``), unchecked."""
    stream = np.unpackbits(np.ascontiguousarray(payloads[:, :split]), axis=1, bitorder="little")
    fields = stream[:, : k * bits].reshape(len(payloads), k, bits).astype(np.int64)
    indices = fields @ (np.int64(1) << np.arange(bits, dtype=np.int64))
    values = np.ascontiguousarray(payloads[:, split:]).view(dtype).astype(np.float64)
    return indices, values


def _require_finite(x: np.ndarray) -> None:
    bad = first_non_finite(x)
    if bad >= 0:
        raise non_finite_input(x, bad)


def top_k_indices(x: np.ndarray, k: int, scratch: SelectionScratch | None = None) -> np.ndarray:
    """Ascending indices of the ``k`` largest magnitudes of a float32/float64 vector (lowest index
    wins ties); ValueError if x holds NaN or Inf (found by the selection's own pass where it can).
    A ``scratch`` kept by the caller spares the selection its temporaries on later calls."""
    if k == x.size:
        _require_finite(x)
        return np.arange(k, dtype=np.int64)
    out = np.empty(k, dtype=np.int64)
    words = x.view(np.uint64 if x.dtype == np.float64 else np.uint32)
    key_bits = 8 * x.dtype.itemsize - 1
    scratch = SelectionScratch() if scratch is None else scratch
    if 0 < k <= x.size // 8 and x.size >= _SAMPLED_FROM_D:
        infinity = np.uint64(0x7FF0000000000000 if x.dtype == np.float64 else 0x7F800000)
        candidates, keys = scratch.buffers(_sample_plan(x.size, k)[1])
        outcome = _top_k_sampled(words, k, key_bits, infinity, out, candidates, keys)
        if outcome == _SELECTED:
            return out
    if x.size < _SELECT_BELOW_D:
        _require_finite(x)
        if k:
            _top_k_by_quickselect(words, k, key_bits, out, scratch.buffers(x.size)[1])
        return out
    _require_finite(x)
    if k:
        _top_k_indices(words, k, key_bits, out)  # the radix select on all of x
    return out


def random_k_indices(d: int, k: int, key: RandomKey) -> np.ndarray:
    """Ascending indices of a uniform random k-subset of {0..d-1}, a pure function of ``key``.

    Floyd's algorithm (k draws ``random_below(state, j, ...)``); both membership structures make the
    same choices, so the subset does not depend on which one runs.
    """
    out = np.empty(k + 1, dtype=np.int64)
    _draw_random_k(key.state, d, k, out)
    return out[:k]


_NEGATIVE_ZERO = np.uint64(1 << 63)
_ZERO_BLOCK = 4096  # coordinates per vectorized min reduction in _clear_negative_zeros


@njit(cache=True, nogil=True)
def _clear_negative_zeros(words, lo, hi):
    """``x_i + 0.0`` for the float64 bit patterns ``words[lo:hi]``: every -0.0 becomes +0.0, the rest
    is unchanged. Per block, the least ``w ^ bits(-0.0)`` (0 only for -0.0: an unsigned min, which
    vectorizes as well as a bare read; a flag ORed from compares ran 15 % slower); only a block
    holding -0.0 is written."""
    for start in range(lo, hi, _ZERO_BLOCK):
        block = words[start : min(hi, start + _ZERO_BLOCK)]
        least = ~uint64(0)
        for j in range(block.size):
            least = min(least, block[j] ^ _NEGATIVE_ZERO)
        if least == 0:
            for j in range(block.size):
                if block[j] == _NEGATIVE_ZERO:
                    block[j] = 0
    return -1


@njit(cache=True, nogil=True)
def _gather_sums(out, indices, values, scale, sums):
    """``sums[j] = out[indices[j]] + values[j] scale``."""
    for j in range(indices.size):
        sums[j] = out[indices[j]] + values[j] * scale


@njit(cache=True, nogil=True)
def _scatter(out, indices, values):
    """``out[indices[j]] = values[j]``."""
    for j in range(indices.size):
        out[indices[j]] = values[j]


def add_entries(out: np.ndarray, indices: np.ndarray, values: np.ndarray, accumulate: bool, scale: float = 1.0) -> None:
    """Write (``accumulate``: add ``scale`` times) the sparse vector ``v`` with ``v[indices] = values``
    (distinct indices), 0 elsewhere, into the float64 vector ``out``, in place.

    Bit for bit ``out[:] = v`` or ``out += scale * v`` on the dense v without building it: off the
    indices ``out_i + scale * 0`` changes only a -0.0 when that zero is +0.0 (``scale >= 0``), so
    those are cleared in one read-mostly pass; a non-finite scale takes the dense path.
    """
    if not accumulate:
        out.fill(0.0)
        _scatter(out, indices, values)
        return
    if not np.isfinite(scale):
        dense = np.zeros(out.size)
        dense[indices] = values
        out += scale * dense
        return
    sums = np.empty(indices.size)
    _gather_sums(out, indices, values, scale, sums)
    if not np.signbit(scale):
        run_split(_clear_negative_zeros, out.size, parallel_tasks(out.size), out.view(np.uint64))
    _scatter(out, indices, sums)


class Sparsifier(Compressor):
    """Base of Rand-K and Top-K: ``k`` kept coordinates, their indices and values on the wire."""

    def __init__(self, k: float | None = None, dtype: str = "float64") -> None:
        self.k = _check_count(self.name, k)
        self.dtype = check_dtype(self.name, dtype)

    @property
    def params(self) -> dict[str, object]:
        params: dict[str, object] = {"k": self.k}
        if self.dtype != "float64":
            params["dtype"] = self.dtype
        return params

    @property
    def sends_indices(self) -> bool:
        """Whether the index section is on the wire (else both sides derive it from the key)."""
        return True

    @property
    def uses_shared_key(self) -> bool:
        """Indices that are not sent come from the shared key."""
        return not self.sends_indices

    def count(self, d: int) -> int:
        """k resolved for dimension d (a warning when a count k exceeds d: every coordinate is kept)."""
        if not isinstance(self.k, float) and self.k > d:
            warnings.warn(f"{self.spec}: k = {self.k} exceeds d = {d}; all {d} coordinates are kept", stacklevel=2)
        return resolve_count(self.k, d)

    @abstractmethod
    def select(self, x: np.ndarray, key: RandomKey) -> tuple[np.ndarray, np.ndarray]:
        """(ascending int64 indices I, float64 values S(x)_I) for a validated vector x."""

    def index_nbytes(self, d: int) -> int:
        """Bytes of the index section in dimension d."""
        return packed_nbytes(self.count(d), index_bits(d)) if self.sends_indices else 0

    def index_payload_bits(self, d: int) -> float:
        """Bits of the indices in theory: ``k ceil(log2 d)`` when sent, 0 when derived."""
        return float(self.count(d) * index_bits(d)) if self.sends_indices else 0.0

    def encode_indices(self, indices: np.ndarray, d: int) -> np.ndarray:
        """The index section for ``indices`` (empty when indices are derived from the key)."""
        if not self.sends_indices:
            return np.empty(0, dtype=np.uint8)
        return pack_uint(indices, index_bits(d))

    def decode_indices(self, section: memoryview | np.ndarray, d: int, key: RandomKey | None) -> np.ndarray:
        """Indices from an index section: strictly ascending (so distinct) and < d, else MessageError."""
        k = self.count(d)
        if len(section) != self.index_nbytes(d):
            raise MessageError(f"{self.name}: index section of {len(section)} bytes, expected {self.index_nbytes(d)}")
        indices = unpack_uint(section, k, index_bits(d)).astype(np.int64)
        if k and (indices[-1] >= d or (k > 1 and np.any(indices[1:] <= indices[:-1]))):
            raise MessageError(f"{self.name}: indices are not strictly ascending within [0, d={d})")
        return indices

    def expected_bits(self, d: int) -> float:
        return self.index_payload_bits(d) + 8.0 * VALUE_DTYPES[self.dtype].itemsize * self.count(d)

    def payload_bytes(self, d: int) -> int:
        """The index section, then k values of the wire dtype."""
        return self.index_nbytes(d) + self.count(d) * VALUE_DTYPES[self.dtype].itemsize

    def _encode_into(self, x: np.ndarray, key: RandomKey, payload: np.ndarray) -> tuple[float, ...]:
        indices, values = self.select(x, key)
        split = self.index_nbytes(x.size)
        payload[:split] = self.encode_indices(indices, x.size)
        wire_values = payload[split:].view(VALUE_DTYPES[self.dtype])
        with np.errstate(over="ignore"):
            np.copyto(wire_values, values, casting="same_kind")
        if not np.isfinite(wire_values).all():
            advice = "; use dtype='float64'" if self.dtype != "float64" else " after scaling; rescale the vector"
            raise ValueError(f"{self.spec}: values exceed the {self.dtype} range{advice}")
        return ()

    def _entries(self, msg: Message, key: RandomKey | None) -> tuple[np.ndarray, np.ndarray]:
        """(indices, float64 values) of a message, checked: MessageError on a bad payload."""
        d, k = msg.d, self.count(msg.d)
        split = self.index_nbytes(d)
        dtype = VALUE_DTYPES[self.dtype]
        if len(msg.payload) != split + k * dtype.itemsize:
            raise MessageError(
                f"{self.name}: payload of {len(msg.payload)} bytes, d={d} needs {split} index bytes"
                f" + {k} {self.dtype} values"
            )
        indices = self.decode_indices(msg.payload[:split], d, key)
        values = np.frombuffer(msg.payload[split:], dtype=dtype).astype(np.float64)
        if not np.isfinite(values).all():
            raise MessageError(f"{self.name}: payload holds non-finite values")
        return indices, values

    def _sums_payload_rows(self, d: int) -> bool:
        """A block of messages is read as arrays (:meth:`_add_payload_rows`): the indices unpacked, or drawn from
        the keys."""
        return True

    def _checked_entries(
        self, payloads: np.ndarray, d: int, states: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """The indices (unpacked, or drawn from the key ``states`` where they are not sent) and values read as
        ``(m, k)`` arrays, and the first row whose indices are not strictly ascending and below d or whose values
        are not finite (-1 if none)."""
        k = self.count(d)
        dtype = VALUE_DTYPES[self.dtype]
        if self.sends_indices:
            indices, values = _block_entries(payloads, k, index_bits(d), self.index_nbytes(d), dtype)
        else:
            if states is None:
                raise ValueError(f"{self.name}: indices that are not sent are drawn from the keys' states; pass them")
            drawn = np.empty((len(payloads), k + 1), dtype=np.int64)
            _random_k_rows(states, d, k, drawn)
            indices, values = drawn[:, :k], np.ascontiguousarray(payloads).view(dtype).astype(np.float64)
        ascending = np.diff(indices, axis=1, prepend=-1) > 0
        good = ascending.all(axis=1) & (indices[:, -1] < d) & np.isfinite(values).all(axis=1)
        return indices, values, -1 if good.all() else int(np.argmin(good))

    def _entry_parts(self, rows: int, d: int) -> Iterator[slice]:
        """Consecutive parts of a block of ``rows`` messages whose entries, read as arrays (an int64 index, a float64
        value and the drawing's or unpacking's temporaries: about 32 bytes each), take ``ENTRY_BYTES`` at most."""
        step = max(1, ENTRY_BYTES // (32 * max(1, self.count(d))))
        return (slice(start, min(rows, start + step)) for start in range(0, rows, step))

    def _add_payload_rows(
        self, payloads: np.ndarray, scalars: np.ndarray, out: np.ndarray, states: np.ndarray | None = None
    ) -> int:
        """The block's entries (:meth:`_checked_entries`, a part of it at a time) added by one ``np.add.at`` a part
        (unbuffered, element by element in order: the bits of adding message by message)."""
        for part in self._entry_parts(len(payloads), out.size):
            indices, values, bad = self._checked_entries(payloads[part], out.size, _part_of(states, part))
            if bad != -1:
                return part.start + bad
            np.add.at(out, indices.reshape(-1), values.reshape(-1))
        return -1

    def _add_payload_rows_each(
        self,
        payloads: np.ndarray,
        scalars: np.ndarray,
        targets: np.ndarray,
        factor: float,
        states: np.ndarray | None = None,
    ) -> int:
        """The block's entries (:meth:`_checked_entries`, a part of it at a time), row r's added ``factor`` times into
        ``targets[r]`` as :func:`add_entries` adds them (each row's -0.0 cleared off the indices), by one kernel call
        a part."""
        d = targets.shape[1]
        for part in self._entry_parts(len(payloads), d):
            indices, values, bad = self._checked_entries(payloads[part], d, _part_of(states, part))
            if bad != -1:
                return part.start + bad
            if np.isfinite(factor):
                _add_rows_entries(targets[part], indices, values, factor, not np.signbit(factor))
                continue
            for target, row_indices, row_values in zip(targets[part], indices, values, strict=True):
                add_entries(target, row_indices, row_values, True, factor)
        return -1

    def _decode_into(self, msg: Message, key: RandomKey | None, out: np.ndarray, accumulate: bool) -> None:
        add_entries(out, *self._entries(msg, key), accumulate)

    def _decode_scaled_add(self, msg: Message, key: RandomKey | None, out: np.ndarray, scale: float) -> None:
        add_entries(out, *self._entries(msg, key), True, scale)


@register
class RandK(Sparsifier):
    """Random sparsification (poster 000, Example 2): ``Q(x) = (d/k) xi∘x``, xi uniform over k-subsets.

    Unbiased with ``E||Q(x)||^2 = (d/k) ||x||^2``, so omega = d/k - 1. Indices come from the shared key
    (Floyd's algorithm) and are not sent unless ``send_indices=True``. Values are ``(d/k) x_i``; the
    float64 default keeps Q exactly unbiased (float32 adds a relative rounding of 2**-24).
    """

    name = "randk"
    unbiased = True

    def __init__(self, k: float | None = None, dtype: str = "float64", send_indices: bool = False) -> None:
        super().__init__(k, dtype)
        if not isinstance(send_indices, bool):
            raise ValueError(f"randk: send_indices must be True or False, got {send_indices!r}")  # noqa: TRY004
        self.send_indices = send_indices

    @property
    def params(self) -> dict[str, object]:
        params = super().params
        if self.send_indices:
            params["send_indices"] = True
        return params

    @property
    def sends_indices(self) -> bool:
        return self.send_indices

    def omega(self, d: int) -> float:
        return d / self.count(d) - 1.0

    def decode_indices(self, section: memoryview | np.ndarray, d: int, key: RandomKey | None) -> np.ndarray:
        if self.send_indices:
            return super().decode_indices(section, d, key)
        if len(section):
            raise MessageError(f"randk: {len(section)} index bytes in a message whose indices derive from the key")
        return random_k_indices(d, self.count(d), require_key(self.name, key))

    def _encode_rows_into(
        self, rows: np.ndarray, keys: Sequence[RandomKey], messages: np.ndarray, start: int
    ) -> list[tuple[float, ...]] | np.ndarray:
        """Short float64 rows with float64 values on the wire: every row's payload by one kernel call
        (:func:`_rand_k_rows`, the bytes of :meth:`_encode_into`); others row by row."""
        d, k = rows.shape[1], self.count(rows.shape[1])
        if not (rows.dtype == np.float64 and self.dtype == "float64"):
            return super()._encode_rows_into(rows, keys, messages, start)
        scratch = np.empty(k + 1, dtype=np.int64)
        split, bits = self.index_nbytes(d), index_bits(d)
        scale = d / k if k else 1.0
        states = key_states(keys)
        bad = _rand_k_rows(rows, states, k, scale, bits, split, self.send_indices, messages, start, scratch)
        if bad != -1:  # encode's own error, naming the row
            naming_row(bad, self._encode_into, rows[bad], keys[bad], np.empty(self.payload_bytes(d), np.uint8))
        return np.empty((len(rows), 0))

    def select(self, x: np.ndarray, key: RandomKey) -> tuple[np.ndarray, np.ndarray]:
        d, k = x.size, self.count(x.size)
        indices = random_k_indices(d, k, key)
        values = x[indices].astype(np.float64, copy=False)  # a fresh array: scaled in place
        values *= d / k if k else 1.0
        return indices, values


@register
class TopK(Sparsifier):
    """Top-K: keep the k largest magnitudes (ties to the lowest index), values unscaled.

    Contractive: ``||T(x) - x||^2 = ||x||^2 - ||x_I||^2 <= (1 - k/d) ||x||^2``, so alpha = k/d.
    Sending float32 values adds ``(fl(x_i) - x_i)^2 <= u^2 x_i^2`` on I (u = 2**-24), so then
    alpha = (1 - u^2) k/d.
    """

    name = "topk"
    unbiased = False
    checks_finite = True  # the selection's pass rejects NaN and Inf

    def __init__(self, k: float | None = None, dtype: str = "float64") -> None:
        super().__init__(k, dtype)
        self._scratch = SelectionScratch()  # the selection's buffers, kept from call to call

    def alpha(self, d: int) -> float:
        rounding = 2.0**-24 if self.dtype == "float32" else 0.0
        return (1.0 - rounding**2) * self.count(d) / d

    def _encode_rows_into(
        self, rows: np.ndarray, keys: Sequence[RandomKey], messages: np.ndarray, start: int
    ) -> list[tuple[float, ...]] | np.ndarray:
        """Short float64 rows with float64 values on the wire: every row's payload by one kernel call
        (:func:`_top_k_rows`, the bytes of :meth:`_encode_into`); others row by row."""
        d, k = rows.shape[1], self.count(rows.shape[1])
        if not (rows.dtype == np.float64 and self.dtype == "float64" and k < d < _SELECT_BELOW_D):
            return super()._encode_rows_into(rows, keys, messages, start)
        room = _sample_plan(d, k)[1] if d >= _SAMPLED_FROM_D else 0
        candidates, sorted_keys = self._scratch.buffers(max(d, room))
        split, bits = self.index_nbytes(d), index_bits(d)
        bad = _top_k_rows(rows, k, bits, split, messages, start, sorted_keys, np.empty(k, np.int64), candidates)
        if bad != -1:
            naming_row(bad, _require_finite, rows[bad])
        return np.empty((len(rows), 0))

    def select(self, x: np.ndarray, key: RandomKey) -> tuple[np.ndarray, np.ndarray]:
        indices = top_k_indices(x, self.count(x.size), self._scratch)
        return indices, x[indices].astype(np.float64, copy=False)
