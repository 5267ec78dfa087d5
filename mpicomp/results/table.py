"""Tidy tables of results: one row per logged round, one column per metric, plus the run's config.

A table is a plain ``dict`` of equal-length NumPy columns, in order, so building one needs
nothing beyond NumPy; :func:`to_dataframe` makes a pandas data frame of runs or of a table for those
who prefer pandas (the ``pandas`` extra), which mpicomp never requires. Config keys are flattened to
``section.key`` (``method.name``, ``compressor.uplink``, ``run.seed``). Runs are given as
:class:`Results`, or as files, folders and glob patterns alike (:func:`find_results`).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

import numpy as np

from .collect import find_results
from .reader import Results, read_results

Table = dict[str, np.ndarray]
Runs = Results | str | os.PathLike | Iterable[Results | str | os.PathLike]
CONFIG_CHOICES = ("all", "differing")


def flat_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``{"method": {"name": "gd"}}`` -> ``{"method.name": "gd"}``; list values become JSON text."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}.{inner}": item for inner, item in flat_config(value).items()})
        else:
            flat[key] = json.dumps(value) if isinstance(value, list) else value
    return flat


def differing_keys(flat_configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The keys of flattened configs whose values are not the same in all of them, in first-seen
    order; a key that a config lacks counts as None there (a method option of another method)."""
    keys = dict.fromkeys(key for flat in flat_configs for key in flat)
    return [key for key in keys if len({repr(flat.get(key)) for flat in flat_configs}) > 1]


def column(values: Sequence[Any]) -> np.ndarray:
    """A NumPy column: typed if every value has the same plain type, else of dtype object
    (so that NumPy never turns numbers into text or None into NaN behind the caller's back)."""
    kinds = {type(value) for value in values}
    if len(kinds) == 1 and kinds <= {bool, int, float, str}:
        return np.array(values)
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return array


def _metric_column(name: str, runs: Sequence[Results]) -> np.ndarray:
    """A metric across runs: its own dtype where every run has it with one dtype, else float64 with
    NaN for the rows of runs that lack it."""
    parts = [r.metrics.get(name) for r in runs]
    present = [part for part in parts if part is not None]
    if len(present) == len(parts) and len({part.dtype for part in present}) == 1:
        return np.concatenate(present)
    return np.concatenate(
        [
            np.full(r.n_rows, np.nan) if part is None else part.astype(np.float64)
            for r, part in zip(runs, parts, strict=True)
        ]
    )


def read_runs(runs: Runs) -> list[Results]:
    """Results objects as they are; every file a path, folder or glob names, read (errors raised)."""
    items = [runs] if isinstance(runs, Results | str | os.PathLike) else list(runs)
    results = []
    for item in items:
        results += [item] if isinstance(item, Results) else [read_results(path) for path in find_results(item)]
    return results


def tidy_table(runs: Runs, config: str | Sequence[str] = "all") -> Table:
    """One row per logged round of every run: ``run`` (the file), ``status``, the config keys, then
    every metric column (the union over the runs; NaN where a run lacks one).

    ``config`` chooses the config columns: ``"all"`` keys, the keys that ``"differing"`` between
    the runs, or a list of flattened keys (``None`` where a run lacks one). Worker columns
    (``/workers/*``) and samples are not in the table; read them with :func:`read_results`.
    """
    results = read_runs(runs)
    flats = [flat_config(r.config) for r in results]
    if config == "all":
        keys = list(dict.fromkeys(key for flat in flats for key in flat))
    elif config == "differing":
        keys = differing_keys(flats)
    elif isinstance(config, str):
        raise ValueError(f"config={config!r}: expected one of {', '.join(CONFIG_CHOICES)} or a list of keys")
    else:
        keys = list(config)
        unknown = [key for key in keys if not any(key in flat for flat in flats)]
        if unknown:
            known = ", ".join(dict.fromkeys(key for flat in flats for key in flat))
            raise ValueError(f"no run has the config key(s) {', '.join(unknown)}; the keys are: {known}")
    counts = [r.n_rows for r in results]
    table = {
        "run": np.repeat(column([str(r.path) for r in results]), counts),
        "status": np.repeat(column([r.status for r in results]), counts),
    }
    for key in keys:
        table[key] = np.repeat(column([flat.get(key) for flat in flats]), counts)
    for name in dict.fromkeys(name for r in results for name in r.metrics):
        table[name] = _metric_column(name, results)
    return table


def to_dataframe(source: Runs | Mapping[str, Sequence[Any]], config: str | Sequence[str] = "all") -> Any:
    """A pandas DataFrame with one row per logged round of every run, the config flattened to
    ``section.key`` columns: ``pandas.DataFrame(tidy_table(source, config))``. ``source`` is runs
    (files, folders, globs, :class:`Results`) or an already built table (a mapping of columns).
    An ImportError says what to install when pandas is missing."""
    try:
        import pandas
    except ImportError:
        raise ImportError(
            "to_dataframe needs pandas, which mpicomp does not install: pip install pandas (or the mpicomp[pandas] extra) "
            "(without it, tidy_table gives the same table as a dict of NumPy columns)"
        ) from None
    if isinstance(source, Mapping):
        return pandas.DataFrame(source)
    return pandas.DataFrame(tidy_table(source, config))


def _csv_cell(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(value) if isinstance(value, float) else value


def write_csv(table: Mapping[str, Sequence[Any]], stream: TextIO) -> None:
    """A header of the column names, then one line per row; floats in full precision (``repr``),
    missing values (None, NaN) as empty cells."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(list(table))
    for row in zip(*table.values(), strict=True):
        writer.writerow([_csv_cell(value) for value in row])
