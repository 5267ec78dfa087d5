"""Objectives: gradients, Hessians, smoothness bounds, regularisers, reference optima, the builder.

Finite differences are central, ``(f(x + h e) - f(x - h e)) / 2h``, whose error is
``h^2 |f'''| / 6 + eps |f| / h``; with ``h = 1e-5`` and O(1) derivatives that is ~1e-10, so
relative tolerances of 1e-6 leave four orders of margin and still catch any wrong term.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import minimize_scalar

from mpicomp.problems import (
    ElasticNet,
    GLMProblem,
    GLMShard,
    LogisticLoss,
    NonconvexPenalty,
    SmoothSum,
    SoftmaxLoss,
    SquaredLoss,
    SquaredNorm,
    build_problem,
    make_regularizer,
)
from mpicomp.problems import glm as glm_module
from mpicomp.problems import optimum as optimum_module
from mpicomp.problems.base import Problem
from mpicomp.problems.glm import margins

H = 1e-5
FD_RTOL = 1e-6


def central_gradient(fun, x: np.ndarray) -> np.ndarray:
    g = np.empty_like(x)
    for k in range(x.size):
        e = np.zeros_like(x)
        e[k] = H
        g[k] = (fun(x + e) - fun(x - e)) / (2 * H)
    return g


def hessian_matrix(hessp, x: np.ndarray) -> np.ndarray:
    """The Hessian from Hessian-vector products on the unit vectors (symmetrised)."""
    cols = np.column_stack([hessp(x, e) for e in np.eye(x.size)])
    return 0.5 * (cols + cols.T)


def assert_close_rel(actual: np.ndarray, expected: np.ndarray, rtol: float) -> None:
    scale = max(1.0, float(np.linalg.norm(expected)))
    err = float(np.linalg.norm(actual - expected))
    assert err <= rtol * scale, f"|actual - expected| = {err:.3e} > {rtol:.0e} * {scale:.3g}"


def synthetic(loss_name: str, sparse: bool, n_workers: int = 3, *, l2=0.1, nonconvex=0.05, regularizer=None, seed=0):
    """A small problem: 40 samples, 5 features (one constant, like an intercept), unequal shards."""
    rng = np.random.default_rng(seed)
    m, l = 40, 5
    a = rng.normal(size=(m, l))
    if sparse:
        a[rng.random((m, l)) < 0.5] = 0.0
    a[:, -1] = 1.0
    if loss_name == "softmax":
        loss, targets = SoftmaxLoss(3), rng.integers(0, 3, m)
    elif loss_name == "logistic":
        loss, targets = LogisticLoss(), np.where(rng.random(m) < 0.5, -1.0, 1.0)[:, None]
    else:
        loss, targets = SquaredLoss(classification=False), rng.normal(size=(m, 1))
    features = sp.csr_matrix(a) if sparse else a
    shards = np.split(rng.permutation(m), [7, 20][: n_workers - 1])
    return GLMProblem.from_shards(
        loss,
        features,
        targets,
        shards,
        smooth=SmoothSum(SquaredNorm(l2), NonconvexPenalty(nonconvex)),
        regularizer=regularizer,
        test_features=features[:10],
        test_targets=targets[:10],
    )


LOSSES = ["logistic", "softmax", "lsq"]
CASES = [(name, sparse) for name in LOSSES for sparse in (False, True)]


def point(problem: GLMProblem, scale: float = 0.7, seed: int = 1) -> np.ndarray:
    return scale * np.random.default_rng(seed).normal(size=problem.d)


# -- gradients ------------------------------------------------------------------------------


@pytest.mark.parametrize("name,sparse", CASES)
def test_full_and_local_gradients_match_finite_differences(name, sparse):
    problem = synthetic(name, sparse)
    x = point(problem)
    assert_close_rel(problem.grad(x), central_gradient(problem.smooth_loss, x), FD_RTOL)
    for w in range(problem.n_workers):
        local = problem.local(w)
        assert_close_rel(local.grad(x), central_gradient(local.loss, x), FD_RTOL)


@pytest.mark.parametrize("name,sparse", CASES)
def test_per_sample_and_minibatch_gradients(name, sparse):
    problem = synthetic(name, sparse)
    x = point(problem)
    local = problem.local(2)
    per_sample = []
    for j in range(local.m):
        single = GLMShard(local.features[j : j + 1], local.targets[j : j + 1], local.loss_fn, local.smooth)
        g = local.grad_batch(x, np.array([j]))
        assert_close_rel(g, central_gradient(single.loss, x), FD_RTOL)
        per_sample.append(g)
    per_sample = np.array(per_sample)
    np.testing.assert_allclose(local.grad_batch(x, np.arange(local.m)), local.grad(x), rtol=1e-12, atol=1e-13)
    idx = np.array([3, 0, 3, 7])
    np.testing.assert_allclose(local.grad_batch(x, idx), per_sample[idx].mean(axis=0), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(local.sample_grads(x, idx), per_sample[idx], rtol=1e-12, atol=1e-13)
    assert np.array_equal(local.minibatch_grad(x, idx), local.grad_batch(x, idx))  # the unchecked path: same bits


def sharded(name: str, sparse: bool, sizes: list[int], rng: np.random.Generator) -> GLMProblem:
    """Shards of the given sizes (rows dealt at random) of 5 Gaussian features with the loss ``name``'s targets."""
    a = rng.normal(size=(sum(sizes), 5))
    loss, targets = {
        "logistic": (LogisticLoss(), np.where(rng.random(a.shape[0]) < 0.5, -1.0, 1.0)[:, None]),
        "softmax": (SoftmaxLoss(3), rng.integers(0, 3, a.shape[0])),
        "lsq": (SquaredLoss(classification=False), rng.normal(size=(a.shape[0], 1))),
    }[name]
    shards = np.split(rng.permutation(a.shape[0]), np.cumsum(sizes)[:-1])
    features = sp.csr_matrix(a) if sparse else a
    return GLMProblem.from_shards(loss, features, targets, shards, smooth=SmoothSum(SquaredNorm(0.1)))


