"""Poster 002 figures: ||grad f(x^t)||^2 against rounds for EF14-SGD, EF21-SGD, EF21-SGDM, EF21-SGD2M.

Problem: softmax regression with the nonconvex penalty ``lam sum_k x_k^2 / (1 + x_k^2)`` on MNIST
(a random subsample of the training images, to keep it fast), Top-K uplink.

* Experiment 1 ("increasing batch size"): one panel per minibatch size B, n workers fixed.
* Experiment 2 ("improving with n"): one panel per method, one curve per number of workers n, B fixed.

Every run goes through :func:`mpicomp.runner.run` in this process and is read back from its HDF5
file with :func:`mpicomp.results.read_results` and drawn by the plotting code of ``mpicomp plot``
(:mod:`mpicomp.results.plot`); the PNGs and the HDF5 files land in ``--out``.
Example::

    python tools/plot_ef21.py --mnist ../shared/datasets/mnist --subsample 6000 --rounds 600 --out results/ef21
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from threadpoolctl import threadpool_limits

from mpicomp.comm import LocalTransport
from mpicomp.config import SCALINGS, validate
from mpicomp.data import load_mnist
from mpicomp.results import Results, plot, read_results
from mpicomp.runner import run

METHODS = ("ef14", "ef21", "ef21-sgdm", "ef21-sgd2m")
LABELS = {"ef14": "EF14-SGD", "ef21": "EF21-SGD", "ef21-sgdm": "EF21-SGDM", "ef21-sgd2m": "EF21-SGD2M"}
DEFAULT_MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"


def int_list(text: str) -> list[int]:
    """``"1,8,64"`` -> ``[1, 8, 64]`` (argparse type)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--mnist", type=Path, default=DEFAULT_MNIST, help="folder with the four MNIST idx files")
    parser.add_argument("--subsample", type=int, default=6000, help="training images used (0 = all 60,000)")
    parser.add_argument("--out", type=Path, default=Path("results/ef21"), help="folder for the HDF5 files and PNGs")
    parser.add_argument("--rounds", type=int, default=600, help="communication rounds per run")
    parser.add_argument("--workers", type=int, default=10, help="n in experiment 1")
    parser.add_argument("--batches", type=int_list, default=[1, 8, 64], help="minibatch sizes B of experiment 1")
    parser.add_argument("--ns", type=int_list, default=[1, 4, 16], help="worker counts n of experiment 2")
    parser.add_argument("--batch-n", type=int, default=1, help="minibatch size B in experiment 2")
    parser.add_argument("--stepsize", type=float, default=0.01, help="gamma, the same for every method")
    parser.add_argument("--eta", type=float, default=0.1, help="momentum eta of EF21-SGDM and EF21-SGD2M")
    parser.add_argument("--topk", type=float, default=0.01, help="Top-K uplink, k as a fraction of d")
    parser.add_argument("--lam", type=float, default=1e-3, help="weight of the nonconvex penalty")
    parser.add_argument("--scale", choices=SCALINGS, default="standard", help="feature scaling of the images")
    parser.add_argument("--log-every", type=int, default=10, help="evaluate ||grad f||^2 every N rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--experiments", default="1,2", help="which experiments to run: 1, 2 or 1,2")
    args = parser.parse_args(argv)
    for name in ("subsample", "rounds", "workers", "batch_n", "log_every"):
        if getattr(args, name) < (0 if name == "subsample" else 1):
            parser.error(f"--{name.replace('_', '-')} must be {'>= 0' if name == 'subsample' else '>= 1'}")
    if not 0 < args.topk <= 1:
        parser.error(f"--topk must be a fraction in (0, 1], got {args.topk}")
    if not 0 < args.eta <= 1:
        parser.error(f"--eta must be in (0, 1], got {args.eta}")
    args.experiments = {e.strip() for e in args.experiments.split(",")}
    if not args.experiments <= {"1", "2"}:
        parser.error(f"--experiments takes 1, 2 or 1,2, got {','.join(sorted(args.experiments))}")
    return args


