"""An error on some ranks ends every rank, in one line naming the rank, and nothing hangs.

The test method ``test-fail`` (tests/methods_for_tests.py) raises on the rank that hosts one worker,
while the method is built (``at_round = 0``: a shard that cannot be used, a dataset file missing on
one node) or in a round. Each job runs under ``mpiexec -n 2`` with a timeout: a hang fails the test.
"""

from __future__ import annotations

import pytest

from mpicomp.results import read_results
from tests.runs import mpiexec_run

pytestmark = pytest.mark.mpi
WORKERS = 5  # ranks 0 and 1 of 2 host workers 0-2 and 3-4


def _experiment(worker: int, at_round: int) -> dict:
    return {
        "problem": {"name": "logistic", "dataset": "sklearn:breast_cancer", "l2": 0.1},
        "data": {"workers": WORKERS},
        "method": {"name": "test-fail", "worker": worker, "at_round": at_round},
        "run": {"rounds": 20, "optimum": False},
    }


def _messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("mpicomp: ")]


@pytest.mark.parametrize(("worker", "rank"), [(WORKERS - 1, 1), (0, 0)])
def test_a_set_up_error_on_one_rank_ends_every_rank(tmp_path, worker, rank):
    """Before the fix the other rank waited for ever in the first collective (the timeout fired)."""
    proc = mpiexec_run(_experiment(worker, 0), tmp_path / "r.h5", 2, timeout=90, test_methods=True)
    assert proc.returncode != 0
    lines = _messages(proc.stderr)
    expected = [f"mpicomp: rank {rank}: [method]: worker {worker}: its shard cannot be used"]
    assert lines == expected, f"exit code {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr


def test_a_set_up_error_on_every_rank_is_said_once_and_ends_normally(tmp_path):
    proc = mpiexec_run(_experiment(-2, 0), tmp_path / "r.h5", 2, timeout=90, test_methods=True)
    assert proc.returncode == 2, proc.stderr
    assert _messages(proc.stderr) == ["mpicomp: [method]: worker 0: its shard cannot be used"], proc.stderr
    assert "Traceback" not in proc.stderr and "Abort" not in proc.stderr


def test_an_error_in_a_round_on_every_rank_is_recorded_once(tmp_path):
    out = tmp_path / "r.h5"
    proc = mpiexec_run(_experiment(-2, 3), out, 2, timeout=90, test_methods=True)
    assert proc.returncode == 1, proc.stderr
    assert _messages(proc.stderr) == [
        "mpicomp: run failed: RuntimeError: worker 0 cannot compute its gradient (-v prints the traceback)"
    ]
    assert "Traceback" not in proc.stderr
    result = read_results(out)
    assert (result.status, result.status_message) == ("failed", "RuntimeError: worker 0 cannot compute its gradient")
    assert result.n_rows == 2