@pytest.mark.parametrize("stack_bytes", [None, 8 * 4 * 5 * 2])
@pytest.mark.parametrize("name,sparse", CASES)
def test_minibatch_grads_of_a_block_are_each_shards_own_bits(name, sparse, stack_bytes, monkeypatch):
    """``minibatch_grads`` of many workers (dense rows: stacked by minibatch size, the groups interleaved among
    the workers, in one stack each or two workers a stack; whole shards and minibatches mixed) gives each worker's
    own ``minibatch_grad``/``grad``, bit for bit, in any order of the workers."""
    if stack_bytes is not None:
        monkeypatch.setattr(glm_module, "STACK_BYTES", stack_bytes)
    rng = np.random.default_rng(4)
    problem = sharded(name, sparse, [4, 5, 4, 4, 5, 6, 5, 4, 6], rng)
    x = point(problem)
    workers = [8, 0, 3, 1, 2, 4, 5, 6, 7]
    samples = [None, rng.choice(4, 3, replace=False), None, rng.choice(5, 3, replace=False), None]
    samples += [rng.choice(5, 4, replace=False), None, rng.choice(5, 4, replace=False), None]  # sizes 6 3 4 3 4 4 6 4 4
    in_order = [1, 2, 3, 4]  # whole shards of 5, 4, 4, 5 rows: workers 2 and 3 a view of consecutive rows
    for block, chosen in ((workers, samples), (in_order, [None] * len(in_order))):
        out = np.full((len(block), problem.d), np.nan)
        assert problem.minibatch_grads(x, block, chosen, out) is out
        for row, w, idx in zip(out, block, chosen, strict=True):
            local = problem.local(w)
            own = local.grad(x) if idx is None else local.minibatch_grad(x, idx)
            assert np.array_equal(row.view(np.int64), own.view(np.int64)), w


