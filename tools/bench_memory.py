"""Peak memory per MPI rank at 1, 2 and 4 ranks: MNIST softmax through the real runner.

Run as ``python tools/bench_memory.py`` (defaults: 100 workers, 3 rounds of ``gd``, standard
scaling, ``[run] optimum = false``). The tool launches itself once per rank count with
``mpiexec -n N`` (the venv's mpiexec); every rank runs ``mpicomp.runner.run`` exactly as
``mpicomp run`` would, then reports its peak resident set size
(``getrusage(RUSAGE_SELF).ru_maxrss``: start-up, data loading, the rounds and the metrics
included), gathered to rank 0. Target: the largest peak over the ranks falls each time ranks
are added (1 -> 2 -> 4), checked and printed as PASS or MISS. The machine's load average is
printed too: the peaks do not depend on it, but a loaded machine is worth knowing about.

``--per-worker W1 W2``: instead, the same run on 2 ranks with W1 and then W2 workers, ``sgd`` with
natural uplink (minibatch 16); the growth of the largest peak per added worker, against what a
worker must cost: its upload message, which the master holds for the round (natural:
``d + ceil(d/8)`` bytes plus framing), plus 64 bytes of byte counters (rounds and totals). The data
are the same whatever W (the shards split them), so a growth beyond that is memory the worker
count costs for nothing. Target: bytes per added worker <= 2 x (message + counters), printed as
PASS or MISS.

Needs the MNIST idx files (``--mnist``, default ../shared/datasets/mnist next to the project).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from itertools import pairwise
from pathlib import Path

DEFAULT_MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"
MPIEXEC = Path(sys.executable).parent / "mpiexec"
RANKS = (1, 2, 4)
MARKER = "bench_memory:"  # prefix of the child's one JSON line on stdout


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--mnist",
        type=Path,
        default=DEFAULT_MNIST,
        help="directory with the four MNIST idx(.gz) files",
    )
    parser.add_argument("--workers", type=int, default=100, help="logical workers (default 100)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per run (default 3)")
    parser.add_argument(
        "--ranks",
        type=int,
        nargs="+",
        default=list(RANKS),
        help="rank counts, ascending (default 1 2 4)",
    )
    parser.add_argument(
        "--per-worker", type=int, nargs=2, metavar=("W1", "W2"), help="bytes per added worker, W1 -> W2 on 2 ranks"
    )
    parser.add_argument("--method", default="gd", help=argparse.SUPPRESS)  # the child's method
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one measured run, under mpiexec
    return parser.parse_args()


def config(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    """The measured run: MNIST softmax, full local gradients, metrics at the start and the end."""
    return {
        "problem": {"name": "softmax", "dataset": f"mnist:{args.mnist}", "l2": 1e-4},
        "data": {"workers": args.workers, "batch": 16 if args.method == "sgd" else 0},
        "method": {"name": args.method, "stepsize": 0.5},
        "compressor": {"uplink": "natural" if args.method == "sgd" else "identity"},
        "run": {
            "rounds": args.rounds,
            "log_every": args.rounds,
            "optimum": False,
            "check_every": args.rounds,
        },
    }


def child(args: argparse.Namespace) -> None:
    """One run on every rank of ``COMM_WORLD``; rank 0 prints every rank's peak RSS (MiB) as JSON."""
    from mpi4py import MPI

    from mpicomp.config import validate
    from mpicomp.runner import run

    with tempfile.TemporaryDirectory() as tmp:
        result = run(
            validate(config(args)),
            Path(tmp) / "bench_memory.h5",
            overwrite=True,
            progress=False,
        )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
    peaks = MPI.COMM_WORLD.gather(peak_mib, root=0)
    if MPI.COMM_WORLD.rank == 0:
        print(
            MARKER,
            json.dumps({"peaks_mib": peaks, "status": result.status}),
            flush=True,
        )


def measure(args: argparse.Namespace, ranks: int, workers: int | None = None, method: str = "gd") -> list[float]:
    """Launch ``mpiexec -n ranks`` of this tool in child mode; each rank's peak RSS in MiB."""
    cmd = [
        str(MPIEXEC),
        "-n",
        str(ranks),
        sys.executable,
        __file__,
        "--child",
        "--mnist",
        str(args.mnist),
    ]
    cmd += ["--workers", str(workers or args.workers), "--rounds", str(args.rounds), "--method", method]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"bench_memory: mpiexec -n {ranks} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    report = json.loads(lines[-1].removeprefix(MARKER))
    if report["status"] != "finished":
        raise SystemExit(f"bench_memory: the run on {ranks} ranks ended {report['status']!r}")
    return report["peaks_mib"]


MNIST_D = 7850  # softmax on MNIST: 10 classes x (784 pixels + intercept)
COUNTER_BYTES = 64  # per worker: up_bytes, uploads, skips of the round and of the totals (int64), rounded up


def per_worker(args: argparse.Namespace) -> None:
    """Growth of the largest peak RSS per added worker (2 ranks, sgd + natural) against a worker's due."""
    from mpicomp.compressors import make

    first, second = args.per_worker
    peaks = [max(measure(args, 2, workers, "sgd")) for workers in (first, second)]
    per_added = (peaks[1] - peaks[0]) * 2**20 / (second - first)
    message = make("natural").message_capacity(MNIST_D) or 0
    due = message + COUNTER_BYTES
    verdict = "PASS" if per_added <= 2 * due else "MISS"
    print(
        f"MNIST softmax, sgd + natural on 2 ranks: largest peak {peaks[0]:.1f} MiB at {first} workers, {peaks[1]:.1f} MiB at {second}"
    )
    print(
        f"{verdict} memory per worker: {per_added:.0f} B per added worker; due {due} B "
        f"(upload message {message} B + counters {COUNTER_BYTES} B); target <= 2 x due"
    )


def main() -> None:
    args = parse_args()
    if not args.mnist.is_dir():
        raise SystemExit(f"bench_memory: MNIST directory {args.mnist} not found; pass --mnist DIR")
    if args.child:
        child(args)
        return
    if not MPIEXEC.exists():
        raise SystemExit(f"bench_memory: {MPIEXEC} not found; install the test extra (the mpich wheel)")
    if args.per_worker:
        per_worker(args)
        return
    print(f"MNIST softmax, {args.workers} workers, {args.rounds} rounds of gd, optimum off: peak RSS per rank (MiB)")
    largest = []
    for ranks in args.ranks:
        peaks = measure(args, ranks)
        largest.append(max(peaks))
        per_rank = "  ".join(f"rank {r}: {peak:7.1f}" for r, peak in enumerate(peaks))
        print(
            f"{ranks} rank{'s' if ranks > 1 else ' '}: max {max(peaks):7.1f}   {per_rank}",
            flush=True,
        )
    falls = all(later < earlier for earlier, later in pairwise(largest))
    steps = " -> ".join(f"{peak:.0f}" for peak in largest)
    print(f"target: the largest peak per rank falls as ranks are added ({steps} MiB): {'PASS' if falls else 'MISS'}")
    print(
        "machine load (1, 5, 15 min): "
        + ", ".join(f"{load:.2f}" for load in os.getloadavg())
        + f" on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
