"""The MLP problem: backpropagation against finite differences, the flat layout, the contract, training."""

from __future__ import annotations

import numpy as np
import pytest

from mpicomp.config import ConfigError
from mpicomp.problems import build_problem
from mpicomp.problems.mlp import Layout
from mpicomp.rng import root_seed
from tests.runs import run_inprocess
from tests.test_problems import central_gradient

HIDDEN = (7, 5)  # two hidden layers: the backward pass crosses a hidden-to-hidden layer


@pytest.fixture(scope="module")
def problem():
    return build_problem("mlp", "sklearn:digits", 3, hidden=HIDDEN, l2=0.01, nonconvex=0.1, seed=root_seed(3))


def point(problem, scale: float = 0.2) -> np.ndarray:
    """A generic point: away from the ReLU kinks with overwhelming probability."""
    return problem.x0() + scale * np.random.default_rng(0).standard_normal(problem.d)


def test_dimension_is_the_layer_sizes(problem):
    assert problem.d == 65 * 7 + (7 + 1) * 5 + (5 + 1) * 10  # 64 pixels + intercept
    assert Layout([785, 200, 10]).d == 159_010  # paper 003's MNIST network


def test_local_gradient_matches_finite_differences_in_every_coordinate(problem):
    x = point(problem)
    local = problem.local(1)
    np.testing.assert_allclose(local.grad(x), central_gradient(local.loss, x), rtol=0, atol=2e-8)


def test_global_loss_and_gradient_match_finite_differences_and_the_workers(problem):
    x = point(problem)
    value, grad = problem.loss_and_grad(x)
    np.testing.assert_allclose(grad, central_gradient(problem.loss, x), rtol=0, atol=2e-8)
    assert value == pytest.approx(np.mean([problem.local(w).loss(x) for w in range(3)]), rel=1e-13)
    np.testing.assert_allclose(grad, np.mean([problem.local(w).grad(x) for w in range(3)], axis=0), atol=1e-15)


def test_minibatch_and_per_sample_gradients_agree(problem):
    x = point(problem)
    local = problem.local(0)
    idx = np.array([4, 0, 9, 4])
    rows = local.sample_grads(x, idx)
    assert rows.shape == (4, problem.d)
    np.testing.assert_allclose(local.grad_batch(x, idx), rows.mean(axis=0), atol=1e-15)
    np.testing.assert_allclose(local.grad_batch(x, np.arange(local.m)), local.grad(x), atol=1e-15)
    single = local.grad_batch(x, idx[:1])
    np.testing.assert_allclose(rows[0], single, atol=1e-15)
    with pytest.raises(IndexError):
        local.grad_batch(x, np.array([local.m]))


def test_flat_vector_is_the_layer_matrices_row_major(problem):
    """Logits by hand from the documented layout: ``[W_l | b_l]`` row-major, no bias column in layer 1."""
    x = point(problem)
    features = problem.local(2).features[:3]
    w1 = x[: 7 * 65].reshape(7, 65)
    w2 = x[7 * 65 : 7 * 65 + 5 * 8].reshape(5, 8)
    w3 = x[7 * 65 + 5 * 8 :].reshape(10, 6)
    h1 = np.maximum(features @ w1.T, 0)
    h2 = np.maximum(h1 @ w2[:, :7].T + w2[:, 7], 0)
    np.testing.assert_allclose(problem.network.logits(x, features), h2 @ w3[:, :5].T + w3[:, 5], rtol=1e-13)


def test_start_is_glorot_with_zero_biases_from_the_seed(problem):
    x0 = problem.x0()
    w1, w2, w3 = problem.network.layout.matrices(x0)
    assert np.all(w2[:, -1] == 0) and np.all(w3[:, -1] == 0)
    assert np.abs(w1).max() <= np.sqrt(6 / (65 + 7)) and np.abs(w1).max() > 0.8 * np.sqrt(6 / (65 + 7))
    again = build_problem("mlp", "sklearn:digits", 3, hidden=HIDDEN, seed=root_seed(3))
    other = build_problem("mlp", "sklearn:digits", 3, hidden=HIDDEN, seed=root_seed(4))
    np.testing.assert_array_equal(again.x0(), x0)
    assert not np.array_equal(other.x0(), x0)


def test_bad_widths_and_the_missing_smoothness_constant():
    with pytest.raises(ValueError, match="layer widths must be positive"):
        build_problem("mlp", "sklearn:digits", 2, hidden=(0,))
    problem = build_problem("mlp", "sklearn:iris", 2, hidden=(3,))
    with pytest.raises(ValueError, match=r"no global Lipschitz constant.*set \[method\] stepsize"):
        problem.smoothness()
    assert problem.optimum() is None


def test_gd_trains_the_network_through_the_runner(tmp_path):
    raw = {
        "problem": {"name": "mlp", "dataset": "sklearn:digits", "l2": 1e-3},
        "data": {"workers": 4},
        "method": {"name": "gd", "stepsize": 0.5},
        "run": {"rounds": 60, "seed": 0},
    }
    res = run_inprocess(raw, tmp_path / "mlp.h5")
    assert res.metrics["loss"][-1] < 0.15 * res.metrics["loss"][0]
    assert res.metrics["test_accuracy"][-1] > 0.95
    assert np.isnan(res.metrics["suboptimality"]).all()
    with pytest.raises(ConfigError, match=r"set \[method\] stepsize"):
        run_inprocess(raw | {"method": {"name": "gd"}}, tmp_path / "default.h5")


def test_hidden_widths_come_from_the_config():
    from mpicomp.config import validate
    from mpicomp.rng import root_seed
    from mpicomp.runner import build_problem_from

    config = validate(
        {"problem": {"name": "mlp", "dataset": "sklearn:iris", "hidden": [5, 3]}, "method": {"stepsize": 0.1}}
    )
    problem = build_problem_from(config, root_seed(0))
    assert (
        problem.d == (4 + 1) * 5 + (5 + 1) * 3 + (3 + 1) * 3
    )  # [W | b] per layer: 4 features + intercept -> 5 -> 3 -> 3 classes
