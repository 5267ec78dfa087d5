"""Turning ``RUNS...`` arguments (of ``mpicomp info``, ``compare``, ``plot``, ``export``, and of
``tidy_table`` / ``to_dataframe``) into results files and loaded results.

An argument is a results file, a directory (every ``*.h5`` below it, recursively) or a glob
pattern (``'sweep/*/run_*.h5'``, ``**`` allowed), quoted so that the shell leaves it alone.
A directory holding a sweep index (``sweep.json``, written by ``mpicomp sweep``) stands for the
points the index lists, in its order: one file per point, other ``.h5`` files there are left out.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .reader import Results, read_results

RESULTS_SUFFIX = ".h5"
SWEEP_INDEX = "sweep.json"


class RunsError(ValueError):
    """A ``RUNS`` argument names nothing, or nothing readable was found: bad input."""


def read_index(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The sweep index of ``folder`` (None if it has none); :class:`RunsError` if it is not one."""
    path = Path(folder) / SWEEP_INDEX
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunsError(f"{path}: not a readable sweep index ({exc})") from None
    if not isinstance(index, dict) or not isinstance(index.get("points"), list):
        raise RunsError(f"{path}: not a sweep index (no list of points)")
    return index


def sweep_files(folder: Path, index: dict[str, Any]) -> tuple[list[Path], list[str]]:
    """The results files of a sweep's points that exist, and a note for points without one and for
    ``.h5`` files in ``folder`` that are no point of the sweep."""
    listed = [folder / point["file"] for point in index["points"]]
    found = [path for path in listed if path.is_file()]
    notes = []
    if len(found) < len(listed):
        notes.append(f"{folder}: {len(listed) - len(found)} of {len(listed)} sweep points have no results file yet")
    others = sorted(set(folder.glob(f"*{RESULTS_SUFFIX}")) - set(listed))
    if others:
        notes.append(f"{folder}: left out {len(others)} .h5 file(s) that are no point of its {SWEEP_INDEX}")
    return found, notes


def _expand(pattern: str, notes: list[str] | None = None) -> list[Path]:
    path = Path(pattern)
    index = read_index(path) if path.is_dir() else None
    if index is not None:
        found, why = sweep_files(path, index)
        if notes is not None:
            notes += why
        if not found:
            raise RunsError(f"{pattern}: no point of its {SWEEP_INDEX} has a results file yet")
        return found
    if path.is_dir():
        found = sorted(p for p in path.rglob(f"*{RESULTS_SUFFIX}") if p.is_file())
        if not found:
            raise RunsError(f"{pattern}: no {RESULTS_SUFFIX} files in this directory")
        return found
    if path.is_file():
        return [path]
    if glob.has_magic(pattern):
        matches = [Path(p) for p in sorted(glob.glob(pattern, recursive=True))]
        found = [p for m in matches for p in (_expand(str(m), notes) if m.is_dir() else [m])]
        if not found:
            raise RunsError(f"{pattern}: the pattern matches no file")
        return found
    raise RunsError(f"{pattern}: no such file or directory")


def _as_list(patterns: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """One argument or several, as a list of strings."""
    if isinstance(patterns, str | os.PathLike):
        return [os.fspath(patterns)]
    return [os.fspath(pattern) for pattern in patterns]


def find_results(
    patterns: str | os.PathLike | Sequence[str | os.PathLike], notes: list[str] | None = None
) -> list[Path]:
    """The files the arguments name, in argument order (directories and globs sorted, sweeps in
    index order), each once; notes about sweep points without a file are appended to ``notes``."""
    seen: set[Path] = set()
    paths = []
    for pattern in _as_list(patterns):
        for path in _expand(pattern, notes):
            if path.resolve() not in seen:
                seen.add(path.resolve())
                paths.append(path)
    return paths


def load_runs(patterns: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[list[Results], list[str]]:
    """Read every file the arguments name. Files that are not readable mpicomp results are skipped
    with a note; :class:`RunsError` if an argument names nothing or no file could be read."""
    runs: list[Results] = []
    notes: list[str] = []
    for path in find_results(patterns, notes):
        try:
            runs.append(read_results(path))
        except (OSError, KeyError, ValueError) as exc:
            notes.append(f"skipped {path}: {exc}")
    if not runs:
        raise RunsError(
            "no readable results file among "
            + ", ".join(_as_list(patterns))
            + ("; " + "; ".join(notes) if notes else "")
        )
    return runs, notes


def check_metrics(runs: Sequence[Results], names: Sequence[str], what: str) -> None:
    """A ``ValueError`` naming ``what`` (``--y``, ``target``) for any name that no run has as a metric
    column, listing the metrics there are."""
    known = dict.fromkeys(name for r in runs for name in r.metrics)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"{what} {', '.join(unknown)}: no run has such a metric; the metrics are: {', '.join(known)}")
