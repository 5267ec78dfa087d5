"""The method contract: method-owned rounds, switch exchanges, skipped uploads, the method's record.

The methods exercised here live in ``tests/methods_for_tests.py`` (registered on import):
``test-switch-gd`` has a two-phase round (exponent agreement, then an integer sum) and
``test-sampler`` is of kind "sampler" with a column of its own.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from numba.core import event

import tests.methods_for_tests  # noqa: F401  (registers the test methods)
from mpicomp.comm import LocalTransport
from mpicomp.compressors import MessageError, MessageRows, PackedMessages, make
from mpicomp.config import ConfigError, validate
from mpicomp.methods import MethodContext, available_methods, method_class
from mpicomp.methods import base as method_base
from mpicomp.problems import build_problem
from mpicomp.record import (
    COMMUNICATION_COLUMNS,
    KIND_COLUMNS,
    ROUND_COLUMNS,
    WORKER_COLUMNS,
)
from mpicomp.rng import STREAM_SAMPLING, RandomKey, root_seed
from tests.runs import assert_same_metrics, mpiexec_run, run_inprocess, run_mpiexec

D = 31  # breast_cancer: 30 features + intercept
RESULTS_FORMAT = Path(__file__).resolve().parents[1] / "docs" / "results-format.md"


def experiment(method: dict, rounds: int = 12, workers: int = 5, **run) -> dict:
    return {
        "problem": {"name": "logistic", "dataset": "sklearn:breast_cancer", "l2": 0.1},
        "data": {"workers": workers, "partition": "label"},
        "method": method,
        "run": {"rounds": rounds, "seed": 1, "check_every": 3, "optimum": False, **run},
    }


# --- a two-phase round through the switch -----------------------------------------------------


def switch_round_bytes(workers: int, block: int = 8) -> tuple[int, int]:
    """(up, down) bytes of one test-switch-gd round: int16 exponents, then int32 values, in one packet each,
    counted as frames (Ethernet 14 + IPv4 20 + UDP 8 + the 12-byte packet header + FCS 4)."""
    frame = 14 + 20 + 8 + 12 + 4
    exponents = -(-D // block) * 2 + frame
    values = D * 4 + frame
    return workers * (exponents + values), exponents + values


@pytest.mark.mpi
def test_two_phase_round_is_identical_on_1_2_4_ranks_with_exact_bytes(tmp_path):
    raw = experiment({"name": "test-switch-gd", "stepsize": 0.5})
    reference = run_inprocess(raw, tmp_path / "local.h5")
    assert reference.status == "finished"
    up, down = switch_round_bytes(5)
    rounds = reference.metrics["round"]
    np.testing.assert_array_equal(reference.metrics["bits_up"], 8 * up * rounds)
    np.testing.assert_array_equal(reference.metrics["bits_down"], 8 * down * rounds)
    assert reference.metrics["up_control_bytes"][-1] == 0
    np.testing.assert_array_equal(reference.workers["uploads"][-1], 2 * 12)
    assert np.all(reference.metrics["largest_exponent"] <= 1)  # logistic gradients are below 2
    for n in (1, 2, 4):
        assert_same_metrics(reference, run_mpiexec(raw, tmp_path / f"n{n}.h5", n, test_methods=True))


def test_fixed_point_switch_gd_tracks_gd(tmp_path):
    """Fixed point with 27 fraction bits below each block's exponent: per round an error of at most
    2^-27 relative, so 12 rounds of GD and of its switch version agree to ~1e-7 relative."""
    switch = run_inprocess(experiment({"name": "test-switch-gd", "stepsize": 0.5}), tmp_path / "switch.h5")
    gd = run_inprocess(experiment({"name": "gd", "stepsize": 0.5}), tmp_path / "gd.h5")
    np.testing.assert_allclose(switch.metrics["loss"], gd.metrics["loss"], rtol=1e-7)
    assert not np.array_equal(switch.final_x, gd.final_x)  # the integers really were rounded


def test_overflow_fails_the_run_naming_the_round(tmp_path):
    """H = 30 with five workers whose gradients agree in sign at x0 = 0: the sum leaves int32 at once."""
    res = run_inprocess_failing(experiment({"name": "test-switch-gd", "headroom": 30}), tmp_path / "r.h5")
    assert res.status == "failed"
    assert re.search(r"round 1: integer sum overflowed the switch's 32-bit registers", res.status_message)


def run_inprocess_failing(raw, out):
    from mpicomp.comm import AggregationOverflowError
    from mpicomp.results import read_results

    with pytest.raises(AggregationOverflowError, match="round 1"):
        run_inprocess(raw, out)
    return read_results(out)


@pytest.mark.mpi
def test_overflow_under_mpiexec_records_failed_and_exits_1(tmp_path):
    from mpicomp.results import read_results

    out = tmp_path / "r.h5"
    proc = mpiexec_run(experiment({"name": "test-switch-gd", "headroom": 30}), out, 2, test_methods=True)
    assert proc.returncode == 1, proc.stderr
    assert "round 1: integer sum overflowed" in proc.stderr
    res = read_results(out)
    assert res.status == "failed" and "round 1: integer sum overflowed" in res.status_message


# --- skipped uploads --------------------------------------------------------------------------


def small_method(name: str = "gd", **attributes):
    problem = build_problem("logistic", "sklearn:breast_cancer", 3, seed=root_seed(0))
    cls = type("Skipping", (method_class(name),), attributes) if attributes else method_class(name)
    ctx = MethodContext(problem, make("identity"), make("identity"), range(3), True, root_seed(0), 0)
    return cls(ctx, cls.Options())


def test_a_skip_is_an_error_unless_the_method_allows_it():
    strict = small_method()
    uploads = [strict.worker_upload(w, 0) for w in range(3)]
    with pytest.raises(MessageError, match="worker 1 sent an empty upload in round 1"):
        strict.mean_of_uploads([uploads[0], b"", uploads[2]], 0)
    lenient = small_method(skipped_upload="zero")
    decoded = lenient.decode_uploads([uploads[0], b"", uploads[2]], 0)
    assert decoded[1] is None
    expected = (lenient.decode_up(uploads[0], 0, 0) + lenient.decode_up(uploads[2], 2, 0)) / 3
    np.testing.assert_array_equal(lenient.mean_of_uploads([uploads[0], b"", uploads[2]], 0), expected)


def test_the_mean_of_uploads_decodes_each_with_its_worker_key():
    """A composed uplink whose outer factor shares randomness (Rand-K indices) needs each worker's
    round key to decode, though its inner factor does not: the fused mean equals decoding each."""
    problem = build_problem("logistic", "sklearn:breast_cancer", 3, seed=root_seed(0))
    ctx = MethodContext(problem, make("randk(k=4)∘topk(k=8)"), make("identity"), range(3), True, root_seed(0), 0)
    method = method_class("gd")(ctx, method_class("gd").Options())
    uploads = [bytes(method.worker_upload(w, 0)) for w in range(3)]
    expected = sum(method.decode_up(upload, w, 0) for w, upload in enumerate(uploads)) / 3
    np.testing.assert_array_equal(method.mean_of_uploads(uploads, 0), expected)


@pytest.mark.parametrize("uplink", ["natural", "topk(k=0.2)", "randk(k=0.2)", "qsgd(s=4)"])
def test_a_memory_moves_by_the_decoded_upload_with_its_worker_key(uplink: str):
    """``add_up`` (a worker's memory moving by what the master decodes) adds ``scale`` times worker w's decoded
    upload, with w's key (randk's indices come from it), as decoding and adding would."""
    problem = build_problem("logistic", "sklearn:breast_cancer", 3, seed=root_seed(0))
    ctx = MethodContext(problem, make(uplink), make("identity"), range(3), True, root_seed(0), 0)
    method = method_class("gd")(ctx, method_class("gd").Options())
    memory = np.random.default_rng(1).standard_normal(problem.d)
    for w in range(3):
        upload = bytes(method.worker_upload(w, 4))
        for scale in (1.0, 0.25, -1.0):
            moved = memory.copy()
            method.add_up(upload, w, 4, moved, scale)
            np.testing.assert_array_equal(moved, memory + scale * method.decode_up(upload, w, 4))
    with pytest.raises(MessageError):
        method.add_up(bytes(method.worker_upload(0, 4))[:-2], 0, 4, memory.copy())


def test_a_bad_upload_among_skipped_ones_is_named_by_its_worker():
    """The fused mean sums only the uploads that were sent; its error still names the worker id."""
    lenient = small_method(skipped_upload="zero")
    uploads = [bytes(lenient.worker_upload(w, 0)) for w in range(3)]
    with pytest.raises(MessageError, match=r"worker 2's upload in round 1: message 1: .*truncated"):
        lenient.mean_of_uploads([b"", uploads[1], uploads[2][:-3]], 0)


def test_a_method_with_both_upload_hooks_is_accepted():
    """A method may implement ``upload_of`` and still override ``worker_upload`` (to choose per worker which
    one runs): the check accepts it, as it accepts either alone."""

    class Both(method_class("diana")):
        name = "both-upload-hooks"

        def worker_upload(self, w, k):
            return super().worker_upload(w, k)

    method_base.check_method(Both)


def test_a_method_without_round_or_hooks_says_what_to_implement():
    from mpicomp.methods import Method

    bare = type("Bare", (Method,), {"name": "bare"})
    method = bare.__new__(bare)
    with pytest.raises(NotImplementedError, match="must override round\\(\\) or implement worker_upload"):
        method.round(0, LocalTransport(1))


# --- the sampler's record ---------------------------------------------------------------------


def test_sampler_streams_thinned_draws_after_burn_in_and_its_column(tmp_path):
    raw = experiment({"name": "test-sampler", "stepsize": 0.01}, rounds=20, burn_in=5, thin=3)
    res = run_inprocess(raw, tmp_path / "s.h5")
    assert res.status == "finished"
    assert res.samples.shape == (5, D)  # rounds 8, 11, 14, 17, 20
    np.testing.assert_array_equal(res.samples[-1], res.final_x)
    noise = res.metrics["noise_norm"]
    assert np.all(np.abs(noise - math.sqrt(D)) < 4 * math.sqrt(0.5))  # ||Z|| ~ sqrt(d) +- O(1)
    assert "suboptimality" not in res.metrics and "dist_to_opt" not in res.metrics


@pytest.mark.mpi
def test_sampler_draws_are_rank_independent(tmp_path):
    raw = experiment({"name": "test-sampler", "stepsize": 0.01}, rounds=10, burn_in=2)
    one = run_mpiexec(raw, tmp_path / "n1.h5", 1, test_methods=True)
    two = run_mpiexec(raw, tmp_path / "n2.h5", 2, test_methods=True)
    assert_same_metrics(one, two)
    np.testing.assert_array_equal(one.samples, two.samples)


@pytest.mark.parametrize(
    ("method", "run", "message"),
    [
        ("test-sampler", {"target_suboptimality": 1e-6}, r"\[run\] target_suboptimality: only for optimizer methods"),
        ("gd", {"burn_in": 10}, r"\[run\] burn_in: only for sampler methods"),
        ("gd", {"thin": 2}, r"\[run\] thin: only for sampler methods"),
    ],
)
def test_keys_of_the_other_kind_are_refused(method, run, message):
    with pytest.raises(ConfigError, match=message):
        validate({"method": {"name": method}, "run": {"optimum": True, **run}})


# --- list-valued options and renamed keys -----------------------------------------------------


def test_list_options_are_validated_entry_by_entry():
    config = validate({"method": {"name": "test-switch-gd", "weights": [1, 0.5]}})
    assert config.method["weights"] == [1.0, 0.5]
    assert validate({"method": {"name": "test-switch-gd"}}).method["weights"] == [1.0]
    for bad, message in [
        (0.5, "expected a non-empty list, each entry a number"),
        ([], "non-empty list"),
        ([1.0, -2.0], r"weights\[1\]: must be >= 0"),
        ([1.0, "x"], r"weights\[1\]: expected a number"),
    ]:
        with pytest.raises(ConfigError, match=message):
            validate({"method": {"name": "test-switch-gd", "weights": bad}})


@pytest.mark.parametrize(
    ("section", "old", "new"),
    [("data", "alpha", "dirichlet_alpha"), ("data", "sigma", "lognormal_sigma"), ("network", "uplink", "topology")],
)
def test_renamed_keys_name_the_new_key(section, old, new):
    with pytest.raises(ConfigError, match=rf"\[{section}\] {old} was renamed: write {new} = 0.3 instead"):
        validate({section: {old: 0.3}})


# --- the record is documented -----------------------------------------------------------------


def test_every_column_is_documented_in_the_results_format():
    text = RESULTS_FORMAT.read_text()
    columns = {**ROUND_COLUMNS, **COMMUNICATION_COLUMNS, **WORKER_COLUMNS}
    for kind_columns in KIND_COLUMNS.values():
        columns.update(kind_columns)
    for cls in available_methods().values():
        if cls.__module__.startswith("mpicomp."):  # not the test methods, nor installed plugins
            columns.update(cls.columns)
    missing = [name for name in columns if f"`{name}`" not in text]
    assert not missing, f"columns missing from docs/results-format.md: {missing}"


def test_samples_dataset_holds_the_draws(tmp_path):
    raw = experiment({"name": "test-sampler", "stepsize": 0.01}, rounds=4)
    run_inprocess(raw, tmp_path / "s.h5")
    with h5py.File(tmp_path / "s.h5", "r", swmr=True) as f:
        assert f["samples"].shape == (4, D)
        assert f["metrics/noise_norm"].shape == (4,)


@pytest.mark.mpi
def test_an_error_on_one_rank_is_recorded_by_rank_0(tmp_path):
    """Worker 4 (on rank 1 of 2) fails alone while rank 0 waits in the gather: the file says why."""
    from mpicomp.results import read_results

    out = tmp_path / "r.h5"
    proc = mpiexec_run(experiment({"name": "test-fail"}, rounds=10), out, 2, test_methods=True, timeout=120)
    assert proc.returncode != 0
    res = read_results(out)
    assert (res.status, res.status_message) == ("failed", "rank 1: RuntimeError: worker 4 cannot compute its gradient")


@pytest.mark.parametrize("uplink", ["natural", "identity", "randk(k=0.3)", "qsgd(s=4)"])
@pytest.mark.parametrize("name", ["gd", "sgd"])
def test_batched_uploads_are_the_per_worker_uploads(name, uplink, monkeypatch):
    """``worker_uploads`` (blocks of ``block_rows(d)`` workers, one encode_many each; here the smallest
    blocks, so that a short second block follows a full one) sends exactly the bytes of ``worker_upload``
    worker by worker, and both those of each shard's own gradient (float64 identity: the gradient
    computed in the message's payload slot); the blocks' messages lie in the rows of the method's kept
    buffer, one block the transport sends as it lies; a codec of data-dependent size packs each block's messages
    into a buffer of their own (QSGD)."""
    monkeypatch.setattr(method_base, "BLOCK_BYTES", 0)
    workers = method_base.MIN_BLOCK_ROWS + 6
    problem = build_problem("logistic", "sklearn:breast_cancer", workers, seed=root_seed(0))
    ctx = MethodContext(problem, make(uplink), make("identity"), range(workers), True, root_seed(0), 4)
    method = method_class(name)(ctx, method_class(name).Options())
    method.worker_uploads(range(workers), 2)  # the round before writes the same kept rows
    batched = method.worker_uploads(range(workers), 3)
    kept = method.outbox_rows(workers, ctx.uplink)  # every block wrote into the rows kept across rounds
    if kept is None:  # a codec of data-dependent size: packed messages, a buffer a block
        assert isinstance(batched, PackedMessages) and len(batched.parts) == 2
    else:
        assert isinstance(batched, MessageRows) and len(batched.blocks) == 1
        assert np.shares_memory(batched.blocks[0], kept) and batched.blocks[0].shape == kept.shape
    assert [bytes(u) for u in batched] == [bytes(method.worker_upload(w, 3)) for w in range(workers)]
    size = 0 if name == "gd" else 4
    own = [
        ctx.uplink.encode(shard_gradient(problem, ctx.seed, w, method.x, 3, size), RandomKey(ctx.seed, 3, w))
        for w in range(workers)
    ]
    assert [bytes(u) for u in batched] == [bytes(m) for m in own]


@pytest.mark.parametrize(
    ("name", "batch", "uplink"),
    [("diana", 4, "randk(k=8)"), ("diana", 0, "natural"), ("diana", 4, "qsgd(s=4)"), ("diana", 4, "dither(s=3,p=inf)")]
    + [("ef14", 4, "topk(k=8)")]
    + [("laq", 0, "identity"), ("slaq", 4, "identity"), ("ef21", 4, "topk(k=8)"), ("ef21-sgdm", 4, "topk(k=8)")]
    + [("ef21-sgd2m", 0, "topk(k=8)"), ("lag", 0, "identity")],
)
def test_gradients_a_block_at_a_time_give_the_worker_by_worker_uploads(name, batch, uplink, monkeypatch):
    """A method whose ``worker_uploads`` takes its gradients from ``Method.round_gradients`` (blocks of 64
    workers here, so a short block follows a full one; no gradient computed worker by worker) sends, round
    after round, exactly the bytes of ``worker_upload`` called worker by worker on a twin, and leaves every
    worker in the same state."""
    assert_blocks_upload_as_worker_by_worker(name, batch, uplink, {}, 1, monkeypatch)


@pytest.mark.parametrize(("name", "batch", "first"), [("laq", 0, 0), ("slaq", 4, 3)])
def test_lazy_quantized_blocks_skip_as_worker_by_worker(name, batch, first, monkeypatch):
    """LAQ's and SLAQ's block path (innovations quantized and decoded a block at a time, the rule per worker) skips
    the same workers, sends the same bytes and leaves the same references, clocks and errors as ``upload_of``
    worker by worker, round after round, with a rule that lets some workers skip and not others (SLAQ on a rank
    whose workers start at 3); a restored worker's reference goes back into its row."""
    monkeypatch.setattr(method_base, "BLOCK_BYTES", 0)
    count = method_base.MIN_BLOCK_ROWS + 6
    workers = range(first, first + count)
    problem = build_problem("logistic", "sklearn:breast_cancer", first + count, seed=root_seed(0), l2=0.5)
    options = method_class(name).Options(bits=2, xi=[2.0], D=1, t_bar=2, stepsize=0.05)
    twins = [
        method_class(name)(
            MethodContext(problem, make("identity"), make("identity"), workers, True, root_seed(0), batch), options
        )
        for _ in range(2)
    ]
    batched, single = twins

    def one_worker_step(*args, **kwargs):
        raise AssertionError("the batched uploads stepped worker by worker")

    monkeypatch.setattr(batched, "upload_of", one_worker_step)
    skipped = sent = 0
    for k in range(4):
        uploads = [bytes(u) for u in batched.worker_uploads(workers, k)]
        assert uploads == [bytes(single.worker_upload(w, k)) for w in workers]
        skipped, sent = skipped + uploads.count(b""), sent + sum(map(bool, uploads))
        for w in workers:
            mine, theirs = batched.worker_state(w), single.worker_state(w)
            assert mine.keys() == theirs.keys()
            for key in mine:
                np.testing.assert_array_equal(mine[key], theirs[key])
        for twin in twins:
            twin.memory.push(1e-4 * (k + 1))  # the trigger's parameter differences, as the round's step records them
        batched.x = single.x = single.x + 0.01 * np.sin(np.arange(single.d) + k)
    assert skipped and sent  # the rule took both branches
    w = first + 5
    batched.load_worker_state(w, single.worker_state(first + 7))
    assert np.shares_memory(batched.workers[w].reference, batched.references[5])
    np.testing.assert_array_equal(batched.references[5], single.workers[first + 7].reference)


