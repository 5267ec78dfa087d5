"""LAG, lazily aggregated gradient (Chen, Giannakis, Sun, Yin, NeurIPS 2018; paper 003's baseline).

The master keeps ``nabla^k = sum_m grad f_m(theta_hat_m)``, each worker's gradient at the point
``theta_hat_m`` of its last upload, and steps with it (:mod:`.lazy`). A worker that uploads sends
its innovation ``delta_m = grad f_m(theta^k) - grad f_m(theta_hat_m)`` and sets
``theta_hat_m = theta^k``. Two triggers, both (7a) without quantization error:

* LAG-WK (``variant = "wk"``, worker-triggered): worker m computes ``grad f_m(theta^k)`` and skips iff
  ``||delta_m||^2 <= (1/gamma^2) sum_d xi_d ||theta^{k+1-d} - theta^{k-d}||^2``.
* LAG-PS (``variant = "ps"``, server-triggered): the master skips worker m iff
  ``L_m^2 ||theta_hat_m - theta^k||^2 <= (the same right-hand side)`` (L_m, the smoothness of f_m,
  makes the left side a bound on ``||delta_m||^2``), and first broadcasts its request: the vector
  ``r_m = -1`` (asked) or ``+1`` as a ``sign`` message, i.e. a bitmap of n bits plus 28 bytes of
  framing, counted as downlink traffic. A worker that is not asked computes no gradient.

With ``t_bar`` set, the clock (7b) forces an upload after ``t_bar`` skips in a row (the LAG paper has
no clock: unset by default). The innovation goes through the uplink compressor (``identity``: raw
float64 gradients; ``identity(dtype=float32)`` for the papers' 32 bits per coordinate); the worker's
reference follows the decoded bytes, so master and worker agree for any compressor.

Defaults: paper 003's (:mod:`.lazy`), whose analysis covers LAG as LAQ without quantization error.
The LAG authors' experiments use ``xi_d = 1/D`` (WK), ``10/D`` (PS) and ``alpha = 1/L``. L_m comes
from the problem's per-worker constants when it has them (``local_smoothness()``), else the common
bound :meth:`Problem.smoothness` (valid for every m, so only more conservative).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..compressors import Compressor, MessageError
from ..compressors import make as make_compressor
from ..rng import STREAM_DOWNLINK
from .base import MASTER, MethodContext, register_method
from .lazy import LazyMethod, LazyOptions, lazy_skip
from .link import Link

VARIANTS = ("wk", "ps")


@dataclass
class LAGOptions(LazyOptions):
    """LAG's options: the trigger (worker or server) and those of :class:`LazyOptions`."""

    variant: str = dataclasses.field(
        default="wk",
        metadata={"choices": VARIANTS, "help": "wk: the worker decides (LAG-WK); ps: the master asks (LAG-PS)"},
    )


