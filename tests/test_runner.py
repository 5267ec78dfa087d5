"""End-to-end runs: rank independence, byte accounting, convergence, stop rules, crashes."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from mpicomp.comm import make_transport
from mpicomp.config import validate
from mpicomp.results import read_results, summarize
from mpicomp.results.reader import STALE_MINUTES, staleness
from mpicomp.wire import overhead_bytes
from tests.runs import (
    MPIEXEC,
    assert_same_metrics,
    overrides,
    run_inprocess,
    run_mpiexec,
)

BREAST_CANCER = {"name": "logistic", "dataset": "sklearn:breast_cancer"}
D = 31  # breast_cancer: 30 features + intercept


def _experiment(**sections):
    raw = {
        "problem": dict(BREAST_CANCER, l2=0.1),
        "data": {"workers": 8, "partition": "label", "batch": 0},
        "method": {"name": "gd"},
        "compressor": {"uplink": "identity", "downlink": "identity"},
        "run": {"rounds": 20, "seed": 3, "check_every": 5},
    }
    for name, table in sections.items():
        raw[name] = {**raw.get(name, {}), **table}
    return raw


@pytest.mark.mpi
def test_identical_metrics_on_1_2_4_ranks(tmp_path):
    """Randomised compressors both ways, minibatches, unequal shards: the rank layout must not matter."""
    raw = _experiment(
        problem={"init": "normal", "init_scale": 0.1},  # x^0 drawn from the run's seed, the same on every rank
        method={"name": "quantized-sgd", "stepsize": 0.1},
        data={"batch": 16, "partition": "unbalanced"},
        compressor={"uplink": "natural∘randk(k=0.5)", "downlink": "dither(s=8,p=inf)"},
    )
    reference = run_inprocess(raw, tmp_path / "local.h5")
    assert reference.status == "finished" and reference.n_rows == 20
    for n in (1, 2, 4):
        assert_same_metrics(reference, run_mpiexec(raw, tmp_path / f"n{n}.h5", n))


LAYOUT_CASES = {
    "quantized-sgd, natural up, dither down": {
        "method": {"name": "quantized-sgd", "stepsize": 0.1},
        "data": {"batch": 16, "partition": "unbalanced"},
        "compressor": {"uplink": "natural", "downlink": "dither(s=8,p=inf)"},
    },
    "diana (worker state)": {"method": {"name": "diana"}, "compressor": {"uplink": "dither(s=4,p=inf)"}},
    "sgd through the switch": {
        "method": {"name": "sgd", "stepsize": 0.5},
        "data": {"batch": 16},
        "compressor": {"uplink": "natural", "aggregation": "switch"},
    },
}


@pytest.mark.mpi
@pytest.mark.parametrize(
    "case",
    [case if case == "diana (worker state)" else pytest.param(case, marks=pytest.mark.slow) for case in LAYOUT_CASES],
)  # the stateful case by default; the others under -m slow (the default run's time)
def test_identical_metrics_when_rank_0_hosts_fewer_workers(tmp_path, case):
    """``[run] master_share`` moves workers off rank 0 (all of them with 0, so that rank 0 runs the
    master alone): the layout changes, the results do not."""
    raw = _experiment(**LAYOUT_CASES[case])
    reference = run_inprocess(raw, tmp_path / "local.h5")
    assert reference.status == "finished"
    for n, share in ((2, 0.0), (3, 0.5)):
        shared = {**raw, "run": {**raw["run"], "master_share": share}}
        assert_same_metrics(reference, run_mpiexec(shared, tmp_path / f"n{n}.h5", n))


def test_the_run_lays_out_its_workers_with_the_configured_master_share(tmp_path, monkeypatch):
    """The runner hands ``[run] master_share`` to the transport (whose layout the test above runs)."""
    import mpicomp.runner

    seen = []

    def recording(n_workers, wait="auto", master_share=1.0):
        seen.append(master_share)
        return make_transport(n_workers, wait=wait, master_share=master_share)

    monkeypatch.setattr(mpicomp.runner, "make_transport", recording)
    config = validate(_experiment(run={"rounds": 2, "master_share": 0.25}))
    assert mpicomp.runner.run(config, tmp_path / "r.h5", progress=False).status == "finished"
    assert seen == [0.25]


class _Loads:
    """A transport stand-in for the end-of-run load report: 3 ranks, rank 0 busiest by its master's work."""

    size, master_share, local_workers = 3, 1.0, range(0, 10)

    def __init__(self, busy):
        self.busy = busy

    def gather_rank_values(self, values):
        return np.array([[seconds, 10.0] for seconds in self.busy])


