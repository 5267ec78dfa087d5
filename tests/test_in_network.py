"""In-network aggregation: the switch encodings (fixed point, natural) on the hosts, end to end.

Exactness is checked bit for bit against references computed independently (the natural codec's
own decoded messages summed in float64; a direct fixed-point formula); unbiasedness with the
chi-square check of ``mpicomp.testing``; counts against the documented packet format.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mpicomp.comm import LocalTransport
from mpicomp.compressors import make
from mpicomp.compressors.switch_encoding import FixedPointEncoding, NaturalEncoding, headroom
from mpicomp.config import ConfigError, validate
from mpicomp.methods.in_network import SwitchSum, make_switch_sum
from mpicomp.results import compare_runs, read_results
from mpicomp.rng import STREAM_UPLINK, RandomKey
from mpicomp.testing import assert_unbiased
from tests.runs import assert_same_metrics, run_inprocess, run_mpiexec

NATURAL = make("natural")


def FixedPointSum(n: int, d: int, packet_values: int, float32: bool) -> SwitchSum:  # noqa: N802 - reads as a class
    return SwitchSum(FixedPointEncoding(n, d, packet_values, float32))


def NaturalSum(n: int, d: int, packet_values: int) -> SwitchSum:  # noqa: N802
    return SwitchSum(NaturalEncoding(n, d, packet_values))


def keys(n: int, rnd: int = 0, seed: int = 3) -> list[RandomKey]:
    return [RandomKey(seed, rnd, w, STREAM_UPLINK) for w in range(n)]


def natural_reference(vectors: list[np.ndarray], worker_keys: list[RandomKey]) -> np.ndarray:
    """``sum_i C_nat(x_i)`` from the natural codec's own messages, summed in float64 (exact here)."""
    total = np.zeros(vectors[0].size)
    for v, key in zip(vectors, worker_keys, strict=True):
        total += NATURAL.decode(NATURAL.encode(v, key), v.size, key)
    return total


@pytest.mark.parametrize(("n", "d", "packet_values"), [(1, 1, 256), (3, 7, 64), (8, 1000, 256), (5, 300, 64)])
def test_natural_sum_is_exactly_the_sum_of_natural_compressions(n, d, packet_values):
    """Magnitudes 2^-8..2^8 span 16 binades, fewer than the 31 - ceil(log2 n) of a block: all in range."""
    rng = np.random.default_rng(d)
    vectors = [rng.choice([-1.0, 1.0], d) * np.exp2(rng.uniform(-8, 8, d)) for _ in range(n)]
    assert 16 < 31 - math.ceil(math.log2(n)) - 1
    worker_keys = keys(n)
    total = NaturalSum(n, d, packet_values).total(vectors, worker_keys, LocalTransport(n))
    np.testing.assert_array_equal(total, natural_reference(vectors, worker_keys))


def test_natural_sum_rerounds_values_below_the_block_range_unbiasedly():
    """In one block: 1.0 and values 2^-40..2^-30 (below the 2^(0 - H) floor, H = 28 for n = 8). They are
    re-rounded to 0 or 2^-28 (never all flushed), and the sum stays unbiased."""
    n, d = 8, 16
    h = headroom(n)
    x = np.ldexp(1.0, -np.arange(30, 46))  # all below 2^-H ...
    x[0] = 1.0  # ... except the block's largest
    vectors = [x * (1 if w % 2 else -1) if w < 2 else x for w in range(n)]
    draws = []
    for rnd in range(4000):
        total = NaturalSum(n, d, 64).total(vectors, keys(n, rnd), LocalTransport(n))
        assert set(np.abs(total[1:]) / 2.0**-h) <= set(range(n + 1)), "below-range values are 0 or 2^-H each"
        draws.append(total)
    draws = np.array(draws)
    assert (draws[:, 1:] != 0).any(), "values below the range must not be flushed to zero"
    assert_unbiased(draws, np.sum(vectors, axis=0))


def test_fixed_point_error_is_within_its_deterministic_bound():
    """``|S_j - sum_i x_ij| <= n 2^(E_b - H - 1)`` for every coordinate, and S is deterministic."""
    n, d, packet_values = 6, 700, 64
    rng = np.random.default_rng(0)
    vectors = [rng.standard_normal(d) * np.repeat(10.0 ** rng.uniform(-8, 8, 11), 64)[:d] for _ in range(n)]
    switch = FixedPointSum(n, d, packet_values, float32=False)
    total = switch.total(vectors, keys(n), LocalTransport(n)).copy()  # the switch reuses its sum buffer
    np.testing.assert_array_equal(total, switch.total(vectors, keys(n, rnd=1), LocalTransport(n)))
    agreed = np.max([switch.encoding.block_exponents(v) for v in vectors], axis=0)
    bound = n * np.ldexp(1.0, np.repeat(agreed, packet_values)[:d] - switch.encoding.headroom - 1)
    error = np.abs(total - np.sum(vectors, axis=0))
    assert np.all(error <= bound), float(np.max(error / bound))
    assert np.max(error / bound) > 0.1  # the bound is not vacuous: rounding errors come close to it


