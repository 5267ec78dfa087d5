"""Time one mpicomp round against raw mpi4py collectives moving the same bytes.

Run as ``mpiexec -n 4 python -m mpi4py tools/bench_round.py`` (one logical worker per rank).
Every repeat runs each variant once, in an order rotated from repeat to repeat so all see the
same machine load and cache state; each is timed from a barrier to the moment the slowest rank
is done (max over ranks of MPI.Wtime differences):

* ``mpicomp round``: the round of ``gd``/``sgd`` with its gradients given: every worker encodes
  its d-vector (held in its message's payload slot where the codec stores it verbatim, float64
  identity, as ``QuantizedSGD.worker_upload`` computes the gradient there), ``MPITransport.gather`` (the message size given: fixed-size codecs' sizes are not sent), the master decodes the mean of the uploads in one fused
  pass (``decode_sum``, as ``Method.mean_of_uploads`` does) and encodes it, ``broadcast``, every
  rank steps its model ``x -= gamma C(mean)`` straight from the message (``decode_add`` with
  ``scale = -gamma``, as ``QuantizedSGD.apply_downlink`` does); messages without the CRC-32, as a
  run sends them by default; messages and the mean are written into buffers kept from round to
  round (``Method.outbox``, ``QuantizedSGD.mean``), the mean straight into the downlink message
  where the codec stores it verbatim (``payload_vector``);
* ``mpicomp +crc``: the same with the CRC-32 trailer on every message (``[compressor] checksum``);
* ``sizes sent``: the same with the sizes sent first (a ``Gatherv`` and a ``Bcast`` more), as the
  round ran before the sizes of fixed-size codecs were announced (the before of issue 26);
* ``transport only``: ``gather`` + ``broadcast`` of the same, already encoded, messages;
* ``ideal``: the same round as a bare mpi4py + NumPy program, no framework: ``Gatherv`` of every
  rank's vector (identity: its float64 values; natural: the payload of the same numba encode
  kernel, called directly) into one preallocated array (the root's own row in place), the mean (identity: ``np.sum`` over the
  rows; natural: the same decode kernel adding each payload), the master's encode of the mean,
  ``Bcast`` and every rank's step ``x -= C(mean)`` (identity: ``np.subtract``; natural: the decode
  kernel with ``scale = -1``), waiting in the collectives as the transport does; the baseline the target is checked against: mpicomp's round must cost
  at most :data:`TARGET` times it. Each repeat gives one ratio, mpicomp's time over the ideal
  program's in the same repeat (both saw the same machine load); the verdict, PASS or MISS, is on
  their median, printed with a bootstrap 95% interval of it (the repeats' noise: on a shared machine
  whole runs differ by more) and a word when the interval holds the target;
* ``raw mpi4py``: ``Gather`` of one int64 size per rank, ``Gatherv`` of the upload bytes (the
  root's own block ``MPI_IN_PLACE``), ``Bcast`` of the downlink size and bytes, into preallocated
  buffers (a lower bound).

Prints best and median milliseconds over the repeats and the ratios to the raw baseline, then each
variant's CPU time a round on rank 0 (which also runs the master) and on the other ranks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
from mpi4py import MPI

from mpicomp.comm import SIZE_PREFIX_BYTES, MPITransport
from mpicomp.comm.mpi import SLEEP_SECONDS, WAIT_MODES
from mpicomp.compressors import Compressor, make
from mpicomp.compressors.natural import decode_natural, encode_double
from mpicomp.rng import STREAM_DOWNLINK, STREAM_UPLINK, RandomKey
from mpicomp.wire.bitpack import group_count, parallel_tasks, run_split

MASTER = -1
TARGET = 1.1  # mpicomp's round / the ideal program's, at most (the median of the same-repeat ratios)
IDEAL_CODECS = ("identity", "natural")


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

    def __init__(
        self, transport: MPITransport, compressor: Compressor, d: int, seed: int, checksum: bool, announce: bool = True
    ) -> None:
        self.transport, self.d, self.seed, self.announce = transport, d, seed, announce
        self.compressor = make(compressor.spec)
        self.compressor.crc = checksum
        self.x, self.mean = np.zeros(d), np.empty(d)
        capacity = self.compressor.message_capacity(d)
        self.outboxes = {
            w: None if capacity is None else np.empty(capacity, dtype=np.uint8)
            for w in [*transport.local_workers, MASTER]
        }
        self.vectors = {}
        for w in transport.local_workers:  # in the payload slot where the codec has one, as a method computes it
            vector, slot = worker_vector(seed, w, d), self.compressor.payload_vector(self.outboxes[w], d)
            if slot is not None:
                slot[:] = vector
            self.vectors[w] = vector if slot is None else slot

    def __call__(self, rnd: int) -> None:
        t, c = self.transport, self.compressor
        uploads = [
            c.encode(self.vectors[w], RandomKey(self.seed, rnd, w, STREAM_UPLINK), out=self.outboxes[w])
            for w in t.local_workers
        ]
        size = c.message_capacity(self.d) if self.announce else None  # fixed-size codecs: sizes known, not sent
        gathered = t.gather(uploads, size=size)
        down_key = RandomKey(self.seed, rnd, MASTER, STREAM_DOWNLINK)
        message = None
        if gathered is not None:  # the master
            keys = [RandomKey(self.seed, rnd, w, STREAM_UPLINK) for w in range(t.n_workers)]
            slot = c.payload_vector(self.outboxes[MASTER], self.d)
            mean = c.decode_sum(gathered, keys, self.mean if slot is None else slot, t.n_workers)
            message = c.encode(mean, down_key, out=self.outboxes[MASTER])
        c.decode_add(t.broadcast(message, size=size), self.x, down_key, scale=-1.0)


class TransportOnly:
    """``gather`` + ``broadcast`` of pre-encoded messages: the transport's share of a round."""

    def __init__(self, transport: MPITransport, uploads: list[memoryview], downlink: memoryview) -> None:
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