@pytest.mark.parametrize(
    ("name", "batch", "uplink"), [("ef14", 0, "natural"), ("ef21", 4, "natural"), ("ef21-sgd2m", 4, "dither(s=3,p=2)")]
)
def test_error_feedback_memories_in_rows_give_the_worker_by_worker_uploads(name, batch, uplink, monkeypatch):
    """EF14's and EF21's memories move a block at a time, by the rows kernels of codecs that have them (the
    non-contractive natural and dither, with a step set): the bytes and memories of worker by worker."""
    assert_blocks_upload_as_worker_by_worker(name, batch, uplink, {"stepsize": 0.1}, 1, monkeypatch)


@pytest.mark.parametrize(
    ("name", "batch", "uplink", "options", "points"),
    [
        ("vr-diana", 4, "natural", {}, 2),
        ("vr-diana", 6, "dither(s=3,p=2)", {"alpha": 0.3}, 2),
        ("qsvrg", 4, "randk(k=8)", {}, 2),
        ("vr-diana", 3, "natural", {"variant": "saga"}, 1),
    ],
)
def test_variance_reduced_estimates_a_block_at_a_time_give_the_worker_by_worker_uploads(
    name, batch, uplink, options, points, monkeypatch
):
    """VR-DIANA's and QSVRG's estimates a block at a time (L-SVRG: the minibatch gradients at x^k and at the shared
    reference point, and a row of means; SAGA: its tables worker by worker; batch 6 takes the whole of the shards of
    6 samples, whose estimate is grad f_i(x) itself), with x^k far from the reference point: the bytes and estimator
    states of ``worker_upload`` worker by worker."""
    assert_blocks_upload_as_worker_by_worker(name, batch, uplink, options, points, monkeypatch, move=1.0)


