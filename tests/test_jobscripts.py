"""The SLURM scripts, run without SLURM: a shim ``srun`` that starts the ranks with mpiexec.

A real single-node Slurm (slurmctld, slurmd, munge from Debian's packages) takes longer than a
minute to install and configure on a fresh CI machine, so these tests check what the scripts
themselves do: which arguments reach ``mpicomp run`` and where the results go.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mpicomp.results import read_results

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """[problem]
dataset = "sklearn:breast_cancer"
[run]
rounds = 50
optimum = false
"""


@pytest.fixture
def slurm_env(tmp_path):
    """A folder with ``sweep.toml`` and a shim ``srun`` on PATH; the environment of an array task."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text(f'#!/bin/sh\nexec "{Path(sys.executable).parent / "mpiexec"}" -n 2 "$@"\n')
    srun.chmod(0o755)
    (tmp_path / "sweep.toml").write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI_", "OMPI_"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(SLURM_ARRAY_JOB_ID="77", SLURM_JOB_ID="78", OMP_NUM_THREADS="1")
    return tmp_path, env


def sweep(folder: Path, env: dict, task: int, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "jobscripts" / "slurm_sweep.sh"), "sweep.toml", *extra],
        cwd=folder,
        env={**env, "SLURM_ARRAY_TASK_ID": str(task)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.mpi
def test_sweep_task_forwards_extra_settings_and_names_results_by_job_and_task(slurm_env):
    folder, env = slurm_env
    done = sweep(folder, env, 1, "--set", "run.rounds=3")
    assert done.returncode == 0, done.stderr
    result = read_results(folder / "results" / "sweep" / "sweep-77_1.h5")
    assert result.config["compressor"]["uplink"] == "natural"  # task 1's spec
    assert result.metrics["round"][-1] == 3  # the extra --set reached mpicomp run
    assert result.attrs["mpi_size"] == 2


def test_sweep_task_without_a_spec_says_which_array_to_use(slurm_env):
    folder, env = slurm_env
    done = sweep(folder, env, 9)
    assert done.returncode == 2
    assert done.stderr.strip() == "slurm_sweep.sh: array task 9 has no spec; use --array=0-4"


@pytest.mark.mpi
def test_a_job_log_shows_progress_lines_with_elapsed_time_and_estimate(slurm_env):
    """Rank 0 writes to a pipe in a job: a plain line at each 10% (the scripts once passed --no-progress,
    which left a 50-round log with nothing between start and end)."""
    folder, env = slurm_env
    done = subprocess.run(
        ["bash", str(ROOT / "jobscripts" / "slurm_single.sh"), "sweep.toml"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [line.split(" INFO ", 1)[1] for line in done.stderr.splitlines() if " INFO round " in line]
    assert [line.split()[1] for line in lines] == [f"{5 * j}/50" for j in range(1, 11)], done.stderr
    assert all("elapsed " in line and " left" in line for line in lines)
