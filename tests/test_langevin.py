"""QLSD#, QLSD*, QLSD++ on problems with a known posterior; the sample-weighted problem view.

Tolerances: Langevin at step gamma on a Gaussian with precision L is an AR(1) chain with
coefficient rho = 1 - gamma L and stationary variance (1/L) / (1 - gamma L / 2) per coordinate.
From N draws of d independent coordinates, the sample variance has relative standard deviation
sqrt(2 (1 + rho^2) / ((1 - rho^2) N d)) and the sample mean variance (1/L)(1 + rho)/((1 - rho) N)
per coordinate; the bounds below are several of those standard deviations.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mpicomp.config import ConfigError, validate
from mpicomp.problems import build_problem
from mpicomp.rng import root_seed
from tests.runs import assert_same_metrics, run_inprocess, run_mpiexec

D, WORKERS, POINTS = 20, 10, 200
PRECISION = WORKERS * POINTS  # L of the potential: M / noise^2 with noise = 1, l2 = 0
BURN_IN = 500


def toy(variant: str, gamma_l: float, rounds: int, **run) -> dict:
    return {
        "problem": {"name": "gaussian", "dataset": f"synthetic:d={D},points={POINTS},spread=4", "l2": 0.0},
        "data": {"workers": WORKERS, "batch": 20},
        "method": {"name": "qlsd", "variant": variant, "stepsize": gamma_l / PRECISION},
        "compressor": {"uplink": "qsgd(s=16)"},
        "run": {"rounds": rounds, "seed": 1, "burn_in": BURN_IN, "log_every": 500, "optimum": False, **run},
    }


def variance_times_l(result) -> float:
    return float(result.samples.var(axis=0, ddof=1).mean() * PRECISION)


def relative_sd_of_variance(gamma_l: float, draws: int) -> float:
    rho = 1.0 - gamma_l
    return math.sqrt(2.0 * (1.0 + rho**2) / ((1.0 - rho**2) * draws * D))


@pytest.mark.parametrize("variant", [pytest.param("star", marks=pytest.mark.slow), "plusplus"])
def test_star_and_plusplus_reach_langevins_stationary_variance(tmp_path, variant):
    """Within 5% of 1/(1 - gamma L/2) at gamma L = 0.1; 5% is > 5 standard deviations of the estimate."""
    rounds = 12_000
    res = run_inprocess(toy(variant, 0.1, rounds), tmp_path / "r.h5")
    assert res.samples.shape == (rounds - BURN_IN, D)
    assert 5 * relative_sd_of_variance(0.1, rounds - BURN_IN) < 0.05
    assert variance_times_l(res) == pytest.approx(1.0 / (1.0 - 0.05), rel=0.05)
    mean, _ = build_problem(
        "gaussian", f"synthetic:d={D},points={POINTS},spread=4", WORKERS, l2=0.0, seed=root_seed(1)
    ).posterior()
    rho = 0.9
    chi2 = np.sum((res.samples.mean(axis=0) - mean) ** 2) / ((1 + rho) / ((1 - rho) * (rounds - BURN_IN)) / PRECISION)
    assert chi2 < D + 5 * math.sqrt(2 * D), "posterior mean off by more than its Monte Carlo error"


@pytest.mark.slow
def test_sharp_keeps_an_excess_variance_that_shrinks_with_the_step(tmp_path):
    """QLSD# pays the compression noise of the heterogeneous grad U_i: several times Langevin's variance at
    gamma L = 0.1, and an excess (variance x L - 1) that halves with gamma (first order in gamma)."""
    big = variance_times_l(run_inprocess(toy("sharp", 0.1, 6000), tmp_path / "big.h5"))
    small = variance_times_l(run_inprocess(toy("sharp", 0.05, 6000), tmp_path / "small.h5"))
    assert big > 2.5 / (1.0 - 0.05), big
    ratio = (small - 1.0) / (big - 1.0)
    assert 0.35 < ratio < 0.65, (big, small, ratio)


def test_posterior_columns_track_the_reference(tmp_path):
    res = run_inprocess(toy("plusplus", 0.1, 3000), tmp_path / "r.h5")
    m = res.metrics
    assert m["samples_kept"][-1] == 2500
    assert np.all(np.isfinite(m["posterior_mean_mse"][1:])) and np.all(np.isfinite(m["posterior_variance_mse"][1:]))
    rho, draws = 0.9, 2500
    expected = (1.0 / PRECISION) * (1 + rho) / ((1 - rho) * draws)  # Monte Carlo variance of each mean
    assert m["posterior_mean_mse"][-1] < 5 * expected
    np.testing.assert_allclose(m["posterior_mean_mse"][-1], np.mean((res.samples.mean(0) - reference_mean()) ** 2))


def reference_mean() -> np.ndarray:
    problem = build_problem("gaussian", f"synthetic:d={D},points={POINTS},spread=4", WORKERS, l2=0.0, seed=root_seed(1))
    return problem.posterior()[0]


@pytest.mark.mpi
def test_samples_are_identical_on_1_2_4_ranks(tmp_path):
    raw = toy("plusplus", 0.1, 60, burn_in=10, thin=2)
    raw["method"]["refresh"] = 25
    raw["compressor"]["uplink"] = "natural"
    raw["data"]["workers"] = 5
    reference = run_inprocess(raw, tmp_path / "local.h5")
    for n in (1, 2, 4):
        other = run_mpiexec(raw, tmp_path / f"n{n}.h5", n)
        assert_same_metrics(reference, other)
        np.testing.assert_array_equal(reference.samples, other.samples)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"compressor": {"uplink": "topk(k=2)"}}, r"\[compressor\] uplink: method 'qlsd' needs an unbiased compressor"),
        ({"run": {"target_suboptimality": 1e-3}}, r"\[run\] target_suboptimality: only for optimizer methods"),
        ({"problem": {"regularizer": "l1", "l1": 0.1}}, r"\[problem\] regularizer: method 'qlsd' has no prox step"),
    ],
)
def test_sampler_refuses_optimizer_only_settings(changes, message):
    raw = {"method": {"name": "qlsd"}, "run": {"optimum": True}}
    for section, table in changes.items():
        raw[section] = {**raw.get(section, {}), **table}
    with pytest.raises(ConfigError, match=message):
        validate(raw)


def test_memory_rate_only_for_plusplus(tmp_path):
    raw = toy("star", 0.1, 5)
    raw["method"]["alpha"] = 0.5
    with pytest.raises(ConfigError, match="only variant 'plusplus' has memories"):
        run_inprocess(raw, tmp_path / "r.h5")


def test_map_is_the_sample_weighted_optimum():
    """Unbalanced shards: the MAP zeroes grad U = sum_i m_i grad f_i, not the worker-weighted grad f."""
    problem = build_problem("logistic", "sklearn:breast_cancer", 4, partition="unbalanced", l2=0.01, seed=root_seed(0))
    theta = problem.map_point()
    scale = float(problem.sample_counts().sum())
    assert np.linalg.norm(problem.potential_and_grad(theta)[1]) / scale < 1e-8
    assert np.linalg.norm(problem.grad(theta)) > 1e-3  # not the optimum of the worker-weighted mean


def test_gaussian_toy_closed_forms_match_generic_computations():
    problem = build_problem("gaussian", "synthetic:d=6,points=30,spread=3", 5, l2=0.05, seed=root_seed(2))
    mean, variance = problem.posterior()
    value, grad = problem.potential_and_grad(mean)
    assert np.linalg.norm(grad) < 1e-9 * value
    np.testing.assert_allclose(variance, 1.0 / (150 * (1.0 + 0.05)))
    x = np.random.default_rng(0).standard_normal(6)
    local = problem.local(1)
    step = 1e-6 * np.eye(6)
    numeric = [(local.loss(x + e) - local.loss(x - e)) / 2e-6 for e in step]
    np.testing.assert_allclose(local.grad(x), numeric, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(local.sample_grads(x, np.arange(30)).mean(axis=0), local.grad(x), rtol=1e-12)
    x_star, _ = problem.optimum()
    np.testing.assert_allclose(problem.grad(x_star), 0.0, atol=1e-10)


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ("synthetic:q=1", "unknown key 'q'"),
        ("synthetic:d=x", "is not an integer"),
        ("synthetic:spread=x", "is not a number"),
        ("sklearn:iris", "generates its data"),
    ],
)
def test_bad_synthetic_specs_are_refused(dataset, message):
    with pytest.raises(ValueError, match=message):
        build_problem("gaussian", dataset, 3, seed=0)
