"""Results are never lost to --overwrite, a killed run's file can be made readable by any reader,
and the run's own ways of ending (signals, errors, closed pipes) say one line, not a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from mpicomp.cli import main
from mpicomp.results import read_results
from mpicomp.results.repair import needs_repair
from mpicomp.results.writer import _create_staging, _publish
from tests.runs import assert_same_metrics

QUICK = ["--set", "run.rounds=3", "--set", "run.optimum=false", "--no-progress", "-q"]
FOREVER = [
    *["--set", "run.rounds=100000000", "--set", "run.flush_every=1", "--set", "run.optimum=false", "-q"],
    *["--set", "run.checkpoint_seconds=0"],  # a signal then ends the run as failed (with checkpoints: resumable)
]


def _finished_run(path: Path) -> Path:
    assert main(["run", "--out", str(path), *QUICK]) == 0
    return path


def _hold_open(path: Path, swmr: bool) -> subprocess.Popen:
    """Another process that keeps ``path`` open in h5py until killed."""
    code = f"import h5py, sys, time; f = h5py.File({str(path)!r}, 'r', swmr={swmr}); print('open', flush=True); time.sleep(300)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "open"
    return proc


def _start_forever(out: Path) -> subprocess.Popen:
    """A single-process run that would last for ever, once it has logged 3 rows."""
    cmd = [sys.executable, "-m", "mpicomp", "run", "--out", str(out), *FOREVER]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline and proc.poll() is None, "the run did not start writing rows"
        time.sleep(0.2)
        try:
            if read_results(out).n_rows >= 3:
                return proc
        except (ValueError, OSError):
            continue


@pytest.mark.parametrize("swmr", [False, True])
def test_overwrite_refuses_a_file_another_program_reads(tmp_path, capsys, swmr):
    """Before: the file was truncated to 0 bytes, then the run died with BlockingIOError."""
    out = _finished_run(tmp_path / "r.h5")
    before = read_results(out)
    reader = _hold_open(out, swmr)
    try:
        capsys.readouterr()
        assert main(["run", "--out", str(out), "--overwrite", *QUICK]) == 2
    finally:
        reader.kill()
        reader.wait()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("mpicomp: not overwriting: ") and "open in another program" in err[0]
    assert_same_metrics(read_results(out), before)


def test_overwrite_refuses_the_file_of_a_live_run(tmp_path, capsys):
    """Before: the intruder reported "finished" and the first run crashed writing: both results lost."""
    out = tmp_path / "live.h5"
    first = _start_forever(out)
    try:
        assert main(["run", "--out", str(out), "--overwrite", *QUICK]) == 2
        err = capsys.readouterr().err
        assert f"belongs to a run still in progress (pid {first.pid} on" in err
        rows = read_results(out).n_rows
        time.sleep(1.0)
        assert first.poll() is None and read_results(out).n_rows > rows, "the first run must go on writing"
    finally:
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=60)
    result = read_results(out)
    assert (result.status, result.status_message) == ("failed", "terminated by SIGTERM (time limit or scancel?)")
    lines = [line for line in stderr.splitlines() if line.startswith("mpicomp: ")]
    assert lines == [f"mpicomp: terminated by SIGTERM (time limit or scancel?); results so far in {out}"], stderr
    assert "Traceback" not in stderr


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="zombies are told apart through /proc")
def test_a_killed_writer_not_yet_reaped_is_not_a_live_run(tmp_path, capsys):
    """A rank killed with its launcher stays a zombie until its process manager reaps it; os.kill(pid, 0)
    still finds it. Before: a resume in that window was refused as "still in progress"."""
    out = tmp_path / "killed.h5"
    writer = _start_forever(out)
    writer.send_signal(signal.SIGKILL)
    os.waitid(os.P_PID, writer.pid, os.WEXITED | os.WNOWAIT)  # it has exited; not reaped yet: a zombie
    try:
        os.kill(writer.pid, 0)  # the pid is still taken
        assert read_results(out).status == "running"
        assert main(["run", "--out", str(out), "--overwrite", *QUICK, "--set", "run.rounds=5"]) == 0, (
            capsys.readouterr().err
        )
    finally:
        writer.communicate()
    assert read_results(out).n_rows == 5


def test_overwrite_replaces_a_finished_file_and_leaves_nothing_behind(tmp_path):
    out = _finished_run(tmp_path / "r.h5")
    assert main(["run", "--out", str(out), "--overwrite", *QUICK, "--set", "run.rounds=5"]) == 0
    assert read_results(out).n_rows == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5", "r.h5.ckpt"]  # no staged file left


def test_a_name_taken_while_the_file_was_prepared_is_not_stolen(tmp_path):
    """Two runs starting on the same new path at once: the second to publish gets one clear error."""
    out = tmp_path / "r.h5"
    staging = _create_staging(out)
    out.write_bytes(b"the other run's file")
    with pytest.raises(FileExistsError, match="was created by another process meanwhile; choose another --out"):
        _publish(staging, out, overwrite=False)
    assert out.read_bytes() == b"the other run's file"


def test_two_runs_started_on_one_new_path_at_once(tmp_path):
    out = tmp_path / "r.h5"
    cmd = [sys.executable, "-m", "mpicomp", "run", "--out", str(out), *QUICK]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = sorted((p.wait(timeout=300), p.stderr.read()) for p in procs)
    assert [code for code, _ in outcomes] == [0, 2]
    err = outcomes[1][1].strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mpicomp: ") and "Traceback" not in outcomes[1][1], err
    assert read_results(out).status == "finished"


def test_a_killed_runs_file_is_repaired_for_any_reader(tmp_path, capsys):
    out = tmp_path / "killed.h5"
    proc = _start_forever(out)
    proc.kill()
    proc.communicate()
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(out, "r")
    before = read_results(out)
    assert needs_repair(out)
    assert main(["info", str(out)]) == 0
    assert f"`mpicomp repair {out}` clears that" in capsys.readouterr().out
    assert main(["repair", str(out)]) == 0
    assert "repaired" in capsys.readouterr().out
    with h5py.File(out, "r") as f:  # a plain reader, no SWMR
        assert f["metrics/round"].shape == (before.n_rows,)
    after = read_results(out)
    assert_same_metrics(after, before)
    assert (after.status, after.config, after.attrs) == (before.status, before.config, before.attrs)
    assert main(["repair", str(out)]) == 0 and "nothing to repair" in capsys.readouterr().out


def test_repair_cuts_the_columns_a_killed_writer_left_a_row_longer(tmp_path):
    """A writer killed between appending one column and the next: repair leaves every metric and worker
    column with the rows read_results reads, for plain readers too."""
    out = _finished_run(tmp_path / "r.h5")
    before = read_results(out)
    code = (
        f"import h5py, os; f = h5py.File({str(out)!r}, 'r+', libver='latest'); f.swmr_mode = True; "
        f"f['metrics/loss'].resize({before.n_rows + 1}, axis=0); f.flush(); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert needs_repair(out) and read_results(out).n_rows == before.n_rows
    assert main(["repair", str(out)]) == 0
    with h5py.File(out, "r") as f:
        lengths = {dataset.shape[0] for group in ("metrics", "workers") for dataset in f[group].values()}
    assert lengths == {before.n_rows}
    assert_same_metrics(read_results(out), before)


def test_compare_into_a_closed_pipe_is_not_an_error(tmp_path):
    out = _finished_run(tmp_path / "r.h5")
    code = (
        "import os, sys; r, w = os.pipe(); os.close(r); os.dup2(w, 1); from mpicomp.cli import main; "
        f"sys.exit(main(['compare', '--json', {str(out)!r}]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_a_diverging_run_says_so_once_without_numpy_warnings(tmp_path, capsys, recwarn):
    args = ["run", "--out", str(tmp_path / "d.h5"), "--no-progress"]
    sets = {"method.name": '"lag"', "method.stepsize": "1e5", "run.rounds": "300", "run.optimum": "false"}
    sets["run.divergence_factor"] = "1e308"
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.count("floating-point overflow in round") == 1, err
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    assert read_results(tmp_path / "d.h5").status == "diverged"


def test_values_beyond_the_codec_range_on_every_rank_are_one_line(tmp_path, capsys):
    """Natural compression encodes |x| < 2^128; a gradient beyond it is an error every worker meets."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 4))
    features[:, 2] = np.ldexp(1.0, 140) * np.sign(features[:, 2])
    np.savez(tmp_path / "huge.npz", X=features, y=np.where(np.arange(200) % 2, 1, -1))
    sets = {
        "problem.dataset": f'"npz:{tmp_path / "huge.npz"}"',
        "data.scale": '"none"',
        "compressor.uplink": '"natural"',
    }
    args = ["run", "--out", str(tmp_path / "h.h5"), *QUICK]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "natural compression encodes magnitudes up to 2^127" in err[0], err
    assert read_results(tmp_path / "h.h5").status == "failed"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped SystemExit
