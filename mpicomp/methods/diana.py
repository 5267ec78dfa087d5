"""DIANA, VR-DIANA (L-SVRG and SAGA variants) and QSVRG: compressed gradient differences with prox.

Round k (Mishchenko, Gorbunov, Takáč, Richtárik 2019; poster 000, Algorithm 1)::

    worker i:  g_i = gradient estimate at x^k,   Delta_i = Q(g_i - h_i),   h_i <- h_i + alpha Delta_i
    master:    g = h + (1/n) sum_i Delta_i,       h <- h + alpha (1/n) sum_i Delta_i
    everyone:  x^{k+1} = prox_{gamma R}(x^k - gamma C_M(g))     (C_M = downlink compressor, identity by default)

The memories h_i learn the local gradients at the optimum, so the compressed differences
``g_i - h_i`` (and with them the compression noise) vanish, and the method converges to the exact
optimum with a constant step. The estimate ``g_i`` is the minibatch gradient for DIANA and a
variance-reduced one for VR-DIANA; QSVRG is VR-DIANA (L-SVRG) with ``alpha = 0`` and ``h = 0``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..compressors import MessageError, bundle, unbundle
from ..compressors import make as make_compressor
from ..problems.base import LocalObjective
from ..rng import STREAM_DOWNLINK
from .base import MASTER, Method, MethodContext, MethodOptions, block_rows, register_method

VARIANTS = ("lsvrg", "saga")


@dataclass
class DianaOptions(MethodOptions):
    """DIANA's ``[method]`` options: the step size gamma and the memory step alpha."""

    alpha: float | None = dataclasses.field(
        default=None, metadata={"minimum": 0.0, "help": "memory step alpha of h_i (default 1/(omega+1))"}
    )


def refresh_probability_field() -> float | None:
    """The ``p`` option: L-SVRG's probability of moving the reference point, in (0, 1]."""
    return dataclasses.field(
        default=None,
        metadata={
            "minimum": 0.0,
            "exclusive_minimum": True,
            "help": "L-SVRG refresh probability, <= 1 (default batch/m, i.e. 1/m for batch 1)",
        },
    )


@dataclass
class VRDianaOptions(DianaOptions):
    """VR-DIANA's options: DIANA's plus the estimator variant and L-SVRG's refresh probability p."""

    variant: str = dataclasses.field(
        default="lsvrg", metadata={"choices": VARIANTS, "help": "variance reduction: lsvrg (reference point) or saga"}
    )
    p: float | None = refresh_probability_field()


@dataclass
class QSVRGOptions(MethodOptions):
    """QSVRG's options: the step size and the L-SVRG refresh probability p."""

    p: float | None = refresh_probability_field()


class SVRGReference:
    """L-SVRG's estimator on one worker: ``g_i = grad f_iB(x) - grad f_iB(w) + mu_i`` with ``mu_i = grad f_i(w)``.

    ``grad f_iB`` is the mean over the minibatch B; the reference point w moves to the current
    iterate when the master's coin ``u^k`` says so (:meth:`VRDiana.refresh_references`, for every worker at once).
    """

    state_attrs = ("point", "mean")

    def __init__(self, local: LocalObjective, x0: np.ndarray, mean: np.ndarray | None = None) -> None:
        """``w = x0`` (a copy) and ``mu_i = grad f_i(x0)``; with ``mean`` given, ``w = x0`` and ``mu_i = mean`` as they
        are (the arrays a method keeps for all its workers: one shared point, a row of means each)."""
        self.local = local
        self.point = x0.copy() if mean is None else x0
        self.mean = self.local.grad(self.point) if mean is None else mean

    def estimate(self, x: np.ndarray, idx: np.ndarray | None) -> np.ndarray:
        if idx is None:
            return self.local.grad(x)
        return self.local.grad_batch(x, idx) - self.local.grad_batch(self.point, idx) + self.mean


class SAGATable:
    """SAGA's estimator on one worker: a table of ``grad f_ij(w_ij)``, one row per local sample.

    ``g_i = mean_{j in B}(grad f_ij(x) - T_j) + mu_i`` with ``mu_i = mean_j T_j``; then the rows
    of B are replaced by ``grad f_ij(x)`` (``w_ij = x`` for the sampled j) and ``mu_i`` updated.
    """

    state_attrs = ("rows", "mean")

    def __init__(self, local: LocalObjective, x0: np.ndarray) -> None:
        self.local = local
        self.rows = local.sample_grads(x0, np.arange(local.m))
        self.mean = self.rows.mean(axis=0)

    def estimate(self, x: np.ndarray, idx: np.ndarray | None) -> np.ndarray:
        idx = np.arange(self.local.m) if idx is None else idx
        fresh = self.local.sample_grads(x, idx)
        change = fresh - self.rows[idx]
        estimate = change.mean(axis=0) + self.mean
        self.mean += change.sum(axis=0) / self.local.m
        self.rows[idx] = fresh
        return estimate


