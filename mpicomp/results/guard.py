"""Whether an existing results file may be replaced: not while a run writes it or a program reads it.

A live run is a file whose status is ``running`` and whose writer looks alive
(:func:`~mpicomp.results.reader.staleness`: its process on this host, or a recent heartbeat from
another host). An open file is one another process holds an HDF5 file lock on: HDF5 readers (plain
or SWMR) keep a shared ``flock`` while the file is open; an SWMR writer releases its own once it
has switched to SWMR mode, which is why a live run is recognised by its status instead. On file
systems without ``flock`` (some NFS and Lustre mounts) only the status check applies.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from .reader import read_results, staleness
from .writer import RUNNING


def _locked_by_another_process(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def in_use(path: str | os.PathLike) -> str:
    """Why the file at ``path`` must not be replaced, resumed or repaired now, with what to do (``""`` if
    it may be, or does not exist)."""
    path = Path(path)
    if not path.is_file():
        return ""
    if _locked_by_another_process(path):
        return f"{path} is open in another program (an HDF5 reader); close it first"
    try:
        results = read_results(path)
    except (OSError, ValueError):
        return ""  # not a readable results file: nothing of a live run to protect
    if results.status == RUNNING and not staleness(results):
        pid, host = results.attrs.get("pid", "?"), results.attrs.get("hostname", "?")
        return (
            f"{path} belongs to a run still in progress (pid {pid} on {host}, last write {results.heartbeat or '?'}); "
            "wait for it or stop it"
        )
    return ""
