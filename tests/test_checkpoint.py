"""Checkpoint and resume: a resumed run writes the same metrics as the uninterrupted one, bit for bit.

Every registered method (and its variants) runs ``ROUNDS`` rounds with ``checkpoint_every = EVERY``:
checkpoints after round EVERY and at the end. Deleting the newest one makes ``--resume`` fall back
to the previous (round EVERY) and redo rounds EVERY+1..ROUNDS over the rows already written; the
result must equal the uninterrupted file in every column but the measured times, ``/workers``,
``/final/x`` and ``/samples``. Under MPI the checkpoint is written on one number of ranks and
resumed on another.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from mpicomp import checkpoint
from mpicomp.checkpoint import CheckpointError, checkpoint_paths, plan_resume, usable_checkpoint, worker_chunks
from mpicomp.comm import LocalTransport
from mpicomp.config import ConfigError, validate
from mpicomp.methods import available_methods
from mpicomp.results import ResultsWriter, read_results
from mpicomp.runner import run
from tests.runs import MPIEXEC, assert_same_metrics, overrides, run_mpiexec
from tests.test_runner import _rank_pids

ROUNDS, EVERY = 9, 5
BREAST_CANCER = {"name": "logistic", "dataset": "sklearn:breast_cancer"}
GAUSSIAN = {"name": "gaussian", "dataset": "synthetic:d=6,points=40,spread=4", "l2": 0.0}

# name -> ([method], [compressor], [data] batch, problem); together they cover every registered method
CASES: dict[str, tuple[dict, dict, int, dict]] = {
    "gd": ({"name": "gd"}, {"uplink": "natural"}, 0, BREAST_CANCER),
    "gd-switch": ({"name": "gd"}, {"uplink": "natural", "aggregation": "switch"}, 0, BREAST_CANCER),
    "sgd": ({"name": "sgd"}, {}, 8, BREAST_CANCER),
    "quantized-sgd": (
        {"name": "quantized-sgd"},
        {"uplink": "natural", "downlink": "dither(s=4,p=2)"},
        8,
        BREAST_CANCER,
    ),
    "diana": ({"name": "diana"}, {"uplink": "natural", "downlink": "natural"}, 8, BREAST_CANCER),
    "vr-diana-lsvrg": ({"name": "vr-diana", "p": 0.3}, {"uplink": "natural"}, 4, BREAST_CANCER),
    "vr-diana-saga": ({"name": "vr-diana", "variant": "saga"}, {"uplink": "natural"}, 4, BREAST_CANCER),
    "qsvrg": ({"name": "qsvrg", "p": 0.3}, {"uplink": "natural"}, 4, BREAST_CANCER),
    "ef14": ({"name": "ef14"}, {"uplink": "topk(k=0.2)", "downlink": "topk(k=0.5)"}, 8, BREAST_CANCER),
    "ef21": ({"name": "ef21"}, {"uplink": "topk(k=0.2)", "downlink": "topk(k=0.5)"}, 8, BREAST_CANCER),
    "ef21-sgdm": ({"name": "ef21-sgdm"}, {"uplink": "topk(k=0.2)", "downlink": "topk(k=0.5)"}, 8, BREAST_CANCER),
    "ef21-sgd2m": ({"name": "ef21-sgd2m"}, {"uplink": "topk(k=0.2)"}, 8, BREAST_CANCER),
    "lag-wk": ({"name": "lag", "xi": [0.5], "t_bar": 2, "D": 2}, {}, 0, BREAST_CANCER),
    "lag-ps": ({"name": "lag", "variant": "ps", "xi": [0.5], "t_bar": 2, "D": 2}, {}, 0, BREAST_CANCER),
    "laq": ({"name": "laq", "xi": [0.5], "t_bar": 3, "D": 2}, {}, 0, BREAST_CANCER),
    "slaq": ({"name": "slaq", "xi": [0.5], "t_bar": 3, "D": 2}, {}, 8, BREAST_CANCER),
    "qlsd-sharp": ({"name": "qlsd", "variant": "sharp"}, {"uplink": "qsgd(s=16)"}, 4, GAUSSIAN),
    "qlsd-star": ({"name": "qlsd", "variant": "star"}, {"uplink": "qsgd(s=16)"}, 4, GAUSSIAN),
    "qlsd-plusplus": ({"name": "qlsd", "refresh": 4}, {"uplink": "qsgd(s=16)"}, 4, GAUSSIAN),
}


STATELESS = {"gd", "gd-switch", "sgd", "quantized-sgd", "qlsd-sharp", "qlsd-star"}  # no worker state across rounds


def config_of(case: str, **run_keys) -> dict:
    method, compressor, batch, problem = CASES[case]
    sampler = method["name"] == "qlsd"
    run_table = {"rounds": ROUNDS, "checkpoint_every": EVERY, "seed": 3, "optimum": not sampler, **run_keys}
    if sampler:
        run_table.update(burn_in=2, thin=2)
    return {
        "problem": problem,
        "data": {"workers": 5, "batch": batch},
        "method": method,
        "compressor": compressor,
        "run": run_table,
    }


def assert_same_run(reference, resumed) -> None:
    """Same status, metrics (times aside), /workers, final x and /samples."""
    assert_same_metrics(reference, resumed)
    if reference.samples is None:
        assert resumed.samples is None
    else:
        np.testing.assert_array_equal(reference.samples, resumed.samples)


def test_every_registered_method_has_a_case():
    own = {name for name, cls in available_methods().items() if cls.__module__.startswith("mpicomp.")}
    assert own <= {method["name"] for method, *_ in CASES.values()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_resume_from_an_earlier_checkpoint_repeats_the_run_bit_for_bit(tmp_path, case):
    config = validate(config_of(case))
    out = tmp_path / "run.h5"
    run(config, out, progress=False, transport=LocalTransport(5))
    reference = read_results(shutil.copy(out, tmp_path / "reference.h5"))
    newest, previous = checkpoint_paths(out)
    newest.unlink()  # the fallback: the checkpoint after round EVERY
    with h5py.File(previous, "r") as f:  # /workers/<w> exactly when some worker has state
        assert f.attrs["stateless_workers"] == ("workers" not in f)
        assert f.attrs["stateless_workers"] == (case in STATELESS)
    resumed_config, resume = plan_resume(out, [])
    assert (resume.checkpoint, resume.round) == (previous, EVERY)
    run(resumed_config, out, progress=False, transport=LocalTransport(5), resume=resume)
    assert_same_run(reference, read_results(out))


def test_a_finished_run_extended_with_more_rounds_equals_the_longer_run(tmp_path):
    raw = config_of("diana")
    longer = tmp_path / "longer.h5"
    run(validate({**raw, "run": {**raw["run"], "rounds": 14}}), longer, progress=False, transport=LocalTransport(5))
    out = tmp_path / "run.h5"
    run(validate(raw), out, progress=False, transport=LocalTransport(5))
    config, resume = plan_resume(out, ["run.rounds=14", "run.master_share=0.5"])  # the layout may change too
    assert resume.round == ROUNDS and config.run["master_share"] == 0.5
    run(config, out, progress=False, transport=LocalTransport(5), resume=resume)
    assert_same_run(read_results(longer), read_results(out))


def test_worker_chunks_bound_the_bytes_and_keep_at_least_one_worker():
    sizes = np.array([3, 3, 3, 10, 1, 1])
    assert list(worker_chunks(sizes, 6)) == [range(0, 2), range(2, 3), range(3, 4), range(4, 6)]


# --- bad input: one line, exit 2, the file untouched ----------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run.h5"
    run(validate(config_of("ef21")), out, progress=False, transport=LocalTransport(5))
    return out


def _copy_run(source: Path, folder: Path) -> Path:
    out = folder / source.name
    for path in (source, *checkpoint_paths(source)):
        shutil.copy(path, folder / path.name)
    return out


def test_a_finished_run_without_more_rounds_is_refused(finished_run):
    with pytest.raises(CheckpointError, match=r"finished after round 9 .*--set run.rounds=N with N > 9"):
        plan_resume(finished_run, [])


def test_only_rounds_stop_rules_and_checkpoint_keys_may_change(finished_run):
    with pytest.raises(ConfigError, match=r"--set 'method.stepsize=0.1': a resumed run keeps its config"):
        plan_resume(finished_run, ["method.stepsize=0.1"])


def test_a_damaged_checkpoint_falls_back_then_none_is_usable(finished_run, tmp_path):
    out = _copy_run(finished_run, tmp_path)
    newest, previous = checkpoint_paths(out)
    with h5py.File(newest, "r+") as f:
        f["shared/replica/x"][0] += 1.0  # bytes change, checksum does not
    path, attrs = usable_checkpoint(out)
    assert (path, attrs["round"]) == (previous, EVERY)
    previous.write_bytes(previous.read_bytes()[:1000])  # cut short
    with pytest.raises(CheckpointError, match="no usable checkpoint .*does not match its checksum.*cannot be read"):
        usable_checkpoint(out)


def test_a_checkpoint_of_another_run_is_refused(finished_run, tmp_path):
    out = _copy_run(finished_run, tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    run(validate(config_of("ef14")), other / "run.h5", progress=False, transport=LocalTransport(5))
    shutil.copy(checkpoint_paths(other / "run.h5")[0], checkpoint_paths(out)[0])
    with pytest.raises(CheckpointError, match="belongs to another run"):
        plan_resume(out, ["run.rounds=20"])


def test_a_checkpoint_without_its_attributes_is_not_usable(finished_run, tmp_path):
    """Before: the missing attribute surfaced as a KeyError out of plan_resume (and a hang under mpiexec)."""
    out = _copy_run(finished_run, tmp_path)
    for path in checkpoint_paths(out):
        with h5py.File(path, "r+") as f:
            del f.attrs["mpicomp_version"]
    with pytest.raises(CheckpointError, match="no usable checkpoint .*lacks the attributes mpicomp_version"):
        plan_resume(out, ["run.rounds=20"])


def test_a_results_file_of_another_program_is_refused(tmp_path):
    """A results file whose config is not mpicomp run's tables (ResultsWriter used by a script): before,
    an AttributeError out of plan_resume."""
    out = tmp_path / "other.h5"
    columns = {"config": {"lr": 0.1}, "metrics": {"loss": "float64"}, "worker_metrics": {}}
    with ResultsWriter(out, **columns, n_workers=1, d=2, mpi_size=1) as writer:
        writer.log({"loss": 1.0})
        writer.finish("finished")
    with pytest.raises(CheckpointError, match="holds no config of `mpicomp run`"):
        plan_resume(out, [])


def test_cli_bad_resume_says_one_line_exits_2_and_leaves_the_file(finished_run, tmp_path):
    out = _copy_run(finished_run, tmp_path)
    before = out.read_bytes()
    for path in checkpoint_paths(out):
        path.unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "mpicomp", "run", "--resume", str(out), "--set", "run.rounds=20"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "cannot resume: no usable checkpoint" in proc.stderr, proc.stderr
    assert out.read_bytes() == before


# --- MPI: write on one number of ranks, resume on another -----------------------------------------


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def _command(n: int, args: list[str]) -> list[str]:
    """``mpicomp run ARGS`` in one process (n = 1) or under ``mpiexec -n n``."""
    launcher = [str(MPIEXEC), "-n", str(n)] if n > 1 else []
    return [*launcher, sys.executable, "-m", "mpicomp", "run", *args, "--no-progress"]


def _resume_cli(out: Path, n: int, extra: list[str] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(n, ["--resume", str(out), "-q", *extra]),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=ENV,
    )


def _rows(out: Path) -> int:
    try:
        return len(read_results(out).metrics["round"])
    except (OSError, ValueError, KeyError):
        return 0


def interrupted_run(
    raw: dict, out: Path, n: int, signum: int, ready, last_rank: bool = False
) -> subprocess.CompletedProcess:
    """Start ``mpicomp run`` on n ranks, wait until ``ready()``, send ``signum`` (SIGKILL: to every
    process of the job; else to the launcher, which forwards it to every rank as srun does, or
    with ``last_rank`` to the last rank alone), wait for the end."""
    args = ["--out", str(out), *[word for item in overrides(raw) for word in ("--set", item)]]
    proc = subprocess.Popen(
        _command(n, args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before the signal: {proc.communicate()}"
    if signum == signal.SIGKILL:  # hydra starts each rank in a session of its own: kill each
        for pid in [*_rank_pids(out), proc.pid]:
            os.kill(pid, signal.SIGKILL)
    elif last_rank:
        os.kill(_rank_pids(out)[-1], signum)
    else:
        proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    deadline = time.monotonic() + 30
    while _rank_pids(out) and time.monotonic() < deadline:  # every rank is gone before a resume starts
        time.sleep(0.05)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def long_config(case: str, rounds: int) -> dict:
    raw = config_of(case, rounds=rounds, flush_every=1, log_every=10)
    raw["run"]["checkpoint_every"] = 100
    return raw


@pytest.mark.mpi
@pytest.mark.parametrize(
    ("ranks", "last_rank"),
    [(2, True), (1, False), pytest.param(2, False, marks=pytest.mark.slow)],
    ids=["rank 1 of 2", "one process", "mpiexec"],
)
def test_sigterm_checkpoints_ends_resumable_and_the_resumed_run_is_the_same(tmp_path, ranks, last_rank):
    """SIGTERM to the last rank (forwarded to rank 0), to a single-process run (Python's handler) or
    to mpiexec (every rank): a checkpoint after the current round, status resumable, exit 3, a file
    h5py opens plainly, nothing in the log after the status; resumed on another number of ranks it
    equals the uninterrupted run."""
    raw = long_config("ef21-sgdm", 300)
    reference = tmp_path / "reference.h5"
    run(validate(raw), reference, progress=False, transport=LocalTransport(5))
    out = tmp_path / "run.h5"
    proc = interrupted_run(raw, out, ranks, signal.SIGTERM, lambda: _rows(out) >= 2, last_rank)
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr and "resumable: stopped by a signal" in proc.stdout, proc.stderr
    with h5py.File(out, "r") as f:
        assert f["status"][()] == b"resumable"
    proc = _resume_cli(out, 3 - ranks)
    assert proc.returncode == 0, proc.stderr
    assert_same_run(read_results(reference), read_results(out))


@pytest.mark.mpi
def test_a_resume_that_fails_unforeseen_ends_every_rank_in_one_line(finished_run, tmp_path, monkeypatch):
    """Rank 0 alone reads the files; an error it met that no check names (here: a checkpoint whose config
    attribute is not JSON) used to leave the other rank waiting for the plan for ever."""
    out = _copy_run(finished_run, tmp_path)
    for path in checkpoint_paths(out):
        with h5py.File(path, "r+") as f:
            f.attrs["config"] = "{not json"
    proc = subprocess.run(
        _command(2, ["--resume", str(out), "--set", "run.rounds=20"]),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=ENV,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("mpicomp: cannot resume") == 1 and "JSONDecodeError" in proc.stderr, proc.stderr


@pytest.mark.parametrize("ranks", [1, pytest.param(2, marks=pytest.mark.mpi)])
def test_checkpoints_the_disk_refuses_leave_a_finished_run_finished(tmp_path, ranks, caplog):
    """Before: a final checkpoint that could not be written turned a finished run into "failed",
    without /final/x (a sweep then re-runs it). Now the master warns, the run goes on and finishes as it
    would have, and no rank waits for another; nothing of the checkpoint is left behind."""
    raw = config_of("diana")
    reference = run(validate(raw), tmp_path / "reference.h5", progress=False, transport=LocalTransport(5))
    out = tmp_path / "run.h5"
    obstacle = Path(f"{checkpoint_paths(out)[0]}.tmp")
    obstacle.mkdir()  # the checkpoint's temporary file cannot be created
    if ranks == 1:
        with caplog.at_level(logging.WARNING, logger="mpicomp"):
            run(validate(raw), out, progress=False, transport=LocalTransport(5))
        warnings = [r.getMessage() for r in caplog.records if "cannot write the checkpoint" in r.getMessage()]
        assert len(warnings) == 2  # after round EVERY (the run goes on), after the last (the results are whole)
        assert "the run goes on" in warnings[0] and "the results are complete" in warnings[1]
        result = read_results(out)
    else:
        result = run_mpiexec(raw, out, 2)
    assert result.status == "finished" and reference.status == "finished"
    assert_same_run(read_results(tmp_path / "reference.h5"), result)
    assert not any(path.exists() for path in checkpoint_paths(out)) and obstacle.is_dir()


def test_a_checkpoint_cut_short_by_a_write_error_is_removed(tmp_path, monkeypatch):
    """A write error after the workers' states went in (a full disk): the partial file goes, the
    checkpoints written before stay as they were."""
    raw = config_of("diana")
    out = tmp_path / "run.h5"
    run(validate(raw), out, progress=False, transport=LocalTransport(5))
    newest, previous = checkpoint_paths(out)
    before = newest.read_bytes(), previous.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write_run", full_disk)
    config, resume = plan_resume(out, ["run.rounds=12"])
    run(config, out, progress=False, transport=LocalTransport(5), resume=resume)
    assert read_results(out).status == "finished"
    assert (newest.read_bytes(), previous.read_bytes()) == before
    assert not Path(f"{newest}.tmp").exists()


@pytest.mark.mpi
def test_a_signal_whose_checkpoint_cannot_be_written_ends_the_run_failed(tmp_path):
    """SIGTERM asks for a checkpoint; when it cannot be written the run is not "resumable": every rank
    ends with the same error, one line, and the file says why."""
    raw = long_config("ef21-sgdm", 300)
    out = tmp_path / "run.h5"
    Path(f"{checkpoint_paths(out)[0]}.tmp").mkdir()
    proc = interrupted_run(raw, out, 2, signal.SIGTERM, lambda: _rows(out) >= 2)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("mpicomp: ")]
    assert len(lines) == 1 and "stopped by a signal after round" in lines[0], proc.stderr
    assert "cannot write the checkpoint" in lines[0] and "Traceback" not in proc.stderr
    assert lines[0].startswith("mpicomp: run failed: ") and "-v prints" not in lines[0]  # an I/O error, not a defect
    result = read_results(out)
    assert result.status == "failed" and "stopped by a signal after round" in result.status_message


@pytest.mark.mpi
def test_kill_9_after_a_checkpoint_resumes_from_it_on_another_number_of_ranks(tmp_path):
    raw = long_config("diana", 300)
    reference = tmp_path / "reference.h5"
    run(validate(raw), reference, progress=False, transport=LocalTransport(5))
    out = tmp_path / "run.h5"
    proc = interrupted_run(raw, out, 1, signal.SIGKILL, lambda: checkpoint_paths(out)[0].exists())
    assert proc.returncode == -signal.SIGKILL and not _rank_pids(out)
    proc = _resume_cli(out, 2)
    assert proc.returncode == 0, proc.stderr
    assert_same_run(read_results(reference), read_results(out))


@pytest.mark.mpi
@pytest.mark.parametrize(
    ("case", "written", "resumed"),
    [("qlsd-plusplus", 3, 1), pytest.param("vr-diana-saga", 2, 3, marks=pytest.mark.slow)],
)
def test_resume_on_another_number_of_ranks(tmp_path, case, written, resumed):
    raw = config_of(case)
    reference = tmp_path / "reference.h5"
    run(validate(raw), reference, progress=False, transport=LocalTransport(5))
    out = tmp_path / "run.h5"
    run_mpiexec(raw, out, written)
    checkpoint_paths(out)[0].unlink()
    proc = _resume_cli(out, resumed)
    assert proc.returncode == 0, proc.stderr
    assert_same_run(read_results(reference), read_results(out))


@pytest.mark.slow
@pytest.mark.mpi
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_method_interrupted_at_a_random_round_resumes_on_another_rank_count(tmp_path, case):
    """The matrix: each method is written on 1, 2 or 3 ranks, interrupted after a random logged row by
    kill -9 (after a checkpoint) or SIGTERM, and resumed on another rank count."""
    index = sorted(CASES).index(case)
    rng = np.random.default_rng(index)
    written, resumed = rng.choice([1, 2, 3], size=2, replace=False)
    signum = (signal.SIGKILL, signal.SIGTERM)[index % 2]
    rows = int(rng.integers(1, 12))
    raw = long_config(case, 300)
    reference = tmp_path / "reference.h5"
    run(validate(raw), reference, progress=False, transport=LocalTransport(5))
    out = tmp_path / "run.h5"

    def ready() -> bool:
        return _rows(out) >= rows and (signum != signal.SIGKILL or checkpoint_paths(out)[0].exists())

    proc = interrupted_run(raw, out, int(written), signum, ready)
    assert proc.returncode == (-signal.SIGKILL if signum == signal.SIGKILL else 3), proc.stderr
    proc = _resume_cli(out, int(resumed))
    assert proc.returncode == 0, proc.stderr
    assert_same_run(read_results(reference), read_results(out))
