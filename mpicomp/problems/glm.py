"""Generalised linear models: logistic, softmax and least-squares objectives on sharded data.

Every problem here is ``f_i(x) = (1/m_i) sum_j loss(Z_j, b_j) + r(x)`` with margins
``Z = A_i W^T`` (``m_i x k``), ``W = x.reshape(k, l)`` and r a smooth regulariser
(:mod:`.regularizers`). **Layout:** ``x`` is class-major, ``x = (x_1, ..., x_k)`` with
``x_y in R^l`` the weights of output ``y`` (``x[y*l + f]`` = feature f of class y), as in the
poster notation ``f_i(x_1, ..., x_c)``; binary and least-squares problems have ``k = 1``.
Features ``A`` are dense float64 arrays or ``scipy.sparse`` CSR matrices.

Losses (``z`` a margin row, ``b`` its target):

* logistic, ``b in {-1, +1}``: ``log(1 + exp(-b z))``, ``l'' = s(1 - s) <= 1/4``;
* softmax, ``b in {0..k-1}``: ``logsumexp(z) - z_b``, Hessian ``diag(p) - p p^T``, norm <= 1/2;
* squared: ``(z - b)^2 / 2``, ``l'' = 1``.

Hence ``L_i <= c lambda_max(A_i^T A_i)/m_i + r_upper`` with c the curvature bound above.
"""

from __future__ import annotations

import hashlib
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from scipy.linalg import eigvalsh
from scipy.sparse.linalg import LinearOperator, eigsh
from scipy.special import expit

from .base import LocalObjective, Problem
from .optimum import cache_root, cached_arrays, optimum_cache_path, solve_optimum
from .regularizers import ElasticNet, SmoothRegularizer, SmoothSum

Features = np.ndarray | sp.csr_matrix

# Above this min(m, l) the spectral norm comes from Lanczos (eigsh) instead of a dense Gram matrix.
DENSE_GRAM_LIMIT = 2000
# Relative margin on lambda_max covering float rounding of the Gram product (about m * eps).
SPECTRAL_MARGIN = 1e-9
# Cache format version: bump when the optimum computation or the key changes.
CACHE_VERSION = "glm-optimum-1"


