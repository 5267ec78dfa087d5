"""A Gaussian toy with heterogeneous clients whose posterior is Gaussian in closed form (talk 001).

Client i holds ``m`` points ``y_ij = mu_i + noise e_ij`` in ``R^d`` (``e_ij ~ N(0, I)``), around its
own mean ``mu_i = spread z_i`` (``z_i ~ N(0, I)``), and

    f_i(theta) = (1/m) sum_j ||theta - y_ij||^2 / (2 noise^2) + (l2/2) ||theta||^2.

The potential ``U = sum_i m f_i`` (``M = n m`` samples) is quadratic with precision
``P = M (1/noise^2 + l2)`` on every coordinate, so the posterior is ``N(ybar / (noise^2 (1/noise^2 + l2)), I/P)``
with ``ybar`` the mean of all points, and ``U``'s smoothness is ``L = P``. The data depend only on
the seed, never on the rank layout.
"""

from __future__ import annotations

import numpy as np

from .base import Collective, LocalObjective, Problem


class GaussianShard(LocalObjective):
    """Client i's points and ``f_i``; every gradient is affine in ``theta``."""

    def __init__(self, points: np.ndarray, noise: float, l2: float) -> None:
        self.points = points
        self.m, self.d = points.shape
        self.precision = 1.0 / noise**2
        self.l2 = l2
        self.mean_point = points.mean(axis=0)

    def loss(self, x: np.ndarray) -> float:
        spread = float(np.mean(np.sum((x - self.points) ** 2, axis=1)))
        return 0.5 * self.precision * spread + 0.5 * self.l2 * float(x @ x)

    def grad(self, x: np.ndarray) -> np.ndarray:
        return self.precision * (x - self.mean_point) + self.l2 * x

    def grad_batch(self, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return self.precision * (x - self.points[idx].mean(axis=0)) + self.l2 * x

    def sample_grads(self, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return self.precision * (x - self.points[idx]) + self.l2 * x


class GaussianClients(Problem):
    """``n`` clients with ``m`` points each in ``R^d`` around spread-apart means (module docstring).

    Every process draws every client's points (one generator, client after client) but keeps only
    its own clients' shards, and every client's mean point for the closed forms.
    """

    name = "gaussian"

    def __init__(
        self,
        n_workers: int,
        d: int,
        points: int,
        spread: float,
        noise: float,
        l2: float,
        seed: int,
        collective: Collective | None = None,
    ) -> None:
        for label, value in (("d", d), ("points", points)):
            if value < 1:
                raise ValueError(f"gaussian: {label} must be a positive integer, got {value}")
        if not (0 <= spread < np.inf and 0 < noise < np.inf and 0 <= l2 < np.inf):
            raise ValueError(f"gaussian: need finite spread >= 0, noise > 0, l2 >= 0; got {spread}, {noise}, {l2}")
        self.n_workers, self.d, self.points = n_workers, d, points
        self.noise, self.l2 = noise, l2
        self.collective = collective
        rng = np.random.default_rng([seed, 0x6A055])
        means = spread * rng.standard_normal((n_workers, d))
        self.mean_points = np.empty((n_workers, d))
        self.shards: dict[int, GaussianShard] = {}
        for w, mu in enumerate(means):
            cloud = mu + noise * rng.standard_normal((points, d))
            self.mean_points[w] = cloud.mean(axis=0)
            if w in self.local_workers:
                self.shards[w] = GaussianShard(cloud, noise, l2)

    def local(self, worker: int) -> GaussianShard:
        if worker not in self.shards:
            raise self._not_local(worker)
        return self.shards[worker]

    def sample_counts(self) -> np.ndarray:
        return np.full(self.n_workers, self.points, dtype=np.int64)

    def x0(self) -> np.ndarray:
        return np.zeros(self.d)

    def smoothness(self) -> float:
        return 1.0 / self.noise**2 + self.l2

    def sample_smoothness(self) -> float:
        return self.smoothness()

    def strong_convexity(self) -> float:
        return self.smoothness()

    def optimum(self) -> tuple[np.ndarray, float]:
        """Collective: ``x* = mean_i ybar_i / (1 + noise^2 l2)`` minimises the worker-weighted f."""
        x = np.mean(self.mean_points, axis=0) / (1.0 + self.noise**2 * self.l2)
        return x, self.loss(x)

    def map_point(self) -> np.ndarray:
        return self.posterior()[0]

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """``N(ybar / (1 + noise^2 l2), I / P)``, ``P = M (1/noise^2 + l2)`` (closed form, every process)."""
        total = self.n_workers * self.points
        ybar = sum((self.points * mean for mean in self.mean_points), np.zeros(self.d)) / total
        precision = total * self.smoothness()
        return ybar / (1.0 + self.noise**2 * self.l2), np.full(self.d, 1.0 / precision)
