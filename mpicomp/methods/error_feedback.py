"""Error feedback for contractive compressors (Top-K...): EF14-SGD and the EF21 family (poster 002).

Notation of Fatkhullin, Tyurin, Richtárik, "Momentum provably improves error feedback!" (2023):
``C`` is the uplink compressor, ``gamma`` the step size, ``eta`` the momentum weight and
``grad f_i(x, xi)`` worker i's minibatch gradient (``[data] batch`` samples, 0 = full).

* ``ef14`` (Seide et al. 2014): ``e_i^{t+1} = e_i^t + gamma grad f_i(x^t, xi^t) - g_i^t``,
  ``g_i^{t+1} = C(e_i^{t+1} + gamma grad f_i(x^{t+1}, xi^{t+1}))``, ``x^{t+1} = x^t - (1/n) sum_i g_i^t``.
* ``ef21`` (Richtárik, Sokolov, Fatkhullin 2021): ``g_i^{t+1} = g_i^t + C(grad f_i(x^{t+1}, xi) - g_i^t)``.
* ``ef21-sgdm``: ``v_i^{t+1} = (1 - eta) v_i^t + eta grad f_i(x^{t+1}, xi)``,
  ``g_i^{t+1} = g_i^t + C(v_i^{t+1} - g_i^t)``.
* ``ef21-sgd2m``: ``v`` as above, ``u_i^{t+1} = (1 - eta) u_i^t + eta v_i^{t+1}``,
  ``g_i^{t+1} = g_i^t + C(u_i^{t+1} - g_i^t)``.

The EF21 methods step ``x^{t+1} = x^t - gamma g^t`` with ``g^t = (1/n) sum_i g_i^t``, which the
master keeps as ``g^{t+1} = g^t + (1/n) sum_i c_i^t`` from the uploads ``c_i^t``. They differ only
in the vector ``g_i`` is compressed toward: the end of a chain of 0, 1 or 2 momentum averages of
the stochastic gradient (:class:`EF21`).

Downlink. Every process applies the same update from the same downlink bytes. The EF21 master
sends ``C_M(g^{t+1} - w^t)`` and every process sets ``w^{t+1} = w^t + C_M(g^{t+1} - w^t)``,
``x^{t+2} = x^{t+1} - gamma w^{t+1}`` (EF21-BC, Fatkhullin et al. 2021, "EF21 with bells & whistles");
the EF14 master compresses its mean with its own error memory ``e_M`` the way workers do.
With the default identity downlink both reduce to broadcasting ``g^{t+1}`` (resp. the mean).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..compressors import Compressor
from ..compressors import make as make_compressor
from .base import Method, MethodContext, MethodOptions, register_method

INIT_MODES = ("full", "compressed")


def ef14_compress(
    error: np.ndarray,
    increment: np.ndarray,
    encode: Callable[[np.ndarray], memoryview],
    add_decoded: Callable[[memoryview, np.ndarray, float], None],
) -> memoryview:
    """One EF14 step on a memory ``e`` (updated in place): ``p = e + increment``, send ``C(p)``,
    ``e <- p - C(p)``; returns the bytes of ``C(p)``. ``add_decoded(m, target, scale)`` is
    ``target += scale C(m)`` (:meth:`Method.add_up`, :meth:`Method.add_down`)."""
    error += increment
    message = encode(error)
    add_decoded(message, error, -1.0)
    return message


def contraction(compressor: Compressor, d: int) -> float:
    """The compressor's ``alpha``: declared, or 1 for a lossless codec (omega = 0); ValueError otherwise."""
    alpha = compressor.alpha(d)
    if alpha is not None:
        return alpha
    if compressor.omega(d) == 0.0:
        return 1.0
    raise ValueError(
        f"error feedback theory needs a contractive uplink compressor, but {compressor.spec!r} declares no alpha; "
        "use one (e.g. topk(k=0.01)) or set [method] stepsize explicitly"
    )


def ef21_stepsize(smoothness: float, alpha: float) -> float:
    """EF21's Theorem 1 step ``1 / (L + L sqrt(beta/theta))`` with ``theta = 1 - sqrt(1 - alpha)``,
    ``beta = (1 - alpha) / (1 - sqrt(1 - alpha))`` (``L~ <= L`` used for both constants)."""
    theta = 1.0 - math.sqrt(1.0 - alpha)
    beta = (1.0 - alpha) / theta
    return 1.0 / (smoothness * (1.0 + math.sqrt(beta / theta)))


