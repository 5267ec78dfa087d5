"""Wire-level property tests: bit packing, Elias codes, message framing, and fuzzing of every codec.

Every registered compressor (looked up at test time, so codecs added later are covered too) and a
few compositions must turn corrupted, truncated, extended or mislabelled messages into
:class:`MessageError`, never into a crash or a silently different vector.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpicomp.compressors import Compressor, available, make, message_checksums
from mpicomp.compressors import base as compressor_base
from mpicomp.compressors import identity as identity_module
from mpicomp.compressors import natural as natural_module
from mpicomp.compressors.natural import decode_rows_add
from mpicomp.rng import RandomKey
from mpicomp.wire import (
    HEADER_BYTES,
    MessageError,
    MessageFrame,
    decode_elias,
    elias_code_bits,
    encode_elias,
    overhead_bytes,
    pack_message,
    pack_signs,
    pack_uint,
    payload_offset,
    split_messages,
    unpack_message,
    unpack_signs,
    unpack_uint,
    unpack_uniform,
)
from mpicomp.wire.elias import CODEWORD_TABLE, ELIAS_CODES, MAX_ELIAS, codeword_table
from mpicomp.wire.message import FLAG_KEY

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Compressors whose spec needs parameters; every other registered name is built from its bare name.
EXAMPLE_SPECS = {"randk": "randk(k=0.3)", "topk": "topk(k=0.2)", "qsgd": "qsgd(s=4)"}
COMPOSITIONS = ["qsgd(s=2)∘randk(k=0.5)", "identity∘randk(k=0.5,send_indices=True)", "sign∘topk(k=0.3)"]


def fuzzed_specs() -> list[str]:
    specs = [EXAMPLE_SPECS.get(name, name) for name in available()]
    if "natural" in available():
        specs.append("natural∘randk(k=0.1)")
    return specs + COMPOSITIONS


# ---------------------------------------------------------------- bit packing


def check_pack_uint_round_trip(bits: int, values: list[int]) -> None:
    packed = pack_uint(np.array(values, dtype=np.uint64), bits)
    assert packed.size == (len(values) * bits + 7) // 8
    np.testing.assert_array_equal(unpack_uint(packed, len(values), bits), values)
    with pytest.raises(MessageError):
        unpack_uint(np.concatenate((packed, [0])), len(values), bits)


@FUZZ
@given(st.integers(1, 32).flatmap(lambda b: st.tuples(st.just(b), st.lists(st.integers(0, 2**b - 1), max_size=200))))
def test_pack_uint_round_trip(case: tuple[int, list[int]]) -> None:
    check_pack_uint_round_trip(*case)


@pytest.mark.parametrize("bits", range(1, 33))
def test_pack_uint_round_trip_every_width(bits: int) -> None:
    rng = np.random.default_rng(bits)
    for n in (0, 1, 31, 32, 33, 1000):
        check_pack_uint_round_trip(bits, [int(v) for v in rng.integers(0, 2**bits, n, dtype=np.uint64)])
    check_pack_uint_round_trip(bits, [2**bits - 1] * 70)


@pytest.mark.parametrize("bits", range(1, 9))
def test_byte_codes_pack_as_wider_integers_do(bits: int) -> None:
    """uint8 values of up to 8 bits take the 8-at-a-time packer: the same bytes as the general one (the
    values as uint16), partial chunks and threaded lengths alike, and the 8-at-a-time unpacker reads them
    back; a value too large is named."""
    rng = np.random.default_rng(bits)
    for n in (1, 7, 33, 2049, 300_001):
        values = rng.integers(0, 2**bits, n, dtype=np.uint8)
        packed = pack_uint(values, bits)
        np.testing.assert_array_equal(packed, pack_uint(values.astype(np.uint16), bits))
        np.testing.assert_array_equal(unpack_uint(packed, n, bits), values)
    if bits < 8:
        values = np.zeros(5000, dtype=np.uint8)
        values[[3000, 4000]] = 2**bits
        with pytest.raises(ValueError, match=r"value\[3000\]"):
            pack_uint(values, bits)


@FUZZ
@given(st.lists(st.booleans(), max_size=300))
def test_signs_round_trip(negative: list[bool]) -> None:
    packed = pack_signs(np.array(negative, dtype=bool))
    np.testing.assert_array_equal(unpack_signs(packed, len(negative)), negative)
    with pytest.raises(MessageError):
        unpack_signs(packed[:-1] if packed.size else b"\x00", len(negative))


# ---------------------------------------------------------------- Elias codes

ELIAS_VALUES = st.lists(st.one_of(st.integers(1, 40), st.integers(1, MAX_ELIAS)), max_size=100)


@FUZZ
@given(ELIAS_VALUES, st.sampled_from(["gamma", "omega"]))
def test_elias_round_trip_and_lengths(values: list[int], code: str) -> None:
    encoded = encode_elias(np.array(values, dtype=np.uint64), code)
    lengths = elias_code_bits(np.array(values, dtype=np.uint64), code)
    assert encoded.size == (int(lengths.sum()) + 7) // 8
    np.testing.assert_array_equal(decode_elias(encoded, len(values), code), values)
    if values:
        with pytest.raises(MessageError):
            decode_elias(encoded[:-1], len(values), code)
        with pytest.raises(MessageError):
            decode_elias(np.concatenate((encoded, [0])), len(values), code)


def textbook_codeword(n: int, code: str) -> str:
    """The codeword as written in Elias (1975), most significant bit first."""
    if code == "gamma":
        return "0" * (n.bit_length() - 1) + format(n, "b")
    word = "0"
    while n > 1:
        word = format(n, "b") + word
        n = n.bit_length() - 1
    return word


@pytest.mark.parametrize("code", ["gamma", "omega"])
def test_elias_lengths_match_the_textbook_codes(code: str) -> None:
    n = [1, 2, 3, 4, 7, 8, 15, 16, 17, 100, 1000, 2**20, 2**32 - 1, 2**32]
    expected = [len(textbook_codeword(v, code)) for v in n]
    np.testing.assert_array_equal(elias_code_bits(np.array(n, dtype=np.uint64), code), expected)
    assert textbook_codeword(17, "omega") == "10100100010" and textbook_codeword(5, "gamma") == "00101"


@FUZZ
@given(st.binary(max_size=40), st.integers(0, 30), st.sampled_from(["gamma", "omega"]))
def test_elias_decoder_on_random_bytes(data: bytes, n: int, code: str) -> None:
    """Arbitrary bytes either fail with MessageError or are the canonical encoding of what they decode to."""
    try:
        values = decode_elias(data, n, code)
    except MessageError:
        return
    assert encode_elias(values, code).tobytes() == data


def codeword_bits(n: int, code: str) -> np.ndarray:
    """The stream bits of n's codeword, in stream order (the package's LSB-first layout)."""
    length = int(elias_code_bits(np.array([n], dtype=np.uint64), code)[0])
    return np.unpackbits(encode_elias(np.array([n], dtype=np.uint64), code), bitorder="little")[:length]


@pytest.mark.parametrize("code", ["gamma", "omega"])
def test_elias_codeword_table_holds_each_codeword(code: str) -> None:
    """codeword_table(code)[n] = word << 8 | length, word's bit t = stream bit t of n's codeword."""
    table = codeword_table(ELIAS_CODES[code])
    assert table.size == CODEWORD_TABLE
    for n in range(1, CODEWORD_TABLE):
        length = int(table[n]) & 0xFF
        word = int(table[n]) >> 8
        assert word < 1 << length
        np.testing.assert_array_equal([(word >> t) & 1 for t in range(length)], codeword_bits(n, code))


def test_elias_rejects_out_of_range_values() -> None:
    for bad in ([0], [MAX_ELIAS + 1]):
        with pytest.raises(ValueError):
            encode_elias(np.array(bad, dtype=np.uint64))
    with pytest.raises(ValueError, match="gamma, omega"):
        encode_elias(np.array([1]), "delta")
    with pytest.raises(MessageError):
        decode_elias(b"\x00" * 8, 1, "gamma")  # 64 zero bits: a gamma prefix longer than any valid codeword


# ---------------------------------------------------------------- message framing


# codec id, d, codec scalars, payload, CRC flag: the fields of a message
MESSAGE_FIELDS = (
    st.integers(0, 255),
    st.integers(0, 2**32 - 1),
    st.lists(st.floats(allow_nan=False), max_size=5),
    st.binary(max_size=64),
    st.booleans(),
)


@FUZZ
@given(*MESSAGE_FIELDS)
def test_message_round_trip(codec: int, d: int, scalars: list[float], payload: bytes, crc: bool) -> None:
    message = pack_message(codec, d, scalars, payload, crc=crc)
    parsed = unpack_message(message, codec=codec, d=d)
    assert (parsed.codec, parsed.d, list(parsed.scalars), bytes(parsed.payload)) == (codec, d, scalars, payload)
    assert parsed.nbytes == len(message) == HEADER_BYTES + 8 * len(scalars) + len(payload) + 4 * crc
    assert [bytes(m) for m in split_messages(message + message)] == [message, message]
    for cut in (len(message) - 1, HEADER_BYTES - 1, 0):
        with pytest.raises(MessageError):
            unpack_message(message[:cut])
    with pytest.raises(MessageError):
        unpack_message(message + b"\x00")
    with pytest.raises(MessageError):
        unpack_message(message, codec=(codec + 1) % 256)


@given(*MESSAGE_FIELDS, st.data())
def test_a_frame_writes_and_reads_what_the_message_functions_do(
    codec: int, d: int, scalars: list[float], payload: bytes, crc: bool, data: st.DataObject
) -> None:
    """A :class:`MessageFrame` frames a payload into the bytes of ``pack_message``, unpacks its messages as
    ``unpack_message`` does, and hands any message that is not byte for byte of its header and size back (None)."""
    frame = MessageFrame.of(codec, d, len(scalars), len(payload), crc)
    message = pack_message(codec, d, scalars, payload, crc=crc)
    out = np.zeros(frame.total + 3, dtype=np.uint8)
    frame.payload(out)[:] = np.frombuffer(payload, dtype=np.uint8)
    assert frame.write(out, scalars) == frame.total == len(message)
    assert out[: frame.total].tobytes() == message
    assert frame.unpack(message) == unpack_message(message, codec=codec, d=d)
    other = bytearray(message)
    other[data.draw(st.integers(0, HEADER_BYTES - 1))] ^= data.draw(st.integers(1, 255))
    assert frame.unpack(bytes(other)) is None
    assert frame.unpack(message + b"\x00") is None and frame.unpack(message[:-1]) is None
    if crc:
        corrupt = bytearray(message)
        corrupt[data.draw(st.integers(HEADER_BYTES, len(message) - 1))] ^= data.draw(st.integers(1, 255))
        with pytest.raises(MessageError, match="CRC32"):
            frame.unpack(bytes(corrupt))


# ---------------------------------------------------------------- every compressor under fuzzing


def encoded(spec: str, seed: int, d: int) -> tuple[object, RandomKey, bytes, np.ndarray]:
    compressor = make(spec)
    key = RandomKey(seed, 1, 2, 0)
    x = np.random.default_rng(seed).standard_normal(d)
    message = compressor.encode(x, key)
    return compressor, key, message, compressor.decode(message, d, key)


MESSAGES = st.tuples(st.sampled_from(fuzzed_specs()), st.integers(0, 2**31), st.integers(1, 300))


@FUZZ
@given(MESSAGES, st.data())
def test_corrupted_bytes_never_decode_to_another_vector(case: tuple[str, int, int], data: st.DataObject) -> None:
    compressor, key, message, original = encoded(*case)
    corrupt = bytearray(message)
    for _ in range(data.draw(st.integers(1, 4))):
        corrupt[data.draw(st.integers(0, len(message) - 1))] ^= data.draw(st.integers(1, 255))
    if bytes(corrupt) == message:
        return
    try:
        decoded = compressor.decode(bytes(corrupt), case[2], key)
    except MessageError:
        return
    np.testing.assert_array_equal(decoded, original)


@FUZZ
@given(MESSAGES, st.data())
def test_corrupt_payload_with_valid_crc_is_validated(case: tuple[str, int, int], data: st.DataObject) -> None:
    """Re-framed with a correct CRC, a corrupted payload must fail with MessageError or decode to a
    finite float64 vector of the right size: the codec's own checks, not the CRC, are what stand."""
    compressor, key, message, _ = encoded(*case)
    parsed = unpack_message(message)
    payload = bytearray(parsed.payload)
    if payload:
        payload[data.draw(st.integers(0, len(payload) - 1))] ^= data.draw(st.integers(1, 255))
    if data.draw(st.booleans()):
        payload = payload[: data.draw(st.integers(0, len(payload)))] + data.draw(st.binary(max_size=3))
    forged = pack_message(parsed.codec, parsed.d, parsed.scalars, bytes(payload))
    try:
        decoded = compressor.decode(forged, case[2], key)
    except MessageError:
        return
    assert decoded.dtype == np.float64 and decoded.shape == (case[2],) and np.isfinite(decoded).all()


