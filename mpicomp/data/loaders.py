"""Dataset loading, the held-out split, feature scaling and the intercept column.

Accepted dataset strings (:func:`load_dataset`):

* ``sklearn:NAME`` — scikit-learn's bundled ``breast_cancer``, ``digits``, ``iris``, ``wine`` (offline);
* ``mnist`` or ``libsvm:NAME`` (NAME one of a9a, w8a, mushrooms, phishing) — a dataset fetched
  into the cache by ``mpicomp data fetch`` (:mod:`mpicomp.data.fetch`);
* ``mnist:DIR`` — the four MNIST idx files in DIR (``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each
  optionally ``.gz``); pixels 0..255 as float64, MNIST's own test set is the held-out split;
* ``svmlight:PATH``, ``libsvm:PATH`` or a plain path — a LIBSVM/svmlight text file (``.gz``/``.bz2``
  read transparently), sparse CSR features;
* ``npz:PATH`` or a path ending in ``.npz`` — a NumPy archive with a 2-D array ``X`` and labels
  ``y`` (one per row), and optionally ``X_test``, ``y_test`` as its own held-out split.

:func:`prepare_data` chains loading (features kept as stored: MNIST's pixels stay bytes), the split
(fraction ``test_fraction``, drawn from ``SeedSequence(seed)``; 0 keeps every row, in the stored order,
and no held-out split; sources with their own test set keep it) and the fitting of the scaling on the whole train split; its :class:`PreparedData` then turns
only the rows asked for into float64, scaled, with the optional constant-1 intercept column
(appended last, after scaling, never scaled). A rank materialises its own workers' rows and nothing
else; ``PreparedData.dataset()`` materialises every row. Every row comes out with the same bits either way.
"""

from __future__ import annotations

import bz2
import gzip
import re
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeAlias

import numpy as np
import scipy.sparse as sp

from .fetch import LIBSVM_NAMES, MNIST, cached_path

Features: TypeAlias = np.ndarray | sp.csr_matrix

SKLEARN_DATASETS = ("breast_cancer", "digits", "iris", "wine")
SCALINGS = ("none", "standard", "unit-norm", "max")
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (count, rows, cols)
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension (count)
ACCEPTED_FORMS = (
    f"sklearn:NAME (NAME one of {', '.join(SKLEARN_DATASETS)}), mnist or libsvm:NAME (fetched with "
    f"mpicomp data fetch NAME; NAME one of {', '.join(LIBSVM_NAMES)}), mnist:DIR (the four idx files, .gz or not), "
    "svmlight:PATH / libsvm:PATH or a plain path to a LIBSVM file (.gz, .bz2 allowed), "
    "npz:PATH or a path ending in .npz (arrays X, y and optionally X_test, y_test)"
)
# SeedSequence spawn key of the train/test split (partitions use another one).
SPLIT_STREAM = 1
# Stored rows per block when fitting the standard scaling and when materialising dense rows: no
# float64 copy of the whole train split, nor a second copy of a rank's rows, is ever made.
CHUNK_ROWS = 2048


@dataclass(frozen=True)
class Dataset:
    """Features and raw labels of the train split and (None if absent) the held-out split."""

    name: str
    X: Features
    y: np.ndarray
    X_test: Features | None = None
    y_test: np.ndarray | None = None

    @property
    def n_features(self) -> int:
        return self.X.shape[1]


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {str(path)!r} not found (expected {what})")
    return path