@register_method
class EF14(Method):
    """``ef14``: EF14-SGD; worker i keeps ``e_i`` and sends ``g_i^t = C(e_i^t + gamma grad f_i(x^t, xi^t))``.

    Here ``g_i`` already contains ``gamma``, so ``x^{t+1} = x^t - (1/n) sum_i g_i^t`` (no extra gamma).
    Default step: the EF21 formula (:func:`ef21_stepsize`); EF14's own theory needs bounded
    gradients and gives no comparable closed form.
    """

    name = "ef14"
    worker_attrs: ClassVar[tuple[str, ...]] = ("errors",)
    master_attrs: ClassVar[tuple[str, ...]] = ("master_error",)

    def __init__(self, ctx: MethodContext, options: MethodOptions) -> None:
        super().__init__(ctx, options)
        self.error_rows, self.errors = self.worker_matrix(self.d)  # e_i of the local workers, one row each
        self.master_error = np.zeros(self.d) if ctx.is_master else None

    def default_stepsize(self) -> float:
        return ef21_stepsize(self.problem.smoothness(), contraction(self.ctx.uplink, self.d))

    def upload_of(self, w: int, k: int, grad: np.ndarray) -> memoryview:
        """One EF14 step of worker w on its memory ``e_i`` with the increment ``gamma g_i``."""
        step = self.stepsize * grad
        return ef14_compress(
            self.errors[w], step, lambda v: self.encode_up(v, w, k), lambda m, e, s: self.add_up(m, w, k, e, s)
        )

    def upload_rows(self, workers: range, k: int, grads: np.ndarray) -> np.ndarray:
        """``e_i += gamma grad_i`` of a block of workers: their memories' rows, encoded by one call."""
        errors = self.error_rows[self.local_rows(workers)]
        grads *= self.stepsize
        errors += grads
        return errors

    def uploaded(self, workers: range, k: int, messages: Sequence[memoryview]) -> None:
        """``e_i -= C(e_i)`` of the block's workers, from their own bytes, by one :meth:`add_up_rows`."""
        self.add_up_rows(messages, workers, k, self.error_rows[self.local_rows(workers)], -1.0)

    def master_downlink(self, uploads: Sequence[memoryview], k: int) -> bytes | memoryview:
        mean = self.mean_of_uploads(uploads, k)
        assert self.master_error is not None, "the master keeps the downlink's error"
        return ef14_compress(
            self.master_error, mean, lambda v: self.encode_down(v, k), lambda m, e, s: self.add_down(m, k, e, s)
        )

    def apply_downlink(self, message: memoryview, k: int) -> None:
        self.add_down(message, k, self.x, -1.0)


@dataclass
class EF21Options(MethodOptions):
    """``[method]`` options of ``ef21``: the initialisation round."""

    init_batch: int | None = dataclasses.field(
        default=None,
        metadata={
            "minimum": 0,
            "help": "B_init: samples per worker for v_i^0 = g_i^0 at x^0 (0 = full gradient; unset = [data] batch)",
        },
    )
    init: str = dataclasses.field(
        default="full",
        metadata={
            "choices": INIT_MODES,
            "help": "round 0 sends g_i^0 uncompressed as float64 (full, as in the paper) or C(g_i^0) (compressed)",
        },
    )


@dataclass
class EF21MomentumOptions(EF21Options):
    """``[method]`` options of ``ef21-sgdm`` and ``ef21-sgd2m``: adds the momentum weight eta."""

    eta: float = dataclasses.field(
        default=0.1, metadata={"minimum": 0.0, "exclusive_minimum": True, "help": "momentum eta in (0, 1]"}
    )

    def __post_init__(self) -> None:
        if self.eta > 1.0:
            raise ValueError(f"[method] eta must be in (0, 1] (1 = no momentum), got {self.eta!r}")