@pytest.mark.parametrize(("busy", "hint"), [((30.0, 10.0, 10.0), "master_share = 0.00"), ((10.5, 10.0, 10.0), None)])
def test_the_master_says_when_rank_0_is_the_slowest_and_what_would_balance_it(caplog, busy, hint):
    """Rank 0 three times as busy as the others says the share that evens them out; 5 % more says nothing."""
    import mpicomp.runner

    with caplog.at_level(logging.INFO, logger="mpicomp"):
        mpicomp.runner._report_rank_load(_Loads(busy), busy[0], 10)
    said = [r.getMessage() for r in caplog.records if "master_share" in r.getMessage()]
    if hint is None:
        assert said == []
    else:
        assert len(said) == 1 and hint in said[0] and "busy 3e+03 ms a round" in said[0]


@pytest.mark.parametrize("checksum", [False, True])
def test_counted_bytes_are_the_real_message_sizes(tmp_path, checksum):
    """identity float64 over 8 workers: every byte is predictable from the wire format, with and
    without the CRC-32 trailer."""
    res = run_inprocess(_experiment(compressor={"checksum": checksum}), tmp_path / "r.h5")
    rounds, n = 20, 8
    framing = overhead_bytes(0, crc=checksum)
    m = res.metrics
    assert m["up_payload_bytes"][-1] == rounds * n * 8 * D
    assert m["up_header_bytes"][-1] == rounds * n * framing
    assert m["up_control_bytes"][-1] == rounds * n * 8  # one int64 size per worker and round
    assert m["down_payload_bytes"][-1] == rounds * 8 * D
    assert m["down_header_bytes"][-1] == rounds * framing
    assert m["down_control_bytes"][-1] == rounds * 8
    up_total = m["up_payload_bytes"] + m["up_header_bytes"] + m["up_control_bytes"]
    np.testing.assert_array_equal(m["bits_up"], 8 * up_total)
    np.testing.assert_array_equal(res.workers["bytes_up"][-1], rounds * (8 * D + framing + 8))
    np.testing.assert_array_equal(res.workers["uploads"][-1], rounds)


