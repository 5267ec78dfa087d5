"""Datasets (loaders, held-out split, scaling) and partitioners of the train set over workers."""

from .loaders import (
    SCALINGS,
    SKLEARN_DATASETS,
    Dataset,
    add_intercept,
    load_dataset,
    load_mnist,
    load_npz,
    load_sklearn,
    load_svmlight,
    prepare_dataset,
    read_idx,
    scale_features,
    split_train_test,
)
from .partition import PARTITIONS, partition_indices

__all__ = [
    "PARTITIONS",
    "SCALINGS",
    "SKLEARN_DATASETS",
    "Dataset",
    "add_intercept",
    "load_dataset",
    "load_mnist",
    "load_npz",
    "load_sklearn",
    "load_svmlight",
    "partition_indices",
    "prepare_dataset",
    "read_idx",
    "scale_features",
    "split_train_test",
]
