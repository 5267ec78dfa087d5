"""``mpicomp reproduce``: list the claims, run them (all, or those named), or one run of them per
Slurm array task, and write their reports (and, with ``--write-docs``, the tables of the docs)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

DESCRIPTION = """\
Reproduce the papers' claims. Each claim (mpicomp/reproduce/claims/NAME.toml, format in
docs/reproductions.md) declares its runs, the quantities that decide it, the paper's numbers and
the rule of the verdict. Its runs go to OUT/NAME/MODE/ (finished runs are skipped: run the same
command again after an interruption), its report to OUT/NAME/report.md with OUT/NAME/figure.png.
A claim whose dataset is missing is reported as "not run" with the fetch command; the others go on.
Exit status: 0 if every claim that ran agrees, 1 if one differs or did not finish, 130 if interrupted.

examples:
  mpicomp reproduce --list
  mpicomp reproduce diana-linear --quick
  mpicomp reproduce --full --out results/reproduce -n 2 --write-docs docs/reproductions.md
  sbatch --array=0-$(($(mpicomp reproduce --full --count) - 1)) jobscripts/slurm_reproduce.sh --full"""


def add_parser(sub: argparse._SubParsersAction, positive_int) -> None:
    """The ``reproduce`` subcommand's parser (``positive_int``: the CLI's argparse type)."""
    p = sub.add_parser(
        "reproduce",
        help="run the papers' claims and report paper vs ours",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="claims to run (default: all; see --list)")
    p.add_argument("--list", action="store_true", help="list the claims, one line each, and exit")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick", help="short runs (the default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full", help="the paper's lengths")
    p.add_argument(
        "--out", metavar="DIR", default="results/reproduce", help="folder of the claims (default %(default)s)"
    )
    p.add_argument(
        "--max-rounds",
        type=positive_int,
        metavar="N",
        help="stop every run declared longer after N rounds (runs in OUT/NAME/MODE-N-rounds/, the reports say so): "
        "the longest length that fits a budget",
    )
    p.add_argument("-n", "--ranks", type=positive_int, default=1, help="MPI ranks per run (default 1: no launcher)")
    p.add_argument("--count", action="store_true", help="print the number of runs of the selected claims and exit")
    p.add_argument(
        "--array-index",
        type=int,
        metavar="I",
        help="run the I-th run of the selected claims only, no report (default: $SLURM_ARRAY_TASK_ID when set)",
    )
    p.add_argument(
        "--write-docs",
        metavar="FILE",
        help="after running, put the claims' tables into FILE's generated section (docs/reproductions.md)",
    )
    p.set_defaults(func=main, mode="quick")


def _stamped(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


def main(args: argparse.Namespace) -> int:
    from ..launch import LauncherNotFound
    from ..sweep_runner import run_points
    from .claim import ClaimError, load_claims
    from .engine import AGREES, NOT_RUN, Interrupted, capped_sweep, run_claims, runs_folder_name
    from .report import write_docs

    try:
        claims = load_claims(args.names)
    except ClaimError as exc:
        print(f"mpicomp: reproduce: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for claim in claims:
            print(claim.line())
        return 0
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"mpicomp: reproduce: --out {out} is a file; give a folder", file=sys.stderr)
        return 2
    if args.write_docs and not Path(args.write_docs).is_file():
        print(f"mpicomp: reproduce: --write-docs {args.write_docs}: no such file", file=sys.stderr)
        return 2
    try:
        planned = [(claim, *capped_sweep(claim, args.mode, args.max_rounds)) for claim in claims]
    except ClaimError as exc:
        print(f"mpicomp: reproduce: {exc}", file=sys.stderr)
        return 2
    tasks = [
        (claim, sweep, cap, point.index) for claim, sweep, cap in planned if sweep is not None for point in sweep.points
    ]
    if args.count:
        print(len(tasks))
        return 0
    task = args.array_index if args.array_index is not None else os.environ.get("SLURM_ARRAY_TASK_ID")
    try:
        if task is not None:
            if not str(task).isdigit() or int(task) >= len(tasks):
                print(f"mpicomp: reproduce: array index {task} is not a run; use 0-{len(tasks) - 1}", file=sys.stderr)
                return 2
            claim, sweep, cap, index = tasks[int(task)]
            _stamped(f"claim {claim.name} ({args.mode}): run {index} of {len(sweep.points)}")
            folder = out / claim.name / runs_folder_name(args.mode, cap)
            return run_points(sweep, folder, ranks=args.ranks, only=[index], echo=_stamped)
        outcomes = run_claims(claims, out, args.mode, ranks=args.ranks, echo=_stamped, max_rounds=args.max_rounds)
    except LauncherNotFound as exc:
        print(f"mpicomp: reproduce: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"mpicomp: reproduce: interrupted in claim {exc}; run the same command again to finish", file=sys.stderr)
        return 130
    print(summary(outcomes))
    if args.write_docs:
        write_docs(Path(args.write_docs), outcomes)
        print(f"wrote the tables into {args.write_docs}")
    return 0 if all(o.verdict in (AGREES, NOT_RUN) for o in outcomes) else 1


def summary(outcomes: Sequence) -> str:
    """One line per claim: name, verdict (and why), report."""
    width = max((len(o.claim.name) for o in outcomes), default=0)
    lines = []
    for o in outcomes:
        why = f": {o.why}" if o.why else ""
        lines.append(f"{o.claim.name:<{width}s}  {o.verdict}{why}")
    return "\n".join(lines)