class IdealRound:
    """The round as a bare mpi4py + NumPy program (module docstring): what the framework adds is
    everything mpicomp's round costs beyond this."""

    def __init__(self, comm: MPI.Comm, codec: str, vector: np.ndarray, seed: int, polite: bool) -> None:
        self.comm, self.codec, self.vector, self.seed, self.polite = comm, codec, vector, seed, polite
        d = vector.size
        self.d, self.groups, self.tasks = d, group_count(d), parallel_tasks(d)
        self.x, self.mean = np.zeros(d), np.empty(d)
        width = d + (d + 7) // 8 if codec == "natural" else d  # bytes (natural) or float64 values
        dtype = np.uint8 if codec == "natural" else np.float64
        self.send = np.empty(width, dtype=dtype)
        self.rows = np.empty((comm.size if comm.rank == 0 else 0, width), dtype=dtype)  # the root's only
        self.down = np.empty(width, dtype=dtype)
        # Gatherv, as the transport uses: MPICH's Igather of large blocks is many times slower
        self.counts = np.full(comm.size, width, dtype=np.int64)
        self.displs = np.arange(comm.size, dtype=np.int64) * width
        self.mpi_type = MPI.BYTE if codec == "natural" else MPI.DOUBLE

    def _wait(self, request: MPI.Request) -> None:
        """Waits as the transport does (sleeping between tests when ranks outnumber cores): blocking
        collectives spin and, on an oversubscribed node, starve the very ranks they wait for."""
        if self.polite:
            while not request.Test():
                time.sleep(SLEEP_SECONDS)
        else:
            request.Wait()

    def _encode(self, v: np.ndarray, state: np.uint64, payload: np.ndarray) -> None:
        d = self.d
        run_split(encode_double, self.groups, self.tasks, v, state, payload[:d], payload[d:])

    def _decode_add(self, payload: np.ndarray, out: np.ndarray, scale: float) -> None:
        d = self.d
        run_split(decode_natural, self.groups, self.tasks, payload[:d], payload[d:], out, True, scale, 1.0)

    def __call__(self, rnd: int) -> None:
        comm, master = self.comm, self.comm.rank == 0
        natural = self.codec == "natural"
        if natural:
            self._encode(self.vector, RandomKey(self.seed, rnd, comm.rank, STREAM_UPLINK).state, self.send)
            own = self.send
        else:
            own = self.vector
        if master:
            self.rows[0] = own
            self._wait(comm.Igatherv(MPI.IN_PLACE, [self.rows, self.counts, self.displs, self.mpi_type], root=0))
            if natural:
                self.mean.fill(0.0)
                for row in self.rows:
                    self._decode_add(row, self.mean, 1.0)
                self.mean /= comm.size
                self._encode(self.mean, RandomKey(self.seed, rnd, MASTER, STREAM_DOWNLINK).state, self.down)
            else:
                np.sum(self.rows, axis=0, out=self.down)
                np.divide(self.down, comm.size, out=self.down)
        else:
            self._wait(comm.Igatherv(own, None, root=0))
        self._wait(comm.Ibcast(self.down, root=0))
        if natural:
            self._decode_add(self.down, self.x, -1.0)
        else:
            np.subtract(self.x, self.down, out=self.x)


def timed(comm: MPI.Comm, run: Callable[[int], None], rnd: int) -> tuple[float, float]:
    """Seconds from a barrier until the slowest rank has finished ``run(rnd)``, and this rank's CPU
    seconds in it (all its threads; the time it slept waiting is not CPU)."""
    comm.Barrier()
    start, cpu = MPI.Wtime(), time.process_time()
    run(rnd)
    cpu = time.process_time() - cpu
    return comm.allreduce(MPI.Wtime() - start, op=MPI.MAX), cpu