@register_method
class EF21(Method):
    """``ef21``: EF21-SGD. Round 0 initialises, every later round is one EF21 step.

    Round 0: worker i computes ``v_i^0 = g_i^0 = grad f_i(x^0)`` on ``init_batch`` samples (every
    momentum level starts there) and uploads it, uncompressed or as ``C(g_i^0)`` (``init``).
    Round k >= 1: the gradient at ``x^k`` enters the momentum chain ``m_0 = grad``,
    ``m_l <- (1 - eta) m_l + eta m_{l-1}`` (``momentum_levels`` = 0, 1, 2 for EF21-SGD, -SGDM, -SGD2M);
    worker i uploads ``c_i = C(m_last - g_i)`` and sets ``g_i <- g_i + c_i``.
    """

    name = "ef21"
    Options = EF21Options
    worker_attrs: ClassVar[tuple[str, ...]] = ("g_workers", "momentum")
    master_attrs: ClassVar[tuple[str, ...]] = ("g_master",)
    replica_attrs: ClassVar[tuple[str, ...]] = ("x", "g_replica")
    rows_follow: ClassVar[tuple[str, ...]] = (*Method.rows_follow, "compression_target")
    momentum_levels: ClassVar[int] = 0

    def __init__(self, ctx: MethodContext, options: EF21Options) -> None:
        super().__init__(ctx, options)
        self.eta = options.eta if isinstance(options, EF21MomentumOptions) else 1.0
        self.init_batch = ctx.batch if options.init_batch is None else options.init_batch
        self.init_compressor = make_compressor("identity") if options.init == "full" else ctx.uplink
        self.g_rows, self.g_workers = self.worker_matrix(self.d)  # g_i of the local workers, one row each
        self.momentum_rows, self.momentum = self.worker_matrix(self.momentum_levels, self.d)
        self.g_master = np.zeros(self.d) if ctx.is_master else None
        self.g_replica = np.zeros(self.d)  # w^t: the downlink's estimate of g^t, on every process

    def default_stepsize(self) -> float:
        return ef21_stepsize(self.problem.smoothness(), contraction(self.ctx.uplink, self.d))

    def uplink_compressor(self, k: int) -> Compressor:
        """The compressor of round ``k``'s uploads (round 0 may be the uncompressed initialisation)."""
        return self.init_compressor if k == 0 else self.ctx.uplink

    def gradient_batch(self, k: int) -> int | None:
        """``init_batch`` in round 0, else ``[data] batch`` (None)."""
        return self.init_batch if k == 0 else None

    def compression_target(self, w: int, k: int, grad: np.ndarray) -> np.ndarray:
        """The vector ``g_i`` moves toward in round ``k`` from worker w's gradient ``grad``: the last level of
        the momentum chain (``grad`` itself in round 0, which starts every level there)."""
        if k == 0:
            self.momentum[w][:] = grad
            return grad
        source = grad
        for level in self.momentum[w]:
            level *= 1.0 - self.eta
            level += self.eta * source
            source = level
        return source

    def upload_of(self, w: int, k: int, grad: np.ndarray) -> memoryview:
        """``c_i = C(m_last - g_i)`` from worker w's gradient ``grad``; ``g_i <- g_i + c_i``."""
        g = self.g_workers[w]
        compressor = self.uplink_compressor(k)
        message = self.encode_up(self.compression_target(w, k, grad) - g, w, k, compressor)
        self.add_up(message, w, k, g, 1.0, compressor)
        return message

    def upload_rows(self, workers: range, k: int, grads: np.ndarray) -> np.ndarray:
        """``m_last - g_i`` of a block of workers (:meth:`compression_target` of each, the same bits), in place."""
        rows = self.local_rows(workers)
        if k == 0:
            self.momentum_rows[rows] = grads[:, None, :]
            target = grads
        else:
            target, share = grads, self.scratch_rows(len(workers), 1)
            for level in range(self.momentum_levels):
                average = self.momentum_rows[rows, level]
                average *= 1.0 - self.eta
                average += np.multiply(self.eta, target, out=share)
                target = average
        return np.subtract(target, self.g_rows[rows], out=grads)

    def uploaded(self, workers: range, k: int, messages: Sequence[memoryview]) -> None:
        """``g_i += c_i`` of the block's workers, from their own bytes, by one :meth:`add_up_rows`."""
        rows = self.g_rows[self.local_rows(workers)]
        self.add_up_rows(messages, workers, k, rows, 1.0, self.uplink_compressor(k))

    def master_downlink(self, uploads: Sequence[memoryview], k: int) -> bytes | memoryview:
        assert self.g_master is not None, "the master keeps g"
        self.g_master += self.mean_of_uploads(uploads, k, self.uplink_compressor(k))
        return self.encode_down(self.g_master - self.g_replica, k)

    def apply_downlink(self, message: memoryview, k: int) -> None:
        self.add_down(message, k, self.g_replica, 1.0)
        self.x -= self.stepsize * self.g_replica


@register_method
class EF21SGDM(EF21):
    """``ef21-sgdm``: EF21 compressing toward the Polyak momentum ``v_i``.

    Default step ``min(alpha / (20 L), eta / (7 L))``: the form of the step-size condition of
    Fatkhullin, Tyurin, Richtárik 2023 (with ``L~ <= L``); these constants were not checked against
    the paper's text, so treat the default as a conservative start and set ``stepsize`` for experiments.
    """

    name = "ef21-sgdm"
    Options = EF21MomentumOptions
    options: EF21MomentumOptions
    momentum_levels = 1

    def default_stepsize(self) -> float:
        alpha = contraction(self.ctx.uplink, self.d)
        return min(alpha / 20.0, self.options.eta / 7.0) / self.problem.smoothness()


@register_method
class EF21SGD2M(EF21SGDM):
    """``ef21-sgd2m``: EF21 compressing toward the double momentum ``u_i`` (same default step as EF21-SGDM)."""

    name = "ef21-sgd2m"
    momentum_levels = 2
