"""Codebooks drawn from a RandomKey, and the nearest-codeword search as a tiled matrix product.

Gaussian codebook of a key: codeword j of dimension d has coordinates
``c_{jk} = scale * random_normal(state, j d + k)`` (the key's standard normals number
``j d + k``, i.e. its uniforms ``2(j d + k)`` and ``2(j d + k) + 1``). It is drawn whole by the
encoder, and by the decoder whole or codeword by codeword (:func:`gaussian_codewords`, when there
are fewer buckets than codewords), so it never travels.
A codec that needs more randomness from the same key takes uniforms from number
``codebook_uniforms(m, d)`` on, disjoint from the codebook's.

Search: for buckets ``B`` (L x d) and codewords ``C`` (M x d), the best codeword of bucket l
maximises ``b_l . c_j + offset_j`` (``offset_j = -||c_j||^2 / 2`` turns this into the nearest
codeword, ``argmin_j ||b_l - c_j||^2``). The scores of a tile of buckets against all codewords are
one float32 BLAS matrix product ``[B, 1] [C, offset]^T``; tiles keep that block near
``TILE_SCORES`` entries, so memory stays bounded at any L, and run in parallel threads. Scores are
rounded to float32: a codeword within about 1e-7 relative of the best may win instead, which no
statistic here can see.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numba
import numpy as np
from numba import njit
from threadpoolctl import ThreadpoolController

from ..rng import random_normal, random_uniform
from ..wire.bitpack import run_split

TILE_SCORES = 1 << 19  # float32 scores per tile (2 MiB): the block stays in cache while argmax reads it


@njit(cache=True)
def _fill_gaussian(state, scale, out):
    m, d = out.shape
    for j in range(m):
        for k in range(d):
            out[j, k] = scale * random_normal(state, j * d + k)


@njit(cache=True)
def _fill_codewords(state, scale, indices, out):
    d = out.shape[1]
    for row in range(indices.size):
        base = indices[row] * d
        for k in range(d):
            out[row, k] = scale * random_normal(state, base + k)


@njit(cache=True)
def _fill_uniforms(state, first, out):
    for i in range(out.size):
        out[i] = random_uniform(state, first + i)


def key_uniforms(state: np.uint64, first: int, n: int) -> np.ndarray:
    """The key's uniforms number ``first .. first + n - 1`` (``RandomKey.uniform`` starts at 0)."""
    out = np.empty(n)
    _fill_uniforms(state, first, out)
    return out


def gaussian_codebook(state: np.uint64, m: int, d: int, scale: float) -> np.ndarray:
    """The ``(m, d)`` codebook ``scale * N(0, I_d)`` of the key state (float64)."""
    out = np.empty((m, d))
    _fill_gaussian(state, scale, out)
    return out


def gaussian_codewords(state: np.uint64, indices: np.ndarray, d: int, scale: float) -> np.ndarray:
    """Rows ``indices`` of :func:`gaussian_codebook` (any m above them), computed without the rest."""
    out = np.empty((indices.size, d))
    _fill_codewords(state, scale, np.ascontiguousarray(indices, dtype=np.int64), out)
    return out


def codebook_uniforms(m: int, d: int) -> int:
    """Index of the key's first uniform not used by an ``(m, d)`` Gaussian codebook: ``2 m d``."""
    return 2 * m * d


def tile_rows(n_codewords: int) -> int:
    """Buckets per tile: a tile's score block against ``n_codewords`` stays near ``TILE_SCORES`` entries."""
    return max(1, TILE_SCORES // max(1, n_codewords))


@cache
def _threadpools() -> ThreadpoolController:
    return ThreadpoolController()


def tiled(search: Callable[[int, int], int], n_rows: int, n_codewords: int) -> None:
    """Run ``search(first_tile, end_tile)`` over the tiles of ``n_rows`` buckets, split over threads.

    Each tile's GEMM is small, so BLAS runs single-threaded and the tiles are shared out instead
    (:func:`mpicomp.wire.bitpack.run_split`); tile boundaries depend only on the sizes, so the
    result does not depend on the number of threads.
    """
    n_tiles = -(-n_rows // tile_rows(n_codewords))
    with _threadpools().limit(limits=1, user_api="blas"):
        run_split(search, n_tiles, min(n_tiles, numba.get_num_threads()))


def best_codewords(buckets: np.ndarray, codebook: np.ndarray, offsets: np.ndarray | None = None) -> np.ndarray:
    """``argmax_j b_l . c_j + offsets_j`` for every bucket row ``b_l``, by tiled float32 GEMM (int64, length L)."""
    n_rows, d = buckets.shape
    m = codebook.shape[0]
    right = np.empty((d + 1, m), dtype=np.float32)
    right[:d] = codebook.T
    right[d] = 0.0 if offsets is None else offsets
    left = np.ones((n_rows, d + 1), dtype=np.float32)
    left[:, :d] = buckets
    best = np.empty(n_rows, dtype=np.int64)
    step = tile_rows(m)

    def search(first: int, end: int) -> int:
        scores = np.empty((step, m), dtype=np.float32)
        for tile in range(first, end):
            rows = slice(tile * step, min(n_rows, (tile + 1) * step))
            block = scores[: rows.stop - rows.start]
            np.matmul(left[rows], right, out=block)
            best[rows] = block.argmax(axis=1)
        return -1

    tiled(search, n_rows, m)
    return best
