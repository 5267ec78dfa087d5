"""Methods that exist only to exercise the method contract; importing this module registers them.

* ``test-switch-gd``: GD whose round has two exchanges through the switch: the workers agree on
  one exponent per block of coordinates (``max_agree``), then send their gradients as fixed-point
  integers scaled to that exponent (``integer_sum``). ``|g| < 2^E`` and ``q = rint(g 2^(H - E))``
  give ``|q| <= 2^H``, so the n-way sum cannot overflow int32 while ``n 2^H <= 2^31 - 1``; a larger
  ``headroom`` H makes it overflow on purpose.
* ``test-sampler``: unadjusted Langevin, ``x <- x - gamma g + sqrt(2 gamma) Z`` with Z from the
  round's shared key, as a method of kind "sampler" that declares a column.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mpicomp.methods import (
    SAMPLER,
    Column,
    Link,
    Method,
    MethodOptions,
    register_method,
)
from mpicomp.methods.base import MASTER
from mpicomp.rng import STREAM_LANGEVIN

EXPONENT_WIDTH = 16  # agreed exponents of float64 gradients need more than int8


@dataclass
class SwitchGDOptions(MethodOptions):
    block: int = dataclasses.field(default=8, metadata={"minimum": 1, "help": "coordinates per shared exponent"})
    headroom: int | None = dataclasses.field(
        default=None, metadata={"minimum": 1, "help": "H (default 30 - ceil(log2 n))"}
    )
    weights: list[float] = dataclasses.field(
        default_factory=lambda: [1.0], metadata={"minimum": 0.0, "help": "a list option (config tests)"}
    )


def block_exponents(g: np.ndarray, block: int) -> np.ndarray:
    """Per block, the e with ``max |g_block| < 2^e`` (``frexp``), as int64."""
    padded = np.zeros(-(-g.size // block) * block)
    padded[: g.size] = np.abs(g)
    return np.frexp(padded.reshape(-1, block).max(axis=1))[1].astype(np.int64)


@register_method
class SwitchFixedPointGD(Method):
    """test-switch-gd: GD with a max-agreement of block exponents, then a fixed-point integer sum."""

    name = "test-switch-gd"
    Options = SwitchGDOptions
    columns: ClassVar[dict[str, Column]] = {
        "largest_exponent": Column("int64", "the largest agreed block exponent of the round")
    }

    def __init__(self, ctx, options: SwitchGDOptions) -> None:
        super().__init__(ctx, options)
        self.block = options.block
        self.headroom = options.headroom if options.headroom is not None else 30 - math.ceil(math.log2(self.n))
        self.largest_exponent = 0

    def round(self, k: int, link: Link) -> None:
        grads = [self.problem.local(w).grad(self.x) for w in link.local_workers]
        blocks = -(-self.d // self.block)
        agreed = link.max_agree([block_exponents(g, self.block) for g in grads], blocks, width=EXPONENT_WIDTH)
        scale = np.repeat(np.ldexp(1.0, self.headroom - agreed), self.block)[: self.d]
        total = link.integer_sum([np.rint(g * scale).astype(np.int64) for g in grads], self.d)
        self.x -= self.stepsize * (total / scale) / self.n
        self.largest_exponent = int(agreed.max())

    def metrics(self) -> dict[str, float]:
        return {"largest_exponent": self.largest_exponent}


@register_method
class TestLangevin(Method):
    """test-sampler: unadjusted Langevin on the mean of the workers' gradients."""

    name = "test-sampler"
    kind = SAMPLER
    columns: ClassVar[dict[str, Column]] = {"noise_norm": Column("float64", "||Z|| of the round's Gaussian noise")}

    def __init__(self, ctx, options: MethodOptions) -> None:
        super().__init__(ctx, options)
        self.noise_norm = float("nan")

    def worker_upload(self, w: int, k: int) -> bytes:
        return self.encode_up(self.problem.local(w).grad(self.x), w, k)

    def master_downlink(self, uploads, k: int) -> bytes:
        return self.encode_down(self.mean_of_uploads(uploads, k), k)

    def apply_downlink(self, message, k: int) -> None:
        noise = self.key(MASTER, k, STREAM_LANGEVIN).normal(self.d)
        self.noise_norm = float(np.linalg.norm(noise))
        self.x -= self.stepsize * self.decode_down(message, k) - math.sqrt(2 * self.stepsize) * noise

    def metrics(self) -> dict[str, float]:
        return {"noise_norm": self.noise_norm}


@dataclass
class FailingOptions(MethodOptions):
    worker: int = dataclasses.field(default=-1, metadata={"help": "the worker that fails (-1: the last; -2: every)"})
    at_round: int = dataclasses.field(default=3, metadata={"minimum": 0, "help": "round that fails (0: set-up)"})


@register_method
class FailingWorker(Method):
    """test-fail: GD whose worker ``worker`` raises in round ``at_round`` (0: while the method is
    built, as a shard that cannot be used would), so only the rank hosting it fails."""

    name = "test-fail"
    Options = FailingOptions

    def __init__(self, ctx, options: FailingOptions) -> None:
        super().__init__(ctx, options)
        self.failing = range(self.n) if options.worker == -2 else [options.worker % self.n]
        if options.at_round == 0 and any(w in ctx.local_workers for w in self.failing):
            raise ValueError(f"worker {self.failing[0]}: its shard cannot be used")

    def worker_upload(self, w: int, k: int) -> bytes:
        if w in self.failing and k + 1 == self.options.at_round:
            raise RuntimeError(f"worker {w} cannot compute its gradient")
        return self.encode_up(self.problem.local(w).grad(self.x), w, k)

    def master_downlink(self, uploads, k: int) -> bytes:
        return self.encode_down(self.mean_of_uploads(uploads, k), k)

    def apply_downlink(self, message, k: int) -> None:
        self.x -= self.stepsize * self.decode_down(message, k)
