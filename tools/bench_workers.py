"""Rounds per second with many logical workers through the real runner, against the bare arithmetic.

Run as ``mpiexec -n 2 python -m mpi4py tools/bench_workers.py`` (defaults: MNIST softmax, d = 7,850, 100,
1,000 and 10,000 workers, minibatch 16 per worker, natural compression up, identity down; add
``--problem small`` for a 16-feature logistic regression on generated data, where 100,000
workers fit). Every rank runs ``mpicomp.runner.run`` exactly as ``mpicomp run`` would; the rate is
rounds / wall_time from the results file (time in rounds only; metrics are evaluated at the end).

The bound it is checked against, measured in the same run on the same ranks: the **bare
per-worker gradient arithmetic**, a plain loop over each rank's workers computing what the round's
gradients compute (the same minibatch indices from the same random keys, drawn in one call, the
same shards, the same NumPy margin / loss-derivative / pull-back operations as
``mpicomp.problems.glm.weighted_grad``, and the l2 term computed once per round, as neither
depends on the worker's data), with no method, codec, transport, accounting or results file
around it; one round of it takes the slowest rank's time (median over ``--bare-rounds`` rounds timed
before the run and as many after it, so that a load that changes meanwhile weighs on both sides).
A plain loop, because that is what the workers compute: one minibatch gradient per worker.
Target: at 10,000 workers (MNIST) and 100,000 workers (small), rounds/s >= 0.8 x the bare bound,
printed as ``PASS``/``MISS`` lines, for ``sgd`` (the default ``--method``; another method, e.g. ``--method ef14
--uplink "topk(k=0.01)"``, prints its rate beside the same bound, without a verdict).

mpicomp itself computes a block of workers' gradients stacked (``GLMProblem.minibatch_grads``: one
``np.matmul`` over all their minibatches of one size, the same bits), faster than that loop; so two more
figures show what the framework adds: the **stacked gradients** alone (``minibatch_grads`` called directly,
block by block, as a round calls it) and, natural uplink only, the **codec floor**: the stacked gradients plus
each worker's natural encode and the master's decode-and-add of every worker's payload, the numba kernels
called directly, which no round with that codec can beat.

MNIST needs the idx files (``--mnist``, default ../shared/datasets/mnist next to the project).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

from mpicomp.comm import Transport, make_transport
from mpicomp.compressors.natural import decode_rows_add, encode_rows
from mpicomp.config import Config, validate
from mpicomp.methods.base import block_rows
from mpicomp.problems.glm import GLMProblem, weighted_grad
from mpicomp.results import read_results
from mpicomp.rng import STREAM_SAMPLING, STREAM_UPLINK, RoundKeys, root_seed
from mpicomp.runner import build_problem_from, run

DEFAULT_MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"
TARGETS = {"mnist": 10_000, "small": 100_000}  # worker count whose rate is checked, per problem
TARGET_RATIO = 0.8  # mpicomp's rounds/s over the bare arithmetic's, at least
ROWS = 64  # gradients per encode kernel call in the floor, as the method batches them
SMALL_SAMPLES, SMALL_FEATURES = 250_000, 15  # generated logistic data (d = 16 with the intercept)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problem", choices=tuple(TARGETS), default="mnist", help="mnist (default) or small")
    parser.add_argument(
        "--mnist", type=Path, default=DEFAULT_MNIST, help="directory with the four MNIST idx(.gz) files"
    )
    parser.add_argument(
        "--workers", type=int, nargs="+", help="logical workers (default 100 1000 10000; small: 100000)"
    )
    parser.add_argument("--rounds", type=int, default=50, help="timed rounds (default 50)")
    parser.add_argument(
        "--bare-rounds",
        type=int,
        default=5,
        help="rounds of the bare loop timed before the run and again after it (default 5)",
    )
    parser.add_argument("--batch", type=int, default=16, help="minibatch per worker and round (default 16)")
    parser.add_argument("--uplink", default="natural", help="uplink compressor spec (default natural)")
    parser.add_argument(
        "--method",
        default="sgd",
        help="method (default sgd, which the target is stated for; another method's rate is printed beside the "
        "same bare bound, without a verdict)",
    )
    parser.add_argument("--out", type=Path, help="keep the (last) results file here (default: a temporary file)")
    args = parser.parse_args()
    if args.workers is None:
        args.workers = [100, 1000, 10000] if args.problem == "mnist" else [1000, 10000, 100000]
    return args


def small_dataset(directory: Path) -> Path:
    """Rank 0 writes the generated logistic data (labels of a random linear model, 10% flipped)."""
    path = directory / "bench_workers_small.npz"
    if MPI.COMM_WORLD.rank == 0:
        rng = np.random.default_rng(7)
        features = rng.standard_normal((SMALL_SAMPLES, SMALL_FEATURES))
        labels = np.where(features @ rng.standard_normal(SMALL_FEATURES) >= 0, 1.0, -1.0)
        labels[rng.random(SMALL_SAMPLES) < 0.1] *= -1
        np.savez(path, X=features, y=labels)
    MPI.COMM_WORLD.Barrier()
    return path


def config(args: argparse.Namespace, workers: int, dataset: str) -> Config:
    name = "softmax" if args.problem == "mnist" else "logistic"
    return validate(
        {
            "problem": {"name": name, "dataset": dataset, "l2": 1e-4},
            "data": {"workers": workers, "batch": args.batch, "scale": "unit-norm"},
            "method": {"name": args.method, **({"stepsize": 0.5} if args.method == "sgd" else {})},  # others: their own
            "compressor": {"uplink": args.uplink},
            "run": {
                "rounds": args.rounds,
                "log_every": args.rounds,
                "optimum": False,
                "check_every": args.rounds,
                "seed": 1,
            },
        }
    )


def slowest(seconds: float) -> float:
    return MPI.COMM_WORLD.allreduce(seconds, op=MPI.MAX)


class Bare:
    """The round's gradients as a plain loop over this rank's workers (module docstring), the same
    gradients stacked as mpicomp computes them, and the codec floor: the stacked gradients plus the natural
    kernels of every worker's encode and the master's decode."""

    def __init__(self, cfg: Config, transport: Transport) -> None:
        self.seed, self.batch = root_seed(cfg.run["seed"]), cfg.data["batch"]
        self.problem = build_problem_from(cfg, self.seed, transport)
        assert isinstance(self.problem, GLMProblem), "the bench's problems are GLMs"
        self.x = self.problem.x0()  # the point the gradients are taken at (the run's last iterate once known)
        self.smooth = self.problem.smooth
        self.shards = [self.problem.local(w) for w in self.problem.local_workers]
        self.grads = np.empty((len(self.shards), self.x.size))

    def samples(self, k: int) -> list[np.ndarray | None]:
        """Every local worker's minibatch of round k (None: the whole shard), drawn in one call."""
        counts = np.array([shard.m for shard in self.shards], dtype=np.int64)
        drawn = RoundKeys(self.seed, k, self.problem.local_workers, STREAM_SAMPLING).sample_each(
            counts, max(self.batch, 0)
        )
        return [idx if 0 < self.batch < shard.m else None for shard, idx in zip(self.shards, drawn, strict=True)]

    def gradients(self, k: int) -> np.ndarray:
        """Row j: local worker j's minibatch gradient, into one array kept across rounds; the minibatches
        drawn in one call and ``grad r(x)`` computed once (neither depends on the worker's data)."""
        samples = self.samples(k)
        smooth = self.smooth.grad(self.x)
        for shard, idx, row in zip(self.shards, samples, self.grads, strict=True):
            if idx is not None:
                rows, targets, weight = shard.features[idx], shard.targets[idx], 1.0 / self.batch
            else:
                rows, targets, weight = shard.features, shard.targets, 1.0 / shard.m
            np.add(weighted_grad(shard.loss_fn, rows, targets, weight, self.x), smooth, out=row)
        return self.grads

    def stacked_gradients(self, k: int) -> np.ndarray:
        """The same rows by ``GLMProblem.minibatch_grads``, :func:`~mpicomp.methods.base.block_rows` workers a call."""
        samples, workers, size = self.samples(k), self.problem.local_workers, block_rows(self.x.size)
        for lo in range(0, len(workers), size):
            self.problem.minibatch_grads(
                self.x, workers[lo : lo + size], samples[lo : lo + size], self.grads[lo : lo + size]
            )
        return self.grads

    def round_seconds(self, k: int, stacked: bool = False) -> float:
        MPI.COMM_WORLD.Barrier()
        start = time.perf_counter()
        if stacked:
            self.stacked_gradients(k)
        else:
            self.gradients(k)
        return slowest(time.perf_counter() - start)

    def floor_seconds(self, k: int) -> float:
        """Stacked gradients, then natural's numba kernels called directly: every worker's encode (rank by
        rank) and rank 0's decode-and-add of every worker's payload (its own payloads, cycled, stand
        in for the others': the same sizes, the same kernel); no framing, transport or Python per message."""
        comm = MPI.COMM_WORLD
        comm.Barrier()
        start = time.perf_counter()
        grads = self.stacked_gradients(k)
        if len(grads):
            d = self.x.size
            states = RoundKeys(self.seed, k, self.problem.local_workers, STREAM_UPLINK).states
            payloads = np.empty((len(grads), d + (d + 7) // 8), dtype=np.uint8)
            for lo in range(0, len(grads), ROWS):
                encode_rows(grads[lo : lo + ROWS], states[lo : lo + ROWS], payloads[lo : lo + ROWS], 0, False)
            if comm.rank == 0:
                total = np.zeros(d)
                for lo in range(0, self.problem.n_workers, len(payloads)):
                    decode_rows_add(payloads[: self.problem.n_workers - lo], total[np.newaxis], 1.0)
        return slowest(time.perf_counter() - start)


def measure(args: argparse.Namespace, workers: int, dataset: str, out: Path) -> str:
    """One run and its bare bound with ``workers`` logical workers; rank 0 returns its report line."""
    cfg = config(args, workers, dataset)
    natural = args.uplink == "natural" and args.method == "sgd"  # the codec floor is sgd's round
    with make_transport(workers) as transport:  # the run's worker layout, for the shards
        bare = Bare(cfg, transport)
        bounds: list[float] = []
        stacks: list[float] = []
        floors: list[float] = []

        def time_bare() -> None:  # before and after the run: a load that changes meanwhile hits both sides
            bare.round_seconds(0)  # warm-up
            bare.round_seconds(0, stacked=True)
            bounds.extend(bare.round_seconds(k) for k in range(args.bare_rounds))
            stacks.extend(bare.round_seconds(k, stacked=True) for k in range(args.bare_rounds))
            floors.extend(bare.floor_seconds(k) for k in range(args.bare_rounds) if natural)

        time_bare()
        result = run(cfg, out, overwrite=True, progress=False)
        bare.x = result.x
        time_bare()
    bound, stacked = statistics.median(bounds), statistics.median(stacks)
    floor = statistics.median(floors) if natural else np.nan
    if MPI.COMM_WORLD.rank != 0:
        return ""
    metrics = read_results(out).metrics
    rate = args.rounds / float(metrics["wall_time"][-1])
    ratio = rate * bound
    line = (
        f"{workers:>7} workers: {rate:7.2f} rounds/s ({1e3 / rate:.1f} ms a round); bare gradients "
        f"{1 / bound:7.2f} rounds/s (ratio {ratio:.2f}); stacked gradients {1 / stacked:7.2f} rounds/s (ratio "
        f"{rate * stacked:.2f}); stacked gradients + codec kernels {1 / floor:7.2f} rounds/s "
        f"(ratio {rate * floor:.2f}); {metrics['bits_up'][-1] / args.rounds / 8e6:.2f} MB up per round; "
        f"status {result.status}"
    )
    if workers == TARGETS[args.problem] and args.method == "sgd":
        verdict = "PASS" if ratio >= TARGET_RATIO else "MISS"
        line += (
            f"\n{verdict} workers {args.problem} W={workers} ranks={MPI.COMM_WORLD.size}: mpicomp/bare {ratio:.3f} "
            f"(target >= {TARGET_RATIO}; mpicomp/stacked gradients {rate * stacked:.3f}, "
            f"mpicomp/(stacked gradients + codec kernels) {rate * floor:.3f})"
        )
    return line


def main() -> None:
    args = parse_args()
    comm = MPI.COMM_WORLD
    if args.problem == "mnist" and not args.mnist.is_dir():
        raise SystemExit(f"bench_workers: MNIST directory {args.mnist} not found; pass --mnist DIR")
    with tempfile.TemporaryDirectory() as own:
        tmp = comm.bcast(own, root=0)  # rank 0's directory: the generated data are written once, there
        dataset = f"mnist:{args.mnist}" if args.problem == "mnist" else f"npz:{small_dataset(Path(tmp))}"
        if comm.rank == 0:
            what = "MNIST softmax d=7850" if args.problem == "mnist" else f"small logistic d={SMALL_FEATURES + 1}"
            print(
                f"{comm.size} ranks, {what}, {args.method}, batch {args.batch}, uplink {args.uplink}, "
                f"{args.rounds} rounds; "
                f"load average {os.getloadavg()[0]:.2f}",
                flush=True,
            )
        for workers in args.workers:
            out = args.out or Path(tmp) / "bench_workers.h5"
            line = measure(args, workers, dataset, out)
            if comm.rank == 0:
                print(line, flush=True)


if __name__ == "__main__":
    main()
