"""The setups of published experiments: ``[problem] init`` (x^0), ``[data] partition = "contiguous"``,
``[data] test_fraction = 0`` and ``[data] scale = "max"``."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.datasets import dump_svmlight_file

from mpicomp.cli import main
from mpicomp.config import ConfigError, validate
from mpicomp.data import load_sklearn, prepare_data
from mpicomp.problems import build_problem
from mpicomp.problems.start import initial_point
from mpicomp.rng import root_seed
from mpicomp.runner import build_problem_from
from tests.runs import run_inprocess

D = 31  # breast_cancer: 30 features + intercept


def _raw(**problem):
    return {
        "problem": {"name": "logistic", "dataset": "sklearn:breast_cancer", "l2": 0.1, **problem},
        "data": {"workers": 4, "partition": "contiguous", "test_fraction": 0.0},
        "method": {"name": "gd", "stepsize": 0.5},
        "run": {"rounds": 1, "seed": 2, "optimum": False},
    }


def test_npy_start_is_the_first_iterate(tmp_path):
    """One GD round from the file's x^0 ends at ``x^0 - gamma grad F(x^0)``."""
    start = np.linspace(-0.3, 0.3, D)
    np.save(tmp_path / "x0.npy", start)
    raw = _raw(init=str(tmp_path / "x0.npy"))
    results = run_inprocess(raw, tmp_path / "run.h5")
    problem = build_problem_from(validate(raw), root_seed(2))
    np.testing.assert_allclose(results.final_x, start - 0.5 * problem.grad(start), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (np.zeros(D - 1), "shape (30,)"),
        (np.zeros((D, 1)), "shape (31, 1)"),
        (np.full(D, np.nan), "NaN"),
        (None, "not found"),
    ],
)
def test_a_bad_npy_start_names_the_key_and_the_file(tmp_path, content, expected):
    path = tmp_path / "x0.npy"
    if content is not None:
        np.save(path, content)
    with pytest.raises(ConfigError, match=r"^\[problem\] init: ") as info:
        run_inprocess(_raw(init=str(path)), tmp_path / "run.h5")
    assert expected in str(info.value) and "x0.npy" in str(info.value)
    assert not (tmp_path / "run.h5").exists()


def test_a_bad_npy_start_exits_2_from_the_command_line(tmp_path, capsys):
    np.save(tmp_path / "x0.npy", np.zeros(3))
    config = tmp_path / "c.toml"
    config.write_text('[problem]\ninit = "x0.npy"\n[run]\noptimum = false\n')  # relative to the config's folder
    assert main(["run", str(config), "--out", str(tmp_path / "r.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "[problem] init:" in err[0] and "shape (3,)" in err[0], err
    assert not (tmp_path / "r.h5").exists()


def test_normal_start_has_the_given_scale_and_follows_the_seed():
    """Entries N(0, s^2): the sample standard deviation of d = 20000 draws is within 5 of its standard
    errors s / sqrt(2 d) of s, the mean within 5 s / sqrt(d) of 0; another seed, another vector."""
    problem, d, s = SimpleNamespace(d=20000), 20000, 0.3
    x = initial_point(problem, "normal", s, seed=7)
    assert abs(x.std() - s) < 5 * s / np.sqrt(2 * d)
    assert abs(x.mean()) < 5 * s / np.sqrt(d)
    np.testing.assert_array_equal(x, initial_point(problem, "normal", s, seed=7))
    assert not np.array_equal(x, initial_point(problem, "normal", s, seed=8))


def test_default_start_is_the_problems_own_and_zeros_is_zero():
    problem = build_problem("mlp", "sklearn:iris", 2, hidden=(4,), seed=1)
    np.testing.assert_array_equal(initial_point(problem, "default", 1.0, 1), problem.x0())
    assert np.any(problem.x0() != 0)  # Glorot weights
    np.testing.assert_array_equal(initial_point(problem, "zeros", 1.0, 1), np.zeros(problem.d))


def test_test_fraction_0_and_contiguous_shards_keep_the_files_rows_in_order():
    """Every sample trains, worker m holds file rows m q .. (m + 1) q - 1 (the last one the rest); no held-out set."""
    X = load_sklearn("breast_cancer").X  # 569 rows
    problem = build_problem(
        "logistic",
        "sklearn:breast_cancer",
        4,
        partition="contiguous",
        test_fraction=0.0,
        scale="none",
        intercept=False,
        seed=5,
    )
    q = X.shape[0] // 4
    ends = [q, 2 * q, 3 * q, X.shape[0]]
    for w, (lo, hi) in enumerate(zip([0, *ends[:-1]], ends, strict=True)):
        np.testing.assert_array_equal(problem.local(w).features, X[lo:hi])
    assert problem.test_accuracy(np.zeros(problem.d)) is None  # the column is NaN


@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        ({"init": "ones"}, "[problem] init: 'ones' is not allowed"),
        ({"init_scale": 0.5}, "[problem] init_scale: only with init = 'normal'"),
        ({"init": "normal", "init_scale": 0.0}, "[problem] init_scale: must be > 0.0"),
    ],
)
def test_init_keys_are_validated(problem, expected):
    with pytest.raises(ConfigError) as info:
        validate({"problem": problem})
    assert str(info.value).startswith(expected)


def test_max_scaling_divides_by_the_largest_train_magnitude(tmp_path):
    """``scale = "max"``: x / max_ij |X_ij| over the train split (MNIST: pixels / 255), dense and sparse alike."""
    rng = np.random.default_rng(3)
    X = rng.integers(0, 256, (40, 6)).astype(np.uint8)
    X[5, 2] = 255
    y = rng.integers(0, 2, 40)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    dense = prepare_data(f"npz:{tmp_path / 'd.npz'}", test_fraction=0.0, scale="max", intercept=False).dataset()
    np.testing.assert_array_equal(dense.X, X / 255.0)
    signed = np.where(rng.random((40, 6)) < 0.5, 0.0, rng.normal(0.0, 1.0, (40, 6)))
    dump_svmlight_file(signed, y, str(tmp_path / "s.svm"))
    sparse = prepare_data(str(tmp_path / "s.svm"), test_fraction=0.0, scale="max", intercept=False).dataset()
    np.testing.assert_allclose(sparse.X.toarray(), signed / np.abs(signed).max(), rtol=1e-15)