class MarginLoss(ABC):
    """A loss of the margin rows ``Z`` (``m x k``) with targets ``b``."""

    name: ClassVar[str]
    curvature: ClassVar[float]  # sup_z of the spectral norm of the loss Hessian in margin space
    outputs: int = 1  # k, columns of Z

    @abstractmethod
    def values(self, z: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Per-sample losses, shape ``(m,)``."""

    @abstractmethod
    def derivative(self, z: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``d loss / d Z``, shape ``(m, k)``."""

    @abstractmethod
    def curvature_apply(self, z: np.ndarray, b: np.ndarray, dz: np.ndarray) -> np.ndarray:
        """The loss Hessian in margin space applied to ``dz``, row by row; shape ``(m, k)``."""

    @abstractmethod
    def correct(self, z: np.ndarray, b: np.ndarray) -> np.ndarray | None:
        """Boolean ``(m,)``: whether the prediction from ``z`` matches ``b``; None if not a classifier."""

    def targets(self, b: np.ndarray) -> np.ndarray:
        """Validated targets in this loss's layout: a float column ``(m, 1)`` (softmax: class indices ``(m,)``)."""
        b = np.asarray(b, dtype=np.float64)
        if b.ndim == 2 and b.shape[1] == 1:
            b = b[:, 0]
        if b.ndim != 1 or not np.isfinite(b).all():
            raise ValueError(f"{self.name} targets must be one finite number per sample, got shape {b.shape}")
        return b[:, None]


class LogisticLoss(MarginLoss):
    """``log(1 + exp(-b z))`` for ``b in {-1, +1}``, via ``logaddexp`` and ``expit`` (no overflow)."""

    name = "logistic"
    curvature = 0.25

    def values(self, z: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.logaddexp(0.0, -b * z)[:, 0]

    def derivative(self, z: np.ndarray, b: np.ndarray) -> np.ndarray:
        return -b * expit(-b * z)

    def curvature_apply(self, z: np.ndarray, b: np.ndarray, dz: np.ndarray) -> np.ndarray:
        s = expit(z)
        return s * (1.0 - s) * dz

    def correct(self, z: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(z[:, 0] >= 0.0, 1.0, -1.0) == b[:, 0]

    def targets(self, b: np.ndarray) -> np.ndarray:
        out = super().targets(b)
        if not np.isin(out, (-1.0, 1.0)).all():
            raise ValueError(f"logistic targets must be -1 or +1, got values {np.unique(out)[:10]}")
        return out


class SquaredLoss(MarginLoss):
    """``(z - b)^2 / 2``; a classifier by ``sign(z)`` only when the targets are ``+-1`` labels."""

    name = "lsq"
    curvature = 1.0

    def __init__(self, classification: bool) -> None:
        self.classification = classification

    def values(self, z: np.ndarray, b: np.ndarray) -> np.ndarray:
        r = z - b
        return 0.5 * (r * r)[:, 0]

    def derivative(self, z: np.ndarray, b: np.ndarray) -> np.ndarray:
        return z - b

    def curvature_apply(self, z: np.ndarray, b: np.ndarray, dz: np.ndarray) -> np.ndarray:
        return dz

    def correct(self, z: np.ndarray, b: np.ndarray) -> np.ndarray | None:
        if not self.classification:
            return None
        return np.where(z[:, 0] >= 0.0, 1.0, -1.0) == b[:, 0]


class SoftmaxLoss(MarginLoss):
    """Cross-entropy ``logsumexp(z) - z_b`` for class index ``b``, stabilised by subtracting ``max z``."""

    name = "softmax"
    curvature = 0.5

    def __init__(self, n_classes: int) -> None:
        if n_classes < 2:
            raise ValueError(f"softmax needs at least 2 classes, got {n_classes}")
        self.outputs = n_classes

    @staticmethod
    def _shifted_exp(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(e, s, zmax)`` with ``e = exp(z - zmax)`` and ``s = sum(e)`` per row."""
        zmax = z.max(axis=1, keepdims=True)
        e = np.exp(z - zmax)
        return e, e.sum(axis=1, keepdims=True), zmax

    def probabilities(self, z: np.ndarray) -> np.ndarray:
        e, s, _ = self._shifted_exp(z)
        return e / s

    def values(self, z: np.ndarray, b: np.ndarray) -> np.ndarray:
        _, s, zmax = self._shifted_exp(z)
        return (np.log(s) + zmax)[:, 0] - z[np.arange(z.shape[0]), b]

    def derivative(self, z: np.ndarray, b: np.ndarray) -> np.ndarray:
        p = self.probabilities(z)
        p[np.arange(z.shape[0]), b] -= 1.0
        return p

    def curvature_apply(self, z: np.ndarray, b: np.ndarray, dz: np.ndarray) -> np.ndarray:
        p = self.probabilities(z)
        pdz = p * dz
        return pdz - p * pdz.sum(axis=1, keepdims=True)

    def correct(self, z: np.ndarray, b: np.ndarray) -> np.ndarray:
        return z.argmax(axis=1) == b

    def targets(self, b: np.ndarray) -> np.ndarray:
        b = np.asarray(b)
        if b.ndim != 1 or not np.issubdtype(b.dtype, np.integer) or b.min() < 0 or b.max() >= self.outputs:
            raise ValueError(f"softmax targets must be class indices in [0, {self.outputs}), one per sample")
        return b.astype(np.intp)


def margins(a: Features, x: np.ndarray, k: int) -> np.ndarray:
    """``Z = A W^T`` with ``W = x.reshape(k, l)`` (class-major layout); shape ``(m, k)``."""
    return np.asarray(a @ x.reshape(k, -1).T)


def pullback(a: Features, g: np.ndarray) -> np.ndarray:
    """The gradient in x of ``sum_j <G_j, Z_j>``: ``vec(G^T A)`` in class-major layout."""
    if sp.issparse(a):
        return np.asarray(a.T @ g).T.ravel()
    return (g.T @ a).ravel()


def weighted_value(loss: MarginLoss, a: Features, b: np.ndarray, weight, x: np.ndarray) -> float:
    """``sum_j w_j loss(Z_j, b_j)`` for a scalar or per-row weight ``w``."""
    return float(np.sum(weight * loss.values(margins(a, x, loss.outputs), b)))


def weighted_grad(loss: MarginLoss, a: Features, b: np.ndarray, weight, x: np.ndarray) -> np.ndarray:
    """``grad_x sum_j w_j loss(Z_j, b_j) = vec((w * dloss/dZ)^T A)``."""
    dz = loss.derivative(margins(a, x, loss.outputs), b)
    dz *= np.reshape(weight, (-1, 1)) if np.ndim(weight) else weight
    return pullback(a, dz)


def row_squared_norms(a: Features) -> np.ndarray:
    """``||a_j||^2`` for every row."""
    if sp.issparse(a):
        return np.asarray(a.multiply(a).sum(axis=1)).ravel()
    return np.einsum("ij,ij->i", a, a)


def squared_spectral_norm(a: Features) -> float:
    """An upper bound on ``lambda_max(A^T A) = ||A||_2^2``.

    Exact eigenvalue of the smaller Gram matrix (``A A^T`` or ``A^T A``) when it is at most
    :data:`DENSE_GRAM_LIMIT` wide, else Lanczos (``eigsh``) with the Ritz value raised by its
    residual norm; both enlarged by :data:`SPECTRAL_MARGIN` for rounding.
    """
    m, n = a.shape
    small = min(m, n)
    if small <= DENSE_GRAM_LIMIT:
        gram = a @ a.T if m <= n else a.T @ a
        gram = gram.toarray() if sp.issparse(gram) else np.asarray(gram)
        top = float(eigvalsh(gram, subset_by_index=[small - 1, small - 1])[0])
    else:
        op = LinearOperator((n, n), matvec=lambda v: a.T @ (a @ v), dtype=np.float64)
        vals, vecs = eigsh(op, k=1, which="LA", tol=1e-10)
        v = vecs[:, 0]
        top = float(vals[0] + np.linalg.norm(op.matvec(v) - vals[0] * v))
    return max(top, 0.0) * (1.0 + SPECTRAL_MARGIN)


def _check_x(x: np.ndarray, d: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.shape != (d,):
        raise ValueError(f"x must have shape ({d},), got {x.shape}")
    return x


class GLMShard(LocalObjective):
    """One worker's ``f_i``: its own rows ``A_i``, targets ``b_i``, the loss and the smooth terms."""

    def __init__(self, features: Features, targets: np.ndarray, loss: MarginLoss, smooth: SmoothRegularizer) -> None:
        self.features = features
        self.targets = targets
        self.loss_fn = loss
        self.smooth = smooth
        self.m = features.shape[0]
        self.d = loss.outputs * features.shape[1]

    def loss(self, x: np.ndarray) -> float:
        x = _check_x(x, self.d)
        return weighted_value(self.loss_fn, self.features, self.targets, 1.0 / self.m, x) + self.smooth.value(x)

    def grad(self, x: np.ndarray) -> np.ndarray:
        x = _check_x(x, self.d)
        out = weighted_grad(self.loss_fn, self.features, self.targets, 1.0 / self.m, x)
        out += self.smooth.grad(x)
        return out

    def grad_batch(self, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        x = _check_x(x, self.d)
        idx = np.asarray(idx, dtype=np.intp)
        if idx.ndim != 1 or idx.size == 0:
            raise ValueError(f"idx must be a non-empty 1-D array of shard sample indices, got shape {idx.shape}")
        if idx.min() < 0 or idx.max() >= self.m:
            raise IndexError(f"sample index out of range for a shard of {self.m} samples: {idx.min()}..{idx.max()}")
        rows, targets = self.features[idx], self.targets[idx]
        out = weighted_grad(self.loss_fn, rows, targets, 1.0 / idx.size, x)
        out += self.smooth.grad(x)
        return out

    def sample_grads(self, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Rows ``grad f_ij(x) = vec(dloss/dz_j (x) a_j) + grad r(x)``, class-major, in one pass."""
        x = _check_x(x, self.d)
        idx = np.asarray(idx, dtype=np.intp)
        rows = self.features[idx]
        rows = rows.toarray() if sp.issparse(rows) else np.asarray(rows)
        dz = self.loss_fn.derivative(margins(rows, x, self.loss_fn.outputs), self.targets[idx])
        out = (dz[:, :, None] * rows[:, None, :]).reshape(idx.size, self.d)
        out += self.smooth.grad(x)
        return out

    def smoothness(self) -> float:
        """``L_i = max(c lambda_max(A_i^T A_i)/m_i + r_upper, -r_lower)``."""
        top = self.loss_fn.curvature * squared_spectral_norm(self.features) / self.m
        return max(top + self.smooth.upper, -self.smooth.lower)


class GLMProblem(Problem):
    """``F(x) = (1/n) sum_i f_i(x) + R(x)`` for a :class:`MarginLoss` on n shards.

    ``shards`` lists each worker's row indices into ``features``. The rows are stored once, in
    shard order, so each worker's ``A_i`` is a slice (a view for dense data); the full objective
    weighs row j of shard i by ``1/(n m_i)``.
    """

    def __init__(
        self,
        loss: MarginLoss,
        features: Features,
        targets: np.ndarray,
        shards: Sequence[np.ndarray],
        *,
        smooth: SmoothRegularizer | None = None,
        regularizer: ElasticNet | None = None,
        test_features: Features | None = None,
        test_targets: np.ndarray | None = None,
        name: str | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        if len(shards) == 0:
            raise ValueError("need at least one shard")
        sizes = np.array([len(s) for s in shards], dtype=np.int64)
        if (sizes == 0).any():
            raise ValueError(f"every shard needs at least one sample; empty shards: {np.flatnonzero(sizes == 0)[:10]}")
        order = np.concatenate([np.asarray(s, dtype=np.intp) for s in shards])
        n_rows = features.shape[0]
        if order.min() < 0 or order.max() >= n_rows:
            raise IndexError(f"shard indices must lie in [0, {n_rows}), got {order.min()}..{order.max()}")
        if len(targets) != n_rows:
            raise ValueError(f"features have {n_rows} rows but targets have {len(targets)} entries")
        if test_features is not None and test_targets is not None and len(test_targets) != test_features.shape[0]:
            raise ValueError(f"test features have {test_features.shape[0]} rows but {len(test_targets)} targets")
        self.loss_fn = loss
        self.name = name or loss.name
        self.features = features[order]
        self.targets = loss.targets(targets)[order]
        self.shard_sizes = sizes
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.n_workers = len(shards)
        self.n_features = features.shape[1]
        self.d = loss.outputs * self.n_features
        self.row_weights = np.repeat(1.0 / (self.n_workers * sizes), sizes)
        self.smooth = smooth if smooth is not None else SmoothSum()
        self.regularizer = regularizer if regularizer is not None else ElasticNet()
        if (test_features is None) != (test_targets is None):
            raise ValueError("give both test_features and test_targets, or neither")
        if test_features is not None and test_features.shape[1] != self.n_features:
            raise ValueError(f"test features have {test_features.shape[1]} columns, train has {self.n_features}")
        self.test_features = test_features
        self.test_targets = None if test_targets is None else loss.targets(test_targets)
        self.cache_dir = cache_dir
        self._locals: dict[int, GLMShard] = {}
        self._local_smoothness: np.ndarray | None = None
        self._optimum: tuple[np.ndarray, float] | None = None

    # -- per-worker objectives -------------------------------------------------------------
    def local(self, worker: int) -> GLMShard:
        shard = self._locals.get(worker)
        if shard is None:
            if not 0 <= worker < self.n_workers:
                raise IndexError(f"worker must be in [0, {self.n_workers}), got {worker}")
            rows = slice(self.offsets[worker], self.offsets[worker + 1])
            shard = GLMShard(self.features[rows], self.targets[rows], self.loss_fn, self.smooth)
            self._locals[worker] = shard
        return shard

    # -- the global objective --------------------------------------------------------------
    def smooth_loss(self, x: np.ndarray) -> float:
        """``f(x) = (1/n) sum_i f_i(x)``."""
        x = _check_x(x, self.d)
        return weighted_value(self.loss_fn, self.features, self.targets, self.row_weights, x) + self.smooth.value(x)

    def loss(self, x: np.ndarray) -> float:
        return self.smooth_loss(x) + self.regularizer.value(x)

    def grad(self, x: np.ndarray) -> np.ndarray:
        x = _check_x(x, self.d)
        out = weighted_grad(self.loss_fn, self.features, self.targets, self.row_weights, x)
        out += self.smooth.grad(x)
        return out

    def loss_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """``(F(x), grad f(x))`` from one pass over the data (half the cost of ``loss`` then ``grad``)."""
        value, grad = self.smooth_loss_and_grad(x)
        return value + self.regularizer.value(x), grad

    def smooth_loss_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """``(f(x), grad f(x))`` from one pass over the data."""
        x = _check_x(x, self.d)
        z = margins(self.features, x, self.loss_fn.outputs)
        value = float(self.row_weights @ self.loss_fn.values(z, self.targets))
        dz = self.loss_fn.derivative(z, self.targets)
        dz *= self.row_weights[:, None]
        grad = pullback(self.features, dz)
        grad += self.smooth.grad(x)
        return value + self.smooth.value(x), grad

    def hessp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        """``hess f(x) v = vec((w * H_loss[A V^T])^T A) + hess r(x) v``."""
        x, v = _check_x(x, self.d), _check_x(v, self.d)
        k = self.loss_fn.outputs
        z = margins(self.features, x, k)
        hz = self.loss_fn.curvature_apply(z, self.targets, margins(self.features, v, k))
        return pullback(self.features, hz * self.row_weights[:, None]) + self.smooth.hessp(x, v)

    def x0(self) -> np.ndarray:
        return np.zeros(self.d)

    # -- constants -------------------------------------------------------------------------
    def local_smoothness(self) -> np.ndarray:
        """``L_i`` for every worker (computed once)."""
        if self._local_smoothness is None:
            self._local_smoothness = np.array([self.local(i).smoothness() for i in range(self.n_workers)])
        return self._local_smoothness

    def smoothness(self) -> float:
        """``max_i L_i``."""
        return float(self.local_smoothness().max())

    def sample_counts(self) -> np.ndarray:
        """``m_i`` from the shard sizes (no shard is built)."""
        return self.shard_sizes.copy()

    def potential_smoothness(self) -> float:
        """``sum_i m_i L_i``, the smoothness bound of ``U = sum_i m_i f_i``."""
        return float(self.shard_sizes @ self.local_smoothness())

    def sample_smoothness(self) -> float:
        """``L_max = max(c max_j ||a_j||^2 + r_upper, -r_lower)`` over every single sample."""
        top = self.loss_fn.curvature * float(row_squared_norms(self.features).max())
        return max(top + self.smooth.upper, -self.smooth.lower)

    def strong_convexity(self) -> float:
        """``mu = r_lower + R's l2`` when positive (the loss Hessian is PSD), else 0."""
        return max(self.smooth.lower + self.regularizer.strong_convexity, 0.0)

    @property
    def convex(self) -> bool:
        """Whether F is provably convex: the loss is, so if ``r_lower + R's l2 >= 0``."""
        return self.smooth.lower + self.regularizer.strong_convexity >= 0.0

    # -- reference optimum -----------------------------------------------------------------
    def cache_key(self) -> str:
        """Hash of the stored rows, shard sizes, loss, regularisers and cache version."""
        h = hashlib.blake2b(digest_size=16)
        h.update(repr((CACHE_VERSION, self.loss_fn.name, self.loss_fn.outputs, self.smooth, self.regularizer)).encode())
        arrays = [self.targets, self.shard_sizes]
        if sp.issparse(self.features):
            arrays += [self.features.data, self.features.indices, self.features.indptr]
        else:
            arrays.append(self.features)
        h.update(repr([(a.dtype.str, a.shape) for a in arrays]).encode())
        for a in arrays:
            h.update(np.ascontiguousarray(a).data)
        return h.hexdigest()

    def _solve_optimum(self) -> dict[str, np.ndarray]:
        """Minimise ``f + (r_l2/2)||x||^2 + l1||x||_1`` (the l1 part handled by :func:`solve_optimum`)."""
        r_l2 = self.regularizer.l2

        def value_and_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
            value, grad = self.smooth_loss_and_grad(x)
            grad += r_l2 * x
            return value + 0.5 * r_l2 * float(x @ x), grad

        def hessp(x: np.ndarray, v: np.ndarray) -> np.ndarray:
            return self.hessp(x, v) + r_l2 * v

        result = solve_optimum(value_and_grad, hessp, self.x0(), l1=self.regularizer.l1)
        return {"x": result.x, "value": np.array(self.loss(result.x)), "residual": np.array(result.residual)}

    def optimum(self) -> tuple[np.ndarray, float] | None:
        """``(x*, F*)`` for convex problems, solved once to a stationarity residual ~1e-12 and cached on disk.

        None when F may be nonconvex (the nonconvex penalty outweighs the l2 terms).
        """
        if not self.convex:
            return None
        if self._optimum is None:
            path = optimum_cache_path(self.cache_dir, self.name, self.cache_key())
            data = cached_arrays(path, self._solve_optimum)
            residual = float(data["residual"])
            if residual > 1e-8:
                warnings.warn(
                    f"{self.name}: reference optimum has stationarity residual {residual:.1e}; "
                    "F* (and suboptimality) may be inaccurate at that level",
                    RuntimeWarning,
                    stacklevel=2,
                )
            self._optimum = (np.asarray(data["x"], dtype=np.float64), float(data["value"]))
        x, value = self._optimum
        return x.copy(), value

    # -- reference posterior (samplers) ----------------------------------------------------
    def posterior_cache_path(self) -> Path:
        """Where ``tools/reference_posterior.py`` stores this problem's reference posterior."""
        return cache_root(self.cache_dir) / f"posterior-{self.name}-{self.cache_key()}.npz"

    def posterior(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The cached reference ``(mean, variance)`` of ``exp(-U)`` (a long uncompressed MALA chain from
        ``tools/reference_posterior.py``), or None if that tool has not been run for this problem."""
        path = self.posterior_cache_path()
        if not path.is_file():
            return None
        with np.load(path) as data:
            return np.array(data["mean"]), np.array(data["variance"])

    # -- metrics ---------------------------------------------------------------------------
    def test_accuracy(self, x: np.ndarray) -> float | None:
        """Fraction of held-out samples classified correctly (sign for binary, argmax for softmax)."""
        if self.test_features is None or self.test_features.shape[0] == 0:
            return None
        x = _check_x(x, self.d)
        correct = self.loss_fn.correct(margins(self.test_features, x, self.loss_fn.outputs), self.test_targets)
        return None if correct is None else float(correct.mean())
