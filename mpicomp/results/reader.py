"""Reading results files (finished, killed, or still being written) and summarising them.

Files are always opened in SWMR read mode: that is what lets a reader follow a live run, and it is
also the only way HDF5 opens the file of a killed run (whose superblock still says "open for write").
"""

from __future__ import annotations

import json
import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from .writer import FILE_LOCKING, FORMAT_VERSION, RUNNING, STATUSES

STALE_MINUTES = 10  # a running file with no flush for this long is reported as probably killed

# Metrics shown first, in this order, by summarize(); the others follow in logging order.
HEADLINE_METRICS = (
    "round",
    "loss",
    "suboptimality",
    "grad_norm_sq",
    "dist_to_opt",
    "test_accuracy",
    "bits_up",
    "bits_down",
    "uploads",
    "modelled_time",
    "wall_time",
)
SUMMARY_LINE_CHARS = 118
BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


@dataclass(frozen=True)
class Results:
    """One results file in memory. ``metrics[name]`` has shape ``(n_rows,)``,
    ``workers[name]`` ``(n_rows, n_workers)``; ``final_x`` is NaN where the run recorded none."""

    path: Path
    config: dict
    attrs: dict
    status: str
    status_message: str
    end_time: str
    metrics: dict[str, np.ndarray]
    workers: dict[str, np.ndarray]
    final_x: np.ndarray
    samples: np.ndarray | None
    heartbeat: str = ""  # UTC time of the writer's latest flush ("" in files written before it existed)
    startup_seconds: float = float("nan")

    @property
    def n_rows(self) -> int:
        """Number of logged rows (rounds) in the file."""
        return len(next(iter(self.metrics.values())))

    def last_row(self) -> dict[str, float | int]:
        """The last logged row as ``{metric: value}`` (empty if no row was logged)."""
        if self.n_rows == 0:
            return {}
        return {name: values[-1].item() for name, values in self.metrics.items()}


