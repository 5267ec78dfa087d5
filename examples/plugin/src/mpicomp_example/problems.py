"""``quadratics``: worker i minimises ``f_i(x) = (1/m) sum_j ||x - c_ij||^2 / 2 + (l2/2) ||x||^2``.

The points ``c_ij ~ N(mu_i, I)`` around worker means ``mu_i ~ N(0, 4 I)`` (``dataset = "d=20,points=50"``,
both optional) depend only on the seed and the worker id, so every rank builds the same shards.
Every ``f_i`` is ``(1 + l2)``-smooth and strongly convex.
"""

from __future__ import annotations

import numpy as np

from mpicomp.problems import LocalObjective, Problem


class QuadraticShard(LocalObjective):
    """Worker i's points and ``f_i``."""

    def __init__(self, points: np.ndarray, l2: float) -> None:
        self.points, self.l2 = points, l2
        self.m, self.d = points.shape

    def loss(self, x: np.ndarray) -> float:
        return 0.5 * float(np.mean(np.sum((x - self.points) ** 2, axis=1))) + 0.5 * self.l2 * float(x @ x)

    def grad(self, x: np.ndarray) -> np.ndarray:
        return x - self.points.mean(axis=0) + self.l2 * x

    def grad_batch(self, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return x - self.points[idx].mean(axis=0) + self.l2 * x


class Quadratics(Problem):
    """quadratics: worker i pulls x towards its own cloud of points (f_i = mean ||x - c_ij||^2 / 2 + l2 ||x||^2 / 2)."""

    def __init__(self, n_workers: int, *, dataset: str, l2: float, seed: int, collective=None) -> None:
        options = {"d": 20, "points": 50}
        for item in filter(None, dataset.split(",")):
            key, _, value = item.partition("=")
            if key not in options:
                raise ValueError(f"quadratics: dataset key {key!r} is not one of {', '.join(options)}")
            options[key] = int(value)
        self.n_workers, self.d, self.points, self.l2 = n_workers, options["d"], options["points"], l2
        self.collective = collective
        self.shards = {}
        for w in self.local_workers:
            rng = np.random.default_rng([seed, w])
            center = 2.0 * rng.standard_normal(self.d)
            self.shards[w] = QuadraticShard(center + rng.standard_normal((self.points, self.d)), l2)

    def local(self, worker: int) -> QuadraticShard:
        if worker not in self.shards:
            raise self._not_local(worker)
        return self.shards[worker]

    def x0(self) -> np.ndarray:
        return np.zeros(self.d)

    def smoothness(self) -> float:
        return 1.0 + self.l2

    def sample_smoothness(self) -> float:
        return 1.0 + self.l2

    def strong_convexity(self) -> float:
        return 1.0 + self.l2

    def optimum(self) -> tuple[np.ndarray, float]:
        """Collective: ``x* = mean_i cbar_i / (1 + l2)``, the workers' mean points summed in the fixed worker tree."""
        x = self.sum_workers(lambda w: self.shards[w].points.mean(axis=0), self.d) / self.n_workers / (1.0 + self.l2)
        return x, self.loss(x)

    def sample_counts(self) -> np.ndarray:
        return np.full(self.n_workers, self.points, dtype=np.int64)