def compressor_omega(method: Method, what: str) -> float:
    """The uplink compressor's omega, or a ValueError saying which option to set for a biased one."""
    omega = method.ctx.uplink.omega(method.d)
    if omega is None:
        raise ValueError(
            f"{method.name}: the default {what} needs an unbiased uplink compressor with an omega, "
            f"got {method.ctx.uplink.spec!r}; set [method] {what} explicitly or use an unbiased compressor"
        )
    return float(omega)


def downlink_factor(method: Method) -> float:
    """``1 + omega_M`` of the downlink compressor (1 for identity), the slowdown of poster 004."""
    return 1.0 + (method.ctx.downlink.omega(method.d) or 0.0)


@register_method
class Diana(Method):
    """``diana``: DIANA with minibatch gradients (``[data] batch``, 0 = full local gradients) and prox.

    Defaults (strongly convex theory of DIANA with ``alpha = 1/(omega+1)``, as in the unified
    analysis of Gorbunov, Hanzely, Richtárik 2020, which recovers the rate
    ``O((kappa + kappa omega/n + omega) log 1/eps)`` of [1]): ``gamma = 1/(L (1 + 6 omega/n))`` with
    L the smoothness of every f_i (:meth:`Problem.smoothness`, from the data) and omega the uplink
    compressor's variance; divided by ``1 + omega_M`` for a compressed downlink. With mu the strong
    convexity of f (:meth:`Problem.strong_convexity`) and full gradients, ``||x - x*||^2`` plus the memory
    errors ``||h_i - grad f_i(x*)||^2`` decay linearly at a rate set by ``gamma mu`` and ``alpha``; minibatch
    gradients (DIANA-SGD) stop in a neighbourhood of size ``O(gamma sigma^2/(mu n))``.
    """

    name = "diana"
    Options: ClassVar[type[MethodOptions]] = DianaOptions
    supports_prox = True
    worker_attrs: ClassVar[tuple[str, ...]] = ("local_memory",)
    master_attrs: ClassVar[tuple[str, ...]] = ("master_memory",)

    def __init__(self, ctx: MethodContext, options: DianaOptions) -> None:
        super().__init__(ctx, options)
        self.alpha = options.alpha if options.alpha is not None else self.default_alpha()
        self.regularizer = self.problem.regularizer
        self.memory, self.local_memory = self.worker_matrix(self.d)  # h_i of the local workers, one row each
        self.master_memory = np.zeros(self.d) if ctx.is_master else None  # h = (1/n) sum_i h_i

    def default_alpha(self) -> float:
        """``alpha = 1/(omega + 1)``."""
        return 1.0 / (compressor_omega(self, "alpha") + 1.0)

    def default_stepsize(self) -> float:
        """``gamma = 1/(L (1 + 6 omega/n) (1 + omega_M))``."""
        omega = compressor_omega(self, "stepsize")
        return 1.0 / (self.problem.smoothness() * (1.0 + 6.0 * omega / self.n) * downlink_factor(self))

    def upload_of(self, w: int, k: int, grad: np.ndarray) -> memoryview:
        """``Delta_i = Q(g_i - h_i)``; the worker decodes its own bytes to set ``h_i += alpha Delta_i``."""
        memory = self.local_memory[w]
        message = self.encode_up(grad - memory, w, k)
        if self.alpha:
            self.add_up(message, w, k, memory, self.alpha)
        return message

    def upload_rows(self, workers: range, k: int, grads: np.ndarray) -> np.ndarray:
        """``g_i - h_i`` of a block of workers, in place: their ``Delta_i`` encoded by one call."""
        grads -= self.memory[self.local_rows(workers)]
        return grads

    def uploaded(self, workers: range, k: int, messages: Sequence[memoryview]) -> None:
        """``h_i += alpha Delta_i`` of the block's workers, from their own bytes, by one :meth:`add_up_rows`."""
        if self.alpha:
            self.add_up_rows(messages, workers, k, self.memory[self.local_rows(workers)], self.alpha)

    def master_downlink(self, uploads: Sequence[memoryview], k: int) -> bytes | memoryview:
        """``g = h + mean Delta_i`` through the downlink compressor; ``h += alpha mean Delta_i``."""
        assert self.master_memory is not None, "the master keeps h"
        mean_delta = self.mean_of_uploads(uploads, k)
        direction = self.master_memory + mean_delta
        self.master_memory += self.alpha * mean_delta
        return self.encode_down(direction, k)

    def apply_downlink(self, message: memoryview, k: int) -> None:
        self.prox_step(self.decode_down(message, k))

    def prox_step(self, direction: np.ndarray) -> None:
        """``x <- prox_{gamma R}(x - gamma g)``."""
        self.x = self.regularizer.prox(self.x - self.stepsize * direction, self.stepsize)