def test_a_sigterm_whose_exit_a_callback_swallowed_still_ends_the_run(tmp_path, monkeypatch):
    """A signal that lands in a weakref callback: Python prints "Exception ignored" and drops the handler's
    SystemExit (a CI run kept a SIGTERMed run going for minutes). The run leaves before its next round,
    as the signal would have it, the file saying so."""
    import weakref

    import mpicomp.cli as cli

    class Target:
        pass

    signal_exit = cli._SignalExit()
    monkeypatch.setattr(cli, "_signal_exit", signal_exit)
    target = Target()
    weakref.finalize(target, cli._exit_on_sigterm, signal.SIGTERM, None)
    del target  # the handler runs in the callback: its SystemExit is printed and dropped
    assert signal_exit.signals == [signal.SIGTERM]  # it ran, and this test goes on
    out = tmp_path / "r.h5"
    assert main(["run", "--out", str(out), *QUICK]) == 1
    result = read_results(out)
    assert (result.status, result.n_rows) == ("failed", 0)  # before its first round
    assert "terminated by SIGTERM" in result.status_message
    assert (signal_exit.signals, signal_exit.in_rounds) == ([], False)  # the next run starts afresh


def test_a_sigterm_during_the_rounds_ends_the_run_between_two_rounds():
    """Once the rounds run, the handler only records the signal (nothing to drop in a callback); the hook
    the runner calls before every round leaves with the signal's status."""
    from mpicomp.cli import _SignalExit

    signal_exit = _SignalExit()
    signal_exit.between_rounds()  # the first round starts
    signal_exit.handler(signal.SIGTERM, None)
    with pytest.raises(SystemExit) as exc:
        signal_exit.between_rounds()
    assert exc.value.code == 128 + signal.SIGTERM
