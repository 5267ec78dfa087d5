"""Paper 003 (LAQ), Tables 2 and 3 on MNIST: the paper's numbers next to ours, and a PNG.

Setup (paper 003 Sec. 4 and the authors' code; ``../shared/papers/NOTES.md``): MNIST's 60,000
training images with pixels / 255 over M = 10 workers in **contiguous shards** of 6,000 (the file's
order), its 10,000 test images for the accuracy; 10-class softmax regression with an intercept
("logistic", p = 7,850) or the 784-200-10 ReLU network ("nn", p = 159,010); ``0.01 ||theta||^2 / 2``
inside each worker's loss; the paper's step alpha on the **summed** gradient is gamma = alpha M in
mpicomp's mean form (alpha = 0.02 -> 0.2; stochastic table 0.008 -> 0.08, minibatch 500);
D = 10, xi_d = 0.8 / D, t_bar = 100.

Rows (what each paper method is here):

* GD: ``gd``, uplink ``identity(dtype=float32)`` (the paper counts 32 bits per coordinate);
* QGD: ``ef21`` with uplink ``laq(bits=b)``, first round compressed: the innovation quantizer of
  eqs. (5)-(6) with every worker uploading every round (the paper's Algorithm 1);
* LAG and LAG-PS: ``lag`` (worker- and server-triggered), float32 uploads, LAQ's D and xi (the paper
  gives neither LAG's variant nor its constants: both rows face the paper's one LAG row);
* LAQ: ``laq`` with b bits (logistic b = 4: the paper's bit count is ``uploads p 4`` although its
  text says 3; nn b = 8);
* SGD: ``sgd``, float32; QSGD: ``sgd`` with ``qsgd(s=...)`` (Elias-coded; the paper's encoding is not
  given); SSGD: ``sgd`` with ``randk(k=0.5,dtype=float32)``, an unbiased 50 % sparsifier in place
  of Wangni et al.'s magnitude-based probabilities (the paper's 16 bits per coordinate);
* SLAQ: ``slaq`` with b = 3 (nn 8) and the authors' code's rule (error weight 0.5, offset 0.2).

Measured per run, as the paper defines them: for Table 2 logistic the first round whose loss is
within 1e-6 of the **run's own lowest loss**, and the uploads and bits up to it; for the other rows
the whole run. "paper bits" counts ``b p`` (float32: ``32 p``) per upload like the paper; "+R" adds
the 32 radius bits of each LAQ-coded upload; "wire bits" is everything mpicomp counted on the uplink
(message headers, CRC, the 8-byte size prefix of every upload and every skip).

Every run goes through :func:`mpicomp.runner.run` (one process, :class:`LocalTransport`); the HDF5
files, a JSON of the table and the PNG land in ``--out`` (``results/`` is git-ignored). Example::

    python tools/plot_laq.py                          # both logistic tables: about 2.5 hours on one core
    python tools/plot_laq.py --tables 3 --models nn   # Table 3's network rows: about 20 minutes
    python tools/plot_laq.py --tables 2 --models nn   # Table 2's network rows: 8,000 full-gradient rounds
                                                      # of about 1.4 s each per method (shorten: --nn-rounds)
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from threadpoolctl import threadpool_limits

from mpicomp.comm import LocalTransport
from mpicomp.config import validate
from mpicomp.data import load_mnist, partition_indices
from mpicomp.results import Results, read_results
from mpicomp.rng import root_seed
from mpicomp.runner import run

DEFAULT_MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"
WORKERS = 10
L2 = 0.01
RESIDUAL = 1e-6
LAZY = {"D": 10, "xi": [0.08], "t_bar": 100}
DIMENSION = {"logistic": 785 * 10, "nn": 785 * 200 + 201 * 10}
RADIUS_BITS = 32


@dataclass(frozen=True)
class Paper:
    """One row of the paper's table: iterations, uploads, bits, accuracy."""

    iterations: int
    uploads: int
    bits: float
    accuracy: float | None


