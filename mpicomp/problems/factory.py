"""``build_problem``: dataset string + options -> a sharded :class:`~.glm.GLMProblem`.

Problems (``f_i`` of worker i on its shard; ``r`` = smooth terms, R = prox term):

* ``logistic`` — ``log(1 + exp(-b a^T x))``, labels mapped to ``+-1`` (the larger of two labels, or
  ``positive_class``, is +1);
* ``logistic-nonconvex`` — the same plus ``nonconvex sum_k x_k^2/(1 + x_k^2)`` (needs a weight > 0);
* ``softmax`` — multiclass cross-entropy, ``x`` class-major (``x[y*l + f]``, l features incl. intercept);
* ``lsq`` — ``(a^T x - b)^2 / 2``; two-label data gets ``+-1`` targets (and a sign test accuracy),
  anything else its raw labels as real targets;
* ``gaussian`` — the Gaussian toy of :mod:`.gaussian` (posterior in closed form) on generated data,
  ``dataset = "synthetic:d=50,points=200,spread=2,noise=1"`` (every key optional; these defaults);
* ``mlp`` — a ReLU multilayer perceptron with softmax cross-entropy (:mod:`.mlp`), hidden widths
  ``hidden`` (default one layer of 200: MNIST 784-200-10); the intercept column is its first bias.

Every problem gets ``r(x) = (l2/2)||x||^2 + nonconvex sum_k x_k^2/(1+x_k^2)`` (the latter is
allowed on any problem) and ``R(x) = l1||x||_1 + (r_l2/2)||x||^2`` per ``regularizer``
(:func:`~.regularizers.make_regularizer`). The intercept, when on, is regularised like every weight.

Other problems come from plugins (entry-point group ``mpicomp.problems``, or ``name = "module:Class"``):
a :class:`~.base.Problem` subclass built as ``cls(n_workers, dataset=..., l2=..., seed=..., collective=...)``
(docs/extending.md).

Built with a ``collective`` (an MPI rank's transport), a problem holds only that rank's workers'
rows, materialised from the dataset as stored (:class:`~mpicomp.data.PreparedData`), and their
blocks of the held-out split (scored worker by worker); without one, every row.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TypedDict

import numpy as np

from ..data import PreparedData, partition_indices, prepare_data
from ..plugins import Plugin, load_entry_points, load_target
from .base import Collective, Problem, held_out_blocks
from .gaussian import GaussianClients
from .glm import Features, GLMProblem, LogisticLoss, MarginLoss, SoftmaxLoss, SquaredLoss
from .mlp import MLPProblem
from .regularizers import NonconvexPenalty, SmoothSum, SquaredNorm, make_regularizer

PROBLEMS = ("logistic", "logistic-nonconvex", "softmax", "lsq", "gaussian", "mlp")
PLUGIN_ARGUMENTS = ("dataset", "l2", "seed")  # the [problem] keys a plugin problem is built from


def check_problem(cls: type[Problem]) -> None:
    """TypeError unless ``cls`` implements every abstract method of :class:`~.base.Problem`."""
    if inspect.isabstract(cls):
        raise TypeError(f"problem class lacks {', '.join(sorted(cls.__abstractmethods__))}")


def _check_entry_point(name: str, cls: type) -> None:
    check_problem(cls)
    if name in PROBLEMS:
        raise TypeError(f"the name is taken by mpicomp's problem {name!r}")


@cache
def plugins() -> dict[str, Plugin]:
    """The problems of entry-point group ``mpicomp.problems`` (read once; bad ones logged and left out)."""
    return load_entry_points("mpicomp.problems", Problem, _check_entry_point)


def problem_class(name: str) -> type[Problem] | None:
    """The plugin class ``name`` stands for (an entry point or ``module:Class``), None for mpicomp's
    own problems; ValueError listing the names otherwise."""
    if name in PROBLEMS:
        return None
    if ":" in name:
        return load_target(name, Problem, "problem", check_problem)
    if name in plugins():
        return plugins()[name].cls
    names = ", ".join((*PROBLEMS, *plugins()))
    raise ValueError(f"unknown problem {name!r}; choose one of {names} or a module:Class")


SYNTHETIC_DEFAULTS: dict[str, float] = {"d": 50, "points": 200, "spread": 2.0, "noise": 1.0}


class SyntheticOptions(TypedDict):
    """The Gaussian toy's data options (:class:`~.gaussian.GaussianClients`)."""

    d: int
    points: int
    spread: float
    noise: float


