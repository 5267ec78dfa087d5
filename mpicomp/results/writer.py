"""Streaming HDF5 results writer, used by rank 0 only: one file per run.

The file (layout in ``docs/results-format.md``) is created with every object it will ever
hold, then switched to SWMR (single writer, multiple readers) mode, after which HDF5 allows
only two kinds of change: appending rows along axis 0 of the chunked ``/metrics/<name>``
``(rows,)``, ``/workers/<name>`` ``(rows, n_workers)`` and ``/samples`` ``(rows, sample_dim)``
datasets, and rewriting the raw data of existing datasets (``/status``, ``/status_message``,
``/end_time``, ``/final/x``). Attributes are never touched after the switch. A reader can
follow the run live, and a killed run leaves a consistent file holding every flushed row.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Self

import h5py
import numpy as np
import numpy.typing as npt

from mpicomp import __version__

FORMAT_VERSION = 1
# Low bound v110: the oldest object formats that support SWMR, so that files stay readable by
# any HDF5 >= 1.10 (with "latest" as low bound, an HDF5 2.x writer would use 2.x-only formats).
LIBVER = ("v110", "latest")
# File locks are used when the file system supports them and silently skipped where it does not
# (Lustre, some NFS mounts), instead of failing to open.
FILE_LOCKING = "best-effort"

RUNNING = "running"
RESUMABLE = "resumable"  # a signal ended the run after a checkpoint: `mpicomp run --resume FILE` continues it
FINAL_STATUSES = ("finished", "stopped", "diverged", "failed", RESUMABLE)
STATUSES = (RUNNING, *FINAL_STATUSES)
STATUS_DTYPE = np.dtype("S16")
TIME_DTYPE = np.dtype("S32")
COLUMN_DTYPES = (np.dtype("<f8"), np.dtype("<i8"))
CHUNK_BYTES = 8192
GIT_TIMEOUT_SECONDS = 2.0
CARRY_BYTES = 16 * 2**20  # rows copied per block by carry_over
HEARTBEAT_SECONDS = 60.0  # flush (rows and /heartbeat) at least this often while rows are logged


class RunEnded(RuntimeError):
    """The run's status was already recorded from a signal: the process is about to end, nothing more is written."""


def utc_now() -> str:
    """The current time as ISO 8601 UTC with seconds, e.g. ``2026-05-09T07:35:25+00:00``."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def git_commit(package_dir: Path) -> str:
    """``git rev-parse HEAD`` if ``package_dir`` sits at the top of a git checkout, else ``""``.

    Only a checkout whose root directly holds the package counts, so that an installed copy inside
    some unrelated repository (a virtualenv in a user's project) does not report that project's commit.
    """
    if not (package_dir.parent / ".git").exists():
        return ""
    try:
        done = subprocess.run(
            ["git", "-C", str(package_dir), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()


def _installed_version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""


def _json_default(value: object) -> object:
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} value {value!r} is not JSON-serialisable")


def config_json(config: Mapping) -> str:
    """The config as a JSON object, keys in the given order (NumPy values become numbers or lists)."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict (the resolved run config), got {type(config).__name__}")
    try:
        return json.dumps(config, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config cannot be stored as JSON: {exc}; use dicts, lists, str, numbers, bool, None") from exc


def _column_dtype(name: str, dtype: npt.DTypeLike, what: str) -> np.dtype:
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"{what} name {name!r} is invalid: use a non-empty string without '/'")
    try:
        resolved = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"{what} {name!r}: {dtype!r} is not a dtype; use float64 or int64") from exc
    for allowed in COLUMN_DTYPES:
        if resolved == allowed:
            return allowed
    raise ValueError(f"{what} {name!r} has dtype {resolved}; results columns are float64 or int64")


def _coerce(value: object, dtype: np.dtype, row_shape: tuple[int, ...], what: str) -> np.ndarray:
    """``value`` as one row of a column: shape ``row_shape``, ``dtype``; ``None`` = missing (NaN)."""
    if value is None:
        if dtype.kind == "i":
            raise ValueError(f"{what} is missing: int64 columns have no missing value, give it on every row")
        return np.full(row_shape, np.nan)
    array = np.asarray(value)
    if array.shape != row_shape:
        raise ValueError(f"{what} has shape {array.shape}, expected {row_shape}")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{what} = {value!r} is not a real number (float64 or int64)")
    if dtype.kind == "i" and array.dtype.kind == "f" and not np.all(np.isfinite(array) & (array == np.round(array))):
        raise ValueError(f"{what} = {value!r} is not an integer, but the column is int64")
    if dtype.kind == "i" and array.dtype.kind == "u" and np.any(array > np.iinfo(np.int64).max):
        raise ValueError(f"{what} = {value!r} does not fit in int64")
    return array.astype(dtype)


