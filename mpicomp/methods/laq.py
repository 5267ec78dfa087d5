"""LAQ and SLAQ: lazily aggregated quantized gradients (Sun, Chen, Giannakis, Yang 2019, paper 003).

Round k, worker m (Algorithm 2), with its reference ``Q_m(theta_hat_m^{k-1})`` (0 at the start):

1. ``g = grad f_m(theta^k)`` (SLAQ: the minibatch gradient of ``[data] batch`` samples);
2. quantize the innovation ``g - Q_m(theta_hat)`` with b bits (:mod:`mpicomp.compressors.laq`,
   eqs. 5-6): ``delta Q_m^k``, ``Q_m(theta^k) = Q_m(theta_hat) + delta Q_m^k``, error
   ``eps_m^k = g - Q_m(theta^k)``;
3. skip (send ``b""``) iff (7a) and (7b) hold (:mod:`.lazy`):
   ``||delta Q_m^k||^2 <= (1/gamma^2) sum_d xi_d ||theta^{k+1-d} - theta^{k-d}||^2
   + 3 (||eps_m^k||^2 + ||eps_hat_m^{k-1}||^2)`` and ``t_m < t_bar``; a skip advances the clock;
4. otherwise upload delta Q_m^k (``32 + b p`` bits of payload) and set ``Q_m(theta_hat) = Q_m(theta^k)``,
   ``eps_hat_m = eps_m^k``, ``t_m = 0``.

The master adds the uploads that arrived to ``nabla^k`` (eq. 4) and every process steps
``theta^{k+1} = theta^k - gamma (1/n) nabla^k``. With xi = 0 and many bits every worker uploads
every round and LAQ is GD up to the quantization error ``tau R``.

SLAQ (the minibatch version; its rule is not in the paper): the authors' code weighs the error
terms by 0.5 and adds 0.2 to the right-hand side, here ``error_weight`` and ``offset`` (defaults
1 and 0: LAQ's rule). Defaults otherwise as LAQ: ``gamma = 1/(8L)``, ``xi_d = 1/(16 D)``, D = 10
(:mod:`.lazy`); ``t_bar = 100`` and ``b = 3`` are the experiments' values (the theory fixes neither).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..compressors import Compressor
from ..compressors import make as make_compressor
from ..compressors.laq import MAX_BITS
from ..rng import STREAM_UPLINK
from .base import MethodContext, register_method
from .lazy import LazyMethod, LazyOptions, lazy_skip

ERROR_FACTOR = 3.0  # the 3 in front of the quantization errors in (7a)


@dataclass
class LAQOptions(LazyOptions):
    """LAQ's options: bits per coordinate b and the trigger's D, xi, t_bar."""

    bits: int = dataclasses.field(default=3, metadata={"minimum": 1, "help": f"b: bits per coordinate, 1..{MAX_BITS}"})
    t_bar: int | None = dataclasses.field(
        default=100,
        metadata={"minimum": 1, "help": "t_bar: a worker skips at most t_bar rounds in a row (unset: no limit)"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bits > MAX_BITS:
            raise ValueError(f"bits: at most {MAX_BITS} bits per coordinate, got {self.bits}")


@dataclass
class SLAQOptions(LAQOptions):
    """SLAQ's options: LAQ's plus the weight of the error terms and a constant in the rule."""

    error_weight: float = dataclasses.field(
        default=1.0,
        metadata={"minimum": 0.0, "help": "weight of 3(||eps||^2 + ||eps_hat||^2) in (7a) (authors' code: 0.5)"},
    )
    offset: float = dataclasses.field(
        default=0.0,
        metadata={"minimum": 0.0, "help": "constant added to the right-hand side of (7a) (authors' code: 0.2)"},
    )


@register_method
class LAQ(LazyMethod):
    """``laq``: full local gradients, b-bit innovations, skip rule (7a)+(7b)."""

    name = "laq"
    Options = LAQOptions
    minibatch = False

    def __init__(self, ctx: MethodContext, options: LAQOptions) -> None:
        super().__init__(ctx, options)
        self.require_batch(minibatch=self.minibatch)
        if ctx.uplink != make_compressor("identity"):
            raise ValueError(
                f"{self.name} quantizes its innovations with its own laq(bits=b) codec, so [compressor] uplink must "
                f"stay 'identity' (got {ctx.uplink.spec!r}); set [method] bits instead"
            )
        self.quantizer = make_compressor(f"laq(bits={options.bits})")
        self.error_weight = ERROR_FACTOR  # multiplies ||eps||^2 + ||eps_hat||^2 in (7a)
        self.offset = 0.0  # added to the right-hand side of (7a)
        self.skipping = np.zeros(len(ctx.local_workers), dtype=bool)  # the round's skips on the block path
        self.block_grads = np.empty((0, self.d))  # the block's gradients, from upload_rows to uploaded

    def upload_compressor(self) -> Compressor:
        return self.quantizer

    def own_codecs(self) -> list[tuple[Compressor, int]]:
        return [(self.quantizer, self.d)]

    def gradient_batch(self, k: int) -> int | None:
        """``grad f_m(theta^k)``: the full local gradient (LAQ, 0) or the round's minibatch (SLAQ, None)."""
        return None if self.minibatch else 0

    def uplink_compressor(self, k: int) -> Compressor:
        return self.quantizer

    def worker_uploads(self, workers: range, k: int) -> Sequence[bytes | memoryview]:
        """Steps 1-4 for every local worker: a block of workers at a time where the quantizer batches rows
        (:meth:`upload_rows`, :meth:`uploaded`), their skipped uploads then ``b""``; else worker by worker."""
        self.skipping = np.zeros(len(self.ctx.local_workers), dtype=bool)
        uploads = super().worker_uploads(workers, k)
        skipped = self.skipping[self.local_rows(workers)]
        if not skipped.any():
            return uploads
        return [b"" if skip else message for skip, message in zip(skipped.tolist(), uploads, strict=True)]

    def upload_rows(self, workers: range, k: int, grads: np.ndarray) -> np.ndarray:
        """Step 2's innovations ``g - Q_m(theta_hat)`` of a block of workers (the gradients are kept for
        :meth:`uploaded`)."""
        self.block_grads = grads
        return np.subtract(grads, self.references[self.local_rows(workers)], out=self.scratch_rows(len(workers), 1))

    def uploaded(self, workers: range, k: int, messages: Sequence[memoryview]) -> None:
        """Steps 2-4 after a block's innovations were quantized (the bits of :meth:`upload_of` of each): the
        quantized innovations decoded from the workers' own bytes by one call, the errors as arrays, the rule per
        worker; the references of the workers that upload move, the others' clocks advance."""
        rows = self.local_rows(workers)
        innovations = self.scratch_rows(len(workers), 2)
        innovations.fill(0.0)  # plus each decoded innovation: its bits (LAQ decodes no -0.0)
        self.quantizer.decode_add_rows(messages, self.keys(workers, k, STREAM_UPLINK), innovations)
        references = self.references[rows]
        errors = np.add(references, innovations, out=self.scratch_rows(len(workers), 1))
        np.subtract(self.block_grads, errors, out=errors)
        threshold = self.threshold()
        for j, w in enumerate(workers):
            state = self.workers[w]
            error_sq = float(errors[j] @ errors[j])
            rule = threshold + self.error_weight * (error_sq + state.error_sq) + self.offset
            if lazy_skip(float(innovations[j] @ innovations[j]), rule, state.clock, self.t_bar):
                state.clock += 1
                self.skipping[rows.start + j] = True
                continue
            references[j] += innovations[j]
            state.error_sq = error_sq
            state.clock = 0

    def upload_of(self, w: int, k: int, grad: np.ndarray) -> bytes | memoryview:
        """Steps 1-4 of the module docstring, with worker w's gradient ``grad``."""
        state = self.workers[w]
        message = self.encode_up(grad - state.reference, w, k, self.quantizer)
        innovation = self.decode_up(message, w, k, self.quantizer)
        error = grad - (state.reference + innovation)
        error_sq = float(error @ error)
        threshold = self.threshold() + self.error_weight * (error_sq + state.error_sq) + self.offset
        if lazy_skip(float(innovation @ innovation), threshold, state.clock, self.t_bar):
            state.clock += 1
            return b""
        state.reference += innovation
        state.error_sq = error_sq
        state.clock = 0
        return message


@register_method
class SLAQ(LAQ):
    """``slaq``: LAQ on minibatch gradients (``[data] batch`` >= 1)."""

    name = "slaq"
    Options = SLAQOptions
    minibatch = True

    def __init__(self, ctx: MethodContext, options: SLAQOptions) -> None:
        super().__init__(ctx, options)
        self.error_weight = ERROR_FACTOR * options.error_weight
        self.offset = options.offset
