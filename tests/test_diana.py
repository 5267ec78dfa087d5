"""DIANA, VR-DIANA (L-SVRG, SAGA) and QSVRG: state updates, defaults, convergence, prox, rank independence.

Unit tests drive a method directly (every worker and the master in this process, through a
LocalTransport) and check each state update against the bytes that really travelled; end-to-end
tests go through the runner. Convergence tests use L2-logistic regression on scikit-learn's
breast-cancer data with an l2 weight large enough (condition number ~10-40) that the theory's own
step sizes reach 1e-10 in a few hundred rounds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mpicomp.comm import LocalTransport
from mpicomp.compressors import make
from mpicomp.config import validate
from mpicomp.methods import MethodContext, method_class
from mpicomp.methods.diana import SAGATable, SVRGReference, VRDiana
from mpicomp.problems import build_problem
from mpicomp.rng import root_seed
from mpicomp.wire import MessageError, split_messages
from tests.runs import RecordingLink, assert_same_metrics, run_inprocess, run_mpiexec

A9A = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "a9a.gz"
UPLINK = "randk(k=8)"  # unbiased, omega = 31/8 - 1 on breast-cancer's d = 31


def make_method(name, options=None, *, n=4, batch=0, uplink=UPLINK, downlink="identity", **problem_kw):
    """A method hosting all n workers and the master, with its problem and a LocalTransport."""
    kw = {"l2": 0.5, "scale": "standard"} | problem_kw
    problem = build_problem("logistic", "sklearn:breast_cancer", n, seed=root_seed(0), **kw)
    transport = LocalTransport(n)
    ctx = MethodContext(problem, make(uplink), make(downlink), transport.local_workers, True, root_seed(0), batch)
    cls = method_class(name)
    return cls(ctx, cls.Options(**(options or {}))), problem, transport


def play_round(method, transport, k):
    """One round; returns (uploads, downlink) as the transport delivered them."""
    return RecordingLink(transport).play(method, k)


def logistic_config(method, rounds, *, uplink=UPLINK, batch=0, workers=8, scale="standard", **problem):
    return {
        "problem": {"name": "logistic", "dataset": "sklearn:breast_cancer", "l2": 0.5} | problem,
        "data": {"workers": workers, "batch": batch, "scale": scale},
        "method": method,
        "compressor": {"uplink": uplink},
        "run": {"rounds": rounds, "seed": 0},
    }


# --- configuration and defaults ---------------------------------------------------------------


def test_config_accepts_the_family_and_prox():
    for name in ("diana", "vr-diana", "qsvrg"):
        config = validate({"method": {"name": name}, "problem": {"regularizer": "l1", "l1": 0.01}})
        assert config.method["name"] == name
    config = validate({"method": {"name": "vr-diana", "variant": "saga", "alpha": 0.5, "p": 0.1, "stepsize": 0.2}})
    assert config.method == {"name": "vr-diana", "stepsize": 0.2, "alpha": 0.5, "variant": "saga", "p": 0.1}
    with pytest.raises(ValueError, match="variant"):
        validate({"method": {"name": "vr-diana", "variant": "svrg"}})
    with pytest.raises(ValueError, match="alpha"):
        validate({"method": {"name": "qsvrg", "alpha": 0.5}})


def test_bad_options_name_the_fix():
    with pytest.raises(ValueError, match=r"\[data\] batch >= 1"):
        make_method("vr-diana", batch=0)
    with pytest.raises(ValueError, match=r"\[method\] p"):
        make_method("vr-diana", {"p": 1.5}, batch=1)
    with pytest.raises(ValueError, match="only variant 'lsvrg'"):
        make_method("vr-diana", {"p": 0.5, "variant": "saga"}, batch=1)
    with pytest.raises(ValueError, match=r"set \[method\] alpha"):
        make_method("diana", {"stepsize": 0.1}, uplink="topk(k=4)")


def test_default_parameters_follow_the_theorems():
    omega = 31 / 8 - 1
    diana, problem, _ = make_method("diana", n=4)
    assert diana.alpha == pytest.approx(1 / (omega + 1))
    assert diana.stepsize == pytest.approx(1 / (problem.smoothness() * (1 + 6 * omega / 4)))
    vr, problem, _ = make_method("vr-diana", n=4, batch=2)
    assert vr.stepsize == pytest.approx(1 / (problem.sample_smoothness() * (1 + 36 * (omega + 1) / 4)))
    mean_shard = np.mean([problem.local(w).m for w in range(4)])
    assert vr.refresh_probability == pytest.approx(2 / mean_shard)
    compressed_down, _, _ = make_method("diana", n=4, downlink="randk(k=16)")
    assert compressed_down.stepsize == pytest.approx(diana.stepsize / (1 + (31 / 16 - 1)))


# --- state updates -----------------------------------------------------------------------------


def test_diana_compresses_differences_and_keeps_h_the_mean_of_h_i():
    method, problem, transport = make_method("diana", n=4)
    alpha, gamma = method.alpha, method.stepsize
    expected_h = {w: np.zeros(method.d) for w in range(4)}
    for k in range(6):
        x = method.x.copy()
        previous_h = {w: h.copy() for w, h in expected_h.items()}
        uploads, downlink = play_round(method, transport, k)
        deltas = []
        for w, upload in enumerate(uploads):
            # the upload is exactly Q(grad f_i(x) - h_i) with the round's key
            difference = problem.local(w).grad(x) - previous_h[w]
            assert bytes(upload) == method.encode_up(difference, w, k)
            deltas.append(method.decode_up(upload, w, k))
            expected_h[w] += alpha * deltas[-1]
            np.testing.assert_array_equal(method.local_memory[w], expected_h[w])
        mean_previous_h = np.mean([previous_h[w] for w in range(4)], axis=0)
        direction = method.decode_down(downlink, k)
        np.testing.assert_allclose(direction, mean_previous_h + np.mean(deltas, axis=0), rtol=0, atol=1e-13)
        np.testing.assert_allclose(method.master_memory, np.mean(list(expected_h.values()), axis=0), atol=1e-13)
        np.testing.assert_array_equal(method.x, x - gamma * direction)


def test_a_rank_s_block_of_memories_moves_by_its_own_uploads():
    """A rank hosting workers 3-6 of 8 (rows path: dither uploads encoded and added a block at a time): each
    ``h_i`` moves by ``alpha`` times its own decoded upload, the bits of ``decode_add`` worker by worker, in the row
    of ``memory`` that is its ``local_memory``; a restored worker state goes back into that row."""
    problem = build_problem("logistic", "sklearn:breast_cancer", 8, seed=root_seed(0), l2=0.5, scale="standard")
    uplink = make("dither(s=2,p=inf)")
    ctx = MethodContext(problem, uplink, make("identity"), range(3, 7), False, root_seed(0), 0)
    method = method_class("diana")(ctx, method_class("diana").Options())
    expected = np.zeros((4, method.d))
    for k in range(2):
        uploads = method.worker_uploads(range(3, 7), k)
        for row, w, upload in zip(expected, range(3, 7), uploads, strict=True):
            uplink.decode_add(upload, row, method.key(w, k, 0), method.alpha)
        assert np.array_equal(method.memory.view(np.int64), expected.view(np.int64))
    assert all(np.shares_memory(method.local_memory[w], method.memory[w - 3]) for w in range(3, 7))
    saved = {path: value.copy() for path, value in method.worker_state(5).items()}  # as a checkpoint file holds it
    method.memory[2] = 0.0
    method.load_worker_state(5, saved)
    assert np.array_equal(method.memory[2], expected[2]) and np.shares_memory(method.local_memory[5], method.memory[2])


def test_prox_step_soft_thresholds():
    method, _, transport = make_method("diana", n=4, regularizer="elastic", l1=0.05, r_l2=0.2)
    x = method.x.copy()
    _, downlink = play_round(method, transport, 0)
    v = x - method.stepsize * method.decode_down(downlink, 0)
    t = method.stepsize * 0.05
    np.testing.assert_array_equal(method.x, np.sign(v) * np.maximum(np.abs(v) - t, 0) / (1 + method.stepsize * 0.2))
    assert (method.x == 0).any() and (method.x != 0).any()


def test_lsvrg_coin_is_broadcast_counted_and_applied():
    p = 0.3
    method, problem, transport = make_method("vr-diana", {"p": p}, n=4, batch=2)
    coin_bytes = len(method.coin.encode(np.array([1.0]), method.key(-1, 0, 0)))
    rounds, refreshes = 120, 0
    for k in range(rounds):
        x = method.x.copy()
        _, downlink = play_round(method, transport, k)
        step, coin = split_messages(downlink)
        counted = transport.counter.end_round()
        assert counted.down_payload + counted.down_header == len(step) + coin_bytes
        (u,) = method.coin.decode(coin, 1)
        assert u in (0.0, 1.0) and bool(u) == method.draw_coin(k)
        for w, estimator in method.estimators.items():
            if u:
                np.testing.assert_array_equal(estimator.point, x)
                np.testing.assert_array_equal(estimator.mean, problem.local(w).grad(x))
        refreshes += int(u)
    sd = np.sqrt(rounds * p * (1 - p))
    assert abs(refreshes - rounds * p) < 5 * sd, f"{refreshes} refreshes in {rounds} rounds with p = {p}"


def test_lsvrg_rejects_a_malformed_downlink():
    method, _, transport = make_method("vr-diana", {"p": 0.5}, n=2, batch=1)
    uploads = transport.gather([method.worker_upload(w, 0) for w in transport.local_workers])
    step, _ = split_messages(method.master_downlink(uploads, 0))
    with pytest.raises(MessageError, match="expected 2"):
        method.apply_downlink(bytes(step), 0)
    half = method.coin.encode(np.array([0.5]), method.key(-1, 0, 0))
    with pytest.raises(MessageError, match="coin must be 0 or 1"):
        method.apply_downlink(bytes(step) + half, 0)


def test_lsvrg_estimator_formula():
    problem = build_problem("logistic", "sklearn:breast_cancer", 2, l2=0.5)
    local = problem.local(0)
    rng = np.random.default_rng(1)
    w, x = rng.normal(size=problem.d), rng.normal(size=problem.d)
    reference = SVRGReference(local, w)
    idx = np.array([3, 7, 11])
    expected = local.grad_batch(x, idx) - local.grad_batch(w, idx) + local.grad(w)
    np.testing.assert_allclose(reference.estimate(x, idx), expected, rtol=0, atol=1e-14)
    np.testing.assert_allclose(reference.estimate(x, None), local.grad(x), rtol=0, atol=0)


def test_saga_table_updates_sampled_rows_only():
    method, problem, transport = make_method("vr-diana", {"variant": "saga"}, n=3, batch=3)
    for k in range(5):
        x = method.x.copy()
        state = method.estimators.items()
        before = {w: (e.rows.copy(), e.mean.copy(), method.local_memory[w].copy()) for w, e in state}
        uploads, _ = play_round(method, transport, k)
        for w, estimator in method.estimators.items():
            rows, mean, memory = before[w]
            idx = method.sample_batch(w, k)
            fresh = problem.local(w).sample_grads(x, idx)
            estimate = (fresh - rows[idx]).mean(axis=0) + mean
            assert bytes(uploads[w]) == method.encode_up(estimate - memory, w, k)
            untouched = np.setdiff1d(np.arange(problem.local(w).m), idx)
            np.testing.assert_array_equal(estimator.rows[idx], fresh)
            np.testing.assert_array_equal(estimator.rows[untouched], rows[untouched])
            np.testing.assert_allclose(estimator.mean, estimator.rows.mean(axis=0), rtol=0, atol=1e-14)
    assert isinstance(method.estimators[0], SAGATable)


def test_qsvrg_is_vr_diana_without_memory():
    qsvrg, _, t1 = make_method("qsvrg", {"p": 0.2}, n=3, batch=2)
    vr, _, t2 = make_method("vr-diana", {"p": 0.2, "alpha": 0.0}, n=3, batch=2)
    assert isinstance(qsvrg, VRDiana) and qsvrg.alpha == 0.0 and qsvrg.stepsize == vr.stepsize
    for k in range(30):
        (up_a, down_a), (up_b, down_b) = play_round(qsvrg, t1, k), play_round(vr, t2, k)
        assert [bytes(u) for u in up_a] == [bytes(u) for u in up_b] and down_a == down_b
    np.testing.assert_array_equal(qsvrg.x, vr.x)
    assert all(not h.any() for h in qsvrg.local_memory.values()) and not qsvrg.master_memory.any()


# --- convergence (end to end, through the runner) ----------------------------------------------


@pytest.mark.parametrize("uplink", [UPLINK, "dither(s=2,p=inf)"])
def test_diana_converges_linearly_where_quantized_gd_stalls(tmp_path, uplink):
    rounds, half = 400, 150
    diana = run_inprocess(logistic_config({"name": "diana"}, rounds, uplink=uplink), tmp_path / "diana.h5")
    assert diana.status == "finished"
    method, problem, _ = make_method("diana", n=8, uplink=uplink)
    gamma, mu = method.stepsize, problem.strong_convexity()
    gd = run_inprocess(logistic_config({"name": "gd", "stepsize": gamma}, rounds, uplink=uplink), tmp_path / "gd.h5")
    sub_diana, sub_gd = diana.metrics["suboptimality"], gd.metrics["suboptimality"]
    assert sub_diana[-1] < 1e-10
    # linear rate at least as fast as the theory's contraction (1 - gamma mu) per round
    assert 0 < sub_diana[2 * half - 1] <= (1 - gamma * mu) ** half * sub_diana[half - 1]
    # quantized GD with the same compressor and step: stuck in a neighbourhood, no linear progress
    assert sub_gd[-half:].min() > 1e-7 > 1e3 * sub_diana[-1]
    assert sub_gd[2 * half - 1] > 0.1 * sub_gd[half - 1]


@pytest.mark.parametrize("variant", ["lsvrg", "saga"])
def test_vr_diana_converges_linearly_with_minibatches(tmp_path, variant):
    config = logistic_config({"name": "vr-diana", "variant": variant}, 500, batch=4, scale="unit-norm")
    result = run_inprocess(config, tmp_path / f"{variant}.h5")
    sub = result.metrics["suboptimality"]
    assert result.status == "finished" and sub[-1] < 1e-10
    assert sub[399] < 1e-3 * sub[199]  # linear: three orders of magnitude per 200 rounds


def test_vr_diana_prox_l1_matches_the_reference_solution(tmp_path):
    problem_kw = {"l2": 0.5, "regularizer": "l1", "l1": 0.003}
    config = logistic_config({"name": "vr-diana"}, 500, batch=4, scale="unit-norm", **problem_kw)
    result = run_inprocess(config, tmp_path / "l1.h5")
    problem = build_problem("logistic", "sklearn:breast_cancer", 8, scale="unit-norm", seed=root_seed(0), **problem_kw)
    x_star, _ = problem.optimum()
    assert 0 < np.count_nonzero(x_star) < x_star.size, "the test needs a sparse reference solution"
    np.testing.assert_allclose(result.final_x, x_star, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(result.final_x != 0, x_star != 0)
    assert result.metrics["suboptimality"][-1] < 1e-10


# --- rank independence -------------------------------------------------------------------------

RANK_CASES = {
    "vr-diana-lsvrg-l1": ({"name": "vr-diana"}, {"regularizer": "l1", "l1": 0.003}),
    "diana": ({"name": "diana"}, {}),
    "vr-diana-saga": ({"name": "vr-diana", "variant": "saga"}, {}),
    "qsvrg": ({"name": "qsvrg"}, {}),
}


@pytest.mark.mpi
@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=() if c == "vr-diana-lsvrg-l1" else pytest.mark.slow) for c in RANK_CASES]
)
def test_identical_under_one_and_two_ranks(tmp_path, case):
    method, problem = RANK_CASES[case]
    config = logistic_config(method, 30, batch=2, workers=5, **problem)
    one = run_mpiexec(config, tmp_path / "n1.h5", 1)
    two = run_mpiexec(config, tmp_path / "n2.h5", 2)
    assert one.status == two.status == "finished"
    assert_same_metrics(one, two)


# --- a9a (slow) --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["lsvrg", "saga"])
def test_vr_diana_a9a(tmp_path, variant):
    if not A9A.is_file():
        pytest.skip(f"a9a not found at {A9A} (the shared datasets directory beside the project)")
    config = {
        "problem": {"name": "logistic", "dataset": str(A9A), "l2": 0.05},
        "data": {"workers": 12, "batch": 32, "scale": "unit-norm"},
        "method": {"name": "vr-diana", "variant": variant},
        "compressor": {"uplink": "randk(k=31)"},
        "run": {"rounds": 4000, "seed": 0, "log_every": 10, "target_suboptimality": 1e-11},
    }
    result = run_inprocess(config, tmp_path / f"a9a-{variant}.h5")
    sub = result.metrics["suboptimality"]
    assert sub[-1] < 1e-10, f"suboptimality {sub[-1]:.2e} after {result.metrics['round'][-1]} rounds"
