"""SwitchML's and ATP's formats through the emulated switch, against independent transcriptions.

The references below are written from the peers' documented quantisers (see docs/wire-format.md), in
plain NumPy, without the package's kernels:

* SwitchML (client ``cpu_exponent_quantizer``): per packet, e = float32 exponent field of max |x| minus
  126; the switch keeps the max over workers; the float32 scale ``INT32_MAX / (n 2^E)`` (denominator in
  float32, quotient rounded to float32); ``round(x * scale)`` of the float32 product, ties away from
  zero; the receivers' ``float32(sum) / scale`` in float32.
* ATP (``quantize.h``): ``rint(float32(x * 1e6))`` to int32 (ties to even), ``float32(sum) / 1e6``;
  an overflowed packet is summed in float32 by the master instead.
"""

from __future__ import annotations

import numpy as np
import pytest

from mpicomp.comm import LocalTransport
from mpicomp.compressors import make
from mpicomp.compressors.switch_encoding import ATPEncoding, SwitchMLEncoding, make_switch_encoding
from mpicomp.config import ConfigError, validate
from mpicomp.methods.in_network import SwitchSum
from mpicomp.rng import STREAM_UPLINK, RandomKey

INT32_MAX = 2**31 - 1


def keys(n: int) -> list[RandomKey]:
    return [RandomKey(5, 0, w, STREAM_UPLINK) for w in range(n)]


