"""The fused kernels of dither, natdither, block and QSGD: bit-plane layout, decode_add, the NumPy
references, the norm pass's NaN/Inf check, and the bit-level helpers under them (plane intrinsics,
the branch-free bit writer and reader)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
from numba import njit

from mpicomp.compressors import _levels as levels_module
from mpicomp.compressors import make
from mpicomp.rng import RandomKey
from mpicomp.wire import MessageError, pack_message, unpack_message
from mpicomp.wire.bitpack import (
    CHUNK_VALUES,
    PARALLEL_MIN_CHUNKS,
    nonzero_word,
    or_plane,
    padded,
    peek_bits,
    plane_word,
    put_bits,
    set_plane,
)

KEY = RandomKey(77, 5, 3, 0)
LEVEL_SPECS = [
    "dither(s=1,p=2)",
    "dither(s=5,p=2)",
    "dither(s=3,p=inf)",
    "dither(s=300,p=2)",  # 10-bit codes: uint16 scratch
    "dither(s=100000,p=inf)",  # 18-bit codes: uint32 scratch
    "natdither(s=3,p=2)",
    "natdither(s=6,p=inf)",
    "natdither(s=200,p=2)",
    "block(size=64,s=1)",
    "block(size=5,s=3)",
    "block(size=2000,s=2)",
]
QSGD_SPECS = ["qsgd(s=1)", "qsgd(s=16)", "qsgd(s=4,code=gamma)", "qsgd(s=1000)", "qsgd(s=70000,code=gamma)"]
DIMENSIONS = [1, 7, 63, 64, 65, 2047, 2049, 4161, PARALLEL_MIN_CHUNKS * CHUNK_VALUES + 77]


def numpy_references() -> dict:
    """tools/numpy_reference_quant.py and numpy_reference_sparse.py's ``NUMPY_REFERENCES``."""
    tools = str(Path(__file__).resolve().parents[1] / "tools")
    sys.path.insert(0, tools)
    try:
        quant = importlib.import_module("numpy_reference_quant")
        sparse = importlib.import_module("numpy_reference_sparse")
    finally:
        sys.path.remove(tools)
    return {**quant.NUMPY_REFERENCES, "qsgd(s=16)": sparse.NUMPY_REFERENCES["qsgd(s=16)"]}


def vector(d: int, seed: int, dtype=np.float64) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(d)
    x[::7] = 0.0
    return x.astype(dtype)


# --------------------------------------------------------------------------- decode, decode_add