@register_method
class LAG(LazyMethod):
    """``lag``: LAG-WK or LAG-PS with full local gradients; uploads through the uplink compressor."""

    name = "lag"
    Options = LAGOptions
    request_codec = make_compressor("sign")
    master_attrs: ClassVar[tuple[str, ...]] = (*LazyMethod.master_attrs, "anchors", "clocks")

    def __init__(self, ctx: MethodContext, options: LAGOptions) -> None:
        super().__init__(ctx, options)
        self.require_batch(minibatch=False)
        self.variant = options.variant
        self.asked: np.ndarray | None = None
        self.anchors: list[np.ndarray | None] | None = None  # LAG-PS, on the master
        self.clocks: np.ndarray | None = None
        smoothness = self.worker_smoothness() if self.variant == "ps" else None  # collective: on every rank
        if smoothness is not None and ctx.is_master:
            self.anchors = [None] * self.n  # theta_hat_m (None: nothing received yet)
            self.clocks = np.zeros(self.n, dtype=np.int64)
            self.local_smoothness = smoothness

    def worker_smoothness(self) -> np.ndarray:
        """L_m for every worker: the problem's own per-worker constants, else its common bound (collective)."""
        per_worker = getattr(self.problem, "local_smoothness", None)
        if per_worker is not None:
            return np.asarray(per_worker(), dtype=np.float64)
        return np.full(self.n, self.problem.smoothness())

    def own_codecs(self) -> list[tuple[Compressor, int]]:
        return [(self.request_codec, self.n)] if self.variant == "ps" else []

    # --- LAG-PS: the request before the uploads ---------------------------------------------
    def round(self, k: int, link: Link) -> None:
        """LAG-WK: the three-call round. LAG-PS: the master's request is broadcast first."""
        if self.variant == "ps":
            request = self.request_message(k) if link.is_master else None
            self.asked = self.read_request(link.broadcast(request))
        super().round(k, link)

    def request_message(self, k: int) -> memoryview:
        """The master's choice for round k as a sign message (-1: upload, +1: skip)."""
        threshold = self.threshold()
        signs = np.ones(self.n)
        assert self.anchors is not None and self.clocks is not None, "the LAG-PS master keeps anchors and clocks"
        for m, anchor in enumerate(self.anchors):
            drift = None if anchor is None else self.local_smoothness[m] ** 2 * float(np.sum((anchor - self.x) ** 2))
            if drift is None or not lazy_skip(drift, threshold, int(self.clocks[m]), self.t_bar):
                signs[m] = -1.0
        return self.request_codec.encode(signs, self.key(MASTER, k, STREAM_DOWNLINK))

    def read_request(self, message: memoryview) -> np.ndarray:
        """The workers asked to upload (True), from the request bytes."""
        signs = self.request_codec.decode(message, self.n)
        if not np.all(np.abs(signs) == 1.0):
            raise MessageError(f"{self.name}: the upload request must hold entries +-1, got scale {abs(signs[0])!r}")
        return signs < 0

    # --- the uploads ---------------------------------------------------------------------------
    def worker_uploads(self, workers: range, k: int) -> Sequence[bytes | memoryview]:
        """LAG-WK: every worker's full gradient, a block of workers at a time (:meth:`upload_of`). LAG-PS: worker by
        worker, as only the asked ones compute a gradient."""
        if self.variant == "ps":
            return [self.worker_upload(w, k) for w in workers]
        return super().worker_uploads(workers, k)

    def worker_upload(self, w: int, k: int) -> bytes | memoryview:
        """LAG-PS: the innovation if asked. LAG-WK: :meth:`upload_of` the worker's full gradient."""
        if self.variant == "ps":
            assert self.asked is not None, "LAG-PS reads the request before the uploads"
            return self.send_innovation(w, k, self.problem.local(w).grad(self.x)) if self.asked[w] else b""
        return super().worker_upload(w, k)

    def upload_of(self, w: int, k: int, grad: np.ndarray) -> bytes | memoryview:
        """LAG-WK: the innovation from the full local gradient ``grad``, unless (7a) lets the worker skip."""
        state = self.workers[w]
        change = grad - state.reference
        if lazy_skip(float(change @ change), self.threshold(), state.clock, self.t_bar):
            state.clock += 1
            return b""
        return self.send_innovation(w, k, grad)

    def send_innovation(self, w: int, k: int, grad: np.ndarray) -> memoryview:
        """``C(grad - reference)``; the reference moves by what the master will decode."""
        state = self.workers[w]
        message = self.encode_up(grad - state.reference, w, k)
        self.add_up(message, w, k, state.reference)
        state.clock = 0
        return message

    def master_downlink(self, uploads: Sequence[memoryview], k: int) -> bytes | memoryview:
        """LAG-PS also checks the answers and records ``theta_hat_m = theta^k`` and the clocks."""
        if self.variant == "ps":
            assert self.asked is not None, "LAG-PS reads the request before the uploads"
            assert self.anchors is not None and self.clocks is not None, "the LAG-PS master keeps anchors and clocks"
            for m, message in enumerate(uploads):
                if (len(message) > 0) != self.asked[m]:
                    raise MessageError(f"{self.name}: worker {m} did not answer the round-{k + 1} request as asked")
                if self.asked[m]:
                    self.anchors[m] = self.x.copy()
                    self.clocks[m] = 0
                else:
                    self.clocks[m] += 1
        return super().master_downlink(uploads, k)
