"""The transport contract: moves opaque bytes between logical workers and the master.

Logical worker ``w`` (0 <= w < n_workers) lives on rank ``owner(w)``; rank 0 also hosts
the master. Workers are spread in contiguous blocks, so a worker's id, never its rank,
decides its data shard and random stream.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np


def worker_range(n_workers: int, size: int, rank: int) -> range:
    """Contiguous block of logical worker ids hosted by ``rank`` out of ``size`` ranks."""
    return range(rank * n_workers // size, (rank + 1) * n_workers // size)


class Transport(ABC):
    """Uplink ``gather`` of each worker's upload to the master, downlink ``broadcast``.

    Implementations count every byte they move in ``self.counter`` (a
    :class:`mpicomp.comm.accounting.ByteCounter`).
    """

    n_workers: int
    rank: int
    size: int

    @property
    def is_master(self) -> bool:
        return self.rank == 0

    @property
    def local_workers(self) -> range:
        return worker_range(self.n_workers, self.size, self.rank)

    @abstractmethod
    def gather(self, uploads: Sequence[bytes]) -> list[bytes] | None:
        """``uploads[j]`` is the upload of ``local_workers[j]`` (``b""`` = skipped).

        The master returns all ``n_workers`` uploads ordered by worker id; others ``None``.
        """

    @abstractmethod
    def broadcast(self, message: bytes | None) -> bytes:
        """The master passes its downlink message, others ``None``; all return it."""

    @abstractmethod
    def all_equal(self, digest: bytes) -> bool:
        """True on every rank iff every rank passed the same digest (replica checks)."""

    @abstractmethod
    def gather_arrays(self, values: np.ndarray) -> np.ndarray | None:
        """Concatenate per-local-worker rows (shape (len(local_workers), ...)) on the master,
        ordered by worker id; used for metrics, not counted as method traffic."""
