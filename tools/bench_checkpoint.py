"""Checkpoint size and time at scale: MNIST softmax, 1,000 workers, through ``mpicomp run``.

Run as ``python tools/bench_checkpoint.py`` (defaults: 1,000 workers, ``ef21-sgd2m`` with
``topk(k=0.01)``, whose state is three d-vectors per worker, and ``diana``, one; 2 rounds, then the
final checkpoint; 1 and 2 ranks). For each case it runs ``mpicomp run`` (under ``mpiexec -n N``
for N > 1), reads the runner's log line ``checkpoint after round R (T s)``, the checkpoint's size,
and the time ``--resume`` takes to load it (from the resumed run's start-up line). Needs the MNIST idx
files (``--mnist``, default ../shared/datasets/mnist next to the project).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"
MPIEXEC = Path(sys.executable).parent / "mpiexec"
METHODS = {"ef21-sgd2m": "topk(k=0.01)", "diana": "natural"}


def command(ranks: int, args: list[str]) -> list[str]:
    launcher = [str(MPIEXEC), "-n", str(ranks)] if ranks > 1 else []
    return [*launcher, sys.executable, "-m", "mpicomp", "run", *args, "--no-progress"]


def measure(method: str, ranks: int, workers: int, rounds: int, mnist: Path, folder: Path) -> dict[str, float]:
    out = folder / f"{method}-{ranks}.h5"
    settings = {
        "problem.name": '"softmax"',
        "problem.dataset": f'"mnist:{mnist}"',
        "problem.l2": "1e-4",
        "data.workers": str(workers),
        "data.batch": "8",
        "method.name": f'"{method}"',
        "compressor.uplink": f'"{METHODS[method]}"',
        "run.rounds": str(rounds),
        "run.optimum": "false",
    }
    args = ["--out", str(out)] + [word for key, value in settings.items() for word in ("--set", f"{key}={value}")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command(ranks, args), capture_output=True, text=True, env=env, check=True)
    seconds = float(re.search(r"checkpoint after round \d+ \(([\d.]+) s\)", done.stderr).group(1))
    size = Path(f"{out}.ckpt").stat().st_size
    started = time.perf_counter()
    resumed = subprocess.run(
        command(ranks, ["--resume", str(out), "--set", f"run.rounds={rounds + 1}"]),
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    total = time.perf_counter() - started
    startup = float(re.search(r"start-up ([\d.]+) s", resumed.stderr).group(1))
    return {
        "size_mb": size / 1e6,
        "write_s": seconds,
        "resume_startup_s": startup,
        "resume_total_s": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", type=Path, default=DEFAULT_MNIST, help="directory with the MNIST idx(.gz) files")
    parser.add_argument("--workers", type=int, default=1000, help="logical workers (default 1000)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds before the final checkpoint (default 2)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="rank counts (default 1 2)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = parser.parse_args()
    if not args.mnist.is_dir():
        raise SystemExit(f"bench_checkpoint: MNIST directory {args.mnist} not found; pass --mnist DIR")
    print(
        f"MNIST softmax (d = 7850), {args.workers} workers, checkpoint after round {args.rounds}; load {os.getloadavg()[0]:.1f}"
    )
    print(f"{'method':12s} {'ranks':>5s} {'size MB':>9s} {'write s':>8s} {'resume start-up s':>18s}")
    with tempfile.TemporaryDirectory() as folder:
        for method in args.methods:
            for ranks in args.ranks:
                row = measure(method, ranks, args.workers, args.rounds, args.mnist, Path(folder))
                print(
                    f"{method:12s} {ranks:5d} {row['size_mb']:9.1f} {row['write_s']:8.2f} "
                    f"{row['resume_startup_s']:18.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
