"""Cross-polytope quantization (vqSGD; Gandikota, Kane, Maity, Mazumdar 2021), as compared in talk 001
(second part): per bucket, vertices of a cross-polytope drawn with barycentric weights.

Buckets as in :mod:`mpicomp.compressors._buckets`; ``nu = max_l ||x_l||_2`` is the codec scalar.
A bucket ``x_l`` with ``n`` coordinates (``n = size``, fewer in a short last bucket) lies in
``B_2(nu) ⊂ B_1(sqrt(n) nu) = conv{±sqrt(n) nu e_i}``; with ``a = ||x_l||_1 / (sqrt(n) nu) <= 1``
its barycentric weights are ``|x_i| / (sqrt(n) nu) + (1 - a) / (2n)`` on the vertex
``sign(x_i) sqrt(n) nu e_i`` and ``(1 - a) / (2n)`` on the opposite one (the leftover mass
``1 - a`` spread evenly, opposite vertices cancelling), so a vertex V drawn with these weights has
``E V = x_l``. Each bucket sends ``samples`` independent draws and decodes to their mean: unbiased.

Variance, exact: ``||V||^2 = n nu^2`` always, so ``E||Q(x_l) - x_l||^2 = (n nu^2 - ||x_l||^2) / samples``
and, summing over buckets, ``E||Q(x) - x||^2 = (D nu^2 - ||x||^2) / samples <= (D - 1) ||x||^2 / samples``
since ``nu <= ||x||``: ``omega = (D - 1) / samples``, attained when one bucket holds all of x. With
one bucket (D = size) this is the talk's codebook ``±sqrt(d) e_i`` applied to ``x / ||x||``, whose
error ``(d - 1) ||x||^2`` per draw is that of Rand-1.

Wire (codec ``cross-polytope``): one scalar ``nu``; payload: ``L samples`` codes of
``1 + b`` bits, ``b = max(1, ceil(log2 size))``, bucket by bucket (a bucket's draws together):
``i | negative << b`` for the vertex ``±sqrt(n) nu e_i``; ``i`` must be below the
bucket's n, and all codes are 0 when ``nu = 0``.
"""

from __future__ import annotations

import numpy as np
from numba import float64, int64, njit

from ..rng import RandomKey
from ..wire import Message, MessageError, index_bits, pack_uint
from ._buckets import (
    bucket_count,
    check_integer,
    from_buckets,
    unit_buckets,
    unpack_codes,
    zero_codes,
)
from ._codebook import key_uniforms
from .base import Compressor, check_scalar
from .registry import register

MAX_SAMPLES = 1024
MAX_SIZE = 1 << 16


def bucket_lengths(d: int, size: int) -> np.ndarray:
    """Coordinates n_l of each bucket: ``size``, and the remainder in a short last bucket."""
    lengths = np.full(bucket_count(d, size), size, dtype=np.int64)
    if d % size:
        lengths[-1] = d % size
    return lengths


@njit(cache=True, nogil=True)
def _draw_vertices(buckets, radius, lengths, uniforms, shift, codes):
    """Per bucket l and draw s: the code of a vertex drawn with the barycentric weights (see
    :func:`draw_vertices`), from the running sums of ``|x_i|`` in index order."""
    size = buckets.shape[1]
    cumulative = np.empty(size)
    for row in range(buckets.shape[0]):
        total = 0.0
        for i in range(size):
            total += abs(buckets[row, i])
            cumulative[i] = total
        n = lengths[row]
        mass = total / radius[row]
        for draw in range(uniforms.shape[1]):
            u = uniforms[row, draw]
            if u >= mass:  # uniform over the 2n vertices
                spread = min(int64((u - mass) / (1.0 - mass) * 2.0 * float64(n)), 2 * n - 1)
                index, negative = spread // 2, spread % 2
            else:
                target = u * radius[row]
                index = 0
                while index < size and cumulative[index] <= target:
                    index += 1
                index = min(index, n - 1)
                negative = int64(buckets[row, index] < 0.0)
            codes[row, draw] = index | negative << shift


