"""A real single-node Slurm (slurmctld and slurmd on this host, MPI through ``srun --mpi=pmi2``):
``jobscripts/slurm_single.sh`` under ``scancel`` and under the time-limit signal, with requeue.

Slow and opt-in: needs root, Debian's ``slurm-wlm`` (``apt-get install slurm-wlm``, which brings
munge) and the ports 6817/6818. The fixture starts munged (if it is not running), slurmctld and
slurmd with a configuration in a temporary folder, and stops the two Slurm daemons it started.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mpicomp.results import read_results
from tests.runs import assert_same_metrics

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """[problem]
dataset = "sklearn:breast_cancer"
[data]
workers = 4
batch = 8
[method]
name = "diana"
[compressor]
uplink = "natural"
[run]
rounds = 20000
optimum = false
log_every = 10
"""

pytestmark = [pytest.mark.slow, pytest.mark.mpi]


def _slurm_conf(folder: Path, host: str) -> str:
    return f"""ClusterName=mpicomp
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmi2
ReturnToService=2
JobRequeue=1
MinJobAge=600
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
NodeName={host} CPUs={os.cpu_count()} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:2
"""


@pytest.fixture
def slurm(tmp_path_factory) -> dict[str, str]:
    """The environment of a job submitter on a one-node cluster started for each test (a second
    MPI job on a cluster whose first job was cancelled failed in MPI_Init here)."""
    if os.geteuid() != 0 or not all(shutil.which(name) for name in ("slurmctld", "slurmd", "sbatch", "munged")):
        pytest.skip("needs root and slurm-wlm (apt-get install slurm-wlm)")
    folder = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    conf = folder / "slurm.conf"
    conf.write_text(_slurm_conf(folder, socket.gethostname()))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI_", "OMPI_"))}
    env.update(SLURM_CONF=str(conf), OMP_NUM_THREADS="1", PATH=f"{Path(sys.executable).parent}:{env['PATH']}")
    if subprocess.run(["pgrep", "-x", "munged"], capture_output=True, check=False).returncode != 0:
        subprocess.run(["munged", "--force"], check=True)
    started = []
    for daemon in ("slurmctld", "slurmd"):
        subprocess.run([daemon], env=env, check=True)
        started.append(folder / f"{daemon}.pid")
    try:
        deadline = time.monotonic() + 60
        while "idle" not in subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True).stdout:
            assert time.monotonic() < deadline, (folder / "slurmctld.log").read_text()[-2000:]
            time.sleep(0.5)
        yield env
    finally:
        for pid_file in started:
            if pid_file.exists():
                os.kill(int(pid_file.read_text()), signal.SIGTERM)


def _submit(env: dict[str, str], folder: Path, *extra: str) -> str:
    (folder / "long.toml").write_text(CONFIG)
    done = subprocess.run(
        ["sbatch", "--parsable", "--ntasks=2", *extra, str(ROOT / "jobscripts" / "slurm_single.sh"), "long.toml"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().split(";")[0]


def _state(env: dict[str, str], job: str) -> str:
    shown = subprocess.run(["scontrol", "show", "job", job], env=env, capture_output=True, text=True).stdout
    return next((word.split("=")[1] for word in shown.split() if word.startswith("JobState=")), "")


def _wait_for_rows(out: Path, rows: int = 3) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if len(read_results(out).metrics["round"]) >= rows:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{out} got no rows")


def test_scancel_checkpoints_and_every_rank_ends_within_seconds(slurm, tmp_path):
    job = _submit(slurm, tmp_path)
    out = tmp_path / "results" / f"long-{job}.h5"
    _wait_for_rows(out)
    cancelled = time.monotonic()
    subprocess.run(["scancel", job], env=slurm, check=True)
    while _state(slurm, job) not in ("CANCELLED", "COMPLETED", "FAILED"):
        assert time.monotonic() - cancelled < 10, "the job did not end within 10 s of scancel"
        time.sleep(0.1)
    assert read_results(out).status == "resumable"
    log = (tmp_path / f"mpicomp-{job}.out").read_text()
    assert "Traceback" not in log and "resumable after" in log, log


def test_time_limit_signal_requeues_and_the_resumed_job_has_the_uninterrupted_results(slurm, tmp_path):
    """``--signal=B:USR1@120`` is sent by Slurm at a time it chooses (up to a minute early); here
    ``scancel --signal=USR1 --batch`` sends the same signal to the batch script at once."""
    job = _submit(slurm, tmp_path)
    out = tmp_path / "results" / f"long-{job}.h5"
    _wait_for_rows(out)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], env=slurm, check=True)
    deadline = time.monotonic() + 600  # a requeued job waits about two minutes before it starts again
    while _state(slurm, job) != "COMPLETED":
        assert time.monotonic() < deadline and _state(slurm, job) not in ("FAILED", "CANCELLED"), _state(slurm, job)
        time.sleep(1)
    log = (tmp_path / f"mpicomp-{job}.out").read_text()
    assert "resumable after" in log and "resuming" in log and "Traceback" not in log, log
    reference = subprocess.run(
        [sys.executable, "-m", "mpicomp", "run", "long.toml", "--out", "reference.h5", "-q"],
        cwd=tmp_path,
        env=slurm,
        capture_output=True,
        text=True,
        check=False,
    )
    assert reference.returncode == 0, reference.stderr
    assert_same_metrics(read_results(tmp_path / "reference.h5"), read_results(out))