@pytest.mark.parametrize("spec", LEVEL_SPECS + QSGD_SPECS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_decode_add_is_decode_plus_add_bit_for_bit(spec, dtype):
    """``decode_add(msg, total)`` equals ``total + decode(msg)`` exactly, and ``decode(out=)`` (into
    a vector full of garbage) equals ``decode``, on every path: tails, spans, threads."""
    compressor = make(spec)
    for d in DIMENSIONS:
        x = vector(d, d, dtype)
        msg = compressor.encode(x, KEY)
        decoded = compressor.decode(msg, d, KEY)
        total = np.random.default_rng(1).standard_normal(d)
        expected = total + decoded
        np.testing.assert_array_equal(compressor.decode_add(msg, total, KEY), expected)
        out = np.full(d, np.nan)
        np.testing.assert_array_equal(compressor.decode(msg, d, KEY, out=out), decoded)


@pytest.mark.parametrize("d", [1, 5, 1023, 1024, 1025, 5000])
def test_qsgd_decode_zeroes_every_uncoded_coordinate(d):
    """QSGD's decoder zeroes ``out`` block by block as its writes advance: a vector of garbage ends up
    equal to the decode added into zeros, across gaps longer than a block, up to the end sentinel."""
    compressor = make("qsgd(s=4)")
    for positions in ([0], [3, d // 2, d - 1], [d - 1], range(0, d, 700)):
        coded = sorted({p for p in positions if p < d})
        x = np.zeros(d)
        x[coded] = np.linspace(1.0, -2.0, len(coded))
        msg = compressor.encode(x, KEY)
        expected = compressor.decode_add(msg, np.zeros(d), KEY)
        out = np.full(d, np.nan)
        np.testing.assert_array_equal(compressor.decode(msg, d, KEY, out=out), expected)
        assert (out[x == 0] == 0).all() and (out[x != 0] != 0).any()


@pytest.mark.parametrize("spec", LEVEL_SPECS)
def test_encode_into_a_caller_buffer(spec):
    compressor = make(spec)
    x = vector(4161, 3)
    buffer = np.full(compressor.message_capacity(x.size) + 5, 0xAB, dtype=np.uint8)
    assert bytes(compressor.encode(x, KEY, out=buffer)) == bytes(compressor.encode(x, KEY))
    assert (buffer[compressor.message_capacity(x.size) :] == 0xAB).all()


# --------------------------------------------------------------------------- wire layout


def test_bit_plane_layout_byte_by_byte():
    """docs/wire-format.md's example: P = 2, d = 70. Coordinates i = 0 mod 3 are +max, 1 mod 3 -max,
    2 mod 3 zero, so with p = inf every level is deterministic (1, 1, 0) and the bytes are known."""
    d = 70
    i = np.arange(d)
    x = np.where(i % 3 == 0, 1.0, np.where(i % 3 == 1, -1.0, 0.0))
    payload = bytes(unpack_message(make("dither(s=1,p=inf)").encode(x, KEY)).payload)
    level = [int(i % 3 != 2) for i in range(d)]
    sign = [int(i % 3 == 1) for i in range(d)]
    words = [sum(bits[j] << j for j in range(64)) for bits in (level, sign)]
    tail = sum(level[64 + j] << j for j in range(6)) | sum(sign[64 + j] << (6 + j) for j in range(6))
    expected = words[0].to_bytes(8, "little") + words[1].to_bytes(8, "little") + tail.to_bytes(2, "little")
    assert payload == expected


@pytest.mark.parametrize(
    "spec", ["dither(s=1,p=2)", "dither(s=15,p=inf)", "natdither(s=3,p=2)", "block(size=2000,s=1)"]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_payloads_equal_the_numpy_reference(spec, dtype):
    """tools/numpy_reference_quant.py lays the codes out in planes on its own: the payloads agree bit
    for bit (vectors of multiples of 1/8, so that every sum of squares, hence the norm, is exact)."""
    encode, decode = numpy_references()[spec]
    compressor = make(spec)
    for d in (1, 63, 64, 65, 130, 2049, 4161, 100_003):
        x = (np.random.default_rng(d).integers(-40, 40, d) / 8).astype(dtype)
        msg = unpack_message(compressor.encode(x, KEY))
        scalars, payload = encode(x, KEY)
        assert msg.scalars == scalars
        assert bytes(msg.payload) == payload
        np.testing.assert_allclose(decode(scalars, payload, d, KEY), compressor.decode(compressor.encode(x, KEY), d))


def test_qsgd_payload_equals_the_numpy_reference():
    """QSGD's stream is unchanged by the fused encoder: tools/numpy_reference_sparse.py agrees."""
    encode, decode = numpy_references()["qsgd(s=16)"]
    compressor = make("qsgd(s=16)")
    for d in (1, 63, 64, 65, 2049, 100_003):
        x = np.random.default_rng(d).integers(-40, 40, d) / 8
        msg = unpack_message(compressor.encode(x, KEY))
        assert (msg.scalars, bytes(msg.payload)) == encode(x, KEY)
        np.testing.assert_array_equal(compressor.decode(compressor.encode(x, KEY), d), decode(*encode(x, KEY), d, KEY))


def test_qsgd_stream_bound_holds_for_dense_adversarial_levels():
    """Gaps of 2 (3 bits for 2 coordinates) and large levels (up to s for d = 2): the writer's buffer
    bound still holds."""
    for spec in ("qsgd(s=1000)", "qsgd(s=1000,code=gamma)", "qsgd(s=1048576)"):
        compressor = make(spec)
        for d in (2, 3, 64, 1000):
            x = np.zeros(d)
            x[::2] = 1.0
            msg = unpack_message(compressor.encode(x, KEY))
            assert 8 * len(msg.payload) <= compressor._stream_bits_bound(d) + 7
            np.testing.assert_array_equal(compressor.decode(compressor.encode(x, KEY), d) != 0, x != 0)


@pytest.mark.parametrize("spec", ["qsgd(s=2)", "qsgd(s=2,code=gamma)"])
def test_qsgd_truncated_streams_raise(spec):
    compressor = make(spec)
    x = vector(300, 4)
    msg = compressor.encode(x, KEY)
    parsed = unpack_message(msg)
    payload = bytes(parsed.payload)
    for cut in range(1, len(payload)):
        forged = pack_message(compressor.codec_id, 300, parsed.scalars, payload[:cut])
        with pytest.raises(MessageError):
            compressor.decode_add(forged, np.zeros(300))


# --------------------------------------------------------------------------- NaN and Inf


@pytest.mark.parametrize(
    "spec", ["dither(s=2,p=2)", "dither(s=2,p=inf)", "natdither(s=3,p=2)", "block(size=50,s=1)", "qsgd(s=4)"]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_norm_pass_rejects_nan_and_inf(spec, dtype):
    """These codecs skip the separate finiteness pass: their norm pass finds NaN and Inf anywhere."""
    compressor = make(spec)
    assert compressor.checks_finite
    d = 1000
    for where in (0, 63, 64, 500, d - 1):
        for bad in (np.nan, np.inf, -np.inf):
            x = vector(d, 1, dtype)
            x[where] = bad
            x[where + 1 :] = np.where(np.arange(d - where - 1) % 2, np.nan, x[where + 1 :])  # later ones too
            with pytest.raises(ValueError, match=rf"non-finite vector: x\[{where}\]"):
                compressor.encode(x, KEY)


# --------------------------------------------------------------------------- bit-level helpers


@njit
def _planes(codes, start, count):
    words = np.empty(count, dtype=np.uint64)
    for t in range(count):
        words[t] = plane_word(codes, start, t)
    return words


@njit
def _spread(words, codes, start):
    set_plane(codes, start, words[0], 0)
    for t in range(1, words.size):
        or_plane(codes, start, words[t], t)


@njit
def _nonzero(values, start):
    return nonzero_word(values, start)


@pytest.mark.parametrize(
    ("dtype", "bits"), [(np.uint8, 8), (np.uint16, 13), (np.uint32, 32), (np.int8, 7), (np.int32, 20)]
)
def test_plane_intrinsics(dtype, bits):
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 2**bits, 200, dtype=np.uint64).astype(dtype)
    start = 11
    words = _planes(codes, start, bits)
    for t in range(bits):
        assert int(words[t]) == sum(((int(codes[start + j]) >> t) & 1) << j for j in range(64))
    back = np.full(200, 0x55, dtype=dtype)
    _spread(words, back, 3)
    np.testing.assert_array_equal(back[3:67], codes[start : start + 64])
    assert (back[:3] == 0x55).all() and (back[67:] == 0x55).all()
    codes[::3] = 0
    assert int(_nonzero(codes, start)) == sum(int(codes[start + j] != 0) << j for j in range(64))


@njit
def _write_fields(values, widths, out):
    position = 0
    for k in range(values.size):
        position = put_bits(out, position, values[k], widths[k])
    return position


@njit
def _read_fields(buf, widths, out):
    position = 0
    for k in range(widths.size):
        out[k] = peek_bits(buf, position) & ((np.uint64(1) << np.uint64(widths[k])) - np.uint64(1))
        position += widths[k]


def test_put_and_peek_bits_round_trip_at_every_offset():
    rng = np.random.default_rng(0)
    widths = rng.integers(1, 58, 500)
    values = np.array([int(rng.integers(0, 2**w, dtype=np.uint64)) for w in widths], dtype=np.uint64)
    out = np.zeros(int(widths.sum()) // 8 + 9, dtype=np.uint8)
    total = _write_fields(values, widths, out)
    assert total == widths.sum()
    stream = np.unpackbits(out, bitorder="little")[:total]
    starts = np.concatenate(([0], np.cumsum(widths)[:-1]))
    for value, width, start in zip(values, widths, starts, strict=True):
        assert int(value) == sum(int(stream[start + b]) << b for b in range(width))
    read = np.empty(widths.size, dtype=np.uint64)
    _read_fields(padded(out[: (total + 7) // 8]), widths, read)
    np.testing.assert_array_equal(read, values)


def test_generated_kernels_have_one_name_per_specialization():
    """Numba names cached code after the qualname and a per-process counter: kernels generated per
    parameter set must differ in qualname, or one could run another's code (see bitpack.specialized)."""
    kernels = [
        levels_module._encoder(levels_module.LINEAR, 1),
        levels_module._encoder(levels_module.LINEAR, 4),
        levels_module._encoder(levels_module.POW2, 1),
        levels_module._decoder(levels_module.LINEAR, 1, False),
        levels_module._decoder(levels_module.LINEAR, 1, True),
        levels_module._decoder(levels_module.POW2, 1, False),
    ]
    names = [kernel.py_func.__qualname__ for kernel in kernels]
    assert len(set(names)) == len(names)