def draw_vertices(buckets: np.ndarray, radius: np.ndarray, lengths: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Codes ``i | negative << ib`` of vertices ``±radius_l e_i`` drawn with the barycentric weights (L x samples).

    One uniform u per draw: ``u < a = ||x_l||_1 / radius_l`` picks coordinate i with probability
    ``|x_i| / radius_l`` (the first i whose cumulative ``|x|`` exceeds ``u radius_l``) with the
    sign of ``x_i``; otherwise ``(u - a) / (1 - a)`` picks one of the 2n vertices uniformly.
    """
    codes = np.empty(uniforms.shape, dtype=np.int64)
    _draw_vertices(buckets, radius, lengths, uniforms, index_bits(buckets.shape[1]), codes)
    return codes


@register
class CrossPolytope(Compressor):
    """Cross-polytope (vqSGD): per bucket, ``samples`` vertices ±sqrt(n) nu e_i drawn by barycentric weights; unbiased."""

    name = "cross-polytope"
    unbiased = True
    n_scalars = 1

    def __init__(self, samples: int = 2, size: int = 16) -> None:
        self.samples = check_integer(self.name, "samples (vertices per bucket)", samples, 1, MAX_SAMPLES)
        self.size = check_integer(self.name, "size (bucket dimension)", size, 1, MAX_SIZE)

    @property
    def params(self) -> dict[str, object]:
        return {"samples": self.samples, "size": self.size}

    @property
    def code_bits(self) -> int:
        """Bits per vertex: ``1 + max(1, ceil(log2 size))``."""
        return 1 + index_bits(self.size)

    def omega(self, d: int) -> float:
        return (d - 1) / self.samples

    def expected_bits(self, d: int) -> float:
        return float(bucket_count(d, self.size) * self.samples * self.code_bits)

    def _encode(self, x: np.ndarray, key: RandomKey) -> tuple[tuple[float, ...], np.ndarray]:
        n_codes = bucket_count(x.size, self.size) * self.samples
        norm, buckets = unit_buckets(self.name, x, self.size)
        if norm == 0.0:
            return (0.0,), zero_codes(n_codes, self.code_bits)
        top = float(np.linalg.norm(buckets, axis=1).max())
        lengths = bucket_lengths(x.size, self.size)
        uniforms = key_uniforms(key.state, 0, n_codes).reshape(-1, self.samples)
        codes = draw_vertices(buckets, np.sqrt(lengths) * top, lengths, uniforms)
        return (norm * top,), pack_uint(codes.reshape(-1), self.code_bits)

    def _decode(self, msg: Message, key: RandomKey | None) -> np.ndarray:
        top = check_scalar(msg.scalars[0], "cross-polytope radius")
        lengths = bucket_lengths(msg.d, self.size)
        codes = unpack_codes(msg.payload, lengths.size * self.samples, self.code_bits, self.name).reshape(
            -1, self.samples
        )
        if top == 0.0 and codes.any():
            raise MessageError("cross-polytope: nonzero codes in a message of radius 0")
        shift = index_bits(self.size)
        index = codes & ((1 << shift) - 1)
        if (index >= lengths[:, None]).any():
            raise MessageError("cross-polytope: a vertex index beyond its bucket's coordinates")
        rows = np.zeros((lengths.size, self.size))
        with np.errstate(over="ignore", invalid="ignore"):
            value = np.where(codes >> shift, -1.0, 1.0) * (np.sqrt(lengths) * top / self.samples)[:, None]
            np.add.at(rows, (np.arange(lengths.size)[:, None], index), value)
        out = from_buckets(rows, msg.d)
        if not np.isfinite(out).all():
            raise MessageError("cross-polytope: radius overflows float64")
        return out
