"""Quantised Langevin stochastic dynamics: QLSD#, QLSD* and QLSD++ (Vono et al. 2022; talk 001).

Target: the posterior ``pi(theta) ∝ exp(-U(theta))``, ``U = sum_i U_i``, ``U_i = m_i f_i`` (the
sample-weighted view of :mod:`mpicomp.problems.base`). With ``S`` client i's minibatch of the
round (``[data] batch``; all its ``m_i`` samples when 0) and ``grad U_iS(theta) =
(m_i/|S|) sum_{j in S} grad U_ij(theta)``, client i uploads ``g_i = C(v_i)``, C the unbiased uplink
compressor, with

    sharp     v_i = grad U_iS(theta_k)
    star      v_i = grad U_iS(theta_k) - grad U_iS(theta*)           (theta* the MAP: sum_i grad U_i(theta*) = 0)
    plusplus  v_i = grad U_iS(theta_k) - grad U_iS(zeta) + h_i - eta_i,   eta_i <- eta_i + alpha g_i

(QLSD++: every ``refresh`` rounds ``zeta <- theta_k`` and ``h_i <- grad U_i(zeta)``, the full local
gradient; the memories ``eta_i`` learn ``v_i`` so that the compressed quantity vanishes). The
server forms ``G = sum_i g_i`` (plus ``eta``, ``eta <- eta + alpha G``, for plusplus), broadcasts
``C_M(G)`` and every replica steps

    theta_{k+1} = theta_k - gamma C_M(G) + sqrt(2 gamma) Z_{k+1},

with ``Z`` drawn from the round's shared key (``STREAM_LANGEVIN``, the master's id), so that all
replicas draw the same noise and stay bit-identical on any number of ranks.

Defaults: ``gamma = 0.1 / L_U`` with ``L_U = sum_i m_i L_i`` a smoothness bound of U (the talk runs
``gamma L = 0.1`` and ``0.01``); ``alpha = 1/(omega + 1)`` (Theorem: ``alpha <= 1/(1 + omega)``);
``refresh = 100`` (the talk's logistic experiment). QLSD# keeps a bias from the compression noise
of ``grad U_i`` at stationarity, which grows with client heterogeneity; QLSD* and QLSD++ remove it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..rng import STREAM_LANGEVIN
from .base import MASTER, SAMPLER, Method, MethodContext, MethodOptions, block_rows, register_method
from .link import Link

VARIANTS = ("sharp", "star", "plusplus")
DEFAULT_REFRESH = 100  # the talk's logistic experiment
PLUSPLUS_ONLY = {"alpha": "memories", "refresh": "a control variate to refresh"}


@dataclass
class QLSDOptions(MethodOptions):
    """QLSD's ``[method]`` options."""

    variant: str = dataclasses.field(
        default="plusplus", metadata={"choices": VARIANTS, "help": "sharp (QLSD#), star (QLSD*) or plusplus (QLSD++)"}
    )
    alpha: float | None = dataclasses.field(
        default=None, metadata={"minimum": 0.0, "help": "plusplus: memory rate alpha (default 1/(omega+1))"}
    )
    refresh: int | None = dataclasses.field(
        default=None,
        metadata={"minimum": 1, "help": "plusplus: rounds between control-variate refreshes (default 100)"},
    )