def mnist_subsample(directory: Path, size: int, seed: int, out: Path) -> Path:
    """Write ``size`` random MNIST training images (all if 0) and the full test set to an .npz file."""
    try:
        data = load_mnist(directory)
    except FileNotFoundError as exc:
        raise SystemExit(f"plot_ef21: MNIST not found ({exc}); pass --mnist DIR with the four idx files") from None
    rows = np.arange(data.X.shape[0])
    if 0 < size < rows.size:
        rows = np.sort(np.random.default_rng(seed).choice(rows.size, size=size, replace=False))
    path = out / f"mnist_{rows.size}_seed{seed}.npz"
    np.savez(path, X=data.X[rows], y=data.y[rows], X_test=data.X_test, y_test=data.y_test)
    return path


def run_one(args: argparse.Namespace, dataset: Path, method: str, workers: int, batch: int) -> Results:
    """One run through the runner (all workers in this process); its results file, read back."""
    options = {"name": method, "stepsize": args.stepsize}
    if method in ("ef21-sgdm", "ef21-sgd2m"):
        options["eta"] = args.eta
    raw = {
        "problem": {"name": "softmax", "dataset": f"npz:{dataset}", "l2": 0.0, "nonconvex": args.lam},
        "data": {"workers": workers, "batch": batch, "scale": args.scale},
        "method": options,
        "compressor": {"uplink": f"topk(k={args.topk})"},
        "run": {"rounds": args.rounds, "log_every": args.log_every, "seed": args.seed},
    }
    config = validate(raw)
    path = args.out / f"{method}_n{workers}_b{batch}.h5"
    run(config, path, overwrite=True, progress=False, transport=LocalTransport(workers))
    return read_results(path)


def floor(results: Results) -> float:
    """Mean ||grad f||^2 over the last fifth of the logged rounds."""
    g = results.metrics["grad_norm_sq"]
    return float(g[-max(1, g.size // 5) :].mean())


def panel(ax, curves: dict[str, Results], title: str) -> None:
    """||grad f||^2 against rounds, one curve per run, through :func:`mpicomp.results.plot.draw`."""
    for note in plot.draw(ax, list(curves.items()), "grad_norm_sq", "rounds", yscale="log"):
        print(f"note: {note}")
    ax.set_title(title)


def experiment_1(args: argparse.Namespace, dataset: Path) -> Path:
    fig = Figure(figsize=(4.5 * len(args.batches), 3.8))
    axes = fig.subplots(1, len(args.batches), squeeze=False)
    for ax, batch in zip(axes[0], args.batches, strict=True):
        curves = {LABELS[m]: run_one(args, dataset, m, args.workers, batch) for m in METHODS}
        panel(ax, curves, f"B = {batch}, n = {args.workers}")
        print(f"exp1 B={batch:<4d}" + "".join(f"  {k}: {floor(r):.3e}" for k, r in curves.items()), flush=True)
    return save(fig, args, "ef21_exp1_batch.png", "Experiment 1: increasing batch size")


def experiment_2(args: argparse.Namespace, dataset: Path) -> Path:
    fig = Figure(figsize=(4.5 * len(METHODS), 3.8))
    axes = fig.subplots(1, len(METHODS), squeeze=False, sharey=True)
    for ax, method in zip(axes[0], METHODS, strict=True):
        curves = {f"n = {n}": run_one(args, dataset, method, n, args.batch_n) for n in args.ns}
        panel(ax, curves, f"{LABELS[method]}, B = {args.batch_n}")
        print(f"exp2 {LABELS[method]:<11s}" + "".join(f"  {k}: {floor(r):.3e}" for k, r in curves.items()), flush=True)
    return save(fig, args, "ef21_exp2_workers.png", "Experiment 2: improving with n")


def save(fig: Figure, args: argparse.Namespace, name: str, title: str) -> Path:
    fig.suptitle(
        f"{title} — MNIST softmax + {args.lam:g}·Σx²/(1+x²), Top-K k={args.topk:g}d, "
        f"γ={args.stepsize:g}, η={args.eta:g}",
        fontsize=10,
    )
    fig.tight_layout()
    return plot.save(fig, args.out / name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    dataset = mnist_subsample(args.mnist, args.subsample, args.seed, args.out)
    with threadpool_limits(1):  # one BLAS thread: the per-worker products are small, threads only contend
        pngs = [
            experiment(args, dataset)
            for key, experiment in (("1", experiment_1), ("2", experiment_2))
            if key in args.experiments
        ]
    for path in pngs:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
