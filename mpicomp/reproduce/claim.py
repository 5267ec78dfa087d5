"""Claim declarations: one TOML file per claim in ``mpicomp/reproduce/claims/`` (the format is in
``docs/reproductions.md``), loaded and checked into :class:`Claim`.

A claim holds its runs as a sweep table (:mod:`mpicomp.sweep`), the overrides of its quick and full
modes, the quantities that decide it (a named measure of :mod:`mpicomp.reproduce.measures` over
selected runs, the paper's value and where it stands, the rule of the verdict), the figure to draw
and the explanation of the known differences. Every error names the file and the key.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..results.table import flat_config
from ..sweep import Point, Sweep, point_overrides, sweep_from_table
from .measures import MEASURES, check_arguments

MODES = ("quick", "full")
CLAIM_KEYS = ("paper", "title", "figure", "compares", "runs", "quick", "full", "quantity", "plot", "differences")
REQUIRED = ("paper", "title", "figure", "compares", "quantity", "differences")
QUANTITY_KEYS = ("id", "label", "measure", "runs", "paper", "source", "rule", "quick", "full")
RULE_KEYS = ("op", "than", "times", "rel", "abs", "modes")
OPERATORS = ("<", "<=", ">", ">=", "~")
PLOT_KEYS = ("y", "x", "yscale", "xscale", "label")
PLOT_DEFAULTS: dict[str, Any] = {"y": ["suboptimality"], "x": ["rounds", "bits"], "yscale": "auto", "xscale": "linear"}


class ClaimError(ConfigError):
    """A claim declaration that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Rule:
    """The verdict of a quantity: ``ours OP times * reference``, the reference being ``than`` (a
    number or the id of an earlier quantity) or, when ``than`` is absent, the paper's number. ``~``
    agrees when ``|ours - reference| <= abs + rel * |reference|``. ``modes``: the modes whose runs can
    decide it (a statement only the paper's length can check is judged in ``full`` mode only)."""

    op: str
    than: float | str | None = None
    times: float = 1.0
    rel: float = 0.0
    abs: float = 0.0
    modes: tuple[str, ...] = MODES

    def describe(self) -> str:
        """The rule as text: ``≤ 0.5 × ef21_floor``, ``~ paper ± 10%``."""
        reference = "paper" if self.than is None else f"{self.than:g}" if isinstance(self.than, float) else self.than
        scaled = reference if self.times == 1.0 else f"{self.times:g} × {reference}"
        if self.op != "~":
            return f"{ {'<=': '≤', '>=': '≥'}.get(self.op, self.op) } {scaled}"
        tolerance = [f"{self.rel:.0%}" if self.rel else "", f"{self.abs:g}" if self.abs else ""]
        return f"~ {scaled} ± {' + '.join(t for t in tolerance if t) or '0'}"


@dataclass(frozen=True)
class Quantity:
    """One row of the claim's table: ``measure`` applied to the runs whose config matches ``runs``
    (mean over them; no runs for a measure computed from its arguments, or a ratio of two quantities)."""

    id: str
    label: str
    measure: str
    arguments: dict[str, Any]
    runs: dict[str, Any]
    paper: float | str | None
    source: str
    rule: Rule | None
    modes: dict[str, dict[str, Any]] = field(default_factory=dict)  # arguments per mode (quick, full)

    def arguments_for(self, mode: str) -> dict[str, Any]:
        return {**self.arguments, **self.modes.get(mode, {})}


@dataclass(frozen=True)
class Claim:
    """A loaded declaration (see the module docstring)."""

    name: str
    path: Path
    paper: str
    title: str
    figure: str
    compares: str
    runs: dict[str, Any] | None
    modes: dict[str, dict[str, Any]]
    quantities: list[Quantity]
    plot: dict[str, Any] | None
    differences: str

    def sweep(self, mode: str, max_rounds: int | None = None) -> Sweep | None:
        """The claim's runs in ``mode`` (``quick`` or ``full``) as a sweep, each stopped after at most
        ``max_rounds`` rounds when given; None if it has no runs."""
        if self.runs is None:
            return None
        table = sweep_table(self.runs, self.modes.get(mode, {}))
        where = f"{self.path} [{mode}]"
        if max_rounds is not None:
            table["set"] = {**_dotted(table.get("set", {})), "run.rounds": max_rounds}
            where += f" with --max-rounds {max_rounds}"
        try:
            return sweep_from_table(table, self.path, where)
        except ConfigError as exc:
            raise ClaimError(str(exc)) from None

    def declared_rounds(self, mode: str) -> int | None:
        """``run.rounds`` as the declaration sets it for ``mode`` (None: not set, the config's default)."""
        if self.runs is None:
            return None
        rounds = _dotted(sweep_table(self.runs, self.modes.get(mode, {})).get("set", {})).get("run.rounds")
        return None if rounds is None else int(rounds)

    def line(self) -> str:
        """The ``--list`` line: name, paper and figure, what is compared."""
        return f"{self.name:<22s} {self.paper}, {self.figure}: {self.compares}"


