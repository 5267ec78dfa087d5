"""The method contract: per-round worker uploads, master downlink, replica update.

A round k of every method is::

    upload_w   = method.worker_upload(w, k)          for each local worker w  (bytes)
    downlink   = method.master_downlink(uploads, k)  on the master            (bytes)
    method.apply_downlink(downlink, k)               on every process

Methods hold worker state (for their local workers), master state (on the master only)
and the model replica ``x`` (on every process, bit-identical). They never call MPI and
never pack bits: vectors become bytes only through the uplink/downlink compressors, and
the transport moves those bytes.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..compressors import Compressor
from ..problems.base import Problem
from ..rng import (
    STREAM_DOWNLINK,
    STREAM_METHOD,
    STREAM_SAMPLING,
    STREAM_UPLINK,
    RandomKey,
)

MASTER = -1  # the worker id used in the master's random keys


@dataclass
class MethodOptions:
    """Options every method accepts in the ``[method]`` table.

    ``stepsize`` is gamma; ``None`` picks the method's default from its theory (see
    :meth:`Method.default_stepsize`).
    """

    stepsize: float | None = dataclasses.field(
        default=None, metadata={"minimum": 0.0, "exclusive_minimum": True, "help": "step size gamma"}
    )


@dataclass(frozen=True)
class MethodContext:
    """Everything a method is built from, independent of the rank layout."""

    problem: Problem
    uplink: Compressor
    downlink: Compressor
    local_workers: range
    is_master: bool
    seed: int
    batch: int  # minibatch size per worker and round; 0 = full local gradient


class Method(ABC):
    """Base class for distributed methods; subclasses register with :func:`register_method`."""

    name: ClassVar[str]
    Options: ClassVar[type[MethodOptions]] = MethodOptions
    supports_prox: ClassVar[bool] = False  # True if the method applies prox_{gamma R} for a nonsmooth R

    def __init__(self, ctx: MethodContext, options: MethodOptions) -> None:
        self.ctx = ctx
        self.options = options
        self.problem = ctx.problem
        self.n = ctx.problem.n_workers
        self.d = ctx.problem.d
        self.x = ctx.problem.x0().astype(np.float64, copy=True)
        self.stepsize = options.stepsize if options.stepsize is not None else self.default_stepsize()

    # --- the round -------------------------------------------------------------------
    @abstractmethod
    def worker_upload(self, w: int, k: int) -> bytes:
        """Worker ``w``'s message in round ``k`` (``b""`` for a skipped upload)."""

    @abstractmethod
    def master_downlink(self, uploads: list[bytes], k: int) -> bytes:
        """The master's message in round ``k`` from all uploads, ordered by worker id."""

    @abstractmethod
    def apply_downlink(self, message: bytes, k: int) -> None:
        """Update the model replica (and local worker state) from the downlink, on every process."""

    def default_stepsize(self) -> float:
        """Step size used when the user sets none: ``1/L`` unless the method's theory says otherwise."""
        return 1.0 / self.problem.smoothness()

    def metrics(self) -> dict[str, float]:
        """Method-specific metrics logged next to the standard ones (empty by default)."""
        return {}

    # --- helpers shared by methods ----------------------------------------------------
    def key(self, worker: int, k: int, stream: int) -> RandomKey:
        return RandomKey(self.ctx.seed, k, worker, stream)

    def sample_batch(self, w: int, k: int, size: int | None = None) -> np.ndarray | None:
        """Worker ``w``'s minibatch indices in round ``k`` (uniform without replacement), or
        ``None`` for the full shard (batch 0 or batch >= shard size)."""
        size = self.ctx.batch if size is None else size
        m = self.problem.local(w).m
        if size <= 0 or size >= m:
            return None
        return self.key(w, k, STREAM_SAMPLING).sample(m, size)

    def stochastic_grad(self, w: int, x: np.ndarray, k: int, size: int | None = None) -> np.ndarray:
        """``g_i(x)``: the minibatch gradient of f_w at x for round k (full if batch = 0)."""
        local = self.problem.local(w)
        idx = self.sample_batch(w, k, size)
        return local.grad(x) if idx is None else local.grad_batch(x, idx)

    def method_rng(self, worker: int, k: int) -> np.random.Generator:
        """A generator for the method's own coin flips (e.g. L-SVRG's refresh), keyed by (worker, k)."""
        return self.key(worker, k, STREAM_METHOD).numpy_generator()

    def encode_up(self, v: np.ndarray, w: int, k: int, compressor: Compressor | None = None) -> bytes:
        """Compress worker ``w``'s vector with the uplink compressor and its round key."""
        return (compressor or self.ctx.uplink).encode(v, self.key(w, k, STREAM_UPLINK))

    def decode_up(self, message: bytes | memoryview, w: int, k: int, compressor: Compressor | None = None) -> np.ndarray:
        """Decode worker ``w``'s upload of round ``k``."""
        return (compressor or self.ctx.uplink).decode(message, self.d, self.key(w, k, STREAM_UPLINK))

    def mean_of_uploads(self, uploads: list[bytes], k: int, compressor: Compressor | None = None) -> np.ndarray:
        """``(1/n) sum_i C_W(v_i)``, decoded and summed in worker-id order (rank-independent)."""
        total = np.zeros(self.d)
        for w, message in enumerate(uploads):
            total += self.decode_up(message, w, k, compressor)
        return total / self.n

    def encode_down(self, v: np.ndarray, k: int) -> bytes:
        return self.ctx.downlink.encode(v, self.key(MASTER, k, STREAM_DOWNLINK))

    def decode_down(self, message: bytes | memoryview, k: int) -> np.ndarray:
        return self.ctx.downlink.decode(message, self.d, self.key(MASTER, k, STREAM_DOWNLINK))


_METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator adding a method to the registry under ``cls.name``."""
    if cls.name in _METHODS:
        raise RuntimeError(f"method name {cls.name!r} registered twice")
    _METHODS[cls.name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    """The method registered as ``name``; ValueError listing the known names otherwise."""
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def available_methods() -> dict[str, type[Method]]:
    return dict(sorted(_METHODS.items()))


__all__ = [
    "MASTER",
    "Method",
    "MethodContext",
    "MethodOptions",
    "available_methods",
    "method_class",
    "register_method",
]