def _python_value(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_results(path: str | os.PathLike) -> Results:
    """Load a results file. Rows are cut to the length common to every metric and worker column
    (a live or killed writer can be caught between appending one column and the next)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file {path} does not exist")
    try:
        f = h5py.File(path, "r", swmr=True, locking=FILE_LOCKING)
    except OSError as exc:
        raise ValueError(f"{path} is not a readable HDF5 results file: {exc}") from exc
    with f:
        version = f.attrs.get("format_version")
        if version is None or "metrics" not in f:
            raise ValueError(f"{path} is an HDF5 file but not an mpicomp results file (no format_version or /metrics)")
        if int(version) != FORMAT_VERSION:
            raise ValueError(f"{path} uses results format {int(version)}; this mpicomp reads format {FORMAT_VERSION}")
        attrs = {name: _python_value(value) for name, value in f.attrs.items()}
        config = attrs.pop("config")
        if not isinstance(config, str):
            raise ValueError(f"{path}: its config attribute is {type(config).__name__}, not a JSON string")
        metrics = {name: dataset[()] for name, dataset in f["metrics"].items()}
        workers = {name: dataset[()] for name, dataset in f["workers"].items()}
        n_rows = min(len(values) for values in [*metrics.values(), *workers.values()])
        status = f["status"][()].decode("ascii")
        if status not in STATUSES:
            raise ValueError(f"{path} has unknown status {status!r}; expected one of {', '.join(STATUSES)}")
        return Results(
            path=path,
            config=json.loads(config),
            attrs=attrs,
            status=status,
            status_message=f["status_message"][()].tobytes().decode("utf-8"),
            end_time=f["end_time"][()].decode("ascii"),
            metrics={name: values[:n_rows] for name, values in metrics.items()},
            workers={name: values[:n_rows] for name, values in workers.items()},
            final_x=f["final/x"][()],
            samples=f["samples"][()] if "samples" in f else None,
            heartbeat=f["heartbeat"][()].decode("ascii") if "heartbeat" in f else "",
            startup_seconds=float(f["startup_seconds"][()]) if "startup_seconds" in f else float("nan"),
        )


def staleness(results: Results, now: datetime | None = None) -> str:
    """For a file whose status is ``running``: ``""`` if its writer looks alive, else why it looks dead
    (its process is gone from this host, or no flush for :data:`STALE_MINUTES` minutes)."""
    if results.status != RUNNING or not results.heartbeat:
        return ""
    now = now or datetime.now(UTC)
    idle = (now - datetime.fromisoformat(results.heartbeat)).total_seconds() / 60
    pid, host = results.attrs.get("pid"), results.attrs.get("hostname")
    if pid is not None and host == socket.gethostname() and not _process_alive(int(pid)):
        return f"the writer (pid {pid} on {host}) is gone and wrote last {idle:.0f} min ago: killed"
    if idle >= STALE_MINUTES:
        return f"no write for {idle:.0f} min: probably killed, unless one round takes that long (writer pid {pid} on {host})"
    return ""


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` on this host still runs: it exists and (where ``/proc`` says) is not a
    zombie, a process that has exited and waits for its parent to collect it (a rank killed with its
    launcher stays one until its process manager reaps it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    if not Path("/proc/self/stat").is_file():  # no /proc (not Linux): os.kill's answer
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # it exited since
        return False
    return stat[stat.rfind(")") + 2 :][:1] not in ("Z", "X")  # the state follows "pid (command) "


def _human_bytes(n_bytes: float) -> str:
    value, unit = float(n_bytes), 0
    while abs(value) >= 1024 and unit < len(BYTE_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{value:.0f} B" if unit == 0 else f"{value:.1f} {BYTE_UNITS[unit]}"


def _format_metric(name: str, value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    text = str(value) if isinstance(value, int) else f"{value:.6g}"
    if "bits" in name:
        return f"{text} ({_human_bytes(value / 8)})"
    if "bytes" in name:
        return f"{text} ({_human_bytes(value)})"
    return text


def _shorten(line: str) -> str:
    return line if len(line) <= SUMMARY_LINE_CHARS else line[: SUMMARY_LINE_CHARS - 3] + "..."


def _config_value(value: object) -> str:
    """Strings as they are, sections as ``key=value, ...``, anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return ", ".join(
            f"{key}={_config_value(item)}" if not isinstance(item, Mapping) else f"{key}={json.dumps(item)}"
            for key, item in value.items()
        )
    return json.dumps(value)


def _config_lines(config: Mapping) -> list[str]:
    """One line per top-level config entry."""
    return [_shorten(f"  {key}: {_config_value(value)}") for key, value in config.items()]


def summarize(source: str | os.PathLike | Results) -> str:
    """A human-readable report: run status and why, provenance, config, rows, last-row metrics."""
    results = source if isinstance(source, Results) else read_results(source)
    attrs = results.attrs
    status = results.status + (f" ({results.status_message})" if results.status_message else "")
    stale = staleness(results)
    if stale:
        status = f"running? {stale}"
    commit = attrs.get("git_commit") or "no git checkout"
    ended = results.end_time or "not yet (still running or killed)"
    lines = [
        f"results: {results.path}",
        f"status: {status}",
        f"time: started {attrs.get('start_time', '?')}, ended {ended}, last write {results.heartbeat or '?'}"
        + ("" if math.isnan(results.startup_seconds) else f", start-up {results.startup_seconds:.1f} s"),
        (
            f"run: mpicomp {attrs.get('mpicomp_version', '?')} ({commit}), MPI ranks: {attrs.get('mpi_size', '?')}, "
            f"workers: {attrs.get('n_workers', '?')}, d: {attrs.get('d', '?')}, host: {attrs.get('hostname', '?')}"
        ),
        "config:",
        *_config_lines(results.config),
        f"rows logged: {results.n_rows}",
    ]
    last = results.last_row()
    if last:
        order = [name for name in HEADLINE_METRICS if name in last] + [n for n in last if n not in HEADLINE_METRICS]
        width = max(map(len, order))
        lines.append("last row:")
        lines += [f"  {name:<{width}}  {_format_metric(name, last[name])}" for name in order]
    if results.workers:
        lines.append(
            _shorten(
                f"worker metrics ({results.n_rows} rows x {attrs.get('n_workers', '?')}): " + ", ".join(results.workers)
            )
        )
    if results.samples is not None:
        lines.append(f"samples: {results.samples.shape[0]} x {results.samples.shape[1]}")
    return "\n".join(lines)
