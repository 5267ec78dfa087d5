"""Hyper-sphere quantization, HSQ (Dai, Yan, Zhou, Yang, Ng, Cheng, Fan 2019), as compared in talk 001
(second part): per bucket, a codeword of a fixed unit-vector codebook and a quantized magnitude.

Codebook: ``K = 2^(P-1)`` unit directions ``u_1..u_K`` in R^size (Gaussian rows normalised, drawn
once from a fixed key, :data:`CODEBOOK_SEED`) and their negatives: ``2^P`` codewords, the same for
every worker and every round, never sent. Codeword ``j < K`` is ``u_j``, codeword ``K + j`` is
``-u_j``. Buckets as in :mod:`mpicomp.compressors._buckets`; for bucket b:

* ``mode = "greedy"`` (biased): the codeword ``c`` maximising ``c . b`` (the best direction and
  sign) and the magnitude ``m = ||b||``: ``Q(b) = m c``, error ``2 ||b||^2 (1 - cos theta)`` with
  theta the angle to c (plus the magnitude's rounding). No alpha is claimed: contraction needs every
  direction within 60 degrees of a codeword, which a random codebook does not guarantee.
* ``mode = "span"`` (unbiased): the minimum-norm decomposition ``b = sum_j p_j u_j``,
  ``p = U (U^T U)^-1 b`` (U the K x size matrix of directions; needs ``K >= size``); direction j
  is drawn with probability ``|p_j| / ||p||_1`` and sent with the sign of ``p_j``, magnitude
  ``m = ||p||_1``: ``E Q(b) = sum_j p_j u_j = b``.

Magnitudes: ``nu = max_l m_l`` is the codec scalar; each ``m_l`` is rounded stochastically and
unbiasedly to the levels ``nu k / (2^R - 1)``, ``k = 0..2^R - 1`` (the largest exactly).

omega (span), proved: codewords are unit vectors, so ``E||Q(b_l)||^2 = E m_l^2`` and
``E||Q(x) - x||^2 = sum_l (||p_l||_1^2 - ||b_l||^2) + sum_l Var(m_l)``. With
``kappa = K / lambda_min(U^T U)``, Cauchy-Schwarz gives ``||p||_1^2 <= K ||p||_2^2`` and
``||p||_2^2 = b^T (U^T U)^-1 b <= ||b||^2 / lambda_min``, so the first sum is at most
``(kappa - 1) ||x||^2``. The rounding is l_inf dithering of the m_l with step ``1 / (2^R - 1)``:
its variance is at most ``B sum_l m_l^2 <= B kappa ||x||^2``, B =
:func:`~mpicomp.compressors._levels.rounding_variance_bound` (L buckets, p = inf). So
``omega = kappa (1 + B) - 1``. The bound is loose for typical buckets: kappa = 23.4 at size 16,
P = 10, while Gaussian buckets have ``||p||_1^2 / ||b||^2`` about 10 (the talk's distortion of 146.9
for Gaussian x is about ``(10 - 1) 16``).

Wire (codec ``hsq``): one scalar ``nu``; payload: L codes of ``P + R`` bits, ``j | k << P``,
bucket by bucket; decoded as ``(nu k / (2^R - 1)) c_j``.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from numba import njit

from ..rng import RandomKey
from ..wire import Message, MessageError, pack_uint
from ._buckets import (
    BucketDecoder,
    bucket_count,
    check_integer,
    stochastic_round,
    unit_buckets,
    unpack_codes,
    write_codewords,
    zero_codes,
)
from ._codebook import best_codewords, gaussian_codebook, key_uniforms, tile_rows, tiled
from ._levels import rounding_variance_bound
from .base import Compressor, check_scalar
from .registry import register

MODES = ("greedy", "span")
CODEBOOK_SEED = 0x485351  # "HSQ": the fixed codebook is drawn from RandomKey(CODEBOOK_SEED, P, size)
MAX_INDEX_BITS = 16
MAX_LEVEL_BITS = 16
MAX_SIZE = 64


@cache
def hsq_codewords(size: int, bits: int) -> np.ndarray:
    """The ``(2^bits, size)`` codebook: directions from ``RandomKey(CODEBOOK_SEED, bits, size)``, normalised, then their negatives."""
    directions = gaussian_codebook(RandomKey(CODEBOOK_SEED, bits, size).state, 2 ** (bits - 1), size, 1.0)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    words = np.vstack((directions, -directions))
    words.flags.writeable = False  # cached and shared
    return words


@cache
def span_decomposition(size: int, bits: int) -> tuple[np.ndarray, float]:
    """``((U^T U)^-1 U^T, kappa = K / lambda_min(U^T U))`` for the K = 2^(bits-1) directions U (K >= size)."""
    directions = hsq_codewords(size, bits)[: 2 ** (bits - 1)]
    gram = directions.T @ directions
    decompose = np.linalg.solve(gram, directions.T)
    decompose.flags.writeable = False  # cached and shared
    return decompose, float(directions.shape[0] / np.linalg.eigvalsh(gram)[0])


_ROWS_AT_ONCE = 8  # rows whose running sums advance together (independent add chains overlap)
_MARK_EVERY = 16  # the running sum is kept at the end of every block of this many directions


@njit(cache=True, inline="always")
def _block_marks(p, row, block, marks, r):
    """``marks[r, b]``: the running sum of ``|p[row]|``, in index order, at the end of block b."""
    total = 0.0
    for b in range(marks.shape[1]):
        for j in range(b * block, (b + 1) * block):
            total += abs(p[row, j])
        marks[r, b] = total


@njit(cache=True, nogil=True)
def _draw_directions(p, uniforms, index, l1):
    """Per row of p: ``l1 = ||p||_1`` and the first j whose running sum of ``|p|`` (in index order)
    exceeds ``u l1`` (the last j if none), plus K if ``p_j < 0``.

    The running sums of ``_ROWS_AT_ONCE`` rows advance together and are kept at block ends only; a
    binary search among those finds the block, where the sum is run on from the block's start, in
    the same order: the same sums, hence the same j, as a running sum kept at every index.
    """
    n, k = p.shape
    block = min(_MARK_EVERY, k)  # k = 2^(P-1): a multiple of the block
    marks = np.empty((_ROWS_AT_ONCE, k // block))
    for first in range(0, n, _ROWS_AT_ONCE):
        rows = min(_ROWS_AT_ONCE, n - first)
        if rows == _ROWS_AT_ONCE:  # eight sums in registers
            s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
            for b in range(marks.shape[1]):
                for j in range(b * block, (b + 1) * block):
                    s0 += abs(p[first, j])
                    s1 += abs(p[first + 1, j])
                    s2 += abs(p[first + 2, j])
                    s3 += abs(p[first + 3, j])
                    s4 += abs(p[first + 4, j])
                    s5 += abs(p[first + 5, j])
                    s6 += abs(p[first + 6, j])
                    s7 += abs(p[first + 7, j])
                marks[0, b], marks[1, b], marks[2, b], marks[3, b] = s0, s1, s2, s3
                marks[4, b], marks[5, b], marks[6, b], marks[7, b] = s4, s5, s6, s7
        else:
            for r in range(rows):
                _block_marks(p, first + r, block, marks, r)
        for r in range(rows):
            row = first + r
            total = marks[r, -1]
            l1[row] = total
            target = uniforms[row] * total
            b = np.searchsorted(marks[r, :-1], target, side="right")
            running = marks[r, b - 1] if b > 0 else 0.0
            j, last = b * block, (b + 1) * block - 1
            while j < last:
                running += abs(p[row, j])
                if running > target:
                    break
                j += 1
            index[row] = j + k * (p[row, j] < 0.0)


def span_choices(buckets: np.ndarray, decompose: np.ndarray, uniforms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codeword index, ``||p||_1``) per bucket: direction j drawn with probability ``|p_j| / ||p||_1``.

    ``p = b (U^T U)^-1 U^T`` by tiled GEMM; j is the first index whose cumulative ``|p|`` exceeds
    ``u ||p||_1``; the codeword is ``u_j`` or ``-u_j`` (index ``j + K``) by the sign of ``p_j``.
    """
    n_rows, k = buckets.shape[0], decompose.shape[1]
    index, l1 = np.empty(n_rows, dtype=np.int64), np.empty(n_rows)
    step = tile_rows(k)

    def sample(first: int, end: int) -> int:
        p = np.empty((step, k))  # reused by every tile: no fresh pages per product
        for tile in range(first, end):
            rows = slice(tile * step, min(n_rows, (tile + 1) * step))
            block = p[: rows.stop - rows.start]
            np.matmul(buckets[rows], decompose, out=block)
            _draw_directions(block, uniforms[rows], index[rows], l1[rows])
        return -1

    tiled(sample, n_rows, k)
    return index, l1


