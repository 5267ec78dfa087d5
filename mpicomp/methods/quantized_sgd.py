"""GD, SGD and the general quantized SGD of poster 004 (Algorithm 1), bi-directional.

Round k: worker i sends ``Delta_i = C_W(g_i(x^k))``; the master forms the mean
``Delta = (1/n) sum_i Delta_i``, broadcasts ``g^k = C_M(Delta)`` and every process applies
``x^{k+1} = x^k - gamma g^k`` from the same decoded bytes, so replicas stay bit-identical.
(The poster sums and divides by n after C_M; for the unbiased C_M used here both are
unbiased estimates of the same step.) QSGD is this method with the ``qsgd`` compressor.

With ``[compressor] aggregation = "switch"`` the sum ``sum_i Delta_i`` is formed by the emulated
switch instead of the master (:mod:`mpicomp.methods.in_network`: fixed point for an identity
uplink, the exact integer form of C_nat for ``natural``) and arrives at every worker, which steps
``x^{k+1} = x^k - gamma (1/n) sum_i Delta_i`` (the switch only adds, so there is no C_M).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..rng import STREAM_UPLINK
from .base import MASTER, Column, Method, MethodContext, MethodOptions, register_method
from .in_network import make_switch_sum
from .link import Link


@register_method
class QuantizedSGD(Method):
    """``quantized-sgd``: worker compressor C_W (uplink), master compressor C_M (downlink),
    minibatch gradients of ``[data] batch`` samples per worker."""

    name = "quantized-sgd"
    full_gradient = False
    switch_aggregation = True
    columns = {
        "switch_aggregate_error": Column(
            "float64",
            "||S - sum_i g_i|| / ||sum_i g_i||: the switch's aggregate against the float64 sum of the workers' "
            "vectors, on logged rounds (NaN with aggregation = gather)",
        )
    }

    def __init__(self, ctx: MethodContext, options: MethodOptions) -> None:
        super().__init__(ctx, options)
        self.switch = make_switch_sum(ctx.aggregation, ctx.uplink, self.n, self.d, ctx.packet_values, ctx.switch_format)
        self.mean: np.ndarray | None = None  # the master's Delta where C_M has no payload slot, kept across rounds

    def warm_up(self) -> None:
        super().warm_up()
        if self.switch is not None:
            self.switch.warm_up()

    def gradient(self, w: int, k: int, out: np.ndarray | None = None) -> np.ndarray:
        """``g_i(x^k)``: the full local gradient (gd) or the round's minibatch gradient; into ``out`` (a
        float64 d-vector) when given."""
        if out is None:
            return self.stochastic_grad(w, self.x, k, self.batch_size)
        return self.stochastic_grads(range(w, w + 1), self.x, k, self.batch_size, out=out.reshape(1, self.d))[0]

    @property
    def batch_size(self) -> int | None:
        """The minibatch size of ``g_i``: 0 (the full local gradient) for gd, else ``[data] batch`` (None)."""
        return 0 if self.full_gradient else None

    def round(self, k: int, link: Link) -> None:
        """The three-call round, or with a switch: ``x -= gamma (1/n) switch-sum of the g_i``."""
        if self.switch is None:
            super().round(k, link)
            return
        workers = link.local_workers
        keys = [self.key(w, k, STREAM_UPLINK) for w in workers]
        gradients = [self.gradient(w, k) for w in workers]
        total = self.switch.total(gradients, keys, link, evaluate_error=self.ctx.logged(k))
        np.multiply(total, self.stepsize, out=total)
        total /= self.n
        self.x -= total

    def message_sizes(self) -> tuple[int | None, int | None]:
        """Every upload is one ``C_W`` message and the downlink one ``C_M`` message: sizes known ahead."""
        return self.fixed_sizes()

    def metrics(self) -> dict[str, float]:
        """The switch aggregate's relative error on this (logged) round; NaN without a switch."""
        return {"switch_aggregate_error": np.nan if self.switch is None else self.switch.last_error}

    def worker_uploads(self, workers: range, k: int) -> Sequence[bytes | memoryview]:
        """``C_W(g_i(x^k))`` of every local worker, a block of workers at a time (:meth:`encoded_uploads`); one by
        one for a single worker or vectors long enough for the codecs' threaded kernels."""
        if len(workers) == 1 or not self.ctx.uplink.batches_rows(self.d):
            return super().worker_uploads(workers, k)
        return self.encoded_uploads(workers, k, self.batch_size)

    def worker_upload(self, w: int, k: int) -> memoryview:
        """``C_W(g_w(x^k))``; the gradient is computed straight into the message where C_W stores it
        verbatim (float64 identity: no copy)."""
        slot = self.ctx.uplink.payload_vector(self.outbox(w, self.ctx.uplink), self.d)
        return self.encode_up(self.gradient(w, k, out=slot), w, k)

    def master_downlink(self, uploads: Sequence[memoryview], k: int) -> memoryview:
        """``C_M(Delta)``; Delta is summed straight into the downlink message where C_M stores it
        verbatim (float64 identity: no copy), else into the kept ``mean`` buffer."""
        slot = self.ctx.downlink.payload_vector(self.outbox(MASTER, self.ctx.downlink), self.d)
        if slot is None and self.mean is None:
            self.mean = np.empty(self.d)
        return self.encode_down(self.mean_of_uploads(uploads, k, out=self.mean if slot is None else slot), k)

    def apply_downlink(self, message: memoryview, k: int) -> None:
        self.add_down(message, k, self.x, -self.stepsize)

    def default_stepsize(self) -> float:
        """``1 / (L (1 + omega_M)(1 + omega_W / n))``: the poster's slowdown factor applied to 1/L
        (omega = 0 for a compressor without an omega, e.g. a contractive one)."""
        omega_w = self.ctx.uplink.omega(self.d) or 0.0
        omega_m = self.ctx.downlink.omega(self.d) or 0.0
        return 1.0 / (self.problem.smoothness() * (1.0 + omega_m) * (1.0 + omega_w / self.n))


@register_method
class SGD(QuantizedSGD):
    """``sgd``: minibatch SGD; with a non-identity uplink compressor, quantized SGD."""

    name = "sgd"


@register_method
class GD(QuantizedSGD):
    """``gd``: full local gradients every round; with a compressor, quantized GD."""

    name = "gd"
    full_gradient = True
