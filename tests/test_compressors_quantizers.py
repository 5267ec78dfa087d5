"""Quantizer codecs (natural, dither, natdither, block) and the bit packing under them.

Statistical checks use mpicomp.testing (chi2 / CLT tolerances, fixed seeds); the wire checks use
real messages, corrupted one field at a time and re-framed with a valid CRC, so that the codec's
own validation (not the CRC) has to catch them.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mpicomp.compressors._levels as levels_module
import mpicomp.wire.bitpack as bitpack_module
from mpicomp.compressors import make
from mpicomp.compressors.natural import natural_codes
from mpicomp.rng import RandomKey, random_u64
from mpicomp.testing import (
    assert_omega,
    assert_unbiased,
    check_unbiased,
    check_variance,
    draws,
    fixed_vectors,
)
from mpicomp.wire import (
    MessageError,
    overhead_bytes,
    pack_message,
    pack_uint,
    packed_nbytes,
    unpack_message,
    unpack_uint,
)
from mpicomp.wire.bitpack import CHUNK_VALUES, PARALLEL_MIN_CHUNKS

QUANTIZERS = [
    "natural",
    "dither(s=1,p=2)",
    "dither(s=5,p=2)",
    "dither(s=3,p=inf)",
    "natdither(s=3,p=2)",
    "natdither(s=6,p=inf)",
    "block(size=64,s=1)",
    "block(size=5,s=3)",
]
NORM_BASED = [spec for spec in QUANTIZERS if spec != "natural"]
DRAWS = {1: 1500, 7: 1500, 1000: 300}
KEY = RandomKey(2024, 3, 1, 0)


def payload_bits(compressor, msg: bytes) -> int:
    return 8 * (len(msg) - compressor.header_bits() // 8)


def reframe(msg: bytes, scalars=None, payload=None, codec=None, d=None) -> bytes:
    """The message with one part replaced, framed again with a valid CRC."""
    parsed = unpack_message(msg)
    return pack_message(
        parsed.codec if codec is None else codec,
        parsed.d if d is None else d,
        parsed.scalars if scalars is None else scalars,
        bytes(parsed.payload) if payload is None else payload,
    )


# --------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("spec", QUANTIZERS)
@pytest.mark.parametrize("d", sorted(DRAWS))
def test_unbiased_and_omega(spec, d):
    compressor = make(spec)
    samples = check_unbiased(compressor, d, n_draws=DRAWS[d])
    check_variance(compressor, d, samples=samples)
    for name, drawn in samples.items():
        assert np.isfinite(drawn).all(), name


@pytest.mark.parametrize("spec", QUANTIZERS)
def test_unbiased_and_omega_float32_input(spec):
    x = fixed_vectors(300, seed=11)["heavy-tailed"].astype(np.float32)
    compressor = make(spec)
    samples = {"x": draws(compressor, x, 400)}
    exact = x.astype(np.float64)
    check_unbiased(compressor, x=exact, samples=samples)
    check_variance(compressor, x=exact, samples=samples)


@pytest.mark.parametrize("spec", QUANTIZERS)
def test_unbiased_and_omega_large_d(spec):
    x = fixed_vectors(100_000, seed=5)["half-zeros"]
    compressor = make(spec)
    samples = check_unbiased(compressor, x=x, n_draws=25)
    check_variance(compressor, x=x, samples=samples)


@pytest.mark.parametrize("spec", ["dither(s=2,p=inf)", "natdither(s=4,p=inf)", "dither(s=1,p=inf)"])
def test_omega_inf_norm_near_worst_case(spec):
    """One coordinate at the max, the others at the t maximising min(step^2/4, step t) - R t^2:
    the variance stays below omega and comes close to it (the p = inf bound is not vacuous)."""
    compressor = make(spec)
    d = 200
    step = 1 / compressor.s if compressor.name == "dither" else 2.0 ** (1 - compressor.s)
    ratio = levels_module.rounding_variance_bound(d, step, np.inf)
    x = np.full(d, min(step / (2 * ratio), step / 4))
    x[0] = 1.0
    samples = draws(compressor, x, 800)
    assert_unbiased(samples, x)
    assert_omega(compressor, samples, x)
    measured = np.mean(np.sum((samples - x) ** 2, axis=1)) / (x @ x)
    assert measured > 0.5 * compressor.omega(d)


@pytest.mark.parametrize("spec", NORM_BASED)
@pytest.mark.parametrize("scale", [2.0**1000, 2.0**-1000])
def test_extreme_magnitudes(spec, scale):
    """Norms whose squares or reciprocals leave the float64 range (scales are powers of two: exact)."""
    x = fixed_vectors(40, seed=3)["dense"] * scale
    compressor = make(spec)
    samples = draws(compressor, x, 600)
    assert np.isfinite(samples).all()
    assert_unbiased(samples / scale, x / scale)
    assert_omega(compressor, samples / scale, x / scale)


@pytest.mark.parametrize("spec", NORM_BASED)
def test_subnormal_vector(spec):
    """Subnormal inputs (a few significant bits) still decode to finite values of the right sign."""
    x = fixed_vectors(40, seed=3)["dense"] * 2.0**-1068
    compressor = make(spec)
    samples = draws(compressor, x, 200)
    assert np.isfinite(samples).all()
    assert (samples * np.sign(x) >= 0).all()
    np.testing.assert_allclose(samples.mean(axis=0), x, atol=8 * np.abs(x).max() / np.sqrt(200) + 2.0**-1070)


def test_two_norm_overflow_is_a_clear_error():
    x = np.full(4, 1.5e308)
    with pytest.raises(ValueError, match="2-norm"):
        make("dither(s=2,p=2)").encode(x, KEY)
    y = make("dither(s=2,p=inf)").decode(make("dither(s=2,p=inf)").encode(x, KEY), 4)
    assert np.isfinite(y).all()


# --------------------------------------------------------------------------- natural compression


def test_natural_values_are_signed_powers_of_two():
    compressor = make("natural")
    for x in fixed_vectors(1000).values():
        y = compressor.decode(compressor.encode(x, KEY), x.size)
        mantissa, _ = np.frexp(y)
        assert np.isin(mantissa, (0.0, 0.5, -0.5)).all()
        assert (np.sign(y)[y != 0] == np.sign(x)[y != 0]).all()
        low = np.ldexp(1.0, np.floor(np.log2(np.abs(x[y != 0]))).astype(int))
        assert ((np.abs(y[y != 0]) == low) | (np.abs(y[y != 0]) == 2 * low)).all()


@pytest.mark.parametrize("d", [1, 7, 8, 1000, 100_003])
def test_natural_message_size(d):
    compressor = make("natural")
    msg = compressor.encode(np.ones(d), KEY)
    assert len(msg) == overhead_bytes(0) + packed_nbytes(d, 9)
    assert compressor.expected_bits(d) == 9 * d


def natural_payload(codes: np.ndarray) -> bytes:
    """The natural codec's payload for 9-bit codes ``exponent | negative << 8``: d exponent bytes,
    then the sign bitmap (LSB first)."""
    codes = np.asarray(codes, dtype=np.uint32)
    signs = np.packbits((codes >> 8).astype(np.uint8), bitorder="little")
    return (codes & 0xFF).astype(np.uint8).tobytes() + signs.tobytes()


def natural_payload_codes(payload: bytes | memoryview, d: int) -> np.ndarray:
    """The 9-bit codes ``exponent | negative << 8`` of a natural payload (inverse of :func:`natural_payload`)."""
    raw = np.frombuffer(payload, dtype=np.uint8)
    assert raw.size == d + -(-d // 8)
    negative = np.unpackbits(raw[d:], bitorder="little")[:d].astype(np.uint32)
    return raw[:d].astype(np.uint32) | negative << 8


def test_natural_float32_codes_are_the_float32_exponent_and_sign():
    """A 9-bit code (exponent byte, sign bit) shifted left by 23 is the float32 bit pattern of
    the decoded power of two."""
    x = np.array([1.0, -2.0, 0.5, -0.0, 0.0, 2.0**127, -(2.0**-126)], dtype=np.float32)
    msg = unpack_message(make("natural").encode(x, KEY))
    codes = natural_payload_codes(msg.payload, x.size)
    assert ((codes << 23).view(np.float32) == x).all()


@numba.njit
def _random_words(state, n):
    out = np.empty(n, dtype=np.uint64)
    for i in range(n):
        out[i] = random_u64(state, i)
    return out


def natural_codes_transcribed(x: np.ndarray, key: RandomKey) -> np.ndarray:
    """C_nat from its definition, in float64 NumPy: ``|t| = 2^e (1 + m 2^-52)`` rounds up to ``2^(e+1)``
    iff ``u >> 12 < m``; ``0 < |t| < 2^-126`` becomes ``2^-126`` iff ``(u >> 12) 2^-52 < |t| 2^126``; code
    ``e + 127`` (0 for zero), sign bit 8 when the result is nonzero and t negative."""
    t = np.abs(x.astype(np.float64))
    u = _random_words(np.uint64(key.state), x.size) >> np.uint64(12)
    fraction, exponent = np.frexp(t)
    e = exponent.astype(np.int64) - 1
    mantissa = np.where(t > 0, (2 * fraction - 1) * 2.0**52, 0).astype(np.uint64)
    normal = e + 127 + (u < mantissa)
    tiny = (u.astype(np.float64) * 2.0**-52 < t * 2.0**126).astype(np.int64)
    code = np.where(t >= 2.0**-126, normal, np.where(t > 0, tiny, 0))
    negative = np.signbit(x) & (code > 0)
    return (code | negative.astype(np.int64) << 8).astype(np.uint32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_natural_codes_follow_the_definition(dtype):
    """``natural_codes`` (bit-pattern kernel with a fix-up pass for tiny values) against the definition."""
    x = np.random.default_rng(5).standard_normal(4099).astype(dtype) * 10.0 ** np.arange(-3, 4).repeat(600)[:4099]
    x[::9] = 0.0
    x[1::10] = -0.0
    x[2::11] = np.asarray(3e-39, dtype=dtype)
    x[3::13] = -(2.0**127)
    x[4::17] = np.finfo(dtype).tiny / 4
    x[5::19] = -np.finfo(dtype).tiny
    for key in (KEY, RandomKey(9, 4, 1)):
        np.testing.assert_array_equal(natural_codes(x, key), natural_codes_transcribed(x, key))


@pytest.mark.parametrize("d", [1, 63, 64, 65, 200, 4097])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_natural_payload_is_natural_codes(d, dtype):
    """The codec's payload (fast kernels per float32/float64 group) equals the reference rounding
    ``natural_codes`` bit for bit, zeros, tiny, subnormal and extreme magnitudes included."""
    x = np.random.default_rng(d).standard_normal(d).astype(dtype)
    x[::5] = 0.0
    x[1::7] = -0.0
    x[2::11] = np.asarray(3e-39, dtype=dtype)  # below 2^-126 (a float32 subnormal)
    x[3::13] = -(2.0**127)
    x[4::17] = np.finfo(dtype).tiny / 4  # subnormal
    signed_zeros = np.random.default_rng(d + 1).standard_normal(d).astype(dtype)  # no tiny value: the
    signed_zeros[::5] = 0.0  # float64 groups holding zeros take the fast kernel
    signed_zeros[1::7] = -0.0
    for values in (x, signed_zeros):
        for key in (KEY, RandomKey(9, 4, 1)):
            payload = unpack_message(make("natural").encode(values, key)).payload
            np.testing.assert_array_equal(natural_payload_codes(payload, d), natural_codes(values, key))


def test_natural_tiny_and_subnormal_values_are_unbiased():
    x = np.array([1e-40, -3e-39, 2.0**-126, -(2.0**-127), 5e-324, 0.0])
    compressor = make("natural")
    samples = draws(compressor, x, 3000)
    assert np.isin(np.abs(samples), (0.0, 2.0**-126)).all()
    for j in range(x.size):  # per coordinate: Bernoulli(p) on {0, 2^-126} with p = |x_j| 2^126
        p = abs(x[j]) * 2.0**126
        hits = np.count_nonzero(samples[:, j])
        assert abs(hits - p * samples.shape[0]) <= 5 * np.sqrt(samples.shape[0] * p * (1 - p)) + 1e-9
    x32 = np.array([1e-45, -1e-40, 1e-38], dtype=np.float32)  # float32 subnormals
    samples = draws(compressor, x32, 3000)
    assert_unbiased(samples * 2.0**126, x32.astype(np.float64) * 2.0**126)


def test_natural_range_limit():
    compressor = make("natural")
    top = np.array([2.0**127, -(2.0**127)])
    assert (compressor.decode(compressor.encode(top, KEY), 2) == top).all()
    with pytest.raises(ValueError, match=r"x\[1\].*rescale"):
        compressor.encode(np.array([1.0, 2.0**127 * 1.0000001]), KEY)
    with pytest.raises(ValueError, match="rescale"):
        compressor.encode(np.array([np.finfo(np.float32).max], dtype=np.float32), KEY)


# --------------------------------------------------------------------------- sizes, keys, edge cases


@pytest.mark.parametrize("spec", QUANTIZERS)
@pytest.mark.parametrize("d", [100_000, 100_003])
def test_message_size_matches_expected_bits(spec, d):
    compressor = make(spec)
    x = fixed_vectors(d, seed=1)["dense"]
    measured = payload_bits(compressor, compressor.encode(x, KEY))
    expected = compressor.expected_bits(d)
    assert abs(measured - expected) <= 0.01 * expected
    assert 0 <= measured - expected < 8  # only the zero padding of the last byte


@pytest.mark.parametrize("spec", QUANTIZERS)
def test_same_key_same_bytes_different_keys_independent(spec):
    compressor = make(spec)
    x = fixed_vectors(1000)["dense"]
    assert compressor.encode(x, KEY) == compressor.encode(x.copy(), RandomKey(2024, 3, 1, 0))
    errors = []
    # the key changed in each field in turn: seed, round, worker, stream
    other_keys = [
        RandomKey(2025, 3, 1, 0),
        RandomKey(2024, 4, 1, 0),
        RandomKey(2024, 3, 2, 0),
        RandomKey(2024, 3, 1, 1),
    ]
    for key in (KEY, *other_keys):
        msg = compressor.encode(x, key)
        errors.append(compressor.decode(msg, x.size) - x)
    for other in errors[1:]:
        assert not np.array_equal(other, errors[0])
        # independent rounding noise: the correlation over d coordinates is ~ N(0, 1/d)
        corr = np.corrcoef(errors[0], other)[0, 1]
        assert abs(corr) < 5 / np.sqrt(x.size)


@pytest.mark.parametrize("spec", QUANTIZERS)
def test_parallel_and_serial_kernels_agree(spec, monkeypatch):
    d = PARALLEL_MIN_CHUNKS * CHUNK_VALUES + 77
    x = fixed_vectors(d, seed=2)["heavy-tailed"]
    compressor = make(spec)
    parallel = compressor.encode(x, KEY)
    decoded_parallel = compressor.decode(parallel, d)
    assert bitpack_module.parallel_tasks(d) > 1 or numba.get_num_threads() == 1
    monkeypatch.setattr(levels_module, "parallel_tasks", lambda n: 1)
    monkeypatch.setattr(bitpack_module, "parallel_tasks", lambda n: 1)
    assert compressor.encode(x, KEY) == parallel
    np.testing.assert_array_equal(compressor.decode(parallel, d), decoded_parallel)


@pytest.mark.parametrize("spec", QUANTIZERS)
@pytest.mark.parametrize("d", [1, 5, 40])
def test_zero_vector(spec, d):
    compressor = make(spec)
    for dtype in (np.float32, np.float64):
        x = np.zeros(d, dtype=dtype)
        y = compressor.decode(compressor.encode(x, KEY), d)
        assert y.dtype == np.float64
        assert (y == 0).all()


@pytest.mark.parametrize("spec", NORM_BASED)
def test_single_coordinate_is_exact(spec):
    """d = 1: |x_1| = ||x||_p, the top level, sent exactly."""
    compressor = make(spec)
    for value in (3.25, -1e-20, 7e30):
        assert compressor.decode(compressor.encode(np.array([value]), KEY), 1)[0] == value


@pytest.mark.parametrize("spec", QUANTIZERS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_rejected(spec, bad):
    x = np.ones(10)
    x[4] = bad
    with pytest.raises(ValueError, match=r"x\[4\]"):
        make(spec).encode(x, KEY)
    with pytest.raises(ValueError, match=r"x\[4\]"):
        make(spec).encode(x.astype(np.float32), KEY)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("dither(s=0)", "s .number of nonzero levels"),
        ("dither(s=2.5)", "s .number of nonzero levels"),
        ("dither(s=True)", "s .number of nonzero levels"),
        ("dither(s=2147483648)", "s .number of nonzero levels"),
        ("dither(p=1)", "p .norm order"),
        ("dither(p=3)", "p .norm order"),
        ("natdither(s=1023)", "s .number of nonzero levels"),
        ("natdither(p='two')", "p .norm order"),
        ("block(size=0)", "size"),
        ("block(size=10,s=-1)", "s .number of nonzero levels"),
        ("natural(s=3)", "valid parameters: none"),
        ("dither(q=3)", "valid parameters: s, p"),
    ],
)
def test_bad_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        make(spec)


def test_specs_round_trip_and_parameters():
    assert make("dither(s=4,p=inf)").spec == "dither(s=4,p=inf)"
    assert make("dither").spec == "dither(s=1,p=2)"
    assert make("natdither(p='inf')").params == {"s": 3, "p": np.inf}
    assert make("block(size=100)").params == {"size": 100, "s": 1}
    for spec in QUANTIZERS:
        assert make(make(spec).spec) == make(spec)


def test_omega_formulas():
    assert make("dither(s=2,p=2)").omega(100) == min(100 / 16, 10 / 2)
    assert make("dither(s=1,p=inf)").omega(1) == 0.0
    assert make("dither(s=1,p=inf)").omega(101) == 5.0  # sqrt(100) / 2
    assert make("natdither(s=1,p=2)").omega(4) == 0.125 + 1.0  # min(d/4, sqrt(d)) with step 1
    assert make("block(size=16,s=1)").omega(10**6) == 4.0  # min(16/4, sqrt(16))
    assert make("block(size=16,s=1)").omega(9) == 2.25  # block shorter than size: d = 9
    assert make("natural").omega(10) == 0.125


# --------------------------------------------------------------------------- malformed messages


@pytest.mark.parametrize("spec", QUANTIZERS)
def test_truncated_oversized_wrong_codec_wrong_d(spec):
    compressor = make(spec)
    x = fixed_vectors(100)["dense"]
    msg = bytes(compressor.encode(x, KEY))
    for broken in (msg[:-1], msg[:10], msg + b"\0", b""):
        with pytest.raises(MessageError):
            compressor.decode(broken, x.size)
    with pytest.raises(MessageError, match="dimension"):
        compressor.decode(msg, x.size + 1)
    other = make("natural" if spec != "natural" else "dither(s=1,p=2)")
    with pytest.raises(MessageError, match="codec"):
        other.decode(msg, x.size)
    with pytest.raises(MessageError, match="CRC"):
        flipped = bytearray(msg)
        flipped[-6] ^= 0x10
        compressor.decode(bytes(flipped), x.size)


@pytest.mark.parametrize("spec", QUANTIZERS)
def test_payload_length_and_scalar_count_checked(spec):
    compressor = make(spec)
    x = fixed_vectors(100)["dense"]
    msg = compressor.encode(x, KEY)
    payload = bytes(unpack_message(msg).payload)
    for bad in (payload[:-1], payload + b"\0", b""):
        with pytest.raises(MessageError):
            compressor.decode(reframe(msg, payload=bad), x.size)
    with pytest.raises(MessageError, match="scalars"):
        compressor.decode(reframe(msg, scalars=(1.0,) * (compressor.n_scalars + 1)), x.size)
    with pytest.raises(MessageError):  # the same payload announced for a longer vector
        compressor.decode(reframe(msg, d=x.size + 50), x.size + 50)


@pytest.mark.parametrize("spec", ["dither(s=1,p=2)", "natdither(s=3,p=inf)"])
@pytest.mark.parametrize("norm", [np.nan, np.inf, -1.0])
def test_invalid_norm_scalar(spec, norm):
    compressor = make(spec)
    msg = compressor.encode(np.arange(1.0, 9.0), KEY)
    with pytest.raises(MessageError, match="norm"):
        compressor.decode(reframe(msg, scalars=(norm,)), 8)


@pytest.mark.parametrize("norm", [np.nan, np.inf, -1.0])
def test_invalid_block_norm(norm):
    compressor = make("block(size=4,s=1)")
    msg = compressor.encode(np.arange(1.0, 11.0), KEY)
    payload = bytearray(unpack_message(msg).payload)
    payload[8:16] = np.array([norm], dtype="<f8").tobytes()
    with pytest.raises(MessageError, match="norm .* of block 1"):
        compressor.decode(reframe(msg, payload=bytes(payload)), 10)


def plane_bit_positions(d: int, bits: int) -> np.ndarray:
    """``positions[i, t]``: where bit t of coordinate i's code lies in the bit-plane layout
    (docs/wire-format.md): group g = i // 64 of n_g coordinates starts at bit 64 g bits, and its
    plane t is the field of n_g bits at t n_g."""
    i = np.arange(d)[:, None]
    t = np.arange(bits)[None, :]
    group, j = i // 64, i % 64
    length = np.minimum(64, d - 64 * group)
    return 64 * bits * group + t * length + j


def plane_payload(codes: np.ndarray, bits: int) -> bytes:
    """The code section of dither / natdither / block for the given raw codes."""
    codes = np.asarray(codes, dtype=np.uint64)
    stream = np.zeros(codes.size * bits, dtype=np.uint8)
    stream[plane_bit_positions(codes.size, bits)] = (codes[:, None] >> np.arange(bits, dtype=np.uint64)) & 1
    return np.packbits(stream, bitorder="little").tobytes()


def plane_payload_codes(payload: bytes | memoryview, d: int, bits: int) -> np.ndarray:
    """Inverse of :func:`plane_payload`."""
    stream = np.unpackbits(np.frombuffer(payload, dtype=np.uint8), bitorder="little").astype(np.uint64)
    return (stream[plane_bit_positions(d, bits)] << np.arange(bits, dtype=np.uint64)).sum(axis=1)


def codes_message(compressor, d: int, codes: np.ndarray, scalars=(1.0,)) -> bytes:
    """A well-framed message of ``compressor`` whose coordinates carry the given raw codes."""
    if compressor.name == "natural":
        return pack_message(compressor.codec_id, d, (), natural_payload(codes))
    packed = plane_payload(codes, compressor.code.bits)
    if compressor.name == "block":
        packed = np.ones(compressor.n_blocks(d), dtype="<f8").tobytes() + packed
        scalars = ()
    return pack_message(compressor.codec_id, d, scalars, packed)


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        ("natural", 255),  # exponent code 255 is not a power of two
        ("natural", 1 << 8),  # negative zero
        ("dither(s=5,p=2)", 6),  # level above s (3 level bits hold up to 7)
        ("dither(s=5,p=2)", 1 << 3),  # negative zero
        ("natdither(s=5,p=2)", 7),
        ("block(size=4,s=2)", 3),
    ],
)
def test_invalid_codes(spec, code):
    compressor = make(spec)
    d = 70
    codes = np.ones(d, dtype=np.uint32)
    assert np.isfinite(compressor.decode(codes_message(compressor, d, codes), d)).all()
    codes[37] = code
    with pytest.raises(MessageError, match="coordinate 37"):
        compressor.decode(codes_message(compressor, d, codes), d)


@pytest.mark.parametrize("spec", ["natural", "dither(s=1,p=2)", "block(size=3,s=1)"])
def test_nonzero_padding_bits_rejected(spec):
    compressor = make(spec)
    d = 5  # 5 codes never fill the last byte for 2 or 9 bits per code
    msg = compressor.encode(np.arange(1.0, 6.0), KEY)
    payload = bytearray(unpack_message(msg).payload)
    payload[-1] |= 0x80
    with pytest.raises(MessageError, match="padding"):
        compressor.decode(reframe(msg, payload=bytes(payload)), d)


def test_nonzero_level_with_zero_norm_rejected():
    compressor = make("dither(s=3,p=2)")
    msg = compressor.encode(np.arange(1.0, 9.0), KEY)
    with pytest.raises(MessageError, match="zero-norm"):
        compressor.decode(reframe(msg, scalars=(0.0,)), 8)


@pytest.mark.parametrize("spec", QUANTIZERS)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_random_payloads_decode_or_raise(spec, data):
    """Arbitrary bytes of the right length: a finite float64 vector or MessageError, never a crash."""
    compressor = make(spec)
    d = data.draw(st.integers(1, 300))
    size = len(unpack_message(compressor.encode(np.ones(d), KEY)).payload)
    payload = data.draw(st.binary(min_size=size, max_size=size))
    msg = pack_message(compressor.codec_id, d, (2.5,) * compressor.n_scalars, payload)
    try:
        y = compressor.decode(msg, d)
    except MessageError:
        return
    assert y.dtype == np.float64 and y.shape == (d,)
    assert not np.isnan(y).any()


# --------------------------------------------------------------------------- bit packing


def reference_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Bit ``j*bits + t`` of the stream is bit t of value j (LSB first)."""
    planes = ((values.astype(np.uint64)[:, None] >> np.arange(bits, dtype=np.uint64)) & 1).astype(np.uint8)
    return np.packbits(planes.ravel(), bitorder="little")


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_bitpack_round_trip(data):
    bits = data.draw(st.integers(1, 32))
    values = np.array(data.draw(st.lists(st.integers(0, 2**bits - 1), max_size=150)), dtype=np.uint64)
    packed = pack_uint(values, bits)
    assert packed.size == packed_nbytes(values.size, bits)
    np.testing.assert_array_equal(packed, reference_bits(values, bits))
    np.testing.assert_array_equal(unpack_uint(packed.tobytes(), values.size, bits), values)