class HeldOut(TypedDict, total=False):
    """The local workers' blocks of the held-out split, as problem arguments (empty without a split)."""

    test_features: Features
    test_targets: np.ndarray
    test_sizes: np.ndarray


def synthetic_options(dataset: str) -> SyntheticOptions:
    """``"synthetic:d=50,points=200"`` -> the Gaussian toy's options (defaults for the keys not given)."""
    prefix, _, rest = dataset.partition(":")
    if prefix != "synthetic":
        raise ValueError(
            f"problem 'gaussian' generates its data: dataset must be 'synthetic[:key=value,...]', got {dataset!r}"
        )
    options = dict(SYNTHETIC_DEFAULTS)
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, _, value = item.partition("=")
        if key not in SYNTHETIC_DEFAULTS:
            raise ValueError(f"dataset {dataset!r}: unknown key {key!r}; keys: {', '.join(SYNTHETIC_DEFAULTS)}")
        kind = type(SYNTHETIC_DEFAULTS[key])
        try:
            options[key] = kind(value)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise ValueError(f"dataset {dataset!r}: {key} = {value!r} is not {what}") from None
    d, points = int(options["d"]), int(options["points"])
    return SyntheticOptions(d=d, points=points, spread=options["spread"], noise=options["noise"])


def _all_labels(y: np.ndarray, y_test: np.ndarray | None) -> np.ndarray:
    return y if y_test is None else np.concatenate([y, y_test])


def _positive_label(name: str, y: np.ndarray, y_test: np.ndarray | None, positive_class: float | None):
    """The label that becomes +1, or None if ``y`` is not two-class and no ``positive_class`` was given."""
    if positive_class is not None:
        if not np.any(y == positive_class):
            raise ValueError(f"positive_class {positive_class!r} does not occur in the {name} training labels")
        return positive_class
    classes = np.unique(_all_labels(y, y_test))
    return classes[1] if classes.size == 2 else None


def _encode(labels: np.ndarray | None, encoder) -> np.ndarray | None:
    return None if labels is None else encoder(labels)


def _targets(
    name: str, y: np.ndarray, y_test: np.ndarray | None, positive_class: float | None
) -> tuple[MarginLoss, np.ndarray, np.ndarray | None]:
    """The loss and its train/test targets: class indices (softmax), +-1 signs, or raw reals (lsq)."""
    if name == "softmax":
        classes = np.unique(_all_labels(y, y_test))

        def class_index(labels: np.ndarray) -> np.ndarray:
            return np.searchsorted(classes, labels)

        return SoftmaxLoss(classes.size), class_index(y), _encode(y_test, class_index)
    positive = _positive_label(name, y, y_test, positive_class)
    if positive is None and name == "lsq":
        return SquaredLoss(classification=False), y, y_test
    if positive is None:
        found = np.unique(_all_labels(y, y_test))
        raise ValueError(
            f"problem {name!r} needs two classes but the labels have {found.size} ({found[:10]}); "
            "set positive_class (one class vs the rest) or use problem 'softmax'"
        )

    def signs(labels: np.ndarray) -> np.ndarray:
        return np.where(labels == positive, 1.0, -1.0)

    loss = SquaredLoss(classification=True) if name == "lsq" else LogisticLoss()
    return loss, signs(y), _encode(y_test, signs)