def _open_binary(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if path.suffix == ".bz2":
        return bz2.open(path, "rb")
    return open(path, "rb")


def load_sklearn(name: str) -> Dataset:
    """One of scikit-learn's bundled datasets (no network)."""
    if name not in SKLEARN_DATASETS:
        raise ValueError(f"unknown sklearn dataset {name!r}; choose one of {', '.join(SKLEARN_DATASETS)}")
    from sklearn import datasets  # imported when used: it costs every command (and rank) about a second

    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    return Dataset(f"sklearn:{name}", np.asarray(X, dtype=np.float64), np.asarray(y))


def load_svmlight(path: str | Path, n_features: int | None = None) -> Dataset:
    """A LIBSVM/svmlight file via ``sklearn.datasets.load_svmlight_file`` (CSR features)."""
    from sklearn.datasets import load_svmlight_file

    path = _require_file(Path(path), "a LIBSVM/svmlight text file, optionally .gz or .bz2")
    try:
        X, y = load_svmlight_file(str(path), n_features=n_features, dtype=np.float64)
    except (ValueError, OSError, EOFError) as err:  # also a truncated or non-gzip .gz, an unreadable file
        raise ValueError(f"{path}: not a readable LIBSVM/svmlight file ({err})") from None
    return Dataset(str(path), sp.csr_matrix(X), np.asarray(y))


def load_npz(path: str | Path) -> Dataset:
    """A ``.npz`` archive with ``X`` (2-D) and ``y``, optionally ``X_test`` and ``y_test``."""
    path = _require_file(Path(path), "a .npz archive with arrays X and y (optionally X_test, y_test)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        reason = (
            "it holds Python objects, not numeric arrays" if "allow_pickle" in str(err) else str(err) or "empty file"
        )
        raise ValueError(f"{path}: not a readable .npz archive of numeric arrays X and y ({reason})") from None
    missing = [key for key in ("X", "y") if key not in arrays]
    if missing:
        raise ValueError(f"{path}: missing array(s) {', '.join(missing)}; found {', '.join(arrays) or 'none'}")
    has_test = "X_test" in arrays or "y_test" in arrays
    if has_test and not ("X_test" in arrays and "y_test" in arrays):
        raise ValueError(f"{path}: give both X_test and y_test, or neither")
    pairs = [("X", "y")] + ([("X_test", "y_test")] if has_test else [])
    for xk, yk in pairs:
        X, y = arrays[xk], arrays[yk]
        if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
            raise ValueError(
                f"{path}: {xk} must be 2-D and {yk} 1-D with one label per row, got {X.shape} and {y.shape}"
            )
        if X.dtype.kind not in "biuf":
            raise ValueError(f"{path}: {xk} holds {X.dtype} values; the features must be numbers")
    X_test = np.asarray(arrays["X_test"], dtype=np.float64) if has_test else None
    return Dataset(str(path), np.asarray(arrays["X"], dtype=np.float64), arrays["y"], X_test, arrays.get("y_test"))


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An idx file of unsigned bytes: big-endian magic, then dimensions, then the data.

    Images (magic 0x803) have a 16-byte header ``(magic, count, rows, cols)`` and come back as
    ``(count, rows*cols)``; labels (magic 0x801) have an 8-byte header ``(magic, count)``.
    """
    try:
        with _open_binary(path) as handle:
            buf = handle.read()
    except (OSError, EOFError) as err:  # a truncated or non-gzip .gz
        raise ValueError(f"{path}: cannot read the idx file ({err})") from None
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise ValueError(f"{path}: {len(buf)} bytes is shorter than the {header}-byte idx header")
    found = int.from_bytes(buf[:4], "big")
    if found != magic:
        kind = "image" if ndim == 3 else "label"
        raise ValueError(f"{path}: bad idx magic number 0x{found:08x}, expected 0x{magic:08x} for an MNIST {kind} file")
    dims = [int.from_bytes(buf[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(buf, dtype=np.uint8, offset=header)
    expected = int(np.prod(dims))
    if data.size != expected:
        raise ValueError(f"{path}: header says {dims} ({expected} bytes of data) but the file holds {data.size}")
    return data.reshape(dims[0], -1) if ndim > 1 else data


def _find_idx(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"MNIST file {stem}(.gz) not found in {str(directory)!r} (expected {', '.join(MNIST_FILES.values())})"
    )


def load_mnist(directory: str | Path, dtype: type[np.generic] = np.float64) -> Dataset:
    """MNIST from the four idx files in ``directory``; its 10,000-image test set is the held-out split.

    Pixels come as ``dtype`` (``np.uint8`` keeps the stored bytes, an eighth of the float64 size).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"MNIST directory {str(directory)!r} not found (expected a folder with the four idx files)"
        )
    parts = {}
    for key, stem in MNIST_FILES.items():
        parts[key] = read_idx(_find_idx(directory, stem), IDX_IMAGES_MAGIC if "images" in key else IDX_LABELS_MAGIC)
    for split in ("train", "test"):
        n_images, n_labels = parts[f"{split}_images"].shape[0], parts[f"{split}_labels"].shape[0]
        if n_images != n_labels:
            raise ValueError(f"{directory}: {split} split has {n_images} images but {n_labels} labels")
    return Dataset(
        f"mnist:{directory}",
        parts["train_images"].astype(dtype, copy=False),
        parts["train_labels"].astype(np.int64),
        parts["test_images"].astype(dtype, copy=False),
        parts["test_labels"].astype(np.int64),
    )