@FUZZ
@given(MESSAGES, st.data())
def test_truncated_or_extended_messages_fail(case: tuple[str, int, int], data: st.DataObject) -> None:
    compressor, key, message, _ = encoded(*case)
    with pytest.raises(MessageError):
        compressor.decode(message[: data.draw(st.integers(0, len(message) - 1))], case[2], key)
    with pytest.raises(MessageError):
        compressor.decode(bytes(message) + data.draw(st.binary(min_size=1, max_size=16)), case[2], key)
    with pytest.raises(MessageError):
        compressor.decode(message, case[2] + 1, key)


@pytest.mark.parametrize("spec", fuzzed_specs())
def test_wrong_codec_is_refused(spec: str) -> None:
    compressor, key, message, _ = encoded(spec, 11, 64)
    for other in fuzzed_specs():
        receiver = make(other)
        if receiver.codec_id != compressor.codec_id:
            with pytest.raises(MessageError, match="wrong codec"):
                receiver.decode(message, 64, key)


@pytest.mark.parametrize("spec", fuzzed_specs())
def test_empty_vector_round_trips(spec: str) -> None:
    """d = 0 (a layer with no parameters, a worker's empty shard of a split vector) encodes and decodes."""
    compressor, key = make(spec), RandomKey(5)
    message = compressor.encode(np.zeros(0), key)
    assert compressor.decode(message, 0, key).shape == (0,)
    assert compressor.decode_add(message, np.zeros(0), key).shape == (0,)