class _AppendColumn:
    """A dataset that grows along axis 0, and the rows buffered for it since the last flush."""

    def __init__(self, dataset: h5py.Dataset) -> None:
        self.dataset = dataset
        self.row_shape: tuple[int, ...] = dataset.shape[1:]
        self.dtype: np.dtype = dataset.dtype
        self.rows = dataset.shape[0]
        self._pending: list[np.ndarray] = []
        self.pending_rows = 0

    def append(self, block: np.ndarray) -> None:
        """Buffer ``block`` of shape ``(k, *row_shape)``."""
        self._pending.append(block)
        self.pending_rows += block.shape[0]

    def flush(self) -> None:
        """Append the buffered rows to the dataset: extend it, then write the new hyperslab.

        Uses h5py's low-level calls: ``resize`` plus slice assignment costs about 4x more per column.
        """
        if not self._pending:
            return
        block = np.ascontiguousarray(np.concatenate(self._pending), dtype=self.dtype)
        dataset_id = self.dataset.id
        dataset_id.set_extent((self.rows + block.shape[0], *self.row_shape))
        file_space = dataset_id.get_space()
        file_space.select_hyperslab((self.rows,) + (0,) * len(self.row_shape), block.shape)
        dataset_id.write(h5py.h5s.create_simple(block.shape), file_space, block)
        self.rows += block.shape[0]
        self._pending.clear()
        self.pending_rows = 0