def test_fixed_point_float32_rounds_like_switchml_hosts():
    n, d = 4, 50
    vectors = [np.random.default_rng(w).standard_normal(d) for w in range(n)]
    as_float32 = [v.astype(np.float32).astype(np.float64) for v in vectors]
    switch32 = FixedPointSum(n, d, 64, float32=True).total(vectors, keys(n), LocalTransport(n))
    switch64 = FixedPointSum(n, d, 64, float32=False).total(as_float32, keys(n), LocalTransport(n))
    np.testing.assert_array_equal(switch32, switch64)


@pytest.mark.parametrize("encoding", ["fixed", "natural"])
def test_largest_values_on_every_worker_cannot_overflow(encoding):
    """All n workers at the top of the same block: |q| <= 2^H and n 2^H <= 2^30."""
    for n in (1, 2, 3, 8, 9, 1000):
        vectors = [np.full(5, 1.0 - 2.0**-40) for _ in range(n)]
        switch = FixedPointSum(n, 5, 64, False) if encoding == "fixed" else NaturalSum(n, 5, 64)
        total = switch.total(vectors, keys(n), LocalTransport(n))
        assert np.all(np.abs(total - n) <= n * 2.0 ** -headroom(n)), (n, total)


@pytest.mark.parametrize("cls", [FixedPointSum, NaturalSum], ids=["fixed", "natural"])
def test_zero_length_and_all_zero_vectors(cls):
    make_one = (lambda d: cls(3, d, 64, False)) if cls is FixedPointSum else (lambda d: cls(3, d, 64))
    assert make_one(0).total([np.zeros(0)] * 3, keys(3), LocalTransport(3)).shape == (0,)
    total = make_one(100).total([np.zeros(100)] * 3, keys(3), LocalTransport(3))
    np.testing.assert_array_equal(total, np.zeros(100))


def test_switch_needs_an_uplink_with_an_integer_form():
    assert make_switch_sum("gather", make("topk(k=2)"), 4, 10, 256) is None
    with pytest.raises(ValueError, match="integer form"):
        make_switch_sum("switch", make("topk(k=2)"), 4, 10, 256)


@pytest.mark.parametrize(
    ("compressor", "method", "message"),
    [
        ({"uplink": "natural"}, "diana", r"\[compressor\] aggregation: method 'diana' does not aggregate a plain sum"),
        ({"uplink": "qsgd(s=4)"}, "gd", r"\[compressor\] uplink: 'qsgd\(s=4\)' has no integer form"),
        ({"uplink": "natural", "downlink": "natural"}, "gd", r"\[compressor\] downlink: the switch multicasts"),
        ({"uplink": "natural", "packet_values": 100}, "gd", r"\[compressor\] packet_values: 100 is not allowed"),
    ],
)
def test_invalid_switch_configurations_are_refused(compressor, method, message):
    with pytest.raises(ConfigError, match=message):
        validate({"method": {"name": method}, "compressor": {"aggregation": "switch", **compressor}})


# --- end to end -----------------------------------------------------------------------------------

D = 31  # breast_cancer: 30 features + intercept


def test_natural_through_the_switch_equals_natural_through_the_master(tmp_path):
    """In range, the switch's aggregate is exactly sum_i C_nat(g_i): the trajectories are identical."""
    switch = run_inprocess(experiment("natural", "switch"), tmp_path / "switch.h5")
    master = run_inprocess(experiment("natural", "gather"), tmp_path / "master.h5")
    np.testing.assert_array_equal(switch.final_x, master.final_x)
    np.testing.assert_array_equal(switch.metrics["loss"], master.metrics["loss"])


FRAME = 14 + 20 + 8 + 12 + 4  # Ethernet, IPv4, UDP, mpicomp's packet header, FCS