@pytest.mark.parametrize("spec", [spec for spec in fuzzed_specs() if make(spec).payload_bytes(64) is not None])
def test_fixed_size_payload_is_checked_before_a_decode_without_d_allocates(spec: str) -> None:
    """A header claiming d = 2^32 - 1 around a short payload (valid CRC) is a MessageError, not a 32 GiB
    allocation, when the caller does not pass d: the codec's payload size for that d is checked first."""
    compressor, key, message, _ = encoded(spec, 11, 64)
    parsed = unpack_message(message)
    forged = pack_message(
        parsed.codec, 2**32 - 1, parsed.scalars, parsed.payload, key_fingerprint=parsed.key_fingerprint
    )
    with pytest.raises(MessageError, match="payload of"):
        compressor.decode(forged, None, key)


# ---------------------------------------------------------------- caller buffers and batches


@pytest.mark.parametrize("spec", fuzzed_specs())
@pytest.mark.parametrize(("crc", "dtype"), [(True, np.float64), (False, np.float64), (False, np.float32)])
def test_buffers_and_batches_give_the_same_bytes_and_sums(spec: str, crc: bool, dtype: type) -> None:
    """``encode(out=)`` and ``encode_many`` write exactly ``encode``'s bytes; ``decode(out=)``,
    ``decode_add`` (with and without a scale) and ``decode_sum`` give exactly ``decode``,
    ``total + decode``, ``total - gamma decode`` (a model step) and the sum in order divided by n,
    bit for bit."""
    compressor = make(spec)
    compressor.crc = crc
    d = 130
    rows = np.random.default_rng(7).standard_normal((3, d)).astype(dtype)
    rows[1, ::4] = 0.0
    keys = [RandomKey(5, 2, w, 0) for w in range(3)]
    messages = [compressor.encode(row, key) for row, key in zip(rows, keys, strict=True)]
    assert [bytes(m) for m in compressor.encode_many(rows, keys)] == [bytes(m) for m in messages]
    capacity = compressor.message_capacity(d)
    if capacity is not None:  # into a caller's rows: row j is message j, every byte of it
        rows_out = np.full((3, capacity), 0xAB, dtype=np.uint8)
        batch = compressor.encode_many(rows, keys, out=rows_out)
        assert [bytes(m) for m in batch] == [bytes(m) for m in messages] == [row.tobytes() for row in rows_out]
        assert all(np.shares_memory(np.frombuffer(m, np.uint8), row) for m, row in zip(batch, rows_out, strict=True))
    for message, row, key in zip(messages, rows, keys, strict=True):
        if capacity is not None:
            buffer = np.full(capacity + 5, 0xAB, dtype=np.uint8)
            assert bytes(compressor.encode(row, key, out=buffer)) == bytes(message)
        decoded = compressor.decode(message, d, key)
        into = np.full(d, np.nan)
        assert compressor.decode(message, d, key, out=into) is into
        np.testing.assert_array_equal(into, decoded)
        total = np.linspace(-1.0, 1.0, d)
        expected = total + decoded
        np.testing.assert_array_equal(compressor.decode_add(message, total, key), expected)
        x = np.linspace(-1.0, 1.0, d)
        expected = x - 0.37 * decoded
        np.testing.assert_array_equal(compressor.decode_add(message, x, key, scale=-0.37), expected)
    expected = np.zeros(d)
    for message, key in zip(messages, keys, strict=True):
        expected += compressor.decode(message, d, key)
    expected /= 3
    out = np.full(d, np.nan)
    assert compressor.decode_sum(messages, keys, out, divisor=3) is out
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("spec", ["identity", "identity(dtype=float32)", "natural"])
def test_decode_sum_of_a_gathered_buffer_is_the_ordered_sum(spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eleven uploads back to back in one buffer after one stray byte, as a gather can deliver them
    (payloads at odd offsets, which identity copies to align), with signed zeros: ``decode_sum``
    equals zeroing, adding each in worker order and dividing, bit for bit, over several of
    identity's groups of payloads and of natural's stacks (three payloads each here)."""
    compressor = make(spec)
    compressor.crc = False
    d, n = 1001, 11
    monkeypatch.setattr(compressor_base, "STACK_BYTES", 3 * make("natural").payload_bytes(d))
    rows = np.random.default_rng(3).standard_normal((n, d)) * np.logspace(-30, 30, d)
    rows[:, :7] = -0.0
    keys = [RandomKey(1, 4, w, 0) for w in range(n)]
    joined = b"".join(bytes(compressor.encode(row, key)) for row, key in zip(rows, keys, strict=True))
    view = memoryview(b"\0" + joined)
    size = len(joined) // n
    messages = [view[1 + w * size : 1 + (w + 1) * size] for w in range(n)]
    expected = np.zeros(d)
    for message, key in zip(messages, keys, strict=True):
        compressor.decode_add(message, expected, key)
    expected /= n
    out = compressor.decode_sum(messages, keys, np.full(d, 7.0), divisor=n)
    np.testing.assert_array_equal(out, expected)
    assert not np.signbit(out[:7]).any()
    assert np.array_equal(compressor.decode_sum([], [], np.full(d, 7.0), divisor=n), np.zeros(d))


@pytest.mark.parametrize("spec", ["identity", "natural", "dither(s=2,p=inf)"])
def test_decode_sum_by_zero_divides_as_numpy_does(spec: str) -> None:
    """``decode_sum(divisor=0)`` gives what NumPy's division of the sum by 0 gives (inf and NaN), in every path
    (identity's fused groups, the rows sums), rather than an exception from a kernel."""
    compressor = make(spec)
    rows = np.random.default_rng(2).standard_normal((3, 300))
    rows[:, :4] = 0.0
    keys = [RandomKey(1, 0, w, 0) for w in range(3)]
    messages = [bytes(compressor.encode(row, key)) for row, key in zip(rows, keys, strict=True)]
    expected = np.zeros(300)
    for message, key in zip(messages, keys, strict=True):
        compressor.decode_add(message, expected, key)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected /= 0.0
        out = compressor.decode_sum(messages, keys, np.empty(300), 0.0)
    np.testing.assert_array_equal(out.view(np.int64), expected.view(np.int64))


def test_natural_mean_of_long_uploads_fuses_its_passes_with_the_same_bits() -> None:
    """Long vectors take natural's per-message sum (the first upload written, not added to zeros; the division
    in the last upload's pass): ``decode_sum`` of 1-3 uploads, divisor 1, n, 0.3 or 0, equals zeroing, adding each
    in order and dividing, bit for bit (signed zeros compared); a bad payload in the last one is named."""
    compressor = make("natural")
    compressor.crc = False
    d = (1 << 17) + 37  # past the payload-rows sum, a partial last group and sign byte
    assert not compressor._sums_payload_rows(d)
    rows = np.random.default_rng(5).standard_normal((3, d)) * np.logspace(-30, 30, d)
    rows[:, :7] = -0.0
    keys = [RandomKey(2, 9, w, 0) for w in range(3)]
    messages = [bytes(compressor.encode(row, key)) for row, key in zip(rows, keys, strict=True)]
    for n in (1, 2, 3):
        for divisor in (1.0, float(n), 0.3, 0.0):
            expected = np.zeros(d)
            for message, key in zip(messages[:n], keys[:n], strict=True):
                compressor.decode_add(message, expected, key)
            with np.errstate(divide="ignore", invalid="ignore"):  # a divisor of 0: inf and NaN, as NumPy gives
                expected /= divisor
                out = compressor.decode_sum(messages[:n], keys[:n], np.full(d, 7.0), divisor)
            np.testing.assert_array_equal(out.view(np.int64), expected.view(np.int64))
    forged = bytearray(messages[2])
    forged[-1] |= 0x80  # a sign bit past coordinate d - 1
    with pytest.raises(MessageError, match="message 2: natural: nonzero padding bits") as caught:
        compressor.decode_sum([*messages[:2], bytes(forged)], keys, np.empty(d), 3.0)
    assert caught.value.index == 2


def test_decode_sum_checks_every_header_first_and_names_a_bad_payload() -> None:
    compressor = make("identity")
    compressor.crc = False  # the forged payload below must reach the value check, not the checksum
    d = 50
    keys = [RandomKey(0, 0, w, 0) for w in range(6)]
    messages = [compressor.encode(np.full(d, float(w)), key) for w, key in enumerate(keys)]
    out = np.full(d, 3.0)
    with pytest.raises(MessageError, match="d=49"):
        compressor.decode_sum(messages[:5] + [compressor.encode(np.ones(d - 1), keys[5])], keys, out)
    np.testing.assert_array_equal(out, 3.0)
    forged = bytearray(messages[5])
    forged[payload_offset(0) + 8 * 17 : payload_offset(0) + 8 * 18] = np.float64(np.inf).tobytes()
    with pytest.raises(MessageError, match="message 5: identity: payload holds non-finite") as error:
        compressor.decode_sum(messages[:5] + [bytes(forged)], keys, out)
    assert error.value.index == 5
    with pytest.raises(ValueError, match="6 messages and 5 keys"):
        compressor.decode_sum(messages, keys[:5], out)


@pytest.mark.parametrize("spec", ["identity", "natural"])
def test_decode_sum_refuses_an_out_that_overlaps_a_message_and_names_a_bad_one(
    spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Summing into a message's own bytes would read coordinates already overwritten: refused. A
    bad header or payload is reported with its position in the batch (``MessageError.index``)."""
    compressor = make(spec)
    compressor.crc = False
    d = 64
    keys = [RandomKey(0, 0, w, 0) for w in range(6)]
    buffers = [np.zeros(compressor.message_capacity(d) + 8 * d, dtype=np.uint8) for _ in keys]
    messages = [
        compressor.encode(np.full(d, 1.0 + w), key, out=buffer)
        for w, (key, buffer) in enumerate(zip(keys, buffers, strict=True))
    ]
    inside = buffers[4][8 : 8 + 8 * d].view(np.float64)
    with pytest.raises(ValueError, match="overlaps message 4"):
        compressor.decode_sum(messages, keys, inside)
    truncated = messages[:3] + [messages[3][:-1]] + messages[4:]
    with pytest.raises(MessageError, match="^message 3: ") as error:
        compressor.decode_sum(truncated, keys, np.empty(d))
    assert error.value.index == 3
    forged = bytearray(messages[2])
    start = payload_offset(0)
    if spec == "identity":
        forged[start + 8 * 5 : start + 8 * 6] = np.float64(np.nan).tobytes()
    else:
        forged[start + 5] = 255  # exponent code 255 is invalid
    stacked_calls = []
    monkeypatch.setattr(
        natural_module, "decode_rows_add", lambda *args: stacked_calls.append(1) or decode_rows_add(*args)
    )
    with pytest.raises(MessageError, match=r"^message 2: .*(non-finite|invalid code for coordinate 5)") as error:
        compressor.decode_sum(messages[:2] + [bytes(forged)] + messages[3:], keys, np.empty(d))
    assert error.value.index == 2
    assert len(stacked_calls) == (spec == "natural")  # natural's stacked kernel found it


@pytest.mark.parametrize("spec", ["identity", "identity(dtype=float32)", "natural", "sign"])
def test_decode_sum_names_a_payload_of_the_wrong_length(spec: str) -> None:
    """A header consistent with itself whose payload is a byte short for its d (found by fuzzing:
    identity raised without ``index``)."""
    compressor = make(spec)
    compressor.crc = False
    good = bytes(compressor.encode(np.ones(7), RandomKey(0)))
    parsed = unpack_message(good)
    short = pack_message(parsed.codec, 7, parsed.scalars, bytes(parsed.payload)[:-1], crc=False)
    with pytest.raises(MessageError, match="^message 1: ") as error:
        compressor.decode_sum([good, short, good], [RandomKey(0)] * 3, np.empty(7))
    assert error.value.index == 1


@pytest.mark.parametrize("spec", ["natural", "identity", "dither(s=4,p=2)"])
def test_decode_sum_of_empty_vectors_with_unlike_headers(spec: str) -> None:
    """d = 0 messages whose headers differ (one with the CRC-32): natural divided by their payload size
    (found by fuzzing: ZeroDivisionError)."""
    compressor, key = make(spec), RandomKey(0)
    compressor.crc = False
    plain = bytes(compressor.encode(np.zeros(0), key))
    compressor.crc = True
    checked = bytes(compressor.encode(np.zeros(0), key))
    assert compressor.decode_sum([plain, checked], [key, key], np.empty(0), 2.0).shape == (0,)


def test_a_vector_computed_in_the_payload_slot_encodes_without_a_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """float64 identity stores x verbatim: ``payload_vector(out, d)`` is that slot of ``out``, and
    ``encode`` of a vector computed there gives ``encode``'s bytes (checked for finiteness, not
    copied); codecs that transform x have no such slot."""
    compressor = make("identity")
    expected = bytes(compressor.encode(np.random.default_rng(1).standard_normal(77), RandomKey(2)))

    def no_copy(source: np.ndarray, target: np.ndarray) -> int:
        raise AssertionError("the payload slot was copied onto itself")

    monkeypatch.setattr(identity_module, "copy_finite", no_copy)
    d, key = 77, RandomKey(2)
    x = np.random.default_rng(1).standard_normal(d)
    out = np.zeros(compressor.message_capacity(d), dtype=np.uint8)
    slot = compressor.payload_vector(out, d)
    assert np.shares_memory(slot, out) and slot.shape == (d,)
    slot[:] = x
    assert bytes(compressor.encode(slot, key, out=out)) == expected
    with pytest.raises(ValueError, match="overlaps the message buffer"):
        compressor.encode(out[8 : 8 + 8 * d].view(np.float64), key, out=out)
    slot[40] = np.nan
    with pytest.raises(ValueError, match=r"x\[40\] = nan"):
        compressor.encode(slot, key, out=out)
    for spec in ("identity(dtype=float32)", "natural", "qsgd(s=4)"):
        other = make(spec)
        capacity = other.message_capacity(d)
        assert other.payload_vector(None if capacity is None else np.empty(capacity, dtype=np.uint8), d) is None


def test_caller_buffers_are_checked() -> None:
    compressor = make("natural")
    x = np.ones(100)
    with pytest.raises(ValueError, match="hold 133 bytes"):
        compressor.encode(x, RandomKey(0), out=np.empty(100, dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        compressor.encode(x, RandomKey(0), out=np.empty(200, dtype=np.float64))
    message = compressor.encode(x, RandomKey(0))
    with pytest.raises(ValueError, match="float64 vector of length 100"):
        compressor.decode(message, 100, out=np.empty(99))
    with pytest.raises(MessageError, match="d=100"):
        compressor.decode_add(message, np.zeros(99))


@pytest.mark.parametrize("spec", ["natural", "identity", "dither(s=3,p=2)", "qsgd(s=4)", "randk(k=0.5)"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_encode_many_names_the_bad_row_and_value(spec: str, dtype: type) -> None:
    rows = np.ones((3, 70), dtype=dtype)
    rows[2, 41] = np.nan
    with pytest.raises(ValueError, match=r"row 2: .*x\[41\] = nan"):
        make(spec).encode_many(rows, [RandomKey(0, 0, w) for w in range(3)])


def test_encode_many_into_rows_checks_the_buffer() -> None:
    """``encode_many(out=)`` takes a writable C-contiguous ``(m, message_capacity(d))`` uint8 array, and only
    for a codec of fixed message size; anything else is a ValueError that says what it needs."""
    rows, keys = np.ones((3, 70)), [RandomKey(0, 0, w) for w in range(3)]
    natural = make("natural")
    capacity = natural.message_capacity(70)
    frozen = np.zeros((3, capacity), dtype=np.uint8)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match=rf"shape \(3, {capacity}\).*got \(2, {capacity}\)"):
        natural.encode_many(rows, keys, out=np.zeros((2, capacity), dtype=np.uint8))
    for out in (frozen, np.zeros((3, capacity), dtype=np.int8), np.zeros((capacity, 3), dtype=np.uint8).T):
        with pytest.raises(ValueError, match="writable C-contiguous uint8"):
            natural.encode_many(rows, keys, out=out)
    with pytest.raises(ValueError, match="fixed message size"):
        make("qsgd(s=4)").encode_many(rows, keys, out=np.zeros((3, 1000), dtype=np.uint8))


def test_message_checksums_scope_and_restore() -> None:
    """``message_checksums`` sets the CRC-32 for every compressor without its own setting, and puts
    the previous setting back on the way out, after an error too."""
    compressor, x = make("natural"), np.ones(10)
    assert unpack_message(compressor.encode(x, RandomKey(0))).nbytes == overhead_bytes(0) + 12
    with pytest.raises(RuntimeError), message_checksums(False):
        assert unpack_message(compressor.encode(x, RandomKey(0))).nbytes == overhead_bytes(0, crc=False) + 12
        raise RuntimeError("leaves the block")
    assert Compressor.crc is True
    assert unpack_message(compressor.encode(x, RandomKey(0))).nbytes == overhead_bytes(0) + 12


@pytest.mark.parametrize("spec", ["natural", "identity", "dither(s=3,p=2)", "terngrad"])
@pytest.mark.parametrize("crc", [False, True])
def test_alike_messages_unpack_as_one_by_one(spec: str, crc: bool) -> None:
    """``unpack_uniform`` (headers compared in one pass) gives exactly ``unpack_message`` of each alike
    message, scalars and payload included, and ``None`` as soon as one message is not alike: another
    length, a changed header byte, a wrong checksum, another codec or d; ``decode_sum`` then names it."""
    compressor = make(spec)
    compressor.crc = crc
    d, n = 70, 9
    keys = [RandomKey(2, 1, w, 0) for w in range(n)]
    rows = np.random.default_rng(4).standard_normal((n, d))
    messages = [bytes(compressor.encode(row, key)) for row, key in zip(rows, keys, strict=True)]
    alike = unpack_uniform(messages, compressor.codec_id, d)
    assert alike == [unpack_message(m, compressor.codec_id, d) for m in messages]
    assert unpack_uniform(messages, compressor.codec_id + 1, d) is None
    assert unpack_uniform(messages, compressor.codec_id, d + 1) is None
    assert unpack_uniform([*messages[:4], messages[4] + b"\0", *messages[5:]], compressor.codec_id, d) is None
    changed = bytearray(messages[6])
    changed[4] ^= FLAG_KEY  # a flag that the first message does not have
    assert unpack_uniform([*messages[:6], bytes(changed), *messages[7:]], compressor.codec_id, d) is None
    if crc:
        corrupt = bytearray(messages[7])
        corrupt[-5] ^= 1  # the payload's last byte: the checksum no longer matches
        batch = [*messages[:7], bytes(corrupt), *messages[8:]]
        assert unpack_uniform(batch, compressor.codec_id, d) is None
        with pytest.raises(MessageError, match="message 7: CRC32 mismatch") as error:
            compressor.decode_sum(batch, keys, np.empty(d))
        assert error.value.index == 7