@pytest.mark.parametrize("uplink", ["natural", "qsgd(s=4)"])
@pytest.mark.parametrize("variant", ["sharp", "star", "plusplus"])
def test_qlsd_gradients_a_block_at_a_time_give_the_worker_by_worker_uploads(variant, uplink, monkeypatch):
    """QLSD's minibatch gradients at theta_k, and star's and plusplus' of the same minibatches at theta* or zeta,
    come a block at a time, and so do the uploads (plusplus' memories by their own bytes; QSGD's packed
    messages): the bytes and memories of ``worker_upload`` worker by worker."""
    points = 1 if variant == "sharp" else 2
    assert_blocks_upload_as_worker_by_worker("qlsd", 4, uplink, {"variant": variant}, points, monkeypatch)


def test_qlsd_plusplus_refreshes_its_control_variate_with_each_shards_own_gradient(monkeypatch):
    """``h_i <- grad U_i(zeta) = m_i grad f_i(zeta)``, computed a block of workers at a time, is the bits of each
    shard's own full gradient times its sample count."""
    monkeypatch.setattr(method_base, "BLOCK_BYTES", 0)
    workers = method_base.MIN_BLOCK_ROWS + 6
    problem = build_problem("logistic", "sklearn:breast_cancer", workers, seed=root_seed(0), l2=0.5)
    ctx = MethodContext(problem, make("natural"), make("identity"), range(workers), True, root_seed(0), 4)
    method = method_class("qlsd")(ctx, method_class("qlsd").Options())
    method.x = np.sin(np.arange(method.d))
    method.refresh_control_variate(range(workers))
    counts = problem.sample_counts()
    for w in range(workers):
        np.testing.assert_array_equal(method.anchor_grads[w], counts[w] * problem.local(w).grad(method.x))


