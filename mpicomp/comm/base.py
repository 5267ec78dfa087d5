"""The transport contract: moves opaque bytes between logical workers and the master.

Logical worker ``w`` (0 <= w < n_workers) lives on the rank whose :func:`worker_range`
contains it; rank 0 also hosts the master, and may host fewer workers than the others
(``master_share``). Workers are spread in contiguous blocks, so a worker's id, never its rank,
decides its data shard and random stream. With fewer workers
than ranks some ranks host no worker (they still take part in every collective).

Received buffers are returned as read-only ``memoryview`` objects (``len``, slicing,
``== b""`` and every decoder accept them; ``bytes(view)`` copies). A transport may receive into
buffers it reuses, so a received view is valid until its next gather-like collective (``gather``,
``integer_sum``, ``max_agree``) or, for a broadcast, its next broadcast-like one (``broadcast``
and the switch's multicast): decode (or copy) it before. The master's views of its own workers'
uploads are the uploads it passed (no copy): valid until those workers encode again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence, Sized
from functools import cached_property
from typing import NoReturn, Self, overload

import numpy as np

from ..timing import Stopwatch
from ..wire import MessageRows, PackedMessages, byte_view, message_lengths
from .accounting import ByteCounter
from .packets import FRAMES, OP_MAX, OP_SUM, SWITCH_SENDER, PacketSpec, encode_packets
from .switch import RESULT_LANES, Switch, read_aggregate
from .worker_tree import covering_nodes, fold_nodes, join_nodes

Buffer = bytes | bytearray | memoryview | np.ndarray


def worker_range(n_workers: int, size: int, rank: int, master_share: float = 1.0) -> range:
    """Contiguous block of logical worker ids hosted by ``rank`` out of ``size`` ranks.

    Rank 0, which also runs the master, hosts ``master_share`` (in [0, 1]) times as many workers as each
    other rank: rank r >= 1 starts at ``floor(n (s + r - 1) / (s + size - 1))``; ``s = 1`` gives blocks
    as even as the division allows, ``s = 0`` leaves rank 0 to the master alone (when ``size > 1``).
    """
    return range(
        _block_start(n_workers, size, rank, master_share), _block_start(n_workers, size, rank + 1, master_share)
    )


def _block_start(n_workers: int, size: int, rank: int, master_share: float) -> int:
    if rank <= 0:
        return 0
    if rank >= size:
        return n_workers
    p, q = float(master_share).as_integer_ratio()  # s = p / q exactly, so the floor is exact (floats lose it)
    return n_workers * (p + (rank - 1) * q) // (p + (size - 1) * q)


def balanced_master_share(busy: np.ndarray, workers: np.ndarray) -> float | None:
    """The ``master_share`` that would even out the ranks' busy time, from one run's per-rank seconds
    ``busy`` and worker counts ``workers`` (rank 0 first); None when rank 0 is not the slowest, hosts no
    worker to move, or nothing tells the cost of a worker.

    With c the other ranks' seconds per worker and ``M = busy_0 - c w_0`` rank 0's own (the master's)
    work, rank 0 hosting ``s W / (s + P - 1)`` of the W workers balances the P ranks at
    ``s = (c W - M (P - 1)) / (c W + M)``, clamped to [0, 1].
    """
    others = workers[1:].sum()
    if busy.size < 2 or others == 0 or workers[0] == 0 or busy[0] <= busy[1:].max():
        return None
    per_worker = busy[1:].sum() / others
    master = busy[0] - per_worker * workers[0]
    if master <= 0.0:
        return None
    total = per_worker * workers.sum()
    return float(min(1.0, max(0.0, (total - master * (busy.size - 1)) / (total + master))))


def check_master_share(master_share: float) -> float:
    """Validate rank 0's share of workers (a number in [0, 1], see :func:`worker_range`)."""
    if isinstance(master_share, bool) or not isinstance(master_share, (int, float)) or not 0 <= master_share <= 1:
        raise ValueError(f"master_share must be a number in [0, 1], got {master_share!r}")
    return float(master_share)


def check_n_workers(n_workers: int) -> int:
    """Validate the number of logical workers (a positive integer)."""
    if isinstance(n_workers, bool) or not isinstance(n_workers, (int, np.integer)) or n_workers < 1:
        raise ValueError(f"n_workers must be a positive integer, got {n_workers!r}")
    return int(n_workers)


def layout_summary(n_workers: int, size: int, shown: int = 8, master_share: float = 1.0) -> str:
    """``"4 ranks x 8 workers: rank 0 -> workers 0-1, ..."``; past ``shown`` ranks the middle is elided."""

    def describe(rank: int) -> str:
        block = worker_range(n_workers, size, rank, master_share)
        if len(block) == 0:
            return f"rank {rank} -> no workers"
        if len(block) == 1:
            return f"rank {rank} -> worker {block[0]}"
        return f"rank {rank} -> workers {block[0]}-{block[-1]}"

    ranks = list(range(size)) if size <= shown else [*range(shown - 2), None, size - 2, size - 1]
    parts = ["..." if rank is None else describe(rank) for rank in ranks]
    return f"{size} rank{'s' if size != 1 else ''} x {n_workers} worker{'s' if n_workers != 1 else ''}: " + ", ".join(
        parts
    )


def all_of_size(views: Sequence[memoryview], size: int) -> bool:
    """Whether every message of ``views`` has ``size`` bytes (message rows: compared block by block)."""
    if isinstance(views, MessageRows):
        return all(block.shape[1] == size for block in views.blocks)
    return all(len(view) == size for view in views)


def readonly_bytes(buf: Buffer) -> memoryview:
    """A read-only flat byte view of ``buf``. A buffer writable through ``buf`` is copied; a read-only
    view is not (an encoder's message in a buffer it reuses: valid until its owner writes again)."""
    view = byte_view(buf)
    if not view.c_contiguous:
        raise ValueError(f"messages must be contiguous byte buffers, got a non-contiguous {type(buf).__name__}")
    flat = view.cast("B") if view.format != "B" or view.ndim != 1 else view
    return flat if flat.readonly else memoryview(flat.tobytes())


@overload
def master_value(value: None, what: str) -> NoReturn: ...


@overload
def master_value(value: int, what: str) -> int: ...


@overload
def master_value(value: Buffer, what: str) -> Buffer: ...


def master_value(value: int | Buffer | None, what: str) -> int | Buffer:
    """``value`` unless the master passed ``None`` where it must provide ``what``."""
    if value is None:
        raise ValueError(f"the master (rank 0) must pass {what}, got None")
    return value


class Transport(ABC):
    """What crosses the network in a round, counted in ``self.counter``.

    Method traffic: ``gather`` (every worker's upload to the master), ``broadcast`` (the master's
    message to every rank), and the switch capabilities ``integer_sum`` and ``max_agree`` (every
    worker's integer vector, combined by the emulated switch, the result on every rank). Every
    byte of these is counted (see :mod:`mpicomp.comm.accounting`); ``all_equal``, ``agree``,
    ``gather_partials`` and ``sum_partials`` (the runner's and the problems' per-worker metric shares,
    summed in a fixed tree over the worker ids) are bookkeeping, not method traffic, and are not counted.

    A transport implements two uncounted byte movers, :meth:`_gather_bytes` and
    :meth:`_broadcast_bytes`; the counted operations above are built on them here, once.
    """

    n_workers: int
    rank: int
    size: int
    master_share = 1.0  # rank 0's share of workers against every other rank's (see worker_range)
    counter: ByteCounter
    clock: Stopwatch  # seconds in counted collectives (and the switch), waiting for other ranks included
    idle: Stopwatch  # seconds this rank waited for a collective to complete, counted or not

    @property
    def is_master(self) -> bool:
        return self.rank == 0

    @cached_property
    def local_workers(self) -> range:
        """This rank's block of workers, fixed for the transport's life (computed once: every exchange checks it)."""
        return worker_range(self.n_workers, self.size, self.rank, self.master_share)

    def layout_summary(self) -> str:
        """Which rank hosts which workers, for the master's log."""
        return layout_summary(self.n_workers, self.size, master_share=self.master_share)

    def close(self) -> None:  # noqa: B027 - a no-op by default: only the MPI transport holds resources
        """Release what the transport holds (the MPI transport frees its communicator); idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _local_uploads(self, uploads: Sequence[Buffer]) -> Sequence[memoryview]:
        """Check there is one upload per local worker and view each as read-only bytes (message rows and
        packed messages as they are: read-only already)."""
        self._check_local_count(uploads, "uploads", "b'' when skipped")
        if isinstance(uploads, (MessageRows, PackedMessages)):
            return uploads
        return [readonly_bytes(upload) for upload in uploads]

    def _check_local_count(self, items: Sized, what: str, hint: str) -> None:
        if len(items) != len(self.local_workers):
            raise ValueError(
                f"rank {self.rank} hosts {len(self.local_workers)} workers {self.local_workers} "
                f"but passed {len(items)} {what}; pass one ({hint}) per local worker"
            )

    def _partials(self, per_local_worker: np.ndarray) -> np.ndarray:
        """``per_local_worker`` as a C-contiguous float64 array with one row per local worker."""
        rows = np.ascontiguousarray(per_local_worker, dtype=np.float64)
        if rows.ndim != 2:
            raise ValueError(f"partials must be a 2-D array (one row per local worker), got shape {rows.shape}")
        self._check_local_count(rows, "rows of partials", "a row of m float64 values")
        return rows

    def _master_code(self, code: int | None) -> int:
        return int(master_value(code, "the code to agree on"))

    @abstractmethod
    def _gather_bytes(self, views: Sequence[memoryview], sizes: np.ndarray | int | None) -> Sequence[memoryview] | None:
        """Uncounted: the local workers' ``views`` to the master, which returns all ``n_workers`` in
        worker order (others ``None``). ``sizes`` (one per worker, or one int for every worker) when every
        rank knows them, so they need not be sent; ``None`` sends them first. Local views given as
        :class:`mpicomp.wire.MessageRows` with one size for every worker come back as rows too, and as
        :class:`mpicomp.wire.PackedMessages` with the sizes sent first, packed too."""

    @abstractmethod
    def _broadcast_bytes(self, view: memoryview | None, size: int | None) -> memoryview:
        """Uncounted: the master's ``view`` to every rank (others pass ``None``); ``size`` when
        every rank knows it, else it is sent first."""

    def gather(self, uploads: Sequence[Buffer], *, size: int | None = None) -> Sequence[memoryview] | None:
        """``uploads[j]`` is the upload of ``local_workers[j]`` (``b""`` = skipped).

        The master returns all ``n_workers`` uploads ordered by worker id; others ``None``. Uploads
        given as :class:`mpicomp.wire.MessageRows` (``Compressor.encode_many``) with ``size`` come back
        as rows of blocks (the master's own, then the others' as one block), given as
        :class:`mpicomp.wire.PackedMessages` (a codec of data-dependent size) as packed messages (the master's own
        parts, then the others' as one part; the MPI transport), else as a list.
        ``size``: every rank knows that every upload has exactly this many bytes (a codec of fixed
        message size, no skips), so the sizes are not sent first (one collective less); still
        counted as control bytes, the length a message on a real network carries. A local upload
        of another size raises ValueError.
        """
        views = self._local_uploads(uploads)
        if size is not None:
            size = int(size)
            if not all_of_size(views, size):
                lengths = sorted(set(message_lengths(views).tolist()))
                raise ValueError(f"rank {self.rank}: uploads of {lengths} bytes, announced {size}")
        with self.clock.timing():
            gathered = self._gather_bytes(views, size)
        if gathered is None:
            self.counter.count_uploads(self.local_workers, views)
        else:
            self.counter.count_uploads(range(self.n_workers), gathered)
        return gathered

    def broadcast(self, message: Buffer | None, *, size: int | None = None) -> memoryview:
        """The master passes its downlink message, others ``None``; all return it. ``size``: every
        rank knows the message has exactly this many bytes, so it is not sent first (counted as in
        :meth:`gather`); the master's message of another size raises ValueError."""
        view = readonly_bytes(master_value(message, "its downlink message to broadcast")) if self.is_master else None
        if view is not None and size is not None and len(view) != size:
            raise ValueError(f"the master's downlink message has {len(view)} bytes, announced {size}")
        with self.clock.timing():
            received = self._broadcast_bytes(view, size)
        self.counter.count_downlink(received)
        return received

    def integer_sum(
        self,
        values: Sequence[np.ndarray],
        length: int,
        *,
        width: int = 32,
        packet_values: int = 256,
        lanes: str = "int",
        frame: str = "mpicomp",
    ) -> np.ndarray:
        """``sum_w values_w`` over every worker, computed by the emulated switch, on every rank (int64).

        ``values[j]`` is local worker j's vector of ``length`` entries in the ``lanes`` encoding:
        ``"int"``/``"int_be"``, integers in the signed range of a ``width``-bit register; ``"natural"``,
        codes ``r | negative << 8`` that the switch maps to ``(-1)^negative 2^(r-1)``. The sum is exact
        and order-independent; if it leaves the register range, every rank raises
        :class:`AggregationOverflowError`. ``frame`` is the format the byte counters see. The returned
        array is valid until the next switch exchange.
        """
        spec = PacketSpec(OP_SUM, lanes, width, packet_values, frame)
        return self._switch(spec, values, length)[0]

    def flagged_sum(
        self,
        values: Sequence[np.ndarray],
        flagged: Sequence[np.ndarray],
        length: int,
        *,
        packet_values: int = 62,
        lanes: str = "int_be",
        frame: str = "atp",
    ) -> tuple[np.ndarray, np.ndarray]:
        """ATP's switch: ``(sum, overflowed)``, the int32 sum (int64) and, per packet, whether any worker
        flagged it (``flagged[j]``: local worker j's per-packet flags, a value did not fit) or its sum left
        the int32 range; flagged packets' sums are meaningless and nothing is raised."""
        spec = PacketSpec(OP_SUM, lanes, 32, packet_values, frame, fallback=True)
        return self._switch(spec, values, length, flagged)

    def fallback_sum(
        self, values: Sequence[np.ndarray], length: int, *, packet_values: int = 62, frame: str = "atp"
    ) -> np.ndarray:
        """ATP's fallback: every worker's float32 ``values`` (the overflowed packets' entries) to the master,
        which adds them in worker order in float32; the float32 sum on every rank. Counted as frames of
        float32 lanes, up and down, and as :attr:`ByteCounter.fallback_bytes`."""
        self._check_local_count(values, "float vectors", f"a float32 array of length {length}")
        streams = []
        for worker, vector in zip(self.local_workers, values, strict=True):
            array = np.ascontiguousarray(vector, dtype=np.float32)
            if array.shape != (length,):
                raise ValueError(f"worker {worker}: expected {length} float32 values, got {array.shape}")
            streams.append(byte_view(array.view(np.uint8)).toreadonly())
        with self.clock.timing():
            sizes = np.full(self.n_workers, 4 * length, dtype=np.int64)
            gathered = self._gather_bytes(streams, sizes)
            total = None
            if gathered is not None:  # the master
                summed = np.zeros(length, dtype=np.float32)
                for stream in gathered:
                    summed += np.frombuffer(stream, dtype=np.float32)
                total = byte_view(summed.view(np.uint8)).toreadonly()
            received = self._broadcast_bytes(total, 4 * length)
        spec = PacketSpec(OP_SUM, "int_be", 32, packet_values, frame)  # float32 lanes: 4 bytes a value, as int32
        payload, header = spec.split(length)
        counted = self.local_workers if gathered is None else range(self.n_workers)
        self.counter.count_packets(counted, payload, header, packets=spec.packets(length), fallback=True)
        self.counter.count_packet_downlink(payload, header, fallback=True)
        return np.frombuffer(received, dtype=np.float32).copy()

    def max_agree(
        self,
        values: Sequence[np.ndarray],
        length: int,
        *,
        width: int = 8,
        packet_values: int = 256,
        frame: str = "mpicomp",
    ) -> np.ndarray:
        """``max_w values_w`` elementwise over every worker, by the switch, on every rank (int64):
        e.g. the block exponents the workers must agree on before an integer sum. With
        ``frame = "switchml"`` the exponents ride in the value packets' exponent fields, and only
        SwitchML's extra first batch (one exponent-only frame per worker and one back) is counted."""
        return self._switch(PacketSpec(OP_MAX, "int", width, packet_values, frame), values, length)[0]

    def _switch(
        self,
        spec: PacketSpec,
        values: Sequence[np.ndarray],
        length: int,
        flagged: Sequence[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Workers' packets up to the switch (hosted with the master), its aggregate down to every rank."""
        self._check_local_count(values, "integer vectors", f"an integer array of length {length}")
        if self.n_workers > SWITCH_SENDER:
            raise ValueError(f"the switch packet header numbers at most {SWITCH_SENDER} workers, got {self.n_workers}")
        outboxes = self._switch_buffers("outbox", len(values), spec.stream_bytes(length))
        streams = []
        for j, (worker, vector) in enumerate(zip(self.local_workers, values, strict=True)):
            array = np.asarray(vector)
            if array.shape != (length,) or array.dtype.kind not in "iu":
                raise ValueError(
                    f"worker {worker}: expected an integer vector of length {length}, got {array.dtype} {array.shape}"
                )
            overflow = None if flagged is None else np.asarray(flagged[j], dtype=bool)
            stream = encode_packets(array, spec, worker, overflow=overflow, out=outboxes[j])
            streams.append(byte_view(stream).toreadonly())
        with self.clock.timing():  # the network and the switch
            sizes = np.full(self.n_workers, spec.stream_bytes(length), dtype=np.int64)
            gathered = self._gather_bytes(streams, sizes)
            aggregate = None
            if gathered is not None:  # the master, which hosts the switch
                aggregate = self._switch_device.aggregate(gathered, spec, length)
            received = self._broadcast_bytes(aggregate, spec.stream_bytes(length, RESULT_LANES))
        counted = self.local_workers if gathered is None else range(self.n_workers)
        up, down, packets = spec.split(length), spec.split(length, RESULT_LANES), spec.packets(length)
        if spec.op == OP_MAX and spec.frame == "switchml":  # SwitchML's extra first batch
            packets = min(packets, 1)
            up = down = (4 * spec.packet_values * packets, FRAMES["switchml"].header_bytes * packets)
        self.counter.count_packets(counted, *up, packets=packets)
        self.counter.count_packet_downlink(*down)
        result = self._switch_buffers(f"aggregate {spec.op}", 1, 8 * length)[0].view(np.int64)
        total, overflowed = read_aggregate(received, spec, length, out=result)
        if spec.fallback:
            self.counter.count_overflow(int(overflowed.sum()))
        return total, overflowed

    @property
    def _switch_device(self) -> Switch:
        """The emulated switch (used on the master), created on first use."""
        switch = self.__dict__.get("_switch_state")
        if switch is None:
            switch = self.__dict__["_switch_state"] = Switch()
        return switch

    def _switch_buffers(self, name: str, count: int, size: int) -> list[np.ndarray]:
        """``count`` byte buffers of at least ``size`` bytes kept across rounds (``name``: outbox or aggregate)."""
        kept = self.__dict__.setdefault("_switch_kept", {})
        buffers = kept.get(name, [])
        if len(buffers) < count or (buffers and buffers[0].size < size):
            buffers = kept[name] = [np.empty(size, dtype=np.uint8) for _ in range(count)]
        return [buffer[:size] for buffer in buffers[:count]]

    @abstractmethod
    def all_equal(self, digest: bytes) -> bool:
        """True on every rank iff every rank passed the same digest (replica checks)."""

    @abstractmethod
    def agree(self, code: int | None) -> int:
        """The master passes a small integer (a stop code), others ``None``; all return it."""

    @abstractmethod
    def gather_rank_values(self, values: np.ndarray) -> np.ndarray | None:
        """Uncounted bookkeeping: every rank's float64 row of ``m`` values (the same m everywhere) to
        the master, as an ``(size, m)`` array in rank order; ``None`` on the other ranks."""

    def _chunk_workers(self, blobs: Sequence[Buffer], workers: range) -> tuple[range, list[memoryview]]:
        """This rank's workers among ``workers`` and their blobs as read-only bytes."""
        local = self.local_workers
        start = max(local.start, workers.start)
        mine = range(start, max(start, min(local.stop, workers.stop)))
        if len(blobs) != len(mine):
            raise ValueError(f"rank {self.rank} hosts workers {mine} of {workers} but passed {len(blobs)} blobs")
        return mine, [readonly_bytes(blob) for blob in blobs]

    @abstractmethod
    def gather_blobs(self, blobs: Sequence[Buffer], workers: range) -> list[memoryview] | None:
        """Uncounted bookkeeping (checkpoints): one byte string per worker of the range ``workers``
        to the master, in worker order. Each rank passes those of its local workers in the range
        (possibly none); the master gets ``len(workers)`` views, the others ``None``. Callers bound
        the memory by gathering a few workers at a time."""

    def sum_partials(
        self, rows_of: Callable[[range], np.ndarray], width: int, *, everyone: bool = False
    ) -> np.ndarray | None:
        """Uncounted bookkeeping: the sum of every worker's row of ``width`` float64 values (``rows_of(workers)``
        gives the rows of a block of local workers, ``(len(workers), width)``), added in the fixed tree of
        :mod:`.worker_tree`: the same bits whatever the rank layout, with ``O(log n)`` rows and one block in memory
        instead of one row per worker. The sum on the master (every rank with ``everyone``), ``None`` elsewhere."""
        local = self.local_workers
        sums = fold_nodes(rows_of, covering_nodes(local.start, local.stop, self.n_workers), width)
        gathered = self._gather_node_sums(sums, everyone)
        if gathered is None:
            return None
        nodes = [
            node for block in self._worker_blocks() for node in covering_nodes(block.start, block.stop, self.n_workers)
        ]
        return join_nodes(dict(zip(nodes, gathered, strict=True)), self.n_workers)

    def _worker_blocks(self) -> list[range]:
        """Every rank's workers, in rank order."""
        return [worker_range(self.n_workers, self.size, rank, self.master_share) for rank in range(self.size)]

    @abstractmethod
    def _gather_node_sums(self, sums: np.ndarray, everyone: bool) -> np.ndarray | None:
        """Every rank's node sums (rows), in rank order, on the master (every rank with ``everyone``)."""

    @abstractmethod
    def gather_partials(self, per_local_worker: np.ndarray, *, everyone: bool = False) -> np.ndarray | None:
        """Uncounted bookkeeping: every local worker's row of ``m`` float64 partial values to the master.

        Each rank passes a ``(len(local_workers), m)`` array (the same ``m`` everywhere); the master
        (every rank with ``everyone``) gets the ``(n_workers, m)`` array of all rows in worker-id
        order, other ranks ``None``. Nothing is summed here, so a caller that folds the rows in
        worker order gets the same bits whatever the rank layout.
        """
