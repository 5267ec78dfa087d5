"""The problem contract: ``f(x) = (1/n) sum_i f_i(x)`` split over n logical workers, plus R.

``f_i(x) = (1/m_i) sum_j loss(a_ij, b_ij; x) + smooth regularisers`` is worker i's local
objective on its shard of ``m_i`` samples; ``R`` is an optional nonsmooth regulariser handled
through its prox by the methods that support it. Metrics report ``F(x) = f(x) + R(x)``.

Samplers see the same shards through the **sample-weighted** view: the posterior
``pi(theta) ∝ exp(-U(theta))`` with the potential ``U = sum_i U_i``, ``U_i = m_i f_i`` (a sum over
every sample, the smooth regulariser ``(l2/2)||theta||^2`` per sample acting as the Gaussian prior
``N(0, I / (M l2))``, M the number of samples), and its MAP ``theta* = argmin U`` — not the
worker-weighted optimum of f, which differs when the shards are unbalanced.

**Who holds what.** A problem built for one MPI rank (``collective`` set) holds only the shards of
that rank's workers (``local_workers``); anything over every worker (``F``, ``grad f``, ``U``, the
constants, the reference optimum) is then **collective**: every rank computes one row per local
worker and :meth:`Problem.sum_workers` adds them in one fixed binary tree over the worker ids
(:mod:`mpicomp.comm.worker_tree`: each rank folds its own workers, ``O(log n)`` rows in memory), so the
value has the same bits whatever the rank layout. Per-worker values that are not summed meet in
worker order through :meth:`Problem.gather_workers` (and :func:`worker_sum` folds such rows left to
right). Without a collective every worker is local and the same code runs in one process.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Literal, Protocol, overload

import numpy as np

from ..comm.worker_tree import tree_sum
from .optimum import lbfgs
from .regularizers import ElasticNet

MAP_GTOL = 1e-10  # L-BFGS tolerance on the gradient of U / M at the MAP


class Collective(Protocol):
    """How the processes of a run combine per-worker values; the transports of :mod:`mpicomp.comm` satisfy it."""

    @property
    def local_workers(self) -> range:
        """The workers whose shards this process holds."""

    @property
    def is_master(self) -> bool:
        """True on the process that logs the metrics and writes the caches."""

    def gather_partials(self, per_local_worker: np.ndarray, *, everyone: bool = False) -> np.ndarray | None:
        """One float64 row per local worker in, every worker's row in worker order out (``(n_workers, m)``),
        on the master or, with ``everyone``, on every process; ``None`` elsewhere."""

    def sum_partials(
        self, rows_of: Callable[[range], np.ndarray], width: int, *, everyone: bool = False
    ) -> np.ndarray | None:
        """The sum of every worker's row (``rows_of(workers)``: the ``(len(workers), width)`` rows of a block of
        local workers) in the fixed worker tree, on the master or, with ``everyone``, on every process; ``None``
        elsewhere."""

    def agree(self, code: int | None) -> int:
        """The master's small integer (others pass ``None``), on every process."""


class Rows(Protocol):
    """Row-indexed features: a dense array or a ``scipy.sparse`` matrix."""

    @property
    def shape(self) -> tuple[int, ...]:
        """``(rows, columns)``."""


def held_out_blocks(n_test: int, n_workers: int) -> np.ndarray:
    """Every worker's number of held-out rows: the split cut into ``n_workers`` contiguous near-equal blocks."""
    return np.array([len(block) for block in np.array_split(np.arange(n_test), n_workers)], dtype=np.int64)


def held_out_sizes(
    features: Rows | None,
    targets: np.ndarray | None,
    sizes: Sequence[int] | np.ndarray | None,
    n_workers: int,
    collective: Collective | None,
) -> np.ndarray | None:
    """Every worker's block of the held-out split (None without one), checked against the local rows given."""
    if (features is None) != (targets is None):
        raise ValueError("give both test_features and test_targets, or neither")
    if features is None or targets is None:
        return None
    n_rows = features.shape[0]
    if len(targets) != n_rows:
        raise ValueError(f"test features have {n_rows} rows but {len(targets)} targets")
    if sizes is None and collective is not None:
        raise ValueError("give test_sizes (every worker's block of the held-out split) with a collective")
    sizes = held_out_blocks(n_rows, n_workers) if sizes is None else np.asarray(sizes, dtype=np.int64)
    local = range(n_workers) if collective is None else collective.local_workers
    if sizes.shape != (n_workers,) or sizes[local.start : local.stop].sum() != n_rows:
        raise ValueError(f"test_sizes {sizes[:10]} do not match {n_rows} held-out rows of workers {local}")
    return sizes