@register_method
class VRDiana(Diana):
    """``vr-diana``: DIANA on the variance-reduced estimate ``g_i = grad f_ij(x) - grad f_ij(w_ij) + mu_i``.

    Poster 000, Algorithm 1: j uniform on the worker's m samples (a minibatch of ``[data] batch``),
    ``variant = "lsvrg"`` (one reference point w, moved to x^k when the master's coin ``u^k`` with
    ``P(u^k = 1) = p`` comes up; the coin travels in the downlink as a second, 1-d identity message
    and is counted there) or ``"saga"`` (a table of per-sample gradients on every worker).

    Defaults (poster 000, Theorem 1): ``gamma = 1/(L_max (1 + 36 (omega + 1)/n))``, ``alpha = 1/(omega+1)``,
    ``p = batch/m`` (``1/m`` for one sample per round, m the mean shard size), with ``L_max`` the largest
    smoothness constant of a single f_ij (:meth:`sample_smoothness`, from the data); divided by
    ``1 + omega_M`` for a compressed downlink. The theorem needs f_ij convex and f mu-strongly convex
    (mu from :meth:`Problem.strong_convexity`) and gives ``O((kappa + kappa omega/n + m + omega) log 1/eps)``
    rounds with ``kappa = L_max/mu``.
    """

    name = "vr-diana"
    Options: ClassVar[type[MethodOptions]] = VRDianaOptions
    worker_attrs: ClassVar[tuple[str, ...]] = (*Diana.worker_attrs, "estimators")
    coin = make_compressor("identity")

    def __init__(self, ctx: MethodContext, options: VRDianaOptions) -> None:
        if ctx.batch <= 0:
            raise ValueError(
                f"{self.name} samples j uniformly in every round: set [data] batch >= 1 "
                "(Algorithm 1 of poster 000 uses batch = 1); batch = 0 would compute full local gradients"
            )
        if options.p is not None and not 0.0 < options.p <= 1.0:
            raise ValueError(f"[method] p: the refresh probability must be in (0, 1], got {options.p!r}")
        if options.p is not None and options.variant != "lsvrg":
            raise ValueError(f"[method] p: only variant 'lsvrg' has a refresh probability, not {options.variant!r}")
        super().__init__(ctx, options)
        self.variant = options.variant
        mean_shard = np.mean(self.problem.sample_counts())
        self.refresh_probability = options.p if options.p is not None else min(1.0, ctx.batch / mean_shard)
        self.estimators: dict[int, SVRGReference | SAGATable]
        if self.variant == "lsvrg":  # every worker's w moves to x^k at once: one point, a row of means mu_i each
            self.reference_point = self.x.copy()
            self.reference_means, means = self.worker_matrix(self.d)
            self.refresh_references()
            self.estimators = {
                w: SVRGReference(self.problem.local(w), self.reference_point, means[w]) for w in ctx.local_workers
            }
        else:
            self.estimators = {w: SAGATable(self.problem.local(w), self.x) for w in ctx.local_workers}

    def default_stepsize(self) -> float:
        """``gamma = 1/(L_max (1 + 36 (omega + 1)/n) (1 + omega_M))``."""
        omega = compressor_omega(self, "stepsize")
        slowdown = (1.0 + 36.0 * (omega + 1.0) / self.n) * downlink_factor(self)
        return 1.0 / (self.problem.sample_smoothness() * slowdown)

    def round_gradient(self, w: int, k: int) -> np.ndarray:
        return self.estimators[w].estimate(self.x, self.sample_batch(w, k))

    def upload_rows(self, workers: range, k: int, grads: np.ndarray) -> np.ndarray:
        """The estimates ``g_i`` of a block of workers from their minibatch gradients at ``x^k`` (the bits of
        :meth:`round_gradient` of each; L-SVRG's ``grads - grad f_iB(w) + mu_i`` a block at a time, SAGA's worker by
        worker), then DIANA's ``g_i - h_i``."""
        samples = self.sample_batches(workers, k)
        if self.variant == "lsvrg":
            estimates = self.scratch_rows(len(workers), 1)
            self.problem.minibatch_grads(self.reference_point, workers, samples, estimates)
            np.subtract(grads, estimates, out=estimates)
            estimates += self.reference_means[self.local_rows(workers)]
            sampled = [j for j, idx in enumerate(samples) if idx is not None]  # the whole shard: grad f_i(x) itself
            grads[sampled] = estimates[sampled]
        else:
            for row, w, idx in zip(grads, workers, samples, strict=True):
                row[:] = self.estimators[w].estimate(self.x, idx)
        return super().upload_rows(workers, k, grads)

    def refresh_references(self) -> None:
        """L-SVRG's ``w <- x^k`` and ``mu_i <- grad f_i(w)`` of every local worker, the full local gradients a block
        of workers at a time (the bits of each shard's own ``grad``)."""
        self.reference_point[:] = self.x
        per_block, workers = block_rows(self.d), self.ctx.local_workers
        for start in range(0, len(workers), per_block):
            block = workers[start : start + per_block]
            rows = self.reference_means[self.local_rows(block)]
            self.problem.minibatch_grads(self.reference_point, block, [None] * len(block), rows)

    def load_worker_state(self, w: int, state: Mapping[str, np.ndarray]) -> None:
        """L-SVRG: the saved ``w`` and ``mu_i`` put back into the shared point and the worker's row of means."""
        super().load_worker_state(w, state)
        estimator = self.estimators[w]
        if isinstance(estimator, SVRGReference):
            row = self.reference_means[w - self.ctx.local_workers.start]
            self.reference_point[:] = estimator.point
            row[:] = estimator.mean
            estimator.point, estimator.mean = self.reference_point, row

    def draw_coin(self, k: int) -> bool:
        """The master's ``u^k``: True with probability p, from the master's round-k method stream."""
        return bool(self.method_rng(MASTER, k).random() < self.refresh_probability)

    def master_downlink(self, uploads: Sequence[memoryview], k: int) -> bytes | memoryview:
        """The step message, followed for L-SVRG by the coin ``u^k`` as a 1-d identity message."""
        message = super().master_downlink(uploads, k)
        if self.variant != "lsvrg":
            return message
        coin = self.coin.encode(np.array([float(self.draw_coin(k))]), self.key(MASTER, k, STREAM_DOWNLINK))
        return bundle([message, coin])

    def apply_downlink(self, message: memoryview, k: int) -> None:
        """Refresh the local reference points to ``x^k`` if ``u^k = 1`` (L-SVRG), then take the prox step."""
        parts = unbundle(message, 2 if self.variant == "lsvrg" else 1, f"{self.name} ({self.variant}) downlink")
        if self.variant == "lsvrg" and self.decode_coin(parts[1]):
            self.refresh_references()
        self.prox_step(self.decode_down(parts[0], k))

    def decode_coin(self, message: memoryview) -> bool:
        (value,) = self.coin.decode(message, 1)
        if value not in (0.0, 1.0):
            raise MessageError(f"{self.name}: refresh coin must be 0 or 1, got {value!r}")
        return value == 1.0


@register_method
class QSVRG(VRDiana):
    """``qsvrg``: quantized loopless SVRG (Alistarh et al. 2017 with L-SVRG's random refresh).

    Workers send ``Q(g_i)`` of the L-SVRG estimate and the master steps along their mean: VR-DIANA's
    L-SVRG variant with ``alpha = 0`` and ``h_i = 0``. Without the memory the compression noise
    ``omega ||grad f_i(x*)||^2`` does not vanish, so it stalls near the optimum when the local
    gradients at x* differ. Defaults: VR-DIANA's gamma and p.
    """

    name = "qsvrg"
    Options = QSVRGOptions

    def __init__(self, ctx: MethodContext, options: QSVRGOptions) -> None:
        super().__init__(ctx, VRDianaOptions(stepsize=options.stepsize, alpha=0.0, variant="lsvrg", p=options.p))
