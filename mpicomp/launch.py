"""Starting one ``mpicomp run`` as a child process: under ``srun`` inside a Slurm job, else ``mpiexec``.

One rank needs no launcher: ``python -m mpicomp run`` runs every logical worker in one process and
writes the same metrics. The child gets its own session, so that a Ctrl-C meant for the sweep reaches
it only when the sweep forwards it (:func:`interrupt`), and its output goes to a log file.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path


class LauncherNotFound(RuntimeError):
    """Neither ``srun`` (under Slurm) nor ``mpiexec`` can be found for a run on several ranks."""


def launcher(ranks: int, env: Mapping[str, str] | None = None) -> list[str]:
    """The command prefix that starts ``ranks`` MPI processes; ``[]`` for one rank.

    Under Slurm (``SLURM_JOB_ID`` set) it is ``srun --ntasks=N --exclusive`` (``--exclusive`` gives
    each concurrent step CPUs of its own); otherwise the ``mpiexec`` beside this Python (the mpich
    wheel's) or on ``PATH``.
    """
    env = os.environ if env is None else env
    if ranks == 1:
        return []
    if env.get("SLURM_JOB_ID"):
        srun = shutil.which("srun", path=env.get("PATH"))
        if srun is None:
            raise LauncherNotFound("SLURM_JOB_ID is set but srun is not on PATH")
        return [srun, f"--ntasks={ranks}", "--exclusive"]
    beside = Path(sys.executable).parent / "mpiexec"
    mpiexec = str(beside) if beside.exists() else shutil.which("mpiexec", path=env.get("PATH"))
    if mpiexec is None:
        raise LauncherNotFound(
            "mpiexec not found beside this Python or on PATH; pip install mpich (or load your MPI), or use -n 1"
        )
    return [mpiexec, "-n", str(ranks)]


def capacity_note(ranks: int, parallel: int, env: Mapping[str, str] | None = None) -> str:
    """Under Slurm, why ``parallel`` points of ``ranks`` tasks do not fit the allocation (``""`` if they do)."""
    env = os.environ if env is None else env
    tasks = env.get("SLURM_NTASKS", "")
    if not env.get("SLURM_JOB_ID") or not tasks.isdigit() or parallel * ranks <= int(tasks):
        return ""
    return (
        f"--parallel {parallel} x -n {ranks} = {parallel * ranks} tasks but the job has SLURM_NTASKS={tasks}: "
        "points will wait for each other's steps to end"
    )


def run_command(ranks: int, arguments: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    """``[launcher...] python -m mpicomp run ARGUMENTS...``."""
    return [*launcher(ranks, env), sys.executable, "-m", "mpicomp", "run", *arguments]


def start(command: Sequence[str], log: Path) -> subprocess.Popen:
    """Start ``command`` in a session of its own, stdout and stderr appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as stream:
        return subprocess.Popen(
            list(command), stdin=subprocess.DEVNULL, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True
        )


def forward(process: subprocess.Popen, signum: int) -> None:
    """Send ``signum`` to the child's whole session (mpiexec forwards it to every rank)."""
    _signal_session(process, signum)


def kill(process: subprocess.Popen) -> None:
    """SIGKILL the child's whole session."""
    _signal_session(process, signal.SIGKILL)


def _signal_session(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass
