"""Error feedback methods (poster 002): EF14-SGD, EF21-SGD, EF21-SGDM, EF21-SGD2M.

Unit tests drive a method directly (every worker and the master in this process) on a small
quadratic problem and compare it with an independent NumPy transcription of the poster's
recursions; end-to-end tests go through the runner on the real problems.
"""

from __future__ import annotations

import numpy as np
import pytest

from mpicomp.compressors import make
from mpicomp.config import ConfigError, validate
from mpicomp.methods import MethodContext, method_class
from mpicomp.methods.error_feedback import ef21_stepsize
from mpicomp.problems.base import LocalObjective, Problem
from mpicomp.wire import overhead_bytes

EF21_FAMILY = {"ef21": 0, "ef21-sgdm": 1, "ef21-sgd2m": 2}  # name -> momentum levels


class QuadraticShard(LocalObjective):
    """``f_i(x) = (1/m) sum_j ||x - a_j||^2 / 2``: gradient ``x - mean_j a_j``, L = mu = 1."""

    def __init__(self, points: np.ndarray) -> None:
        self.points = points
        self.m, self.d = points.shape

    def loss(self, x: np.ndarray) -> float:
        return 0.5 * float(np.mean(np.sum((x - self.points) ** 2, axis=1)))

    def grad(self, x: np.ndarray) -> np.ndarray:
        return x - self.points.mean(axis=0)

    def grad_batch(self, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return x - self.points[idx].mean(axis=0)


class QuadraticProblem(Problem):
    """n shards of m points in R^d around different centres (heterogeneous workers)."""

    def __init__(self, n: int, m: int = 10, d: int = 20, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.shards = [QuadraticShard(rng.normal(3.0 * rng.normal(size=d), 1.0, size=(m, d))) for _ in range(n)]
        self.n_workers, self.d = n, d

    def local(self, worker: int) -> QuadraticShard:
        return self.shards[worker]

    def loss(self, x: np.ndarray) -> float:
        return float(np.mean([s.loss(x) for s in self.shards]))

    def grad(self, x: np.ndarray) -> np.ndarray:
        return np.mean([s.grad(x) for s in self.shards], axis=0)

    def x0(self) -> np.ndarray:
        return np.zeros(self.d)

    def smoothness(self) -> float:
        return 1.0

    def sample_smoothness(self) -> float:
        return 1.0


def build(name: str, *, n=4, batch=2, uplink="topk(k=3)", downlink="identity", seed=0, **options):
    problem = QuadraticProblem(n)
    ctx = MethodContext(problem, make(uplink), make(downlink), range(n), True, seed, batch)
    cls = method_class(name)
    return cls(ctx, cls.Options(**options))


def play(method, rounds: int):
    """Run ``rounds`` rounds in this process; yields (k, uploads, downlink) after each round."""
    for k in range(rounds):
        uploads = [method.worker_upload(w, k) for w in method.ctx.local_workers]
        downlink = method.master_downlink(uploads, k)
        method.apply_downlink(downlink, k)
        yield k, uploads, downlink


def top_k(v: np.ndarray, k: int) -> np.ndarray:
    """Reference Top-K (no ties in these tests): zero all but the k largest magnitudes."""
    out = np.zeros_like(v)
    keep = np.argsort(-np.abs(v), kind="stable")[:k]
    out[keep] = v[keep]
    return out


def minibatch_grad(method, w: int, x: np.ndarray, k: int, size: int | None = None) -> np.ndarray:
    """The same minibatch the method draws (its sampling key), gradient computed here."""
    shard = method.problem.local(w)
    idx = method.sample_batch(w, k, size)
    return shard.grad(x) if idx is None else shard.grad_batch(x, idx)


# --- the recursions, against an independent transcription of the poster ------------------------


@pytest.mark.parametrize("name", sorted(EF21_FAMILY))
def test_ef21_family_follows_the_poster_recursion(name):
    """x^{t+1} = x^t - gamma g^t; v, u momentum averages; g_i^{t+1} = g_i^t + TopK(target - g_i^t)."""
    eta, gamma, k_top, rounds = 0.3, 0.2, 3, 40
    options = {"stepsize": gamma, "init_batch": 5} | ({"eta": eta} if EF21_FAMILY[name] else {})
    method = build(name, **options)
    n, d = method.n, method.d
    x = np.zeros(d)
    chains = [[minibatch_grad(method, w, x, 0, 5)] * EF21_FAMILY[name] for w in range(n)]
    g = [minibatch_grad(method, w, x, 0, 5) for w in range(n)]  # round 0 sends g_i^0 uncompressed
    x = x - gamma * np.mean(g, axis=0)
    for k, _, _ in play(method, rounds):
        if k == 0:
            np.testing.assert_allclose(method.x, x, rtol=1e-12, atol=1e-14)
            continue
        for w in range(n):
            target = minibatch_grad(method, w, x, k)
            for level in range(len(chains[w])):
                chains[w][level] = (1 - eta) * chains[w][level] + eta * target
                target = chains[w][level]
            g[w] = g[w] + top_k(target - g[w], k_top)
        x = x - gamma * np.mean(g, axis=0)
        np.testing.assert_allclose(method.x, x, rtol=1e-10, atol=1e-12, err_msg=f"round {k}")


def test_ef14_follows_the_poster_recursion():
    """e_i^{t+1} = e_i^t + gamma grad_i(x^t) - g_i^t, g_i^t = TopK(e_i^t + gamma grad_i(x^t)), x -= mean g_i."""
    gamma, k_top = 0.2, 3
    method = build("ef14", stepsize=gamma)
    n, d = method.n, method.d
    x, e = np.zeros(d), np.zeros((n, d))
    for k, _, _ in play(method, 40):
        g = np.zeros((n, d))
        for w in range(n):
            g[w] = top_k(e[w] + gamma * minibatch_grad(method, w, x, k), k_top)
            e[w] = e[w] + gamma * minibatch_grad(method, w, x, k) - g[w]
        x = x - g.mean(axis=0)
        np.testing.assert_allclose(method.x, x, rtol=1e-10, atol=1e-12, err_msg=f"round {k}")


@pytest.mark.parametrize("name", sorted(EF21_FAMILY))
@pytest.mark.parametrize("downlink", ["identity", "topk(k=5)"])
def test_master_g_is_the_mean_of_worker_g_every_round(name, downlink):
    """g^{t+1} = g^t + (1/n) sum c_i keeps g = (1/n) sum g_i; the replicas' w tracks g via the downlink."""
    method = build(name, downlink=downlink, stepsize=0.1, **({"eta": 0.2} if EF21_FAMILY[name] else {}))
    for k, _, _ in play(method, 30):
        mean = np.mean([method.g_workers[w] for w in range(method.n)], axis=0)
        scale = np.abs(mean).max()
        np.testing.assert_allclose(method.g_master, mean, rtol=0, atol=1e-13 * scale, err_msg=f"round {k}")
        if downlink == "identity":
            np.testing.assert_allclose(method.g_replica, method.g_master, rtol=0, atol=1e-13 * scale)


def test_ef21_sgdm_with_eta_one_is_ef21_sgd_byte_for_byte():
    """eta = 1: v^{t+1} = 0 v^t + 1 grad = grad exactly, so the uploads and the model are identical."""
    sgd, sgdm = build("ef21", stepsize=0.2), build("ef21-sgdm", stepsize=0.2, eta=1.0)
    for (k, up_a, down_a), (_, up_b, down_b) in zip(play(sgd, 25), play(sgdm, 25), strict=True):
        assert up_a == up_b and down_a == down_b, f"round {k}"
    assert np.array_equal(sgd.x, sgdm.x)


def test_full_gradient_ef21_with_topk_converges_on_a_quadratic():
    """batch = 0, default (Theorem 1) step: linear convergence, ||grad f||^2 falls by > 1e20."""
    method = build("ef21", batch=0, init_batch=0)
    grad0 = method.problem.grad(method.x)
    for _ in play(method, 900):
        pass
    grad = method.problem.grad(method.x)
    assert grad @ grad < 1e-20 * (grad0 @ grad0)


# --- bytes of the initialisation round --------------------------------------------------------


@pytest.mark.parametrize(("init", "payload"), [("full", 20 * 8), ("compressed", None)])
def test_initial_round_sends_g0_full_or_compressed_then_topk(init, payload):
    method = build("ef21-sgdm", init=init, eta=0.5, stepsize=0.1)
    topk = make("topk(k=3)")
    topk_bytes = int(np.ceil(topk.expected_bits(20) / 8)) + overhead_bytes(topk.n_scalars)
    sizes = [[len(u) for u in uploads] for _, uploads, _ in play(method, 3)]
    first = payload + overhead_bytes(0) if payload else topk_bytes
    assert sizes == [[first] * 4, [topk_bytes] * 4, [topk_bytes] * 4]


def test_init_batch_zero_starts_from_the_full_local_gradients():
    method = build("ef21-sgd2m", batch=1, init_batch=0, eta=0.5, stepsize=0.1)
    next(play(method, 1))
    for w in range(method.n):
        full = method.problem.local(w).grad(np.zeros(method.d))
        np.testing.assert_array_equal(method.g_workers[w], full)
        np.testing.assert_array_equal(method.momentum[w], [full, full])


# --- step sizes and options ---------------------------------------------------------------------


def test_default_stepsizes_follow_the_theory():
    alpha = 3 / 20
    theta = 1 - np.sqrt(1 - alpha)
    expected = 1 / (1 + np.sqrt((1 - alpha) / theta**2))
    assert build("ef21").stepsize == pytest.approx(expected, rel=1e-14)
    assert build("ef14").stepsize == pytest.approx(expected, rel=1e-14)
    assert build("ef21-sgdm", eta=0.5).stepsize == pytest.approx(alpha / 20, rel=1e-14)
    assert build("ef21-sgd2m", eta=0.01).stepsize == pytest.approx(0.01 / 7, rel=1e-14)
    assert ef21_stepsize(2.0, 1.0) == 0.5  # no compression: 1/L
    assert build("ef21", uplink="identity").stepsize == 1.0


def test_default_stepsize_needs_a_contractive_compressor():
    with pytest.raises(ValueError, match="declares no alpha"):
        build("ef21", uplink="randk(k=3)")
    assert build("ef21", uplink="randk(k=3)", stepsize=0.1).stepsize == 0.1


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ({"name": "ef21-sgdm", "eta": 0.0}, "[method] eta"),
        ({"name": "ef21-sgdm", "eta": "big"}, "[method] eta"),
        ({"name": "ef21", "eta": 0.5}, "unknown key 'eta'"),
        ({"name": "ef21", "init": "zero"}, "[method] init"),
        ({"name": "ef14", "init_batch": 4}, "unknown key 'init_batch'"),
        ({"name": "ef21-sgd2m", "init_batch": -1}, "[method] init_batch"),
    ],
)
def test_bad_options_are_rejected_by_the_config(method, expected):
    with pytest.raises(ConfigError) as info:
        validate({"method": method})
    assert expected in str(info.value)


def test_eta_above_one_is_rejected():
    with pytest.raises(ValueError, match=r"eta must be in \(0, 1\]"):
        build("ef21-sgdm", eta=1.5)
