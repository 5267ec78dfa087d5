"""Talk 001 (second part), least squares: GD against HSQ-greedy and DoStoVoQ-SGD, loss against rounds and bits.

The talk's setting: ``n = 2^14`` samples in dimension ``D = 2^9``, ``K = 32`` workers, each with
``2^11`` samples drawn with replacement from the n (so the workers' data overlap), buckets of
``d = 16``. Here the samples are ``a_j ~ N(0, I_D)`` and ``b_j = a_j^T theta* + noise`` (``theta* ~
N(0, I_D / D)``, noise ``N(0, --noise^2)``); the ``K 2^11`` drawn rows are written to one ``.npz``
and cut into K shards of 2^11 by the ``iid`` partition (a random split of i.i.d. draws with
replacement is again i.i.d. draws with replacement). Problem ``lsq`` without intercept, scaling or
l2, full local gradients, ``quantized-sgd`` (every method's default step from its theory:
1/L for GD and HSQ-greedy, ``1/(L (1 + omega/K))`` for DoStoVoQ), uncompressed downlink:

* GD: identity uplink (64 bits per coordinate);
* HSQ-greedy: ``hsq`` (fixed codebook of 2^10 unit words, 6-bit magnitude: 16 bits per 16 coordinates);
* DoStoVoQ: ``stovoq`` (fresh codebook of 2^13 words per worker and round, 3-bit radius: 16 bits per 16).

GD converges linearly to the optimum. The compressed runs stop at a floor: the workers' data
differ, so their gradients at the optimum do not vanish, and DoStoVoQ's unbiased noise (relative
variance omega / K of a gradient that stays nonzero) keeps the iterates in a neighbourhood whose
size scales with the step; HSQ-greedy's bias (the same fixed codebook for every worker, so nothing
averages out) leaves a higher floor. Per bit, both reach moderate accuracy far earlier than GD.

Every run goes through :func:`mpicomp.runner.run` in this process (HDF5 files in ``--out``) and is
drawn through :mod:`mpicomp.results.plot`. Example::

    python tools/plot_dostovoq.py --rounds 100 --out results/dostovoq
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from mpicomp.comm import LocalTransport
from mpicomp.config import validate
from mpicomp.results import Results, read_results
from mpicomp.results.plot import figure, save
from mpicomp.runner import run

RUNS = {"GD": "identity", "HSQ-greedy": "hsq(mode=greedy,P=10,R=6,size=16)", "DoStoVoQ": "stovoq(P=13,R=3,size=16)"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=Path("results/dostovoq"), help="folder for the data, HDF5 files and PNG"
    )
    parser.add_argument("--samples", type=int, default=2**14, help="n, the samples the workers draw from")
    parser.add_argument("--dimension", type=int, default=2**9, help="D, the dimension")
    parser.add_argument("--workers", type=int, default=32, help="K, the number of workers")
    parser.add_argument("--per-worker", type=int, default=2**11, help="samples each worker draws with replacement")
    parser.add_argument("--noise", type=float, default=0.1, help="standard deviation of the label noise")
    parser.add_argument("--rounds", type=int, default=100, help="communication rounds per run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of the runs")
    parser.add_argument("--plot-only", action="store_true", help="redraw from the HDF5 files already in --out")
    args = parser.parse_args(argv)
    for name in ("samples", "dimension", "workers", "per_worker", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.noise < 0:
        parser.error(f"--noise must be >= 0, got {args.noise}")
    return args


def write_data(args: argparse.Namespace) -> Path:
    """The K per-worker draws (with replacement) from the n samples, as one ``.npz`` of float32 rows."""
    rng = np.random.default_rng(args.seed)
    theta = rng.standard_normal(args.dimension) / np.sqrt(args.dimension)
    a = rng.standard_normal((args.samples, args.dimension)).astype(np.float32)
    b = a @ theta + args.noise * rng.standard_normal(args.samples)
    rows = rng.integers(0, args.samples, args.workers * args.per_worker)
    path = args.out / f"lsq_n{args.samples}_D{args.dimension}_K{args.workers}_m{args.per_worker}_s{args.seed}.npz"
    np.savez(path, X=a[rows], y=b[rows])
    return path


def run_one(args: argparse.Namespace, data: Path, label: str) -> Path:
    raw = {
        "problem": {"name": "lsq", "dataset": str(data), "l2": 0.0, "intercept": False},
        "data": {"workers": args.workers, "batch": 0, "scale": "none", "partition": "iid", "test_fraction": 0.0},
        "method": {"name": "quantized-sgd"},
        "compressor": {"uplink": RUNS[label], "downlink": "identity"},
        "run": {"rounds": args.rounds, "seed": args.seed, "log_every": 1},
    }
    path = args.out / f"{label.lower()}.h5"
    run(validate(raw), path, overwrite=True, progress=True, transport=LocalTransport(args.workers))
    return path


def summary(label: str, results: Results) -> str:
    m = results.metrics
    reached = {level: np.flatnonzero(m["suboptimality"] <= level) for level in (1e-2, 1e-4)}
    at = "  ".join(
        f"F-F*<={level:g}: "
        + (f"round {int(m['round'][hit[0]])}, {m['bits_up'][hit[0]] / 1e6:.2f} Mbit up" if hit.size else "not reached")
        for level, hit in reached.items()
    )
    return (
        f"{label:<11s} rounds {int(m['round'][-1])}  F-F* {m['suboptimality'][-1]:.3e} (min {np.nanmin(m['suboptimality']):.3e})  "
        f"Mbit up {m['bits_up'][-1] / 1e6:8.2f}  {at}  status {results.status}"
    )


def plot(args: argparse.Namespace, curves: dict[str, Results]) -> Path:
    """Suboptimality against rounds and against the bits sent."""
    fig, notes = figure(
        list(curves.items()),
        ys=("suboptimality",),
        xs=("rounds", "bits"),
        yscale="log",
        title=(
            f"least squares, n = {args.samples}, D = {args.dimension}, K = {args.workers} workers of "
            f"{args.per_worker} samples (with replacement), buckets of 16: GD, HSQ-greedy, DoStoVoQ"
        ),
    )
    for note in notes:
        print(f"note: {note}")
    return save(fig, args.out / "dostovoq_lsq.png")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    curves = {}
    with threadpool_limits(1):  # the per-worker products are small: BLAS threads only contend
        data = None if args.plot_only else write_data(args)
        for label in RUNS:
            path = args.out / f"{label.lower()}.h5"
            if args.plot_only and not path.is_file():
                raise SystemExit(f"plot_dostovoq: --plot-only but {path} does not exist; run without --plot-only first")
            curves[label] = read_results(path if args.plot_only else run_one(args, data, label))
            print(summary(label, curves[label]), flush=True)
    print(f"wrote {plot(args, curves)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
