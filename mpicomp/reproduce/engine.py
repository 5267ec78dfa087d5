"""Running a claim: its runs as a sweep (:func:`mpicomp.sweep_runner.run_points`: finished runs are
skipped, interrupted ones resumed), then its quantities measured and judged, its figure drawn and
its report written (:mod:`mpicomp.reproduce.report`).

Layout of ``OUT/NAME/``: ``report.md``, ``outcome.json`` (the table as data), ``figure.png``, and
the runs of each mode in ``quick/`` or ``full/`` (the sweep's files, ``sweep.json``, ``logs/``, and
``computed.json``: the values of the measures computed without runs, reused when run again).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.fetch import LIBSVM_NAMES, MNIST, cached_path
from ..results import Results, read_results
from ..results.table import flat_config
from ..results.writer import config_json
from ..sweep import DONE_STATUSES, Point, Sweep, point_status
from ..sweep_runner import EXIT_INTERRUPTED, run_points
from .claim import Claim, Quantity, Rule, select
from .measures import MEASURES

AGREES, DIFFERS, NOT_RUN, INCOMPLETE = "agrees", "differs", "not run", "incomplete"
FIGURE, REPORT, OUTCOME = "figure.png", "report.md", "outcome.json"
_ABSENT = object()
COMPUTED = "computed.json"  # OUT/NAME/MODE/: values of the computed measures, reused when run again


class Interrupted(Exception):
    """The claim's sweep was interrupted by a signal (exit status 130 of the sweep)."""


@dataclass
class Row:
    """A measured quantity: its mean over the selected runs, their spread, and its verdict."""

    quantity: Quantity
    value: float = float("nan")
    spread: float = float("nan")  # sample standard deviation over the runs (NaN for one run)
    runs: int = 0
    reference: float = float("nan")  # what the rule compared with (times included)
    verdict: str = ""  # agrees | differs | "" (no rule)
    note: str = ""


@dataclass
class Outcome:
    """What running a claim gave: the rows, the overall verdict and the files written."""

    claim: Claim
    mode: str
    verdict: str
    why: str = ""
    rows: list[Row] = field(default_factory=list)
    figure: Path | None = None
    runs: list[Path] = field(default_factory=list)
    cap: Cap | None = None

    @property
    def runs_name(self) -> str:
        """The folder of its runs in ``OUT/NAME/``."""
        return runs_folder_name(self.mode, self.cap)

    @property
    def mode_text(self) -> str:
        """``full mode``, or ``full mode, capped at 400 of the declared 8000 rounds``."""
        return f"{self.mode} mode" + ("" if self.cap is None else f", capped at {self.cap.text}")


@dataclass(frozen=True)
class Cap:
    """Runs shortened by ``--max-rounds``: ``rounds`` run of the ``declared`` ones."""

    rounds: int
    declared: int

    @property
    def text(self) -> str:
        return f"{self.rounds} of the declared {self.declared} rounds"


def capped_sweep(claim: Claim, mode: str, max_rounds: int | None) -> tuple[Sweep | None, Cap | None]:
    """The claim's runs of ``mode``, those declared longer than ``max_rounds`` stopped there, and the cap
    (None when no run is shortened)."""
    declared = claim.declared_rounds(mode)
    if max_rounds is None or declared is None or declared <= max_rounds:
        return claim.sweep(mode), None
    return claim.sweep(mode, max_rounds), Cap(max_rounds, declared)


def runs_folder_name(mode: str, cap: Cap | None) -> str:
    """``quick``, ``full``, or ``full-400-rounds`` for capped runs (kept apart from the whole ones)."""
    return mode if cap is None else f"{mode}-{cap.rounds}-rounds"


def missing_data(sweep: Sweep) -> str:
    """One line naming a dataset the runs need that is not in the cache, with its fetch command ("" if none)."""
    for point in sweep.points:
        spec = point.config.problem["dataset"]
        scheme, _, rest = spec.partition(":")
        name = MNIST.name if spec == MNIST.name else rest if scheme in ("libsvm", "svmlight") else ""
        if name in (MNIST.name, *LIBSVM_NAMES):
            try:
                cached_path(name)
            except FileNotFoundError as exc:
                return str(exc)
        elif scheme in ("mnist", "npz", "svmlight", "libsvm") and not Path(rest).exists():
            return f"dataset {spec!r}: {rest} does not exist"
    return ""


