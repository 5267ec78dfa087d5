"""The starting point ``x^0`` of a run (``[problem] init``).

* ``default`` — the problem's own start (:meth:`Problem.x0`: zeros for the linear models, Glorot
  weights for ``mlp``);
* ``zeros`` — ``x^0 = 0``;
* ``normal`` — ``x^0 ~ N(0, init_scale^2 I)``, drawn from ``SeedSequence(seed, spawn_key=(START_STREAM,))``
  of the run's root seed: the same vector on every rank and for every rank layout;
* a path ending in ``.npy`` — that file's 1-D array of d finite numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Problem

INITS = ("default", "zeros", "normal")
START_STREAM = 4  # SeedSequence spawn key of x^0 (split: 1, partition: 2, mlp weights: 3)


def is_init(init: str) -> bool:
    """Whether ``init`` is one of :data:`INITS` or names a ``.npy`` file."""
    return init in INITS or init.endswith(".npy")


def load_start(path: str | Path, d: int) -> np.ndarray:
    """The 1-D float array of ``d`` finite values stored in ``path`` (ValueError naming the file otherwise)."""
    try:
        x = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"{str(path)!r} not found") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{str(path)!r} is not a readable .npy array ({exc})") from None
    if x.shape != (d,) or x.dtype.kind not in "fiu":
        raise ValueError(
            f"{str(path)!r} holds a {x.dtype} array of shape {x.shape}; the problem needs {d} real numbers, shape ({d},)"
        )
    if not np.isfinite(x).all():
        raise ValueError(f"{str(path)!r} contains NaN or Inf")
    return x.astype(np.float64)


def initial_point(problem: Problem, init: str, scale: float, seed: int) -> np.ndarray:
    """``x^0`` of the run per ``init`` (module docstring); ``seed`` is the run's root seed."""
    if init == "default":
        return problem.x0().astype(np.float64, copy=True)
    if init == "zeros":
        return np.zeros(problem.d)
    if init == "normal":
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(START_STREAM,)))
        return scale * rng.standard_normal(problem.d)
    if not is_init(init):
        raise ValueError(
            f"{init!r} is not allowed; choose one of {', '.join(map(repr, INITS))} or a path to a .npy file"
        )
    return load_start(init, problem.d)