def blocks_of(x: np.ndarray, p: int) -> np.ndarray:
    """``x`` padded with zeros to whole packets, one row per packet."""
    padded = np.zeros(-(-x.size // p) * p, dtype=x.dtype)
    padded[: x.size] = x
    return padded.reshape(-1, p)


def switchml_reference(vectors: list[np.ndarray], p: int) -> np.ndarray:
    n, d = len(vectors), vectors[0].size
    xs = [blocks_of(v.astype(np.float32), p) for v in vectors]
    exponents = [((np.abs(x).max(axis=1).view(np.uint32) >> 23) & 0xFF).astype(np.int64) - 126 for x in xs]
    agreed = np.max(exponents, axis=0)
    denominator = np.float32(n) * np.exp2(agreed).astype(np.float32)
    with np.errstate(over="ignore"):
        scale = (np.float64(INT32_MAX) / denominator.astype(np.float64)).astype(np.float32)[:, None]
    total = np.zeros(xs[0].shape, dtype=np.int64)
    for x in xs:
        with np.errstate(invalid="ignore", over="ignore"):
            product = (x * scale).astype(np.float64)  # the float32 product
        q = np.sign(product) * np.floor(np.abs(product) + 0.5)
        total += np.where(np.isinf(scale), 0, q).astype(np.int64)
    out = total.astype(np.float32) / scale  # float32 division; an infinite scale gives 0
    return out.ravel()[:d].astype(np.float64)


def atp_reference(vectors: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The sum and the overflowed packets (a worker's value outside int32, or the int32 sum outside)."""
    xs = [blocks_of(v.astype(np.float32), 62) for v in vectors]
    products = [(x * np.float32(1e6)).astype(np.float64) for x in xs]
    flagged = np.zeros(xs[0].shape[0], dtype=bool)
    total = np.zeros(xs[0].shape, dtype=np.int64)
    for product in products:
        flagged |= (np.abs(product) >= 2**31).any(axis=1)
        total += np.rint(np.clip(product, -(2**31), INT32_MAX)).astype(np.int64)
    flagged |= ((total < -(2**31)) | (total > INT32_MAX)).any(axis=1)
    out = total.astype(np.float32) / np.float32(1e6)
    float_sum = np.zeros(xs[0].shape, dtype=np.float32)
    for x in xs:
        float_sum += x
    out[flagged] = float_sum[flagged]
    d = vectors[0].size
    return out.ravel()[:d].astype(np.float64), flagged


def switch_total(encoding, vectors: list[np.ndarray]) -> tuple[np.ndarray, LocalTransport]:
    n = len(vectors)
    transport = LocalTransport(n)
    return SwitchSum(encoding).total(vectors, keys(n), transport).copy(), transport


@pytest.mark.parametrize("n", [2, 3, 5, 8, 13, 32])
@pytest.mark.parametrize("p", [64, 256])
def test_switchml_sums_equal_an_independent_transcription(n, p):
    """Random scales per packet, a block of zeros, one of huge values, one below SwitchML's float32
    scale range (decoded as 0), and ties that round away from zero."""
    d = 6 * p + 17
    rng = np.random.default_rng(n * p)
    vectors = []
    for _ in range(n):
        x = rng.standard_normal(d) * np.repeat(10.0 ** rng.uniform(-6, 6, 7), p)[:d]
        x[p : 2 * p] = 0.0  # a block of zeros
        x[2 * p : 3 * p] *= 1e30  # huge values (exponents near 100 + the block's)
        x[3 * p : 4 * p] = rng.standard_normal(p) * 1e-35  # the scale overflows float32 there
        vectors.append(x)
    total, _ = switch_total(SwitchMLEncoding(n, d, p), vectors)
    reference = switchml_reference(vectors, p)
    np.testing.assert_array_equal(total, reference)
    assert np.all(total[p : 2 * p] == 0) and np.all(total[3 * p : 4 * p] == 0)
    exact = np.sum(vectors, axis=0)
    big = slice(2 * p, 3 * p)
    assert np.max(np.abs(total[big] - exact[big])) < 1e-6 * np.max(np.abs(exact[big]))


def test_switchml_rounds_ties_away_from_zero():
    """n = 2, block max 1.0: E = 1, scale = float32(INT32_MAX / 4) = 2^29; x = ±2.5 2^-29 is a tie."""
    d = 64
    x = np.zeros(d)
    x[0], x[1], x[2] = 1.0, 2.5 * 2.0**-29, -2.5 * 2.0**-29
    total, _ = switch_total(SwitchMLEncoding(2, d, 64), [x, np.zeros(d)])
    np.testing.assert_array_equal(total[1:3], [3 * 2.0**-29, -3 * 2.0**-29])  # rint would give ±2


def test_switchml_refuses_more_than_32_workers_and_non_finite_values():
    with pytest.raises(ValueError, match="at most 32 workers"):
        SwitchMLEncoding(33, 10, 64)
    with pytest.raises(ConfigError, match=r"\[compressor\] switch_format: 'switchml' aggregates at most 32"):
        validate(
            {
                "method": {"name": "gd"},
                "data": {"workers": 33},
                "compressor": {"aggregation": "switch", "switch_format": "switchml"},
            }
        )
    encoding = SwitchMLEncoding(2, 3, 64)
    with pytest.raises(ValueError, match=r"x\[1\] = inf as float32"):
        encoding.block_exponents(encoding.prepare(np.array([1.0, 1e39, 0.0]), keys(1)[0]))


@pytest.mark.parametrize("n", [2, 3, 7])
def test_atp_sums_equal_an_independent_transcription_and_fall_back(n):
    """Packet 1 overflows on one worker (3000 x 1e6 > 2^31), packet 2 in the int32 sum; both are summed
    in float32 by the master, the rest by the switch."""
    d = 5 * 62 + 9
    rng = np.random.default_rng(n)
    vectors = [rng.standard_normal(d) * 10.0 ** rng.uniform(-3, 2) for _ in range(n)]
    vectors[0][62 + 5] = 3000.0
    for v in vectors:
        v[2 * 62 + 1] = 2000.0  # n x 2e9 leaves int32
    total, transport = switch_total(ATPEncoding(n, d), vectors)
    reference, flagged = atp_reference(vectors)
    assert flagged.tolist() == [False, True, True, False, False, False]
    np.testing.assert_array_equal(total, reference)
    fallback_sum = np.sum([v.astype(np.float32) for v in vectors], axis=0, dtype=np.float32)  # same order
    np.testing.assert_array_equal(total[62:186], fallback_sum[62:186].astype(np.float64))
    counts = transport.counter.end_round()
    assert counts.overflow_packets == 2
    assert counts.fallback_bytes == (n + 1) * 2 * (248 + 34 + 26 + 4)


def test_formats_other_than_mpicomp_need_an_identity_uplink_and_a_switch():
    with pytest.raises(ValueError, match="use uplink 'identity'"):
        make_switch_encoding("atp", make("natural"), 2, 10, 64)
    with pytest.raises(ConfigError, match=r"\[compressor\] switch_format: 'atp' needs aggregation = 'switch'"):
        validate({"method": {"name": "gd"}, "compressor": {"switch_format": "atp"}})
    with pytest.raises(ConfigError, match=r"\[compressor\] uplink: switch_format = 'switchml' quantises float"):
        validate(
            {
                "method": {"name": "gd"},
                "compressor": {"aggregation": "switch", "switch_format": "switchml", "uplink": "natural"},
            }
        )


def test_block_exponents_are_those_of_the_block_max_and_name_the_first_bad_value():
    """The exponents come from an integer max over bit patterns: against frexp (fixed point: the smallest
    e >= -127 with max |x| < 2^e, -128 for zeros) and the float32 exponent field minus 126 (SwitchML), on
    blocks of mixed signs, zeros, subnormals and a block max of -2^126; a NaN or a value >= 2^127 in a later
    block is named by its own index, not by the first one of its block."""
    p = 8
    rng = np.random.default_rng(11)
    x = rng.standard_normal(5 * p) * np.repeat([1e-3, 1.0, 1e30, 1.0, 1.0], p)
    x[3 * p : 4 * p] = 0.0
    x[4 * p : 5 * p] = [-(2.0**126), 1e-310, 0.0, 5e-324, -1.0, 2.0**-1030, 3.0, -4.0]
    fixed = make_switch_encoding("mpicomp", make("identity"), 2, x.size, p)
    largest = np.abs(blocks_of(x, p)).max(axis=1)
    expected = np.where(largest == 0, -128, np.maximum(np.frexp(largest)[1], -127))
    np.testing.assert_array_equal(fixed.block_exponents(x), expected)
    switchml = SwitchMLEncoding(2, x.size, p)
    as_float32 = x.astype(np.float32)
    field = (np.abs(blocks_of(as_float32, p)).max(axis=1).view(np.uint32) >> 23).astype(np.int64)
    np.testing.assert_array_equal(switchml.block_exponents(as_float32), np.where(field == 0, -126, field - 126))
    for bad, value in [(2 * p + 5, np.nan), (4 * p + 6, 2.0**127), (p + 3, -np.inf)]:
        broken = x.copy()
        broken[bad] = value
        with pytest.raises(ValueError, match=rf"x\[{bad}\] = "):
            fixed.block_exponents(broken)
        with pytest.raises(ValueError, match=rf"x\[{bad}\] = "):
            switchml.block_exponents(broken.astype(np.float32))
