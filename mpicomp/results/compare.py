"""Comparing runs: one row per run, or per group of runs that differ only in their seed.

A row holds the config keys that differ between the runs, the status, the last logged round, the
final metrics, the communication totals and, per target (``loss=0.3``), whether and when the run
first reached it: the round, the bits sent (up + down), the modelled and the wall time at the first
logged row that meets it. Runs that cannot give a value (killed, another method or format, a
sampler) get ``None`` there and a note saying why, never an exception.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .collect import check_metrics
from .reader import Results
from .table import differing_keys, flat_config, write_csv

FINAL_METRICS = ("loss", "suboptimality", "grad_norm_sq", "test_accuracy")
TOTALS = ("bits_up", "bits_down", "uploads", "modelled_time", "wall_time")
# The columns `mpicomp run` logs for every optimizer (docs/results-format.md); any other column is a
# sampler's (its posterior errors) or was declared by the run's method, and is shown as a final value too.
STANDARD_COLUMNS = frozenset(
    {
        "round",
        "loss",
        "grad_norm_sq",
        "suboptimality",
        "dist_to_opt",
        "test_accuracy",
        "bits_up",
        "bits_down",
        "up_payload_bytes",
        "up_header_bytes",
        "up_control_bytes",
        "down_payload_bytes",
        "down_header_bytes",
        "down_control_bytes",
        "uploads",
        "skips",
        "wall_time",
        "codec_time",
        "comm_time",
        "modelled_time",
        "switch_overflow_packets",
        "switch_fallback_bytes",
    }
)
# In-network aggregation's columns (two every run logs, one gd/sgd/quantized-sgd declare): shown when
# a compared run sums in the switch, left out otherwise (they are 0 and NaN there).
SWITCH_COLUMNS = ("switch_overflow_packets", "switch_fallback_bytes", "switch_aggregate_error")
OPTIMIZER_ONLY = ("suboptimality", "dist_to_opt")
INCREASING = frozenset({"test_accuracy"})  # a target on these is reached from below
ALIASES = {"accuracy": "test_accuracy"}
NAN_REASONS = {
    "suboptimality": "no reference optimum",
    "dist_to_opt": "no reference optimum",
    "test_accuracy": "no test split",
}
SEED_KEY = "run.seed"
TARGET_QUANTITIES = ("rounds", "bits", "modelled_time", "wall_time")
REACHED, NOT_REACHED, NOT_APPLICABLE = "reached", "not reached", "n/a"
_TARGET = re.compile(r"^\s*([A-Za-z_]\w*)\s*(<=|>=|=)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Target:
    """Reach ``metric <= value`` (``metric >= value`` if ``above``)."""

    metric: str
    value: float
    above: bool

    @classmethod
    def parse(cls, text: str) -> Target:
        """``loss=0.3``, ``accuracy=0.9`` (``=`` means ``>=`` for accuracy, ``<=`` otherwise) or an
        explicit ``loss<=0.3`` / ``test_accuracy>=0.9``."""
        match = _TARGET.match(text)
        if not match:
            raise ValueError(f"target {text!r}: expected METRIC=VALUE (or METRIC<=VALUE, METRIC>=VALUE), e.g. loss=0.3")
        name, op, number = match.groups()
        try:
            value = float(number)
        except ValueError:
            raise ValueError(f"target {text!r}: {number!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"target {text!r}: the value must be finite")
        metric = ALIASES.get(name, name)
        return cls(metric, value, metric in INCREASING if op == "=" else op == ">=")

    @property
    def label(self) -> str:
        """``loss<=0.3``: the column name of the target, with its direction."""
        return f"{self.metric}{'>=' if self.above else '<='}{self.value:g}"

    def first_row(self, values: np.ndarray) -> int | None:
        """Index of the first row that meets the target (NaN never does), None if no row does."""
        hits = np.flatnonzero(values >= self.value if self.above else values <= self.value)
        return int(hits[0]) if hits.size else None

    def columns(self) -> list[str]:
        """The target's columns: its status, then ``rounds to``, ``bits to``, ``modelled_time to``, ``wall_time to``."""
        return [self.label, *(f"{quantity} to {self.label}" for quantity in TARGET_QUANTITIES)]


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation (n - 1 in the denominator; NaN for a single value)."""

    mean: float
    std: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        """The spread of the finite values, None if there is none."""
        finite = np.array([v for v in values if math.isfinite(v)], dtype=float)
        if finite.size == 0:
            return None
        return cls(float(finite.mean()), float(finite.std(ddof=1)) if finite.size > 1 else math.nan)


@dataclass
class Comparison:
    """The rows (``{column: value}``, ``None`` where a run has no value) and the notes on the runs."""

    columns: list[str]
    rows: list[dict[str, Any]]
    notes: list[str]


def _value(array: np.ndarray, index: int) -> float | int:
    return array[index].item()


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _target_cells(results: Results, target: Target) -> tuple[dict[str, Any], str | None]:
    """The target's columns for one run, and a note if it does not apply."""
    m = results.metrics
    cells: dict[str, Any] = dict.fromkeys(target.columns())
    values = m.get(target.metric)
    cells[target.label] = NOT_APPLICABLE
    if values is None:
        return cells, f"target {target.label}: the run has no {target.metric} column"
    if not np.isfinite(values).any():
        reason = NAN_REASONS.get(target.metric, "")
        what = (
            "no row logged"
            if values.size == 0
            else f"{target.metric} is NaN in every row" + (f" ({reason})" if reason else "")
        )
        return cells, f"target {target.label}: {what}"
    hit = target.first_row(values)
    if hit is None:
        cells[target.label] = NOT_REACHED
        return cells, None
    cells[target.label] = REACHED
    at = {
        "rounds": m.get("round"),
        "bits": m["bits_up"] + m["bits_down"] if "bits_up" in m and "bits_down" in m else None,
        "modelled_time": m.get("modelled_time"),
        "wall_time": m.get("wall_time"),
    }
    for quantity, column in at.items():
        cells[f"{quantity} to {target.label}"] = None if column is None else _value(column, hit)
    return cells, None


