"""Poster 000 figures 2-3: VR-DIANA against DIANA-SGD and QSVRG on a9a, suboptimality and distance to x*.

Problem: L2-regularised logistic regression on LIBSVM a9a split over n workers (12 by default, as in
the poster), minibatch gradients. VR-DIANA (L-SVRG, optionally also SAGA) and DIANA-SGD compress
with l_inf random dithering, QSVRG with l_2 dithering; step sizes, alpha and p are the theory's
defaults (see :mod:`mpicomp.methods.diana`) unless ``--stepsize`` is given.

Every run goes through :func:`mpicomp.runner.run` in this process and writes an HDF5 file; the
plots are drawn from those files via :func:`mpicomp.results.read_results` and the plotting code of
``mpicomp plot`` (:mod:`mpicomp.results.plot`; ``--plot-only`` redraws from existing files). Panels:
suboptimality and ``||x - x*||`` against rounds and against the bits sent up and down. Example::

    python tools/plot_diana.py --rounds 1500 --out results/diana
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from mpicomp.comm import LocalTransport
from mpicomp.config import PARTITIONS, SCALINGS, validate
from mpicomp.results import Results, read_results
from mpicomp.results.plot import figure, save
from mpicomp.runner import run

DEFAULT_A9A = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "a9a.gz"
# run label -> (method options, which uplink: "inf" = l_inf dithering, "two" = l_2 dithering)
RUNS = {
    "VR-DIANA (L-SVRG)": ({"name": "vr-diana", "variant": "lsvrg"}, "inf"),
    "VR-DIANA (SAGA)": ({"name": "vr-diana", "variant": "saga"}, "inf"),
    "DIANA-SGD": ({"name": "diana"}, "inf"),
    "QSVRG": ({"name": "qsvrg"}, "two"),
}
DEFAULT_RUNS = ("VR-DIANA (L-SVRG)", "DIANA-SGD", "QSVRG")
PANELS = ("suboptimality", "dist_to_opt")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--a9a", type=Path, default=DEFAULT_A9A, help="the LIBSVM a9a file (svmlight, gzipped)")
    parser.add_argument("--out", type=Path, default=Path("results/diana"), help="folder for the HDF5 files and PNGs")
    parser.add_argument("--workers", type=int, default=12, help="number of workers n")
    parser.add_argument("--rounds", type=int, default=1500, help="communication rounds per run")
    parser.add_argument("--batch", type=int, default=32, help="minibatch size per worker and round")
    parser.add_argument("--l2", type=float, default=0.05, help="smooth l2 weight inside every f_i")
    parser.add_argument("--scale", choices=SCALINGS, default="unit-norm", help="feature scaling")
    parser.add_argument("--partition", choices=PARTITIONS, default="iid", help="how samples are split over workers")
    parser.add_argument("--levels", type=int, default=8, help="dithering levels s (l_inf and l_2)")
    parser.add_argument("--stepsize", type=float, default=None, help="gamma for every method (default: theory)")
    parser.add_argument("--saga", action="store_true", help="also run VR-DIANA's SAGA variant (slow: per-sample table)")
    parser.add_argument("--log-every", type=int, default=10, help="evaluate the metrics every N rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot-only", action="store_true", help="redraw from the HDF5 files already in --out")
    args = parser.parse_args(argv)
    for name in ("workers", "rounds", "batch", "levels", "log_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.l2 <= 0:
        parser.error(f"--l2 must be > 0 (the theory's defaults need a strongly convex f), got {args.l2}")
    if args.stepsize is not None and args.stepsize <= 0:
        parser.error(f"--stepsize must be > 0, got {args.stepsize}")
    args.runs = (*DEFAULT_RUNS, "VR-DIANA (SAGA)") if args.saga else DEFAULT_RUNS
    return args


def uplink_spec(args: argparse.Namespace, norm: str) -> str:
    return f"dither(s={args.levels},p={'inf' if norm == 'inf' else 2})"


def results_path(args: argparse.Namespace, label: str) -> Path:
    slug = label.lower().replace(" ", "").replace("(", "-").replace(")", "")
    return args.out / f"{slug}.h5"


def run_one(args: argparse.Namespace, label: str) -> Path:
    """One run through the runner (all workers in this process); returns its results file."""
    options, norm = RUNS[label]
    raw = {
        "problem": {"name": "logistic", "dataset": str(args.a9a), "l2": args.l2},
        "data": {"workers": args.workers, "batch": args.batch, "scale": args.scale, "partition": args.partition},
        "method": options if args.stepsize is None else {**options, "stepsize": args.stepsize},
        "compressor": {"uplink": uplink_spec(args, norm)},
        "run": {"rounds": args.rounds, "log_every": args.log_every, "seed": args.seed},
    }
    path = results_path(args, label)
    run(validate(raw), path, overwrite=True, progress=True, transport=LocalTransport(args.workers))
    return path


def summary(label: str, results: Results) -> str:
    m = results.metrics
    bits = (m["bits_up"] + m["bits_down"])[-1]
    return (
        f"{label:<18s} rounds {int(m['round'][-1]):5d}  F-F* {m['suboptimality'][-1]:.3e} "
        f"(min {np.nanmin(m['suboptimality']):.3e})  |x-x*| {m['dist_to_opt'][-1]:.3e}  "
        f"Mbit {bits / 1e6:9.2f}  status {results.status}"
    )


def plot(args: argparse.Namespace, curves: dict[str, Results]) -> Path:
    """The 2 x 2 grid through :mod:`mpicomp.results.plot`: each metric against rounds and bits."""
    config = next(iter(curves.values())).config
    fig, notes = figure(
        list(curves.items()),
        ys=PANELS,
        xs=("rounds", "bits"),
        yscale="log",
        title=(
            f"a9a logistic, l2 = {config['problem']['l2']:g}, n = {config['data']['workers']}, "
            f"batch {config['data']['batch']}, {config['data']['scale']} features; "
            f"l_inf dithering (s = {args.levels}) for VR-DIANA and DIANA, l_2 for QSVRG"
        ),
    )
    for note in notes:
        print(f"note: {note}")
    return save(fig, args.out / "diana_a9a.png")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.plot_only and not args.a9a.is_file():
        raise SystemExit(
            f"plot_diana: a9a not found at {args.a9a}; pass --a9a PATH to the LIBSVM a9a file "
            "(https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/binary.html#a9a)"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    curves = {}
    with threadpool_limits(1):  # the per-worker products are small: BLAS threads only contend
        for label in args.runs:
            path = results_path(args, label)
            if args.plot_only and not path.is_file():
                raise SystemExit(f"plot_diana: --plot-only but {path} does not exist; run without --plot-only first")
            curves[label] = read_results(path if args.plot_only else run_one(args, label))
            print(summary(label, curves[label]), flush=True)
    print(f"wrote {plot(args, curves)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
