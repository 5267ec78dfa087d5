"""Results layer: HDF5 round trip, status handling, streaming/flush, crash safety, live SWMR reading."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta

import h5py
import numpy as np
import pytest

from mpicomp.results import FINAL_STATUSES, ResultsWriter, read_results, summarize
from mpicomp.results.writer import failure_message, git_commit

N_WORKERS = 3
D = 4
METRICS = {"round": "int64", "loss": "float64", "suboptimality": np.float64, "bits_up": np.dtype("int64")}
WORKER_METRICS = {"bytes_up": "int64", "grad_norm": "float64"}
CONFIG = {
    "problem": {"name": "logreg", "dataset": "a9a", "l2": 1e-3},
    "method": {"name": "diana", "lr": 0.5},
    "compressors": {"up": "natural∘randk(k=0.1)", "down": "identity"},
    "n_workers": N_WORKERS,
    "rounds": 50,
    "seed": np.int64(7),
    "stop": {"target_suboptimality": 1e-6, "bit_budget": None},
}


def make_writer(path, **overrides) -> ResultsWriter:
    options = {
        "config": CONFIG,
        "metrics": METRICS,
        "worker_metrics": WORKER_METRICS,
        "n_workers": N_WORKERS,
        "d": D,
        "mpi_size": 2,
    }
    options.update(overrides)
    return ResultsWriter(path, **options)


def row(r: int) -> dict:
    return {"round": r, "loss": 1.0 / (r + 1), "suboptimality": 2.0**-r, "bits_up": 1000 * r}


def worker_row(r: int) -> dict:
    return {"bytes_up": np.arange(N_WORKERS) * r, "grad_norm": np.full(N_WORKERS, 0.5 * r)}


def test_round_trip_of_config_attrs_metrics_workers_samples_and_final_x(tmp_path):
    path = tmp_path / "run.h5"
    rng = np.random.default_rng(0)
    samples = rng.standard_normal((5, D))
    final_x = rng.standard_normal(D)
    with make_writer(path, flush_every=4, sample_dim=D) as writer:
        for r in range(11):  # not a multiple of flush_every: the tail is written by finish()
            writer.log(row(r), worker_row(r))
        writer.add_samples(samples[:2])
        writer.add_samples(samples[2])
        writer.add_samples(samples[3:])
        writer.finish("stopped", "target suboptimality 1e-06 reached", final_x)
    results = read_results(path)

    expected_config = {**CONFIG, "seed": 7}
    assert results.config == expected_config
    assert results.status == "stopped"
    assert results.status_message == "target suboptimality 1e-06 reached"
    assert results.n_rows == 11
    assert list(results.metrics) == list(METRICS)  # logging order is kept
    np.testing.assert_array_equal(results.metrics["round"], np.arange(11))
    assert results.metrics["round"].dtype == np.int64 and results.metrics["bits_up"].dtype == np.int64
    assert results.metrics["loss"].dtype == np.float64
    np.testing.assert_array_equal(results.metrics["loss"], 1.0 / (np.arange(11) + 1))
    np.testing.assert_array_equal(results.metrics["suboptimality"], 2.0 ** -np.arange(11.0))
    np.testing.assert_array_equal(results.workers["bytes_up"], np.outer(np.arange(11), np.arange(N_WORKERS)))
    assert results.workers["grad_norm"].shape == (11, N_WORKERS)
    np.testing.assert_array_equal(results.samples, samples)
    np.testing.assert_array_equal(results.final_x, final_x)

    attrs = results.attrs
    assert (attrs["mpi_size"], attrs["n_workers"], attrs["d"], attrs["flush_every"]) == (2, N_WORKERS, D, 4)
    assert attrs["numpy_version"] == np.__version__ and attrs["h5py_version"] == h5py.__version__
    for key in ("mpicomp_version", "python_version", "hostname", "numba_version", "mpi4py_version", "hdf5_version"):
        assert attrs[key], key
    start = datetime.fromisoformat(attrs["start_time"])
    end = datetime.fromisoformat(results.end_time)
    assert start.utcoffset() == end.utcoffset() == timedelta(0)
    assert start <= end
    with h5py.File(path, "r", swmr=True) as f:  # the config attribute is plain JSON, readable without mpicomp
        assert json.loads(f.attrs["config"]) == expected_config


def test_missing_float_is_nan_missing_int_is_an_error_and_rejected_rows_leave_no_trace(tmp_path):
    path = tmp_path / "run.h5"
    with make_writer(path, flush_every=1) as writer:
        # no loss, suboptimality, grad_norm: float columns get NaN
        writer.log({"round": 0, "bits_up": 0}, {"bytes_up": np.zeros(N_WORKERS, dtype=np.int64)})
        with pytest.raises(ValueError, match="metric 'bits_up' is missing"):
            writer.log({"round": 1, "loss": 0.5})
        with pytest.raises(ValueError, match="worker metric 'bytes_up' is missing"):
            writer.log(row(1), {"grad_norm": np.zeros(N_WORKERS)})
        writer.log(row(2), worker_row(2))
        writer.finish("finished")
    results = read_results(path)
    assert results.n_rows == 2
    np.testing.assert_array_equal(results.metrics["round"], [0, 2])
    assert np.isnan(results.metrics["loss"][0]) and results.metrics["loss"][1] == row(2)["loss"]
    assert np.all(np.isnan(results.workers["grad_norm"][0]))
    np.testing.assert_array_equal(results.workers["bytes_up"][1], worker_row(2)["bytes_up"])
    for values in [*results.metrics.values(), *results.workers.values()]:
        assert len(values) == 2


def test_status_is_running_until_finish_and_final_afterwards(tmp_path):
    path = tmp_path / "run.h5"
    writer = make_writer(path, flush_every=1)
    writer.log(row(0), worker_row(0))
    live = read_results(path)
    assert (live.status, live.status_message, live.end_time, live.n_rows) == ("running", "", "", 1)
    assert np.all(np.isnan(live.final_x))
    writer.finish("diverged", "loss became inf at round 1")
    assert writer.status == "diverged"
    with pytest.raises(RuntimeError, match="already finished with status 'diverged'"):
        writer.finish("finished")
    with pytest.raises(RuntimeError, match="already finished"):
        writer.log(row(1))
    writer.close()
    writer.close()  # idempotent
    done = read_results(path)
    assert (done.status, done.status_message) == ("diverged", "loss became inf at round 1")
    assert np.all(np.isnan(done.final_x))  # no final_x given
    with pytest.raises(RuntimeError, match="closed"):
        writer.log(row(2))


@pytest.mark.parametrize("status", FINAL_STATUSES)
def test_every_final_status_round_trips(tmp_path, status):
    path = tmp_path / f"{status}.h5"
    with make_writer(path) as writer:
        writer.finish(status, f"why: {status} ✓")
    results = read_results(path)
    assert (results.status, results.status_message) == (status, f"why: {status} ✓")


def test_invalid_status_lists_the_valid_ones(tmp_path):
    with make_writer(tmp_path / "run.h5") as writer:
        for bad in ("done", "running"):
            with pytest.raises(ValueError, match="valid final statuses: finished, stopped, diverged, failed"):
                writer.finish(bad)
        writer.finish("finished")


def test_exception_inside_with_records_failed_and_propagates(tmp_path):
    path = tmp_path / "run.h5"
    with pytest.raises(FloatingPointError), make_writer(path, flush_every=100) as writer:
        writer.log(row(0), worker_row(0))
        writer.log(row(1), worker_row(1))
        raise FloatingPointError("overflow in the DIANA shift update")
    results = read_results(path)
    assert results.status == "failed"
    assert results.status_message == "FloatingPointError: overflow in the DIANA shift update"
    assert results.n_rows == 2  # buffered rows were flushed by the failure path


def test_exception_after_finish_keeps_the_recorded_status(tmp_path):
    path = tmp_path / "run.h5"
    with pytest.raises(KeyError), make_writer(path) as writer:
        writer.finish("finished", "all rounds done")
        raise KeyError("post-processing")
    assert read_results(path).status == "finished"


def test_leaving_with_without_finish_is_recorded_as_failed(tmp_path):
    path = tmp_path / "run.h5"
    with make_writer(path) as writer:
        writer.log(row(0), worker_row(0))
    results = read_results(path)
    assert results.status == "failed" and "without finish()" in results.status_message
    assert results.n_rows == 1


def test_rows_reach_the_file_every_flush_every_rows(tmp_path):
    path = tmp_path / "run.h5"
    writer = make_writer(path, flush_every=4, sample_dim=D)
    on_disk = []
    for r in range(9):
        writer.log(row(r), worker_row(r))
        on_disk.append(read_results(path).n_rows)
    assert on_disk == [0, 0, 0, 4, 4, 4, 4, 8, 8]
    writer.add_samples(np.zeros((3, D)))
    assert read_results(path).samples.shape == (0, D)
    writer.add_samples(np.zeros(D))  # 4 buffered sample rows: flush (also writes the 9th metric row)
    flushed = read_results(path)
    assert flushed.samples.shape == (4, D) and flushed.n_rows == 9
    writer.log(row(9), worker_row(9))
    writer.flush()
    assert read_results(path).n_rows == 10
    writer.close()


KILLED_WRITER = """
import os, signal, sys
import numpy as np
from mpicomp.results import ResultsWriter