@pytest.mark.parametrize("stack_bytes", [None, 8 * 5 * 140])
@pytest.mark.parametrize("name,sparse", CASES)
def test_worker_rows_and_hessps_of_a_block_are_each_shards_own_bits(name, sparse, stack_bytes, monkeypatch):
    """The rows the worker tree sums for a block of workers, ``worker_rows`` (``[f_w(x), grad f_w(x)]``) and
    ``worker_hessps``, stacked by shard size for dense rows (shards of 4 to 140 rows: each loss sums its own rows
    as its shard does, across numpy's pairwise blocks; one stack a size, or one 140-row shard a stack), are each
    shard's own ``loss_and_grad``/``hessp`` bits; so the problem's ``loss_and_grad`` and ``hessp`` keep theirs."""
    if stack_bytes is not None:
        monkeypatch.setattr(glm_module, "STACK_BYTES", stack_bytes)
    problem = sharded(name, sparse, [4, 9, 4, 140, 9, 140, 4], np.random.default_rng(6))
    x, v = point(problem), point(problem, seed=5)
    for block in (range(7), range(2, 6)):
        rows, hessps = problem.worker_rows(x, block), problem.worker_hessps(x, v, block)
        for row, hessp, w in zip(rows, hessps, block, strict=True):
            value, grad = problem.local(w).loss_and_grad(x)
            assert np.array_equal(row.view(np.int64), np.concatenate(([value], grad)).view(np.int64)), w
            assert np.array_equal(hessp.view(np.int64), problem.local(w).hessp(x, v).view(np.int64)), w
    stacked = problem.loss_and_grad(x), problem.hessp(x, v)
    monkeypatch.setattr(problem, "worker_rows", lambda x, ws: Problem.worker_rows(problem, x, ws))
    monkeypatch.setattr(problem, "worker_hessps", lambda x, v, ws: np.stack([problem.local(w).hessp(x, v) for w in ws]))
    value, grad = problem.loss_and_grad(x)
    assert stacked[0][0] == value and np.array_equal(stacked[0][1], grad)
    assert np.array_equal(stacked[1], problem.hessp(x, v))


def test_sum_workers_copies_each_row_as_it_comes():
    """A plugin's ``row_of`` may fill and return one buffer for every worker: ``sum_workers`` (rows asked a block
    at a time underneath) still adds every worker's own row, in the tree."""
    problem = synthetic("logistic", False)  # 3 workers
    buffer = np.empty(3)

    def row_of(w: int) -> np.ndarray:
        buffer[:] = [w, 2.0 * w, 1.0]
        return buffer

    np.testing.assert_array_equal(problem.sum_workers(row_of, 3), [3.0, 6.0, 3.0])


@pytest.mark.parametrize("name,sparse", CASES)
def test_global_objective_is_the_mean_of_the_local_ones(name, sparse):
    problem = synthetic(name, sparse)
    assert len(set(problem.shard_sizes)) > 1  # unequal shards: per-worker, not per-sample, averaging
    x = point(problem)
    locals_ = [problem.local(w) for w in range(problem.n_workers)]
    assert problem.smooth_loss(x) == pytest.approx(np.mean([f.loss(x) for f in locals_]), rel=1e-13)
    np.testing.assert_allclose(problem.grad(x), np.mean([f.grad(x) for f in locals_], axis=0), rtol=1e-12, atol=1e-14)
    value, grad = problem.loss_and_grad(x)
    assert value == pytest.approx(problem.loss(x), rel=1e-14)
    np.testing.assert_allclose(grad, problem.grad(x), rtol=1e-14, atol=1e-16)


@pytest.mark.parametrize("name,sparse", CASES)
def test_hessian_vector_product_matches_gradient_differences(name, sparse):
    problem = synthetic(name, sparse)
    x, v = point(problem), point(problem, seed=5)
    fd = (problem.grad(x + H * v) - problem.grad(x - H * v)) / (2 * H)
    assert_close_rel(problem.hessp(x, v), fd, FD_RTOL)