PAPER = {  # paper 003, Table 2 (gradient-based) and Table 3 (minibatch)
    ("LAQ", "logistic"): Paper(2673, 620, 1.95e7, 0.9082),
    ("GD", "logistic"): Paper(2820, 28200, 7.08e9, 0.9082),
    ("QGD", "logistic"): Paper(2805, 28050, 8.81e8, 0.9082),
    ("LAG", "logistic"): Paper(2659, 2382, 5.98e8, 0.9082),
    ("LAQ", "nn"): Paper(8000, 31845, 4.05e10, 0.9433),
    ("GD", "nn"): Paper(8000, 80000, 4.07e11, 0.9433),
    ("QGD", "nn"): Paper(8000, 80000, 1.02e11, 0.9433),
    ("LAG", "nn"): Paper(8000, 29916, 1.52e11, 0.9433),
    ("SLAQ", "logistic"): Paper(1000, 8255, 1.94e8, 0.9018),
    ("SGD", "logistic"): Paper(1000, 10000, 2.51e9, 0.9021),
    ("QSGD", "logistic"): Paper(1000, 10000, 7.51e8, 0.9021),
    ("SSGD", "logistic"): Paper(1000, 10000, 1.26e9, 0.9013),
    ("SLAQ", "nn"): Paper(1500, 11192, 1.42e10, 0.9107),
    ("SGD", "nn"): Paper(1500, 15000, 7.63e10, 0.9100),
    ("QSGD", "nn"): Paper(1500, 15000, 2.03e10, 0.9100),
    ("SSGD", "nn"): Paper(1500, 15000, 3.82e10, 0.9104),
}
TABLES = {2: ("LAQ", "GD", "QGD", "LAG", "LAG-PS"), 3: ("SLAQ", "SGD", "QSGD", "SSGD")}
PAPER_ROW = {"LAG-PS": "LAG"}  # rows measured against another paper row