@register
class HSQ(BucketDecoder, Compressor):
    """Hyper-sphere quantization: per bucket a codeword of a fixed unit-vector codebook (2^P words) and an R-bit magnitude."""

    name = "hsq"
    unbiased = False  # the default, greedy; mode="span" sets it per instance
    n_scalars = 1

    def __init__(self, mode: str = "greedy", P: int = 10, R: int = 6, size: int = 16) -> None:
        if mode not in MODES:
            raise ValueError(f"hsq: mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.unbiased = mode == "span"
        self.P = check_integer(self.name, "P (codeword index bits)", P, 2, MAX_INDEX_BITS)
        self.R = check_integer(self.name, "R (magnitude bits)", R, 1, MAX_LEVEL_BITS)
        self.size = check_integer(self.name, "size (bucket dimension)", size, 1, MAX_SIZE)
        if self.unbiased and 2 ** (self.P - 1) < self.size:
            raise ValueError(f"hsq: span needs 2^(P-1) >= size directions to span a bucket, got P={P}, size={size}")

    @property
    def params(self) -> dict[str, object]:
        return {"mode": self.mode, "P": self.P, "R": self.R, "size": self.size}

    @property
    def code_bits(self) -> int:
        """Bits per bucket: ``P + R``."""
        return self.P + self.R

    def expected_bits(self, d: int) -> float:
        return float(bucket_count(d, self.size) * self.code_bits)

    def omega(self, d: int) -> float | None:
        if not self.unbiased:
            return None
        kappa = span_decomposition(self.size, self.P)[1]
        return kappa * (1.0 + rounding_variance_bound(bucket_count(d, self.size), 1.0 / (2**self.R - 1), np.inf)) - 1.0

    def _encode(self, x: np.ndarray, key: RandomKey) -> tuple[tuple[float, ...], np.ndarray]:
        n_buckets = bucket_count(x.size, self.size)
        norm, buckets = unit_buckets(self.name, x, self.size)
        if norm == 0.0:
            return (0.0,), zero_codes(n_buckets, self.code_bits)
        uniforms = key_uniforms(key.state, 0, 2 * n_buckets)
        if self.unbiased:
            index, magnitude = span_choices(buckets, span_decomposition(self.size, self.P)[0], uniforms[:n_buckets])
        else:
            index, magnitude = (
                best_codewords(buckets, hsq_codewords(self.size, self.P)),
                np.linalg.norm(buckets, axis=1),
            )
        top = float(magnitude.max())
        levels = 2**self.R - 1
        level = stochastic_round(magnitude, top * (np.arange(levels + 1) / levels), uniforms[n_buckets:])
        return (norm * top,), pack_uint(index | level << self.P, self.code_bits)

    def _write_buckets(
        self, msg: Message, key: RandomKey | None, out: np.ndarray, accumulate: bool, scale: float
    ) -> None:
        """Bucket l: its codeword ``u_l`` times ``T k_l / (2^R - 1)`` (T the scalar, ``k_l`` its level),
        written into ``out`` or (``accumulate``) ``scale`` times it added, in one kernel pass."""
        top = check_scalar(msg.scalars[0], "hsq magnitude")
        codes = unpack_codes(msg.payload, bucket_count(msg.d, self.size), self.code_bits, self.name)
        if top == 0.0 and codes.any():
            raise MessageError("hsq: nonzero codes in a message of magnitude 0")
        magnitudes = top * (np.arange(2**self.R) / (2**self.R - 1))
        write_codewords(hsq_codewords(self.size, self.P), codes, self.P, magnitudes, 1.0, out, accumulate, scale)