def _create_column(group: h5py.Group, name: str, dtype: np.dtype, row_shape: tuple[int, ...]) -> _AppendColumn:
    """An empty ``(0, *row_shape)`` dataset, unlimited along axis 0, chunks of about CHUNK_BYTES."""
    row_bytes = dtype.itemsize * int(np.prod(row_shape))
    chunk_rows = max(1, CHUNK_BYTES // row_bytes)
    fill = np.nan if dtype.kind == "f" else 0
    dataset = group.create_dataset(
        name,
        shape=(0, *row_shape),
        maxshape=(None, *row_shape),
        chunks=(chunk_rows, *row_shape),
        dtype=dtype,
        fillvalue=fill,
    )
    return _AppendColumn(dataset)


class ResultsWriter:
    """Streams one run's metrics to an HDF5 file; a context manager.

    ``log`` buffers one row per logged round; every ``flush_every`` buffered rows (of metrics, or
    of samples) and in ``finish``/``close`` the buffers are appended and the file is flushed, so a
    crash loses at most the last ``flush_every - 1`` rows. ``finish`` records the final status.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        config: Mapping,
        metrics: Mapping[str, np.dtype | str],
        worker_metrics: Mapping[str, np.dtype | str],
        n_workers: int,
        d: int,
        mpi_size: int,
        flush_every: int = 10,
        sample_dim: int | None = None,
        overwrite: bool = False,
        carry: tuple[str | os.PathLike, int, int] | None = None,
    ) -> None:
        counts = {"n_workers": n_workers, "d": d, "mpi_size": mpi_size, "flush_every": flush_every}
        if sample_dim is not None:
            counts["sample_dim"] = sample_dim
        for label, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        if not metrics:
            raise ValueError("metrics is empty: declare at least one metric column (name -> float64 or int64)")
        metric_dtypes = {name: _column_dtype(name, dtype, "metric") for name, dtype in metrics.items()}
        worker_dtypes = {name: _column_dtype(name, dtype, "worker metric") for name, dtype in worker_metrics.items()}
        config_text = config_json(config)

        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(
                f"results file {self.path} already exists; pass overwrite=True to replace it or choose another path"
            )
        self.n_workers = n_workers
        self.d = d
        self.sample_dim = sample_dim
        self.flush_every = flush_every
        self._status = RUNNING
        self._finished = False
        self._ended_by_signal = False  # record_failure() was called (from a signal's thread)
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()  # finish() and record_failure() may race (a signal thread)
        staging = _create_staging(self.path)
        try:
            self._file = h5py.File(staging, "w", libver=LIBVER, locking=FILE_LOCKING)
        except BaseException:
            staging.unlink(missing_ok=True)
            raise
        try:
            self._create_layout(config_text, metric_dtypes, worker_dtypes, mpi_size)
            if carry is not None:
                self.carry_over(*carry)
            self._file.swmr_mode = True
            self._file.flush()
            _publish(staging, self.path, overwrite)
        except BaseException:
            self._file.close()
            staging.unlink(missing_ok=True)
            raise

    def _create_layout(
        self, config_text: str, metric_dtypes: dict[str, np.dtype], worker_dtypes: dict[str, np.dtype], mpi_size: int
    ) -> None:
        """Every attribute and dataset of the file (SWMR forbids creating any later)."""
        f = self._file
        f.attrs.update(
            {
                "format_version": np.int64(FORMAT_VERSION),
                "config": config_text,
                "mpicomp_version": __version__,
                "git_commit": git_commit(Path(__file__).resolve().parent.parent),
                "mpi_size": np.int64(mpi_size),
                "n_workers": np.int64(self.n_workers),
                "d": np.int64(self.d),
                "flush_every": np.int64(self.flush_every),
                "start_time": utc_now(),
                "python_version": platform.python_version(),
                "numpy_version": np.__version__,
                "numba_version": _installed_version("numba"),
                "h5py_version": h5py.__version__,
                "hdf5_version": h5py.version.hdf5_version,
                "mpi4py_version": _installed_version("mpi4py"),
                "hostname": socket.gethostname(),
            }
        )
        f.attrs["pid"] = np.int64(os.getpid())
        f.create_dataset("status", data=np.array(RUNNING, dtype=STATUS_DTYPE))
        f.create_dataset("heartbeat", data=np.array(utc_now(), dtype=TIME_DTYPE))
        f.create_dataset("startup_seconds", data=np.array(np.nan))
        f.create_dataset("status_message", shape=(0,), maxshape=(None,), chunks=(1024,), dtype="u1")
        f.create_dataset("end_time", data=np.array("", dtype=TIME_DTYPE))
        f.create_group("final").create_dataset("x", shape=(self.d,), dtype="<f8", fillvalue=np.nan)
        metrics_group = f.create_group("metrics", track_order=True)
        self._metrics = {name: _create_column(metrics_group, name, dtype, ()) for name, dtype in metric_dtypes.items()}
        workers_group = f.create_group("workers", track_order=True)
        self._workers = {
            name: _create_column(workers_group, name, dtype, (self.n_workers,)) for name, dtype in worker_dtypes.items()
        }
        self._samples = (
            None if self.sample_dim is None else _create_column(f, "samples", np.dtype("<f8"), (self.sample_dim,))
        )

    @property
    def status(self) -> str:
        """``"running"`` until ``finish``, then the final status."""
        return self._status

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        """On an exception, record status ``"failed"`` with :func:`failure_message` unless already finished; close."""
        if exc is None:
            self.close()
            return
        try:
            if self._file.id.valid and not self._finished:
                self.finish("failed", failure_message(exc))
        except Exception as secondary:  # noqa: BLE001 - whatever it is, it must not mask the original exception
            exc.add_note(f"ResultsWriter could not record the failure in {self.path}: {secondary!r}")
        finally:
            self._file.close()

    def _check_writable(self, action: str) -> None:
        if not self._file.id.valid:
            raise RuntimeError(f"cannot {action}: results file {self.path} is closed")
        if self._finished:
            error = RunEnded if self._ended_by_signal else RuntimeError
            raise error(f"cannot {action}: the run was already finished with status {self._status!r}")

    def log(self, row: Mapping[str, float | int], workers: Mapping[str, np.ndarray] | None = None) -> None:
        """Buffer one logged round: ``row[name]`` a scalar per metric, ``workers[name]`` a ``(n_workers,)`` array.

        A missing (or ``None``) float64 value is stored as NaN; a missing int64 value is an error.
        The row is validated completely before anything is buffered, so a rejected row leaves no trace.
        """
        self._check_writable("log a row")
        workers = {} if workers is None else workers
        metric_rows = _validated_rows(self._metrics, row, "metric")
        worker_rows = _validated_rows(self._workers, workers, "worker metric")
        for name, value in metric_rows.items():
            self._metrics[name].append(value[None])
        for name, value in worker_rows.items():
            self._workers[name].append(value[None])
        self._flush_if_due()

    def add_samples(self, samples: np.ndarray) -> None:
        """Buffer sampler draws: one row ``(sample_dim,)`` or a block ``(k, sample_dim)``."""
        self._check_writable("add samples")
        if self._samples is None:
            raise ValueError("this ResultsWriter was created without sample_dim; pass sample_dim=d to store samples")
        block = np.asarray(samples)
        if block.ndim == 1:
            block = block[None]
        if block.ndim != 2 or block.shape[1] != self.sample_dim:
            raise ValueError(
                f"samples have shape {np.shape(samples)}, expected ({self.sample_dim},) or (k, {self.sample_dim})"
            )
        if block.dtype.kind not in "biuf":
            raise ValueError(f"samples have dtype {block.dtype}, expected real numbers")
        self._samples.append(block.astype("<f8"))
        self._flush_if_due()

    def _flush_if_due(self) -> None:
        columns = [*self._metrics.values(), *self._workers.values()]
        if self._samples is not None:
            columns.append(self._samples)
        stale = time.monotonic() - self._last_flush >= HEARTBEAT_SECONDS  # keep /heartbeat fresh on slow runs
        if stale or any(column.pending_rows >= self.flush_every for column in columns):
            self.flush()

    def flush(self) -> None:
        """Append every buffered row to the file and flush it to disk (visible to SWMR readers)."""
        if not self._file.id.valid:
            raise RuntimeError(f"cannot flush: results file {self.path} is closed")
        for column in [*self._workers.values(), *self._metrics.values()]:
            column.flush()
        if self._samples is not None:
            self._samples.flush()
        self._file["heartbeat"][()] = np.array(utc_now(), dtype=TIME_DTYPE)
        self._file.flush()
        self._last_flush = time.monotonic()

    @property
    def rows(self) -> tuple[int, int]:
        """``(metric rows, sample rows)`` in the file (call :meth:`flush` first to count the buffered ones)."""
        first = next(iter(self._metrics.values()))
        return first.rows, 0 if self._samples is None else self._samples.rows

    def carry_over(self, source: str | os.PathLike, metric_rows: int, sample_rows: int) -> None:
        """Copy the first rows of another results file of the same layout (a resumed run's rows up
        to its checkpoint), block by block, then flush. ``source`` is opened read-only (SWMR). The
        constructor's ``carry = (source, metric_rows, sample_rows)`` does it before the new file takes
        the name (a resumed run: the new file replaces ``source`` only once it holds its rows)."""
        self._check_writable("carry rows over")
        with h5py.File(source, "r", swmr=True, locking=FILE_LOCKING) as f:
            columns = [(f"metrics/{name}", column, metric_rows) for name, column in self._metrics.items()]
            columns += [(f"workers/{name}", column, metric_rows) for name, column in self._workers.items()]
            if self._samples is not None:
                columns.append(("samples", self._samples, sample_rows))
            for path, column, rows in columns:
                stored = f[path]
                if stored.shape[0] < rows or stored.shape[1:] != column.row_shape:
                    raise ValueError(f"{source}: /{path} has shape {stored.shape}, expected {rows} rows")
                step = max(1, CARRY_BYTES // max(1, column.dtype.itemsize * int(np.prod(column.row_shape))))
                for start in range(0, rows, step):
                    column.append(np.asarray(stored[start : min(rows, start + step)], dtype=column.dtype))
                    column.flush()
        self.flush()

    def record_startup(self, seconds: float) -> None:
        """``/startup_seconds``: what the run spent before round 1 (data, reference optimum, JIT compilation)."""
        self._check_writable("record the start-up time")
        self._file["startup_seconds"][()] = float(seconds)
        self.flush()

    def finish(self, status: str, message: str = "", final_x: np.ndarray | None = None) -> None:
        """Flush, then record ``final_x`` (if given), ``message``, the end time and ``status``.

        ``status`` is one of ``finished``, ``stopped`` (a stop rule fired), ``diverged`` (NaN/Inf or
        blow-up), ``failed`` (exception) or ``resumable`` (a signal ended the run after a checkpoint);
        ``message`` says why. ``/status`` is written last, so a
        reader that sees a final status also sees everything else.
        """
        if status not in FINAL_STATUSES:
            raise ValueError(
                f"invalid status {status!r}; valid final statuses: {', '.join(FINAL_STATUSES)} "
                f"({RUNNING!r} is set by the writer while the run is in progress)"
            )
        if not isinstance(message, str):
            raise TypeError(f"status message must be a str, got {type(message).__name__}")
        self._check_writable("finish")
        if final_x is not None:
            x = np.asarray(final_x)
            if x.shape != (self.d,) or x.dtype.kind not in "biuf":
                raise ValueError(f"final_x has shape {x.shape} and dtype {x.dtype}, expected ({self.d},) real numbers")
        self.flush()
        if final_x is not None:
            self._file["final/x"][...] = x
        self._write_status(status, message)

    def record_failure(self, message: str) -> None:
        """Record ``failed`` with ``message`` at once, from any thread, without touching the buffered
        rows (the process is about to be killed: a signal arrived while the main thread was busy)."""
        if self._file.id.valid:
            self._ended_by_signal = True
            self._write_status("failed", message)

    def _write_status(self, status: str, message: str) -> None:
        """``/status_message``, ``/end_time``, then ``/status`` (last: a reader seeing it sees the rest);
        only the first final status counts."""
        with self._lock:
            if self._finished:
                return
            f = self._file
            encoded = np.frombuffer(message.encode("utf-8"), dtype="u1")
            f["status_message"].resize(encoded.shape)
            f["status_message"][...] = encoded
            f["end_time"][()] = np.array(utc_now(), dtype=TIME_DTYPE)
            f["status"][()] = np.array(status, dtype=STATUS_DTYPE)
            f.flush()
            self._status, self._finished = status, True

    def close(self) -> None:
        """Close the file; a run closed without ``finish`` is recorded as ``failed``. Idempotent."""
        if not self._file.id.valid:
            return
        try:
            if not self._finished:
                self.finish("failed", "ResultsWriter was closed without finish(): the run ended without a final status")
        finally:
            self._file.close()


def _create_staging(path: Path) -> Path:
    """A new empty file beside ``path`` (same file system, so that :func:`_publish` can rename it)."""
    staging = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(staging, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create results file {path}: {exc.strerror or exc}") from None
    return staging


def _publish(staging: Path, path: Path, overwrite: bool) -> None:
    """Give the complete new file (``staging``) its name ``path`` in one atomic step.

    Without ``overwrite`` the name is taken only if it is still free (a hard link), so two runs
    started on the same new path at once cannot both own it. With ``overwrite`` the old file is
    replaced only if no live run writes it and no program holds it open; readers that had it open
    keep reading the old file, which the rename leaves intact."""
    from .guard import in_use  # guard reads results files with the reader, which imports this module

    if overwrite:
        reason = in_use(path)
        if reason:
            raise FileExistsError(errno.EBUSY, f"not replacing {reason}")
        os.replace(staging, path)
        return
    taken = FileExistsError(
        errno.EEXIST, f"results file {path} was created by another process meanwhile; choose another --out"
    )
    try:
        os.link(staging, path)
    except FileExistsError:
        raise taken from None
    except OSError:  # a file system without hard links: claim the name, then rename onto it
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            raise taken from None
        os.replace(staging, path)
        return
    staging.unlink()


def failure_message(exc: BaseException) -> str:
    """What ended a run, for people: the signal for an exit by signal, else ``Type: message``."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (SIGINT)"
    if isinstance(exc, SystemExit) and isinstance(exc.code, int) and exc.code > 128:
        try:
            name = signal.Signals(exc.code - 128).name
        except ValueError:
            return f"exited with status {exc.code}"
        hint = " (time limit or scancel?)" if name == "SIGTERM" else ""
        return f"terminated by {name}{hint}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _validated_rows(
    columns: dict[str, _AppendColumn], values: Mapping[str, object], what: str
) -> dict[str, np.ndarray]:
    """One coerced row per column; unknown names and bad values raise ``ValueError``."""
    unknown = sorted(set(values) - set(columns))
    if unknown:
        known = ", ".join(columns) or "none"
        raise ValueError(
            f"unknown {what}(s) {', '.join(map(repr, unknown))}; known: {known} "
            "(declare every column when creating the ResultsWriter)"
        )
    return {
        name: _coerce(values.get(name), column.dtype, column.row_shape, f"{what} {name!r}")
        for name, column in columns.items()
    }
