"""Time one mpicomp round against raw mpi4py collectives moving the same bytes.

Run as ``mpiexec -n 4 python -m mpi4py tools/bench_round.py`` (one logical worker per rank).
Every repeat runs each variant once, in an order rotated from repeat to repeat so all see the
same machine load and cache state; each is timed from a barrier to the moment the slowest rank
is done (max over ranks of MPI.Wtime differences):

* ``mpicomp round``: the round of ``gd``/``sgd`` with its gradients given: every worker encodes
  its d-vector, ``MPITransport.gather``, the master decodes the mean of the uploads in one fused
  pass (``decode_sum``, as ``Method.mean_of_uploads`` does) and encodes it, ``broadcast``, every
  rank steps its model ``x -= gamma C(mean)`` straight from the message (``decode_add`` with
  ``scale = -gamma``, as ``QuantizedSGD.apply_downlink`` does); messages without the CRC-32, as a
  run sends them by default; messages and the mean are written into buffers kept from round to
  round (``Method.outbox``, ``QuantizedSGD.mean``), the mean straight into the downlink message
  where the codec stores it verbatim (``payload_vector``);
* ``mpicomp +crc``: the same with the CRC-32 trailer on every message (``[compressor] checksum``);
* ``transport only``: ``gather`` + ``broadcast`` of the same, already encoded, messages;
* ``raw mpi4py``: ``Gather`` of one int64 size per rank, ``Gatherv`` of the upload bytes (the
  root's own block ``MPI_IN_PLACE``), ``Bcast`` of the downlink size and bytes, into preallocated
  buffers (a lower bound).

Prints best and median seconds over the repeats and the ratios to the raw baseline.
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable

import numpy as np
from mpi4py import MPI

from mpicomp.comm import SIZE_PREFIX_BYTES, MPITransport
from mpicomp.comm.mpi import WAIT_MODES
from mpicomp.compressors import Compressor, make
from mpicomp.rng import STREAM_DOWNLINK, STREAM_UPLINK, RandomKey

MASTER = -1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d", type=float, default=1e6, help="vector dimension (default 1e6 float64)")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats of each variant (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed repeats first (default 2)")
    parser.add_argument("--compressor", default="identity", help="compressor spec for both links (default identity)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the worker vectors and keys")
    parser.add_argument(
        "--wait",
        choices=WAIT_MODES,
        default="auto",
        help="how ranks wait in collectives (default auto: see comm/mpi.py)",
    )
    args = parser.parse_args()
    if args.d < 1 or args.d != int(args.d):
        parser.error(f"--d must be a positive integer, got {args.d}")
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    args.d = int(args.d)
    return args


def worker_vector(seed: int, worker: int, d: int) -> np.ndarray:
    return np.random.default_rng([seed, worker]).standard_normal(d)


class MpicompRound:
    """One round of compressed gradient descent through :class:`MPITransport` (step size 1 from
    ``x = 0``), as ``QuantizedSGD.round`` runs it."""

    def __init__(self, transport: MPITransport, compressor: Compressor, d: int, seed: int, checksum: bool) -> None:
        self.transport, self.d, self.seed = transport, d, seed
        self.compressor = make(compressor.spec)
        self.compressor.crc = checksum
        self.vectors = {w: worker_vector(seed, w, d) for w in transport.local_workers}
        self.x, self.mean = np.zeros(d), np.empty(d)
        capacity = self.compressor.message_capacity(d)
        self.outboxes = {
            w: None if capacity is None else np.empty(capacity, dtype=np.uint8)
            for w in [*transport.local_workers, MASTER]
        }

    def __call__(self, rnd: int) -> None:
        t, c = self.transport, self.compressor
        uploads = [
            c.encode(self.vectors[w], RandomKey(self.seed, rnd, w, STREAM_UPLINK), out=self.outboxes[w])
            for w in t.local_workers
        ]
        gathered = t.gather(uploads)
        down_key = RandomKey(self.seed, rnd, MASTER, STREAM_DOWNLINK)
        message = None
        if t.is_master:
            keys = [RandomKey(self.seed, rnd, w, STREAM_UPLINK) for w in range(t.n_workers)]
            slot = c.payload_vector(self.outboxes[MASTER], self.d)
            mean = c.decode_sum(gathered, keys, self.mean if slot is None else slot, t.n_workers)
            message = c.encode(mean, down_key, out=self.outboxes[MASTER])
        c.decode_add(t.broadcast(message), self.x, down_key, scale=-1.0)


class TransportOnly:
    """``gather`` + ``broadcast`` of pre-encoded messages: the transport's share of a round."""

    def __init__(self, transport: MPITransport, uploads: list[bytes], downlink: bytes) -> None:
        self.transport, self.uploads, self.downlink = transport, uploads, downlink

    def __call__(self, rnd: int) -> None:
        self.transport.gather(self.uploads)
        self.transport.broadcast(self.downlink if self.transport.is_master else None)