def sweep_table(runs: Mapping[str, Any], mode: Mapping[str, Any]) -> dict[str, Any]:
    """``[runs]`` with a mode's table applied: its ``set`` entries added to (and winning over)
    ``[runs.set]``, its ``grid`` axes, ``seeds`` and ``point`` replacing those of ``[runs]``."""
    table = dict(runs)
    for key, value in mode.items():
        table[key] = {**_dotted(runs.get("set", {})), **_dotted(value)} if key == "set" else value
    return table


def select(sweep: Sweep, runs: Mapping[str, Any]) -> list[Point]:
    """The points whose config has every ``section.key = value`` of ``runs`` (a quantity's selector)."""
    points = []
    for point in sweep.points:
        flat = flat_config(point.config.as_dict())
        if all(flat.get(key) == value for key, value in runs.items()):
            points.append(point)
    return points


def _dotted(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _text(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = raw[key]
    if not isinstance(value, str) or not value.strip():
        raise ClaimError(f"{where}: {key} must be a non-empty string, got {value!r}")
    return value.strip()


def _unknown(raw: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    extra = sorted(set(raw) - set(allowed))
    if extra:
        raise ClaimError(f"{where}: unknown key {extra[0]!r}; allowed: {', '.join(allowed)}")


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ClaimError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _rule(raw: Any, paper: Any, known: list[str], where: str) -> Rule:
    if not isinstance(raw, Mapping):
        raise ClaimError(f"{where}: rule must be a table {{op = ..., than = ...}}, got {raw!r}")
    _unknown(raw, RULE_KEYS, where)
    op = raw.get("op")
    if op not in OPERATORS:
        raise ClaimError(f"{where}: op {op!r} is not allowed; choose one of {', '.join(OPERATORS)}")
    than = raw.get("than")
    if isinstance(than, str):
        if than not in known:
            raise ClaimError(
                f"{where}: than = {than!r} names no earlier quantity; earlier: {', '.join(known) or 'none'}"
            )
    elif than is not None:
        than = _number(than, f"{where} than")
    elif not isinstance(paper, int | float) or isinstance(paper, bool):
        raise ClaimError(f"{where}: without than the rule compares with the paper's number, but paper is {paper!r}")
    values = {key: _number(raw[key], f"{where} {key}") for key in ("times", "rel", "abs") if key in raw}
    if any(v < 0 for k, v in values.items() if k != "times"):
        raise ClaimError(f"{where}: rel and abs must be >= 0")
    if (values.get("rel") or values.get("abs")) and op != "~":
        raise ClaimError(f"{where}: rel and abs are tolerances of op = '~', not of {op!r}")
    modes = raw.get("modes", list(MODES))
    if not isinstance(modes, list) or not modes or any(mode not in MODES for mode in modes):
        raise ClaimError(f"{where}: modes must be a non-empty list of {', '.join(map(repr, MODES))}, got {modes!r}")
    return Rule(op=op, than=than, modes=tuple(dict.fromkeys(modes)), **values)


def _quantity(raw: Any, index: int, known: list[str], has_runs: bool, where: str) -> Quantity:
    where = f"{where} [[quantity]] {index + 1}"
    if not isinstance(raw, Mapping):
        raise ClaimError(f"{where}: expected a table")
    for key in ("id", "label", "measure", "source"):
        if key not in raw:
            raise ClaimError(f"{where}: missing {key}")
    qid = _text(raw, "id", where)
    where = f"{where} ({qid})"
    if qid in known:
        raise ClaimError(f"{where}: id {qid!r} is used twice")
    name = raw["measure"]
    if name not in MEASURES:
        raise ClaimError(f"{where}: unknown measure {name!r}; known: {', '.join(MEASURES)}")
    measure = MEASURES[name]
    arguments = {key: value for key, value in raw.items() if key not in QUANTITY_KEYS}
    modes = {}
    for mode in MODES:
        table = raw.get(mode, {})
        if not isinstance(table, Mapping):
            raise ClaimError(f"{where}: {mode} must be a table of measure arguments")
        modes[mode] = dict(table)
        check_arguments(measure, {**arguments, **table}, f"{where} ({mode})", ClaimError)
    for ref in (arguments[key] for key in measure.references if key in arguments):
        if ref not in known:
            raise ClaimError(f"{where}: {ref!r} names no earlier quantity; earlier: {', '.join(known) or 'none'}")
    runs = raw.get("runs", {})
    if not isinstance(runs, Mapping):
        raise ClaimError(f"{where}: runs must be a table of section.key = value selecting runs")
    runs = _dotted(runs)
    if measure.per_run and not has_runs:
        raise ClaimError(f"{where}: measure {name!r} measures runs, but the claim declares no [runs]")
    if not measure.per_run and runs:
        raise ClaimError(f"{where}: measure {name!r} takes no runs; remove runs")
    paper = raw.get("paper")
    if paper is not None and (isinstance(paper, bool) or not isinstance(paper, int | float | str)):
        raise ClaimError(f"{where}: paper must be a number or a text, got {paper!r}")
    rule = _rule(raw["rule"], paper, known, f"{where} rule") if "rule" in raw else None
    return Quantity(
        id=qid,
        label=_text(raw, "label", where),
        measure=name,
        arguments=arguments,
        runs=runs,
        paper=float(paper) if isinstance(paper, int | float) else paper,
        source=_text(raw, "source", where),
        rule=rule,
        modes=modes,
    )


def _plot(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ClaimError(f"{where} [plot]: expected a table")
    _unknown(raw, PLOT_KEYS, f"{where} [plot]")
    plot = {**PLOT_DEFAULTS, **raw}
    for key in ("y", "x"):
        if isinstance(plot[key], str):
            plot[key] = [plot[key]]
        if not isinstance(plot[key], list) or not plot[key] or not all(isinstance(v, str) for v in plot[key]):
            raise ClaimError(f"{where} [plot] {key}: expected a metric name or a list of them")
    if "label" in plot and (not isinstance(plot["label"], list) or not all(isinstance(k, str) for k in plot["label"])):
        raise ClaimError(f"{where} [plot] label: expected a list of section.key names")
    return plot


def parse_claim(raw: Mapping[str, Any], path: Path) -> Claim:
    """Check a parsed declaration (see ``docs/reproductions.md``); every point of both modes is
    validated as ``mpicomp run`` would (:func:`mpicomp.config.load`)."""
    where = str(path)
    _unknown(raw, CLAIM_KEYS, where)
    for key in REQUIRED:
        if key not in raw:
            raise ClaimError(f"{where}: missing {key}")
    runs = raw.get("runs")
    if runs is not None and not isinstance(runs, Mapping):
        raise ClaimError(f"{where}: runs must be a sweep table ([runs], [runs.set], [runs.grid], ...)")
    modes = {}
    for mode in MODES:
        table = raw.get(mode, {})
        if not isinstance(table, Mapping):
            raise ClaimError(f"{where}: {mode} must be a table")
        if runs is None and table:
            raise ClaimError(f"{where}: [{mode}] changes runs, but the claim declares no [runs]")
        modes[mode] = dict(table)
        if runs is not None:
            try:
                point_overrides(sweep_table(runs, table), f"{where} [{mode}]")  # the table's own errors
            except ConfigError as exc:
                raise ClaimError(str(exc)) from None
    quantities: list[Quantity] = []
    entries = raw["quantity"]
    if not isinstance(entries, list) or not entries:
        raise ClaimError(f"{where}: quantity must be one or more [[quantity]] tables")
    for index, entry in enumerate(entries):
        quantities.append(_quantity(entry, index, [q.id for q in quantities], runs is not None, where))
    for mode in MODES:
        if not any(q.rule is not None and mode in q.rule.modes for q in quantities):
            raise ClaimError(f"{where}: no quantity has a rule judged in {mode} mode, so that mode has no verdict")
    if not all(isinstance(q.paper, float) or isinstance(q.paper, str) for q in quantities if q.rule is not None):
        raise ClaimError(f"{where}: every quantity with a rule needs the paper's value (paper = number or text)")
    claim = Claim(
        name=path.stem,
        path=path,
        paper=_text(raw, "paper", where),
        title=_text(raw, "title", where),
        figure=_text(raw, "figure", where),
        compares=_text(raw, "compares", where),
        runs=dict(runs) if runs is not None else None,
        modes=modes,
        quantities=quantities,
        plot=_plot(raw["plot"], where) if "plot" in raw else (dict(PLOT_DEFAULTS) if runs is not None else None),
        differences=_text(raw, "differences", where),
    )
    for mode in MODES:
        sweep = claim.sweep(mode)
        for quantity in quantities:
            if MEASURES[quantity.measure].per_run and sweep is not None and not select(sweep, quantity.runs):
                shown = ", ".join(f"{key} = {value!r}" for key, value in quantity.runs.items())
                raise ClaimError(f"{where} [[quantity]] {quantity.id}: runs {{{shown}}} selects no run in {mode} mode")
    return claim


def load_claim(path: str | Path) -> Claim:
    """Read and check one declaration file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClaimError(f"claim file {str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ClaimError(f"claim file {str(path)!r} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ClaimError(f"{path}: not valid TOML: {exc}") from None
    return parse_claim(raw, path)


def claims_folder() -> Path:
    """The folder of the declarations shipped with the package."""
    return Path(str(resources.files("mpicomp.reproduce") / "claims"))


def claim_files() -> list[Path]:
    """The shipped declaration files, sorted by name."""
    return sorted(claims_folder().glob("*.toml"))


def load_claims(names: list[str] | None = None) -> list[Claim]:
    """The shipped claims (only ``names``, in that order, if given); an unknown name is a ClaimError."""
    files = {path.stem: path for path in claim_files()}
    if names:
        unknown = [name for name in names if name not in files]
        if unknown:
            raise ClaimError(f"no claim {unknown[0]!r}; known: {', '.join(files)} (mpicomp reproduce --list)")
        return [load_claim(files[name]) for name in names]
    return [load_claim(path) for path in files.values()]
