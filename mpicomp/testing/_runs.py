"""Whole runs from tests: in this process or under ``mpiexec -n N``, and rank independence.

``raw`` is the nested dict of TOML sections (``{"method": {"name": "gd"}, ...}``); both runners
pass it through the same validation as ``mpicomp run`` and return the parsed HDF5 results.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..comm import LocalTransport
from ..config import validate
from ..results import read_results
from ..runner import run

TIMING_COLUMNS = ("wall_time", "codec_time", "comm_time")  # measured, so they differ between runs
Raw = Mapping[str, Mapping[str, Any]]


def mpiexec_path() -> Path:
    """The ``mpiexec`` beside this Python (the ``mpich`` wheel of a venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    found = beside if beside.exists() else shutil.which("mpiexec")
    if found is None:
        raise RuntimeError("mpiexec not found: install mpicomp's test extra (the mpich wheel) or an MPI")
    return Path(found)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    return repr(value)


def overrides(raw: Raw) -> list[str]:
    """``--set section.key=value`` arguments equivalent to ``raw``."""
    return [f"{section}.{key}={_toml_value(v)}" for section, table in raw.items() for key, v in table.items()]


def run_inprocess(raw: Raw, out: Path):
    """All workers in this process (LocalTransport); returns ``read_results(out)``."""
    config = validate({section: dict(table) for section, table in raw.items()})
    run(config, out, progress=False, transport=LocalTransport(config.data["workers"]))
    return read_results(out)


def mpiexec_run(
    raw: Raw, out: Path, n: int, timeout: float = 600, program: Sequence[str] = ("-m", "mpicomp")
) -> subprocess.CompletedProcess:
    """``mpiexec -n n python PROGRAM run --set ...`` (``program``: ``-m mpicomp`` or a script wrapping its CLI)."""
    cmd = [str(mpiexec_path()), "-n", str(n), sys.executable, *program, "run", "--out", str(out), "--no-progress", "-q"]
    for item in overrides(raw):
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def run_mpiexec(raw: Raw, out: Path, n: int, timeout: float = 600, program: Sequence[str] = ("-m", "mpicomp")):
    """:func:`mpiexec_run`, which must succeed; returns ``read_results(out)``."""
    proc = mpiexec_run(raw, out, n, timeout, program)
    if proc.returncode != 0:
        raise AssertionError(f"mpiexec -n {n} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return read_results(out)


def assert_same_metrics(a, b) -> None:
    """Two runs wrote the same status, metrics (measured times aside), worker columns and final x."""
    assert a.status == b.status, (a.status, b.status)
    for name, column in a.metrics.items():
        if name not in TIMING_COLUMNS:
            np.testing.assert_array_equal(column, b.metrics[name], err_msg=name)
    for name, table in a.workers.items():
        np.testing.assert_array_equal(table, b.workers[name], err_msg=name)
    np.testing.assert_array_equal(a.final_x, b.final_x)


def check_rank_independent(config: Raw, ranks: Sequence[int] = (1, 2), timeout: float = 600) -> None:
    """Assert that a run writes identical metrics on every number of MPI ranks in ``ranks``.

    ``config`` is the nested dict of TOML sections. Each count runs under ``mpiexec -n r python -m
    mpicomp run`` (so every module a spec names must be importable there); the status, every
    metric column but the measured times, the per-worker columns and the final x must be identical.
    """
    with tempfile.TemporaryDirectory(prefix="mpicomp-ranks-") as folder:
        results = {r: run_mpiexec(config, Path(folder) / f"ranks{r}.h5", r, timeout) for r in ranks}
    first, *others = ranks
    for r in others:
        try:
            assert_same_metrics(results[first], results[r])
        except AssertionError as error:
            raise AssertionError(f"the run on {first} and on {r} ranks differs: {error}") from None