def test_a_subclass_overriding_upload_of_alone_is_not_encoded_by_its_parents_rows():
    """A subclass of DIANA that changes ``upload_of`` but not ``upload_rows`` gets its own uploads, worker by
    worker, not DIANA's rows encoded a block at a time."""
    diana = method_class("diana")

    class Shifted(diana):
        def upload_of(self, w, k, grad):
            return super().upload_of(w, k, grad + 1.0)

    problem = build_problem("logistic", "sklearn:breast_cancer", 6, seed=root_seed(0), l2=0.5)
    twins = [
        Shifted(
            MethodContext(problem, make("natural"), make("identity"), range(6), True, root_seed(0), 4), diana.Options()
        )
        for _ in range(2)
    ]
    uploads = twins[0].worker_uploads(range(6), 0)
    assert [bytes(u) for u in uploads] == [bytes(twins[1].worker_upload(w, 0)) for w in range(6)]


def test_an_ef21_subclass_overriding_its_target_alone_goes_worker_by_worker():
    """EF21's rows path computes the momentum chain itself (``rows_follow`` names ``compression_target``): a subclass
    that changes the target but not ``upload_rows`` gets its own uploads, worker by worker."""
    ef21 = method_class("ef21")

    class Doubled(ef21):
        def compression_target(self, w, k, grad):
            return 2.0 * super().compression_target(w, k, grad)

    problem = build_problem("logistic", "sklearn:breast_cancer", 6, seed=root_seed(0), l2=0.5)

    def twin():
        ctx = MethodContext(problem, make("natural"), make("identity"), range(6), True, root_seed(0), 4)
        return Doubled(ctx, ef21.Options(stepsize=0.1))

    batched, single = twin(), twin()
    for k in range(2):
        uploads = batched.worker_uploads(range(6), k)
        assert [bytes(u) for u in uploads] == [bytes(single.worker_upload(w, k)) for w in range(6)]


