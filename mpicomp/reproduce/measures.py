"""The named measures a claim's quantities use (``measure = "NAME"`` in a declaration).

Three kinds:

* per run, ``f(results, **arguments) -> float`` over one :class:`mpicomp.results.Results`; a
  quantity takes the mean over the runs it selects (seeds);
* computed, ``f(**arguments) -> float``: no runs (e.g. a compressor's distortion, Monte Carlo);
* derived, ``f(values, **arguments) -> float`` from the values of earlier quantities, named by id.

A column is a metric of ``/metrics`` or ``bits`` (bits up + down). NaN means "not measured" (a
target never reached, no finite value): its verdict is "differs".
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..results import Results

if TYPE_CHECKING:
    from ..problems.base import Problem


@dataclass(frozen=True)
class Measure:
    """A registered measure: its function, kind, and which arguments name other quantities."""

    name: str
    function: Callable[..., float]
    per_run: bool
    derived: bool
    references: tuple[str, ...]

    @property
    def summary(self) -> str:
        return (self.function.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")

    def parameters(self) -> list[inspect.Parameter]:
        """The declaration's arguments (the results or values parameter left out)."""
        skip = 1 if self.per_run or self.derived else 0
        return list(inspect.signature(self.function).parameters.values())[skip:]


MEASURES: dict[str, Measure] = {}


def _measure(kind: str, references: tuple[str, ...] = ()) -> Callable[[Callable[..., float]], Callable[..., float]]:
    def register(function: Callable[..., float]) -> Callable[..., float]:
        name = function.__name__.replace("_", "-")
        MEASURES[name] = Measure(name, function, kind == "run", kind == "derived", references)
        return function

    return register


def check_arguments(measure: Measure, arguments: Mapping[str, Any], where: str, error: type[Exception]) -> None:
    """``error`` naming the argument unless ``arguments`` fit the measure's parameters."""
    parameters = {p.name: p for p in measure.parameters()}
    for key in arguments:
        if key not in parameters:
            raise error(f"{where}: measure {measure.name!r} takes no {key!r}; it takes {', '.join(parameters)}")
    for name, parameter in parameters.items():
        if parameter.default is inspect.Parameter.empty and name not in arguments:
            raise error(f"{where}: measure {measure.name!r} needs {name!r}")
        if name in arguments and parameter.default is not inspect.Parameter.empty and parameter.default is not None:
            expected = type(parameter.default)
            value = arguments[name]
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                continue
            if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
                raise error(f"{where}: {name} must be {expected.__name__}, got {value!r}")


def column(results: Results, name: str) -> np.ndarray:
    """A metric column as float64; ``bits`` is bits up + down. KeyError naming the columns there are."""
    m = results.metrics
    if name == "bits" and "bits_up" in m:
        return (m["bits_up"] + m["bits_down"]).astype(np.float64)
    if name not in m:
        raise KeyError(f"{results.path}: no metric {name!r}; it has {', '.join(m)}")
    return np.asarray(m[name], dtype=np.float64)


def _window(size: int, start: float, stop: float) -> slice:
    """The rows of the fraction window [start, stop] of ``size`` rows (at least one row)."""
    first = min(int(start * size), max(size - 1, 0))
    return slice(first, max(int(round(stop * size)), first + 1))


@_measure("run")
def final(results: Results, metric: str, window: float = 0.0) -> float:
    """The metric at the last logged row, or with ``window`` > 0 its mean over that last fraction of
    the rows (a noisy floor: ``window = 0.2`` averages the last fifth)."""
    values = column(results, metric)
    if values.size == 0:
        return float("nan")
    if window <= 0:
        return float(values[-1])
    return float(np.mean(values[-max(1, int(round(window * values.size))) :]))


@_measure("run")
def lowest(results: Results, metric: str) -> float:
    """The smallest finite value of the metric over the run."""
    values = column(results, metric)
    finite = values[np.isfinite(values)]
    return float(finite.min()) if finite.size else float("nan")


@_measure("run")
def reach(results: Results, metric: str, target: float, x: str = "rounds", above: bool = False) -> float:
    """Rounds (``x = "rounds"``) or any column (``bits``, ``bits_up``, ``uploads``, ...) at the first
    logged row where the metric is <= ``target`` (>= with ``above = true``); NaN if never reached."""
    values = column(results, metric)
    hit = np.flatnonzero(values >= target if above else values <= target)
    if hit.size == 0:
        return float("nan")
    return float(column(results, "round" if x == "rounds" else x)[hit[0]])


