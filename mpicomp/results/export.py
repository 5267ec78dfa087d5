"""Writing a tidy table of runs (:func:`mpicomp.results.tidy_table`) to CSV or Parquet files.

CSV needs nothing beyond the standard library; Parquet needs pyarrow, which mpicomp does not
install (``pip install pyarrow``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .table import write_csv

STDOUT = "-"


def export_csv(table: Mapping[str, Any], path: str | os.PathLike) -> None:
    """The table as CSV in ``path`` (``-``: standard output); see :func:`write_csv`."""
    if os.fspath(path) == STDOUT:
        write_csv(table, sys.stdout)
        return
    with open(path, "w", newline="", encoding="utf-8") as stream:
        write_csv(table, stream)


def _arrow_column(pyarrow: Any, values: np.ndarray) -> Any:
    """A pyarrow array of a column; an object column of mixed types becomes text (None stays null)."""
    try:
        return pyarrow.array(values, from_pandas=True)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError):
        return pyarrow.array([None if v is None else str(v) for v in values], type=pyarrow.string())


def export_parquet(table: Mapping[str, Any], path: str | os.PathLike) -> None:
    """The table as a Parquet file (one column per table column); ImportError without pyarrow."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ImportError(
            "--parquet needs pyarrow, which mpicomp does not install: pip install pyarrow (or use --csv)"
        ) from None
    columns = {name: _arrow_column(pyarrow, values) for name, values in table.items()}
    pyarrow.parquet.write_table(pyarrow.table(columns), Path(path))
