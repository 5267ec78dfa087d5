"""Straightforward NumPy versions of the sparsifier / sign / QSGD-family codecs, for speed comparisons.

``NUMPY_REFERENCES[spec] = (encode, decode)`` with

* ``encode(x, key) -> (scalars, payload)``: the codec scalars and payload bytes of the message body,
* ``decode(scalars, payload, d, key) -> float64 vector``,

the same split as ``Compressor._encode`` / ``_decode``; ``spec`` is the registry spec of the numba
codec they mirror (``mpicomp.compressors.make(spec)``). They draw the same per-coordinate uniforms
(SplitMix64 of the key state, vectorized in :func:`uniforms`), so TernGrad and QSGD payloads equal
the numba ones bit for bit; Top-K and sign are deterministic and equal too; Rand-K samples its
subset with NumPy's generator (same distribution, other indices). Decoders trust their input:
validation is the numba codecs' job.
"""

from __future__ import annotations

import numpy as np

from mpicomp.rng import GOLDEN, RandomKey
from mpicomp.wire import index_bits

Encoded = tuple[tuple[float, ...], bytes]
TRITS = np.array([1, 3, 9, 27, 81], dtype=np.uint8)
SPLITMIX_MULTIPLIERS = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def uniforms(key: RandomKey, n: int) -> np.ndarray:
    """The uniforms ``random_uniform(state, i)``, i < n: SplitMix64 of ``state + (i + 1) GOLDEN``, top 53 bits."""
    z = key.state + np.arange(1, n + 1, dtype=np.uint64) * GOLDEN
    z = (z ^ (z >> np.uint64(30))) * SPLITMIX_MULTIPLIERS[0]
    z = (z ^ (z >> np.uint64(27))) * SPLITMIX_MULTIPLIERS[1]
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def pack_fields(values: np.ndarray, lengths: np.ndarray) -> bytes:
    """Concatenate variable-length fields (low ``lengths[i]`` bits of ``values[i]``), LSB first."""
    lengths = lengths.astype(np.int64)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    position = np.arange(int(lengths.sum())) - starts
    bits = (np.repeat(values.astype(np.uint64), lengths) >> position.astype(np.uint64)) & np.uint64(1)
    return np.packbits(bits.astype(np.uint8), bitorder="little").tobytes()


def unpack_fields(payload: bytes, count: int, width: int) -> np.ndarray:
    """``count`` fields of ``width`` bits each, the inverse of ``pack_fields`` for fixed widths."""
    bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8), count=count * width, bitorder="little")
    return bits.reshape(count, width).astype(np.int64) @ (1 << np.arange(width, dtype=np.int64))