def _run_notes(results: Results) -> list[str]:
    """Why some of a run's values are missing or are not what they seem."""
    notes = []
    if results.status == "running":
        notes.append(
            "status running: the run was killed or is still being written; values are from its last flushed row"
        )
    elif results.status != "finished":
        notes.append(f"{results.status}" + (f": {results.status_message}" if results.status_message else ""))
    if results.n_rows == 0:
        notes.append("no row logged")
    samples = results.samples
    sampler = samples is not None
    if samples is not None:
        notes.append(
            f"sampler: final values are at its last draw ({samples.shape[0]} draws in /samples); "
            "samplers have no suboptimality or distance to x*"
        )
    lacking = [
        n for n in (*FINAL_METRICS, *TOTALS) if n not in results.metrics and not (sampler and n in OPTIMIZER_ONLY)
    ]
    if lacking:
        notes.append(
            f"no {', '.join(lacking)} column(s) in this file (another method, problem or format): shown as n/a"
        )
    return notes


def _run_row(
    results: Results, flat: Mapping[str, Any], keys: Sequence[str], extra: Sequence[str], targets: Sequence[Target]
) -> tuple[dict[str, Any], list[str]]:
    """One run's row (``keys``: the config columns, ``extra``: more final metrics) and its notes."""
    m, last = results.metrics, results.n_rows - 1
    row: dict[str, Any] = {"run": str(results.path), **{key: flat.get(key) for key in keys}, "status": results.status}
    row["rounds"] = None if "round" not in m else _value(m["round"], last) if last >= 0 else 0
    for name in (*FINAL_METRICS, *TOTALS, *extra):
        row[name] = _value(m[name], last) if name in m and last >= 0 else None
    notes = _run_notes(results)
    for target in targets:
        cells, note = _target_cells(results, target)
        row.update(cells)
        if note:
            notes.append(note)
    return row, notes


def compare_runs(
    runs: Sequence[Results], targets: Sequence[Target] = (), metrics: Sequence[str] = (), group_seeds: bool = False
) -> Comparison:
    """The comparison of ``runs``: a row per run (or per seed group with ``group_seeds``), the
    extra final ``metrics`` (any column a method declared is added by itself) and the ``targets``.
    A metric or target that no run has is a ``ValueError``."""
    check_metrics(runs, [t.metric for t in targets], "target")
    check_metrics(runs, metrics, "metric")
    flats = [flat_config(r.config) for r in runs]
    keys = differing_keys(flats)
    shown = {*FINAL_METRICS, *TOTALS}
    switch = any(flat.get("compressor.aggregation") == "switch" for flat in flats)
    declared = (n for r in runs for n in r.metrics if n not in STANDARD_COLUMNS and n not in SWITCH_COLUMNS)
    switch_columns = (n for n in SWITCH_COLUMNS if switch and any(n in r.metrics for r in runs))
    extra = [n for n in dict.fromkeys([*metrics, *declared, *switch_columns]) if n not in shown]
    columns = [
        "run",
        *keys,
        "status",
        "rounds",
        *FINAL_METRICS,
        *TOTALS,
        *extra,
        *(c for t in targets for c in t.columns()),
    ]
    rows, notes = [], []
    for results, flat in zip(runs, flats, strict=True):
        row, run_notes = _run_row(results, flat, keys, extra, targets)
        rows.append(row)
        notes += [f"{results.path}: {note}" for note in run_notes]
    if group_seeds:
        return _grouped(Comparison(columns, rows, notes), flats, keys)
    return Comparison(columns, rows, notes)


def _aggregate(values: list[Any]) -> Any:
    """Numbers -> their :class:`Spread`; equal values -> the value; other values -> ``"2 finished, 1 running"``."""
    if all(_missing(v) or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values):
        return Spread.of([float(v) for v in values if not _missing(v)])
    if len({repr(v) for v in values}) == 1:
        return values[0]
    return ", ".join(f"{count} {value}" for value, count in Counter(map(str, values)).items())


