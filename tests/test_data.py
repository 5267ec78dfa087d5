"""Loaders (bundled, svmlight, idx, npz), the held-out split, scaling, intercept and partitioners."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import dump_svmlight_file

from mpicomp.data import (
    PARTITIONS,
    Dataset,
    add_intercept,
    load_dataset,
    partition_indices,
    prepare_data,
    scale_features,
    split_train_test,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


# -- loaders ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,shape,classes",
    [("breast_cancer", (569, 30), 2), ("digits", (1797, 64), 10), ("iris", (150, 4), 3), ("wine", (178, 13), 3)],
)
def test_sklearn_bundled_datasets(name, shape, classes):
    data = load_dataset(f"sklearn:{name}")
    assert data.X.shape == shape and data.X.dtype == np.float64
    assert data.y.shape == (shape[0],) and np.unique(data.y).size == classes
    assert data.X_test is None


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_svmlight_file(tmp_path, suffix):
    rng = np.random.default_rng(0)
    X = sp.random(20, 7, density=0.3, random_state=1, format="csr")
    y = np.where(rng.random(20) < 0.5, -1.0, 1.0)
    path = tmp_path / f"data.svm{suffix}"
    if suffix:
        plain = tmp_path / "plain.svm"
        dump_svmlight_file(X, y, str(plain))
        path.write_bytes(gzip.compress(plain.read_bytes()))
    else:
        dump_svmlight_file(X, y, str(path))
    for spec in (str(path), f"svmlight:{path}", f"libsvm:{path}"):
        data = load_dataset(spec, n_features=9)
        assert sp.issparse(data.X) and data.X.shape == (20, 9)
        np.testing.assert_allclose(data.X[:, :7].toarray(), X.toarray(), rtol=1e-15)
        np.testing.assert_array_equal(data.y, y)


def test_svmlight_garbage_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.svm"
    path.write_text("this is not : svmlight\n")
    with pytest.raises(ValueError, match="not a readable LIBSVM"):
        load_dataset(str(path))


def write_idx(path: Path, magic: int, array: np.ndarray, compress: bool) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def fake_mnist(directory: Path, compress: bool = True, n_train: int = 12, n_test: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 4, 3)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 4, 3)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for stem, array in arrays.items():
        name = stem + (".gz" if compress else "")
        write_idx(directory / name, 0x803 if array.ndim == 3 else 0x801, array, compress)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_idx_files(tmp_path, compress):
    arrays = fake_mnist(tmp_path, compress)
    data = load_dataset(f"mnist:{tmp_path}")
    assert data.X.shape == (12, 12) and data.X_test.shape == (5, 12)
    np.testing.assert_array_equal(data.X, arrays["train-images-idx3-ubyte"].reshape(12, 12))
    np.testing.assert_array_equal(data.y, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(data.y_test, arrays["t10k-labels-idx1-ubyte"])
    prepared = prepare_data(f"mnist:{tmp_path}", test_fraction=0.5).dataset()  # MNIST keeps its own test set
    assert prepared.X.shape == (12, 13) and prepared.X_test.shape == (5, 13)


def test_mnist_bad_magic_truncation_and_missing_files(tmp_path):
    arrays = fake_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", 0x803, arrays["train-labels-idx1-ubyte"], True)
    with pytest.raises(ValueError, match="bad idx magic number 0x00000803, expected 0x00000801"):
        load_dataset(f"mnist:{tmp_path}")
    raw = gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-5]))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", 0x801, arrays["train-labels-idx1-ubyte"], True)
    with pytest.raises(ValueError, match="header says"):
        load_dataset(f"mnist:{tmp_path}")
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_dataset(f"mnist:{tmp_path}")
    with pytest.raises(FileNotFoundError, match="MNIST directory"):
        load_dataset(f"mnist:{tmp_path / 'nowhere'}")


def test_mnist_label_count_must_match(tmp_path):
    fake_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", 0x801, np.zeros(11), True)
    with pytest.raises(ValueError, match="12 images but 11 labels"):
        load_dataset(f"mnist:{tmp_path}")


def test_npz_files(tmp_path):
    X, y = np.arange(12.0).reshape(4, 3), np.array([0, 1, 0, 1])
    np.savez(tmp_path / "plain.npz", X=X, y=y)
    np.savez(tmp_path / "split.npz", X=X, y=y, X_test=X[:2], y_test=y[:2])
    np.savez(tmp_path / "bad.npz", X=X)
    data = load_dataset(str(tmp_path / "plain.npz"))
    np.testing.assert_array_equal(data.X, X)
    assert data.X_test is None
    split = load_dataset(f"npz:{tmp_path / 'split.npz'}")
    np.testing.assert_array_equal(split.y_test, y[:2])
    with pytest.raises(ValueError, match=r"missing array\(s\) y; found X"):
        load_dataset(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "ragged.npz", X=X, y=y[:3])
    with pytest.raises(ValueError, match="one label per row"):
        load_dataset(str(tmp_path / "ragged.npz"))


def test_bad_dataset_strings(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset scheme 'kaggle'.*sklearn:NAME"):
        load_dataset("kaggle:titanic")
    with pytest.raises(ValueError, match="unknown sklearn dataset 'mnist'"):
        load_dataset("sklearn:mnist")
    missing = tmp_path / "a9a.txt"
    with pytest.raises(FileNotFoundError, match=f"{missing}.*LIBSVM"):
        load_dataset(str(missing))
    with pytest.raises(FileNotFoundError, match=r"\.npz archive"):
        load_dataset(str(tmp_path / "x.npz"))
    with pytest.raises(ValueError, match="non-empty string"):
        load_dataset("")


@pytest.mark.skipif(not (SHARED / "a9a.gz").exists(), reason="../shared/datasets/a9a.gz is only present for developers")
def test_a9a_from_shared():
    data = load_dataset(str(SHARED / "a9a.gz"), n_features=123)
    assert data.X.shape == (32_561, 123) and sp.issparse(data.X)
    assert set(np.unique(data.y)) == {-1.0, 1.0}
    assert int((data.y == 1).sum()) == 7_841


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="../shared/datasets/mnist is only present for developers")
def test_mnist_from_shared():
    data = load_dataset(f"mnist:{SHARED / 'mnist'}")
    assert data.X.shape == (60_000, 784) and data.X_test.shape == (10_000, 784)
    assert data.X.max() == 255 and set(np.unique(data.y)) == set(range(10))


# -- split, scaling, intercept ----------------------------------------------------------------


def test_split_is_deterministic_disjoint_and_sized():
    data = Dataset("toy", np.arange(200.0).reshape(100, 2), np.arange(100))
    a = split_train_test(data, 0.2, seed=5)
    b = split_train_test(data, 0.2, seed=5)
    c = split_train_test(data, 0.2, seed=6)
    assert a.X_test.shape == (20, 2) and a.X.shape == (80, 2)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_test, c.y_test)
    assert sorted(np.concatenate([a.y, a.y_test])) == list(range(100))
    np.testing.assert_array_equal(a.X[:, 0], 2 * a.y)  # rows stay with their labels
    assert split_train_test(data, 0.0, seed=5).X_test is None
    with pytest.raises(ValueError, match="test_fraction"):
        split_train_test(data, 1.0, seed=5)


def test_standard_scaling_is_fitted_on_train_only():
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 2.0, size=(50, 3))
    X[:, 2] = 7.0  # constant feature: centred, not divided
    X_test = rng.normal(size=(10, 3))
    data = scale_features(Dataset("toy", X, np.zeros(50), X_test, np.zeros(10)), "standard")
    np.testing.assert_allclose(data.X.mean(axis=0), 0.0, atol=1e-14)
    np.testing.assert_allclose(data.X[:, :2].std(axis=0), 1.0, rtol=1e-14)
    np.testing.assert_array_equal(data.X[:, 2], 0.0)
    expected = (X_test[:, :2] - X[:, :2].mean(axis=0)) / X[:, :2].std(axis=0)
    np.testing.assert_allclose(data.X_test[:, :2], expected, rtol=1e-13)
    assert X[0, 2] == 7.0  # the input is not modified


def test_sparse_scaling_keeps_sparsity():
    X = sp.random(40, 6, density=0.3, random_state=2, format="csr")
    data = scale_features(Dataset("toy", X, np.zeros(40), X[:5], np.zeros(5)), "standard")
    assert sp.issparse(data.X) and data.X.nnz == X.nnz
    np.testing.assert_allclose(data.X.toarray().std(axis=0), 1.0, rtol=1e-12)
    rows = scale_features(Dataset("toy", X, np.zeros(40)), "unit-norm")
    norms = np.sqrt(np.asarray(rows.X.multiply(rows.X).sum(axis=1)).ravel())
    np.testing.assert_allclose(norms[norms > 0], 1.0, rtol=1e-14)
    with pytest.raises(ValueError, match="unknown scaling"):
        scale_features(Dataset("toy", X, np.zeros(40)), "minmax")


def test_intercept_column():
    dense = add_intercept(np.zeros((3, 2)))
    np.testing.assert_array_equal(dense[:, -1], 1.0)
    sparse = add_intercept(sp.csr_matrix((3, 2)))
    assert sp.issparse(sparse) and sparse.format == "csr" and sparse.shape == (3, 3)
    np.testing.assert_array_equal(sparse.toarray()[:, -1], 1.0)


# -- partitions ------------------------------------------------------------------------------


def labels_10(n: int = 1000) -> np.ndarray:
    return np.random.default_rng(4).integers(0, 10, n)


@pytest.mark.parametrize("scheme", PARTITIONS)
@pytest.mark.parametrize("n_workers", [1, 7, 100, 1000])
def test_partitions_cover_every_sample_once(scheme, n_workers):
    y = labels_10()
    shards = partition_indices(y, n_workers, scheme, seed=3, alpha=0.1)
    assert len(shards) == n_workers and all(s.size > 0 for s in shards)
    np.testing.assert_array_equal(np.sort(np.concatenate(shards)), np.arange(y.size))


@pytest.mark.parametrize("scheme", [s for s in PARTITIONS if s != "contiguous"])
def test_partitions_are_deterministic_in_the_seed(scheme):
    y = labels_10()
    a = partition_indices(y, 8, scheme, seed=1)
    b = partition_indices(y, 8, scheme, seed=1)
    c = partition_indices(y, 8, scheme, seed=2)
    assert all(np.array_equal(s, t) for s, t in zip(a, b, strict=True))
    assert not all(np.array_equal(s, t) for s, t in zip(a, c, strict=True))


@pytest.mark.parametrize(("n_samples", "n_workers"), [(60, 10), (67, 10), (5, 5), (1, 1)])
def test_contiguous_partition_cuts_the_stored_order(n_samples, n_workers):
    """Worker m < n - 1 holds rows m q .. (m + 1) q - 1 with q = floor(N / n); the last one the rest; no seed."""
    q = n_samples // n_workers
    for seed in (0, 5):
        shards = partition_indices(np.zeros(n_samples), n_workers, "contiguous", seed=seed)
        for m, shard in enumerate(shards[:-1]):
            np.testing.assert_array_equal(shard, np.arange(m * q, (m + 1) * q))
        np.testing.assert_array_equal(shards[-1], np.arange((n_workers - 1) * q, n_samples))


def test_iid_and_label_partitions():
    y = np.repeat(np.arange(10), 100)
    iid = partition_indices(y, 10, "iid", seed=0)
    assert {s.size for s in iid} == {100}
    assert min(np.unique(y[s]).size for s in iid) == 10  # 100 random draws hit all 10 labels
    label = partition_indices(y, 10, "label", seed=0)
    assert all(np.unique(y[s]).size == 1 for s in label)  # fully heterogeneous
    assert sorted(int(y[s][0]) for s in label) == list(range(10))


def mean_label_entropy(y: np.ndarray, shards: list[np.ndarray]) -> float:
    out = []
    for s in shards:
        p = np.bincount(y[s], minlength=10) / s.size
        p = p[p > 0]
        out.append(-(p * np.log(p)).sum())
    return float(np.mean(out))


def test_dirichlet_alpha_controls_label_skew():
    y = np.repeat(np.arange(10), 300)
    skewed = mean_label_entropy(y, partition_indices(y, 20, "dirichlet", seed=0, alpha=0.05))
    mixed = mean_label_entropy(y, partition_indices(y, 20, "dirichlet", seed=0, alpha=1000.0))
    assert skewed < 0.5 * np.log(10)  # few classes per worker
    assert mixed > 0.95 * np.log(10)  # close to the uniform class mix
    with pytest.raises(ValueError, match="alpha > 0"):
        partition_indices(y, 20, "dirichlet", alpha=0.0)


def test_unbalanced_sizes():
    y = labels_10(5000)
    sizes = np.array([s.size for s in partition_indices(y, 50, "unbalanced", seed=0, sigma=1.5)])
    assert sizes.sum() == 5000 and sizes.min() >= 1
    assert sizes.max() > 3 * np.median(sizes)
    equal = {s.size for s in partition_indices(y, 50, "unbalanced", seed=0, sigma=0.0)}
    assert equal == {100}


def test_partition_errors():
    y = labels_10(10)
    with pytest.raises(ValueError, match="cannot split 10 training samples over 11 workers"):
        partition_indices(y, 11, "iid")
    with pytest.raises(ValueError, match="unknown partition 'random'"):
        partition_indices(y, 2, "random")
    with pytest.raises(ValueError, match="positive integer"):
        partition_indices(y, 0, "iid")
