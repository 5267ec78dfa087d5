"""Who holds which data: a rank materialises only its own workers' rows, and the metrics do not depend on it.

In-process tests build the problem of every rank of a layout with a stand-in collective (building
needs no collective operation) and check which shards and held-out rows each holds; the data
pipeline is checked to produce the rows of the plain one-copy pipeline bit for bit. Under
``mpiexec`` (``mpi_scripts/layout.py``) every collective value of a rank's problem is compared with
the one-process problem's, and whole runs at 1, 2 and 4 ranks must write identical metrics,
including layouts where a rank (even the master) hosts no worker.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import dump_svmlight_file

from mpicomp.comm import LocalTransport, worker_range
from mpicomp.data import (
    add_intercept,
    load_dataset,
    prepare_data,
    scale_features,
    split_train_test,
)
from mpicomp.data.loaders import CHUNK_ROWS
from mpicomp.problems import build_problem
from mpicomp.problems.base import worker_sum
from mpicomp.rng import root_seed
from tests.mpi_scripts.layout import exercise
from tests.runs import assert_same_metrics, run_inprocess, run_mpiexec

SCRIPTS = Path(__file__).parent / "mpi_scripts"
MPIEXEC = Path(sys.executable).parent / "mpiexec"


class RankView:
    """The collective of rank ``rank`` out of ``size`` for building only: any collective operation fails."""

    def __init__(self, n_workers: int, size: int, rank: int) -> None:
        self.local_workers = worker_range(n_workers, size, rank)
        self.is_master = rank == 0

    def gather_partials(self, per_local_worker, *, everyone=False):
        raise AssertionError("building a problem must not need a collective operation")

    def sum_partials(self, rows_of, width, *, everyone=False):
        raise AssertionError("building a problem must not need a collective operation")

    def agree(self, code):
        raise AssertionError("building a problem must not need a collective operation")


def write_idx(path: Path, magic: int, array: np.ndarray) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def fake_mnist(directory: Path, n_train: int = 120, n_test: int = 30) -> Path:
    """MNIST-format idx files with 5x4 images whose mean brightness depends on the label."""
    directory.mkdir(exist_ok=True)
    rng = np.random.default_rng(7)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 3, n)
        images = np.clip(rng.normal(60 + 60 * labels[:, None, None], 40, (n, 5, 4)), 0, 255)
        write_idx(directory / f"{split}-images-idx3-ubyte.gz", 0x803, images)
        write_idx(directory / f"{split}-labels-idx1-ubyte.gz", 0x801, labels)
    return directory


# -- building: which rows each rank holds -------------------------------------------------------


@pytest.mark.parametrize("name", ["softmax", "logistic", "mlp"])
@pytest.mark.parametrize(("size", "n_workers"), [(2, 5), (4, 5), (4, 3)])
def test_each_rank_holds_only_its_workers_rows(name, size, n_workers):
    options = {"seed": root_seed(1), "partition": "dirichlet", "hidden": (4,)}
    dataset = "sklearn:breast_cancer" if name == "logistic" else "sklearn:wine"
    whole = build_problem(name, dataset, n_workers, **options)
    whole_rows = np.concatenate([whole.local(w).features for w in range(n_workers)])
    held, held_out = [], []
    for rank in range(size):
        mine = build_problem(
            name,
            dataset,
            n_workers,
            collective=RankView(n_workers, size, rank),
            **options,
        )
        local = worker_range(n_workers, size, rank)
        assert mine.local_workers == local and mine.is_master == (rank == 0)
        for w in range(n_workers):
            if w in local:
                np.testing.assert_array_equal(mine.local(w).features, whole.local(w).features)
                held.append(mine.local(w).features)
            else:
                with pytest.raises(
                    IndexError,
                    match="another process" if 0 <= w < n_workers else "must be in",
                ):
                    mine.local(w)
        held_out.append(mine.test_features)
        np.testing.assert_array_equal(mine.test_sizes, whole.test_sizes)
    np.testing.assert_array_equal(np.concatenate(held), whole_rows)  # every row once, in worker order
    np.testing.assert_array_equal(np.concatenate(held_out), whole.test_features)


def test_a_rank_without_workers_holds_no_rows():
    mine = build_problem("softmax", "sklearn:iris", 3, collective=RankView(3, 4, 0))
    assert mine.local_workers == range(0) and mine.features.shape == (0, 5) and mine.test_features.shape == (0, 5)
    with pytest.raises(IndexError, match="another process"):
        mine.local(0)


def test_gaussian_clients_keep_only_local_points():
    whole = build_problem("gaussian", "synthetic:d=3,points=7", 5, seed=root_seed(0))
    for rank in range(2):
        mine = build_problem(
            "gaussian",
            "synthetic:d=3,points=7",
            5,
            seed=root_seed(0),
            collective=RankView(5, 2, rank),
        )
        assert sorted(mine.shards) == list(worker_range(5, 2, rank))
        for w in mine.shards:
            np.testing.assert_array_equal(mine.local(w).points, whole.local(w).points)
        np.testing.assert_array_equal(mine.posterior()[0], whole.posterior()[0])  # closed form: no collective


def test_gather_partials_wants_one_row_per_local_worker():
    transport = LocalTransport(3)
    rows = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(transport.gather_partials(rows, everyone=True), rows)
    with pytest.raises(ValueError, match="hosts 3 workers"):
        transport.gather_partials(rows[:2])
    with pytest.raises(ValueError, match="2-D"):
        transport.gather_partials(rows[0])


def test_worker_sum_is_the_left_fold_in_worker_order():
    rows = np.random.default_rng(3).normal(size=(7, 5)) * 10.0 ** np.arange(7)[:, None]
    expected = rows[0].copy()
    for row in rows[1:]:
        expected = expected + row
    np.testing.assert_array_equal(worker_sum(rows), expected)


# -- data: rows materialised on demand, the bits of the one-copy pipeline ----------------------


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, str]:
    """A dense npz longer than a fitting block, a sparse LIBSVM file, fake MNIST and a bundled set."""
    folder = tmp_path_factory.mktemp("sources")
    rng = np.random.default_rng(5)
    X = rng.normal(3.0, 2.0, (CHUNK_ROWS * 2 + 77, 6)) * rng.exponential(size=6)
    np.savez(folder / "long.npz", X=X, y=rng.integers(0, 2, X.shape[0]))
    sparse = sp.random(300, 9, density=0.3, random_state=2, format="csr")
    dump_svmlight_file(sparse, rng.integers(0, 2, 300), str(folder / "data.svm"))
    mnist = fake_mnist(folder / "mnist", n_train=CHUNK_ROWS + 10)
    return {
        "npz": str(folder / "long.npz"),
        "svm": str(folder / "data.svm"),
        "mnist": f"mnist:{mnist}",
        "sklearn": "sklearn:breast_cancer",
    }


@pytest.mark.parametrize("source", ["npz", "svm", "mnist", "sklearn"])
@pytest.mark.parametrize("scale", ["none", "standard", "unit-norm"])
def test_rows_on_demand_have_the_bits_of_the_one_copy_pipeline(sources, source, scale):
    spec = sources[source]
    data = scale_features(split_train_test(load_dataset(spec), 0.25, seed=4), scale)
    prepared = prepare_data(spec, test_fraction=0.25, scale=scale, seed=4)
    full = prepare_data(spec, test_fraction=0.25, scale=scale, seed=4).dataset()
    for expected, got in (
        (add_intercept(data.X), full.X),
        (add_intercept(data.X_test), full.X_test),
    ):
        assert sp.issparse(got) == sp.issparse(expected)
        np.testing.assert_array_equal(
            got.toarray() if sp.issparse(got) else got,
            expected.toarray() if sp.issparse(expected) else expected,
        )
    rows = np.array([5, 0, 17, 3])
    some = prepared.train_rows(rows)
    np.testing.assert_array_equal(
        some.toarray() if sp.issparse(some) else some,
        full.X[rows].toarray() if sp.issparse(full.X) else full.X[rows],
    )


def test_mnist_pixels_stay_bytes_until_rows_are_asked_for(sources):
    prepared = prepare_data(sources["mnist"], scale="standard")
    assert prepared.X.dtype == np.uint8 and prepared.X_test.dtype == np.uint8
    assert prepared.train_rows(np.arange(3)).dtype == np.float64
    assert load_dataset(sources["mnist"]).X.dtype == np.float64  # the public loader still gives float64


# -- under mpiexec ------------------------------------------------------------------------------


@pytest.mark.parametrize("n_workers", [1, 4])
def test_local_transport_layout(tmp_path, n_workers):
    assert exercise(LocalTransport(n_workers), tmp_path) == {
        "rank": 0,
        "workers": n_workers,
        "rows": exercise_rows(n_workers),
    }


def exercise_rows(n_workers: int) -> int:
    return int(build_problem("softmax", "sklearn:wine", n_workers).shard_sizes.sum())


@pytest.mark.mpi
@pytest.mark.parametrize(("ranks", "n_workers"), [(1, 5), (2, 5), (4, 5), (4, 3)])
def test_mpi_ranks_hold_their_share_and_collectives_match(tmp_path, ranks, n_workers):
    command = [
        str(MPIEXEC),
        "-n",
        str(ranks),
        sys.executable,
        "-m",
        "mpi4py",
        str(SCRIPTS / "layout.py"),
    ]
    done = subprocess.run(
        [*command, str(n_workers), str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=SCRIPTS,
    )
    assert done.returncode == 0, f"mpiexec failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    reports = json.loads(line.removeprefix("RESULT "))
    assert [r["workers"] for r in reports] == [len(worker_range(n_workers, ranks, r)) for r in range(ranks)]
    assert sum(r["rows"] for r in reports) == exercise_rows(n_workers)


@pytest.mark.mpi
def test_softmax_on_idx_files_is_identical_on_1_2_4_ranks(tmp_path):
    """Stored pixels, standard scaling, default step size (L_i), the distributed optimum and test accuracy;
    with 3 workers on 4 ranks the master hosts none."""
    raw = {
        "problem": {
            "name": "softmax",
            "dataset": f"mnist:{fake_mnist(tmp_path)}",
            "l2": 0.01,
        },
        "data": {"workers": 3, "partition": "unbalanced"},
        "method": {"name": "gd"},
        "compressor": {"uplink": "natural"},
        "run": {"rounds": 6, "seed": 2, "log_every": 2, "check_every": 2},
    }
    reference = run_inprocess(raw, tmp_path / "local.h5")
    assert reference.status == "finished"
    assert np.all(np.isfinite(reference.metrics["suboptimality"])) and np.all(reference.metrics["test_accuracy"] > 0.5)
    for n in (1, 2, 4):
        assert_same_metrics(reference, run_mpiexec(raw, tmp_path / f"n{n}.h5", n))


@pytest.mark.mpi
def test_sampler_with_map_point_is_identical_on_2_4_ranks(tmp_path):
    """QLSD* starts from the MAP: an L-BFGS run over the distributed potential, the same on every layout."""
    raw = {
        "problem": {"name": "logistic", "dataset": "sklearn:breast_cancer", "l2": 0.01},
        "data": {"workers": 5, "partition": "unbalanced", "batch": 8},
        "method": {"name": "qlsd", "variant": "star"},
        "compressor": {"uplink": "natural"},
        "run": {"rounds": 8, "seed": 1, "log_every": 4, "check_every": 4},
    }
    reference = run_inprocess(raw, tmp_path / "local.h5")
    assert reference.status == "finished"
    for n in (2, 4):
        assert_same_metrics(reference, run_mpiexec(raw, tmp_path / f"n{n}.h5", n))
