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
from mpicomp.config import ConfigError, validate
from mpicomp.methods.in_network import (
    FixedPointSum,
    NaturalSum,
    headroom,
    make_switch_sum,
)
from mpicomp.rng import STREAM_UPLINK, RandomKey
from mpicomp.testing import assert_unbiased
from tests.runs import assert_same_metrics, run_inprocess, run_mpiexec

NATURAL = make("natural")


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
    total = switch.total(vectors, keys(n), LocalTransport(n))
    np.testing.assert_array_equal(total, switch.total(vectors, keys(n, rnd=1), LocalTransport(n)))
    agreed = np.max([switch.block_exponents(v) for v in vectors], axis=0)
    bound = n * np.ldexp(1.0, np.repeat(agreed, packet_values)[:d] - switch.headroom - 1)
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


@pytest.mark.parametrize("cls", [FixedPointSum, NaturalSum])
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


def experiment(uplink: str, aggregation: str, workers: int = 8, rounds: int = 30) -> dict:
    return {
        "problem": {"name": "logistic", "dataset": "sklearn:breast_cancer", "l2": 0.1},
        "data": {"workers": workers, "partition": "label", "batch": 16},
        "method": {"name": "sgd", "stepsize": 0.5},
        "compressor": {"uplink": uplink, "aggregation": aggregation, "packet_values": 64},
        "run": {"rounds": rounds, "seed": 2},
    }


def test_natural_through_the_switch_equals_natural_through_the_master(tmp_path):
    """In range, the switch's aggregate is exactly sum_i C_nat(g_i): the trajectories are identical."""
    switch = run_inprocess(experiment("natural", "switch"), tmp_path / "switch.h5")
    master = run_inprocess(experiment("natural", "gather"), tmp_path / "master.h5")
    np.testing.assert_array_equal(switch.final_x, master.final_x)
    np.testing.assert_array_equal(switch.metrics["loss"], master.metrics["loss"])


@pytest.mark.parametrize("uplink", ["natural", "identity"])
def test_switch_bytes_follow_the_packet_format(tmp_path, uplink):
    """Per worker and round: one int8 exponent per 64-value block, then the values, 12 header bytes a packet."""
    res = run_inprocess(experiment(uplink, "switch", rounds=5), tmp_path / "r.h5")
    blocks = math.ceil(D / 64)
    value_bytes = D + math.ceil(D / 8) if uplink == "natural" else 4 * D
    per_worker = (blocks + 12) + (value_bytes + 12)  # exponents: 1 packet; values: 1 packet
    multicast = (blocks + 12) + (4 * D + 12)  # the switch returns int8 maxima and int32 sums
    m = res.metrics
    assert m["up_payload_bytes"][-1] == 5 * 8 * (blocks + value_bytes)
    assert m["up_header_bytes"][-1] == 5 * 8 * 24 and m["up_control_bytes"][-1] == 0
    assert m["bits_up"][-1] == 8 * 5 * 8 * per_worker
    assert m["bits_down"][-1] == 8 * 5 * multicast
    np.testing.assert_array_equal(res.workers["bytes_up"][-1], 5 * per_worker)


@pytest.mark.mpi
@pytest.mark.parametrize("uplink", ["natural", "identity(dtype=float32)"])
def test_switch_runs_are_identical_on_1_2_4_ranks(tmp_path, uplink):
    raw = experiment(uplink, "switch", workers=5, rounds=15)
    reference = run_inprocess(raw, tmp_path / "local.h5")
    assert reference.status == "finished"
    for n in (1, 2, 4):
        assert_same_metrics(reference, run_mpiexec(raw, tmp_path / f"n{n}.h5", n))