class RawRound:
    """The same byte counts with bare mpi4py buffer collectives into preallocated buffers."""

    def __init__(self, comm: MPI.Comm, upload_bytes: int, downlink_bytes: int) -> None:
        self.comm = comm
        self.size = np.array([upload_bytes], dtype=np.int64)
        self.send = np.random.default_rng(comm.rank).integers(0, 256, upload_bytes, dtype=np.uint8)
        self.sizes = np.empty(comm.size, dtype=np.int64)
        self.received = np.empty(upload_bytes * comm.size, dtype=np.uint8)
        self.down_size = np.array([downlink_bytes], dtype=np.int64)
        self.down = np.zeros(downlink_bytes, dtype=np.uint8)

    def __call__(self, rnd: int) -> None:
        comm, master = self.comm, self.comm.rank == 0
        comm.Gather(self.size, self.sizes if master else None, root=0)
        if master:  # the root's own block is already in place, as in MPITransport
            displs = np.cumsum(self.sizes) - self.sizes
            comm.Gatherv(MPI.IN_PLACE, [self.received, self.sizes, displs, MPI.BYTE], root=0)
        else:
            comm.Gatherv(self.send, None, root=0)
        comm.Bcast(self.down_size, root=0)
        comm.Bcast(self.down[: int(self.down_size[0])], root=0)


def timed(comm: MPI.Comm, run: Callable[[int], None], rnd: int) -> float:
    """Seconds from a barrier until the slowest rank has finished ``run(rnd)``."""
    comm.Barrier()
    start = MPI.Wtime()
    run(rnd)
    return comm.allreduce(MPI.Wtime() - start, op=MPI.MAX)


def main() -> None:
    args = parse_args()
    comm = MPI.COMM_WORLD
    transport = MPITransport(comm.size, wait=args.wait)
    compressor = make(args.compressor)
    mpicomp_round = MpicompRound(transport, compressor, args.d, args.seed, checksum=False)

    mpicomp_round(0)
    expected = sum(worker_vector(args.seed, w, args.d) for w in range(comm.size)) / comm.size
    error = float(np.linalg.norm(mpicomp_round.x + expected) / np.linalg.norm(expected))
    counted = transport.counter.end_round()
    codec = mpicomp_round.compressor
    uploads = [
        codec.encode(mpicomp_round.vectors[w], RandomKey(args.seed, 0, w, STREAM_UPLINK))
        for w in transport.local_workers
    ]
    downlink = codec.encode(expected, RandomKey(args.seed, 0, MASTER, STREAM_DOWNLINK))
    upload_bytes = comm.allreduce(max((len(u) for u in uploads), default=0), op=MPI.MAX)
    variants = {
        "mpicomp round": mpicomp_round,
        "mpicomp +crc": MpicompRound(transport, compressor, args.d, args.seed, checksum=True),
        "transport only": TransportOnly(transport, uploads, downlink),
        "raw mpi4py": RawRound(comm, upload_bytes, len(downlink)),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for rnd in range(args.warmup + args.repeats):
        for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
            seconds = timed(comm, variants[name], rnd)
            if rnd >= args.warmup:
                times[name].append(seconds)
    if comm.rank != 0:
        return

    raw_up = comm.size * (upload_bytes + SIZE_PREFIX_BYTES)
    raw_down = len(downlink) + SIZE_PREFIX_BYTES
    print(transport.layout_summary())
    print(
        f"d = {args.d}, compressor {compressor.spec}, {args.repeats} repeats after {args.warmup} warm-up; "
        f"wait {args.wait} (polite: {transport.polite}); load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"counted bytes, round 0: up {counted.up_total} (raw moves {raw_up}), down {counted.down_bytes} "
        f"(raw moves {raw_down}); uploads of {upload_bytes} B each"
    )
    print(f"round 0 step vs exact mean: relative error {error:.3e} (0 for identity)")
    raw_best, raw_median = min(times["raw mpi4py"]), statistics.median(times["raw mpi4py"])
    print(f"{'variant':<16}{'best s':>10}{'median s':>10}{'best/raw':>10}{'median/raw':>12}")
    for name, values in times.items():
        best, median = min(values), statistics.median(values)
        print(f"{name:<16}{best:>10.4f}{median:>10.4f}{best / raw_best:>10.2f}{median / raw_median:>12.2f}")


if __name__ == "__main__":
    main()
