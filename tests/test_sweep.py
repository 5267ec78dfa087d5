"""``mpicomp sweep``: expanding a sweep file, validating every point first, running what is not done.

Runs use tiny problems (breast_cancer, a few rounds, no reference optimum) on one rank, where the
launcher adds nothing; one test runs a point on two ranks and compares it with the same run by hand.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from mpicomp import launch
from mpicomp.cli import main
from mpicomp.config import ConfigError
from mpicomp.results import load_runs, read_results, tidy_table
from mpicomp.sweep import load_sweep, point_status
from tests.runs import MPIEXEC, assert_same_metrics

ROOT = Path(__file__).resolve().parents[1]
BASE = """[problem]
dataset = "sklearn:breast_cancer"
[data]
workers = 4
[run]
rounds = 3
optimum = false
"""
SWEEP = """base = "base.toml"
seeds = 2
[set]
run.rounds = 4
[grid]
"compressor.uplink" = ["identity", "qsgd(s=16)"]
"""


def write_sweep(folder: Path, text: str = SWEEP) -> Path:
    (folder / "base.toml").write_text(BASE)
    path = folder / "sweep.toml"
    path.write_text(text)
    return path


def sweep_main(*args: str) -> int:
    return main(["sweep", *map(str, args)])


def statuses(out: Path) -> dict[str, str]:
    return {p["name"]: p["status"] for p in json.loads((out / "sweep.json").read_text())["points"]}


def test_grid_times_seeds_then_points_with_set_first_and_names_from_differing_values(tmp_path):
    text = SWEEP + '[[point]]\n"method.name" = "ef21"\n"compressor.uplink" = "topk(k=0.5)"\n"run.seed" = 7\n'
    sweep = load_sweep(write_sweep(tmp_path, text))
    assert [p.overrides for p in sweep.points] == [
        {"run.rounds": 4, "compressor.uplink": "identity", "run.seed": 0},
        {"run.rounds": 4, "compressor.uplink": "identity", "run.seed": 1},
        {"run.rounds": 4, "compressor.uplink": "qsgd(s=16)", "run.seed": 0},
        {"run.rounds": 4, "compressor.uplink": "qsgd(s=16)", "run.seed": 1},
        {"run.rounds": 4, "method.name": "ef21", "compressor.uplink": "topk(k=0.5)", "run.seed": 7},
    ]
    assert [p.file for p in sweep.points] == [
        "uplink=identity_seed=0.h5",
        "uplink=identity_seed=1.h5",
        "uplink=qsgd-s16_seed=0.h5",
        "uplink=qsgd-s16_seed=1.h5",
        "uplink=topk-k0.5_seed=7_name=ef21.h5",
    ]
    config = sweep.points[2].config
    assert (config.compressor["uplink"], config.run["seed"], config.run["rounds"]) == ("qsgd(s=16)", 0, 4)
    assert config.data["workers"] == 4  # from the base config
    assert sweep.varying == ["compressor.uplink", "run.seed", "method.name"]


@pytest.mark.parametrize(
    ("grid", "expected"),
    [
        (
            '"compressor.uplink" = ["identity", "bogus"]',
            "point 2 (compressor.uplink='bogus', run.seed=0): [compressor]",
        ),
        ('"compressor.uplnk" = ["identity"]', "point 0 (run.seed=0): [compressor] unknown key 'uplnk'"),
        ('"method.stepsize" = [0.5, -1.0]', "point 2 (method.stepsize=-1.0, run.seed=0): [method] stepsize"),
        ("rounds = [1, 2]", "[grid]: key 'rounds' is not section.key"),
        ('"run.seed" = [1, 2]', "give the seeds either as seeds = ... or as run.seed"),
    ],
)
def test_a_bad_axis_or_value_is_one_line_naming_the_point_and_the_key_and_nothing_runs(
    tmp_path, capsys, grid, expected
):
    path = write_sweep(tmp_path, f'base = "base.toml"\nseeds = 2\n[grid]\n{grid}\n')
    assert sweep_main(path, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "out").exists()


def test_two_points_that_are_the_same_run_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"point 4 \(.*\) is the same run as point 0 \(uplink=identity_seed=0.h5\)"):
        load_sweep(write_sweep(tmp_path, SWEEP + '[[point]]\n"compressor.uplink" = "identity"\n"run.seed" = 0\n'))


def test_the_example_sweep_file_is_valid():
    sweep = load_sweep(ROOT / "jobscripts" / "configs" / "sweep-compressors.toml")
    assert len(sweep.points) == 18  # 3 compressors x 2 step sizes x 3 seeds
    assert sweep.varying == ["compressor.uplink", "method.stepsize", "run.seed"]


def test_count_and_dry_run_write_nothing(tmp_path, capsys):
    path = write_sweep(tmp_path)
    assert sweep_main(path, "--count") == 0
    assert capsys.readouterr().out == "4\n"
    assert sweep_main(path, "--out", tmp_path / "out", "--dry-run") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["0", "pending", "uplink=identity_seed=0.h5", 'compressor.uplink="identity"', "run.seed=0"]
    assert out[-1] == f"4 point(s), 4 to run, results in {tmp_path / 'out'}"
    assert not (tmp_path / "out").exists()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture(scope="module")
def done_sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    path = write_sweep(folder)
    out = folder / "out"
    assert sweep_main(path, "--out", out, "--parallel", "2") == 0  # two points at a time
    return path, out


def test_every_point_runs_into_its_file_and_the_index_says_finished(done_sweep):
    path, out = done_sweep
    index = json.loads((out / "sweep.json").read_text())
    assert index["sweep"] == str(path) and index["varying"] == ["compressor.uplink", "run.seed"]
    assert [p["status"] for p in index["points"]] == ["finished"] * 4
    for point in index["points"]:
        results = read_results(out / point["file"])
        assert results.config["compressor"]["uplink"] == point["overrides"]["compressor.uplink"]
        assert results.config["run"]["seed"] == point["overrides"]["run.seed"]
        assert results.metrics["round"][-1] == 4  # [set] run.rounds
        assert (out / "logs" / f"{point['name']}.log").is_file()


def test_a_point_equals_the_same_run_by_hand(done_sweep, tmp_path, capsys):
    path, out = done_sweep
    by_hand = tmp_path / "by_hand.h5"
    args = ["run", str(path.parent / "base.toml"), "--set", "run.rounds=4", "--set", 'compressor.uplink="qsgd(s=16)"']
    assert main([*args, "--set", "run.seed=1", "--out", str(by_hand), "--no-progress", "-q"]) == 0
    assert_same_metrics(read_results(out / "uplink=qsgd-s16_seed=1.h5"), read_results(by_hand))


def test_done_points_are_skipped_and_failed_or_stale_ones_run_again(done_sweep, tmp_path, capsys):
    path, out = done_sweep
    copy = tmp_path / "out"
    copy.mkdir()
    for name in [p.name for p in out.iterdir() if p.is_file()]:
        (copy / name).write_bytes((out / name).read_bytes())
    with h5py.File(copy / "uplink=identity_seed=1.h5", "r+") as f:
        f["status"][()] = np.array("failed", dtype="S16")
    with h5py.File(copy / "uplink=qsgd-s16_seed=0.h5", "r+") as f:  # killed: its writer is gone
        f["status"][()] = np.array("running", dtype="S16")
        f.attrs["pid"], f.attrs["hostname"] = np.int64(dead_pid()), socket.gethostname()
    assert point_status(copy / "uplink=qsgd-s16_seed=0.h5")[0] == "stale"
    untouched = (copy / "uplink=identity_seed=0.h5").stat().st_mtime_ns
    assert sweep_main(path, "--out", copy) == 0
    lines = capsys.readouterr().out.splitlines()
    started = [line.split("started ")[1] for line in lines if " started " in line]
    assert started == ["uplink=identity_seed=1 (again)", "uplink=qsgd-s16_seed=0 (again)"]
    assert "2 of 4 points already done or running: skipped" in lines[0]
    assert (copy / "uplink=identity_seed=0.h5").stat().st_mtime_ns == untouched
    assert set(statuses(copy).values()) == {"finished"}


def test_array_index_runs_one_point_and_out_of_range_says_which_indices(tmp_path, capsys, monkeypatch):
    path = write_sweep(tmp_path)
    assert sweep_main(path, "--out", tmp_path / "out", "--array-index", "2") == 0
    assert statuses(tmp_path / "out") == {
        "uplink=identity_seed=0": "pending",
        "uplink=identity_seed=1": "pending",
        "uplink=qsgd-s16_seed=0": "finished",
        "uplink=qsgd-s16_seed=1": "pending",
    }
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")
    capsys.readouterr()
    assert sweep_main(path, "--out", tmp_path / "out") == 2
    assert capsys.readouterr().err == f"mpicomp: sweep: array index 4 is not a point of {path}; use 0-3\n"


def test_ctrl_c_stops_cleanly_says_what_is_left_and_the_next_run_completes_only_that(tmp_path):
    path = write_sweep(tmp_path, SWEEP.replace("run.rounds = 4", "run.rounds = 300").replace("seeds = 2", "seeds = 1"))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "mpicomp", "sweep", str(path), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    sweep = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    lines = []
    for line in sweep.stdout:
        lines.append(line)
        if "[2/2] started" in line:
            sweep.send_signal(signal.SIGINT)
            break
    rest, _ = sweep.communicate(timeout=120)
    assert sweep.returncode == 130, "".join(lines) + rest
    assert "interrupted (SIGINT)" in rest and "run the same command again to finish them" in rest
    after_interrupt = statuses(out)
    assert list(after_interrupt.values())[0] == "finished"
    assert list(after_interrupt.values())[1] in ("pending", "failed", "finished")  # interrupted at any moment
    left = [name for name, status in after_interrupt.items() if status != "finished"]
    assert f"{2 - len(left)} of 2 points done, {len(left)} left" in rest
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    started = [line.split("started ")[1].split()[0] for line in again.stdout.splitlines() if " started " in line]
    assert started == left
    assert set(statuses(out).values()) == {"finished"}


def _round_starts(log: Path) -> int:
    """How many runs of the point have reached their rounds, from its log (appended run after run)."""
    return log.read_text().count(" starts\n") if log.is_file() else 0


def _sweep_until_rows(command: list[str], out: Path, rows: int) -> tuple[subprocess.Popen, str, Path]:
    """Start the sweep ``command`` of one point into ``out``; once the point's file holds ``rows`` rows,
    SIGTERM the sweep (a Slurm time limit). Returns the ended sweep, its output and the file."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    log = out / "logs" / "point0.log"
    starts_before = _round_starts(log)
    sweep = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        first = sweep.stdout.readline()
        results = out / json.loads((out / "sweep.json").read_text())["points"][0]["file"]
        deadline = time.monotonic() + 120
        while True:
            assert time.monotonic() < deadline and sweep.poll() is None, f"the point wrote no rows: {first}"
            time.sleep(0.2)
            if _round_starts(log) == starts_before:
                continue  # not yet: a resume refuses to replace the file while this test reads it
            try:
                if read_results(results).n_rows >= rows:
                    break
            except (ValueError, OSError):
                continue
    finally:
        sweep.send_signal(signal.SIGTERM)  # also on a failure: the sweep stops its point, none is left running
        rest, _ = sweep.communicate(timeout=120)
    return sweep, first + rest, results