def assert_blocks_upload_as_worker_by_worker(name, batch, uplink, options, points, monkeypatch, move=0.01):
    """Round after round, ``worker_uploads`` of a rank's workers (blocks of 64 workers here, so a short block
    follows a full one; no gradient computed worker by worker, the gradients at each of ``points`` points
    block by block) sends exactly the bytes of ``worker_upload``
    called worker by worker on a twin, and leaves every worker in the same state; x moves by about ``move``
    between rounds."""
    monkeypatch.setattr(method_base, "BLOCK_BYTES", 0)
    workers = method_base.MIN_BLOCK_ROWS + 6
    problem = build_problem("logistic", "sklearn:breast_cancer", workers, seed=root_seed(0), l2=0.5)
    twins = []
    for _ in range(2):
        ctx = MethodContext(problem, make(uplink), make("identity"), range(workers), True, root_seed(0), batch)
        twins.append(method_class(name)(ctx, method_class(name).Options(**options)))
    batched, single = twins

    def one_worker_gradient(*args, **kwargs):
        raise AssertionError("the batched uploads computed a gradient worker by worker")

    monkeypatch.setattr(batched, "stochastic_grad", one_worker_gradient)
    block_calls = []
    minibatch_grads = problem.minibatch_grads
    monkeypatch.setattr(problem, "minibatch_grads", lambda *args: block_calls.append(1) or minibatch_grads(*args))
    assert list(batched.worker_uploads(range(0), 0)) == []  # a rank that hosts no worker
    for k in range(3):
        for twin in twins:
            if getattr(twin, "variant", None) == "plusplus" and k % twin.refresh == 0:
                twin.refresh_control_variate(range(workers))  # as QLSD++'s round does first
        block_calls.clear()
        uploads = batched.worker_uploads(range(workers), k)
        assert len(block_calls) == 2 * points  # at each point a block of 64 workers, then one of 6
        assert [bytes(u) for u in uploads] == [bytes(single.worker_upload(w, k)) for w in range(workers)]
        for w in range(workers):
            mine, theirs = batched.worker_state(w), single.worker_state(w)
            assert mine.keys() == theirs.keys()
            for key in mine:
                np.testing.assert_array_equal(mine[key], theirs[key])
        batched.x = single.x = single.x + move * np.sin(np.arange(single.d) + k)  # a new point for the next round


