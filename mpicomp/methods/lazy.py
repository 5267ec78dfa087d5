"""Lazy aggregation, shared by LAG and LAQ: the trigger, its memory and the master's aggregate.

Notation of paper 003 (Sun, Chen, Giannakis, Yang 2019), which minimises the **sum**
``f = sum_m f_m`` over M workers with ``theta^{k+1} = theta^k - alpha nabla^k`` and
``nabla^k = nabla^{k-1} + sum_{m in M^k} delta Q_m^k`` (eq. 4): only the workers in ``M^k``
upload, the master reuses the others' last contributions. mpicomp minimises the mean
``F = f / n`` with ``x^{k+1} = x^k - gamma (1/n) nabla^k``, so ``gamma = alpha M`` and the trigger's
``1/(alpha^2 M^2)`` is ``1/gamma^2``. Worker m skips round k when

    ||change_m^k||^2 <= (1/gamma^2) sum_{d=1..D} xi_d ||theta^{k+1-d} - theta^{k-d}||^2 + extra_m^k   (7a)
    t_m < t_bar                                                                                        (7b)

``change`` and ``extra`` are the method's (LAG: the gradient innovation and 0; LAQ: the quantized
innovation and ``3(||eps_m^k||^2 + ||eps_hat_m^{k-1}||^2)``). The clock ``t_m`` counts the rounds
since worker m's last upload; like the authors' code (upload when the clock reaches t_bar) a worker
skips at most ``t_bar`` rounds in a row (the paper prints ``t_m <= t_bar``, one more). Parameter
differences before round 0 count as zero. Every process keeps the differences of its replica, so
the trigger needs no extra traffic.

A skipped upload is ``b""`` (8 control bytes); the master adds the decoded changes of the uploads
that arrived to its aggregate ``(1/n) nabla^k`` and broadcasts it through the downlink compressor.

Defaults from the paper's theory: the simple choice after Lemma 3 (rho_1 = 1/2, rho_2 = 1),
``xi_d = 1/(16 D)`` and ``alpha = 1/(8 L)`` with L the smoothness of f, i.e. ``gamma = 1/(8 L_F)``;
mpicomp uses L = :meth:`Problem.smoothness` (max_i L_i >= L_F), so the step is on the safe side.
(Condition (17b) as printed evaluates to 0 for this choice; the paper nevertheless states it.)
The theory fixes neither D nor t_bar: D = 10 is the experiments' value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..compressors import Compressor
from .base import Column, Method, MethodContext, MethodOptions

UPLOAD_COLUMNS = {"round_uploads": Column("int64", "workers that uploaded in the round (the others skipped)")}


@dataclass
class LazyOptions(MethodOptions):
    """The trigger's options: the memory length D, the weights xi_d and the clock limit t_bar."""

    D: int = dataclasses.field(
        default=10, metadata={"minimum": 1, "help": "D: past parameter differences in the trigger (7a)"}
    )
    xi: list[float] | None = dataclasses.field(
        default=None,
        metadata={"minimum": 0.0, "help": "xi_1..xi_D: one value for every d, or D values (default 1/(16 D): Lemma 3)"},
    )
    t_bar: int | None = dataclasses.field(
        default=None,
        metadata={"minimum": 1, "help": "t_bar: a worker skips at most t_bar rounds in a row (unset: no limit)"},
    )

    def __post_init__(self) -> None:
        if self.xi is not None and len(self.xi) not in (1, self.D):
            raise ValueError(f"xi: give one value (used for every d) or D = {self.D} values, got {len(self.xi)}")
        if self.t_bar is not None and self.D > self.t_bar:
            raise ValueError(f"D = {self.D} exceeds t_bar = {self.t_bar}; the trigger (7) needs D <= t_bar")

    def weights(self) -> np.ndarray:
        """``(xi_1, ..., xi_D)``: the given values (one broadcast to all d), or ``1/(16 D)`` each."""
        xi = [1.0 / (16.0 * self.D)] if self.xi is None else self.xi
        return np.broadcast_to(np.asarray(xi, dtype=np.float64), (self.D,)).copy()


def lazy_skip(change_sq: float, threshold: float, clock: int, t_bar: int | None) -> bool:
    """(7a) and (7b): skip iff ``||change||^2 <= threshold`` and the clock allows it (``t_m < t_bar``)."""
    return change_sq <= threshold and (t_bar is None or clock < t_bar)