@_measure("run")
def at(results: Results, metric: str, x: str, value: float) -> float:
    """The metric at the first logged row where the column ``x`` (``bits``, ``bits_up``, ``uploads``,
    ``round``, ...) is >= ``value``: its value at a budget; NaN if the run never got there."""
    hit = np.flatnonzero(column(results, x) >= value)
    return float(column(results, metric)[hit[0]]) if hit.size else float("nan")


@_measure("run")
def settle(results: Results, metric: str, residual: float, x: str = "rounds") -> float:
    """Rounds (or any column, as in ``reach``) at the first logged row where the metric is within
    ``residual`` of the run's own lowest value (paper 003's "loss residual": ``F(theta^k) - min_j
    F(theta^j) <= residual``, the minimum over the same run); NaN if the metric has no finite value."""
    values = column(results, metric)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan")
    hit = np.flatnonzero(values - finite.min() <= residual)
    return float(column(results, "round" if x == "rounds" else x)[hit[0]])


@_measure("run")
def log_slope(results: Results, metric: str, start: float = 0.0, stop: float = 1.0, per: int = 100) -> float:
    """Least-squares slope of log10(metric) against the round over the rows in the fraction window
    [start, stop] of the run, in decades per ``per`` rounds: linear convergence is a steady
    negative slope (-1 = ten times smaller every ``per`` rounds). Rows with values <= 0 are left out."""
    values = column(results, metric)
    rounds = column(results, "round")
    window = _window(values.size, start, stop)
    v, r = values[window], rounds[window]
    keep = np.isfinite(v) & (v > 0)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(r[keep], np.log10(v[keep]), 1)[0] * per)


def _problem_of(results: Results) -> Problem:
    """The run's problem, rebuilt in this process from its stored config (every worker local)."""
    from ..config import validate
    from ..rng import root_seed
    from ..runner import build_problem_from

    # a stored config holds every key, unset ones as null: validate what was set (as --resume does)
    config = validate(
        {section: {k: v for k, v in table.items() if v is not None} for section, table in results.config.items()}
    )
    return build_problem_from(config, root_seed(config.run["seed"]))


@_measure("run")
def variance_times_smoothness(results: Results) -> float:
    """Mean over coordinates of the per-coordinate variance of the stored draws (``/samples``),
    times the smoothness L of the run's potential U: exact Langevin gives 1/(1 - gamma L / 2) on a
    Gaussian posterior of variance 1/L per coordinate, an unbiased sampler of the posterior 1."""
    if results.samples is None or len(results.samples) < 2:
        return float("nan")
    return float(results.samples.var(axis=0, ddof=1).mean() * _problem_of(results).potential_smoothness())


PREDICTIVE_PARTS = ("accuracy", "nll", "entropy")


@_measure("run")
def posterior_predictive(results: Results, part: str = "accuracy") -> float:
    """The Bayesian model average of the stored draws on the held-out split, ``pbar(c|a) = (1/K) sum_k
    p(c|a, theta_k)`` over the K draws of ``/samples``; ``part``: its ``accuracy`` (argmax pbar = y), its
    ``nll`` (mean of -log pbar(y|a)) or its ``entropy`` (mean of -sum_c pbar log pbar). NaN without draws."""
    if part not in PREDICTIVE_PARTS:
        raise ValueError(f"posterior-predictive: part {part!r} is not one of {', '.join(PREDICTIVE_PARTS)}")
    return _predictive_parts(results)[part]


