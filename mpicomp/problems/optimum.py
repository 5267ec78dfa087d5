"""Reference optimum ``x* = argmin f(x) + (r_l2/2)||x||^2 + l1 ||x||_1`` to high accuracy, cached on disk.

Smooth case (``l1 = 0``): L-BFGS-B to a moderate accuracy, then inexact Newton steps (conjugate gradients on
Hessian-vector products) until ``||grad|| <= gtol`` or float rounding stops progress.

L1 case: the exact smooth reformulation ``x = u - v`` with ``u, v >= 0``, minimising
``f(u - v) + l1 sum(u + v)`` under bounds by L-BFGS-B, then an active-set Newton polish:
Newton on the support with fixed signs (where ``F`` is smooth), moving coordinates in or out
until the optimality conditions ``grad_k f + l1 sign(x_k) = 0`` on the support and
``|grad_k f| <= l1`` off it hold. Whichever point has the smaller stationarity residual
``dist(0, dF(x))`` is returned.

Results are cached as ``.npz`` files named by a hash of everything they depend on, written
to a temporary file and moved in with ``os.replace`` (:func:`write_cached`), so concurrent
processes computing the same (deterministic) optimum never see a half-written file.
"""

from __future__ import annotations

import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.sparse.linalg import LinearOperator, cg

ValueAndGrad = Callable[[np.ndarray], tuple[float, np.ndarray]]
HessianProduct = Callable[[np.ndarray, np.ndarray], np.ndarray]

GTOL = 1e-13  # target stationarity residual, relative to max(1, residual at the start)
# L-BFGS-B only warm-starts Newton (which needs far fewer passes over the data near x*); in the L1
# case it also picks the support, so it runs tighter there.
LBFGS_GTOL = {False: 1e-6, True: 1e-9}
NOISE = 64 * np.finfo(float).eps  # relative size of rounding noise in a function value


@dataclass(frozen=True)
class OptimumResult:
    """``x*``, the smooth value at it, and ``dist(0, dF(x*))`` (the stationarity residual)."""

    x: np.ndarray
    value: float
    residual: float


def stationarity_residual(x: np.ndarray, grad: np.ndarray, l1: float) -> float:
    """``dist(0, grad + l1 d||x||_1)``: ``grad + l1 sign(x)`` on the support, ``max(|grad| - l1, 0)`` off it."""
    if l1 == 0.0:
        return float(np.linalg.norm(grad))
    r = np.where(x != 0.0, grad + l1 * np.sign(x), np.maximum(np.abs(grad) - l1, 0.0))
    return float(np.linalg.norm(r))


def lbfgs(value_and_grad: ValueAndGrad, x0: np.ndarray, gtol: float, bounds=None) -> np.ndarray:
    """L-BFGS-B until the largest projected-gradient entry is ``<= gtol`` or no more progress is possible."""
    res = minimize(
        value_and_grad,
        x0,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 50_000, "maxfun": 100_000, "maxcor": 20, "ftol": 0.0, "gtol": gtol},
    )
    return res.x


def newton_polish(value_and_grad: ValueAndGrad, hessp: HessianProduct, x: np.ndarray, gtol: float) -> np.ndarray:
    """Inexact Newton-CG (forcing term ``min(0.1, sqrt||g||)``) with backtracking, for a convex function.

    A step is accepted on Armijo's condition, or, where function values are down to rounding
    noise, when it lowers the gradient norm without raising the value beyond that noise.
    """
    value, grad = value_and_grad(x)
    n = x.size
    for _ in range(50):
        gnorm = float(np.linalg.norm(grad))
        if gnorm <= gtol:
            break
        hessian = LinearOperator((n, n), matvec=lambda v, at=x: hessp(at, v), dtype=np.float64)
        step, _ = cg(hessian, -grad, rtol=min(0.1, np.sqrt(gnorm)), maxiter=10 * n)
        slope = float(grad @ step)
        if not slope < 0.0:
            step, slope = -grad, -(gnorm**2)
        noise = NOISE * max(1.0, abs(value))
        t = 1.0
        for _ in range(40):
            x_new = x + t * step
            value_new, grad_new = value_and_grad(x_new)
            if value_new <= value + 1e-4 * t * slope or (
                value_new <= value + noise and np.linalg.norm(grad_new) < gnorm
            ):
                break
            t *= 0.5
        else:
            break
        x, value, grad = x_new, value_new, grad_new
    return x