def build_problem(
    name: str,
    dataset: str,
    n_workers: int,
    *,
    l2: float = 1e-3,
    nonconvex: float = 0.0,
    regularizer: str = "none",
    l1: float = 0.0,
    r_l2: float = 0.0,
    intercept: bool = True,
    partition: str = "iid",
    dirichlet_alpha: float = 0.5,
    lognormal_sigma: float = 1.0,
    scale: str = "standard",
    test_fraction: float = 0.2,
    seed: int = 0,
    n_features: int | None = None,
    positive_class: float | None = None,
    cache_dir: str | Path | None = None,
    hidden: tuple[int, ...] = (200,),
    collective: Collective | None = None,
) -> Problem:
    """Load ``dataset``, split/scale it, partition the train rows over ``n_workers`` and build the problem.

    ``partition`` in ``iid``, ``contiguous``, ``label``, ``dirichlet`` (``dirichlet_alpha``), ``unbalanced``
    (``lognormal_sigma``); ``scale`` in ``none``, ``standard``, ``unit-norm``; ``n_features`` fixes a
    LIBSVM file's width; ``cache_dir`` holds cached optima (default ``$MPICOMP_CACHE`` or ``~/.cache/mpicomp``);
    ``hidden`` the hidden layer widths of ``mlp``; ``collective`` (an MPI rank's transport) keeps only
    that rank's workers' shards (module docstring).
    Data, split and shards depend only on these arguments and ``seed``, never on MPI ranks.
    """
    plugin: Callable[..., Problem] | None = problem_class(name)  # a subclass with the plugin constructor
    if plugin is not None:
        if regularizer != "none" or nonconvex:
            raise ValueError(
                f"plugin problem {name!r} is built from {', '.join(PLUGIN_ARGUMENTS)} only: "
                "set regularizer = 'none' and nonconvex = 0"
            )
        return plugin(n_workers, dataset=dataset, l2=l2, seed=seed, collective=collective)
    for key, value in (("l2", l2), ("nonconvex", nonconvex)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{key} must be finite and >= 0, got {value!r}")
    if name == "logistic-nonconvex" and nonconvex == 0:
        raise ValueError("problem 'logistic-nonconvex' needs nonconvex > 0 (e.g. 0.1); with 0 use 'logistic'")
    if name == "gaussian":
        if regularizer != "none" or nonconvex:
            raise ValueError("problem 'gaussian' takes only l2 (the prior): set regularizer = 'none', nonconvex = 0")
        return GaussianClients(n_workers, l2=l2, seed=seed, collective=collective, **synthetic_options(dataset))
    prox_term = make_regularizer(regularizer, l1, r_l2)
    data = prepare_data(
        dataset, test_fraction=test_fraction, scale=scale, intercept=intercept, seed=seed, n_features=n_features
    )
    loss, targets, test_targets = _targets("softmax" if name == "mlp" else name, data.y, data.y_test, positive_class)
    shards = partition_indices(data.y, n_workers, partition, seed=seed, alpha=dirichlet_alpha, sigma=lognormal_sigma)
    local = range(n_workers) if collective is None else collective.local_workers
    order = np.concatenate([shards[w] for w in local]) if len(local) else np.empty(0, dtype=np.intp)
    features = data.train_rows(order)
    held_out = _held_out(data, test_targets, n_workers, local)
    sizes = [len(shard) for shard in shards]
    smooth = SmoothSum(SquaredNorm(l2), NonconvexPenalty(nonconvex))
    if name == "mlp":
        return MLPProblem(
            features,
            targets[order],
            sizes,
            loss.outputs,
            hidden,
            seed=seed,
            collective=collective,
            smooth=smooth,
            regularizer=prox_term,
            **held_out,
        )
    return GLMProblem(
        loss,
        features,
        targets[order],
        sizes,
        collective=collective,
        smooth=smooth,
        regularizer=prox_term,
        name=name,
        cache_dir=cache_dir,
        **held_out,
    )


def _held_out(data: PreparedData, targets: np.ndarray | None, n_workers: int, local: range) -> HeldOut:
    """The local workers' blocks of the held-out split (:func:`~.base.held_out_blocks`) as problem arguments."""
    if targets is None:
        return HeldOut()
    sizes = held_out_blocks(len(targets), n_workers)
    start = int(sizes[: local.start].sum())
    rows = np.arange(start, start + int(sizes[local.start : local.stop].sum()))
    return HeldOut(test_features=data.test_rows(rows), test_targets=targets[rows], test_sizes=sizes)
