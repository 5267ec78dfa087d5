"""Datasets (loaders, held-out split, scaling) and partitioners of the train set over workers."""

from .loaders import (
    SCALINGS,
    SKLEARN_DATASETS,
    Dataset,
    PreparedData,
    Scaling,
    add_intercept,
    fit_scaling,
    load_dataset,
    load_mnist,
    load_npz,
    load_sklearn,
    load_svmlight,
    prepare_data,
    read_idx,
    scale_features,
    split_rows,
    split_train_test,
)
from .partition import PARTITIONS, partition_indices

__all__ = [
    "PARTITIONS",
    "SCALINGS",
    "SKLEARN_DATASETS",
    "Dataset",
    "PreparedData",
    "Scaling",
    "add_intercept",
    "fit_scaling",
    "load_dataset",
    "load_mnist",
    "load_npz",
    "load_sklearn",
    "load_svmlight",
    "partition_indices",
    "prepare_data",
    "read_idx",
    "scale_features",
    "split_rows",
    "split_train_test",
]
