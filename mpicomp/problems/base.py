"""The problem contract: ``f(x) = (1/n) sum_i f_i(x)`` split over n logical workers, plus R.

``f_i(x) = (1/m_i) sum_j loss(a_ij, b_ij; x) + smooth regularisers`` is worker i's local
objective on its shard of ``m_i`` samples; ``R`` is an optional nonsmooth regulariser handled
through its prox by the methods that support it. Metrics report ``F(x) = f(x) + R(x)``.

Samplers see the same shards through the **sample-weighted** view: the posterior
``pi(theta) ∝ exp(-U(theta))`` with the potential ``U = sum_i U_i``, ``U_i = m_i f_i`` (a sum over
every sample, the smooth regulariser ``(l2/2)||theta||^2`` per sample acting as the Gaussian prior
``N(0, I / (M l2))``, M the number of samples), and its MAP ``theta* = argmin U`` — not the
worker-weighted optimum of f, which differs when the shards are unbalanced.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from .optimum import lbfgs
from .regularizers import ElasticNet

MAP_GTOL = 1e-10  # L-BFGS tolerance on the gradient of U / M at the MAP


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


    def sample_grads(self, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Rows ``grad f_ij(x)`` for ``j in idx``, shape ``(len(idx), d)``; shards override it vectorised."""
        return np.stack([self.grad_batch(x, np.array([j])) for j in idx])


class Problem(ABC):
    """A distributed objective with per-worker shards, a reference optimum and metrics."""

    d: int
    n_workers: int
    regularizer: ElasticNet = ElasticNet()  # the nonsmooth R; the default is R = 0

    @abstractmethod
    def local(self, worker: int) -> LocalObjective:
        """Worker ``worker``'s local objective (built from its shard only)."""

    @abstractmethod
    def loss(self, x: np.ndarray) -> float:
        """``F(x) = (1/n) sum_i f_i(x) + R(x)``."""

    @abstractmethod
    def grad(self, x: np.ndarray) -> np.ndarray:
        """``grad f(x)`` (smooth part only)."""

    def prox(self, v: np.ndarray, gamma: float) -> np.ndarray:
        """``prox_{gamma R}(v) = argmin_u R(u) + ||u - v||^2 / (2 gamma)``."""
        return self.regularizer.prox(v, gamma)

    def loss_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """``(F(x), grad f(x))``; problems override it to share one pass over the data."""
        return self.loss(x), self.grad(x)

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
        """Reference ``(x*, F*)`` (cached), or None for nonconvex problems."""
        return None

    def test_accuracy(self, x: np.ndarray) -> float | None:
        """Accuracy on the held-out split, or None for problems without one."""
        return None

    # --- the posterior view (samplers) ------------------------------------------------
    def sample_counts(self) -> np.ndarray:
        """``m_i``, the samples of every worker's shard (int64)."""
        return np.array([self.local(w).m for w in range(self.n_workers)], dtype=np.int64)

    def potential_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """``(U(x), grad U(x))`` with ``U = sum_i m_i f_i`` (module docstring)."""
        value, grad = 0.0, np.zeros(self.d)
        for w in range(self.n_workers):
            local = self.local(w)
            value += local.m * local.loss(x)
            grad += local.m * local.grad(x)
        return value, grad

    def potential_smoothness(self) -> float:
        """An upper bound on the smoothness of U: ``M max_i L_i`` (problems with per-shard constants tighten it)."""
        return float(self.sample_counts().sum()) * self.smoothness()

    def map_point(self) -> np.ndarray:
        """``theta* = argmin U`` by L-BFGS on ``U / M`` (problems with a closed form override it)."""
        total = float(self.sample_counts().sum())

        def scaled(x: np.ndarray) -> tuple[float, np.ndarray]:
            value, grad = self.potential_and_grad(x)
            return value / total, grad / total

        return lbfgs(scaled, self.x0(), MAP_GTOL)

    def posterior(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The reference posterior mean and per-coordinate variance of ``exp(-U)``, or None if unknown."""
        return None