def worker_sum(rows: np.ndarray) -> np.ndarray:
    """``sum_w rows[w]`` as the left fold ``((rows_0 + rows_1) + rows_2) + ...`` in worker-id order.

    One fixed order of additions, so the sum has the same bits whatever the rank layout that
    produced the rows (``rows`` holds at least one row).
    """
    total = np.array(rows[0], dtype=np.float64)
    for row in rows[1:]:
        total += row
    return total


class LocalObjective(ABC):
    """Worker i's shard: ``f_i`` and its (minibatch, per-sample) gradients."""

    m: int  # number of samples on this shard
    d: int

    @abstractmethod
    def loss(self, x: np.ndarray) -> float:
        """``f_i(x)`` on the whole shard (including the smooth regularisers)."""

    @abstractmethod
    def grad(self, x: np.ndarray) -> np.ndarray:
        """``grad f_i(x)`` on the whole shard."""

    @abstractmethod
    def grad_batch(self, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """``(1/|B|) sum_{j in B} grad f_ij(x)`` for shard sample indices ``idx`` (with the smooth regularisers).

        ``f_ij`` is sample j's loss plus the smooth regularisers, so ``f_i = (1/m_i) sum_j f_ij``;
        ``idx`` of length 1 gives one per-sample gradient, repeated indices count repeatedly.
        """

    def minibatch_grad(self, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """:meth:`grad_batch` for indices known to be valid (a method's own sample of the shard: a
        non-empty int array of distinct indices in range) and a float64 ``x`` of length d, with the
        same bits; shards override it to skip the checks (a round calls it once per worker)."""
        return self.grad_batch(x, idx)

    def sample_grads(self, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Rows ``grad f_ij(x)`` for ``j in idx``, shape ``(len(idx), d)``; shards override it vectorised."""
        return np.stack([self.grad_batch(x, np.array([j])) for j in idx])

    def loss_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """``(f_i(x), grad f_i(x))``; shards override it to share one pass over their rows."""
        return self.loss(x), self.grad(x)


class Problem(ABC):
    """A distributed objective with per-worker shards, a reference optimum and metrics.

    Methods marked *collective* must be called on every process of a run, in the same order.
    """

    d: int
    n_workers: int
    regularizer: ElasticNet = ElasticNet()  # the nonsmooth R; the default is R = 0
    collective: Collective | None = None  # None: every worker's shard is in this process
    test_sizes: np.ndarray | None = None  # every worker's block of the held-out split (None: no split)

    @abstractmethod
    def local(self, worker: int) -> LocalObjective:
        """Worker ``worker``'s local objective (built from its shard only; a local worker's)."""

    def minibatch_grads(
        self, x: np.ndarray, workers: Sequence[int], samples: Sequence[np.ndarray | None], out: np.ndarray
    ) -> np.ndarray:
        """Row j of ``out`` (``(len(workers), d)`` float64): ``grad f_w(x)`` of the local worker ``w = workers[j]``
        on its minibatch ``samples[j]`` (valid, distinct shard indices; ``None``: the whole shard), the bits of
        ``local(w).minibatch_grad(x, samples[j])`` (``local(w).grad(x)``). Returns ``out``; problems override it
        to share the per-worker work (a round asks it for a rank's many workers at once)."""
        for row, w, idx in zip(out, workers, samples, strict=True):
            local = self.local(w)
            row[:] = local.grad(x) if idx is None else local.minibatch_grad(x, idx)
        return out

    @property
    def local_workers(self) -> range:
        """The workers whose shards this process holds."""
        return range(self.n_workers) if self.collective is None else self.collective.local_workers

    @property
    def is_master(self) -> bool:
        """True on the process that gets the metrics' totals and writes the caches."""
        return self.collective is None or self.collective.is_master

    def _not_local(self, worker: int) -> IndexError:
        """The error for asking this process for a shard it does not hold."""
        if not 0 <= worker < self.n_workers:
            return IndexError(f"worker must be in [0, {self.n_workers}), got {worker}")
        return IndexError(f"worker {worker}'s shard is held by another process (this one holds {self.local_workers})")

    @overload
    def gather_workers(self, per_local_worker: np.ndarray, *, everyone: Literal[True] = True) -> np.ndarray: ...

    @overload
    def gather_workers(self, per_local_worker: np.ndarray, *, everyone: bool) -> np.ndarray | None: ...

    def gather_workers(self, per_local_worker: np.ndarray, *, everyone: bool = True) -> np.ndarray | None:
        """Collective: every worker's row, ``(n_workers, m)`` in worker order, from each process's local rows;
        on every process, or with ``everyone=False`` on the master only (``None`` elsewhere)."""
        if self.collective is None:
            return np.asarray(per_local_worker, dtype=np.float64)
        rows = self.collective.gather_partials(per_local_worker, everyone=everyone)
        assert rows is not None or not everyone, "gather_partials with everyone returns on every process"
        return rows

    def agree(self, flag: bool) -> bool:
        """Collective: the master's ``flag`` on every process."""
        return flag if self.collective is None else bool(self.collective.agree(int(flag) if self.is_master else None))

    @overload
    def sum_workers(
        self, row_of: Callable[[int], np.ndarray], width: int, *, everyone: Literal[True] = True
    ) -> np.ndarray: ...

    @overload
    def sum_workers(self, row_of: Callable[[int], np.ndarray], width: int, *, everyone: bool) -> np.ndarray | None: ...

    def sum_workers(
        self, row_of: Callable[[int], np.ndarray], width: int, *, everyone: bool = True
    ) -> np.ndarray | None:
        """Collective: ``sum_w row_of(w)`` over every worker (``row_of(w)``: a row of ``width`` values, asked
        of the process holding w), added in one fixed tree over the worker ids (the same bits whatever
        the rank layout, ``O(log n)`` rows in memory); on every process, or with ``everyone=False`` on the
        master only (``None`` elsewhere). :meth:`sum_worker_blocks` takes the rows a block of workers at a time."""

        def rows_of(workers: range) -> np.ndarray:
            rows = np.empty((len(workers), width))
            for row, w in zip(rows, workers, strict=True):
                row[:] = np.reshape(row_of(w), width)  # copied as it comes: row_of may reuse its buffer
            return rows

        return self.sum_worker_blocks(rows_of, width, everyone=everyone)

    @overload
    def sum_worker_blocks(
        self, rows_of: Callable[[range], np.ndarray], width: int, *, everyone: Literal[True] = True
    ) -> np.ndarray: ...

    @overload
    def sum_worker_blocks(
        self, rows_of: Callable[[range], np.ndarray], width: int, *, everyone: bool
    ) -> np.ndarray | None: ...

    def sum_worker_blocks(
        self, rows_of: Callable[[range], np.ndarray], width: int, *, everyone: bool = True
    ) -> np.ndarray | None:
        """:meth:`sum_workers` with the rows asked for a block of workers at a time: ``rows_of(workers)`` gives the
        ``(len(workers), width)`` rows of a range of local workers (at most ``worker_tree.fold_block(width)``), so
        that a problem can compute them together; the same tree, the same bits, one block more in memory."""
        if self.collective is None:
            return tree_sum(rows_of, self.n_workers, width)
        total = self.collective.sum_partials(rows_of, width, everyone=everyone)
        assert total is not None or not everyone, "sum_partials with everyone returns on every process"
        return total

    def worker_rows(self, x: np.ndarray, workers: range) -> np.ndarray:
        """Row j: ``[f_w(x), grad f_w(x)]`` of the local worker ``w = workers[j]`` (``1 + d`` values), from its
        ``loss_and_grad``; problems with a faster way for many workers (the same bits) override this."""
        rows = np.empty((len(workers), 1 + self.d))
        for row, w in zip(rows, workers, strict=True):
            row[0], row[1:] = self.local(w).loss_and_grad(x)
        return rows

    @overload
    def smooth_loss_and_grad(self, x: np.ndarray, *, everyone: Literal[True] = True) -> tuple[float, np.ndarray]: ...

    @overload
    def smooth_loss_and_grad(self, x: np.ndarray, *, everyone: bool) -> tuple[float, np.ndarray] | None: ...

    def smooth_loss_and_grad(self, x: np.ndarray, *, everyone: bool = True) -> tuple[float, np.ndarray] | None:
        """Collective: ``(f(x), grad f(x))``, ``f = (1/n) sum_w f_w`` with the sum the :meth:`sum_worker_blocks` of
        every worker's row (:meth:`worker_rows`); on every process, or with ``everyone=False`` on the master only."""
        total = self.sum_worker_blocks(lambda workers: self.worker_rows(x, workers), 1 + self.d, everyone=everyone)
        if total is None:
            return None
        total /= self.n_workers
        return float(total[0]), total[1:]

    @overload
    def loss_and_grad(self, x: np.ndarray, *, everyone: Literal[True] = True) -> tuple[float, np.ndarray]: ...

    @overload
    def loss_and_grad(self, x: np.ndarray, *, everyone: bool) -> tuple[float, np.ndarray] | None: ...

    def loss_and_grad(self, x: np.ndarray, *, everyone: bool = True) -> tuple[float, np.ndarray] | None:
        """Collective: ``(F(x), grad f(x))`` with ``F = f + R`` (:meth:`smooth_loss_and_grad`)."""
        smooth = self.smooth_loss_and_grad(x, everyone=everyone)
        if smooth is None:
            return None
        return smooth[0] + self.regularizer.value(x), smooth[1]

    def loss(self, x: np.ndarray) -> float:
        """Collective: ``F(x) = (1/n) sum_i f_i(x) + R(x)``."""
        return self.loss_and_grad(x)[0]

    def grad(self, x: np.ndarray) -> np.ndarray:
        """Collective: ``grad f(x)`` (smooth part only)."""
        return self.loss_and_grad(x)[1]

    def prox(self, v: np.ndarray, gamma: float) -> np.ndarray:
        """``prox_{gamma R}(v) = argmin_u R(u) + ||u - v||^2 / (2 gamma)``."""
        return self.regularizer.prox(v, gamma)

    @abstractmethod
    def x0(self) -> np.ndarray:
        """The starting point (zeros unless the problem says otherwise)."""

    @abstractmethod
    def smoothness(self) -> float:
        """An upper bound L on the smoothness constant of every f_i."""

    @abstractmethod
    def sample_smoothness(self) -> float:
        """An upper bound L_max on the smoothness constant of every single-sample f_ij."""

    def strong_convexity(self) -> float:
        """A lower bound mu on the strong-convexity constant of F = f + R (0 if not strongly convex)."""
        return 0.0

    def optimum(self) -> tuple[np.ndarray, float] | None:
        """Collective: reference ``(x*, F*)`` (cached) on the master, or None for nonconvex problems."""
        return None

    def test_correct(self, x: np.ndarray) -> np.ndarray | None:
        """Whether each held-out row of the local workers' blocks is classified correctly (None: not a classifier)."""
        return None

    def test_class_probabilities(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """``(p, y)``: the model's class probabilities ``p(c | a_j, x)`` (rows x classes) of the held-out rows
        of the local workers' blocks and their class indices ``y_j`` (None: not a multiclass model)."""
        return None

    def test_accuracy(self, x: np.ndarray) -> float | None:
        """Collective: the fraction of held-out rows classified correctly, on the master (None elsewhere, and
        without a held-out split or a classifier). Each worker scores its block of the split
        (``test_sizes``); the master adds the integer counts, exactly."""
        if self.test_sizes is None or self.test_sizes.sum() == 0:
            return None
        correct = self.test_correct(x)
        if correct is None:
            return None
        local = self.local_workers
        ends = np.cumsum(self.test_sizes[local.start : local.stop])
        counts = [[np.count_nonzero(block)] for block in np.split(correct, ends[:-1])] if len(local) else []
        rows = self.gather_workers(np.array(counts, dtype=np.float64).reshape(-1, 1), everyone=False)
        return None if rows is None else float(rows.sum() / self.test_sizes.sum())

    # --- the posterior view (samplers) ------------------------------------------------
    @abstractmethod
    def sample_counts(self) -> np.ndarray:
        """``m_i``, the samples of every worker's shard (int64), on every rank: each problem knows
        them without building the shards (a rank holds only its own workers')."""

    def potential_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Collective: ``(U(x), grad U(x))`` with ``U = sum_i m_i f_i`` (module docstring), a :meth:`sum_worker_blocks`
        of ``m_w`` times every worker's row (:meth:`worker_rows`)."""
        counts = self.sample_counts()
        total = self.sum_worker_blocks(
            lambda workers: counts[workers.start : workers.stop, None] * self.worker_rows(x, workers), 1 + self.d
        )
        return float(total[0]), total[1:]

    def potential_smoothness(self) -> float:
        """An upper bound on the smoothness of U: ``M max_i L_i`` (problems with per-shard constants tighten it)."""
        return float(self.sample_counts().sum()) * self.smoothness()

    def map_point(self) -> np.ndarray:
        """Collective: ``theta* = argmin U`` by L-BFGS on ``U / M`` (problems with a closed form override it)."""
        total = float(self.sample_counts().sum())

        def scaled(x: np.ndarray) -> tuple[float, np.ndarray]:
            value, grad = self.potential_and_grad(x)
            return value / total, grad / total

        return lbfgs(scaled, self.x0(), MAP_GTOL)

    def posterior(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Collective: the reference posterior mean and per-coordinate variance of ``exp(-U)`` on the master,
        or None if unknown."""
        return None
