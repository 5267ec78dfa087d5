"""LAQ's innovation quantizer as a codec: eqs. (5)-(6) of paper 003, its bound, its wire checks.

Every registered codec is also fuzzed by tests/test_wire.py (corrupted, truncated, mislabelled).
"""

from __future__ import annotations

import numpy as np
import pytest

from mpicomp.compressors import make
from mpicomp.compressors.laq import float32_radius
from mpicomp.rng import RandomKey
from mpicomp.wire import MessageError, pack_message, unpack_message, unpack_uint
from mpicomp.wire.bitpack import pack_octets, unpack_octets

KEY = RandomKey(7, 0, 0, 0)


def paper_quantizer(v: np.ndarray, bits: int) -> np.ndarray:
    """Eqs. (5)-(6) written out, with R rounded up to float32 as it travels."""
    tau = 1.0 / (2**bits - 1)
    radius = float(np.float32(np.abs(v).max()))
    if radius < np.abs(v).max():
        radius = float(np.nextafter(np.float32(radius), np.float32(np.inf)))
    q = np.floor((v + radius) / (2 * tau * radius) + 0.5)
    assert q.min() >= 0 and q.max() <= 2**bits - 1
    return 2 * tau * radius * q - radius


@pytest.mark.parametrize("bits", [1, 3, 4, 8, 17, 32])
@pytest.mark.parametrize("d", [1, 7, 100, 1000])
def test_decoded_vector_is_the_papers_grid_point_and_within_tau_r(bits, d):
    v = np.random.default_rng(bits * d).standard_normal(d) * 3.0
    compressor = make(f"laq(bits={bits})")
    decoded = compressor.decode(compressor.encode(v, KEY), d)
    np.testing.assert_allclose(decoded, paper_quantizer(v, bits), rtol=0, atol=1e-14 * np.abs(v).max())
    tau_r = float32_radius(np.abs(v).max()) / (2**bits - 1)
    assert np.all(np.abs(decoded - v) <= tau_r * (1 + 1e-12))


