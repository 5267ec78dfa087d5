"""Counter-based random numbers shared by senders and receivers.

A :class:`RandomKey` ``(seed, round, worker, stream)`` is hashed into one 64-bit state
``s``; the ``i``-th random word is the SplitMix64 output ``mix64(s + (i + 1) * GOLDEN)``.
Any process that knows the key derives the same numbers, whichever rank hosts the worker,
so Rand-K indices or dithering noise never need to be sent.

The ``@njit`` functions here (``random_u64``, ``random_uniform``, ``random_normal``,
``random_below``) are meant to be called from inside other numba kernels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import overload

import numpy as np
from numba import njit, uint64

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_ONE = np.uint64(1)
_TWO_POW_M53 = 1.0 / 9007199254740992.0

# Stream ids used across the package, so that two uses of one key never collide.
STREAM_UPLINK = 0
STREAM_DOWNLINK = 1
STREAM_SAMPLING = 2
STREAM_METHOD = 3
STREAM_LANGEVIN = 4
STREAM_AGGREGATION = 5


@njit(uint64(uint64), cache=True, inline="always")
def mix64(z):
    """SplitMix64 finaliser (Steele, Lea, Flood 2014): a bijective 64-bit avalanche hash."""
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@njit(cache=True, inline="always")
def random_u64(state, i):
    """The ``i``-th 64-bit word of the SplitMix64 sequence started at ``state``."""
    return mix64(uint64(state) + (uint64(i) + _ONE) * GOLDEN)


@njit(cache=True, inline="always")
def random_uniform(state, i):
    """Uniform float64 on [0, 1) with 53 random bits: ``(u64 >> 11) * 2**-53``."""
    return float(random_u64(state, i) >> _S11) * _TWO_POW_M53


@njit(cache=True, inline="always")
def random_below(state, i, n):
    """Integer uniform on {0, ..., n-1} by Lemire's multiply-shift (bias < n / 2**64)."""
    u = random_u64(state, i)
    hi = (u >> np.uint64(32)) * uint64(n)
    lo = (u & np.uint64(0xFFFFFFFF)) * uint64(n)
    return int((hi + (lo >> np.uint64(32))) >> np.uint64(32))


@njit(cache=True, inline="always")
def random_normal(state, i):
    """Standard normal by Box–Muller from the uniforms number ``2i`` and ``2i + 1``."""
    u1 = 1.0 - random_uniform(state, 2 * i)
    u2 = random_uniform(state, 2 * i + 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


@njit(uint64(uint64, uint64, uint64, uint64), cache=True)
def _hash_key(seed, rnd, worker, stream):
    h = mix64(uint64(seed) ^ GOLDEN)
    h = mix64(h ^ (uint64(rnd) * _MIX1))
    h = mix64(h ^ (uint64(worker) * _MIX2))
    return mix64(h ^ (uint64(stream) * GOLDEN))


@njit(cache=True)
def _hash_keys(seed, rnd, workers, stream, out):
    """``out[j]``: the state of key ``(seed, rnd, workers[j], stream)`` (:func:`_hash_key` of each)."""
    for j in range(workers.size):
        out[j] = _hash_key(seed, rnd, uint64(workers[j]), stream)


@njit(cache=True, inline="always")
def _fingerprint(state):
    """The top 16 bits of ``mix64(state ^ GOLDEN)``: a key's fingerprint."""
    return mix64(uint64(state) ^ GOLDEN) >> uint64(48)


@njit(cache=True)
def _fingerprints(states, out):
    """``out[j] = _fingerprint(states[j])``."""
    for j in range(states.size):
        out[j] = _fingerprint(states[j])


@njit(cache=True)
def _fill_uniform(state, out):
    for i in range(out.size):
        out[i] = random_uniform(state, i)


@njit(cache=True)
def _fill_normal(state, out):
    for i in range(out.size):
        out[i] = random_normal(state, i)


@njit(cache=True)
def _sample_without_replacement(state, m, size):
    """``size`` distinct indices of range(m), uniform over subsets (Floyd's algorithm).

    Floyd: for j = m - size .. m - 1 draw t uniform on {0..j}; take t unless taken, else j.
    Membership is a linear scan, so this is for small samples (size^2 work); larger
    samples use a partial Fisher-Yates shuffle of range(m).
    """
    out = np.empty(size, dtype=np.int64)
    if size * size <= 8 * m:
        for n, j in enumerate(range(m - size, m)):
            t = random_below(state, n, j + 1)
            for i in range(n):
                if out[i] == t:
                    t = j
                    break
            out[n] = t
        return out
    perm = np.arange(m)
    for n in range(size):
        t = n + random_below(state, n, m - n)
        perm[n], perm[t] = perm[t], perm[n]
    out[:] = perm[:size]
    return out


@njit(cache=True)
def _sample_each(states, counts, size, out):
    """Row j of ``out``: :func:`_sample_without_replacement` of ``(states[j], counts[j], size)``, for the
    rows with ``size < counts[j]`` (the others are left as they are)."""
    for j in range(states.size):
        if size < counts[j]:
            out[j] = _sample_without_replacement(states[j], counts[j], size)


def _u64(value: int) -> int:
    """A key field as the unsigned 64-bit word the hash takes (negative ids wrap, as ``-1`` for the master):
    a Python int in ``[0, 2^64)``, which the kernels' uint64 arguments take without a typing pass."""
    return int(value) & ((1 << 64) - 1)


@dataclass(frozen=True)
class RandomKey:
    """Identifies one random stream: ``(seed, round, worker, stream)``.

    ``worker`` is the logical worker id (``-1`` for the master); ``stream`` separates the
    uses of one round (see the ``STREAM_*`` constants).
    """

    seed: int
    round: int = 0
    worker: int = 0
    stream: int = 0

    def __post_init__(self) -> None:
        for name in ("seed", "round", "worker", "stream"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)):
                raise TypeError(f"RandomKey.{name} must be an integer, got {value!r}")

    @cached_property
    def state(self) -> np.uint64:
        """The 64-bit generator state hashed from the four key fields."""
        return np.uint64(_hash_key(_u64(self.seed), _u64(self.round), _u64(self.worker), _u64(self.stream)))

    @cached_property
    def fingerprint(self) -> int:
        """16 bits of the key (a hash of its state), carried by messages that depend on it."""
        return int(_fingerprint(self.state))

    def with_stream(self, stream: int) -> RandomKey:
        return RandomKey(self.seed, self.round, self.worker, stream)

    def uniform(self, n: int) -> np.ndarray:
        """``n`` uniforms on [0, 1), the same numbers the numba kernels draw."""
        out = np.empty(n, dtype=np.float64)
        _fill_uniform(self.state, out)
        return out

    def normal(self, n: int) -> np.ndarray:
        """``n`` standard normals, the same numbers the numba kernels draw."""
        out = np.empty(n, dtype=np.float64)
        _fill_normal(self.state, out)
        return out

    def sample(self, m: int, size: int) -> np.ndarray:
        """``size`` distinct indices of ``range(m)``, uniform over all subsets of that size."""
        if not 0 <= size <= m:
            raise ValueError(f"cannot sample {size} distinct indices from {m}")
        return _sample_without_replacement(self.state, m, size)

    def numpy_generator(self) -> np.random.Generator:
        """A NumPy Philox generator seeded from this key, for host-side (non-kernel) draws."""
        return np.random.Generator(np.random.Philox(key=int(self.state)))