def test_a_time_limit_checkpoints_the_running_point_and_the_next_sweep_resumes_it(tmp_path):
    """SIGTERM (Slurm's time limit, scancel) reaches the point as SIGTERM: it writes a checkpoint and
    ends resumable, and the sweep run again continues it with --resume instead of starting over."""
    text = SWEEP.replace("run.rounds = 4", "run.rounds = 10000000").replace("seeds = 2", "seeds = 1")
    path = write_sweep(tmp_path, text.replace('["identity", "qsgd(s=16)"]', '["natural"]'))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "mpicomp", "sweep", str(path), "--out", str(out)]
    sweep, said, results = _sweep_until_rows(command, out, 20)
    assert sweep.returncode == 130 and "interrupted (SIGTERM)" in said, said
    stopped = read_results(results)
    assert stopped.status == "resumable", (stopped.status, stopped.status_message)
    sweep, said, _ = _sweep_until_rows(command, out, stopped.n_rows + 20)
    assert f"[1/1] started {results.stem} (resumed from its checkpoint)" in said, said
    resumed = read_results(results)
    assert resumed.status == "resumable" and resumed.n_rows >= stopped.n_rows + 20
    np.testing.assert_array_equal(resumed.metrics["round"], np.arange(1, resumed.n_rows + 1))
    np.testing.assert_array_equal(resumed.metrics["loss"][: stopped.n_rows], stopped.metrics["loss"])


