"""Regularisers: smooth terms added to every f_i, and the nonsmooth R handled by prox.

Smooth terms (part of ``f_i``, differentiated by every method):

* :class:`SquaredNorm` ``(l2/2)||x||^2`` — Hessian ``l2 I``.
* :class:`NonconvexPenalty` ``lam sum_k x_k^2 / (1 + x_k^2)`` (Fatkhullin, Tyurin, Richtárik,
  poster 002) — Hessian ``diag(lam (2 - 6 x_k^2) / (1 + x_k^2)^3)`` with eigenvalues in
  ``[-lam/2, 2 lam]``.
* :class:`SmoothSum` composes any of them.

The nonsmooth part is :class:`ElasticNet` ``R(x) = l1 ||x||_1 + (r_l2/2)||x||^2`` with
``prox_{gamma R}(v) = soft(v, gamma l1) / (1 + gamma r_l2)``; ``"none"``, ``"l1"``, ``"l2"`` and
``"elastic"`` are its four special cases (:func:`make_regularizer`). An l2 weight in R differs from
the smooth ``l2`` in f only in who handles it: the smooth one enters every gradient and the
smoothness constant L, the one in R is applied exactly by the prox step and leaves L unchanged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

REGULARIZERS = ("none", "l1", "l2", "elastic")


class SmoothRegularizer(ABC):
    """A twice differentiable term ``r(x)`` whose Hessian eigenvalues lie in ``[lower, upper]``."""

    @abstractmethod
    def value(self, x: np.ndarray) -> float:
        """``r(x)``."""

    @abstractmethod
    def grad(self, x: np.ndarray) -> np.ndarray:
        """``grad r(x)``."""

    @abstractmethod
    def hessp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        """``hess r(x) v``."""

    @property
    @abstractmethod
    def upper(self) -> float:
        """Upper bound on the Hessian's eigenvalues over all x."""

    @property
    @abstractmethod
    def lower(self) -> float:
        """Lower bound on the Hessian's eigenvalues over all x (negative: nonconvex)."""


@dataclass(frozen=True)
class SquaredNorm(SmoothRegularizer):
    """``(weight/2) ||x||^2``; Hessian ``weight I``."""

    weight: float

    def value(self, x: np.ndarray) -> float:
        return 0.5 * self.weight * float(x @ x)

    def grad(self, x: np.ndarray) -> np.ndarray:
        return self.weight * x

    def hessp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        return self.weight * v

    @property
    def upper(self) -> float:
        return self.weight

    @property
    def lower(self) -> float:
        return self.weight


@dataclass(frozen=True)
class NonconvexPenalty(SmoothRegularizer):
    """``weight sum_k x_k^2/(1 + x_k^2)``; gradient ``2 weight x_k/(1 + x_k^2)^2``.

    The second derivative ``weight (2 - 6 t^2)/(1 + t^2)^3`` ranges over ``[-weight/2, 2 weight]``
    (minimum at ``t^2 = 1``, maximum at ``t = 0``).
    """

    weight: float

    def value(self, x: np.ndarray) -> float:
        sq = x * x
        return self.weight * float(np.sum(sq / (1.0 + sq)))

    def grad(self, x: np.ndarray) -> np.ndarray:
        denom = 1.0 + x * x
        return (2.0 * self.weight) * x / (denom * denom)

    def hessp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        sq = x * x
        return self.weight * (2.0 - 6.0 * sq) / (1.0 + sq) ** 3 * v

    @property
    def upper(self) -> float:
        return 2.0 * self.weight

    @property
    def lower(self) -> float:
        return -0.5 * self.weight


class SmoothSum(SmoothRegularizer):
    """The sum of smooth terms; eigenvalue bounds add (Weyl's inequality)."""

    def __init__(self, *terms: SmoothRegularizer) -> None:
        self.terms = tuple(t for t in terms if t.upper != 0.0 or t.lower != 0.0)

    def value(self, x: np.ndarray) -> float:
        return sum((t.value(x) for t in self.terms), 0.0)

    def grad(self, x: np.ndarray) -> np.ndarray:
        if not self.terms:
            return np.zeros_like(x, dtype=float)
        out = self.terms[0].grad(x)
        for t in self.terms[1:]:
            out += t.grad(x)
        return out

    def hessp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        if not self.terms:
            return np.zeros_like(v, dtype=float)
        out = self.terms[0].hessp(x, v)
        for t in self.terms[1:]:
            out += t.hessp(x, v)
        return out

    @property
    def upper(self) -> float:
        return sum((t.upper for t in self.terms), 0.0)

    @property
    def lower(self) -> float:
        return sum((t.lower for t in self.terms), 0.0)

    def __repr__(self) -> str:
        return f"SmoothSum{self.terms!r}"


@dataclass(frozen=True)
class ElasticNet:
    """Nonsmooth ``R(x) = l1 ||x||_1 + (l2/2) ||x||^2`` with an exact prox.

    ``prox(v, gamma) = argmin_u R(u) + ||u - v||^2/(2 gamma) = soft(v, gamma l1)/(1 + gamma l2)``,
    ``soft(v, t) = sign(v) max(|v| - t, 0)``.
    """

    name: str = "none"
    l1: float = 0.0
    l2: float = 0.0

    def value(self, x: np.ndarray) -> float:
        out = 0.0
        if self.l1:
            out += self.l1 * float(np.abs(x).sum())
        if self.l2:
            out += 0.5 * self.l2 * float(x @ x)
        return out

    def prox(self, v: np.ndarray, gamma: float) -> np.ndarray:
        if gamma < 0:
            raise ValueError(f"prox step gamma must be >= 0, got {gamma!r}")
        out = np.array(v, dtype=float)
        if self.l1:
            out = np.sign(out) * np.maximum(np.abs(out) - gamma * self.l1, 0.0)
        if self.l2:
            out /= 1.0 + gamma * self.l2
        return out

    @property
    def strong_convexity(self) -> float:
        return self.l2


def make_regularizer(name: str, l1: float = 0.0, r_l2: float = 0.0) -> ElasticNet:
    """R from its config name: ``none``, ``l1`` (``l1||x||_1``), ``l2`` (``(r_l2/2)||x||^2``), ``elastic`` (both).

    A weight the chosen R does not use, or a zero weight it needs, is an error: the config
    would not mean what it says.
    """
    if name not in REGULARIZERS:
        raise ValueError(f"unknown regularizer {name!r}; choose one of {', '.join(REGULARIZERS)}")
    for weight, value in (("l1", l1), ("r_l2", r_l2)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"regularizer weight {weight} must be finite and >= 0, got {value!r}")
    uses_l1 = name in ("l1", "elastic")
    uses_l2 = name in ("l2", "elastic")
    if uses_l1 != (l1 > 0):
        need = f"needs l1 > 0, got l1 = {l1}" if uses_l1 else f"does not use l1 (got l1 = {l1}); use 'l1' or 'elastic'"
        raise ValueError(f"regularizer {name!r} {need}")
    if uses_l2 != (r_l2 > 0):
        need = (
            f"needs r_l2 > 0, got r_l2 = {r_l2}"
            if uses_l2
            else f"does not use r_l2 (got r_l2 = {r_l2}); use 'l2' or 'elastic'"
        )
        raise ValueError(f"regularizer {name!r} {need}")
    return ElasticNet(name, float(l1), float(r_l2))
