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

from ..rng import RandomKey, random_uniform
from ..wire import Message, MessageError, index_bits, pack_uint
from ._buckets import (
    BucketDecoder,
    bucket_count,
    check_integer,
    unpack_codes,
)
from ._levels import code_dtype
from ._vertex_lanes import BLOCK, LANES, draw_lane_pair
from .base import Compressor, check_scalar, non_finite_input
from .registry import register

MAX_SAMPLES = 1024
MAX_SIZE = 1 << 16


_TINY = 2.0**-900  # a largest squared bucket norm below this is recomputed on a rescaled x


@njit(cache=True, nogil=True, fastmath={"reassoc"})  # reassociation lets the bucket sums vectorize
def _bucket_squares(x, size, pre, squares):
    """Per bucket l: ``squares[l] = sum (x_i pre)^2``. Loops run over a slice of each bucket from index 0:
    on ``x[i]`` with ``i`` from ``l size`` numba's negative-index check keeps them from vectorizing (5x slower)."""
    for row in range(squares.size):
        bucket = x[row * size : row * size + size]
        square = 0.0
        for i in range(bucket.size):
            value = float64(bucket[i]) * pre
            square += value * value
        squares[row] = square


def largest_bucket_norm(x: np.ndarray, size: int) -> tuple[float, float]:
    """``(nu pre, pre)`` for ``nu = max_l ||x_l||_2``, with ``pre`` 1 or, where squares would over- or
    underflow, the power of two that brings ``max |x_i| pre`` to [1, 2). ValueError for NaN or Inf."""
    squares = np.empty(bucket_count(x.size, size))
    pre = 1.0
    _bucket_squares(x, size, pre, squares)
    top = float(squares.max(initial=0.0))  # d = 0: no bucket, nu = 0
    if not np.isfinite(top) or 0.0 < top < _TINY:
        finite = np.isfinite(x)
        if not finite.all():
            raise non_finite_input(x, int(np.flatnonzero(~finite)[0]))
        pre = float(np.ldexp(1.0, -np.frexp(np.abs(x).max())[1]))
        _bucket_squares(x, size, pre, squares)
        top = float(squares.max())
    return float(np.sqrt(top)), pre