def shard_gradient(problem, seed: int, w: int, x: np.ndarray, k: int, size: int) -> np.ndarray:
    """Worker w's round-k gradient from its shard's own methods and its own sampling key, one worker at a
    time (what the batched paths must reproduce bit for bit)."""
    local = problem.local(w)
    if 0 < size < local.m:
        return local.minibatch_grad(x, RandomKey(seed, k, w, STREAM_SAMPLING).sample(local.m, size))
    return local.grad(x)


@pytest.mark.parametrize(
    ("name", "dataset", "extra"),
    [
        ("logistic", "sklearn:breast_cancer", {"l2": 1e-3}),
        ("logistic-nonconvex", "sklearn:breast_cancer", {"nonconvex": 0.1, "l2": 1e-3}),
        ("softmax", "sklearn:digits", {"l2": 1e-3}),
        ("mlp", "sklearn:iris", {"hidden": (4,)}),
    ],
)
@pytest.mark.parametrize("size", [0, 3, 40])
def test_batched_gradients_are_the_shards_own(name, dataset, extra, size):
    """``stochastic_grads`` over many workers (the minibatches drawn in one call, ``Problem.minibatch_grads``
    sharing the regulariser's gradient) gives exactly each shard's own ``minibatch_grad``/``grad`` on the
    sample its own ``RandomKey`` draws; batch 40 exceeds some shards (their whole shard), batch 0 is gd."""
    workers = 23
    problem = build_problem(name, dataset, workers, seed=root_seed(2), **extra)
    ctx = MethodContext(problem, make("natural"), make("identity"), range(workers), True, root_seed(2), size)
    method = method_class("sgd")(ctx, method_class("sgd").Options(stepsize=0.1))
    x = np.random.default_rng(5).standard_normal(problem.d)
    batched = method.stochastic_grads(range(2, workers), x, 6)
    for j, w in enumerate(range(2, workers)):
        assert np.array_equal(batched[j], shard_gradient(problem, ctx.seed, w, x, 6, size), equal_nan=True)
        assert np.array_equal(method.stochastic_grad(w, x, 6), batched[j])


