"""The SLURM scripts, run without SLURM: a shim ``srun`` that starts the ranks with mpiexec.

A real single-node Slurm (slurmctld, slurmd, munge from Debian's packages) takes longer than a
minute to install and configure on a fresh CI machine, so these tests check what the scripts
themselves do: which arguments reach ``mpicomp sweep`` / ``mpicomp run`` and where the results go.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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
SWEEP = """base = "base.toml"
[grid]
"compressor.uplink" = ["identity", "natural"]
"""
# srun as the sweep calls it (srun --ntasks=N --exclusive CMD...), started with mpiexec -n N
SRUN = """#!/bin/sh
n=2
while [ $# -gt 0 ]; do
  case "$1" in
    --ntasks=*) n="${1#--ntasks=}"; shift ;;
    --exclusive) shift ;;
    *) break ;;
  esac
done
exec "MPIEXEC" -n "$n" "$@"
"""


@pytest.fixture
def slurm_env(tmp_path):
    """A folder with ``sweep.toml`` (over ``base.toml``) and a shim ``srun`` on PATH; the environment of
    an array task of a 2-task job."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text(SRUN.replace("MPIEXEC", str(Path(sys.executable).parent / "mpiexec")))
    srun.chmod(0o755)
    (tmp_path / "base.toml").write_text(CONFIG)
    (tmp_path / "sweep.toml").write_text(SWEEP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI_", "OMPI_"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(SLURM_ARRAY_JOB_ID="77", SLURM_JOB_ID="78", SLURM_NTASKS="2", OMP_NUM_THREADS="1")
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
def test_an_array_task_runs_its_point_of_any_sweep_file_with_srun_into_a_folder_of_its_own(slurm_env):
    folder, env = slurm_env
    done = sweep(folder, env, 1, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:3] == ["1", "pending", "uplink=natural.h5"]  # task 1 is point 1 only
    done = sweep(folder, env, 1)
    assert done.returncode == 0, done.stdout + done.stderr
    out = folder / "results" / "sweeps" / "sweep"
    result = read_results(out / "uplink=natural.h5")
    assert result.config["compressor"]["uplink"] == "natural"
    assert result.metrics["round"][-1] == 50
    assert result.attrs["mpi_size"] == 2  # srun --ntasks=$SLURM_NTASKS
    assert not (out / "uplink=identity.h5").exists()


def test_an_array_task_beyond_the_sweep_says_which_array_to_use(slurm_env):
    folder, env = slurm_env
    done = sweep(folder, env, 9)
    assert done.returncode == 2
    assert done.stderr.strip() == "mpicomp: sweep: array index 9 is not a point of sweep.toml; use 0-1"


@pytest.mark.mpi
def test_a_job_log_shows_progress_lines_with_elapsed_time_and_estimate(slurm_env):
    """Rank 0 writes to a pipe in a job: a plain line at each 10% (the scripts once passed --no-progress,
    which left a 50-round log with nothing between start and end)."""
    folder, env = slurm_env
    done = subprocess.run(
        ["bash", str(ROOT / "jobscripts" / "slurm_single.sh"), "base.toml"],
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


@pytest.mark.slow
@pytest.mark.mpi
def test_a_reproduce_array_task_runs_one_run_of_the_claims_with_srun(slurm_env):
    """``slurm_reproduce.sh``: task I runs the I-th run of the selected claims (here the second run of the
    quick DIANA claim) through srun with $SLURM_NTASKS ranks, into results/reproduce/<claim>/<mode>/, and
    writes no report (the job without --array does that)."""
    folder, env = slurm_env
    script = ["bash", str(ROOT / "jobscripts" / "slurm_reproduce.sh"), "diana-linear", "--quick"]
    done = subprocess.run(
        script, cwd=folder, env={**env, "SLURM_ARRAY_TASK_ID": "1"}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    claim = folder / "results" / "reproduce" / "diana-linear"
    assert sorted(path.name for path in (claim / "quick").glob("*.h5")) == ["name=quantized-sgd.h5"]
    result = read_results(claim / "quick" / "name=quantized-sgd.h5")
    assert result.config["method"]["name"] == "quantized-sgd" and result.attrs["mpi_size"] == 2
    assert not (claim / "report.md").exists()
    beyond = subprocess.run(
        script, cwd=folder, env={**env, "SLURM_ARRAY_TASK_ID": "2"}, capture_output=True, text=True, timeout=300
    )
    assert beyond.returncode == 2
    assert beyond.stderr.strip() == "mpicomp: reproduce: array index 2 is not a run; use 0-1"


@pytest.mark.slow
@pytest.mark.mpi
def test_single_job_checkpoints_on_usr1_requeues_and_resumes_to_the_same_results(tmp_path):
    """Slurm's ``--signal=B:USR1@120``: USR1 to the batch script reaches the run, which checkpoints and
    ends resumable; the script calls ``scontrol requeue``; the requeued job (same id) resumes, and
    the results equal an uninterrupted run's."""
    from tests.runs import assert_same_metrics

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(f'#!/bin/sh\nexec "{Path(sys.executable).parent / "mpiexec"}" -n 2 "$@"\n')
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> "{tmp_path / "scontrol.log"}"\n')
    for shim in bin_dir.iterdir():
        shim.chmod(0o755)
    (tmp_path / "long.toml").write_text(
        '[problem]\ndataset = "sklearn:breast_cancer"\n[data]\nworkers = 4\nbatch = 8\n[method]\nname = "diana"\n'
        '[compressor]\nuplink = "natural"\n[run]\nrounds = 400\noptimum = false\nflush_every = 1\nlog_every = 10\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI_", "OMPI_"))}
    env.update(PATH=f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    env.update(SLURM_JOB_ID="91", OMP_NUM_THREADS="1")
    script = ["bash", str(ROOT / "jobscripts" / "slurm_single.sh"), "long.toml"]
    out = tmp_path / "results" / "long-91.h5"
    job = subprocess.Popen(script, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while job.poll() is None and time.monotonic() < deadline:
        try:
            if len(read_results(out).metrics["round"]) >= 2:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    job.send_signal(signal.SIGUSR1)
    stdout, stderr = job.communicate(timeout=120)
    assert job.returncode == 3, stderr
    assert read_results(out).status == "resumable"
    assert (tmp_path / "scontrol.log").read_text() == "requeue 91\n"
    again = subprocess.run(script, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stderr and read_results(out).status == "finished"
    reference = subprocess.run(
        [sys.executable, "-m", "mpicomp", "run", "long.toml", "--out", "reference.h5", "--no-progress", "-q"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert reference.returncode == 0, reference.stderr
    assert_same_metrics(read_results(tmp_path / "reference.h5"), read_results(out))