def test_logistic_loss_is_stable_for_huge_margins():
    loss = LogisticLoss()
    z = np.array([[-800.0], [800.0], [0.0]])
    b = np.ones((3, 1))
    np.testing.assert_allclose(loss.values(z, b), [800.0, 0.0, np.log(2.0)], rtol=1e-15)
    assert np.isfinite(loss.derivative(z, b)).all()


def test_softmax_is_stable_and_uses_class_major_layout():
    loss = SoftmaxLoss(3)
    z = np.array([[1000.0, 0.0, -1000.0]])
    np.testing.assert_allclose(loss.values(z, np.array([0])), [0.0], atol=1e-300)
    np.testing.assert_allclose(loss.values(z, np.array([1])), [1000.0], rtol=1e-15)
    a = np.arange(8.0).reshape(2, 4)
    x = np.arange(12.0)  # class y's weights are x[4y : 4y + 4]
    expected = np.column_stack([a @ x[4 * y : 4 * y + 4] for y in range(3)])
    np.testing.assert_array_equal(margins(a, x, 3), expected)


# -- smoothness and strong convexity ---------------------------------------------------------


def alone(local: GLMShard, rows: slice = slice(None)) -> GLMProblem:
    """Rows ``rows`` of a worker's shard as a one-worker problem."""
    features, targets = local.features[rows], local.targets[rows]
    return GLMProblem.from_shards(local.loss_fn, features, targets, [np.arange(features.shape[0])], smooth=local.smooth)


@pytest.mark.parametrize("name,sparse", CASES)
def test_smoothness_bounds_the_hessian_everywhere(name, sparse):
    problem = synthetic(name, sparse)
    rng = np.random.default_rng(3)
    L = problem.local_smoothness()
    assert problem.smoothness() == L.max()
    for w in range(problem.n_workers):
        local = problem.local(w)
        shard = alone(local)
        for scale in (0.0, 0.3, 1.0, 5.0):
            eig = np.linalg.eigvalsh(hessian_matrix(shard.hessp, scale * rng.normal(size=problem.d)))
            assert eig[-1] <= L[w] and eig[0] >= -L[w]
    # single samples: the Hessian of f_ij is bounded by the sample smoothness
    local = problem.local(0)
    for j in range(local.m):
        one = alone(local, slice(j, j + 1))
        eig = np.linalg.eigvalsh(hessian_matrix(one.hessp, rng.normal(size=problem.d)))
        assert eig[-1] <= problem.sample_smoothness()
    assert problem.sample_smoothness() >= problem.smoothness()


@pytest.mark.parametrize("sparse", [False, True])
def test_logistic_smoothness_is_attained_at_zero(sparse):
    # at x = 0, s(1-s) = 1/4 for every sample: the Hessian is A^T A/(4m) + l2 I, exactly the bound
    problem = synthetic("logistic", sparse, nonconvex=0.0)
    for w in range(problem.n_workers):
        local = problem.local(w)
        shard = alone(local)
        top = np.linalg.eigvalsh(hessian_matrix(shard.hessp, np.zeros(problem.d)))[-1]
        assert top == pytest.approx(problem.local_smoothness()[w], rel=1e-8)


def test_spectral_norm_by_lanczos_bounds_the_exact_one(monkeypatch):
    from mpicomp.problems import glm

    a = np.random.default_rng(0).normal(size=(30, 20))
    exact = np.linalg.norm(a, 2) ** 2
    dense = glm.squared_spectral_norm(a)
    monkeypatch.setattr(glm, "DENSE_GRAM_LIMIT", 5)
    lanczos = glm.squared_spectral_norm(sp.csr_matrix(a))
    for bound in (dense, lanczos):
        assert exact <= bound <= exact * (1 + 1e-7)