def _restricted(value_and_grad: ValueAndGrad, hessp: HessianProduct, x: np.ndarray, l1: float):
    """``F`` restricted to the support of x with the signs of x fixed: smooth there (``+ l1 sign^T z``)."""
    support = np.flatnonzero(x)
    signs = np.sign(x[support])
    d = x.size

    def embed(z: np.ndarray) -> np.ndarray:
        full = np.zeros(d)
        full[support] = z
        return full

    def restricted_value_and_grad(z: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = value_and_grad(embed(z))
        return value + l1 * float(signs @ z), grad[support] + l1 * signs

    def restricted_hessp(z: np.ndarray, v: np.ndarray) -> np.ndarray:
        return hessp(embed(z), embed(v))[support]

    return support, signs, restricted_value_and_grad, restricted_hessp


def polish_l1(value_and_grad: ValueAndGrad, hessp: HessianProduct, x: np.ndarray, l1: float, gtol: float) -> np.ndarray:
    """Active-set Newton for ``min f(x) + l1||x||_1`` from a nearly optimal x (at most 20 support changes)."""
    x = x.copy()
    for _ in range(20):
        support, signs, fun, fun_hessp = _restricted(value_and_grad, hessp, x, l1)
        z = newton_polish(fun, fun_hessp, x[support], gtol)
        flipped = np.sign(z) != signs
        x = np.zeros_like(x)
        x[support] = np.where(flipped, 0.0, z)
        if flipped.any():
            continue
        _, grad = value_and_grad(x)
        entering = (x == 0.0) & (np.abs(grad) > l1 + gtol)
        if not entering.any():
            break
        x[entering] = -np.sign(grad[entering]) * gtol
    return x


def solve_optimum(
    value_and_grad: ValueAndGrad, hessp: HessianProduct, x0: np.ndarray, l1: float = 0.0
) -> OptimumResult:
    """Minimise the smooth convex ``value_and_grad`` plus ``l1 ||x||_1`` to a residual near float precision."""
    _, grad0 = value_and_grad(x0)
    scale = max(1.0, stationarity_residual(x0, grad0, l1))
    gtol, warm_gtol = GTOL * scale, LBFGS_GTOL[l1 > 0.0] * scale
    if l1 == 0.0:
        candidates = [newton_polish(value_and_grad, hessp, lbfgs(value_and_grad, x0, warm_gtol), gtol)]
    else:
        d = x0.size

        def split_value_and_grad(uv: np.ndarray) -> tuple[float, np.ndarray]:
            value, grad = value_and_grad(uv[:d] - uv[d:])
            return value + l1 * float(uv.sum()), np.concatenate([grad + l1, l1 - grad])

        uv = lbfgs(
            split_value_and_grad,
            np.concatenate([np.maximum(x0, 0), np.maximum(-x0, 0)]),
            warm_gtol,
            [(0, None)] * 2 * d,
        )
        rough = uv[:d] - uv[d:]
        candidates = [rough, polish_l1(value_and_grad, hessp, rough, l1, gtol)]
    results = []
    for x in candidates:
        value, grad = value_and_grad(x)
        results.append(OptimumResult(x, value, stationarity_residual(x, grad, l1)))
    return min(results, key=lambda r: r.residual)


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$MPICOMP_CACHE``, else ``~/.cache/mpicomp``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("MPICOMP_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "mpicomp"


def optimum_cache_path(cache_dir: str | Path | None, name: str, key: str) -> Path:
    """``<cache root>/optimum-<name>-<key>.npz``."""
    return cache_root(cache_dir) / f"optimum-{name}-{key}.npz"


def read_cached(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays stored at ``path``, or None when there is no file; an unreadable file only costs a warning."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        warnings.warn(f"ignoring unreadable cache file {path} ({err}); recomputing", RuntimeWarning, stacklevel=2)
        return None


def write_cached(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Store ``arrays`` at ``path`` atomically (temp file + ``os.replace``); an unwritable directory costs a warning."""
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.stem}.", suffix=".npz", delete=False) as tmp:
            tmp_name = tmp.name
            np.savez(tmp, allow_pickle=False, **arrays)
        os.replace(tmp_name, path)
    except OSError as err:
        warnings.warn(
            f"could not write cache file {path} ({err}); continuing without caching", RuntimeWarning, stacklevel=2
        )
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)


def cached_arrays(path: Path, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Arrays stored at ``path`` (:func:`read_cached`), or ``compute()`` stored there (:func:`write_cached`)."""
    arrays = read_cached(path)
    if arrays is None:
        arrays = compute()
        write_cached(path, arrays)
    return arrays
