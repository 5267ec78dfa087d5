"""One process hosts every logical worker and the master: rank 0 of size 1, no MPI calls."""

from __future__ import annotations

from collections.abc import Sequence

from .accounting import ByteCounter
from .base import Buffer, Transport, check_n_workers


class LocalTransport(Transport):
    """All ``n_workers`` workers in this process; counts bytes exactly as :class:`MPITransport` does."""

    def __init__(self, n_workers: int) -> None:
        self.n_workers = check_n_workers(n_workers)
        self.rank = 0
        self.size = 1
        self.counter = ByteCounter(self.n_workers, complete=True)

    def gather(self, uploads: Sequence[Buffer]) -> list[memoryview]:
        views = self._local_uploads(uploads)
        self.counter.count_uploads(self.local_workers, views)
        return views

    def broadcast(self, message: Buffer | None) -> memoryview:
        view = self._master_message(message)
        self.counter.count_downlink(view)
        return view

    def all_equal(self, digest: bytes) -> bool:
        return True

    def agree(self, code: int | None) -> int:
        return self._master_code(code)