@pytest.mark.parametrize("bits", range(1, 33))
def test_bitpack_round_trip_parallel_path(bits):
    n = PARALLEL_MIN_CHUNKS * CHUNK_VALUES + 45
    values = np.random.default_rng(bits).integers(0, 2**bits, n, dtype=np.uint64)
    packed = pack_uint(values, bits)
    np.testing.assert_array_equal(packed, reference_bits(values, bits))
    np.testing.assert_array_equal(unpack_uint(packed, n, bits), values)


def test_bitpack_unaligned_buffer_and_dtypes():
    values = np.arange(100, dtype=np.int32) % 7
    packed = pack_uint(values, 3).tobytes()
    shifted = memoryview(b"x" + packed)[1:]  # starts at an odd address
    np.testing.assert_array_equal(unpack_uint(shifted, 100, 3), values)
    np.testing.assert_array_equal(pack_uint(values.astype(np.uint8), 3), pack_uint(values, 3))
    np.testing.assert_array_equal(pack_uint(values % 2 == 1, 1), pack_uint(values % 2, 1))


def test_bitpack_errors():
    with pytest.raises(ValueError, match=r"value\[2\]"):
        pack_uint(np.array([1, 2, 8, 1]), 3)
    with pytest.raises(ValueError, match=r"\[0, 2\*\*3\)"):
        pack_uint(np.array([1, -1]), 3)
    with pytest.raises(ValueError, match="1..32"):
        pack_uint(np.array([1]), 33)
    with pytest.raises(ValueError, match="integer"):
        pack_uint(np.array([1.0]), 3)
    packed = pack_uint(np.arange(10) % 4, 2)
    for bad in (packed[:-1], np.append(packed, 0)):
        with pytest.raises(MessageError):
            unpack_uint(bad, 10, 2)