class CompileEvents(event.Listener):
    """Collects the functions numba compiles (or loads from its cache) while registered."""

    def __init__(self) -> None:
        self.compiled: list[str] = []

    def on_start(self, ev: event.Event) -> None:
        self.compiled.append(ev.data["dispatcher"].py_func.__qualname__)

    def on_end(self, ev: event.Event) -> None:
        pass


@pytest.mark.parametrize(
    ("name", "uplink", "downlink", "batch"),
    [
        ("sgd", "natural", "identity", 4),
        ("gd", "identity", "dither(s=3,p=2)", 0),
        ("sgd", "qsgd(s=4)", "block(size=8,s=1)", 4),
        ("gd", "identity(dtype=float32)", "identity", 0),
    ],
)
def test_warm_up_compiles_everything_the_round_runs(name, uplink, downlink, batch):
    """After ``warm_up`` a round compiles nothing, so round 1's time is not start-up (batched uploads,
    decode_add, the minibatch sampler and the downlink included)."""
    problem = build_problem("logistic", "sklearn:breast_cancer", 6, seed=root_seed(1))
    ctx = MethodContext(problem, make(uplink), make(downlink), range(6), True, root_seed(1), batch)
    method = method_class(name)(ctx, method_class(name).Options())
    method.warm_up()
    listener = CompileEvents()
    with event.install_listener("numba:compile", listener):
        method.round(0, LocalTransport(6))
    assert listener.compiled == []