def check_dataset(data: Dataset) -> Dataset:
    """ValueError naming the dataset unless it has samples, features and finite numeric features."""
    for label, X in (("train", data.X), ("test", data.X_test)):
        if X is None:
            continue
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(
                f"{data.name}: the {label} features have shape {X.shape}; need at least one row and column"
            )
        values = X if isinstance(X, np.ndarray) else X.data
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise ValueError(f"{data.name}: the {label} features contain NaN or Inf; clean the file first")
    return data


def load_dataset(spec: str, *, n_features: int | None = None, stored: bool = False) -> Dataset:
    """Load a dataset from its string (see the module docstring) and check it (:func:`check_dataset`);
    ``n_features`` fixes LIBSVM widths. Features are float64 (CSR for LIBSVM); ``stored`` keeps
    MNIST's pixels as the stored bytes (uint8)."""
    return check_dataset(_load(spec, n_features, np.uint8 if stored else np.float64))


def _load(spec: str, n_features: int | None, pixels: type[np.generic]) -> Dataset:
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"dataset must be a non-empty string: {ACCEPTED_FORMS}")
    scheme, sep, rest = spec.partition(":")
    if spec == MNIST.name:
        return load_mnist(cached_path(MNIST.name), pixels)
    if sep and scheme in ("svmlight", "libsvm") and rest in LIBSVM_NAMES and not Path(rest).exists():
        return load_svmlight(cached_path(rest), n_features)
    if sep and scheme == "sklearn":
        return load_sklearn(rest)
    if sep and scheme == "mnist":
        return load_mnist(rest, pixels)
    if sep and scheme in ("svmlight", "libsvm"):
        return load_svmlight(rest, n_features)
    if sep and scheme == "npz":
        return load_npz(rest)
    if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9_+.-]+", scheme) and not Path(spec).exists():
        raise ValueError(f"unknown dataset scheme {scheme!r} in {spec!r}; accepted forms: {ACCEPTED_FORMS}")
    path = Path(spec)
    return load_npz(path) if path.suffix == ".npz" else load_svmlight(path, n_features)


def _check_fraction(test_fraction: float) -> None:
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction!r}")