def test_compare_plot_info_and_tables_read_a_sweep_folder_through_its_index(done_sweep, tmp_path, capsys):
    path, out = done_sweep
    folder = tmp_path / "partial"
    folder.mkdir()
    index = json.loads((out / "sweep.json").read_text())
    for point in index["points"][:3]:
        (folder / point["file"]).write_bytes((out / point["file"]).read_bytes())
    (folder / "sweep.json").write_text(json.dumps(index))
    (folder / "unrelated.h5").write_bytes((out / index["points"][0]["file"]).read_bytes())
    runs, notes = load_runs(folder)
    assert [r.path.name for r in runs] == [p["file"] for p in index["points"][:3]]
    assert notes == [
        f"{folder}: 1 of 4 sweep points have no results file yet",
        f"{folder}: left out 1 .h5 file(s) that are no point of its sweep.json",
    ]
    assert main(["compare", str(folder), "--group-seeds", "--csv"]) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert [(row["n"], row["seeds"]) for row in rows] == [("2", "0,1"), ("1", "0")]  # one row per group
    assert "1 of 4 sweep points have no results file yet" in captured.err
    table = tidy_table(str(folder))
    assert len(table["run"]) == sum(r.n_rows for r in runs)
    assert main(["info", str(folder)]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("results: ") == 3 and "1 of 4 sweep points have no results file yet" in captured.err
    pytest.importorskip("matplotlib")
    assert main(["plot", str(folder), "--out", str(tmp_path / "sweep.png")]) == 0
    assert capsys.readouterr().out == f"wrote {tmp_path / 'sweep.png'} (3 runs)\n"


@pytest.mark.slow
@pytest.mark.mpi
def test_two_ranks_per_point_give_the_same_metrics_as_mpiexec_by_hand(tmp_path):
    path = write_sweep(tmp_path, 'base = "base.toml"\n[grid]\n"compressor.uplink" = ["natural", "qsgd(s=4)"]\n')
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    env.pop("SLURM_JOB_ID", None)
    command = [sys.executable, "-m", "mpicomp", "sweep", str(path), "--out", str(out), "-n", "2", "--parallel", "2"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    swept = read_results(out / "uplink=qsgd-s4.h5")
    assert swept.attrs["mpi_size"] == 2
    by_hand = tmp_path / "by_hand.h5"
    command = [str(MPIEXEC), "-n", "2", sys.executable, "-m", "mpicomp", "run", str(tmp_path / "base.toml")]
    command += ["--set", 'compressor.uplink="qsgd(s=4)"', "--out", str(by_hand), "--no-progress", "-q"]
    subprocess.run(command, check=True, env=env, timeout=300, capture_output=True)
    assert_same_metrics(swept, read_results(by_hand))


def test_a_point_that_fails_before_writing_is_reported_with_its_log_and_the_sweep_exits_1(tmp_path, capsys):
    text = 'base = "base.toml"\n[grid]\n"problem.dataset" = ["sklearn:breast_cancer", "missing.npz"]\n'
    path = write_sweep(tmp_path, text)
    assert sweep_main(path, "--out", tmp_path / "out", "--array-index", "1") == 1
    lines = capsys.readouterr().out.splitlines()
    log = tmp_path / "out" / "logs" / "dataset=missing.npz.log"
    assert f"finished dataset=missing.npz: failed (before writing its results file; exit code 2, log {log})" in lines[1]
    assert lines[2].endswith(f"1 point(s) did not finish: dataset=missing.npz; see {tmp_path / 'out' / 'logs'}")
    assert f"dataset file '{tmp_path / 'missing.npz'}' not found" in log.read_text()  # relative to the sweep file
    assert statuses(tmp_path / "out")["dataset=missing.npz"] == "pending"


def test_launcher_is_srun_under_slurm_mpiexec_otherwise_and_none_for_one_rank(tmp_path):
    srun = tmp_path / "srun"
    srun.write_text("#!/bin/sh\n")
    srun.chmod(0o755)
    slurm = {"SLURM_JOB_ID": "5", "SLURM_NTASKS": "4", "PATH": str(tmp_path)}
    assert launch.launcher(2, slurm) == [str(srun), "--ntasks=2", "--exclusive"]
    assert launch.launcher(1, slurm) == []
    assert launch.launcher(2, {"PATH": ""}) == [str(MPIEXEC), "-n", "2"]  # the mpich wheel's, beside Python
    assert launch.capacity_note(2, 2, slurm) == ""
    assert launch.capacity_note(2, 3, slurm).startswith("--parallel 3 x -n 2 = 6 tasks but the job has SLURM_NTASKS=4")
    assert launch.capacity_note(2, 3, {"PATH": ""}) == ""