def _outdated(point: Point, path: Path) -> bool:
    """True if ``path`` holds a run of another config than ``point``'s (the declaration changed): a key the
    claim sets, or any key both configs have, differs. A key the stored config lacks and the claim does not
    set is a key added to mpicomp after the run, at its default: not a change of the claim."""
    try:
        stored = flat_config(read_results(path).config)
    except (OSError, KeyError, ValueError):
        return False  # the sweep reruns unreadable files itself
    declared = flat_config(json.loads(config_json(point.config.as_dict())))
    return any(
        stored.get(key, _ABSENT) != value for key, value in declared.items() if key in stored or key in point.overrides
    )


def drop_outdated(sweep: Sweep, folder: Path, echo: Callable[[str], None]) -> None:
    """Remove the results (and checkpoints) of points whose declaration changed since they ran."""
    for point in sweep.points:
        path = folder / point.file
        if path.exists() and _outdated(point, path):
            echo(f"{path}: ran with another config than the claim now declares: removed, runs again")
            for stale in (path, Path(f"{path}.ckpt"), Path(f"{path}.ckpt.prev")):
                stale.unlink(missing_ok=True)


def judge(rule: Rule, value: float, paper: Any, values: dict[str, float]) -> tuple[str, float]:
    """The verdict of ``value`` under ``rule`` and the reference it was compared with."""
    base = values[rule.than] if isinstance(rule.than, str) else paper if rule.than is None else rule.than
    reference = rule.times * float(base)
    if not (math.isfinite(value) and math.isfinite(reference)):
        return DIFFERS, reference
    ok = {
        "<": value < reference,
        "<=": value <= reference,
        ">": value > reference,
        ">=": value >= reference,
        "~": abs(value - reference) <= rule.abs + rule.rel * abs(reference),
    }[rule.op]
    return (AGREES if ok else DIFFERS), reference


def measure(
    claim: Claim, mode: str, sweep: Sweep | None, runs: dict[int, Results], computed: dict[str, float] | None = None
) -> list[Row]:
    """Every quantity of the claim, in order (a derived one sees the values before it). ``computed`` caches the
    values of computed measures (no runs) by measure and arguments: filled here, reused when given again."""
    computed = {} if computed is None else computed
    values: dict[str, float] = {}
    rows = []
    for quantity in claim.quantities:
        row = Row(quantity)
        measure_ = MEASURES[quantity.measure]
        arguments = quantity.arguments_for(mode)
        if measure_.per_run:
            assert sweep is not None, "a per-run measure belongs to a claim with runs (checked at load)"
            points = select(sweep, quantity.runs)
            found = [runs[p.index] for p in points if p.index in runs]
            per_run = [measure_.function(results, **arguments) for results in found]
            row.runs = len(found)
            if len(found) < len(points):
                row.note = f"{len(points) - len(found)} of {len(points)} runs missing"
            if per_run:
                row.value = float(np.mean(per_run))
                row.spread = float(np.std(per_run, ddof=1)) if len(per_run) > 1 else float("nan")
        elif measure_.derived:
            row.value = measure_.function(values, **arguments)
        else:
            key = json.dumps([quantity.measure, arguments], sort_keys=True)
            if key not in computed:
                computed[key] = measure_.function(**arguments)
            row.value = computed[key]
        values[quantity.id] = row.value
        if quantity.rule is not None and mode in quantity.rule.modes:
            row.verdict, row.reference = judge(quantity.rule, row.value, quantity.paper, values)
            if not math.isfinite(row.value) and not row.note:
                row.note = "not measured (a target not reached, or no finite value)"
        rows.append(row)
    return rows


def _load_runs(sweep: Sweep, folder: Path) -> dict[int, Results]:
    runs = {}
    for point in sweep.points:
        status, _ = point_status(folder / point.file)
        if status in DONE_STATUSES:
            runs[point.index] = read_results(folder / point.file)
    return runs


