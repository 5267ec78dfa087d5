"""Sweep files: a base config, fixed overrides, a grid of dotted keys times seeds, and explicit points.

A sweep file is TOML::

    base = "quickstart.toml"             # a run config, relative to the sweep file (optional)
    seeds = [0, 1, 2]                    # or a count: seeds = 3 means 0, 1, 2 (optional)
    [set]                                # overrides of every point
    "run.rounds" = 100
    [grid]                               # axes: the points are their product (file order), times seeds
    "compressor.uplink" = ["identity", "natural", "qsgd(s=16)"]
    "method.stepsize" = [0.25, 0.5]
    [[point]]                            # extra points (times seeds unless they set run.seed)
    "method.name" = "ef21"
    "compressor.uplink" = "topk(k=0.1)"

Keys are ``section.key`` (quoted, or as nested TOML tables). A point's config is exactly what
``mpicomp run BASE --set KEY=VALUE ...`` with its overrides would use (:func:`mpicomp.config.load`),
so every point is validated before anything runs. Its results file is named from the values of the
keys that differ between the points (``uplink=qsgd-s16_stepsize=0.25_seed=0.h5``).

The index ``OUT/sweep.json`` (:func:`write_index`) lists every point with its overrides, file and
status; the status always comes from the point's results file (:func:`point_status`), so the files
stay the truth and any process may rewrite the index.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config, ConfigError, load, resolve_dataset
from .results.collect import SWEEP_INDEX
from .results.reader import read_results, staleness
from .results.writer import FINAL_STATUSES, RESUMABLE, RUNNING

INDEX_VERSION = 1
SWEEP_KEYS = ("base", "seeds", "set", "grid", "point")
SEED_KEY = "run.seed"
DATASET_KEY = "problem.dataset"
# What a point's results file says about it; "done" statuses are never rerun.
PENDING, UNREADABLE, STALE, ALIVE = "pending", "unreadable", "stale", "running"
DONE_STATUSES = tuple(s for s in FINAL_STATUSES if s not in ("failed", RESUMABLE))  # finished, stopped, diverged


@dataclass(frozen=True)
class Point:
    """One run of a sweep: its position, its overrides (``section.key`` -> value) and its file name."""

    index: int
    overrides: dict[str, Any]
    name: str
    config: Config

    @property
    def file(self) -> str:
        return f"{self.name}.h5"

    def set_arguments(self) -> list[str]:
        """``--set section.key=VALUE`` arguments of ``mpicomp run`` giving this point's config."""
        return [arg for key, value in self.overrides.items() for arg in ("--set", f"{key}={toml_value(value)}")]


@dataclass(frozen=True)
class Sweep:
    """A loaded sweep file: its base config (None: defaults) and its points, in order."""

    path: Path
    base: Path | None
    points: list[Point]
    varying: list[str]  # the keys whose values differ between the points, in first-seen order


def toml_value(value: Any) -> str:
    """``value`` in TOML syntax (what ``--set`` parses back to the same value)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise ConfigError(f"{value!r} is not a config value (use a string, number, boolean or list)")


def _flatten(table: Mapping[str, Any], where: str, prefix: str = "") -> dict[str, Any]:
    """``{"run": {"seed": 1}}`` and ``{"run.seed": 1}`` alike -> ``{"run.seed": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, where, f"{dotted}."))
            continue
        section, dot, name = dotted.partition(".")
        if not dot or not section or not name or "." in name:
            raise ConfigError(f'{where}: key {dotted!r} is not section.key (e.g. "run.rounds")')
        flat[dotted] = value
    return flat