def omega_codewords(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Elias-omega codewords of ``n >= 1`` as (LSB-first integer, bit length), built from the last group."""
    word = np.zeros(n.size, dtype=np.uint64)
    length = np.ones(n.size, dtype=np.int64)
    group = n.astype(np.int64)
    while np.any(group > 1):
        active = group > 1
        width = np.floor(np.log2(group[active])).astype(np.int64)  # bits below the leading one
        low = group[active] - (np.int64(1) << width)
        bits = np.uint64(1) | (low.astype(np.uint64) << np.uint64(1))
        word[active] = bits | (word[active] << (width + 1).astype(np.uint64))
        length[active] += width + 1
        group[active] = width
    return word, length


class BitReader:
    """Sequential reader of an LSB-first bit stream (plain Python, as a reference decoder is)."""

    def __init__(self, payload: bytes) -> None:
        self.bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8), bitorder="little").tolist()
        self.position = 0

    def read(self, width: int) -> int:
        chunk = self.bits[self.position : self.position + width]
        self.position += width
        return sum(bit << i for i, bit in enumerate(chunk))

    def omega(self) -> int:
        n = 1
        while self.read(1):
            n = (1 << n) | self.read(n)
        return n


def randk_encode(x: np.ndarray, key: RandomKey, k: int) -> Encoded:
    indices = np.sort(key.numpy_generator().choice(x.size, size=k, replace=False))
    return (), (x[indices].astype(np.float64) * (x.size / k)).tobytes()


def randk_decode(scalars: tuple[float, ...], payload: bytes, d: int, key: RandomKey, k: int) -> np.ndarray:
    out = np.zeros(d)
    out[np.sort(key.numpy_generator().choice(d, size=k, replace=False))] = np.frombuffer(payload, dtype="<f8")
    return out


def topk_encode(x: np.ndarray, key: RandomKey, k: int) -> Encoded:
    magnitude = np.abs(x)
    threshold = np.partition(magnitude, x.size - k)[x.size - k]
    greater = np.flatnonzero(magnitude > threshold)
    ties = np.flatnonzero(magnitude == threshold)[: k - greater.size]
    indices = np.sort(np.concatenate((greater, ties)))
    bits = index_bits(x.size)
    return (), pack_fields(indices, np.full(k, bits)) + x[indices].astype("<f8").tobytes()


def topk_decode(scalars: tuple[float, ...], payload: bytes, d: int, key: RandomKey, k: int) -> np.ndarray:
    split = (k * index_bits(d) + 7) // 8
    out = np.zeros(d)
    out[unpack_fields(payload[:split], k, index_bits(d))] = np.frombuffer(payload[split:], dtype="<f8")
    return out


def sign_encode(x: np.ndarray, key: RandomKey) -> Encoded:
    return (float(np.mean(np.abs(x))),), np.packbits(x < 0, bitorder="little").tobytes()


def sign_decode(scalars: tuple[float, ...], payload: bytes, d: int, key: RandomKey) -> np.ndarray:
    negative = np.unpackbits(np.frombuffer(payload, dtype=np.uint8), count=d, bitorder="little").astype(bool)
    return np.where(negative, -scalars[0], scalars[0])


def terngrad_encode(x: np.ndarray, key: RandomKey) -> Encoded:
    scale = float(np.max(np.abs(x)))
    kept = uniforms(key, x.size) < np.abs(x) / scale
    trits = np.zeros(-(-x.size // 5) * 5, dtype=np.uint8)
    trits[: x.size] = kept * (1 + (x < 0))
    return (scale,), (trits.reshape(-1, 5) @ TRITS).astype(np.uint8).tobytes()


def terngrad_decode(scalars: tuple[float, ...], payload: bytes, d: int, key: RandomKey) -> np.ndarray:
    codes = np.frombuffer(payload, dtype=np.uint8)[:, None]
    trits = (codes // TRITS % 3).ravel()[:d]
    return np.select([trits == 1, trits == 2], [scalars[0], -scalars[0]], 0.0)


def qsgd_encode(x: np.ndarray, key: RandomKey, s: int) -> Encoded:
    """Levels by stochastic rounding, then [omega(gap), sign, omega(level)] per nonzero and omega(final gap)."""
    norm = float(np.linalg.norm(x))
    ratio = np.abs(x) * (s / norm)
    levels = np.minimum(np.floor(ratio) + (uniforms(key, x.size) < ratio - np.floor(ratio)), s).astype(np.int64)
    nonzero = np.flatnonzero(levels)
    gaps = np.diff(np.concatenate(([-1], nonzero, [x.size])))
    gap_words, gap_lengths = omega_codewords(gaps)
    level_words, level_lengths = omega_codewords(levels[nonzero])
    words = np.zeros(3 * nonzero.size + 1, dtype=np.uint64)
    lengths = np.ones(3 * nonzero.size + 1, dtype=np.int64)
    words[0::3], lengths[0::3] = gap_words, gap_lengths
    words[1::3] = (x[nonzero] < 0).astype(np.uint64)
    words[2::3], lengths[2::3] = level_words, level_lengths
    return (norm,), pack_fields(words, lengths)


def qsgd_decode(scalars: tuple[float, ...], payload: bytes, d: int, key: RandomKey, s: int) -> np.ndarray:
    out = np.zeros(d)
    reader, position, unit = BitReader(payload), -1, scalars[0] / s
    while True:
        position += reader.omega()
        if position == d:
            return out
        negative = reader.read(1)
        out[position] = (-unit if negative else unit) * reader.omega()


NUMPY_REFERENCES = {
    "randk(k=0.01)": (
        lambda x, key: randk_encode(x, key, max(1, round(0.01 * x.size))),
        lambda scalars, payload, d, key: randk_decode(scalars, payload, d, key, max(1, round(0.01 * d))),
    ),
    "topk(k=0.01)": (
        lambda x, key: topk_encode(x, key, max(1, round(0.01 * x.size))),
        lambda scalars, payload, d, key: topk_decode(scalars, payload, d, key, max(1, round(0.01 * d))),
    ),
    "sign": (sign_encode, sign_decode),
    "terngrad": (terngrad_encode, terngrad_decode),
    "qsgd(s=16)": (
        lambda x, key: qsgd_encode(x, key, 16),
        lambda scalars, payload, d, key: qsgd_decode(scalars, payload, d, key, 16),
    ),
}
