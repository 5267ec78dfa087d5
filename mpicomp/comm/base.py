"""The transport contract: moves opaque bytes between logical workers and the master.

Logical worker ``w`` (0 <= w < n_workers) lives on the rank whose :func:`worker_range`
contains it; rank 0 also hosts the master. Workers are spread in contiguous blocks, so a
worker's id, never its rank, decides its data shard and random stream. With fewer workers
than ranks some ranks host no worker (they still take part in every collective).

Received buffers are returned as read-only ``memoryview`` objects (``len``, slicing,
``== b""`` and every decoder accept them; ``bytes(view)`` copies).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from .accounting import ByteCounter

Buffer = bytes | bytearray | memoryview | np.ndarray


def worker_range(n_workers: int, size: int, rank: int) -> range:
    """Contiguous block of logical worker ids hosted by ``rank`` out of ``size`` ranks."""
    return range(rank * n_workers // size, (rank + 1) * n_workers // size)


def check_n_workers(n_workers: int) -> int:
    """Validate the number of logical workers (a positive integer)."""
    if isinstance(n_workers, bool) or not isinstance(n_workers, (int, np.integer)) or n_workers < 1:
        raise ValueError(f"n_workers must be a positive integer, got {n_workers!r}")
    return int(n_workers)


def layout_summary(n_workers: int, size: int, shown: int = 8) -> str:
    """``"4 ranks x 8 workers: rank 0 -> workers 0-1, ..."``; past ``shown`` ranks the middle is elided."""

    def describe(rank: int) -> str:
        block = worker_range(n_workers, size, rank)
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


def readonly_bytes(buf: Buffer) -> memoryview:
    """A read-only flat byte view of ``buf``; writable buffers are copied so the view cannot change."""
    view = memoryview(buf)
    if not view.c_contiguous:
        raise ValueError(f"messages must be contiguous byte buffers, got a non-contiguous {type(buf).__name__}")
    flat = view.cast("B") if view.format != "B" or view.ndim != 1 else view
    return flat if flat.readonly else memoryview(flat.tobytes())


def master_value(value: object, what: str) -> object:
    """``value`` unless the master passed ``None`` where it must provide ``what``."""
    if value is None:
        raise ValueError(f"the master (rank 0) must pass {what}, got None")
    return value


class Transport(ABC):
    """Uplink ``gather`` of each worker's upload to the master, downlink ``broadcast``.

    Every byte of ``gather`` and ``broadcast`` is counted in ``self.counter`` (see
    :mod:`mpicomp.comm.accounting`); ``all_equal`` and ``agree`` are
    bookkeeping, not method traffic, and are not counted.
    """

    n_workers: int
    rank: int
    size: int
    counter: ByteCounter

    @property
    def is_master(self) -> bool:
        return self.rank == 0

    @property
    def local_workers(self) -> range:
        return worker_range(self.n_workers, self.size, self.rank)

    def layout_summary(self) -> str:
        """Which rank hosts which workers, for the master's log."""
        return layout_summary(self.n_workers, self.size)

    def _local_uploads(self, uploads: Sequence[Buffer]) -> list[memoryview]:
        """Check there is one upload per local worker and view each as read-only bytes."""
        if len(uploads) != len(self.local_workers):
            raise ValueError(
                f"rank {self.rank} hosts {len(self.local_workers)} workers {self.local_workers} "
                f"but passed {len(uploads)} uploads; pass one (b'' when skipped) per local worker"
            )
        return [readonly_bytes(upload) for upload in uploads]

    def _master_message(self, message: Buffer | None) -> memoryview:
        return readonly_bytes(master_value(message, "its downlink message to broadcast"))

    def _master_code(self, code: int | None) -> int:
        return int(master_value(code, "the code to agree on"))

    @abstractmethod
    def gather(self, uploads: Sequence[Buffer]) -> list[memoryview] | None:
        """``uploads[j]`` is the upload of ``local_workers[j]`` (``b""`` = skipped).

        The master returns all ``n_workers`` uploads ordered by worker id; others ``None``.
        """

    @abstractmethod
    def broadcast(self, message: Buffer | None) -> memoryview:
        """The master passes its downlink message, others ``None``; all return it."""

    @abstractmethod
    def all_equal(self, digest: bytes) -> bool:
        """True on every rank iff every rank passed the same digest (replica checks)."""

    @abstractmethod
    def agree(self, code: int | None) -> int:
        """The master passes a small integer (a stop code), others ``None``; all return it."""
