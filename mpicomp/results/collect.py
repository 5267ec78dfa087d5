"""Turning the ``RUNS...`` arguments of ``mpicomp compare`` and ``mpicomp plot`` into loaded results.

An argument is a results file, a directory (every ``*.h5`` below it, recursively) or a glob
pattern (``'sweep/*/run_*.h5'``, ``**`` allowed), quoted so that the shell leaves it alone.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from .reader import Results, read_results

RESULTS_SUFFIX = ".h5"


class RunsError(ValueError):
    """A ``RUNS`` argument names nothing, or nothing readable was found: bad input."""


def _expand(pattern: str) -> list[Path]:
    path = Path(pattern)
    if path.is_dir():
        found = sorted(p for p in path.rglob(f"*{RESULTS_SUFFIX}") if p.is_file())
        if not found:
            raise RunsError(f"{pattern}: no {RESULTS_SUFFIX} files in this directory")
        return found
    if path.is_file():
        return [path]
    if glob.has_magic(pattern):
        matches = [Path(p) for p in sorted(glob.glob(pattern, recursive=True))]
        found = [p for m in matches for p in (_expand(str(m)) if m.is_dir() else [m])]
        if not found:
            raise RunsError(f"{pattern}: the pattern matches no file")
        return found
    raise RunsError(f"{pattern}: no such file or directory")


def find_results(patterns: Sequence[str]) -> list[Path]:
    """The files the arguments name, in argument order (directories and globs sorted), each once."""
    seen: set[Path] = set()
    paths = []
    for pattern in patterns:
        for path in _expand(pattern):
            if path.resolve() not in seen:
                seen.add(path.resolve())
                paths.append(path)
    return paths


def load_runs(patterns: Sequence[str]) -> tuple[list[Results], list[str]]:
    """Read every file the arguments name. Files that are not readable mpicomp results are skipped
    with a note; :class:`RunsError` if an argument names nothing or no file could be read."""
    runs, notes = [], []
    for path in find_results(patterns):
        try:
            runs.append(read_results(path))
        except (OSError, KeyError, ValueError) as exc:
            notes.append(f"skipped {path}: {exc}")
    if not runs:
        raise RunsError(
            "no readable results file among " + ", ".join(patterns) + ("; " + "; ".join(notes) if notes else "")
        )
    return runs, notes


def check_metrics(runs: Sequence[Results], names: Sequence[str], what: str) -> None:
    """A ``ValueError`` naming ``what`` (``--y``, ``target``) for any name that no run has as a metric
    column, listing the metrics there are."""
    known = dict.fromkeys(name for r in runs for name in r.metrics)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"{what} {', '.join(unknown)}: no run has such a metric; the metrics are: {', '.join(known)}")