def test_strong_convexity_and_convexity_flags():
    assert synthetic("logistic", False, l2=0.1, nonconvex=0.0).strong_convexity() == pytest.approx(0.1)
    mixed = synthetic("logistic", False, l2=0.1, nonconvex=0.1)  # 0.1 - 0.1/2 > 0: still convex
    assert mixed.convex and mixed.strong_convexity() == pytest.approx(0.05)
    nonconvex = synthetic("logistic", False, l2=0.01, nonconvex=0.1)
    assert not nonconvex.convex and nonconvex.strong_convexity() == 0.0
    assert nonconvex.optimum() is None
    in_prox = synthetic("lsq", False, l2=0.0, nonconvex=0.0, regularizer=make_regularizer("l2", r_l2=0.2))
    assert in_prox.strong_convexity() == pytest.approx(0.2)


# -- regularisers ----------------------------------------------------------------------------


def test_nonconvex_penalty_curvature_range():
    pen = NonconvexPenalty(0.3)
    t = np.linspace(-5, 5, 200_001)
    second = pen.hessp(t, np.ones_like(t))
    assert second.max() == pytest.approx(pen.upper, rel=1e-9)
    assert second.min() == pytest.approx(pen.lower, rel=1e-6)
    x = np.array([0.4, -2.0, 3.0])
    assert_close_rel(pen.grad(x), central_gradient(pen.value, x), FD_RTOL)


@pytest.mark.parametrize("name,l1,r_l2", [("none", 0, 0), ("l1", 0.3, 0), ("l2", 0, 0.5), ("elastic", 0.3, 0.5)])
def test_prox_solves_its_defining_problem(name, l1, r_l2):
    reg = make_regularizer(name, l1, r_l2)
    v = np.array([-2.0, -0.2, 0.0, 0.1, 0.35, 3.0])
    gamma = 0.7
    u = reg.prox(v, gamma)
    for k in range(v.size):  # R is separable: solve each coordinate by a scalar minimiser
        best = minimize_scalar(
            lambda t, k=k: l1 * abs(t) + 0.5 * r_l2 * t * t + (t - v[k]) ** 2 / (2 * gamma),
            bounds=(-5, 5),
            method="bounded",
            options={"xatol": 1e-12},
        )
        assert u[k] == pytest.approx(best.x, abs=1e-8)
    assert reg.value(v) == pytest.approx(l1 * np.abs(v).sum() + 0.5 * r_l2 * v @ v)
    assert reg.prox(v, gamma) is not v


def test_make_regularizer_rejects_inconsistent_weights():
    with pytest.raises(ValueError, match="unknown regularizer"):
        make_regularizer("l3")
    with pytest.raises(ValueError, match="needs l1 > 0"):
        make_regularizer("l1", 0.0)
    with pytest.raises(ValueError, match="does not use l1"):
        make_regularizer("none", 0.1)
    with pytest.raises(ValueError, match="does not use r_l2"):
        make_regularizer("l1", 0.1, 0.2)
    with pytest.raises(ValueError, match="needs r_l2 > 0"):
        make_regularizer("elastic", 0.1, 0.0)
    assert make_regularizer("elastic", 0.1, 0.2) == ElasticNet("elastic", 0.1, 0.2)


# -- reference optimum -----------------------------------------------------------------------


@pytest.mark.parametrize("name,sparse", CASES)
def test_optimum_is_stationary_and_minimal(name, sparse, tmp_path):
    problem = synthetic(name, sparse, nonconvex=0.0, l2=0.01)
    problem.cache_dir = tmp_path
    x_star, f_star = problem.optimum()
    assert np.linalg.norm(problem.grad(x_star)) <= 1e-10
    assert f_star == problem.loss(x_star)
    rng = np.random.default_rng(0)
    for scale in (1e-6, 1e-3, 1.0):
        assert problem.loss(x_star + scale * rng.normal(size=problem.d)) > f_star


def test_least_squares_optimum_matches_normal_equations(tmp_path):
    problem = synthetic("lsq", False, nonconvex=0.0, l2=0.01)
    problem.cache_dir = tmp_path
    a, b = problem.features, problem.targets[:, 0]
    w = np.repeat(1.0 / (problem.n_workers * problem.shard_sizes), problem.shard_sizes)  # row j of shard i: 1/(n m_i)
    x_exact = np.linalg.solve(a.T @ (w[:, None] * a) + 0.01 * np.eye(problem.d), a.T @ (w * b))
    x_star, f_star = problem.optimum()
    np.testing.assert_allclose(x_star, x_exact, rtol=1e-10, atol=1e-12)
    assert f_star == pytest.approx(problem.loss(x_exact), rel=1e-13)


