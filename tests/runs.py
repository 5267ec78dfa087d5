"""Run whole experiments from tests: in this process, or under ``mpiexec -n N``.

``raw`` is the nested dict of TOML sections (``{"method": {"name": "gd"}, ...}``); both runners
pass it through the same validation as ``mpicomp run`` and return the parsed HDF5 results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from mpicomp.comm import LocalTransport, Transport
from mpicomp.config import validate
from mpicomp.results import read_results
from mpicomp.runner import run

MPIEXEC = Path(sys.executable).parent / "mpiexec"
TIMING_COLUMNS = ("wall_time", "codec_time", "comm_time")  # measured, so they differ between runs
WITH_TEST_METHODS = Path(__file__).parent / "mpi_scripts" / "run_with_test_methods.py"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    return repr(value)


def overrides(raw: dict[str, dict[str, Any]]) -> list[str]:
    """``--set section.key=value`` arguments equivalent to ``raw``."""
    return [f"{section}.{key}={_toml_value(v)}" for section, table in raw.items() for key, v in table.items()]


def run_inprocess(raw: dict[str, dict[str, Any]], out: Path):
    """All workers in this process (LocalTransport); returns ``read_results(out)``."""
    config = validate(raw)
    run(config, out, progress=False, transport=LocalTransport(config.data["workers"]))
    return read_results(out)


def mpiexec_run(
    raw: dict[str, dict[str, Any]], out: Path, n: int, timeout: float = 600, test_methods: bool = False
) -> subprocess.CompletedProcess:
    """``mpiexec -n n python -m mpicomp run --set ...`` (with the test-only methods registered if asked)."""
    if not MPIEXEC.exists():
        raise RuntimeError(
            f"{MPIEXEC} not found: install the test extra (pip install -e '.[test]') for the mpich wheel"
        )
    program = [str(WITH_TEST_METHODS)] if test_methods else ["-m", "mpicomp"]
    cmd = [str(MPIEXEC), "-n", str(n), sys.executable, *program, "run", "--out", str(out), "--no-progress", "-q"]
    for item in overrides(raw):
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def run_mpiexec(raw: dict[str, dict[str, Any]], out: Path, n: int, timeout: float = 600, test_methods: bool = False):
    """:func:`mpiexec_run`, which must succeed; returns ``read_results(out)``."""
    proc = mpiexec_run(raw, out, n, timeout, test_methods)
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


class RecordingLink:
    """A transport that keeps what the last round gathered (the master's view) and broadcast."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.uploads: list[memoryview] | None = None
        self.downlink: memoryview | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)

    def gather(self, uploads):
        self.uploads = self.transport.gather(uploads)
        return self.uploads

    def broadcast(self, message):
        self.downlink = self.transport.broadcast(message)
        return self.downlink

    def play(self, method, k: int) -> tuple[list[memoryview] | None, memoryview | None]:
        """Round ``k`` of ``method``; returns ``(uploads, downlink)`` as they travelled."""
        method.round(k, self)
        return self.uploads, self.downlink
