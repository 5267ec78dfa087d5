"""One process hosts every logical worker and the master: rank 0 of size 1, no MPI calls."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..timing import Stopwatch
from .accounting import ByteCounter
from .base import Transport, check_n_workers


class LocalTransport(Transport):
    """All ``n_workers`` workers in this process; counts bytes exactly as :class:`MPITransport` does."""

    def __init__(self, n_workers: int) -> None:
        self.n_workers = check_n_workers(n_workers)
        self.rank = 0
        self.size = 1
        self.clock = Stopwatch()
        self.idle = Stopwatch()
        self.counter = ByteCounter(self.n_workers, complete=True)

    def _gather_bytes(self, views: Sequence[memoryview], sizes: np.ndarray | int | None) -> Sequence[memoryview]:
        return views

    def _broadcast_bytes(self, view: memoryview | None, size: int | None) -> memoryview:
        assert view is not None, "the only rank is the master, which passes its message"
        return view

    def all_equal(self, digest: bytes) -> bool:
        return True

    def agree(self, code: int | None) -> int:
        return self._master_code(code)

    def gather_rank_values(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64).reshape(1, -1)

    def gather_blobs(self, blobs, workers: range) -> list[memoryview]:
        return self._chunk_workers(blobs, workers)[1]

    def gather_partials(self, per_local_worker: np.ndarray, *, everyone: bool = False) -> np.ndarray:
        return self._partials(per_local_worker)

    def _gather_node_sums(self, sums: np.ndarray, everyone: bool) -> np.ndarray:
        return sums