def test_natural_uplink_sends_nine_bits_per_coordinate(tmp_path):
    res = run_inprocess(_experiment(compressor={"uplink": "natural"}), tmp_path / "r.h5")
    assert res.metrics["up_payload_bytes"][-1] == 20 * 8 * ((9 * D + 7) // 8)


def test_gd_reaches_1e8_suboptimality(tmp_path):
    """GD with step 1/L on L2-logistic (breast_cancer, standardised) converges linearly."""
    raw = _experiment(run={"rounds": 4000, "target_suboptimality": 1e-8, "log_every": 10})
    res = run_inprocess(raw, tmp_path / "r.h5")
    assert res.status == "stopped", res.status_message
    assert 0 <= res.metrics["suboptimality"][-1] <= 1e-8
    assert res.metrics["dist_to_opt"][-1] < 1e-3
    assert np.all(np.diff(res.metrics["loss"]) <= 1e-15)  # GD with step <= 1/L is monotone


def _stationary_suboptimality(tmp_path, stepsize: float, rounds: int) -> float:
    raw = _experiment(
        method={"name": "quantized-sgd", "stepsize": stepsize},
        compressor={"uplink": "dither(s=2,p=2)"},
        run={"rounds": rounds, "log_every": 5},
    )
    res = run_inprocess(raw, tmp_path / f"q{stepsize}.h5")
    return float(np.mean(res.metrics["suboptimality"][-rounds // 10 :]))


def test_quantized_gd_neighbourhood_shrinks_with_stepsize(tmp_path):
    """With an unbiased compressor, E[F(x) - F*] settles at O(gamma omega G*/mu), G* = mean ||grad f_i(x*)||^2
    (nonzero: label-sorted shards). Quartering gamma quarters the neighbourhood; assert at least a 2x drop,
    and that the neighbourhood is far above GD's 1e-8 (the compressor noise, not the rate, limits it)."""
    big = _stationary_suboptimality(tmp_path, 0.05, 1200)
    small = _stationary_suboptimality(tmp_path, 0.0125, 4000)
    assert big > 1e-6
    assert small < big / 2, (big, small)


def test_divergence_is_recorded(tmp_path):
    raw = _experiment(problem={"name": "lsq", "l2": 0.0}, method={"stepsize": 50.0}, run={"rounds": 200})
    res = run_inprocess(raw, tmp_path / "r.h5")
    assert res.status == "diverged"
    assert "loss" in res.status_message or "non-finite" in res.status_message
    assert res.n_rows < 200


def test_bit_budget_stops_the_run(tmp_path):
    res = run_inprocess(_experiment(run={"rounds": 100, "bit_budget": 1e5}), tmp_path / "r.h5")
    assert res.status == "stopped" and "bit budget" in res.status_message
    assert res.metrics["bits_up"][-1] + res.metrics["bits_down"][-1] >= 1e5
    assert res.metrics["bits_up"][-2] + res.metrics["bits_down"][-2] < 1e5


def test_killed_run_leaves_a_readable_file(tmp_path):
    out = tmp_path / "killed.h5"
    raw = _experiment(run={"rounds": 1_000_000, "flush_every": 1})
    cmd = [sys.executable, "-m", "mpicomp", "run", "--out", str(out), "--no-progress"]
    for item in overrides(raw):
        cmd += ["--set", item]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        rows = 0
        while rows < 5:
            assert time.monotonic() < deadline, "the run wrote no rows within 120 s"
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.2)
            if out.exists():
                try:
                    rows = read_results(out).n_rows
                except ValueError:  # not yet switched to SWMR: the writer still holds the lock
                    rows = 0
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    res = read_results(out)
    assert res.status == "running"
    assert res.n_rows >= 5
    assert f"the writer (pid {proc.pid} on" in staleness(res) and staleness(res).endswith(": killed")
    assert "status: running? the writer" in summarize(res)
    later = datetime.fromisoformat(res.heartbeat) + timedelta(minutes=STALE_MINUTES + 1)
    assert "probably killed" in staleness(dataclasses.replace(res, attrs={**res.attrs, "hostname": "elsewhere"}), later)
    np.testing.assert_array_equal(res.metrics["round"], np.arange(1, res.n_rows + 1))


def _start_and_wait_for_rows(out, n: int):
    """``mpiexec -n n mpicomp run`` for ever (flushing every row), once it has written 5 rows; with
    checkpoints off, so that SIGTERM ends it as failed (tests/test_checkpoint.py: with them on)."""
    raw = _experiment(run={"rounds": 100_000_000, "flush_every": 1, "optimum": False, "checkpoint_seconds": 0.0})
    cmd = [str(MPIEXEC), "-n", str(n), sys.executable, "-m", "mpicomp", "run", "--out", str(out), "--no-progress"]
    for item in overrides(raw):
        cmd += ["--set", item]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline and proc.poll() is None, "the run did not start writing rows"
        time.sleep(0.3)
        try:
            if read_results(out).n_rows >= 5:
                return proc
        except (ValueError, OSError):
            continue


def _rank_pids(out) -> list[int]:
    """Process ids of the ranks writing ``out`` (from /proc: their command lines), ascending."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"mpicomp" in args and str(out).encode() in args and not args[0].endswith(b"mpiexec"):
            pids.append(int(cmdline.parent.name))
    return sorted(pids)


@pytest.mark.mpi
@pytest.mark.parametrize(
    ("target", "signum", "message"),
    [
        ("mpiexec", signal.SIGINT, "interrupted (SIGINT)"),  # Ctrl-C in a terminal: mpiexec forwards it
        ("last rank", signal.SIGTERM, "rank 1: terminated by SIGTERM (time limit or scancel?)"),
    ],
)
def test_a_signal_ends_every_rank_and_is_recorded(tmp_path, target, signum, message):
    out = tmp_path / "signal.h5"
    proc = _start_and_wait_for_rows(out, 2)
    try:
        os.kill(proc.pid if target == "mpiexec" else _rank_pids(out)[-1], signum)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("the job did not end within 30 s of the signal")
    result = read_results(out)
    assert (result.status, result.status_message) == ("failed", message)