def _predictive_parts(results: Results) -> dict[str, float]:
    if results.samples is None or len(results.samples) == 0:
        return dict.fromkeys(PREDICTIVE_PARTS, float("nan"))
    problem = _problem_of(results)
    if problem.test_sizes is None or problem.test_sizes.sum() == 0:
        raise ValueError(
            f"posterior-predictive: {results.path}: the run has no held-out split (set [data] test_fraction)"
        )

    def scored(draw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities = problem.test_class_probabilities(draw)
        if probabilities is None:
            name = results.config["problem"]["name"]
            raise ValueError(f"posterior-predictive: {results.path}: problem {name!r} gives no class probabilities")
        return probabilities

    classes = scored(results.samples[0])[1]
    mean = np.mean([scored(draw)[0] for draw in results.samples], axis=0)
    tiny = np.finfo(np.float64).tiny
    return {
        "accuracy": float(np.mean(mean.argmax(axis=1) == classes)),
        "nll": float(-np.mean(np.log(np.maximum(mean[np.arange(len(classes)), classes], tiny)))),
        "entropy": float(-np.mean(np.sum(mean * np.log(np.maximum(mean, tiny)), axis=1))),
    }


@_measure("computed")
def distortion(
    spec: str, d: int = 16, workers: int = 1, samples: int = 500, seed: int = 0, part: str = "total"
) -> float:
    """E||x - m||^2, m = (1/K) sum_k C_k(x) the mean of K = ``workers`` independent compressions of the same
    x ~ N(0, I_d) by the compressor ``spec`` (each encoded to bytes and decoded), Monte Carlo over ``samples``
    vectors (standard error about 1/sqrt(samples) of the value). ``part``: ``total``, or its ``colinear``
    part ((m - x) . x/||x||)^2 or the ``orthogonal`` rest (the talk's detailed table)."""
    parts = ("total", "colinear", "orthogonal")
    if part not in parts:
        raise ValueError(f"distortion: part {part!r} is not one of {', '.join(parts)}")
    colinear, orthogonal = _distortion_parts(spec, d, workers, samples, seed)
    return {"total": colinear + orthogonal, "colinear": colinear, "orthogonal": orthogonal}[part]


@functools.lru_cache(maxsize=64)
def _distortion_parts(spec: str, d: int, workers: int, samples: int, seed: int) -> tuple[float, float]:
    from ..compressors import make
    from ..rng import RandomKey

    compressor = make(spec)
    xs = np.random.default_rng(seed).standard_normal((samples, d))
    colinear, orthogonal = np.empty(samples), np.empty(samples)
    for i, x in enumerate(xs):
        total = np.zeros(d)
        for k in range(workers):
            key = RandomKey(seed, i, k, 0)
            total += compressor.decode(compressor.encode(x, key), d, key)
        error = total / workers - x
        colinear[i] = float(error @ x) ** 2 / float(x @ x)
        orthogonal[i] = float(error @ error) - colinear[i]
    return float(colinear.mean()), float(orthogonal.mean())


@_measure("derived", references=("of", "to"))
def ratio(values: Mapping[str, float], of: str, to: str) -> float:
    """The value of quantity ``of`` divided by that of quantity ``to`` (ids of earlier quantities)."""
    return values[of] / values[to] if values[to] != 0 else float("nan")


@_measure("run")
def reach_smoothed(results: Results, metric: str, fraction: float, window: int = 10, x: str = "rounds") -> float:
    """The ``x`` column (``rounds``, ``modelled_time``, ``bits``, ...) at the first logged row where the
    trailing mean of the metric over the last ``window`` rows (fewer at the start) is <= ``fraction``
    times its first logged value: a target that a noisy metric (SGD's ``grad_norm_sq``, ``loss``)
    crosses once, the same for every run from the same start; NaN if never reached."""
    values = column(results, metric)
    if values.size == 0 or window < 1:
        return float("nan")
    sums = np.concatenate([[0.0], np.cumsum(values)])
    end = np.arange(1, values.size + 1)
    begin = np.maximum(end - window, 0)
    hit = np.flatnonzero((sums[end] - sums[begin]) / (end - begin) <= fraction * values[0])
    if hit.size == 0:
        return float("nan")
    return float(column(results, "round" if x == "rounds" else x)[hit[0]])


@_measure("run")
def per_round(results: Results, metric: str, per_worker: bool = False, scale: float = 1.0) -> float:
    """A cumulative column per round: ``scale`` x its last value / the last round (/ the number of
    workers with ``per_worker = true``): ``metric = "up_payload_bytes", scale = 8, per_worker = true``
    is the payload bits a worker sends per round, ``metric = "modelled_time"`` the modelled seconds
    per round."""
    values = column(results, metric)
    rounds = column(results, "round")
    if values.size == 0 or rounds[-1] <= 0:
        return float("nan")
    workers = int(results.config["data"]["workers"]) if per_worker else 1
    return float(scale * values[-1] / (rounds[-1] * workers))