path, flush_every, n_rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
writer = ResultsWriter(path, config={{"method": "diana"}}, metrics={metrics}, worker_metrics={{"uploads": "int64"}},
                       n_workers=2, d=3, mpi_size=1, flush_every=flush_every, sample_dim=3)
writer.add_samples(np.arange(6.0).reshape(2, 3))  # written by the first flush
for r in range(n_rows):
    writer.log({{"round": r, "loss": 1.0 / (r + 1)}}, {{"uploads": np.array([r, 2 * r])}})
os.kill(os.getpid(), signal.SIGKILL)
""".format(metrics={"round": "int64", "loss": "float64"})


@pytest.mark.parametrize(("flush_every", "n_logged", "n_flushed"), [(1, 7, 7), (3, 7, 6)])
def test_sigkilled_run_leaves_a_readable_file_with_every_flushed_row(tmp_path, flush_every, n_logged, n_flushed):
    path = tmp_path / "killed.h5"
    script = tmp_path / "killed_writer.py"
    script.write_text(KILLED_WRITER)
    done = subprocess.run(
        [sys.executable, str(script), str(path), str(flush_every), str(n_logged)], capture_output=True, check=False
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    results = read_results(path)
    assert results.status == "running" and results.end_time == ""
    assert results.n_rows == n_flushed
    np.testing.assert_array_equal(results.metrics["round"], np.arange(n_flushed))
    np.testing.assert_array_equal(results.metrics["loss"], 1.0 / (np.arange(n_flushed) + 1))
    np.testing.assert_array_equal(results.workers["uploads"], np.outer(np.arange(n_flushed), [1, 2]))
    np.testing.assert_array_equal(results.samples, np.arange(6.0).reshape(2, 3))
    assert "still running or killed" in summarize(path)


LIVE_READER = """
import json
import sys