def worker_ids(workers: Sequence[int]) -> np.ndarray:
    """``workers`` as an int64 array (a ``range`` without iterating over it); TypeError for non-integers."""
    if isinstance(workers, range):
        return np.arange(workers.start, workers.stop, workers.step, dtype=np.int64)
    ids = np.asarray(workers).reshape(-1)
    if ids.size and ids.dtype.kind not in "iu":
        raise TypeError(f"worker ids must be integers, got {ids.dtype}")
    return ids.astype(np.int64, copy=False)


class RoundKeys(Sequence[RandomKey]):
    """The keys ``(seed, round, w, stream)`` of the workers ``w`` in ``workers``, in order: a sequence of
    :class:`RandomKey` (each built when asked for), whose :attr:`states` come from one kernel call, so
    that a round over many workers need not build a key object per worker."""

    def __init__(self, seed: int, round: int, workers: Sequence[int], stream: int) -> None:
        RandomKey(seed, round, 0, stream)  # the fields' checks
        self.seed, self.round, self.workers, self.stream = seed, round, workers, stream

    def __len__(self) -> int:
        return len(self.workers)

    @overload
    def __getitem__(self, j: int) -> RandomKey: ...

    @overload
    def __getitem__(self, j: slice) -> RoundKeys: ...

    def __getitem__(self, j: int | slice) -> RandomKey | RoundKeys:
        if isinstance(j, slice):
            return RoundKeys(self.seed, self.round, self.workers[j], self.stream)
        key = RandomKey(self.seed, self.round, self.workers[j], self.stream)
        key.__dict__.update(state=self.states[j], fingerprint=int(self.fingerprints[j]))  # the cached properties'
        return key

    @cached_property
    def states(self) -> np.ndarray:
        """``RandomKey(seed, round, w, stream).state`` of every worker, as one uint64 array."""
        workers = worker_ids(self.workers)
        out = np.empty(workers.size, dtype=np.uint64)
        seed, rnd, stream = (np.uint64(_u64(field)) for field in (self.seed, self.round, self.stream))
        _hash_keys(seed, rnd, workers, stream, out)
        return out

    @cached_property
    def fingerprints(self) -> np.ndarray:
        """``RandomKey(seed, round, w, stream).fingerprint`` of every worker, from one kernel call."""
        out = np.empty_like(self.states)
        _fingerprints(self.states, out)
        return out

    def sample_each(self, counts: np.ndarray, size: int) -> np.ndarray:
        """Row j: ``self[j].sample(counts[j], size)`` (the same indices) where ``size < counts[j]``;
        the rows of the other keys are unspecified. One kernel call for all keys."""
        counts = np.asarray(counts, dtype=np.int64)
        if counts.shape != (len(self),) or size < 0:
            raise ValueError(
                f"sample_each takes one count per key ({len(self)}) and a size >= 0: {counts.shape}, {size}"
            )
        out = np.empty((len(self), size), dtype=np.int64)
        _sample_each(self.states, counts, size, out)
        return out


def key_states(keys: Sequence[RandomKey]) -> np.ndarray:
    """The states of ``keys`` as one uint64 array (one kernel call for :class:`RoundKeys`)."""
    if isinstance(keys, RoundKeys):
        return keys.states
    return np.array([key.state for key in keys], dtype=np.uint64).reshape(-1)


def key_fingerprints(keys: Sequence[RandomKey]) -> np.ndarray:
    """The fingerprints of ``keys`` as one uint64 array (one NumPy pass for :class:`RoundKeys`)."""
    if isinstance(keys, RoundKeys):
        return keys.fingerprints
    return np.array([key.fingerprint for key in keys], dtype=np.uint64).reshape(-1)


def root_seed(seed: int | None) -> int:
    """A 63-bit run seed from a user seed (or fresh entropy) through ``numpy.random.SeedSequence``."""
    return int(np.random.SeedSequence(seed).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