def fista(problem: GLMProblem, iterations: int) -> np.ndarray:
    """Accelerated proximal gradient with the strongly convex momentum (1 - sqrt(q))/(1 + sqrt(q))."""
    L = problem.smoothness()
    q = problem.smooth.lower / L
    beta = (1 - np.sqrt(q)) / (1 + np.sqrt(q))
    x = y = problem.x0()
    for _ in range(iterations):
        x_new = problem.prox(y - problem.grad(y) / L, 1 / L)
        y = x_new + beta * (x_new - x)
        x = x_new
    return x


@pytest.mark.parametrize("name,sparse", [("logistic", False), ("lsq", True), ("softmax", False)])
def test_l1_optimum_matches_fista_and_is_sparse(name, sparse, tmp_path):
    smooth_only = synthetic(name, sparse, nonconvex=0.0, l2=0.05)
    l1 = 0.4 * float(np.abs(smooth_only.grad(smooth_only.x0())).max())  # x = 0 is not optimal, some zeros stay
    problem = synthetic(name, sparse, nonconvex=0.0, l2=0.05, regularizer=make_regularizer("l1", l1))
    problem.cache_dir = tmp_path
    x_star, f_star = problem.optimum()
    reference = fista(problem, 3000)
    zeros = x_star == 0.0
    assert zeros.any() and not zeros.all()
    np.testing.assert_array_equal(reference == 0.0, zeros)
    np.testing.assert_allclose(x_star, reference, atol=1e-10)
    assert f_star == pytest.approx(problem.loss(reference), rel=1e-12)
    g = problem.grad(x_star)
    np.testing.assert_allclose(g[~zeros], -l1 * np.sign(x_star[~zeros]), atol=1e-11)
    assert np.all(np.abs(g[zeros]) <= l1)


def test_l2_in_R_gives_the_same_optimum_as_l2_in_f(tmp_path):
    in_f = synthetic("logistic", True, nonconvex=0.0, l2=0.03)
    in_r = synthetic("logistic", True, nonconvex=0.0, l2=0.0, regularizer=make_regularizer("l2", r_l2=0.03))
    for p in (in_f, in_r):
        p.cache_dir = tmp_path
    (x1, f1), (x2, f2) = in_f.optimum(), in_r.optimum()
    np.testing.assert_allclose(x1, x2, atol=1e-11)
    assert f1 == pytest.approx(f2, rel=1e-13)
    assert in_r.smoothness() < in_f.smoothness()  # the prox part does not enter L


def test_optimum_is_cached_on_disk_atomically(tmp_path, monkeypatch):
    problem = synthetic("softmax", False, nonconvex=0.0)
    monkeypatch.setenv("MPICOMP_CACHE", str(tmp_path))
    x_star, f_star = problem.optimum()
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == [f"optimum-softmax-{problem.cache_key()}.npz"]

    def fail(*args, **kwargs):
        raise AssertionError("the optimum was recomputed instead of read from the cache")

    monkeypatch.setattr(optimum_module, "solve_optimum", fail)
    monkeypatch.setattr("mpicomp.problems.glm.solve_optimum", fail)
    again = synthetic("softmax", False, nonconvex=0.0)
    x2, f2 = again.optimum()
    np.testing.assert_array_equal(x2, x_star)
    assert f2 == f_star
    other = synthetic("softmax", False, nonconvex=0.0, l2=0.2)  # another configuration, another key
    assert other.cache_key() != problem.cache_key()


