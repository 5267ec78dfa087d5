"""The method contract: a method owns its round and declares its record.

:meth:`Method.round` runs round k on every process through a :class:`~mpicomp.methods.link.Link`.
Its default is the three-call round most methods need::

    upload_w   = method.worker_upload(w, k)          for each local worker w  (bytes; batched
                                                     by worker_uploads where a method can)
    downlink   = method.master_downlink(uploads, k)  on the master            (bytes)
    method.apply_downlink(downlink, k)               on every process

A method with another shape (an agreement phase, then an integer sum; a server request before
the uploads) overrides :meth:`Method.round` and uses the link's other exchanges.

Methods hold worker state (for their local workers), master state (on the master only)
and the model replica ``x`` (on every process, bit-identical). They never call MPI and
never pack bits: vectors become bytes only through the uplink/downlink compressors, and
the link moves those bytes. A method declares its ``kind`` (optimizer or sampler), the extra
per-round ``columns`` it logs (values from :meth:`Method.metrics`) and how the master treats a
skipped (zero-length) upload (``skipped_upload``); the runner builds the results file from these.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import ClassVar, NamedTuple

import numpy as np

from ..compressors import Compressor, MessageError, MessageRows, PackedMessages, message_lengths
from ..plugins import Plugin, load_entry_points, load_target, target_of
from ..problems.base import Problem
from ..rng import (
    STREAM_DOWNLINK,
    STREAM_METHOD,
    STREAM_SAMPLING,
    STREAM_UPLINK,
    RandomKey,
    RoundKeys,
    worker_ids,
)
from ..state import flatten, restore
from .link import Link

log = logging.getLogger("mpicomp")

MASTER = -1  # the worker id used in the master's random keys
BLOCK_BYTES = 1 << 19  # the local workers' gradients are computed (and encoded) in blocks of about this size
MIN_BLOCK_ROWS = 64  # but at least this many rows, so that the Python per block stays small beside the rows


def block_rows(d: int) -> int:
    """Gradients per block in dimension d (:meth:`Method.round_gradients`, ``QuantizedSGD``'s ``encode_many``
    calls): a cache-sized block (``BLOCK_BYTES`` of float64 rows), at least ``MIN_BLOCK_ROWS``."""
    return max(MIN_BLOCK_ROWS, BLOCK_BYTES // (8 * d))


OPTIMIZER, SAMPLER = "optimizer", "sampler"
KINDS = (OPTIMIZER, SAMPLER)
SKIP_POLICIES = ("error", "zero")


class Column(NamedTuple):
    """A per-round column a method adds to ``/metrics``: its dtype and what it means (for the docs)."""

    dtype: str  # "float64" or "int64"
    meaning: str


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
    aggregation: str = "gather"  # "gather" (master) or "switch" (in-network integer sum)
    packet_values: int = 256  # switch packet size
    switch_format: str = "mpicomp"  # the switch's packet format and host quantiser (mpicomp, switchml, atp)
    log_every: int = 1  # the runner logs rounds k with (k + 1) % log_every == 0, and the last one
    rounds: int = 0  # rounds of the run (0: unknown)
    start: np.ndarray | None = None  # x^0 ([problem] init); None: the problem's own start

    def logged(self, k: int) -> bool:
        """Whether the runner logs round ``k`` (0-based)."""
        return (k + 1) % self.log_every == 0 or k + 1 == self.rounds


class Method:
    """Base class for distributed methods; subclasses register with :func:`register_method`."""

    name: ClassVar[str]
    Options: ClassVar[type[MethodOptions]] = MethodOptions
    supports_prox: ClassVar[bool] = False  # True if the method applies prox_{gamma R} for a nonsmooth R
    kind: ClassVar[str] = OPTIMIZER  # "optimizer" or "sampler" (streams draws to /samples)
    columns: ClassVar[Mapping[str, Column]] = {}  # extra /metrics columns, values from metrics()
    skipped_upload: ClassVar[str] = "error"  # "error": a b"" upload is a protocol error; "zero": it adds 0
    switch_aggregation: ClassVar[bool] = False  # True if the round can sum worker vectors in the switch
    requires_unbiased_uplink: ClassVar[bool] = False  # True: a biased uplink compressor is refused at validation
    # What a checkpoint saves (methods/_state.py): attributes {worker id: value} of the local workers,
    # attributes only the master holds, and attributes identical on every process (the model replica).
    worker_attrs: ClassVar[tuple[str, ...]] = ()
    master_attrs: ClassVar[tuple[str, ...]] = ()
    replica_attrs: ClassVar[tuple[str, ...]] = ("x",)
    # The hooks whose work upload_rows does for a block: a subclass that overrides one of them without upload_rows
    # goes worker by worker (Method.worker_uploads), so the two paths cannot disagree.
    rows_follow: ClassVar[tuple[str, ...]] = ("upload_of", "round_gradient", "uplink_compressor")

    def __init__(self, ctx: MethodContext, options: MethodOptions) -> None:
        self.ctx = ctx
        self.options = options
        self.problem = ctx.problem
        self.n = ctx.problem.n_workers
        self.d = ctx.problem.d
        self.x = (ctx.problem.x0() if ctx.start is None else ctx.start).astype(np.float64, copy=True)
        self.shard_sizes = ctx.problem.sample_counts()  # m_w of every worker
        self._outboxes: dict[int, np.ndarray] = {}  # message buffers kept across rounds, by sender (MASTER: downlink)
        self._outbox_rows: np.ndarray | None = None  # the local workers' batched uploads, kept across rounds
        self._scratch: dict[int, np.ndarray] = {}  # blocks of rows kept across blocks and rounds, see scratch_rows
        self.stepsize = options.stepsize if options.stepsize is not None else self.default_stepsize()
        if ctx.is_master and ctx.batch > (smallest := int(self.shard_sizes.min())):
            log.warning(
                "[data] batch = %d exceeds the smallest shard (%d samples): such workers use their whole shard",
                ctx.batch,
                smallest,
            )

    # --- the round -------------------------------------------------------------------
    def round(self, k: int, link: Link) -> None:
        """Round ``k`` on every process: local uploads, gather, master downlink, broadcast, apply."""
        up_size, down_size = self.message_sizes()
        gathered = link.gather(self.worker_uploads(link.local_workers, k), size=up_size)
        downlink = None
        if link.is_master:
            assert gathered is not None, "the master receives every upload"
            downlink = self.master_downlink(gathered, k)
        self.apply_downlink(link.broadcast(downlink, size=down_size), k)

    def message_sizes(self) -> tuple[int | None, int | None]:
        """``(upload bytes, downlink bytes)`` every process knows before the default round's exchanges
        (then the transport need not send them first), ``None`` where unknown. Default: unknown; a
        method whose uploads are all ``C_W`` messages (no skips) and whose downlink is one ``C_M``
        message returns :meth:`fixed_sizes`."""
        return None, None

    def fixed_sizes(self) -> tuple[int | None, int | None]:
        """The uplink and downlink compressors' message sizes in dimension d (``None`` for a codec
        whose size depends on the data)."""
        return self.ctx.uplink.message_capacity(self.d), self.ctx.downlink.message_capacity(self.d)

    def worker_uploads(self, workers: range, k: int) -> Sequence[bytes | memoryview]:
        """The messages of a rank's local ``workers`` in round ``k``: :meth:`worker_upload` of each, unless the
        method batches them. A method that implements :meth:`upload_of` and keeps the default
        :meth:`round_gradient` gets its workers' gradients a block at a time (:meth:`round_gradients`)."""
        if len(workers) > 1 and _rows_go_with_upload_of(type(self)) and self.uplink_compressor(k).batches_rows(self.d):
            return self.encoded_uploads(workers, k, self.gradient_batch(k))
        batched = type(self).upload_of is not Method.upload_of and type(self).round_gradient is Method.round_gradient
        if not batched or len(workers) == 1:
            return [self.worker_upload(w, k) for w in workers]
        return [self.upload_of(w, k, grad) for w, grad in self.round_gradients(workers, k, self.gradient_batch(k))]

    def encoded_uploads(self, workers: range, k: int, size: int | None) -> Sequence[bytes | memoryview]:
        """``C_W`` of :meth:`upload_rows` of every local worker's gradient (``stochastic_grad`` of ``size`` samples at
        x^k), :func:`block_rows` workers at a time: their gradients into one reused (cache-sized) array, one
        ``encode_many`` call for the block, then :meth:`uploaded`. The messages of a codec of fixed size go into the
        rows of one kept buffer (:meth:`outbox_rows`: no fresh pages) and come back as its rows,
        :class:`mpicomp.wire.MessageRows` of one block that the transport sends without a copy; for codecs of
        data-dependent size, :class:`mpicomp.wire.PackedMessages` where the codec packs them, else a list. ``C_W`` is
        round ``k``'s :meth:`uplink_compressor`."""
        codec = self.uplink_compressor(k)
        batches, per_block = [], block_rows(self.d)
        gradients = self.scratch_rows(min(per_block, len(workers)))
        messages = self.outbox_rows(len(workers), codec)
        for start in range(0, len(workers), per_block):
            block = workers[start : start + per_block]
            rows = self.upload_rows(
                block, k, self.stochastic_grads(block, self.x, k, size, out=gradients[: len(block)])
            )
            out = None if messages is None else messages[start : start + len(block)]
            batch = codec.encode_many(rows, self.keys(block, k, STREAM_UPLINK), out=out)
            self.uploaded(block, k, batch)
            batches.append(batch)
        if messages is not None:
            return MessageRows([messages])  # every batch wrote its rows of the kept buffer: one block
        packed = [batch for batch in batches if isinstance(batch, PackedMessages)]
        if len(packed) == len(batches):
            return PackedMessages.joined(packed)
        return [message for batch in batches for message in batch]

    def upload_rows(self, workers: range, k: int, grads: np.ndarray) -> np.ndarray:
        """The vectors a block of ``workers`` compresses in round ``k``, from their minibatch gradients at ``x^k``
        ``grads`` (one row each, a block reused for the next: may be changed in place), for a method whose
        :meth:`upload_of` is ``C_W`` of a vector computed row by row (from its :meth:`round_gradient`, which a method
        that overrides it computes here from its own); a method that implements it gets its uploads encoded a block
        at a time (:meth:`encoded_uploads`, for codecs that batch rows) and finishes each block's step in
        :meth:`uploaded`. Default: the gradients."""
        return grads

    def uploaded(self, workers: range, k: int, messages: Sequence[memoryview]) -> None:
        """A block's step after :meth:`encoded_uploads` encoded its :meth:`upload_rows` as ``messages`` (a worker's
        memory moving by its own upload). Default: nothing."""

    def uplink_compressor(self, k: int) -> Compressor:
        """The compressor of round ``k``'s uploads (:meth:`encoded_uploads`). Default: ``[compressor] uplink``; a
        method whose first round sends something else (EF21's uncompressed ``g_i^0``) says so here."""
        return self.ctx.uplink

    def worker_matrix(self, *shape: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Zeros of shape ``(local workers, *shape)`` and ``{w: its row}``: per-worker state (a worker attribute)
        held as the rows of one array, so that a block of workers moves by one call (:meth:`local_rows`)."""
        matrix = np.zeros((len(self.ctx.local_workers), *shape))
        return matrix, dict(zip(self.ctx.local_workers, matrix, strict=True))

    def local_rows(self, workers: range) -> slice:
        """The rows of a block of local ``workers`` in a :meth:`worker_matrix`."""
        first = self.ctx.local_workers.start
        return slice(workers.start - first, workers.stop - first)

    def worker_upload(self, w: int, k: int) -> bytes | memoryview:
        """Worker ``w``'s message in round ``k`` (``b""`` for a skipped upload). Default:
        :meth:`upload_of` its :meth:`round_gradient`."""
        if type(self).upload_of is Method.upload_of:
            raise self._no_round("worker_upload")
        return self.upload_of(w, k, self.round_gradient(w, k))

    def upload_of(self, w: int, k: int, grad: np.ndarray) -> bytes | memoryview:
        """Worker ``w``'s message in round ``k`` from its gradient ``grad`` (:meth:`round_gradient`), for a method
        whose upload is a step on that gradient: it implements this instead of :meth:`worker_upload`. ``grad``
        may be a row of a block reused for the next worker: use it, copy it to keep it."""
        raise self._no_round("worker_upload")

    def round_gradient(self, w: int, k: int) -> np.ndarray:
        """Worker ``w``'s gradient ``g_i`` in round ``k`` for :meth:`upload_of`: the minibatch gradient at ``x^k`` of
        :meth:`gradient_batch` samples. A method that estimates ``g_i`` its own way (VR-DIANA) overrides this; its
        workers then go one by one unless it computes the same estimates for a block in :meth:`upload_rows`."""
        return self.stochastic_grad(w, self.x, k, self.gradient_batch(k))

    def gradient_batch(self, k: int) -> int | None:
        """Samples per worker of round ``k``'s :meth:`round_gradient`: None for ``[data] batch``, 0 for the full
        local gradient."""
        return None

    def master_downlink(self, uploads: Sequence[memoryview], k: int) -> bytes | memoryview:
        """The master's message in round ``k`` from all uploads, ordered by worker id."""
        raise self._no_round("master_downlink")

    def apply_downlink(self, message: memoryview, k: int) -> None:
        """Update the model replica (and local worker state) from the downlink, on every process."""
        raise self._no_round("apply_downlink")

    def _no_round(self, hook: str) -> NotImplementedError:
        return NotImplementedError(f"method {self.name!r} must override round() or implement {hook}()")

    def warm_up(self) -> None:
        """Compile what the round needs (numba kernels of the compressors and of the minibatch
        sampler) before round 1, so that start-up is not mistaken for the first round's time;
        throwaway keys only."""
        for compressor in {self.ctx.uplink, self.ctx.downlink}:
            compressor.compile_kernels(self.d)
        RandomKey(0).sample(2, 1)

    def default_stepsize(self) -> float:
        """Step size used when the user sets none: ``1/L`` unless the method's theory says otherwise."""
        return 1.0 / self.problem.smoothness()

    def metrics(self) -> dict[str, float]:
        """This round's values of the declared :attr:`columns` (called on the master, on logged rounds)."""
        return {}

    def sample(self) -> np.ndarray:
        """A sampler's current draw, streamed to ``/samples`` after burn-in and thinning (default: ``x``)."""
        return self.x

    # --- checkpoints -------------------------------------------------------------------
    def worker_state(self, w: int) -> dict[str, np.ndarray]:
        """Local worker ``w``'s state after a round: ``{path: array}`` of its :attr:`worker_attrs` entries."""
        state: dict[str, np.ndarray] = {}
        for name in self.worker_attrs:
            flatten(getattr(self, name).get(w), name, state)
        return state

    def load_worker_state(self, w: int, state: Mapping[str, np.ndarray]) -> None:
        """Put back local worker ``w``'s state saved by :meth:`worker_state` (on any number of ranks). An array is
        copied into the one it replaces, so that a row of a :meth:`worker_matrix` stays that row: workers' entries
        must not share an array (a fresh method gives each its own, as ``worker_matrix`` does)."""
        for name in self.worker_attrs:
            table = getattr(self, name)
            current = table.get(w)
            value = restore(current, state, name)
            if value is None:
                table.pop(w, None)
            elif isinstance(current, np.ndarray):
                current[...] = value  # restore() gave it the same shape and dtype
            else:
                table[w] = value

    def shared_state(self) -> dict[str, np.ndarray]:
        """The replicated state (``replica/...``, e.g. ``x``) and, on the master, its own (``master/...``)."""
        state: dict[str, np.ndarray] = {}
        for name in self.replica_attrs:
            flatten(getattr(self, name), f"replica/{name}", state)
        if self.ctx.is_master:
            for name in self.master_attrs:
                flatten(getattr(self, name), f"master/{name}", state)
        return state

    def load_shared_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Put back :meth:`shared_state`: the replica on every process, the master's part on the master."""
        for name in self.replica_attrs:
            setattr(self, name, restore(getattr(self, name), state, f"replica/{name}"))
        if self.ctx.is_master:
            for name in self.master_attrs:
                setattr(self, name, restore(getattr(self, name), state, f"master/{name}"))

    # --- helpers shared by methods ----------------------------------------------------
    def key(self, worker: int, k: int, stream: int) -> RandomKey:
        return RandomKey(self.ctx.seed, k, worker, stream)

    def keys(self, workers: Sequence[int], k: int, stream: int) -> RoundKeys:
        """The keys of ``workers`` in round ``k`` (:meth:`key` of each), their states derived in one call."""
        return RoundKeys(self.ctx.seed, k, workers, stream)

    def sample_batch(self, w: int, k: int, size: int | None = None) -> np.ndarray | None:
        """Worker ``w``'s minibatch indices in round ``k`` (uniform without replacement), or
        ``None`` for the full shard (batch 0 or batch >= shard size)."""
        return self.sample_batches(range(w, w + 1), k, size)[0]

    def sample_batches(self, workers: Sequence[int], k: int, size: int | None = None) -> list[np.ndarray | None]:
        """:meth:`sample_batch` of each of the local ``workers`` (one kernel call draws them all)."""
        size = self.ctx.batch if size is None else size
        counts = self.shard_sizes[worker_ids(workers)]
        if size <= 0:
            return [None] * len(workers)
        drawn = self.keys(workers, k, STREAM_SAMPLING).sample_each(counts, size)
        return [idx if size < m else None for idx, m in zip(drawn, counts.tolist(), strict=True)]

    def stochastic_grad(self, w: int, x: np.ndarray, k: int, size: int | None = None) -> np.ndarray:
        """``g_i(x)``: the minibatch gradient of f_w at x for round k (full if batch = 0)."""
        return self.stochastic_grads(range(w, w + 1), x, k, size)[0]

    def stochastic_grads(
        self, workers: Sequence[int], x: np.ndarray, k: int, size: int | None = None, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Row j: :meth:`stochastic_grad` of local worker ``workers[j]`` (the same bits), into ``out`` when
        given (``(len(workers), d)`` float64): the minibatches drawn in one call, the gradients by
        :meth:`Problem.minibatch_grads`."""
        rows = np.empty((len(workers), self.d)) if out is None else out
        return self.problem.minibatch_grads(x, workers, self.sample_batches(workers, k, size), rows)

    def round_gradients(self, workers: range, k: int, size: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(w, stochastic_grad(w, x^k, k, size))`` for every worker of ``workers`` in order, the same bits,
        computed :func:`block_rows` workers at a time (one :meth:`stochastic_grads` call per block, without
        the per-call cost of one worker's). Each gradient is a row of a block reused for the next one: use it
        before taking the next (a worker's own step), copy it to keep it."""
        per_block = block_rows(self.d)
        rows = np.empty((min(per_block, len(workers)), self.d))
        for start in range(0, len(workers), per_block):
            block = workers[start : start + per_block]
            yield from zip(block, self.stochastic_grads(block, self.x, k, size, out=rows[: len(block)]), strict=True)

    def method_rng(self, worker: int, k: int) -> np.random.Generator:
        """A generator for the method's own coin flips (e.g. L-SVRG's refresh), keyed by (worker, k)."""
        return self.key(worker, k, STREAM_METHOD).numpy_generator()

    def encode_up(self, v: np.ndarray, w: int, k: int, compressor: Compressor | None = None) -> memoryview:
        """Compress worker ``w``'s vector with the uplink compressor and its round key (into worker
        ``w``'s :meth:`outbox`: the message is valid until ``w``'s next upload)."""
        codec = compressor or self.ctx.uplink
        return codec.encode(v, self.key(w, k, STREAM_UPLINK), out=self.outbox(w, codec))

    def decode_up(
        self, message: bytes | memoryview, w: int, k: int, compressor: Compressor | None = None
    ) -> np.ndarray:
        """Decode worker ``w``'s upload of round ``k``."""
        return (compressor or self.ctx.uplink).decode(message, self.d, self.key(w, k, STREAM_UPLINK))

    def add_up(
        self,
        message: bytes | memoryview,
        w: int,
        k: int,
        target: np.ndarray,
        scale: float = 1.0,
        compressor: Compressor | None = None,
    ) -> None:
        """``target += scale * C_W(message)`` for worker ``w``'s upload of round ``k`` (a worker's memory moving
        by what the master decodes): fused where the codec can (a sparsifier adds its k values, no d-vector),
        else through one temporary vector, as :meth:`add_down`."""
        (compressor or self.ctx.uplink).decode_add(message, target, self.key(w, k, STREAM_UPLINK), scale)

    def add_up_rows(
        self,
        messages: Sequence[bytes | memoryview],
        workers: range,
        k: int,
        targets: np.ndarray,
        scale: float = 1.0,
        compressor: Compressor | None = None,
    ) -> None:
        """:meth:`add_up` of a block of ``workers``, each into its own row of ``targets`` (``(len(workers), d)``,
        C-contiguous), with the same bits: one call for a block's own uploads (``Compressor.decode_add_rows``)."""
        codec = compressor or self.ctx.uplink
        codec.decode_add_rows(messages, self.keys(workers, k, STREAM_UPLINK), targets, scale)

    def decode_uploads(
        self, uploads: Sequence[bytes | memoryview], k: int, compressor: Compressor | None = None
    ) -> list[np.ndarray | None]:
        """Every worker's decoded upload of round ``k``, ``None`` for a skipped (zero-length) one.

        A skip is a :class:`MessageError` unless the method declares ``skipped_upload = "zero"``.
        """
        return [
            None if self._skipped(w, message, k) else self.decode_up(message, w, k, compressor)
            for w, message in enumerate(uploads)
        ]

    def _skipped(self, w: int, message: bytes | memoryview, k: int) -> bool:
        """True for a skipped (zero-length) upload; a :class:`MessageError` unless the method allows skips."""
        if len(message) > 0:
            return False
        if self.skipped_upload == "error":
            raise MessageError(
                f"{self.name}: worker {w} sent an empty upload in round {k + 1}; this method never skips"
            )
        return True

    def sum_of_uploads(
        self,
        uploads: Sequence[bytes | memoryview],
        k: int,
        compressor: Compressor | None = None,
        divisor: float = 1.0,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """``(sum_i C_W(v_i)) / divisor`` into ``out`` (default a new vector): one fused decode-and-sum
        of the uploads (:meth:`Compressor.decode_sum`) in worker-id order (rank-independent); a
        skipped upload adds 0 where the method allows skips."""
        codec = compressor or self.ctx.uplink
        kept: Sequence[int] = range(len(uploads))
        if (message_lengths(uploads) == 0).any():
            kept = [w for w, message in enumerate(uploads) if not self._skipped(w, message, k)]
        try:
            return codec.decode_sum(
                uploads if len(kept) == len(uploads) else [uploads[w] for w in kept],
                self.keys(kept, k, STREAM_UPLINK),
                np.empty(self.d) if out is None else out,
                divisor,
            )
        except MessageError as error:
            if error.index is None:
                raise
            raise MessageError(f"{self.name}: worker {kept[error.index]}'s upload in round {k + 1}: {error}") from error

    def mean_of_uploads(
        self,
        uploads: Sequence[bytes | memoryview],
        k: int,
        compressor: Compressor | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """``(1/n) sum_i C_W(v_i)`` (:meth:`sum_of_uploads` with the division fused)."""
        return self.sum_of_uploads(uploads, k, compressor, divisor=self.n, out=out)

    def encode_down(self, v: np.ndarray, k: int) -> memoryview:
        """The master's downlink message ``C_M(v)`` (valid until the next downlink)."""
        return self.ctx.downlink.encode(
            v, self.key(MASTER, k, STREAM_DOWNLINK), out=self.outbox(MASTER, self.ctx.downlink)
        )

    def outbox(self, sender: int, compressor: Compressor) -> np.ndarray | None:
        """The byte buffer ``sender``'s messages are encoded into, kept from round to round (fresh
        pages cost a pass over memory each); ``None`` for codecs of data-dependent size. Messages are
        round-scoped: a method that keeps one past the round copies it."""
        capacity = compressor.message_capacity(self.d)
        if capacity is None:
            return None
        buffer = self._outboxes.get(sender)
        if buffer is None or buffer.size < capacity:
            buffer = self._outboxes[sender] = np.empty(capacity, dtype=np.uint8)
        return buffer

    def outbox_rows(self, count: int, compressor: Compressor) -> np.ndarray | None:
        """The buffer of a rank's batched uploads (``Compressor.encode_many``'s ``out``): the rows of one
        ``(count, message_capacity)`` uint8 array, one per method, kept from round to round (a call with
        another shape replaces it), so the messages lie back to back and are sent without a copy; ``None`` for
        codecs of data-dependent size. Unlike :meth:`outbox` it is not per sender: one set of batched
        messages at a time."""
        capacity = compressor.message_capacity(self.d)
        if capacity is None:
            return None
        rows = self._outbox_rows
        if rows is None or rows.shape != (count, capacity):
            rows = self._outbox_rows = np.empty((count, capacity), dtype=np.uint8)
        return rows

    def scratch_rows(self, count: int, which: int = 0) -> np.ndarray:
        """A ``(count, d)`` float64 block to work in, scratch number ``which``, kept from block to block and round
        to round (grown when a block asks for more rows): a fresh block-sized array costs a pass of page faults
        each time. Its contents are left from the last use. ``which = 0`` holds the gradients of
        :meth:`encoded_uploads`; a method's :meth:`upload_rows` takes 1 and up."""
        block = self._scratch.get(which)
        if block is None or len(block) < count:
            block = self._scratch[which] = np.empty((count, self.d))
        return block[:count]

    def decode_down(self, message: bytes | memoryview, k: int) -> np.ndarray:
        return self.ctx.downlink.decode(message, self.d, self.key(MASTER, k, STREAM_DOWNLINK))

    def add_down(self, message: bytes | memoryview, k: int, target: np.ndarray, scale: float) -> None:
        """``target += scale * C_M(message)`` (``x -= gamma g`` is ``scale = -gamma``, bit for bit), fused
        where the codec can (identity, natural: one pass), else through one temporary vector. A bad payload
        raises :class:`MessageError` with ``target`` partly updated; the run then stops as failed."""
        self.ctx.downlink.decode_add(message, target, self.key(MASTER, k, STREAM_DOWNLINK), scale)


_METHODS: dict[str, type[Method]] = {}


def _defined_by(cls: type, name: str) -> type:
    """The class of ``cls``'s MRO whose body defines attribute ``name``."""
    return next(owner for owner in cls.__mro__ if name in vars(owner))


def _rows_go_with_upload_of(cls: type[Method]) -> bool:
    """Whether ``cls`` implements :meth:`Method.upload_rows` for its own ``upload_of`` and the other hooks of
    :attr:`Method.rows_follow`: defined by the class that defines them all or a subclass of it (a subclass that
    overrides one of them alone goes worker by worker)."""
    rows = _defined_by(cls, "upload_rows")
    return (
        rows is not Method
        and cls.upload_of is not Method.upload_of
        and all(issubclass(rows, _defined_by(cls, hook)) for hook in cls.rows_follow)
    )


def check_method(cls: type[Method]) -> None:
    """TypeError unless ``cls`` has what a usable method needs: a name, a known kind and skip
    policy, an ``Options`` dataclass derived from :class:`MethodOptions`, and a round (its own
    :meth:`Method.round` or the three hooks)."""
    if not isinstance(getattr(cls, "name", None), str):
        raise TypeError("method class lacks its name (a str class attribute)")
    if cls.kind not in KINDS:
        raise TypeError(f"method {cls.name!r}: kind {cls.kind!r} is not one of {KINDS}")
    if cls.skipped_upload not in SKIP_POLICIES:
        raise TypeError(f"method {cls.name!r}: skipped_upload {cls.skipped_upload!r} is not one of {SKIP_POLICIES}")
    if not (dataclasses.is_dataclass(cls.Options) and issubclass(cls.Options, MethodOptions)):
        raise TypeError(f"method {cls.name!r}: Options must be a dataclass derived from MethodOptions")
    hooks = ("worker_upload", "master_downlink", "apply_downlink")
    missing = [hook for hook in hooks if getattr(cls, hook) is getattr(Method, hook)]
    if cls.upload_of is not Method.upload_of and "worker_upload" in missing:  # the default steps on its gradient
        missing.remove("worker_upload")
    if cls.round is Method.round and missing:
        raise TypeError(f"method {cls.name!r} lacks round() or {', '.join(missing)}()")


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator adding a method to the registry under ``cls.name``."""
    if cls.name in _METHODS:
        raise RuntimeError(f"method name {cls.name!r} registered twice")
    try:
        check_method(cls)
    except TypeError as error:
        raise RuntimeError(str(error)) from None
    _METHODS[cls.name] = cls
    return cls


def _check_entry_point(name: str, cls: type) -> None:
    check_method(cls)
    if getattr(cls, "name", None) != name:
        raise TypeError(f"the entry point's name differs from the class's name {getattr(cls, 'name', None)!r}")
    if name in _METHODS:
        raise TypeError(f"the name is taken by {target_of(_METHODS[name])}")


@cache
def plugins() -> dict[str, Plugin]:
    """The methods of entry-point group ``mpicomp.methods`` (read once; bad ones logged and left out)."""
    return load_entry_points("mpicomp.methods", Method, _check_entry_point)


def method_class(name: str) -> type[Method]:
    """The method registered as ``name`` (mpicomp's or an entry point's) or named ``module:Class``;
    ValueError listing the known names otherwise."""
    if name in _METHODS:
        return _METHODS[name]
    if ":" in name:
        return load_target(name, Method, "method", check_method)
    if name in plugins():
        return plugins()[name].cls
    raise ValueError(f"unknown method {name!r}; known methods: {', '.join(available_methods())} (or module:Class)")


def available_methods() -> dict[str, type[Method]]:
    """Method classes by name, mpicomp's and the plugins'."""
    return dict(sorted({**{name: p.cls for name, p in plugins().items()}, **_METHODS}.items()))


__all__ = [
    "KINDS",
    "MASTER",
    "OPTIMIZER",
    "SAMPLER",
    "SKIP_POLICIES",
    "Column",
    "Method",
    "MethodContext",
    "MethodOptions",
    "available_methods",
    "method_class",
    "register_method",
]
