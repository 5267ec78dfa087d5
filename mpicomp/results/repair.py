"""Clearing the "open for write" mark that a killed writer leaves in a results file.

An SWMR writer marks the file's superblock as open for writing and clears the mark when it closes
the file. A process killed before that (kill -9, a node failure, an MPI abort) leaves the mark, and
HDF5 then refuses plain readers (``h5py.File(path, "r")``: "file is already open for write"); only
SWMR readers (``mpicomp info``, :func:`~mpicomp.results.read_results`) still open it.
:func:`repair` gives back a file that any reader opens: every object and attribute, read in SWMR
mode, is copied (HDF5's object copy, which keeps chunking and resizable shapes) into a new file
beside it, which then replaces the original in one rename. The status is left as it was; the metric
and worker columns are cut to the rows they all have (a writer killed between appending one column
and the next leaves some a row longer), as :func:`~mpicomp.results.read_results` reads them, so that
plain readers see the same rows.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py

from .guard import in_use
from .writer import FILE_LOCKING, LIBVER

OPEN_FOR_WRITE = "already open for write"  # HDF5's words for a set consistency flag


def needs_repair(path: str | os.PathLike) -> bool:
    """True if plain HDF5 readers refuse ``path`` because its writer never closed it."""
    try:
        with h5py.File(path, "r", locking=False):
            return False
    except OSError as exc:
        return OPEN_FOR_WRITE in str(exc)


def repair(path: str | os.PathLike) -> bool:
    """Clear the writer's mark left in ``path`` by a killed run; ``False`` if there was none.

    Raises ``ValueError`` (with what to do) if a live run still writes the file or a program has it
    open, and ``OSError`` if the copy cannot be written beside it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file {path} does not exist")
    if not needs_repair(path):
        return False
    reason = in_use(path)
    if reason:
        raise ValueError(f"not repairing: {reason}")
    staging = path.with_name(f".{path.name}.{os.getpid()}.repair")
    try:
        with (
            h5py.File(path, "r", swmr=True, locking=FILE_LOCKING) as source,
            h5py.File(staging, "x", libver=LIBVER, locking=FILE_LOCKING) as copy,
        ):
            copy.attrs.update(source.attrs)
            for name in source:
                source.copy(source[name], copy, name=name)
            _cut_to_common_rows([*copy["metrics"].values(), *copy["workers"].values()])
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return True


def _cut_to_common_rows(columns: list[h5py.Dataset]) -> None:
    """Resize every row-aligned column (axis 0) to the shortest one's length."""
    if columns:
        rows = min(column.shape[0] for column in columns)
        for column in columns:
            if column.shape[0] > rows:
                column.resize(rows, axis=0)