import h5py

f = h5py.File(sys.argv[1], "r", libver="latest", swmr=True)
loss, status, message, final_x = f["metrics/loss"], f["status"], f["status_message"], f["final/x"]
for _ in sys.stdin:
    for dataset in (loss, status, message, final_x):
        dataset.refresh()
    seen = [loss[()].tolist(), status[()].decode(), message[()].tobytes().decode(), final_x[()].tolist()]
    print(json.dumps(seen), flush=True)
"""


def test_a_second_process_follows_the_run_live_in_swmr_mode(tmp_path):
    path = tmp_path / "live.h5"
    script = tmp_path / "live_reader.py"
    script.write_text(LIVE_READER)
    writer = make_writer(path, metrics={"loss": "float64"}, worker_metrics={}, d=2, flush_every=2)
    reader = subprocess.Popen(
        [sys.executable, str(script), str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )

    def reader_sees():
        reader.stdin.write("refresh\n")
        reader.stdin.flush()
        return json.loads(reader.stdout.readline())

    try:
        before = reader_sees()
        assert before[:3] == [[], "running", ""] and np.all(np.isnan(before[3]))
        for r in range(3):
            writer.log({"loss": float(r)})
        assert reader_sees()[:2] == [[0.0, 1.0], "running"]  # the third row is still buffered
        writer.log({"loss": 3.0})
        assert reader_sees()[:2] == [[0.0, 1.0, 2.0, 3.0], "running"]
        writer.log({"loss": 4.0})
        writer.finish("finished", "all 5 rounds done", np.array([1.5, -2.0]))
        assert reader_sees() == [[0.0, 1.0, 2.0, 3.0, 4.0], "finished", "all 5 rounds done", [1.5, -2.0]]
        writer.close()
        assert reader_sees()[1] == "finished"
    finally:
        writer.close()
        reader.stdin.close()
        reader.wait()
    assert reader.returncode == 0


def test_summary_mentions_status_config_and_last_row(tmp_path):
    path = tmp_path / "run.h5"
    with make_writer(path, sample_dim=D) as writer:
        for r in range(6):
            writer.log(row(r), worker_row(r))
        writer.add_samples(np.zeros((2, D)))
        writer.finish("stopped", "bit budget 5000 exhausted")
    text = summarize(path)
    assert "status: stopped (bit budget 5000 exhausted)" in text
    assert "rows logged: 6" in text
    assert "problem: name=logreg, dataset=a9a, l2=0.001" in text
    assert "compressors: up=natural∘randk(k=0.1), down=identity" in text
    lines = text.splitlines()
    assert any(line.split() == ["round", "5"] for line in lines)
    assert any(line.split()[:2] == ["loss", f"{1 / 6:.6g}"] for line in lines)
    assert any(line.split()[:2] == ["suboptimality", f"{2.0**-5:.6g}"] for line in lines)
    assert any(line.split() == ["bits_up", "5000", "(625", "B)"] for line in lines)
    assert "bytes_up, grad_norm" in text and "samples: 2 x 4" in text
    assert summarize(read_results(path)) == text


def test_existing_file_needs_overwrite(tmp_path):
    path = tmp_path / "run.h5"
    with make_writer(path) as writer:
        writer.log(row(0), worker_row(0))
        writer.finish("finished")
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
        make_writer(path)
    assert read_results(path).n_rows == 1  # untouched
    with make_writer(path, overwrite=True) as writer:
        writer.finish("failed", "second run")
    replaced = read_results(path)
    assert replaced.n_rows == 0 and replaced.status_message == "second run"


def test_output_directories_are_created(tmp_path):
    path = tmp_path / "sweep" / "lr0.1" / "run.h5"
    with make_writer(path) as writer:
        writer.finish("finished")
    assert read_results(path).status == "finished"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"metrics": {}}, "metrics is empty"),
        ({"metrics": {"loss": "float32"}}, "metric 'loss' has dtype float32; results columns are float64 or int64"),
        ({"metrics": {"loss": "no-such-dtype"}}, "is not a dtype"),
        ({"metrics": {"a/b": "float64"}}, "name 'a/b' is invalid"),
        ({"worker_metrics": {"bytes": "S8"}}, "worker metric 'bytes' has dtype"),
        ({"n_workers": 0}, "n_workers must be a positive integer"),
        ({"d": 2.0}, "d must be a positive integer"),
        ({"flush_every": 0}, "flush_every must be a positive integer"),
        ({"sample_dim": -1}, "sample_dim must be a positive integer"),
        ({"config": {"callback": print}}, "config cannot be stored as JSON"),
    ],
)
def test_bad_constructor_arguments_are_named(tmp_path, overrides, message):
    path = tmp_path / "run.h5"
    with pytest.raises(ValueError, match=message):
        make_writer(path, **overrides)
    assert not path.exists()


def test_bad_rows_samples_and_final_x_are_named(tmp_path):
    with make_writer(tmp_path / "run.h5", sample_dim=D) as writer:
        with pytest.raises(ValueError, match=r"unknown metric\(s\) 'los'; known: round, loss, suboptimality, bits_up"):
            writer.log({**row(0), "los": 1.0})
        with pytest.raises(ValueError, match=r"unknown worker metric\(s\) 'bits'; known: bytes_up, grad_norm"):
            writer.log(row(0), {**worker_row(0), "bits": np.zeros(N_WORKERS)})
        with pytest.raises(ValueError, match="worker metric 'bytes_up' has shape \\(2,\\), expected \\(3,\\)"):
            writer.log(row(0), {**worker_row(0), "bytes_up": np.zeros(2, dtype=int)})
        with pytest.raises(ValueError, match="metric 'round' = 2.5 is not an integer"):
            writer.log({**row(0), "round": 2.5})
        with pytest.raises(ValueError, match="metric 'loss' = 'x' is not a real number"):
            writer.log({**row(0), "loss": "x"})
        with pytest.raises(ValueError, match="metric 'bits_up' has shape"):
            writer.log({**row(0), "bits_up": [1, 2]})
        with pytest.raises(ValueError, match=r"samples have shape \(2, 3\), expected \(4,\) or \(k, 4\)"):
            writer.add_samples(np.zeros((2, 3)))
        with pytest.raises(ValueError, match=r"final_x has shape \(3,\)"):
            writer.finish("finished", final_x=np.zeros(3))
        writer.log({**row(0), "round": 3.0}, worker_row(0))  # an integral float is fine for an int64 column
        writer.finish("finished")
    assert read_results(tmp_path / "run.h5").metrics["round"].tolist() == [3]
    with make_writer(tmp_path / "no_samples.h5") as writer:
        with pytest.raises(ValueError, match="created without sample_dim"):
            writer.add_samples(np.zeros(D))
        writer.finish("finished")
    assert read_results(tmp_path / "no_samples.h5").samples is None


def test_reader_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_results(tmp_path / "absent.h5")
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5 results file"):
        read_results(text)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="not an mpicomp results file"):
        read_results(foreign)


def test_git_commit_is_empty_outside_a_checkout(tmp_path):
    package = tmp_path / "site-packages" / "mpicomp"
    package.mkdir(parents=True)
    assert git_commit(package) == ""


def test_git_commit_of_a_checkout_is_its_head(tmp_path):
    checkout = tmp_path / "repo"
    (checkout / "mpicomp").mkdir(parents=True)
    run = {"cwd": checkout, "check": True, "capture_output": True, "text": True}
    try:
        for command in (
            ["git", "init", "-q"],
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "--allow-empty", "-m", "i"],
        ):
            subprocess.run(command, **run)  # noqa: PLW1510 - check=True is in run
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not available")
    head = subprocess.run(["git", "rev-parse", "HEAD"], **run).stdout.strip()  # noqa: PLW1510 - check=True is in run
    assert len(head) == 40
    assert git_commit(checkout / "mpicomp") == head


def test_wrong_types_are_type_errors(tmp_path):
    with pytest.raises(TypeError, match="config must be a dict"):
        make_writer(tmp_path / "run.h5", config=["not", "a", "dict"])
    with make_writer(tmp_path / "run.h5") as writer:
        with pytest.raises(TypeError, match="status message must be a str"):
            writer.finish("finished", 42)
        writer.finish("finished")


def test_reader_cuts_columns_to_their_common_length(tmp_path):
    """A writer killed between appending one column and the next leaves columns of unequal length."""
    path = tmp_path / "run.h5"
    with make_writer(path) as writer:
        for r in range(5):
            writer.log(row(r), worker_row(r))
        writer.finish("finished")
    with h5py.File(path, "r+") as f:
        f["metrics/loss"].resize((3,))
    results = read_results(path)
    assert results.n_rows == 3
    assert all(len(values) == 3 for values in [*results.metrics.values(), *results.workers.values()])
    np.testing.assert_array_equal(results.metrics["round"], [0, 1, 2])


def test_reader_rejects_other_format_versions(tmp_path):
    path = tmp_path / "run.h5"
    with make_writer(path) as writer:
        writer.finish("finished")
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = np.int64(2)
    with pytest.raises(ValueError, match="uses results format 2; this mpicomp reads format 1"):
        read_results(path)


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (KeyboardInterrupt(), "interrupted (SIGINT)"),
        (SystemExit(143), "terminated by SIGTERM (time limit or scancel?)"),
        (SystemExit(129), "terminated by SIGHUP"),
        (ValueError("bad"), "ValueError: bad"),
        (RuntimeError(), "RuntimeError"),
    ],
)
def test_failure_messages_say_what_happened(exc, message):
    assert failure_message(exc) == message


def test_heartbeat_moves_at_every_flush_and_pid_is_stored(tmp_path):
    with make_writer(tmp_path / "r.h5", flush_every=1) as writer:
        with h5py.File(tmp_path / "r.h5", "r", swmr=True) as f:
            first = f["heartbeat"][()]
            assert f.attrs["pid"] == os.getpid()
        writer.record_startup(1.5)
        writer.log(row(0), worker_row(0))
        writer.finish("finished")
    with h5py.File(tmp_path / "r.h5", "r", swmr=True) as f:
        assert f["heartbeat"][()] >= first and f["startup_seconds"][()] == 1.5
