"""Running the points of a sweep, one after another or K at a time, each as its own ``mpicomp run``.

Points whose results file holds a final status other than ``failed`` or ``resumable`` are skipped;
a ``resumable`` point (ended by a signal after a checkpoint) continues from its checkpoint
(``--resume``); ``failed``, stale ``running`` and unreadable files run again (``--overwrite``); a point
whose writer is alive is left to it. One line per point when it starts and when it ends (with its
status and an estimate of the time left); the index is rewritten after each. SIGINT (Ctrl-C) is
forwarded to the running points as SIGINT; SIGTERM and SIGUSR1 (a Slurm time limit or ``scancel``)
as SIGTERM, on which a point writes a checkpoint and ends ``resumable``. The sweep waits for them
to record it and says what is left.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import launch
from .results.writer import RESUMABLE
from .sweep import ALIVE, DONE_STATUSES, PENDING, Point, Sweep, point_status, write_index

POLL_SECONDS = 0.1
STOP_GRACE_SECONDS = 30.0  # after the forwarded signal, a point has this long before SIGKILL
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
LOG_FOLDER = "logs"
EXIT_INTERRUPTED = 130


class _StopRequest:
    """The first of SIGINT, SIGTERM or SIGUSR1 to reach the sweep (a handler that only records it, so
    that the loop stops between two steps and every started point is known)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum = signum


def duration(seconds: float) -> str:
    """``42 s``, ``3.5 min`` or ``1.2 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def point_command(sweep: Sweep, point: Point, out: Path, ranks: int, status: str) -> list[str]:
    """The ``mpicomp run`` command line of one point whose results file says ``status``: a new run, a
    rerun over a failed one, or the continuation of a ``resumable`` one from its checkpoint."""
    if status == RESUMABLE:
        return launch.run_command(ranks, ["--resume", str(out / point.file)])
    overwrite = status != PENDING
    arguments = [] if sweep.base is None else [str(sweep.base)]
    arguments += [*point.set_arguments(), "--out", str(out / point.file)]  # progress lines go to the log
    return launch.run_command(ranks, arguments + (["--overwrite"] if overwrite else []))


@dataclass
class _Progress:
    """Counts and durations of the points this sweep ran, for the log lines."""

    total: int
    parallel: int
    durations: list[float] = field(default_factory=list)
    started: int = 0

    def left(self, remaining: int) -> str:
        if not self.durations:
            return f"{remaining} left"
        mean = sum(self.durations) / len(self.durations)
        waves = -(-remaining // self.parallel)
        return f"{remaining} left, about {duration(waves * mean)} to go" if remaining else "none left"


def run_points(
    sweep: Sweep,
    out: Path,
    *,
    ranks: int,
    parallel: int = 1,
    only: Sequence[int] | None = None,
    echo: Callable[[str], None] = print,
) -> int:
    """Run the points of ``sweep`` that are not done (only those of ``only`` if given) into ``out``.

    Returns 0 when every selected point is done, 1 if one failed, 130 when interrupted.
    """
    note = launch.capacity_note(ranks, parallel)
    if note:
        echo(f"note: {note}")
    entries = write_index(sweep, out, ranks)
    selected = [sweep.points[i] for i in only] if only is not None else sweep.points
    todo: list[tuple[Point, str]] = []
    for point in selected:
        status, why = entries[point.index]["status"], entries[point.index]["message"]
        if status in DONE_STATUSES:
            continue
        if status == ALIVE:
            echo(f"{point.file}: running elsewhere ({why}); left to it")
            continue
        todo.append((point, status))
    done_before = len(selected) - len(todo)
    if done_before:
        echo(f"{done_before} of {len(selected)} points already done or running: skipped")
    progress = _Progress(len(todo), parallel)
    running: dict[subprocess.Popen, tuple[Point, float]] = {}
    failed: list[Point] = []
    stop = _StopRequest()
    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        while (todo or running) and stop.signum is None:
            while todo and len(running) < parallel and stop.signum is None:
                point, status = todo.pop(0)
                command = point_command(sweep, point, out, ranks, status)
                running[launch.start(command, out / LOG_FOLDER / f"{point.name}.log")] = (point, time.monotonic())
                progress.started += 1
                again = {PENDING: "", RESUMABLE: " (resumed from its checkpoint)"}.get(status, " (again)")
                echo(f"[{progress.started}/{progress.total}] started {point.name}{again}")
            time.sleep(POLL_SECONDS)
            for process in [p for p in running if p.poll() is not None]:
                point, began = running.pop(process)
                progress.durations.append(time.monotonic() - began)
                status, why = point_status(out / point.file)
                if status not in DONE_STATUSES:
                    failed.append(point)
                    if status == PENDING:
                        status, why = "failed", "before writing its results file"
                    why = f"{why}; " if why else ""
                    why += f"exit code {process.returncode}, log {out / LOG_FOLDER / (point.name + '.log')}"
                detail = f" ({why})" if why else ""
                echo(
                    f"finished {point.name}: {status}{detail} in {duration(progress.durations[-1])}; "
                    f"{progress.left(len(todo) + len(running))}"
                )
                write_index(sweep, out, ranks)
        if stop.signum is not None:
            _stop(running, echo, signal.SIGINT if stop.signum == signal.SIGINT else signal.SIGTERM)
            entries = write_index(sweep, out, ranks)
            chosen = {point.index for point in selected}
            left = [e["name"] for e in entries if e["index"] in chosen and e["status"] not in DONE_STATUSES]
            echo(
                f"interrupted ({signal.Signals(stop.signum).name}): {len(selected) - len(left)} of {len(selected)} "
                f"points done, {len(left)} left ({', '.join(left[:5])}{', ...' if len(left) > 5 else ''}); "
                "run the same command again to finish them"
            )
            return EXIT_INTERRUPTED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed:
        echo(f"{len(failed)} point(s) did not finish: {', '.join(p.name for p in failed)}; see {out / LOG_FOLDER}")
        return 1
    echo(f"all {len(selected)} points done; index {out / 'sweep.json'}")
    return 0


def _stop(running: dict[subprocess.Popen, tuple[Point, float]], echo: Callable[[str], None], signum: int) -> None:
    """Forward ``signum`` to every running point, wait for it to record the interruption, else kill it."""
    for process in running:
        launch.forward(process, signum)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process, (point, _) in running.items():
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            echo(
                f"{point.name} did not stop within {STOP_GRACE_SECONDS:.0f} s of {signal.Signals(signum).name}: killed"
            )
            launch.kill(process)
            process.wait()