def _seeds(value: Any, where: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        if len(set(value)) != len(value):
            raise ConfigError(f"{where}: seeds {value!r} repeat a seed")
        return value
    raise ConfigError(f"{where}: seeds must be a count >= 1 or a non-empty list of integers, got {value!r}")


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"sweep file {str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"sweep file {str(path)!r} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def point_overrides(raw: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    """The overrides of every point of a parsed sweep file, in order: grid product x seeds, then
    each ``[[point]]`` x seeds; ``[set]`` first in each (a point's own values win)."""
    unknown = sorted(set(raw) - set(SWEEP_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; a sweep file has {', '.join(SWEEP_KEYS)}")
    fixed = _flatten(raw.get("set", {}), f"{where} [set]")
    grid = _flatten(raw.get("grid", {}), f"{where} [grid]")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where} [grid] {key}: expected a non-empty list of values, got {values!r}")
    extra = raw.get("point", [])
    if not isinstance(extra, list) or not all(isinstance(p, Mapping) for p in extra):
        raise ConfigError(f"{where}: point must be [[point]] tables")
    seeds = _seeds(raw["seeds"], where) if "seeds" in raw else None
    if seeds is not None and (SEED_KEY in grid or SEED_KEY in fixed):
        raise ConfigError(f"{where}: give the seeds either as seeds = ... or as {SEED_KEY}, not both")
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())] if grid else []
    combos += [_flatten(p, f"{where} [[point]] {i + 1}") for i, p in enumerate(extra)]
    if not combos:
        combos = [{}]
    points = []
    for combo in combos:
        for seed in seeds if seeds is not None and SEED_KEY not in combo else [None]:
            points.append({**fixed, **combo, **({} if seed is None else {SEED_KEY: seed})})
    return points


def _slug(value: Any) -> str:
    """A file-name-safe form of a value: ``qsgd(s=16)`` -> ``qsgd-s16``, ``0.25`` -> ``0.25``."""
    text = value if isinstance(value, str) else json.dumps(value)
    text = text.replace("=", "")
    return re.sub(r"[^A-Za-z0-9.+]+", "-", text).strip("-") or "x"


def point_names(overrides: Sequence[Mapping[str, Any]], varying: Sequence[str]) -> list[str]:
    """``short=value`` of every varying key, joined by ``_``; the short name is the key without its
    section unless two varying keys share it."""
    shorts = [key.partition(".")[2] for key in varying]
    names = [key if shorts.count(short) > 1 else short for key, short in zip(varying, shorts, strict=True)]
    result = []
    for i, point in enumerate(overrides):
        parts = [f"{name}={_slug(point[key])}" for key, name in zip(varying, names, strict=True) if key in point]
        result.append("_".join(parts) or f"point{i}")
    return result


def load_sweep(path: str | os.PathLike) -> Sweep:
    """Read and validate a sweep file: every point's config is loaded as ``mpicomp run`` would.

    Raises :class:`ConfigError` naming the point and the key for the first bad one, or two points
    that are the same run.
    """
    path = Path(path)
    return sweep_from_table(_read(path), path)


def sweep_from_table(raw: Mapping[str, Any], path: str | os.PathLike, where: str | None = None) -> Sweep:
    """The sweep of an already parsed sweep table (a sweep file's content, or the ``[runs]`` of a
    claim in :mod:`mpicomp.reproduce`); ``path`` is the file it came from: ``base`` and relative
    dataset paths are relative to its folder. ``where`` names it in errors (default: ``path``)."""
    path = Path(path)
    where = str(path) if where is None else where
    base = raw.get("base")
    if base is not None and not isinstance(base, str):
        raise ConfigError(f"{where}: base must be a config file name, got {base!r}")
    base_path = None if base is None else (path.parent / Path(base).expanduser()).resolve()
    if base_path is not None and not base_path.is_file():
        raise ConfigError(f"{where}: base config {str(base_path)!r} not found (base is relative to the sweep file)")
    overrides = point_overrides(raw, where)
    keys = list(dict.fromkeys(key for point in overrides for key in point))
    varying = [key for key in keys if len({repr(point.get(key)) for point in overrides}) > 1]
    names = point_names(overrides, varying)  # from the values as written (dataset paths unresolved)
    for point in overrides:
        if isinstance(point.get(DATASET_KEY), str):
            point[DATASET_KEY] = resolve_dataset(point[DATASET_KEY], path.parent.resolve())
    points: list[Point] = []
    seen: dict[str, int] = {}
    for i, (values, name) in enumerate(zip(overrides, names, strict=True)):
        shown = ", ".join(f"{key}={values[key]!r}" for key in varying if key in values)
        label = f"point {i}" + (f" ({shown})" if shown else "")
        try:
            config = load(base_path, [f"{key}={toml_value(value)}" for key, value in values.items()])
        except ConfigError as exc:
            raise ConfigError(f"{where}: {label}: {str(exc).removeprefix('--set ')}") from None
        if name in seen:
            other = points[seen[name]]
            why = "is the same run as" if other.config == config else "would write the same file as"
            raise ConfigError(f"{where}: {label} {why} point {other.index} ({name}.h5)")
        seen[name] = i
        points.append(Point(i, values, name, config))
    return Sweep(path.resolve(), base_path, points, varying)


def point_status(path: Path) -> tuple[str, str]:
    """What the results file at ``path`` says: ``(status, why)``. Status is ``pending`` (no file),
    a final status, ``running`` (its writer looks alive), ``stale`` (a running file whose writer
    is gone) or ``unreadable`` (killed before the file was complete, or not a results file)."""
    if not path.exists():
        return PENDING, ""
    try:
        results = read_results(path)
    except (OSError, KeyError, ValueError) as exc:
        return UNREADABLE, str(exc)
    if results.status == RUNNING:
        why = staleness(results)
        return (STALE, why) if why else (ALIVE, f"pid {results.attrs.get('pid')} on {results.attrs.get('hostname')}")
    return results.status, results.status_message


def index_entries(sweep: Sweep, out: Path) -> list[dict[str, Any]]:
    """One entry per point: index, name, file (relative to ``out``), overrides, status, message."""
    entries = []
    for point in sweep.points:
        status, why = point_status(out / point.file)
        entries.append(
            {
                "index": point.index,
                "name": point.name,
                "file": point.file,
                "overrides": point.overrides,
                "status": status,
                "message": why,
            }
        )
    return entries


def write_index(sweep: Sweep, out: Path, ranks: int) -> list[dict[str, Any]]:
    """Write ``out/sweep.json`` (atomically: a temporary file renamed over it); returns its points."""
    entries = index_entries(sweep, out)
    index = {
        "format": INDEX_VERSION,
        "sweep": str(sweep.path),
        "base": None if sweep.base is None else str(sweep.base),
        "ranks": ranks,
        "varying": sweep.varying,
        "points": entries,
    }
    out.mkdir(parents=True, exist_ok=True)
    temporary = out / f".{SWEEP_INDEX}.{socket.gethostname()}.{os.getpid()}.tmp"  # array tasks share out
    try:
        temporary.write_text(json.dumps(index, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(temporary, out / SWEEP_INDEX)
    finally:
        temporary.unlink(missing_ok=True)
    return entries


def describe(sweep: Sweep, out: Path, only: Sequence[int] | None = None) -> str:
    """The dry-run listing: one line per point (index, status, file, overrides that vary), then a count."""
    entries = index_entries(sweep, out)
    chosen = [entries[i] for i in only] if only is not None else entries
    width = max(len(e["file"]) for e in chosen)
    lines = []
    for entry in chosen:
        shown = " ".join(f"{key}={toml_value(entry['overrides'][key])}" for key in sweep.varying)
        lines.append(f"{entry['index']:4d}  {entry['status']:10s}  {entry['file']:<{width}}  {shown}".rstrip())
    to_run = sum(e["status"] not in DONE_STATUSES and e["status"] != ALIVE for e in chosen)
    lines.append(f"{len(chosen)} point(s), {to_run} to run, results in {out}")
    return "\n".join(lines)