def labels(table: int, model: str) -> tuple[str, ...]:
    """The rows of a table for a model (LAG-PS needs each worker's smoothness L_m, which the MLP lacks)."""
    return tuple(label for label in TABLES[table] if not (label == "LAG-PS" and model == "nn"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--mnist", type=Path, default=DEFAULT_MNIST, help="folder with the four MNIST idx files")
    parser.add_argument("--out", type=Path, default=Path("results/laq"), help="folder for HDF5 files, table and PNG")
    parser.add_argument("--tables", default="2,3", help="which tables: 2, 3 or 2,3")
    parser.add_argument("--models", default="logistic", help="logistic, nn or logistic,nn (nn is slow)")
    parser.add_argument("--rounds", type=int, default=4000, help="Table 2 logistic rounds (the authors' code: 4000)")
    parser.add_argument("--nn-rounds", type=int, default=8000, help="Table 2 nn rounds (paper: 8000)")
    parser.add_argument("--sgd-rounds", type=int, default=1000, help="Table 3 logistic rounds (paper: 1000)")
    parser.add_argument("--nn-sgd-rounds", type=int, default=1500, help="Table 3 nn rounds (paper: 1500)")
    parser.add_argument("--bits", type=int, default=4, help="b of QGD and LAQ, logistic (paper's count: 4; text: 3)")
    parser.add_argument("--qsgd", default="qsgd(s=256)", help="the QSGD uplink compressor")
    parser.add_argument("--log-every", type=int, default=1, help="evaluate the loss every N rounds (1: exact counts)")
    parser.add_argument("--nn-log-every", type=int, default=20, help="evaluation period of the nn runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true", help="reuse finished runs found in --out instead of rerunning")
    args = parser.parse_args(argv)
    try:
        args.tables = sorted({int(t) for t in args.tables.split(",")})
    except ValueError:
        parser.error(f"--tables takes 2, 3 or 2,3, got {args.tables!r}")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not set(args.tables) <= set(TABLES) or not set(args.models) <= set(DIMENSION) or not args.models:
        parser.error("--tables takes 2 and/or 3, --models logistic and/or nn")
    return args


def contiguous_shards_npz(directory: Path, seed: int, out: Path) -> Path:
    """MNIST / 255 as an .npz whose rows are laid out so that the ``iid`` partition of
    ``[run] seed`` hands worker m exactly training images ``6000 m .. 6000 (m + 1) - 1``."""
    try:
        data = load_mnist(directory)
    except FileNotFoundError as exc:
        raise SystemExit(f"plot_laq: MNIST not found ({exc}); pass --mnist DIR with the four idx files") from None
    n = data.X.shape[0]
    order = np.concatenate(partition_indices(np.zeros(n), WORKERS, "iid", seed=root_seed(seed)))
    X, y = np.empty_like(data.X), np.empty_like(data.y)
    X[order], y[order] = data.X / 255.0, data.y  # the runner stores rows X[order]: the file's order
    path = out / f"mnist_contiguous_seed{seed}.npz"
    np.savez(path, X=X, y=y, X_test=data.X_test / 255.0, y_test=data.y_test)
    return path


def coded_bits(label: str, model: str, args: argparse.Namespace) -> int | None:
    """b of the rows whose uploads are LAQ-coded (b bits per coordinate plus a float32 radius), else None."""
    if label in ("LAQ", "QGD"):
        return args.bits if model == "logistic" else 8
    if label == "SLAQ":
        return 3 if model == "logistic" else 8
    return None


def method_options(label: str, model: str, args: argparse.Namespace) -> tuple[dict, str, int]:
    """``([method] table, uplink spec, batch)`` of one row."""
    bits = coded_bits(label, model, args)
    table = {
        "GD": ({"name": "gd"}, "identity(dtype=float32)", 0),
        "QGD": ({"name": "ef21", "init": "compressed"}, f"laq(bits={bits})", 0),
        "LAG": ({"name": "lag", "D": LAZY["D"], "xi": LAZY["xi"]}, "identity(dtype=float32)", 0),
        "LAG-PS": ({"name": "lag", "variant": "ps", "D": LAZY["D"], "xi": LAZY["xi"]}, "identity(dtype=float32)", 0),
        "LAQ": ({"name": "laq", "bits": bits, **LAZY}, "identity", 0),
        "SGD": ({"name": "sgd"}, "identity(dtype=float32)", 500),
        "QSGD": ({"name": "sgd"}, args.qsgd, 500),
        "SSGD": ({"name": "sgd"}, "randk(k=0.5,dtype=float32)", 500),
        "SLAQ": ({"name": "slaq", "bits": bits, **LAZY, "error_weight": 0.5, "offset": 0.2}, "identity", 500),
    }
    method, uplink, batch = table[label]
    gamma = WORKERS * (0.02 if batch == 0 else 0.008)
    return {**method, "stepsize": gamma}, uplink, batch


def rounds_of(label: str, model: str, args: argparse.Namespace) -> int:
    stochastic = label in TABLES[3]
    if model == "logistic":
        return args.sgd_rounds if stochastic else args.rounds
    return args.nn_sgd_rounds if stochastic else args.nn_rounds


def run_row(label: str, model: str, dataset: Path, args: argparse.Namespace) -> Results:
    """One run through the runner (all workers in this process), or a finished file with --reuse."""
    method, uplink, batch = method_options(label, model, args)
    path = args.out / f"{label.lower()}_{model}.h5"
    if args.reuse and path.exists():
        old = read_results(path)
        if old.status == "finished":
            return old
    problem = {"name": "softmax" if model == "logistic" else "mlp", "dataset": f"npz:{dataset}", "l2": L2}
    raw = {
        "problem": problem,
        "data": {"workers": WORKERS, "partition": "iid", "scale": "none", "batch": batch},
        "method": method,
        "compressor": {"uplink": uplink},
        "run": {
            "rounds": rounds_of(label, model, args),
            "seed": args.seed,
            "optimum": False,
            "log_every": args.log_every if model == "logistic" else args.nn_log_every,
            "flush_every": 100,
            "divergence_factor": 1e3,
        },
    }
    run(validate(raw), path, overwrite=True, progress=False, transport=LocalTransport(WORKERS))
    return read_results(path)


@dataclass(frozen=True)
class Measured:
    """Our numbers for one row, at the row's reference round."""

    rounds: int
    uploads: int
    paper_bits: float
    radius_bits: float
    wire_bits: float
    accuracy: float
    final_accuracy: float


def measure(label: str, model: str, results: Results, args: argparse.Namespace) -> Measured:
    """At the first round within RESIDUAL of the run's lowest loss (Table 2 logistic), else the last."""
    m = results.metrics
    row = len(m["round"]) - 1
    if model == "logistic" and label in TABLES[2]:
        reached = np.flatnonzero(m["loss"] - np.nanmin(m["loss"]) <= RESIDUAL)
        row = int(reached[0])
    uploads = int(m["uploads"][row])
    b = coded_bits(label, model, args)
    if b is not None:
        bits = b * DIMENSION[model] * uploads
        radius = bits + RADIUS_BITS * uploads
    else:
        bits = radius = 8.0 * float(m["up_payload_bytes"][row])
    return Measured(
        int(m["round"][row]),
        uploads,
        float(bits),
        float(radius),
        float(m["bits_up"][row]),
        float(m["test_accuracy"][row]),
        float(m["test_accuracy"][-1]),
    )


def table_text(rows: list[tuple[str, str, Paper, Measured]]) -> str:
    pair = "paper / ours"
    head = f"{'method':<6} {'model':<8} {'iterations':>17} {'uploads':>17} {'paper bits':>21} {'+R bits':>9} "
    head += f"{'wire bits':>9} {'accuracy':>15}"
    lines = [head, f"{'':<15} {pair:>17} {pair:>17} {pair:>21} {'ours':>9} {'ours':>9} {pair:>15}"]
    for label, model, paper, ours in rows:
        acc = "-" if paper.accuracy is None else f"{paper.accuracy:.4f}"
        lines.append(
            f"{label:<6} {model:<8} {paper.iterations:>8} / {ours.rounds:<6} {paper.uploads:>8} / {ours.uploads:<6} "
            f"{paper.bits:>9.3g} / {ours.paper_bits:<9.3g} {ours.radius_bits:>9.3g} {ours.wire_bits:>9.3g} "
            f"{acc:>6} / {ours.accuracy:.4f}"
        )
    return "\n".join(lines)


KNOWN_DIFFERENCES = """\
Known differences from the paper's runs (each can move the iteration and upload counts):
- start: x0 = 0 for the softmax model; the authors' Keras layer starts from Glorot-uniform weights;
- arithmetic: float64 everywhere (uploads float32 where the paper counts 32 bits); the authors' TF runs in float32;
- LAG: variant and constants not stated in the paper; LAG-PS's L_m is the worst-case bound
  0.5 lambda_max(A_m^T A_m)/m_m + l2, so with these xi it asks every worker every round;
- QSGD and SSGD: the paper's encodings are not given (here Elias-coded QSGD and an unbiased
  Rand-K keeping half the coordinates), so their bit counts are not comparable digit for digit;
- SLAQ: rule and minibatch sampling of the authors' code (they draw one of ~12 fixed batches of 500,
  here a fresh uniform batch); the paper does not state SLAQ's rule;
- NN rows: Glorot start drawn from our seed, not the authors'; fewer rounds if --nn-rounds < 8000."""


def differences(rows: list[tuple[str, str, Paper, Measured]]) -> str:
    """Ours relative to the paper, row by row."""
    lines = ["ours / paper:"]
    for label, model, paper, ours in rows:
        accuracy = "" if paper.accuracy is None else f", accuracy {ours.accuracy - paper.accuracy:+.4f}"
        lines.append(
            f"  {label:<6} {model:<8} iterations x{ours.rounds / paper.iterations:.2f}, uploads x{ours.uploads / paper.uploads:.2f}, "
            f"paper-counted bits x{ours.paper_bits / paper.bits:.2f}{accuracy}"
        )
    return "\n".join(lines)


def goal(rows: list[tuple[str, str, Paper, Measured]]) -> str:
    """The issue's goal: LAQ as accurate as GD with >= 20x fewer uploads and >= 100x fewer bits."""
    found = {label: ours for label, model, _, ours in rows if model == "logistic"}
    if "LAQ" not in found or "GD" not in found:
        return "goal: not measured (needs the LAQ and GD logistic rows of Table 2)"
    laq, gd = found["LAQ"], found["GD"]
    upload_ratio = gd.uploads / laq.uploads
    wire_ratio, paper_ratio = gd.wire_bits / laq.wire_bits, gd.paper_bits / laq.paper_bits
    same = laq.accuracy >= gd.accuracy - 1e-3
    met = same and upload_ratio >= 20 and wire_ratio >= 100
    return (
        f"goal (LAQ vs GD, logistic, at loss residual {RESIDUAL:g}): accuracy {laq.accuracy:.4f} vs {gd.accuracy:.4f}; "
        f"{upload_ratio:.1f}x fewer uploads (>= 20, paper 45.5x); {wire_ratio:.0f}x fewer wire bits, "
        f"{paper_ratio:.0f}x fewer paper-counted bits (>= 100, paper 363x): {'MET' if met else 'NOT MET'}"
    )


def plot(curves: dict[tuple[str, str], Results], args: argparse.Namespace) -> Path:
    """Table 2: loss minus the run's lowest loss; Table 3: the loss (the paper's Figs. 4 and 7); against
    iterations, uploads and uplink bits, one row of panels per table and model."""
    groups = [(t, model) for t in args.tables for model in args.models]
    fig = Figure(figsize=(15, 4 * len(groups)))
    axes = fig.subplots(len(groups), 3, squeeze=False)
    for (table, model), row in zip(groups, axes, strict=True):
        for label, style in zip(labels(table, model), ("-", "--", "-.", ":", (0, (5, 1))), strict=False):
            m = curves[(label, model)].metrics
            y = np.maximum(m["loss"] - np.nanmin(m["loss"]), 1e-12) if table == 2 else m["loss"]
            for ax, x in zip(row, (m["round"], m["uploads"], m["bits_up"]), strict=True):
                ax.plot(x, y, ls=style, label=label, lw=1.3)
        for ax, name in zip(row, ("iterations", "uploads", "uplink bits (wire)"), strict=True):
            ax.set_xlabel(name)
            ax.set_yscale("log")
            ax.set_xscale("linear" if name == "iterations" else "log")
            ax.set_title(f"Table {table}, {model}")
            ax.grid(True, which="both", alpha=0.3)
            if table == 2:
                ax.axhline(RESIDUAL, color="grey", lw=0.6, ls=":")
        row[0].set_ylabel("loss - lowest loss of the run" if table == 2 else "training loss")
        row[0].legend(fontsize=8)
    fig.suptitle("Paper 003 on MNIST: LAQ / SLAQ against GD, QGD, LAG / SGD, QSGD, SSGD", fontsize=11)
    fig.tight_layout()
    path = args.out / "laq_tables.png"
    fig.savefig(path, dpi=110)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    dataset = contiguous_shards_npz(args.mnist, args.seed, args.out)
    rows, curves = [], {}
    with threadpool_limits(1):
        for table in args.tables:
            for model in args.models:
                for label in labels(table, model):
                    results = run_row(label, model, dataset, args)
                    curves[(label, model)] = results
                    ours = measure(label, model, results, args)
                    rows.append((label, model, PAPER[(PAPER_ROW.get(label, label), model)], ours))
                    print(table_text(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table_text(rows))
    print(differences(rows))
    print(KNOWN_DIFFERENCES)
    print(goal(rows))
    (args.out / "laq_tables.json").write_text(
        json.dumps(
            [
                {"method": label, "model": model, "paper": paper.__dict__, "ours": ours.__dict__}
                for label, model, paper, ours in rows
            ],
            indent=1,
        )
    )
    print(f"wrote {plot(curves, args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