def split_rows(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``(train, test)`` row indices (ascending) holding out ``round(test_fraction * n)`` random rows
    (from ``SeedSequence(seed)``); ``test`` is None when that rounds to no row."""
    _check_fraction(test_fraction)
    n_test = round(test_fraction * n)
    if n_test == 0:
        return np.arange(n), None
    if n_test >= n:
        raise ValueError(f"test_fraction {test_fraction} leaves no training sample out of {n}")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(SPLIT_STREAM,)))
    perm = rng.permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def split_train_test(data: Dataset, test_fraction: float, seed: int) -> Dataset:
    """Hold out ``round(test_fraction * N)`` random rows (:func:`split_rows`); no-op if a test split exists."""
    _check_fraction(test_fraction)
    if data.X_test is not None:
        return data
    train, test = split_rows(data.X.shape[0], test_fraction, seed)
    if test is None:
        return data
    return replace(data, X=data.X[train], y=data.y[train], X_test=data.X[test], y_test=data.y[test])


def _column_sum(X: np.ndarray, rows: np.ndarray, center: np.ndarray | None = None) -> np.ndarray:
    """``sum_j x_j`` (or ``sum_j (x_j - center)^2``) over ``X[rows]`` in float64, ``CHUNK_ROWS`` rows at a time.

    Each block is folded onto the running total row after row, the order of NumPy's axis-0 sum of
    the whole float64 array, without making that array.
    """
    total: np.ndarray | None = None
    for start in range(0, rows.size, CHUNK_ROWS):
        block = np.asarray(X[rows[start : start + CHUNK_ROWS]], dtype=np.float64)
        if center is not None:
            block -= center
            block *= block
        if total is not None:
            block = np.vstack((total, block))
        total = np.add.reduce(block, axis=0)
    assert total is not None, "the scaling is fitted on at least one row"
    return total


def standard_scaling(X: Features, rows: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """``(center, scale)`` for per-feature standardisation over ``X[rows]``: mean (None for sparse X) and
    standard deviation (``sqrt(mean (x - mean)^2)``).

    Features whose deviation is below ``1e-10 max(1, |mean|)`` (constant up to rounding) keep scale 1.
    """
    if sp.issparse(X):
        from sklearn.utils.sparsefuncs import mean_variance_axis

        mean, var = mean_variance_axis(sp.csr_matrix(X[rows]), axis=0)
        center = None
    else:
        mean = _column_sum(X, rows) / rows.size
        var = _column_sum(X, rows, mean) / rows.size
        center = mean
    std = np.sqrt(var)
    return center, np.where(std > 1e-10 * np.maximum(1.0, np.abs(mean)), std, 1.0)


@dataclass(frozen=True)
class Scaling:
    """A feature transform fitted on the train split: ``(x - center) / scale`` per feature (``standard``;
    sparse data: ``x / scale``, no centering), ``x / ||x||`` per row (``unit-norm``), ``x / max_ij |X_ij|`` with one
    constant for every feature (``max``: MNIST's pixels / 255), or none."""

    method: str = "none"
    center: np.ndarray | None = None
    scale: np.ndarray | None = None

    def apply(self, X: Features) -> Features:
        """The transformed rows, in a new float64 array (CSR stays CSR)."""
        if sp.issparse(X):
            if self.method == "standard":
                assert self.scale is not None, "a standard scaling has a scale"
                return sp.csr_matrix(X @ sp.diags(1.0 / self.scale))
            if self.method == "max":
                assert self.scale is not None, "a max scaling has its constant"
                return sp.csr_matrix(X / self.scale[0])
            return _unit_rows(X) if self.method == "unit-norm" else X
        out = np.empty(X.shape)
        self.apply_into(X, out)
        return out

    def apply_into(self, X: np.ndarray, out: np.ndarray) -> None:
        """Write the transformed dense rows ``X`` (any numeric dtype) into the float64 array (or view) ``out``."""
        if self.method == "standard":
            assert self.center is not None, "a standard scaling fitted on dense rows has a center"
            np.subtract(X, self.center, out=out)
            out /= self.scale
            return
        out[...] = X
        if self.method == "max":
            out /= self.scale
        if self.method == "unit-norm":
            out[...] = _unit_rows(out)


def _unit_rows(X: Features) -> Features:
    """``x / ||x||_2`` per row (zero rows stay zero), in place for a dense array; ``sklearn.preprocessing.normalize``."""
    from sklearn.preprocessing import normalize

    return normalize(X, copy=not isinstance(X, np.ndarray))


def fit_scaling(X: Features, rows: np.ndarray, method: str) -> Scaling:
    """The :class:`Scaling` ``method`` fitted on ``X[rows]`` (``standard``: per-feature center and scale;
    ``max``: the largest ``|X_ij|`` over those rows, 1 if they are all 0)."""
    if method not in SCALINGS:
        raise ValueError(f"unknown scaling {method!r}; choose one of {', '.join(SCALINGS)}")
    if method == "max":
        return Scaling(method, None, np.array([largest_magnitude(X, rows) or 1.0]))
    if method != "standard":
        return Scaling(method)
    return Scaling(method, *standard_scaling(X, rows))


def largest_magnitude(X: Features, rows: np.ndarray) -> float:
    """``max |X_ij|`` over ``X[rows]``, ``CHUNK_ROWS`` stored rows at a time (0 for no nonzero entry)."""
    if sp.issparse(X):
        values = sp.csr_matrix(X[rows]).data
        return float(np.abs(values).max()) if values.size else 0.0
    return max(
        (float(np.abs(X[rows[start : start + CHUNK_ROWS]]).max()) for start in range(0, rows.size, CHUNK_ROWS)),
        default=0.0,
    )


def scale_features(data: Dataset, method: str) -> Dataset:
    """Scale features, fitting on the train split only.

    ``standard``: per-feature zero mean and unit variance on the train split (sparse data: unit
    variance only, to keep sparsity; constant features are left unscaled); ``unit-norm``: every row
    to unit L2 norm (zero rows stay zero); ``max``: every value divided by the largest ``|x|`` of the
    train split (one constant, so sparsity and ratios stay); ``none``: unchanged.
    """
    scaling = fit_scaling(data.X, np.arange(data.X.shape[0]), method)
    if method == "none":
        return data
    X_test = None if data.X_test is None else scaling.apply(data.X_test)
    return replace(data, X=scaling.apply(data.X), X_test=X_test)


def add_intercept(X: Features) -> Features:
    """``[X, 1]``: a constant-1 column appended last."""
    ones = np.ones((X.shape[0], 1))
    if sp.issparse(X):
        return sp.hstack([X, sp.csr_matrix(ones)], format="csr")
    return np.hstack([X, ones])


@dataclass(frozen=True)
class PreparedData:
    """A split dataset with its scaling fitted, whose features stay as stored until rows are asked for.

    Train rows are ``X[train]`` (labels ``y``), held-out rows ``X_test[test]`` (``X_test`` may be
    ``X`` itself); :meth:`train_rows` and :meth:`test_rows` return them float64, scaled, with the
    intercept column when ``intercept``.
    """

    name: str
    X: Features
    train: np.ndarray
    y: np.ndarray
    X_test: Features | None
    test: np.ndarray | None
    y_test: np.ndarray | None
    scaling: Scaling
    intercept: bool

    def train_rows(self, idx: np.ndarray) -> Features:
        """Train rows ``idx`` (indices into the train split), in that order."""
        return self._finish(self.X, self.train[idx])

    def test_rows(self, idx: np.ndarray) -> Features:
        """Held-out rows ``idx`` (indices into the held-out split; there must be one)."""
        assert self.X_test is not None and self.test is not None, "there is a held-out split"
        return self._finish(self.X_test, self.test[idx])

    def dataset(self) -> Dataset:
        """Every row materialised."""
        X_test = None if self.test is None else self.test_rows(np.arange(self.test.size))
        return Dataset(self.name, self.train_rows(np.arange(self.train.size)), self.y, X_test, self.y_test)

    def _finish(self, source: Features, rows: np.ndarray) -> Features:
        """``source[rows]`` -> float64, scaled, then the intercept column; dense rows go straight into
        one allocation, ``CHUNK_ROWS`` stored rows at a time."""
        if sp.issparse(source):
            scaled = self.scaling.apply(sp.csr_matrix(source[rows]))
            return add_intercept(scaled) if self.intercept else scaled
        width = source.shape[1]
        out = np.empty((rows.size, width + self.intercept))
        for start in range(0, rows.size, CHUNK_ROWS):
            block = slice(start, start + CHUNK_ROWS)
            self.scaling.apply_into(source[rows[block]], out[block, :width])
        if self.intercept:
            out[:, width] = 1.0
        return out


def prepare_data(
    spec: str,
    *,
    test_fraction: float = 0.2,
    scale: str = "standard",
    intercept: bool = True,
    seed: int = 0,
    n_features: int | None = None,
) -> PreparedData:
    """Load (features as stored), split (``test_fraction``) and fit the scaling on the train split."""
    if scale not in SCALINGS:
        raise ValueError(f"unknown scaling {scale!r}; choose one of {', '.join(SCALINGS)}")
    _check_fraction(test_fraction)
    data = load_dataset(spec, n_features=n_features, stored=True)
    test: np.ndarray | None
    if data.X_test is not None:
        train, test = np.arange(data.X.shape[0]), np.arange(data.X_test.shape[0])
        X_test, y, y_test = data.X_test, data.y, data.y_test
    else:
        train, test = split_rows(data.X.shape[0], test_fraction, seed)
        X_test = None if test is None else data.X
        y, y_test = data.y[train], None if test is None else data.y[test]
    scaling = fit_scaling(data.X, train, scale)
    return PreparedData(data.name, data.X, train, y, X_test, test, y_test, scaling, intercept)