@njit(cache=True, nogil=True, error_model="numpy")
def _draw_bucket_vertices(x, size, nu_scaled, pre, state, samples, shift, codes, first_row):
    """:func:`_draw_vertices` of the buckets from ``first_row`` on, bucket by bucket. Both cases of a draw are
    computed and one taken arithmetically: a branch on ``u < a`` would be mispredicted half the time."""
    running = np.empty(size)
    for row in range(first_row, codes.size // samples):
        bucket = x[row * size : row * size + size]  # a slice: see _bucket_squares
        n = bucket.size
        total = 0.0
        for i in range(n):
            total += abs(float64(bucket[i])) * pre
            running[i] = total
        radius = np.sqrt(float64(n)) * nu_scaled
        mass = total / radius
        spread_scale = 2.0 * float64(n) / (1.0 - mass)  # inf when mass = 1: then u < mass always
        for draw in range(samples):
            u = random_uniform(state, row * samples + draw)
            target = u * radius
            passed = 0  # the first i whose running sum of |x| passes u radius
            for i in range(n):
                passed += running[i] <= target
            inside = min(passed, n - 1)
            spread = min(int64((u - mass) * spread_scale), 2 * n - 1)  # one of the 2n vertices, if u >= mass
            picked = int64(u < mass)
            index = (spread >> 1) + picked * (inside - (spread >> 1))
            negative = (spread & 1) + picked * (int64(bucket[inside] < 0.0) - (spread & 1))
            codes[row * samples + draw] = index | negative << shift


@njit(cache=True, nogil=True)
def _draw_vertices(x, size, nu_scaled, pre, state, samples, shift, codes):
    """Per bucket l and draw k: the code of a vertex drawn with the barycentric weights (see
    :func:`draw_vertices`), with uniform number ``l samples + k`` of the key state; in units of
    ``1 / pre`` (see :func:`largest_bucket_norm`). Tiles of LANES buckets, two draws per call of
    :func:`~mpicomp.compressors._vertex_lanes.draw_lane_pair` (a tile whose blocks of 8 coordinates would
    read past the end of x through a zero-padded copy); the last buckets, fewer than LANES, one by one
    with the same arithmetic (:func:`_draw_bucket_vertices`)."""
    d = x.size
    rows = codes.size // samples
    tiled = rows - rows % LANES
    reach = (LANES - 1) * size + -(-size // BLOCK) * BLOCK  # coordinates read from a tile's start
    for r0 in range(0, tiled, LANES):
        source, base = x, r0 * size
        if base + reach > d:
            source, base = np.zeros(reach, dtype=x.dtype), 0
            source[: d - r0 * size] = x[r0 * size :]
        for k in range(0, samples, 2):
            first = r0 * samples + k
            draw_lane_pair(
                source, base, size, d - r0 * size, pre, nu_scaled, state, first, samples, shift, LANES, codes
            )
    if tiled < rows:
        _draw_bucket_vertices(x, size, nu_scaled, pre, state, samples, shift, codes, tiled)


def draw_vertices(x: np.ndarray, size: int, samples: int, state: np.uint64) -> tuple[float, np.ndarray]:
    """``(nu, codes)``: ``nu = max_l ||x_l||_2`` and the codes ``i | negative << b`` (b =
    ``index_bits(size)``) of ``samples`` vertices ``±sqrt(n_l) nu e_i`` per bucket l, bucket after
    bucket (all 0 when ``nu = 0``).

    One uniform u per draw: ``u < a = ||x_l||_1 / (sqrt(n_l) nu)`` picks coordinate i with probability
    ``|x_i| / (sqrt(n_l) nu)`` (the first i whose running sum of ``|x|`` exceeds ``u sqrt(n_l) nu``)
    with the sign of ``x_i``; otherwise ``(u - a) / (1 - a)`` picks one of the 2n vertices uniformly.
    """
    nu_scaled, pre = largest_bucket_norm(x, size)
    codes = np.zeros(bucket_count(x.size, size) * samples, dtype=code_dtype(1 + index_bits(size)))
    if nu_scaled > 0.0:
        _draw_vertices(x, size, nu_scaled, pre, state, samples, index_bits(size), codes)
    return nu_scaled / pre, codes


@register
class CrossPolytope(BucketDecoder, Compressor):
    """Cross-polytope (vqSGD): per bucket, ``samples`` vertices ±sqrt(n) nu e_i drawn by barycentric weights; unbiased."""

    name = "cross-polytope"
    unbiased = True
    n_scalars = 1
    checks_finite = True  # the bucket-norm pass rejects NaN and Inf

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
        nu, codes = draw_vertices(x, self.size, self.samples, key.state)
        if not np.isfinite(np.sqrt(self.size) * nu):
            raise ValueError(
                f"{self.name}: the vertex radius sqrt(size) max_l ||x_l||_2 overflows float64; scale x down"
            )
        return (nu,), pack_uint(codes, self.code_bits)

    def _write_buckets(
        self, msg: Message, key: RandomKey | None, out: np.ndarray, accumulate: bool, scale: float
    ) -> None:
        """Every bucket's mean of its drawn vertices written into ``out`` or (``accumulate``) ``scale``
        times it added, in one kernel pass."""
        top = check_scalar(msg.scalars[0], "cross-polytope radius")
        codes = unpack_codes(msg.payload, bucket_count(msg.d, self.size) * self.samples, self.code_bits, self.name)
        fault = _write_vertex_means(codes, self.samples, self.size, index_bits(self.size), top, out, accumulate, scale)
        if fault != _DECODED:
            raise MessageError(_DECODE_FAULTS[fault])


_DECODED, _ZERO_RADIUS_CODE, _INDEX_BEYOND, _OVERFLOW = range(4)
_DECODE_FAULTS = {
    _ZERO_RADIUS_CODE: "cross-polytope: nonzero codes in a message of radius 0",
    _INDEX_BEYOND: "cross-polytope: a vertex index beyond its bucket's coordinates",
    _OVERFLOW: "cross-polytope: radius overflows float64",
}


@njit(cache=True, nogil=True)
def _write_vertex_means(codes, samples, size, shift, top, out, accumulate, scale):
    """Bucket l (n coordinates): the mean of its ``samples`` vertices ``(-1)^negative sqrt(n) nu e_i``,
    summed from zero in draw order, written into ``out`` or (``accumulate``) ``scale`` times it added;
    returns ``_DECODED`` or the first fault met, bucket by bucket (``out`` then holds part of it)."""
    d = out.size
    sums = np.zeros(size)
    for bucket in range(codes.size // samples):
        lo = bucket * size
        target = out[lo : min(lo + size, d)]
        n = target.size
        step = np.sqrt(float64(n)) * top / samples
        for j in range(n):
            sums[j] = 0.0
        for s in range(bucket * samples, (bucket + 1) * samples):
            code = codes[s]
            if top == 0.0 and code != 0:
                return _ZERO_RADIUS_CODE
            i = code & ((1 << shift) - 1)
            if i >= n:
                return _INDEX_BEYOND
            sums[i] += -step if code >> shift else step
            if sums[i] * 0.0 != 0.0:  # Inf: it stays Inf in the later sums (NaN cannot arise from a finite nu)
                return _OVERFLOW
        for j in range(n):
            if accumulate:
                target[j] += sums[j] * scale
            else:
                target[j] = sums[j]
    return _DECODED