def test_concurrent_cache_writers_leave_one_complete_file(tmp_path):
    path = tmp_path / "sub" / "optimum-x-key.npz"
    expected = {"x": np.arange(1000.0), "value": np.array(3.5)}

    def compute() -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in expected.items()}

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: optimum_module.cached_arrays(path, compute), range(16)))
    for result in results:
        np.testing.assert_array_equal(result["x"], expected["x"])
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left behind


def test_unwritable_cache_only_warns(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    problem = synthetic("lsq", False, nonconvex=0.0)
    problem.cache_dir = blocker
    with pytest.warns(RuntimeWarning, match="could not write cache file"):
        x_star, _ = problem.optimum()
    assert np.linalg.norm(problem.grad(x_star)) <= 1e-10


def test_unreadable_cache_file_is_recomputed(tmp_path):
    problem = synthetic("lsq", False, nonconvex=0.0)
    problem.cache_dir = tmp_path
    path = optimum_module.optimum_cache_path(tmp_path, problem.name, problem.cache_key())
    path.write_bytes(b"not an npz")
    with pytest.warns(RuntimeWarning, match="unreadable cache file"):
        x_star, _ = problem.optimum()
    assert np.linalg.norm(problem.grad(x_star)) <= 1e-10


# -- test accuracy, shards, builder -----------------------------------------------------------


def test_test_accuracy_counts_correct_predictions():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    signs = np.array([[1.0], [-1.0], [1.0], [1.0]])
    binary = GLMProblem.from_shards(LogisticLoss(), a, signs, [np.arange(4)], test_features=a, test_targets=signs)
    assert binary.test_accuracy(np.array([1.0, -1.0])) == pytest.approx(0.75)  # z = 1, -1, 0 (-> +1), -1
    classes = np.array([0, 1, 1, 0])
    multi = GLMProblem.from_shards(SoftmaxLoss(2), a, classes, [np.arange(4)], test_features=a, test_targets=classes)
    assert multi.test_accuracy(np.array([1.0, 0.0, 0.0, 1.0])) == pytest.approx(0.5)  # argmax: 0,1,tie->0,1
    assert GLMProblem.from_shards(LogisticLoss(), a, signs, [np.arange(4)]).test_accuracy(np.zeros(2)) is None
    regression = GLMProblem.from_shards(
        SquaredLoss(False), a, signs, [np.arange(4)], test_features=a, test_targets=signs
    )
    assert regression.test_accuracy(np.zeros(2)) is None


def test_dense_shards_are_views_of_one_copy():
    problem = synthetic("softmax", False)
    for w in range(problem.n_workers):
        local = problem.local(w)
        assert local.m == problem.shard_sizes[w]
        assert np.shares_memory(local.features, problem.features)
        assert problem.local(w) is local
    with pytest.raises(IndexError):
        problem.local(problem.n_workers)


def test_targets_are_validated_per_loss():
    a = np.eye(3)
    with pytest.raises(ValueError, match="-1 or \\+1"):
        GLMProblem.from_shards(LogisticLoss(), a, np.array([0.0, 1.0, 1.0]), [np.arange(3)])
    with pytest.raises(ValueError, match="class indices"):
        GLMProblem.from_shards(SoftmaxLoss(2), a, np.array([0, 1, 2]), [np.arange(3)])
    with pytest.raises(ValueError, match="every shard"):
        GLMProblem.from_shards(SquaredLoss(False), a, np.zeros(3), [np.arange(3), np.array([], dtype=int)])
    flat = GLMProblem.from_shards(LogisticLoss(), a, np.array([1.0, -1.0, 1.0]), [np.arange(3)])  # 1-D +-1 labels
    assert flat.targets.shape == (3, 1)


def test_grad_batch_rejects_bad_indices():
    local = synthetic("logistic", False).local(0)
    x = np.zeros(local.d)
    with pytest.raises(IndexError, match="out of range"):
        local.grad_batch(x, np.array([local.m]))
    with pytest.raises(IndexError, match="out of range"):
        local.grad_batch(x, np.array([-1]))
    with pytest.raises(ValueError, match="non-empty"):
        local.grad_batch(x, np.array([], dtype=int))
    with pytest.raises(ValueError, match="shape"):
        local.grad(np.zeros(local.d + 1))


def test_build_problem_on_bundled_data(tmp_path):
    p = build_problem("logistic", "sklearn:breast_cancer", 4, seed=3, cache_dir=tmp_path)
    assert p.n_workers == 4 and p.d == 31 and p.n_features == 31
    assert p.shard_sizes.sum() + p.test_features.shape[0] == 569
    assert set(np.unique(p.targets)) == {-1.0, 1.0}
    np.testing.assert_array_equal(p.features[:, -1], 1.0)  # intercept column last
    assert build_problem("logistic", "sklearn:breast_cancer", 4, intercept=False).d == 30
    s = build_problem("softmax", "sklearn:iris", 3, partition="label", seed=1)
    assert s.d == 3 * 5 and s.loss_fn.outputs == 3
    nc = build_problem("logistic-nonconvex", "sklearn:breast_cancer", 2, nonconvex=0.1, l2=0.0)
    assert nc.optimum() is None and nc.strong_convexity() == 0.0
    digits = build_problem("logistic", "sklearn:digits", 2, positive_class=3)
    assert (digits.targets == 1.0).mean() == pytest.approx(0.1, abs=0.02)
    lsq = build_problem("lsq", "sklearn:wine", 2)
    assert lsq.test_accuracy(lsq.x0()) is None  # three classes: raw targets, a regression
    x_star, _ = p.optimum()
    assert np.linalg.norm(p.grad(x_star)) <= 1e-10
    assert p.test_accuracy(x_star) > 0.9


def test_build_problem_is_deterministic_given_the_seed():
    a = build_problem("softmax", "sklearn:wine", 3, partition="dirichlet", seed=7)
    b = build_problem("softmax", "sklearn:wine", 3, partition="dirichlet", seed=7)
    c = build_problem("softmax", "sklearn:wine", 3, partition="dirichlet", seed=8)
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.shard_sizes, b.shard_sizes)
    assert a.cache_key() == b.cache_key() != c.cache_key()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"name": "svm"}, "unknown problem"),
        ({"name": "logistic", "dataset": "sklearn:digits"}, "needs two classes"),
        ({"name": "logistic-nonconvex"}, "needs nonconvex > 0"),
        ({"name": "logistic", "regularizer": "l1"}, "needs l1 > 0"),
        ({"name": "logistic", "l2": -1.0}, "l2 must be"),
        ({"name": "logistic", "positive_class": 7}, "does not occur"),
        ({"name": "softmax", "n_workers": 10_000}, "cannot split"),
    ],
)
def test_build_problem_errors(kwargs, match):
    args = {"name": "logistic", "dataset": "sklearn:breast_cancer", "n_workers": 2} | kwargs
    with pytest.raises(ValueError, match=match):
        build_problem(args.pop("name"), args.pop("dataset"), args.pop("n_workers"), **args)


A9A = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "a9a.gz"


@pytest.mark.slow
@pytest.mark.skipif(not A9A.exists(), reason="../shared/datasets/a9a.gz is only present for developers")
@pytest.mark.parametrize("regularizer,l1", [("none", 0.0), ("l1", 1e-3)])
def test_a9a_reference_optimum(tmp_path, regularizer, l1):
    p = build_problem(
        "logistic", str(A9A), 16, l2=1e-4, regularizer=regularizer, l1=l1, scale="none", cache_dir=tmp_path
    )
    assert p.d == 124 and p.n_workers == 16
    x_star, f_star = p.optimum()
    g = p.grad(x_star)
    zeros = x_star == 0.0
    assert np.linalg.norm(g[~zeros] + l1 * np.sign(x_star[~zeros])) <= 1e-10
    assert np.all(np.abs(g[zeros]) <= l1)
    rng = np.random.default_rng(0)
    assert all(p.loss(x_star + s * rng.normal(size=p.d)) > f_star for s in (1e-6, 1e-3))
    assert p.test_accuracy(x_star) > 0.84
