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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import ClassVar, TypeAlias

import numpy as np
import scipy.sparse as sp
from scipy.linalg import eigvalsh
from scipy.sparse.linalg import LinearOperator, eigsh
from scipy.special import expit

from .base import Collective, LocalObjective, Problem, held_out_sizes
from .optimum import (
    cache_root,
    optimum_cache_path,
    read_cached,
    solve_optimum,
    write_cached,
)
from .regularizers import ElasticNet, SmoothRegularizer, SmoothSum

Features: TypeAlias = np.ndarray | sp.csr_matrix

# Above this min(m, l) the spectral norm comes from Lanczos (eigsh) instead of a dense Gram matrix.
DENSE_GRAM_LIMIT = 2000
# Relative margin on lambda_max covering float rounding of the Gram product (about m * eps).
SPECTRAL_MARGIN = 1e-9
# Cache format version: bump when the optimum computation or the key changes.
CACHE_VERSION = "glm-optimum-2"


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
        in_range = b.size == 0 or (b.min() >= 0 and b.max() < self.outputs)
        if b.ndim != 1 or not np.issubdtype(b.dtype, np.integer) or not in_range:
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


def weighted_value(loss: MarginLoss, a: Features, b: np.ndarray, weight: float, x: np.ndarray) -> float:
    """``w sum_j loss(Z_j, b_j)`` (the weight applied to every term)."""
    return float(np.sum(weight * loss.values(margins(a, x, loss.outputs), b)))


def weighted_grad(loss: MarginLoss, a: Features, b: np.ndarray, weight: float, x: np.ndarray) -> np.ndarray:
    """``grad_x w sum_j loss(Z_j, b_j) = vec((w dloss/dZ)^T A)``."""
    dz = loss.derivative(margins(a, x, loss.outputs), b)
    dz *= weight
    return pullback(a, dz)


def weighted_value_and_grad(
    loss: MarginLoss, a: Features, b: np.ndarray, weight: float, x: np.ndarray
) -> tuple[float, np.ndarray]:
    """:func:`weighted_value` and :func:`weighted_grad` (the same bits) from one computation of the margins."""
    z = margins(a, x, loss.outputs)
    dz = loss.derivative(z, b)
    dz *= weight
    return float(np.sum(weight * loss.values(z, b))), pullback(a, dz)


