"""What a method may do with the network in a round: the :class:`Link` protocol.

The transports of :mod:`mpicomp.comm` satisfy it; methods see only this protocol, so they never
import ``comm`` and never call MPI. A round may use any number of exchanges, in any order, as
long as every process makes the same calls (they are collective).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

Buffer = bytes | bytearray | memoryview | np.ndarray


class Link(Protocol):
    """The network as a method sees it (every operation is collective and counted)."""

    n_workers: int

    @property
    def local_workers(self) -> range:
        """The logical workers hosted by this process."""

    @property
    def is_master(self) -> bool:
        """True on the process that hosts the master (and the switch)."""

    def gather(self, uploads: Sequence[Buffer], *, size: int | None = None) -> Sequence[memoryview] | None:
        """One upload per local worker (``b""`` = skipped) to the master, which gets all of them in
        worker order; other processes get ``None``. ``size``: every upload has exactly this many
        bytes, known to every process (then not sent first)."""

    def broadcast(self, message: Buffer | None, *, size: int | None = None) -> memoryview:
        """The master's message (others pass ``None``) to every process; ``size`` as in :meth:`gather`."""

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
        """``sum_w values_w`` over all workers by the switch (exact integers), on every process;
        ``lanes = "natural"``: values are natural codes the switch maps to signed powers of two;
        ``frame``: the switch format whose frames the byte counters see."""

    def max_agree(
        self,
        values: Sequence[np.ndarray],
        length: int,
        *,
        width: int = 8,
        packet_values: int = 256,
        frame: str = "mpicomp",
    ) -> np.ndarray:
        """``max_w values_w`` elementwise over all workers, on every process."""

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
        """ATP's switch: ``(int32 sum, overflowed per packet)``; a packet a worker flagged or whose sum
        overflowed is flagged, not raised."""

    def fallback_sum(
        self, values: Sequence[np.ndarray], length: int, *, packet_values: int = 62, frame: str = "atp"
    ) -> np.ndarray:
        """Every worker's float32 ``values`` added by the master in worker order; the sum on every process."""

    def sum_partials(
        self, rows_of: Callable[[range], np.ndarray], width: int, *, everyone: bool = False
    ) -> np.ndarray | None:
        """Uncounted bookkeeping: the sum of every worker's row (``rows_of(workers)``: the rows of a block of local
        workers) in the fixed worker tree, on the master (``None`` elsewhere)."""