@pytest.mark.parametrize(("bits", "d"), [(1, 1), (3, 10), (4, 7850), (8, 159010), (32, 33)])
def test_message_is_radius_plus_b_bits_per_coordinate(bits, d):
    compressor = make(f"laq(bits={bits})")
    message = compressor.encode(np.linspace(-1.0, 2.0, d), KEY)
    assert len(message) == 16 + 4 + 4 + -(-bits * d // 8)  # header, float32 R, codes, CRC
    assert compressor.expected_bits(d) == 32 + bits * d


def test_contraction_bound_is_tight_and_refused_when_it_fails():
    """``||C(v) - v||^2 <= (1 - alpha)||v||^2``; v = (1, 0, ..., 0) puts every zero tau off the grid."""
    compressor = make("laq(bits=4)")
    d = 50
    tau = 1.0 / 15
    spike = np.zeros(d)
    spike[3] = 1.0
    error = compressor.decode(compressor.encode(spike, KEY), d) - spike
    np.testing.assert_allclose(error @ error, (d - 1) * tau**2, rtol=1e-12)
    alpha = compressor.alpha(d)
    assert error @ error <= (1 - alpha) * (spike @ spike) <= (d - 1) * tau**2 * 1.000001
    rng = np.random.default_rng(1)
    for _ in range(200):
        v = rng.standard_normal(d) * rng.exponential(size=d)
        e = compressor.decode(compressor.encode(v, KEY), d) - v
        assert e @ e <= (1 - alpha) * (v @ v)
    assert compressor.alpha(226) is None  # (d - 1) tau^2 = 1: no contraction left
    assert make("laq(bits=8)").alpha(7850) == pytest.approx(1 - 7849 / 255**2, rel=1e-6)


def test_zero_and_float32_inputs():
    compressor = make("laq(bits=3)")
    np.testing.assert_array_equal(compressor.decode(compressor.encode(np.zeros(9), KEY), 9), np.zeros(9))
    v32 = np.array([0.5, -0.25, 0.125], dtype=np.float32)
    decoded = compressor.decode(compressor.encode(v32, KEY), 3)
    assert decoded.dtype == np.float64
    np.testing.assert_allclose(decoded, [0.5, -0.5 + 2 / 7, -0.5 + 4 / 7], rtol=1e-15)  # grid step 2 tau R = 1/7


def test_radius_rounds_up_to_float32_and_overflow_is_refused():
    radius = 1.0 + 2.0**-30  # not a float32
    assert float32_radius(radius) == 1.0 + 2.0**-23
    assert float32_radius(0.0) == 0.0
    with pytest.raises(ValueError, match="exceeds the float32 range"):
        make("laq").encode(np.array([1e39, 0.0]), KEY)


@pytest.mark.parametrize("spec", ["laq(bits=0)", "laq(bits=33)", "laq(bits=2.5)", "laq(bits=True)"])
def test_bad_bits_are_refused(spec):
    with pytest.raises(ValueError, match="bits must be an integer in 1..32"):
        make(spec)


def reframed(message: bytes, payload: bytes) -> bytes:
    parsed = unpack_message(message)
    return pack_message(parsed.codec, parsed.d, parsed.scalars, payload)


@pytest.mark.parametrize(
    ("radius", "codes", "match"),
    [
        (np.float32(np.nan), None, "invalid radius"),
        (np.float32(np.inf), None, "invalid radius"),
        (np.float32(-1.0), None, "invalid radius"),
        (np.float32(-0.0), None, "invalid radius"),
        (np.float32(0.0), None, "nonzero codes with radius 0"),
        (np.float32(1.0), b"\xff\xff\xff\xff", "padding bits"),
        (np.float32(1.0), b"\x00", "payload of"),
    ],
)
def test_invalid_payloads_are_message_errors(radius, codes, match):
    compressor = make("laq(bits=3)")
    message = compressor.encode(np.array([1.0, -0.5, 0.25, 0.0, 0.7, -1.0, 0.1, 0.3, 0.9, -0.2]), KEY)
    payload = bytes(unpack_message(message).payload)
    body = payload[4:] if codes is None else codes
    with pytest.raises(MessageError, match=match):
        compressor.decode(reframed(message, np.array([radius], "<f4").tobytes() + body), 10)


@pytest.mark.parametrize("bits", range(1, 9))
def test_byte_code_decode_is_eq_6_on_the_packed_codes_bit_for_bit(bits):
    """Codes of up to 8 bits are spread 8 at a time from ``bits`` bytes (``unpack_octets``); decode and
    decode_add give eq. (6) on the codes read one by one (``unpack_uint``), ``q step - R`` with
    ``step = 2 R / (2^b - 1)``, bit for bit: short vectors, partial chunks, long (threaded) ones."""
    compressor = make(f"laq(bits={bits})")
    for d in (1, 31, 33, 1000, 200_003):
        v = np.random.default_rng(d + bits).standard_normal(d)
        message = compressor.encode(v, KEY)
        payload = np.frombuffer(unpack_message(message).payload, dtype=np.uint8)
        radius = float(payload[:4].view("<f4")[0])
        step = 2.0 * radius / (2**bits - 1)
        expected = unpack_uint(payload[4:], d, bits).astype(np.float64) * step - radius
        np.testing.assert_array_equal(compressor.decode(message, d).view(np.uint64), expected.view(np.uint64))
        total = np.random.default_rng(1).standard_normal(d)
        added = compressor.decode_add(message, total.copy())
        np.testing.assert_array_equal(added.view(np.uint64), (total + expected).view(np.uint64))


@pytest.mark.parametrize("bits", range(1, 9))
def test_unpack_octets_inverts_pack_octets(bits):
    """Every code comes back, for any start and any end of the packed bytes (the last groups read
    past the end as zeros)."""
    count = 37
    codes = np.random.default_rng(bits).integers(0, 2**bits, 8 * count, dtype=np.uint8)
    packed = np.zeros(3 + bits * count + 8, dtype=np.uint8)
    pack_octets(codes.copy().view(np.uint64), count, packed, 3, packed.size, bits)
    for end in (3 + bits * count, 3 + bits * count - 1, packed.size):
        octets = np.empty(count, dtype=np.uint64)
        unpack_octets(packed[:end], 3, count, bits, octets)
        got = octets.view(np.uint8)
        whole = 8 * count if end >= 3 + bits * count else 8 * ((end - 3) // bits)
        np.testing.assert_array_equal(got[:whole], codes[:whole])