def median_interval(ratios: np.ndarray, resamples: int = 10_000, level: float = 0.95) -> tuple[float, float]:
    """A percentile-bootstrap interval of the median of ``ratios`` (each repeat's mpicomp time over the
    ideal program's in the same repeat, so both saw the same machine load): the range of medians that
    ``resamples`` resamplings of the repeats give, ``level`` of them inside (fixed seed)."""
    draws = np.random.default_rng(0).integers(0, ratios.size, size=(resamples, ratios.size))
    medians = np.median(ratios[draws], axis=1)
    low, high = np.quantile(medians, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def print_cpu(cpu_by_rank: list[dict[str, float]]) -> None:
    """Each variant's CPU milliseconds a round (means over the repeats): on rank 0, which also runs the
    master, and the mean of the other ranks; where a variant's extra wall time goes."""
    print(f"{'CPU per round':<16}{'rank 0 ms':>10}{'others ms':>10}")
    for name, rank0 in cpu_by_rank[0].items():
        others = [cpu[name] for cpu in cpu_by_rank[1:]]
        print(f"{name:<16}{1e3 * rank0:>10.3f}{1e3 * statistics.fmean(others) if others else 0.0:>10.3f}")


def main() -> None:
    args = parse_args()
    comm = MPI.COMM_WORLD
    transport = MPITransport(comm.size, wait=args.wait)
    compressor = make(args.compressor)
    mpicomp_round = MpicompRound(transport, compressor, args.d, args.seed, checksum=False)

    mpicomp_round(0)
    expected = np.sum([worker_vector(args.seed, w, args.d) for w in range(comm.size)], axis=0) / comm.size
    error = float(np.linalg.norm(mpicomp_round.x + expected) / np.linalg.norm(expected))
    counted = transport.counter.end_round()
    codec = mpicomp_round.compressor
    uploads = [
        codec.encode(mpicomp_round.vectors[w], RandomKey(args.seed, 0, w, STREAM_UPLINK))
        for w in transport.local_workers
    ]
    downlink = codec.encode(expected, RandomKey(args.seed, 0, MASTER, STREAM_DOWNLINK))
    upload_bytes = comm.allreduce(max((len(u) for u in uploads), default=0), op=MPI.MAX)
    variants: dict[str, Callable[[int], None]] = {
        "mpicomp round": mpicomp_round,
        "mpicomp +crc": MpicompRound(transport, compressor, args.d, args.seed, checksum=True),
        "sizes sent": MpicompRound(transport, compressor, args.d, args.seed, checksum=False, announce=False),
        "transport only": TransportOnly(transport, uploads, downlink),
        "raw mpi4py": RawRound(comm, upload_bytes, len(downlink)),
    }
    ideal_codec = compressor.spec if compressor.spec in IDEAL_CODECS else None
    if ideal_codec is not None:
        variants["ideal"] = ideal = IdealRound(
            comm, ideal_codec, mpicomp_round.vectors[comm.rank], args.seed, transport.polite
        )
        ideal(0)
        ideal_matches = bool(np.array_equal(ideal.x, mpicomp_round.x))
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu = dict.fromkeys(variants, 0.0)
    names = list(variants)
    for rnd in range(args.warmup + args.repeats):
        for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
            seconds, cpu_seconds = timed(comm, variants[name], rnd)
            if rnd >= args.warmup:
                times[name].append(seconds)
                cpu[name] += cpu_seconds / args.repeats
    cpu_by_rank = comm.gather(cpu, root=0)
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
    if ideal_codec is not None:
        print(f"the ideal program's round 0 step equals mpicomp's bit for bit: {ideal_matches}")
    raw_best, raw_median = min(times["raw mpi4py"]), statistics.median(times["raw mpi4py"])
    print(f"{'variant':<16}{'best ms':>10}{'median ms':>10}{'best/raw':>10}{'median/raw':>12}")
    for name, values in times.items():
        best, median = min(values), statistics.median(values)
        print(f"{name:<16}{1e3 * best:>10.4f}{1e3 * median:>10.4f}{best / raw_best:>10.2f}{median / raw_median:>12.2f}")
    print_cpu(cpu_by_rank)
    if ideal_codec is None:
        print(f"no ideal baseline for {compressor.spec} (only for {', '.join(IDEAL_CODECS)}): no target checked")
        return
    ratios = np.array(times["mpicomp round"]) / np.array(times["ideal"])
    ratio, (low, high) = float(np.median(ratios)), median_interval(ratios)
    verdict = "PASS" if ratio <= TARGET else "MISS"
    undecided = "" if low > TARGET or high <= TARGET else ", which holds the target: this run does not decide"
    print(
        f"{verdict} round {compressor.spec} d={args.d} ranks={comm.size}: mpicomp/ideal {ratio:.3f} "
        f"(target <= {TARGET}; median of the {ratios.size} same-repeat ratios, bootstrap 95% interval "
        f"{low:.3f}-{high:.3f}{undecided})"
    )


if __name__ == "__main__":
    main()