def _grouped(comparison: Comparison, flats: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> Comparison:
    """One row per set of runs whose configs are equal but for ``run.seed``: ``run`` lists the files,
    ``n`` counts them, ``seeds`` lists their seeds; numbers become a :class:`Spread` over the runs."""
    groups: dict[str, list[int]] = {}
    for i, flat in enumerate(flats):
        groups.setdefault(repr(sorted((k, repr(v)) for k, v in flat.items() if k != SEED_KEY)), []).append(i)
    rest = [c for c in comparison.columns[1:] if c != SEED_KEY]
    rows = []
    for members in groups.values():
        group = [comparison.rows[i] for i in members]
        row = {
            "run": [r["run"] for r in group],
            "n": len(group),
            "seeds": ",".join(str(flats[i].get(SEED_KEY)) for i in members),
        }
        for column in rest:
            row[column] = group[0][column] if column in keys else _aggregate([r[column] for r in group])
        rows.append(row)
    return Comparison(["run", "n", "seeds", *rest], rows, comparison.notes)


def _sort_key(value: Any) -> tuple:
    value = value.mean if isinstance(value, Spread) else value
    if isinstance(value, list):
        value = value[0]
    return (0, float(value), "") if isinstance(value, int | float) else (1, 0.0, str(value))


def sort_rows(comparison: Comparison, column: str, reverse: bool = False) -> None:
    """Sort the rows by ``column`` (a Spread by its mean), rows without a value last either way."""
    if column not in comparison.columns:
        raise ValueError(f"cannot sort by {column!r}: no such column; the columns are: {', '.join(comparison.columns)}")
    present = [r for r in comparison.rows if not _missing(r[column])]
    present.sort(key=lambda r: _sort_key(r[column]), reverse=reverse)
    comparison.rows[:] = present + [r for r in comparison.rows if _missing(r[column])]


def records(comparison: Comparison) -> tuple[list[str], list[dict[str, Any]]]:
    """Flat rows for CSV and JSON: a :class:`Spread` becomes ``column`` (mean) and ``column std``;
    NaN becomes None."""
    columns = [
        name
        for c in comparison.columns
        for name in (c, f"{c} std")
        if name == c or any(isinstance(r[c], Spread) for r in comparison.rows)
    ]
    flat_rows = []
    for row in comparison.rows:
        flat: dict[str, Any] = {}
        for c in comparison.columns:
            value = row[c]
            spread = value if isinstance(value, Spread) else None
            flat[c] = spread.mean if spread else value
            if f"{c} std" in columns:
                flat[f"{c} std"] = spread.std if spread else None
        flat_rows.append({c: None if _missing(flat[c]) else flat[c] for c in columns})
    return columns, flat_rows


def to_json(comparison: Comparison) -> str:
    """``{"columns": [...], "rows": [{column: value}], "notes": [...]}``; missing values are null."""
    columns, rows = records(comparison)
    return json.dumps({"columns": columns, "rows": rows, "notes": comparison.notes}, indent=1, allow_nan=False)


def to_csv(comparison: Comparison) -> str:
    """A header line and a line per row; a seed group's files are joined by ``;``."""
    columns, rows = records(comparison)
    table = {c: [";".join(r[c]) if isinstance(r[c], list) else r[c] for r in rows] for c in columns}
    stream = io.StringIO()
    write_csv(table, stream)
    return stream.getvalue()


def _text(value: Any) -> str:
    if _missing(value):
        return "n/a"
    if isinstance(value, Spread):
        return _text(value.mean) + ("" if math.isnan(value.std) else f" ± {value.std:.2g}")
    if isinstance(value, list):
        return value[0] + (f" (+{len(value) - 1})" if len(value) > 1 else "")
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"
    return str(value)


def _header(column: str) -> tuple[str, str]:
    """A column name on two lines: ``bits to`` / ``loss<=0.3``, ``compressor.`` / ``uplink``."""
    if " to " in column:
        head, tail = column.split(" to ", 1)
        return f"{head} to", tail
    if "." in column and "<=" not in column and ">=" not in column:
        head, tail = column.split(".", 1)
        return f"{head}.", tail
    return "", column


def to_text(comparison: Comparison) -> str:
    """An aligned table (two header lines, numbers right-aligned with 4 significant digits), then
    the notes. Columns without a value in any row are left out and named below the table."""
    rows = comparison.rows
    empty = [c for c in comparison.columns if c not in ("run", "status") and all(_missing(r[c]) for r in rows)]
    columns = [c for c in comparison.columns if c not in empty]
    headers = [_header(c) for c in columns]
    cells = [[_text(r[c]) for c in columns] for r in rows]
    numeric = [all(isinstance(r[c], int | float | Spread) or _missing(r[c]) for r in rows) for c in columns]
    widths = [max(*map(len, headers[i]), *(len(line[i]) for line in cells)) for i in range(len(columns))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    lines = [line([h[0] for h in headers]), line([h[1] for h in headers]), *(line(row) for row in cells)]
    if not lines[0]:
        del lines[0]
    if empty:
        lines.append(f"(no value in any run: {', '.join(empty)})")
    if comparison.notes:
        lines += ["notes:", *(f"  {note}" for note in comparison.notes)]
    return "\n".join(lines)
