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

from mpicomp.comm import LocalTransport
from mpicomp.config import validate
from mpicomp.results import read_results
from mpicomp.runner import run

MPIEXEC = Path(sys.executable).parent / "mpiexec"


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


def run_mpiexec(raw: dict[str, dict[str, Any]], out: Path, n: int, timeout: float = 600):
    """``mpiexec -n n python -m mpicomp run --set ...``; returns ``read_results(out)``."""
    if not MPIEXEC.exists():
        raise RuntimeError(f"{MPIEXEC} not found: install the test extra (pip install -e '.[test]') for the mpich wheel")
    cmd = [str(MPIEXEC), "-n", str(n), sys.executable, "-m", "mpicomp", "run", "--out", str(out), "--no-progress", "-q"]
    for item in overrides(raw):
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"mpiexec -n {n} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return read_results(out)