class StepMemory:
    """``||theta^{k+1-d} - theta^{k-d}||^2`` for d = 1..D, newest first, and their xi-weighted sum."""

    state_attrs = ("steps",)

    def __init__(self, xi: np.ndarray) -> None:
        self.xi = xi
        self.steps = np.zeros(xi.size)

    def push(self, step_sq: float) -> None:
        """Record the latest difference ``||theta^{k+1} - theta^k||^2`` (the oldest one drops out)."""
        self.steps[1:] = self.steps[:-1]
        self.steps[0] = step_sq

    def weighted(self) -> float:
        """``sum_d xi_d ||theta^{k+1-d} - theta^{k-d}||^2``."""
        return float(self.xi @ self.steps)


@dataclass
class LazyWorker:
    """A worker's side of the lazy protocol: what the master holds for it, its clock, its last error."""

    state_attrs: ClassVar[tuple[str, ...]] = ("reference", "clock", "error_sq")

    reference: (
        np.ndarray
    )  # the master's copy of the worker's contribution (LAG: grad f_m(theta_hat); LAQ: Q_m(theta_hat))
    clock: int = 0  # t_m: rounds since the last upload
    error_sq: float = 0.0  # ||eps_hat_m||^2 of the last upload (LAQ)


class LazyMethod(Method):
    """The parts LAG and LAQ share: options, the trigger's threshold, the aggregate and the step."""

    Options = LazyOptions
    columns: ClassVar[dict[str, Column]] = UPLOAD_COLUMNS
    skipped_upload = "zero"
    worker_attrs: ClassVar[tuple[str, ...]] = ("workers",)
    master_attrs: ClassVar[tuple[str, ...]] = ("aggregate", "round_uploads")
    replica_attrs: ClassVar[tuple[str, ...]] = ("x", "memory")

    def __init__(self, ctx: MethodContext, options: LazyOptions) -> None:
        super().__init__(ctx, options)
        self.t_bar = options.t_bar
        self.memory = StepMemory(options.weights())
        self.references, references = self.worker_matrix(self.d)  # every worker's reference, a row each
        self.workers = {w: LazyWorker(references[w]) for w in ctx.local_workers}
        self.aggregate = np.zeros(self.d) if ctx.is_master else None  # (1/n) nabla^k
        self.round_uploads = 0

    def load_worker_state(self, w: int, state: Mapping[str, np.ndarray]) -> None:
        """The saved worker state, its reference copied back into the worker's row of :attr:`references`."""
        row = self.workers[w].reference
        super().load_worker_state(w, state)
        row[:] = self.workers[w].reference
        self.workers[w].reference = row

    def require_batch(self, minibatch: bool) -> None:
        """Refuse ``[data] batch`` > 0 for a full-gradient method and 0 for a minibatch one."""
        if minibatch and self.ctx.batch <= 0:
            raise ValueError(
                f"{self.name} is the minibatch method: set [data] batch >= 1 (or use the full-gradient method)"
            )
        if not minibatch and self.ctx.batch > 0:
            raise ValueError(f"{self.name} uses full local gradients: set [data] batch = 0 (slaq is the minibatch LAQ)")

    def own_codecs(self) -> list[tuple[Compressor, int]]:
        """Codecs the method uses besides ``[compressor]`` uplink and downlink, with their dimensions."""
        return []

    def warm_up(self) -> None:
        """Also compile the method's own codecs before round 1 (throwaway key)."""
        super().warm_up()
        for codec, size in self.own_codecs():
            codec.compile_kernels(size)

    def default_stepsize(self) -> float:
        """``gamma = 1/(8 L)`` (module docstring)."""
        return 1.0 / (8.0 * self.problem.smoothness())

    def threshold(self) -> float:
        """The first term of (7a): ``(1/gamma^2) sum_d xi_d ||theta^{k+1-d} - theta^{k-d}||^2``."""
        return self.memory.weighted() / self.stepsize**2

    def master_downlink(self, uploads: Sequence[memoryview], k: int) -> bytes | memoryview:
        """``nabla^k = nabla^{k-1} + sum of the uploads that arrived``, broadcast as ``(1/n) nabla^k``."""
        self.aggregate += self.mean_of_uploads(uploads, k, self.upload_compressor())
        self.round_uploads = sum(len(message) > 0 for message in uploads)
        return self.encode_down(self.aggregate, k)

    def upload_compressor(self) -> Compressor:
        """The codec of the uploads (the uplink compressor unless the method brings its own)."""
        return self.ctx.uplink

    def apply_downlink(self, message: memoryview, k: int) -> None:
        """``x^{k+1} = x^k - gamma (1/n) nabla^k``; remember ``||x^{k+1} - x^k||^2`` for the trigger."""
        updated = self.x - self.stepsize * self.decode_down(message, k)
        step = updated - self.x
        self.memory.push(float(step @ step))
        self.x = updated

    def metrics(self) -> dict[str, float]:
        return {"round_uploads": self.round_uploads}
