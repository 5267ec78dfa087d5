"""MPI transport: upper-case (buffer) mpi4py collectives on numpy buffers, on its own communicator.

Method traffic uses buffer collectives only (no pickle). Uplink (one ``gather``): ``Gatherv`` of
every worker's upload length (int64, one per local worker) to rank 0, then ``Gatherv`` of each
rank's concatenated local uploads. Downlink (one ``broadcast``): ``Bcast`` of the message length
(int64), then ``Bcast`` of the bytes. Switch aggregations skip the lengths (every rank knows
them): ``Gatherv`` of the packets to rank 0, which hosts the switch, and ``Bcast`` of its
aggregate. Ranks hosting no worker send zero elements, so zero-length uploads and all-empty
rounds cost only the size prefixes and never block. The replica check ``all_equal`` gathers a
SHA-256 of each rank's digest (``Iallgather``, bookkeeping, not counted).

The transport duplicates the communicator it is given, so its collectives never match another
library's on the same ranks, and frees the duplicate in :meth:`MPITransport.close`.

Zero copy: uploads are sent from the encoders' own buffers (one local worker, or an
``encode_many`` batch), the master's own uploads never move (``MPI_IN_PLACE``: the master gets back
its own views for its workers), and the others are received into buffers the transport keeps from
round to round: one for gathers (``gather``, ``integer_sum``,
``max_agree``), one for broadcasts (``broadcast``, the switch's multicast); a received view is
valid until the next collective using its buffer (decode it, or copy it, before).

Waiting (``wait``): MPI libraries busy-poll while a collective is pending. With more ranks on a
node than cores (a laptop, an oversubscribed node), the ranks waiting for the master's downlink
then take the cores the master computes on. ``"sleep"`` runs the collectives nonblocking and
sleeps ``SLEEP_SECONDS`` between tests of the request; ``"busy"`` is MPI's own blocking wait;
``"auto"`` (the default) sleeps exactly when this node hosts more ranks than this process may use
cores (``os.sched_getaffinity``). MPICH's own knob for the same is the environment variable
``MPIR_CVAR_CH4_PROGRESS_THROTTLE=1`` (a ``usleep(1)`` after
``MPIR_CVAR_CH4_PROGRESS_THROTTLE_NO_PROGRESS_COUNT`` idle polls).

Threads: the compressors split a long vector over ``numba.get_num_threads()`` threads. The
transport sets that to each rank's share of the node's cores (``cores // ranks``, at least 1;
:func:`share_kernel_threads`) until :meth:`MPITransport.close`, so that ranks do not each split
their kernels over the whole node; ``NUMBA_NUM_THREADS`` in the environment overrides it.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from itertools import pairwise

import numba
import numpy as np
from mpi4py import MPI

from ..timing import Stopwatch
from ..wire import MessageRows, PackedMessages, byte_view, message_lengths
from .accounting import ByteCounter
from .base import Transport, check_master_share, check_n_workers
from .local import LocalTransport
from .worker_tree import covering_nodes

# Environment variables in which a launcher states how many processes it started, checked in
# this order. PMI_SIZE and OMPI_COMM_WORLD_SIZE are set by the launcher for each process it
# starts; SLURM_STEP_NUM_TASKS is only trusted for processes srun started itself (it can be
# inherited by nested steps, hence the hint in the error). MPI_LOCALNRANKS counts one node only.
LAUNCHER_SIZE_VARIABLES = {
    "PMI_SIZE": "MPICH / Intel MPI mpiexec (Hydra) or srun with PMI",
    "OMPI_COMM_WORLD_SIZE": "Open MPI mpirun / mpiexec",
    "SLURM_STEP_NUM_TASKS": "Slurm srun",
}


def launcher_size(environ: Mapping[str, str] | None = None) -> tuple[str, int] | None:
    """``(variable, n)`` for the first launcher variable above that holds an integer, else None."""
    environ = os.environ if environ is None else environ
    for name in LAUNCHER_SIZE_VARIABLES:
        value = environ.get(name, "").strip()
        if value.isdigit() and (name != "SLURM_STEP_NUM_TASKS" or "SLURM_PROCID" in environ):
            return name, int(value)
    return None


WAIT_MODES = ("auto", "sleep", "busy")
SLEEP_SECONDS = 50e-6  # between tests of a pending collective when waiting politely


def node_share(comm: MPI.Comm) -> tuple[int, int]:
    """``(ranks, cores)``: how many ranks of ``comm`` run on this node and how many cores they may
    use (collective): the union of their CPU affinities where the OS reports them (Linux; a rank
    bound to one core counts its core), else ``os.cpu_count()``."""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        affinity = getattr(os, "sched_getaffinity", None)
        mine = sorted(affinity(0)) if affinity is not None else list(range(os.cpu_count() or 1))
        return node.Get_size(), len(set().union(*node.allgather(mine)))
    finally:
        node.Free()


def share_kernel_threads(ranks: int, cores: int) -> int:
    """Set ``numba.set_num_threads`` (how many threads the compressors' kernels split a long vector
    over) to this rank's share of the node, ``cores // ranks`` and at least 1, and return it; a
    ``NUMBA_NUM_THREADS`` set in the environment is the user's choice and is kept. Without this
    every rank would split its kernels over as many threads as the node has cores."""
    if "NUMBA_NUM_THREADS" not in os.environ:
        numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS, cores // ranks)))  # type: ignore[attr-defined]  # numba.config sets its options at import time, untyped
    return numba.get_num_threads()


def joined(views: Sequence[memoryview]) -> np.ndarray:
    """The concatenation of ``views`` as one uint8 array: a view of their common buffer when they lie
    back to back in it (``encode_many``'s batch, a single upload), else a copy (of message rows: their
    blocks, copied when there are several; of packed messages: their parts, likewise)."""
    if isinstance(views, MessageRows):
        blocks = [block.reshape(-1) for block in views.blocks]
        return blocks[0] if len(blocks) == 1 else np.concatenate([np.empty(0, dtype=np.uint8), *blocks])
    if isinstance(views, PackedMessages):
        whole = views.contiguous()
        if whole is not None:
            return whole
        return np.concatenate([np.empty(0, dtype=np.uint8), *(data[o[0] : o[-1]] for data, o in views.parts)])
    nonempty = [view for view in views if len(view)]
    if not nonempty:
        return np.empty(0, dtype=np.uint8)
    parts = [np.frombuffer(view, dtype=np.uint8) for view in nonempty]
    if len(parts) == 1:
        return parts[0]
    owner = nonempty[0].obj
    adjacent = all(
        view.obj is owner and left.ctypes.data + left.size == right.ctypes.data
        for view, left, right in zip(nonempty[1:], parts, parts[1:], strict=False)
    )
    if not adjacent:
        return np.concatenate(parts)
    base = np.frombuffer(memoryview(owner), dtype=np.uint8)
    start = parts[0].ctypes.data - base.ctypes.data
    return base[start : start + sum(part.size for part in parts)]


def with_received(own: Sequence[memoryview], received: np.ndarray, sizes: np.ndarray | int) -> Sequence[memoryview]:
    """The master's ``own`` uploads followed by the others', which lie back to back in ``received`` with
    ``sizes`` bytes each (an int: every one alike): as message rows (``received`` viewed as one
    ``(count, size)`` block) when ``own`` are rows and every size is one, as packed messages when ``own`` are
    (:class:`mpicomp.wire.PackedMessages`), else a list of read-only views."""
    if isinstance(sizes, int):
        size, count = sizes, received.size // max(sizes, 1)
    else:
        size, count = (int(sizes[0]) if sizes.size else 0), sizes.size
    if isinstance(own, MessageRows) and (isinstance(sizes, int) or (sizes == size).all()):
        return MessageRows([*own.blocks, received.reshape(count, size)])
    if isinstance(own, PackedMessages) and not isinstance(sizes, int):
        return PackedMessages([*own.parts, (received, np.concatenate(([0], np.cumsum(sizes))))])
    whole = byte_view(received).toreadonly()
    if isinstance(sizes, int):
        return [*own, *(whole[start : start + size] for start in range(0, count * size, size))]
    offsets = np.concatenate(([0], np.cumsum(sizes))).tolist()
    return [*own, *(whole[start:stop] for start, stop in pairwise(offsets))]


class LauncherMismatch(RuntimeError):
    """The launcher started more processes than MPI sees: the job would run n copies of itself."""


def check_launcher_size(world_size: int, environ: Mapping[str, str] | None = None) -> None:
    """:class:`LauncherMismatch` when MPI's world size differs from the number of processes the launcher started.

    Under srun the usual cause is a PMI plugin that does not match the MPI library (``--mpi=``);
    under mpiexec, mpi4py built against another MPI than the launcher's. Either way each process
    starts as its own size-1 world and would run the whole job alone. The message is one line.
    """
    environ = os.environ if environ is None else environ
    found = launcher_size(environ)
    if found is None or found[1] == world_size:
        return
    name, promised = found
    library = MPI.Get_library_version().splitlines()[0].strip()
    if name == "SLURM_STEP_NUM_TASKS":
        hint = (
            f"srun's PMI plugin does not match {library}: add --mpi=pmi2 (MPICH, Intel MPI) or --mpi=pmix "
            "(Open MPI) to the srun line (`srun --mpi=list` shows the choices)"
        )
    else:
        hint = (
            f"mpi4py uses another MPI ({library}) than this launcher: use the mpiexec next to this Python "
            "or rebuild mpi4py (`pip install --no-binary mpi4py mpi4py` with your MPI's mpicc on PATH)"
        )
    raise LauncherMismatch(
        f"{LAUNCHER_SIZE_VARIABLES[name]} started {promised} processes ({name}={promised}) but MPI sees {world_size}: "
        f"{hint}; to run one process alone, unset {name}"
    )


class MPITransport(Transport):
    """Workers spread over the ranks of ``comm`` in contiguous blocks (:func:`~.base.worker_range`).

    ``wait`` is how a rank waits for a pending collective: ``"auto"``, ``"sleep"`` or ``"busy"``
    (module docstring). ``master_share`` in [0, 1] is how many workers rank 0, which also runs the
    master, hosts against each other rank (:func:`~.base.worker_range`).
    """

    def __init__(
        self, n_workers: int, comm: MPI.Comm = MPI.COMM_WORLD, wait: str = "auto", master_share: float = 1.0
    ) -> None:
        self.n_workers = check_n_workers(n_workers)
        self.master_share = check_master_share(master_share)
        if wait not in WAIT_MODES:
            raise ValueError(f"wait must be one of {', '.join(WAIT_MODES)}, got {wait!r}")
        check_launcher_size(MPI.COMM_WORLD.Get_size())
        self.comm = comm.Dup()
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        ranks, cores = node_share(self.comm)
        self.polite = wait == "sleep" or (wait == "auto" and ranks > cores)
        self._threads_before = numba.get_num_threads()  # put back by close()
        self.kernel_threads = share_kernel_threads(ranks, cores)
        self._node = (
            f"{ranks} rank{'s' if ranks != 1 else ''} on {cores} core{'s' if cores != 1 else ''} of rank 0's node"
        )
        self.clock = Stopwatch()
        self.idle = Stopwatch()
        self.counter = ByteCounter(self.n_workers, complete=self.is_master)
        self._inboxes: dict[str, np.ndarray] = {}
        self._uniform_layouts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        blocks = self._worker_blocks()
        self._block_starts = np.array([block.start for block in blocks], dtype=np.int64)
        self._block_ends = np.array([block.stop for block in blocks], dtype=np.int64)
        if self.n_workers < self.size and self.is_master:
            idle = sum(len(block) == 0 for block in blocks)
            warnings.warn(
                f"{self.n_workers} workers on {self.size} MPI ranks: {idle} of them host no worker and only "
                "take part in the collectives; launch at most n_workers ranks to avoid idle processes",
                RuntimeWarning,
                stacklevel=2,
            )

    def layout_summary(self) -> str:
        return (
            f"{super().layout_summary()}; {self._node}: {self.kernel_threads} kernel thread"
            f"{'s' if self.kernel_threads != 1 else ''} per rank, {'sleeping' if self.polite else 'busy'} waits"
        )

    def _inbox(self, name: str, size: int) -> np.ndarray:
        """The first ``size`` bytes of the receive buffer ``name``, kept (and grown) across rounds."""
        buffer = self._inboxes.get(name)
        if buffer is None or buffer.size < size:
            buffer = self._inboxes[name] = np.empty(size, dtype=np.uint8)
        return buffer[:size]

    def _complete(self, request: MPI.Request) -> None:
        """Wait for a nonblocking collective: sleeping between tests when polite, else MPI's own wait
        (timed by ``idle``)."""
        with self.idle.timing():
            if self.polite:
                while not request.Test():
                    time.sleep(SLEEP_SECONDS)
            else:
                request.Wait()

    def _per_rank(self, per_worker: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Counts and displacements per rank of a per-worker quantity (sums over each block)."""
        prefix = np.concatenate(([0], np.cumsum(per_worker, dtype=np.int64)))
        displs = prefix[self._block_starts]
        return prefix[self._block_ends] - displs, displs

    def close(self) -> None:
        if self.comm != MPI.COMM_NULL:
            self.comm.Free()
            numba.set_num_threads(self._threads_before)

    def _gather_bytes(self, views: Sequence[memoryview], sizes: np.ndarray | int | None) -> Sequence[memoryview] | None:
        if not self.is_master:
            if sizes is None:
                self._complete(self.comm.Igatherv(message_lengths(views), None, root=0))
            self._complete(self.comm.Igatherv(joined(views), None, root=0))
            return None
        if isinstance(sizes, int):  # announced: the layout is the same every round
            counts, displs = self._uniform_layout(sizes, len(views))
            incoming = (self.n_workers - len(views)) * sizes
        else:
            if sizes is None:
                sizes = np.empty(self.n_workers, dtype=np.int64)
                local_sizes = message_lengths(views)
                receive = [sizes, self._block_ends - self._block_starts, self._block_starts, MPI.INT64_T]
                self._complete(self.comm.Igatherv(local_sizes, receive, root=0))
            own = message_lengths(views)
            if not np.array_equal(own, sizes[: len(views)]):
                # only a caller's bug: the switch's sizes are computed alike on every rank
                raise RuntimeError(
                    f"rank 0's streams have {own.tolist()} bytes, the gather expects {sizes[: len(views)].tolist()}"
                )
            counts, displs = self._receive_layout(sizes, int(own.sum()))
            incoming = int(counts.sum())
        # MPI_IN_PLACE: the master's own uploads stay where they are (its views are returned), and
        # the inbox holds only the other ranks' bytes.
        received = self._inbox("gather", incoming)
        self._complete(self.comm.Igatherv(MPI.IN_PLACE, [received, counts, displs, MPI.BYTE], root=0))
        return with_received(views, received, sizes if isinstance(sizes, int) else sizes[len(views) :])

    def _uniform_layout(self, size: int, own: int) -> tuple[np.ndarray, np.ndarray]:
        """Receive counts and displacements of a gather where every upload has ``size`` bytes (the master's
        ``own`` in place: count 0), computed once per size."""
        layout = self._uniform_layouts.get(size)
        if layout is None:
            layout = self._uniform_layouts[size] = self._receive_layout(
                np.full(self.n_workers, size, dtype=np.int64), own * size
            )
        return layout

    def _receive_layout(self, sizes: np.ndarray, own_bytes: int) -> tuple[np.ndarray, np.ndarray]:
        """The master's receive counts and displacements for uploads of ``sizes`` bytes (one per worker): the
        other ranks' bytes back to back in the inbox, its own ``own_bytes`` in place (count 0)."""
        counts, displs = self._per_rank(sizes)
        displs -= own_bytes
        counts[0] = displs[0] = 0
        return counts, displs

    def _broadcast_bytes(self, view: memoryview | None, size: int | None) -> memoryview:
        if size is None:
            length = np.array([0 if view is None else len(view)], dtype=np.int64)
            self._complete(self.comm.Ibcast(length, root=0))
            size = int(length[0])
        if self.is_master:
            assert view is not None, "the master broadcasts its message"
            self._complete(self.comm.Ibcast(np.frombuffer(view, dtype=np.uint8), root=0))
            return view
        received = self._inbox("broadcast", size)
        self._complete(self.comm.Ibcast(received, root=0))
        return byte_view(received).toreadonly()

    def all_equal(self, digest: bytes) -> bool:
        mine = np.frombuffer(hashlib.sha256(bytes(digest)).digest(), dtype=np.uint8)
        everyone = np.empty((self.size, mine.size), dtype=np.uint8)
        self._complete(self.comm.Iallgather(mine, everyone))
        return bool((everyone == everyone[0]).all())

    def agree(self, code: int | None) -> int:
        value = np.zeros(1, dtype=np.int64)
        if self.is_master:
            value[0] = self._master_code(code)
        self._complete(self.comm.Ibcast(value, root=0))
        return int(value[0])

    def gather_rank_values(self, values: np.ndarray) -> np.ndarray | None:
        row = np.ascontiguousarray(values, dtype=np.float64).reshape(1, -1)
        return self._gather_rows(row, np.ones(self.size, dtype=np.int64), everyone=False)

    def gather_blobs(self, blobs, workers: range) -> list[memoryview] | None:
        _, views = self._chunk_workers(blobs, workers)
        sizes = np.array([len(view) for view in views], dtype=np.int64)
        data = (
            np.concatenate([np.frombuffer(view, dtype=np.uint8) for view in views]) if views else np.empty(0, np.uint8)
        )
        if not self.is_master:
            self._complete(self.comm.Igatherv(sizes, None, root=0))
            self._complete(self.comm.Igatherv(data, None, root=0))
            return None
        starts = np.clip(self._block_starts, workers.start, workers.stop)
        counts = np.clip(self._block_ends, workers.start, workers.stop) - starts
        everyone = np.empty(len(workers), dtype=np.int64)
        self._complete(self.comm.Igatherv(sizes, [everyone, counts, starts - workers.start, MPI.INT64_T], root=0))
        prefix = np.concatenate(([0], np.cumsum(everyone)))
        received = np.empty(int(prefix[-1]), dtype=np.uint8)
        first = starts - workers.start
        byte_displs = prefix[first]
        byte_counts = prefix[first + counts] - byte_displs
        self._complete(self.comm.Igatherv(data, [received, byte_counts, byte_displs, MPI.BYTE], root=0))
        whole = byte_view(received).toreadonly()
        return [whole[start:stop] for start, stop in pairwise(prefix.tolist())]

    def _gather_node_sums(self, sums: np.ndarray, everyone: bool) -> np.ndarray | None:
        nodes = [len(covering_nodes(b.start, b.stop, self.n_workers)) for b in self._worker_blocks()]
        return self._gather_rows(sums, np.array(nodes), everyone)

    def gather_partials(self, per_local_worker: np.ndarray, *, everyone: bool = False) -> np.ndarray | None:
        return self._gather_rows(self._partials(per_local_worker), self._block_ends - self._block_starts, everyone)

    def _gather_rows(self, rows: np.ndarray, rows_per_rank: np.ndarray, everyone: bool) -> np.ndarray | None:
        """Uncounted: every rank's float64 ``rows`` stacked in rank order (``rows_per_rank[r]`` rows from rank r),
        on every rank or (``everyone=False``) on the master only (None elsewhere)."""
        if not (everyone or self.is_master):
            self._complete(self.comm.Igatherv(rows, None, root=0))
            return None
        width = rows.shape[1]
        gathered = np.empty((int(rows_per_rank.sum()), width), dtype=np.float64)
        displacements = np.concatenate(([0], np.cumsum(rows_per_rank)[:-1])) * width
        receive = [gathered, rows_per_rank * width, displacements, MPI.DOUBLE]
        if everyone:
            self._complete(self.comm.Iallgatherv(rows, receive))
        else:
            self._complete(self.comm.Igatherv(rows, receive, root=0))
        return gathered


def make_transport(n_workers: int, wait: str = "auto", master_share: float = 1.0) -> LocalTransport | MPITransport:
    """:class:`MPITransport` on ``COMM_WORLD`` when it has several ranks (waiting as ``wait`` says, rank 0
    hosting ``master_share`` of a rank's workers), else :class:`LocalTransport`.

    Both count bytes identically, so a size-1 run gives the same results either way; the
    launcher check of :func:`check_launcher_size` runs in both cases.
    """
    check_master_share(master_share)
    size = MPI.COMM_WORLD.Get_size()
    if size > 1:
        return MPITransport(n_workers, wait=wait, master_share=master_share)
    check_launcher_size(size)
    return LocalTransport(n_workers)