def row_squared_norms(a: Features) -> np.ndarray:
    """``||a_j||^2`` for every row."""
    if isinstance(a, np.ndarray):
        return np.einsum("ij,ij->i", a, a)
    return np.asarray(a.multiply(a).sum(axis=1)).ravel()


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
        gram = np.asarray(gram) if isinstance(gram, np.ndarray) else gram.toarray()
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

    def loss_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """``(f_i(x), grad f_i(x))`` in one pass, bit for bit :meth:`loss` and :meth:`grad`."""
        x = _check_x(x, self.d)
        value, out = weighted_value_and_grad(self.loss_fn, self.features, self.targets, 1.0 / self.m, x)
        out += self.smooth.grad(x)
        return value + self.smooth.value(x), out

    def hessp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        """``hess f_i(x) v = vec((H_loss[A_i V^T] / m_i)^T A_i) + hess r(x) v``."""
        x, v = _check_x(x, self.d), _check_x(v, self.d)
        k = self.loss_fn.outputs
        hz = self.loss_fn.curvature_apply(margins(self.features, x, k), self.targets, margins(self.features, v, k))
        hz /= self.m
        return pullback(self.features, hz) + self.smooth.hessp(x, v)

    def grad_batch(self, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        x = _check_x(x, self.d)
        idx = np.asarray(idx, dtype=np.intp)
        if idx.ndim != 1 or idx.size == 0:
            raise ValueError(f"idx must be a non-empty 1-D array of shard sample indices, got shape {idx.shape}")
        if idx.min() < 0 or idx.max() >= self.m:
            raise IndexError(f"sample index out of range for a shard of {self.m} samples: {idx.min()}..{idx.max()}")
        return self.minibatch_grad(x, idx)

    def minibatch_grad(self, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """:meth:`grad_batch` without its checks (the caller's indices and x are valid)."""
        out = weighted_grad(self.loss_fn, self.features[idx], self.targets[idx], 1.0 / idx.size, x)
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

    def digest(self) -> bytes:
        """16 bytes hashing the shard's rows and targets (layout and values), for cache keys."""
        h = hashlib.blake2b(digest_size=16)
        arrays = [self.targets]
        if isinstance(self.features, np.ndarray):
            arrays.append(self.features)
        else:
            arrays += [self.features.data, self.features.indices, self.features.indptr]
        h.update(repr([(a.dtype.str, a.shape) for a in arrays]).encode())
        for a in arrays:
            h.update(np.ascontiguousarray(a).data)
        return h.digest()


STACK_BYTES = 1 << 21  # rows in one stack of minibatch_grads: the pullback reads them again after the margins


class GLMProblem(Problem):
    """``F(x) = (1/n) sum_i f_i(x) + R(x)`` for a :class:`MarginLoss` on n shards.

    ``features`` and ``targets`` hold the rows of this process's workers' shards only
    (``collective.local_workers``; every worker without a collective), concatenated in worker
    order, so each local ``A_i`` is a slice (a view for dense data); ``shard_sizes`` gives every
    worker's ``m_i``. Likewise ``test_features``/``test_targets`` hold the local workers' blocks of
    the held-out split, ``test_sizes`` every worker's block (default without a collective: the
    given rows in :func:`~.base.held_out_blocks`). Sums over every worker are collective (:mod:`.base`).
    :meth:`from_shards` builds the one-process problem from all rows and each worker's row indices.
    """

    def __init__(
        self,
        loss: MarginLoss,
        features: Features,
        targets: np.ndarray,
        shard_sizes: Sequence[int] | np.ndarray,
        *,
        collective: Collective | None = None,
        smooth: SmoothRegularizer | None = None,
        regularizer: ElasticNet | None = None,
        test_features: Features | None = None,
        test_targets: np.ndarray | None = None,
        test_sizes: Sequence[int] | np.ndarray | None = None,
        name: str | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        sizes = np.asarray(shard_sizes, dtype=np.int64)
        if sizes.ndim != 1 or sizes.size == 0:
            raise ValueError("need at least one shard")
        if (sizes <= 0).any():
            raise ValueError(f"every shard needs at least one sample; empty shards: {np.flatnonzero(sizes <= 0)[:10]}")
        self.n_workers = sizes.size
        self.collective = collective
        local = self.local_workers
        self.offsets = np.concatenate([[0], np.cumsum(sizes[local.start : local.stop])])
        n_rows = features.shape[0]
        if n_rows != self.offsets[-1]:
            raise ValueError(f"the shards of workers {local} have {self.offsets[-1]} rows but features have {n_rows}")
        if len(targets) != n_rows:
            raise ValueError(f"features have {n_rows} rows but targets have {len(targets)} entries")
        if test_features is not None and test_features.shape[1] != features.shape[1]:
            raise ValueError(f"test features have {test_features.shape[1]} columns, train has {features.shape[1]}")
        self.test_sizes = held_out_sizes(test_features, test_targets, test_sizes, self.n_workers, collective)
        self.loss_fn = loss
        self.name = name or loss.name
        self.features = features
        self.targets = loss.targets(targets)
        self.shard_sizes = sizes
        self.n_features = features.shape[1]
        self.d = loss.outputs * self.n_features
        self.smooth = smooth if smooth is not None else SmoothSum()
        self.regularizer = regularizer if regularizer is not None else ElasticNet()
        self.test_features = test_features
        self.test_targets = None if test_targets is None else loss.targets(test_targets)
        self.cache_dir = cache_dir
        self._locals: dict[int, GLMShard] = {}
        self._rows = np.empty((0, self.n_features))  # minibatch_grads' gathered rows, kept (see _rows_buffer)
        self._local_smoothness: np.ndarray | None = None
        self._cache_key: str | None = None
        self._optimum: tuple[np.ndarray, float] | None = None
        self._optimum_known = False  # True once optimum() ran its collective part on this process

    @classmethod
    def from_shards(
        cls, loss: MarginLoss, features: Features, targets: np.ndarray, shards: Sequence[np.ndarray], **options
    ) -> GLMProblem:
        """Every worker in this process: ``shards`` lists each worker's row indices into ``features``
        (the rows are stored once, in shard order); ``options`` as for the constructor."""
        if len(shards) == 0:
            raise ValueError("need at least one shard")
        order = np.concatenate([np.asarray(s, dtype=np.intp) for s in shards])
        n_rows = features.shape[0]
        if order.size and (order.min() < 0 or order.max() >= n_rows):
            raise IndexError(f"shard indices must lie in [0, {n_rows}), got {order.min()}..{order.max()}")
        if len(targets) != n_rows:
            raise ValueError(f"features have {n_rows} rows but targets have {len(targets)} entries")
        sizes = [len(s) for s in shards]
        return cls(loss, features[order], np.asarray(targets)[order], sizes, **options)

    # -- per-worker objectives -------------------------------------------------------------
    def local(self, worker: int) -> GLMShard:
        shard = self._locals.get(worker)
        if shard is None:
            if worker not in self.local_workers:
                raise self._not_local(worker)
            i = worker - self.local_workers.start
            rows = slice(self.offsets[i], self.offsets[i + 1])
            shard = GLMShard(self.features[rows], self.targets[rows], self.loss_fn, self.smooth)
            self._locals[worker] = shard
        return shard

    def minibatch_grads(
        self, x: np.ndarray, workers: Sequence[int], samples: Sequence[np.ndarray | None], out: np.ndarray
    ) -> np.ndarray:
        """:meth:`Problem.minibatch_grads` with the regulariser's gradient ``grad r(x)`` computed once for
        all rows (the shards' own methods compute it per worker): the same additions, the same bits. Dense
        (C-ordered) features go a stack of minibatches of one size at a time (:meth:`_stacks`)."""
        x = _check_x(x, self.d)
        smooth = self.smooth.grad(x)
        if self._stacks_rows(workers):
            for members, rows, features in self._stacks(workers, samples):
                dz = self.loss_fn.derivative(self._stack_margins(features, x), self.targets[rows])
                dz *= 1.0 / features.shape[1]
                self._stack_pullback(dz, features, members, smooth, out)
            return out
        for row, w, idx in zip(out, workers, samples, strict=True):
            shard = self.local(w)
            if idx is None:
                features, targets, weight = shard.features, shard.targets, 1.0 / shard.m
            else:
                features, targets, weight = shard.features[idx], shard.targets[idx], 1.0 / idx.size
            np.add(weighted_grad(self.loss_fn, features, targets, weight, x), smooth, out=row)
        return out

    def worker_rows(self, x: np.ndarray, workers: range) -> np.ndarray:
        """:meth:`Problem.worker_rows` (``[f_w(x), grad f_w(x)]`` of each worker, the bits of its shard's
        ``loss_and_grad``), dense features a stack of whole shards at a time (:meth:`_stacks`): each worker's
        loss is the sum of its own rows' weighted terms, as its shard sums them."""
        if not self._stacks_rows(workers):
            return super().worker_rows(x, workers)
        x = _check_x(x, self.d)
        rows, grads = np.empty((len(workers), 1 + self.d)), np.empty((len(workers), self.d))
        smooth_value, smooth_grad = self.smooth.value(x), self.smooth.grad(x)
        for members, sample_rows, features in self._stacks(workers, [None] * len(workers)):
            size, targets = features.shape[1], self.targets[sample_rows]
            z = self._stack_margins(features, x)
            dz = self.loss_fn.derivative(z, targets)
            dz *= 1.0 / size
            terms = (1.0 / size) * self.loss_fn.values(z, targets)
            rows[members, 0] = terms.reshape(-1, size).sum(axis=1) + smooth_value
            self._stack_pullback(dz, features, members, smooth_grad, grads)
        rows[:, 1:] = grads
        return rows

    def worker_hessps(self, x: np.ndarray, v: np.ndarray, workers: range) -> np.ndarray:
        """Row j: ``hess f_w(x) v`` of the local worker ``w = workers[j]``, the bits of its shard's ``hessp``,
        dense features a stack of whole shards at a time (:meth:`_stacks`)."""
        if not self._stacks_rows(workers):
            return np.stack([self.local(w).hessp(x, v) for w in workers])
        x, v = _check_x(x, self.d), _check_x(v, self.d)
        out, smooth = np.empty((len(workers), self.d)), self.smooth.hessp(x, v)
        for members, sample_rows, features in self._stacks(workers, [None] * len(workers)):
            margins_v = self._stack_margins(features, v)
            hz = self.loss_fn.curvature_apply(self._stack_margins(features, x), self.targets[sample_rows], margins_v)
            hz /= features.shape[1]
            self._stack_pullback(hz, features, members, smooth, out)
        return out

    def _stacks_rows(self, workers: Sequence[int]) -> bool:
        """Whether several workers' rows are stacked (:meth:`_stacks`): dense C-ordered features, two workers or more."""
        return isinstance(self.features, np.ndarray) and self.features.flags.c_contiguous and len(workers) > 1

    def _stacks(
        self, workers: Sequence[int], samples: Sequence[np.ndarray | None]
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(members, rows, features)`` for every stack of workers with one row count s (the minibatch
        ``samples[j]``, or the whole shard for None): their positions in ``workers``, at most :data:`STACK_BYTES` of
        rows; their rows' indices into this process's features; and the ``(len(members), s, n_features)`` stack of
        those rows. Consecutive workers' whole shards are a view of the features, other rows are gathered into a
        buffer kept from call to call (so a stack is used before the next is taken). Per slice the products over a
        stack (:meth:`_stack_margins`, :meth:`_stack_pullback`) are the BLAS calls :func:`margins` and
        :func:`pullback` make for one worker, and the losses work row by row: the bits of one worker at a time."""
        local = np.asarray(workers) - self.local_workers.start
        counts = [
            self.offsets[i + 1] - self.offsets[i] if idx is None else idx.size
            for i, idx in zip(local, samples, strict=True)
        ]
        sizes = np.array(counts)
        width = self.n_features
        for size in np.unique(sizes).tolist():
            chosen = np.flatnonzero(sizes == size)
            per_stack = max(1, STACK_BYTES // (8 * size * width))
            for lo in range(0, chosen.size, per_stack):
                members = chosen[lo : lo + per_stack]
                first = self.offsets[local[members[0]]]
                shards = local[members] - local[members[0]]
                if all(samples[j] is None for j in members.tolist()) and np.array_equal(
                    shards, np.arange(members.size)
                ):
                    rows = np.arange(first, first + members.size * size)
                    features = self.features[first : first + rows.size]
                else:
                    whole = np.arange(size)
                    index = np.stack([whole if (idx := samples[j]) is None else idx for j in members.tolist()])
                    rows = (self.offsets[local[members], None] + index).reshape(-1)
                    buffer = self._rows_buffer(rows.size)
                    features = np.take(self.features, rows, axis=0, out=buffer, mode="clip")  # valid indices
                yield members, rows, features.reshape(-1, size, width)

    def _stack_margins(self, features: np.ndarray, x: np.ndarray) -> np.ndarray:
        """:func:`margins` of every worker of a stack, ``(rows, k)``: one ``np.matmul`` over the stack."""
        k = self.loss_fn.outputs
        return np.matmul(features, x.reshape(k, -1).T).reshape(-1, k)

    def _stack_pullback(
        self, dz: np.ndarray, features: np.ndarray, members: np.ndarray, added: np.ndarray, out: np.ndarray
    ) -> None:
        """``out[members] = pullback`` of each worker's ``dz`` rows ``+ added``: one ``np.matmul`` over the stack,
        straight into ``out``'s rows when the members are consecutive."""
        k, size, width = self.loss_fn.outputs, features.shape[1], self.n_features
        together = members[-1] - members[0] + 1 == members.size
        grads = out[members[0] : members[-1] + 1] if together else np.empty((members.size, self.d))
        np.matmul(dz.reshape(-1, size, k).transpose(0, 2, 1), features, out=grads.reshape(-1, k, width))
        np.add(grads, added, out=grads)
        if not together:
            out[members] = grads

    def _rows_buffer(self, count: int) -> np.ndarray:
        """A kept ``(count, n_features)`` float64 buffer for gathered rows (fresh pages each call would cost a pass)."""
        if self._rows.shape[0] < count:
            self._rows = np.empty((count, self.n_features))
        return self._rows[:count]

    def per_worker(self, value: Callable[[GLMShard], float]) -> np.ndarray:
        """Collective: ``value(local(w))`` for every worker w (one float each, computed where w lives)."""
        own = np.array([[value(self.local(w))] for w in self.local_workers], dtype=np.float64).reshape(-1, 1)
        return self.gather_workers(own)[:, 0]

    # -- the global objective --------------------------------------------------------------
    def smooth_loss(self, x: np.ndarray) -> float:
        """Collective: ``f(x) = (1/n) sum_i f_i(x)``."""
        return self.smooth_loss_and_grad(x)[0]

    def hessp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Collective: ``hess f(x) v = (1/n) sum_i hess f_i(x) v``, a :meth:`sum_worker_blocks` of
        :meth:`worker_hessps`."""
        return self.sum_worker_blocks(lambda workers: self.worker_hessps(x, v, workers), self.d) / self.n_workers

    def x0(self) -> np.ndarray:
        return np.zeros(self.d)

    # -- constants -------------------------------------------------------------------------
    def local_smoothness(self) -> np.ndarray:
        """Collective (once): ``L_i`` for every worker."""
        if self._local_smoothness is None:
            self._local_smoothness = self.per_worker(GLMShard.smoothness)
        return self._local_smoothness

    def smoothness(self) -> float:
        """Collective: ``max_i L_i``."""
        return float(self.local_smoothness().max())

    def sample_counts(self) -> np.ndarray:
        """``m_i`` from the shard sizes (no shard is built)."""
        return self.shard_sizes.copy()

    def potential_smoothness(self) -> float:
        """Collective: ``sum_i m_i L_i``, the smoothness bound of ``U = sum_i m_i f_i``."""
        return float(self.shard_sizes @ self.local_smoothness())

    def sample_smoothness(self) -> float:
        """Collective: ``L_max = max(c max_j ||a_j||^2 + r_upper, -r_lower)`` over every single sample."""
        largest = self.per_worker(lambda shard: row_squared_norms(shard.features).max()).max()
        top = self.loss_fn.curvature * float(largest)
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
        """Collective (once): a hash of the loss, regularisers, cache version, shard sizes and every
        worker's shard digest (:meth:`GLMShard.digest`), in worker order."""
        if self._cache_key is None:
            own = [np.frombuffer(self.local(w).digest(), dtype=np.uint32) for w in self.local_workers]
            digests = self.gather_workers(np.array(own, dtype=np.float64).reshape(-1, 4))  # uint32s are exact
            h = hashlib.blake2b(digest_size=16)
            described = (CACHE_VERSION, self.loss_fn.name, self.loss_fn.outputs, self.smooth, self.regularizer)
            h.update(repr(described).encode())
            h.update(self.shard_sizes.tobytes())
            h.update(digests.astype(np.uint32).tobytes())
            self._cache_key = h.hexdigest()
        return self._cache_key

    def _solve_optimum(self) -> dict[str, np.ndarray]:
        """Collective: minimise ``f + (r_l2/2)||x||^2 + l1||x||_1`` (the l1 part handled by :func:`solve_optimum`)."""
        r_l2 = self.regularizer.l2

        def value_and_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
            value, grad = self.smooth_loss_and_grad(x)
            grad += r_l2 * x
            return value + 0.5 * r_l2 * float(x @ x), grad

        def hessp(x: np.ndarray, v: np.ndarray) -> np.ndarray:
            return self.hessp(x, v) + r_l2 * v

        result = solve_optimum(value_and_grad, hessp, self.x0(), l1=self.regularizer.l1)
        return {"x": result.x, "value": np.array(self.loss(result.x)), "residual": np.array(result.residual)}

    def _cached_optimum(self) -> dict[str, np.ndarray] | None:
        """Collective: the master's cached optimum, else one solved by every process (and cached by the master);
        None on the other processes when the master read it from the cache."""
        path = optimum_cache_path(self.cache_dir, self.name, self.cache_key())
        cached = read_cached(path) if self.is_master else None
        if self.agree(cached is not None):
            return cached
        solved = self._solve_optimum()
        if self.is_master:
            write_cached(path, solved)
        return solved

    def optimum(self) -> tuple[np.ndarray, float] | None:
        """Collective: ``(x*, F*)`` for convex problems, solved once (every process evaluating its own
        workers) to a stationarity residual ~1e-12 and cached on disk by the master.

        None when F may be nonconvex (the nonconvex penalty outweighs the l2 terms), and on the
        processes other than the master when the master read it from the cache.
        """
        if not self.convex:
            return None
        if not self._optimum_known:
            data = self._cached_optimum()
            self._optimum_known = True
            if data is not None:
                self._check_residual(float(data["residual"]))
                self._optimum = (np.asarray(data["x"], dtype=np.float64), float(data["value"]))
        if self._optimum is None:
            return None
        x, value = self._optimum
        return x.copy(), value

    def _check_residual(self, residual: float) -> None:
        """Warn (on the master) when the optimum's stationarity residual is too large for trustworthy metrics."""
        if residual > 1e-8 and self.is_master:
            warnings.warn(
                f"{self.name}: reference optimum has stationarity residual {residual:.1e}; "
                "F* (and suboptimality) may be inaccurate at that level",
                RuntimeWarning,
                stacklevel=3,
            )

    # -- reference posterior (samplers) ----------------------------------------------------
    def posterior_cache_path(self) -> Path:
        """Collective: where ``tools/reference_posterior.py`` stores this problem's reference posterior."""
        return cache_root(self.cache_dir) / f"posterior-{self.name}-{self.cache_key()}.npz"

    def posterior(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Collective: the cached reference ``(mean, variance)`` of ``exp(-U)`` (a long uncompressed MALA chain
        from ``tools/reference_posterior.py``) on the master, or None if that tool has not been run for
        this problem."""
        path = self.posterior_cache_path()
        if not self.is_master or not path.is_file():
            return None
        with np.load(path) as data:
            return np.array(data["mean"]), np.array(data["variance"])

    # -- metrics ---------------------------------------------------------------------------
    def test_class_probabilities(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """``softmax(a_j^T X)`` of the held-out rows of the local blocks and their classes (softmax loss only)."""
        if not isinstance(self.loss_fn, SoftmaxLoss):
            return None
        x = _check_x(x, self.d)
        assert self.test_features is not None and self.test_targets is not None, "asked only with a held-out split"
        return self.loss_fn.probabilities(margins(self.test_features, x, self.loss_fn.outputs)), self.test_targets

    def test_correct(self, x: np.ndarray) -> np.ndarray | None:
        """Held-out rows of the local blocks classified correctly (sign for binary, argmax for softmax)."""
        x = _check_x(x, self.d)
        assert self.test_features is not None and self.test_targets is not None, "asked only with a held-out split"
        return self.loss_fn.correct(margins(self.test_features, x, self.loss_fn.outputs), self.test_targets)