@register_method
class QLSD(Method):
    """``qlsd``: compressed Langevin sampling of ``exp(-sum_i U_i)`` (QLSD#, QLSD*, QLSD++)."""

    name = "qlsd"
    kind = SAMPLER
    Options = QLSDOptions
    requires_unbiased_uplink = True
    worker_attrs: ClassVar[tuple[str, ...]] = ("anchor_grads", "local_memory")
    master_attrs: ClassVar[tuple[str, ...]] = ("master_memory",)
    replica_attrs: ClassVar[tuple[str, ...]] = ("x", "anchor")

    def __init__(self, ctx: MethodContext, options: QLSDOptions) -> None:
        omega = ctx.uplink.omega(ctx.problem.d)
        if omega is None:
            raise ValueError(f"qlsd needs an unbiased uplink compressor (with an omega), got {ctx.uplink.spec!r}")
        for name in ("alpha", "refresh"):
            if options.variant != "plusplus" and getattr(options, name) is not None:
                raise ValueError(
                    f"[method] {name}: only variant 'plusplus' has {PLUSPLUS_ONLY[name]}, not {options.variant!r}"
                )
        super().__init__(ctx, options)
        self.variant = options.variant
        self.refresh = options.refresh if options.refresh is not None else DEFAULT_REFRESH
        self.alpha = options.alpha if options.alpha is not None else 1.0 / (omega + 1.0)
        self.counts = self.problem.sample_counts()
        self.anchor: np.ndarray | None = None  # QLSD++ only: zeta and its state below
        self.anchor_grads: dict[int, np.ndarray] = {}  # h_i, the rows of anchor_rows
        self.local_memory: dict[int, np.ndarray] = {}  # eta_i, the rows of memory_rows
        self.anchor_rows = self.memory_rows = np.zeros((0, self.d))
        self.master_memory: np.ndarray | None = None
        if self.variant == "star":
            self.map_point = self.problem.map_point()
        if self.variant == "plusplus":
            self.anchor = self.x.copy()  # zeta, set with h_i = grad U_i(zeta) in round 0
            self.anchor_rows, self.anchor_grads = self.worker_matrix(self.d)
            self.memory_rows, self.local_memory = self.worker_matrix(self.d)
            self.master_memory = np.zeros(self.d) if ctx.is_master else None  # eta

    def default_stepsize(self) -> float:
        """``gamma = 0.1 / L_U``, ``L_U`` the problem's smoothness bound of the potential (``sum_i m_i L_i``)."""
        return 0.1 / self.problem.potential_smoothness()

    def round(self, k: int, link: Link) -> None:
        """QLSD++ refreshes its control variate every ``refresh`` rounds, then the three-call round."""
        if self.variant == "plusplus" and k % self.refresh == 0:
            self.refresh_control_variate(link.local_workers)
        super().round(k, link)

    def refresh_control_variate(self, workers: range) -> None:
        """QLSD++: ``zeta <- theta_k`` and ``h_i <- grad U_i(zeta) = m_i grad f_i(zeta)`` for the local ``workers``,
        the full local gradients a block of workers at a time, each row scaled by its ``m_i``."""
        self.anchor = self.x.copy()
        per_block = block_rows(self.d)
        for start in range(0, len(workers), per_block):
            block = workers[start : start + per_block]
            rows = self.anchor_rows[self.local_rows(block)]
            self.problem.minibatch_grads(self.anchor, block, [None] * len(block), rows)
            rows *= self.shard_weights(block)

    @property
    def control_point(self) -> np.ndarray | None:
        """Where star and plusplus take the round's minibatch gradient a second time: theta* or zeta (None: sharp)."""
        if self.variant == "star":
            return self.map_point
        if self.variant == "plusplus":
            assert self.anchor is not None, "QLSD++ sets zeta in round 0"
            return self.anchor
        return None

    def shard_weights(self, workers: range) -> np.ndarray:
        """``m_i`` of a block of workers as a float64 column, the factor of a block's rows of ``grad U_i``."""
        return self.counts[workers.start : workers.stop].astype(np.float64)[:, None]

    def upload_rows(self, workers: range, k: int, grads: np.ndarray) -> np.ndarray:
        """``v_i`` of a block of workers, in place, from their minibatch gradients at theta_k (the bits of
        :meth:`upload_with` of each): star and plusplus take the same minibatches' gradients at theta* or zeta a
        block at a time."""
        weights = self.shard_weights(workers)
        grads *= weights
        point = self.control_point
        if point is None:
            return grads
        others = self.stochastic_grads(
            workers, point, k, self.gradient_batch(k), out=self.scratch_rows(len(workers), 1)
        )
        others *= weights
        if self.variant == "star":
            grads -= others
            return grads
        rows = self.local_rows(workers)
        correction = np.subtract(self.anchor_rows[rows], self.memory_rows[rows], out=self.scratch_rows(len(workers), 2))
        correction -= others
        grads += correction
        return grads

    def uploaded(self, workers: range, k: int, messages: Sequence[memoryview]) -> None:
        """QLSD++: ``eta_i += alpha C(v_i)`` of the block's workers, from their own bytes, by one :meth:`add_up_rows`."""
        if self.variant == "plusplus":
            self.add_up_rows(messages, workers, k, self.memory_rows[self.local_rows(workers)], self.alpha)

    def upload_of(self, w: int, k: int, grad: np.ndarray) -> bytes | memoryview:
        """``C(v_i)`` from the round's minibatch gradient ``grad = grad f_iS(theta_k)``; star and plusplus take the
        same minibatch's gradient at theta* or zeta here, for this worker alone."""
        point = self.control_point
        other = None if point is None else self.stochastic_grad(w, point, k)
        return self.upload_with(w, k, grad, other)

    def upload_with(self, w: int, k: int, grad: np.ndarray, other: np.ndarray | None) -> bytes | memoryview:
        """``C(v_i)``, ``v_i`` from ``grad = grad f_iS(theta_k)`` and ``other = grad f_iS`` at theta* (star) or
        zeta (plusplus; None for sharp), both scaled by ``m_i``; QLSD++ moves ``eta_i += alpha C(v_i)``."""
        v = self.counts[w] * grad
        if self.variant == "star":
            v -= self.counts[w] * other
        elif self.variant == "plusplus":
            v += self.anchor_grads[w] - self.local_memory[w] - self.counts[w] * other
        message = self.encode_up(v, w, k)
        if self.variant == "plusplus":
            self.add_up(message, w, k, self.local_memory[w], self.alpha)
        return message

    def master_downlink(self, uploads: Sequence[memoryview], k: int) -> bytes | memoryview:
        """``C_M(sum_i g_i (+ eta))``; QLSD++ then moves ``eta += alpha sum_i g_i``."""
        total = self.sum_of_uploads(uploads, k)
        if self.variant != "plusplus":
            return self.encode_down(total, k)
        assert self.master_memory is not None, "the master keeps eta"
        direction = total + self.master_memory
        self.master_memory += self.alpha * total
        return self.encode_down(direction, k)

    def apply_downlink(self, message: memoryview, k: int) -> None:
        """``theta <- theta - gamma C_M(G) + sqrt(2 gamma) Z`` with the round's shared noise."""
        noise = self.key(MASTER, k, STREAM_LANGEVIN).normal(self.d)
        self.x = self.x - self.stepsize * self.decode_down(message, k) + math.sqrt(2.0 * self.stepsize) * noise