def experiment(uplink: str, aggregation: str, workers: int = 8, rounds: int = 30, switch_format: str = "mpicomp"):
    raw = {
        "problem": {"name": "logistic", "dataset": "sklearn:breast_cancer", "l2": 0.1},
        "data": {"workers": workers, "partition": "label", "batch": 16},
        "method": {"name": "sgd", "stepsize": 0.5},
        "compressor": {"uplink": uplink, "aggregation": aggregation, "packet_values": 64},
        "run": {"rounds": rounds, "seed": 2},
    }
    if switch_format != "mpicomp":
        raw["compressor"]["switch_format"] = switch_format
    return raw


@pytest.mark.parametrize(
    ("uplink", "switch_format", "per_worker", "multicast"),
    [
        # one int8 exponent packet, one value packet (31 values), each with its frame
        ("natural", "mpicomp", (1 + FRAME) + (D + 4 + FRAME), (1 + FRAME) + (4 * D + FRAME)),
        ("identity", "mpicomp", (1 + FRAME) + (4 * D + FRAME), (1 + FRAME) + (4 * D + FRAME)),
        # SwitchML: the extra first (exponent) packet and one padded value packet, 256 + 56 bytes each
        ("identity", "switchml", 2 * (256 + 56), 2 * (256 + 56)),
        # ATP: one packet of 62 int32 (padded), 34 + 26 + 4 header bytes, no exponents
        ("identity", "atp", 248 + 64, 248 + 64),
    ],
)
def test_switch_bytes_are_the_frames_of_the_format(tmp_path, uplink, switch_format, per_worker, multicast):
    res = run_inprocess(experiment(uplink, "switch", rounds=5, switch_format=switch_format), tmp_path / "r.h5")
    m = res.metrics
    assert res.status == "finished"
    assert m["bits_up"][-1] == 8 * 5 * 8 * per_worker and m["up_control_bytes"][-1] == 0
    assert m["bits_down"][-1] == 8 * 5 * multicast
    np.testing.assert_array_equal(res.workers["bytes_up"][-1], 5 * per_worker)
    assert m["switch_overflow_packets"][-1] == 0 and m["switch_fallback_bytes"][-1] == 0
    # natural: C_nat's own error (unbiased, variance 1/8 of ||g_i||^2 each); the others round to ~1e-7
    bound = 1.0 if uplink == "natural" else 1e-5
    assert np.all(m["switch_aggregate_error"] > 0) and np.all(m["switch_aggregate_error"] < bound)


def test_gather_runs_log_no_switch_error(tmp_path):
    res = run_inprocess(experiment("identity", "gather", rounds=2), tmp_path / "r.h5")
    assert np.isnan(res.metrics["switch_aggregate_error"]).all()
    assert (res.metrics["switch_overflow_packets"] == 0).all()


@pytest.mark.mpi
@pytest.mark.parametrize(
    ("uplink", "switch_format", "ranks"),
    [
        ("natural", "mpicomp", (1, 2, 4)),
        pytest.param("identity(dtype=float32)", "mpicomp", (1, 2, 4), marks=pytest.mark.slow),
        ("identity", "switchml", (1, 2, 3)),
        pytest.param("identity", "atp", (1, 2, 3), marks=pytest.mark.slow),  # ATP's fallback: capabilities.py
    ],
)
def test_switch_runs_are_identical_on_any_rank_count(tmp_path, uplink, switch_format, ranks):
    raw = experiment(uplink, "switch", workers=5, rounds=15, switch_format=switch_format)
    reference = run_inprocess(raw, tmp_path / "local.h5")
    assert reference.status == "finished"
    for n in ranks:
        assert_same_metrics(reference, run_mpiexec(raw, tmp_path / f"n{n}.h5", n))


def test_compare_shows_the_switch_columns(tmp_path):
    """Tiny runs of two formats: the comparison lists the overflow, fallback and error columns for each."""
    runs = []
    for switch_format in ("atp", "switchml"):
        path = tmp_path / f"{switch_format}.h5"
        run_inprocess(experiment("identity", "switch", rounds=2, switch_format=switch_format), path)
        runs.append(read_results(path))
    comparison = compare_runs(runs)
    for column in ("switch_overflow_packets", "switch_fallback_bytes", "switch_aggregate_error"):
        assert column in comparison.columns
        assert all(row[column] is not None for row in comparison.rows)


def test_compare_leaves_the_switch_columns_out_without_a_switch_run(tmp_path):
    path = tmp_path / "gather.h5"
    run_inprocess(experiment("identity", "gather", rounds=2), path)
    columns = compare_runs([read_results(path)]).columns
    assert not {"switch_overflow_packets", "switch_fallback_bytes", "switch_aggregate_error"} & set(columns)
