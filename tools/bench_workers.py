"""Rounds per second with many logical workers: MNIST softmax through the real runner.

Run as ``mpiexec -n 2 python tools/bench_workers.py`` (defaults: 100, 1,000 and 10,000 workers,
d = 7,850, minibatch 16 per worker, natural compression up, identity down). Every rank runs
``mpicomp.runner.run`` exactly as ``mpicomp run`` would; the figure is rounds / wall_time from
the results file (time in rounds only; metrics are evaluated once, at the end). Target: >= 10
rounds/s with 1,000 workers on 2 ranks (checked and printed as PASS or MISS). Needs the MNIST
idx files (``--mnist``, default ../shared/datasets/mnist next to the project).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from mpi4py import MPI

from mpicomp.config import validate
from mpicomp.results import read_results
from mpicomp.runner import run

DEFAULT_MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--mnist", type=Path, default=DEFAULT_MNIST, help="directory with the four MNIST idx(.gz) files"
    )
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[100, 1000, 10000], help="logical workers (default 100 1000 10000)"
    )
    parser.add_argument("--rounds", type=int, default=50, help="timed rounds (default 50)")
    parser.add_argument("--batch", type=int, default=16, help="minibatch per worker and round (default 16)")
    parser.add_argument("--uplink", default="natural", help="uplink compressor spec (default natural)")
    parser.add_argument("--out", type=Path, help="keep the (last) results file here (default: a temporary file)")
    return parser.parse_args()


TARGET_WORKERS, TARGET_RATE = 1000, 10.0


def rounds_per_second(args: argparse.Namespace, workers: int, out: Path) -> str:
    """One run with ``workers`` logical workers; rank 0 returns its report line."""
    raw = {
        "problem": {"name": "softmax", "dataset": f"mnist:{args.mnist}", "l2": 1e-4},
        "data": {"workers": workers, "batch": args.batch, "scale": "unit-norm"},
        "method": {"name": "sgd", "stepsize": 0.5},
        "compressor": {"uplink": args.uplink},
        "run": {"rounds": args.rounds, "log_every": args.rounds, "optimum": False, "check_every": args.rounds},
    }
    result = run(validate(raw), out, overwrite=True, progress=False)
    if MPI.COMM_WORLD.rank != 0:
        return ""
    metrics = read_results(out).metrics
    seconds = float(metrics["wall_time"][-1])
    rate = args.rounds / seconds
    verdict = (
        f" (target >= {TARGET_RATE:g}: {'PASS' if rate >= TARGET_RATE else 'MISS'})"
        if workers == TARGET_WORKERS
        else ""
    )
    return (
        f"{workers:>6} workers: {args.rounds} rounds in {seconds:6.2f} s = {rate:6.1f} rounds/s{verdict}; "
        f"{metrics['bits_up'][-1] / args.rounds / 8e6:.2f} MB up per round; status {result.status}, "
        f"test accuracy {metrics['test_accuracy'][-1]:.3f}"
    )


def main() -> None:
    args = parse_args()
    comm = MPI.COMM_WORLD
    if not args.mnist.is_dir():
        raise SystemExit(f"bench_workers: MNIST directory {args.mnist} not found; pass --mnist DIR")
    if comm.rank == 0:
        print(
            f"{comm.size} ranks, MNIST softmax d=7850, batch {args.batch}, uplink {args.uplink}; "
            f"load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    with tempfile.TemporaryDirectory() as tmp:
        for workers in args.workers:
            out = args.out or Path(tmp) / "bench_workers.h5"
            line = rounds_per_second(args, workers, out)
            if comm.rank == 0:
                print(line, flush=True)


if __name__ == "__main__":
    main()
