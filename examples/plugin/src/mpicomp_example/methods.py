"""``heavy-ball``: compressed gradients, momentum at the master.

Round k: worker i sends ``C_W(g_i(x^k))``; the master keeps ``v^{k+1} = beta v^k + (1/n) sum_i C_W(g_i)``
and broadcasts ``C_M(v^{k+1})``; every process steps ``x^{k+1} = x^k - gamma C_M(v^{k+1})``
from the same bytes. Default step ``(1 - beta) / L``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from mpicomp.methods import Column, Method, MethodContext, MethodOptions


@dataclasses.dataclass
class HeavyBallOptions(MethodOptions):
    """``momentum`` is beta in [0, 1)."""

    momentum: float = dataclasses.field(default=0.9, metadata={"minimum": 0.0, "help": "beta of v = beta v + mean"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum: must be in [0, 1), got {self.momentum!r}")


class HeavyBall(Method):
    """heavy-ball: compressed gradients, momentum v = beta v + mean at the master, x -= gamma C_M(v)."""

    name = "heavy-ball"
    Options = HeavyBallOptions
    columns = {"momentum_norm": Column("float64", "||v||, the master's momentum after the round")}
    master_attrs = ("velocity",)  # what a checkpoint saves besides x (docs/architecture.md, Checkpoints)

    def __init__(self, ctx: MethodContext, options: HeavyBallOptions) -> None:
        super().__init__(ctx, options)
        self.momentum = options.momentum
        self.velocity = np.zeros(self.d)  # the master's v (unused elsewhere)

    def default_stepsize(self) -> float:
        return (1.0 - self.options.momentum) / self.problem.smoothness()

    def worker_upload(self, w: int, k: int) -> memoryview:
        return self.encode_up(self.stochastic_grad(w, self.x, k), w, k)

    def master_downlink(self, uploads: Sequence[memoryview], k: int) -> memoryview:
        self.velocity *= self.momentum
        self.velocity += self.mean_of_uploads(uploads, k)
        return self.encode_down(self.velocity, k)

    def apply_downlink(self, message: memoryview, k: int) -> None:
        self.add_down(message, k, self.x, -self.stepsize)

    def metrics(self) -> dict[str, float]:
        return {"momentum_norm": float(np.linalg.norm(self.velocity))}