def draw(claim: Claim, sweep: Sweep, runs: dict[int, Results], path: Path) -> Path | None:
    """The claim's figure through :func:`mpicomp.results.plot.figure` (None without matplotlib or runs)."""
    from ..results.plot import figure, save

    assert claim.plot is not None, "a claim with runs has a plot (defaults at load)"
    keys = claim.plot.get("label") or sweep.varying
    curves = []
    for point in sweep.points:
        if point.index in runs:
            label = ", ".join(
                f"{key.partition('.')[2]}={point.overrides.get(key)}" for key in keys if key in point.overrides
            )
            curves.append((label or point.name, runs[point.index]))
    if not curves:
        return None
    try:
        fig, _ = figure(
            curves,
            claim.plot["y"],
            claim.plot["x"],
            yscale=claim.plot["yscale"],
            xscale=claim.plot["xscale"],
            title=f"{claim.paper}, {claim.figure}: {claim.title}",
        )
    except ImportError:
        return None
    return save(fig, path)


def run_claim(
    claim: Claim,
    out: Path,
    mode: str,
    *,
    ranks: int = 1,
    echo: Callable[[str], None] = print,
    max_rounds: int | None = None,
) -> Outcome:
    """Run (or finish) the claim's runs of ``mode`` in ``out/NAME/MODE/``, measure and judge them,
    draw the figure and write ``report.md`` and ``outcome.json`` in ``out/NAME/``. With ``max_rounds``,
    runs declared longer stop there, in ``out/NAME/MODE-N-rounds/``, and the report says so."""
    from .report import write_outcome

    folder = out / claim.name
    sweep, cap = capped_sweep(claim, mode, max_rounds)
    outcome = Outcome(claim, mode, verdict=INCOMPLETE, cap=cap)
    if sweep is not None:
        runs_folder = folder / outcome.runs_name
        missing = missing_data(sweep)
        if missing:
            outcome.verdict, outcome.why = NOT_RUN, missing
            write_outcome(outcome, folder)
            return outcome
        drop_outdated(sweep, runs_folder, echo)
        code = run_points(sweep, runs_folder, ranks=ranks, echo=echo)
        if code == EXIT_INTERRUPTED:
            raise Interrupted(claim.name)
        runs = _load_runs(sweep, runs_folder)
        outcome.runs = [runs_folder / p.file for p in sweep.points if p.index in runs]
        if len(runs) < len(sweep.points):
            outcome.why = f"{len(sweep.points) - len(runs)} of {len(sweep.points)} runs did not finish; logs in {runs_folder / 'logs'}"
    else:
        runs = {}
    cache = folder / outcome.runs_name / COMPUTED
    computed = json.loads(cache.read_text(encoding="utf-8")) if cache.is_file() else {}
    outcome.rows = measure(claim, mode, sweep, runs, computed)
    if computed:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(computed, indent=1) + "\n", encoding="utf-8")
    if sweep is not None:
        outcome.figure = draw(claim, sweep, runs, folder / FIGURE)
    judged = [row.verdict for row in outcome.rows if row.verdict]
    if not outcome.why:
        outcome.verdict = AGREES if all(v == AGREES for v in judged) else DIFFERS
    write_outcome(outcome, folder)
    return outcome


def run_claims(
    claims: Sequence[Claim],
    out: Path,
    mode: str,
    *,
    ranks: int = 1,
    echo: Callable[[str], None] = print,
    max_rounds: int | None = None,
) -> list[Outcome]:
    """Every claim in turn (:func:`run_claim`); a claim whose data is missing is reported and the others go on."""
    outcomes = []
    for claim in claims:
        cap = capped_sweep(claim, mode, max_rounds)[1]
        echo(f"claim {claim.name} ({mode}{'' if cap is None else ', ' + cap.text}): {claim.paper}, {claim.figure}")
        outcome = run_claim(claim, out, mode, ranks=ranks, echo=echo, max_rounds=max_rounds)
        echo(
            f"claim {claim.name}: {outcome.verdict}{': ' + outcome.why if outcome.why else ''} ({out / claim.name / REPORT})"
        )
        outcomes.append(outcome)
    return outcomes
