"""Split the training rows over n logical workers, deterministically from (labels, n, seed, parameters).

Schemes (every shard is non-empty; none depends on MPI ranks):

* ``iid`` — a random permutation cut into n near-equal contiguous blocks;
* ``contiguous`` — the rows in their stored order cut into n consecutive blocks of ``floor(N/n)``
  rows, the remainder going to the last worker (the split of the LAQ and EF21 authors' codes; no
  randomness);
* ``label`` — rows sorted by label (random order within a label), cut into n near-equal blocks:
  each worker sees one or two labels, the most heterogeneous split;
* ``dirichlet`` — label skew: for every class, proportions ``p ~ Dirichlet(alpha 1_n)`` over the
  workers share out that class's rows (Yurochkin et al. 2019; Wang et al. 2020). Small alpha
  gives each worker few classes, large alpha approaches iid. A worker left empty takes one row
  from the currently largest shard;
* ``unbalanced`` — iid rows with shard sizes ``1 + (N - n) w_i / sum w`` (largest-remainder
  rounding), ``w_i ~ LogNormal(0, sigma^2)``; ``sigma = 0`` gives equal sizes.

Randomness comes from ``SeedSequence(seed, spawn_key=(PARTITION_STREAM,))``.
"""

from __future__ import annotations

import numpy as np

PARTITIONS = ("iid", "contiguous", "label", "dirichlet", "unbalanced")
PARTITION_STREAM = 2


def _even_blocks(order: np.ndarray, n_workers: int) -> list[np.ndarray]:
    return [block.copy() for block in np.array_split(order, n_workers)]


def _contiguous_blocks(n_samples: int, n_workers: int) -> list[np.ndarray]:
    """Rows ``m q .. (m + 1) q - 1`` for worker m < n - 1 (``q = floor(N/n)``), the rest to the last worker."""
    size = n_samples // n_workers
    cuts = np.arange(1, n_workers) * size
    return np.split(np.arange(n_samples), cuts)


def _dirichlet_shards(codes: np.ndarray, n_workers: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    pieces: list[list[np.ndarray]] = [[] for _ in range(n_workers)]
    for c in range(int(codes.max()) + 1):
        pool = rng.permutation(np.flatnonzero(codes == c))
        proportions = rng.dirichlet(np.full(n_workers, alpha))
        cuts = np.floor(np.cumsum(proportions)[:-1] * pool.size).astype(np.int64)
        for worker, piece in enumerate(np.split(pool, cuts)):
            pieces[worker].append(piece)
    shards = [np.concatenate(p) for p in pieces]
    for worker in range(n_workers):
        if shards[worker].size == 0:
            donor = max(range(n_workers), key=lambda i: shards[i].size)
            shards[worker], shards[donor] = shards[donor][-1:], shards[donor][:-1]
    return shards


def _unbalanced_sizes(n_samples: int, n_workers: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    weights = rng.lognormal(0.0, sigma, n_workers)
    share = (n_samples - n_workers) * weights / weights.sum()
    extra = np.floor(share).astype(np.int64)
    leftover = n_samples - n_workers - int(extra.sum())
    extra[np.argsort(-(share - extra), kind="stable")[:leftover]] += 1
    return 1 + extra


def partition_indices(
    labels: np.ndarray,
    n_workers: int,
    scheme: str = "iid",
    *,
    seed: int = 0,
    alpha: float = 0.5,
    sigma: float = 1.0,
) -> list[np.ndarray]:
    """Row indices of each worker's shard; together they cover ``range(len(labels))`` exactly once."""
    labels = np.asarray(labels)
    n_samples = labels.shape[0]
    if scheme not in PARTITIONS:
        raise ValueError(f"unknown partition {scheme!r}; choose one of {', '.join(PARTITIONS)}")
    if isinstance(n_workers, bool) or not isinstance(n_workers, (int, np.integer)) or n_workers < 1:
        raise ValueError(f"n_workers must be a positive integer, got {n_workers!r}")
    if n_workers > n_samples:
        raise ValueError(
            f"cannot split {n_samples} training samples over {n_workers} workers: every worker needs at least "
            "one sample; use fewer workers or a larger dataset"
        )
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(PARTITION_STREAM,)))
    if scheme == "iid":
        return _even_blocks(rng.permutation(n_samples), n_workers)
    if scheme == "contiguous":
        return _contiguous_blocks(n_samples, n_workers)
    if scheme == "label":
        perm = rng.permutation(n_samples)
        return _even_blocks(perm[np.argsort(labels[perm], kind="stable")], n_workers)
    if scheme == "dirichlet":
        if not alpha > 0 or not np.isfinite(alpha):
            raise ValueError(f"dirichlet partition needs a finite alpha > 0, got {alpha!r}")
        codes = np.unique(labels, return_inverse=True)[1].ravel()
        return _dirichlet_shards(codes, n_workers, float(alpha), rng)
    if not sigma >= 0 or not np.isfinite(sigma):
        raise ValueError(f"unbalanced partition needs a finite sigma >= 0, got {sigma!r}")
    sizes = _unbalanced_sizes(n_samples, n_workers, float(sigma), rng)
    return np.split(rng.permutation(n_samples), np.cumsum(sizes)[:-1])
