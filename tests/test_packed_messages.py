"""The packed path: messages of data-dependent lengths back to back (``wire.PackedMessages``, QSGD's
``encode_many``) are framed, validated, counted and summed exactly as the same messages one by one, and every
unusual case falls back to the one-by-one path that names the bad message."""

from __future__ import annotations

import numpy as np
import pytest

from mpicomp.comm.accounting import split_each
from mpicomp.comm.mpi import joined, with_received
from mpicomp.compressors import Compressor, MessageError, PackedMessages, make
from mpicomp.rng import RandomKey
from mpicomp.wire import PackedBlocks, unpack_message, unpack_packed
from mpicomp.wire.message import FINGERPRINT_AT, FLAG_KEY, HEADER_BYTES
from mpicomp.wire.packed import packed_splits
from tests.test_message_rows import counts

D = 300
SPECS = ["qsgd(s=16)", "qsgd(s=1)", "qsgd(s=4096,code=gamma)"]


def vectors(n: int) -> np.ndarray:
    """n Gaussian vectors, an all-zero one (an empty payload) and a sparse one among them."""
    rows = np.random.default_rng(3).standard_normal((n, D))
    rows[2] = 0.0
    rows[min(8, n - 1), 10:] = 0.0
    return rows


def encoded(compressor: Compressor, batches: tuple[int, ...] = (5, 1, 7)) -> tuple[PackedMessages, list[RandomKey]]:
    """Messages of ``sum(batches)`` workers (:func:`vectors`), ``encode_many`` batch by batch; their keys."""
    n = sum(batches)
    rows = vectors(n)
    keys = [RandomKey(5, 2, w, 0) for w in range(n)]
    parts, start = [], 0
    for m in batches:
        batch = compressor.encode_many(rows[start : start + m], keys[start : start + m])
        assert isinstance(batch, PackedMessages)
        parts.append(batch)
        start += m
    return PackedMessages.joined(parts), keys


def exact(messages: PackedMessages) -> PackedMessages:
    """The messages copied into one buffer that ends where the last one does (as a gather's inbox): the last
    payload is within 8 bytes of its end, so the decoder reads it from a padded copy."""
    data = np.frombuffer(b"".join(bytes(m) for m in messages), dtype=np.uint8).copy()
    return PackedMessages([(data, np.concatenate(([0], np.cumsum(messages.lengths()))))])


def summed(compressor: Compressor, messages, keys) -> np.ndarray:
    """``decode_sum`` into a fresh vector, as int bit patterns (signed zeros compared)."""
    return compressor.decode_sum(messages, keys, np.full(D, np.nan), divisor=3.0).view(np.int64)


def test_packed_messages_are_a_sequence_of_views() -> None:
    """Indexing, negative indices, slices (packed again, across parts), iteration and lengths give the messages'
    bytes; the views are read-only; the buffers are not copied; bad parts are refused."""
    messages, _ = encoded(make("qsgd(s=16)"))
    listed = [bytes(message) for message in messages]
    assert len(messages) == len(listed) == 13 and len(set(map(len, listed))) > 2
    assert [bytes(messages[i]) for i in range(-13, 13)] == listed + listed
    for part in (slice(3, 9), slice(-2, None), slice(5, 6), slice(7, 7), slice(0, 13)):
        assert isinstance(messages[part], PackedMessages)
        assert [bytes(m) for m in messages[part]] == listed[part]
    assert messages.lengths().tolist() == [len(m) for m in listed]
    assert messages[0].readonly and not messages.parts[0][0].flags.writeable
    assert messages[:5].contiguous() is not None and messages.contiguous() is None
    assert bytes(joined(messages[6:])) == b"".join(listed[6:])
    assert bytes(joined(messages)) == b"".join(listed)
    assert len(messages[9:3]) == len(messages[13:]) == 0 and list(messages[9:3]) == []
    with pytest.raises(IndexError):
        messages[13]
    with pytest.raises(ValueError, match="step 1"):
        messages[::2]
    for offsets in ([0, 11], [0, 5, 3]):
        with pytest.raises(ValueError, match="not nondecreasing within a buffer of 10 bytes"):
            PackedMessages([(np.zeros(10, dtype=np.uint8), np.array(offsets))])
    with pytest.raises(ValueError, match="1-D uint8"):
        PackedMessages([(np.zeros((2, 5), dtype=np.uint8), np.array([0, 5]))])
    with pytest.raises(ValueError, match="contiguous"):
        PackedMessages([(np.zeros(20, dtype=np.uint8)[::2], np.array([0, 5]))])


def test_no_rows_and_no_coordinates_encode_as_one_by_one() -> None:
    """``encode_many`` of no rows gives no messages; of rows of d = 0, the messages of ``encode`` (empty payloads)."""
    compressor = make("qsgd(s=16)")
    assert len(compressor.encode_many(np.zeros((0, D)), [])) == 0
    keys = [RandomKey(1, 0, w) for w in range(3)]
    empty = compressor.encode_many(np.zeros((3, 0)), keys)
    assert [bytes(m) for m in empty] == [bytes(compressor.encode(np.zeros(0), key)) for key in keys]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("crc", [False, True])
def test_packed_path_is_the_one_by_one_path(spec: str, crc: bool) -> None:
    """``encode_many`` writes the bytes of ``encode`` of each row; the packed messages are the messages of
    ``unpack_message`` of each, give the bits of ``decode_sum`` of the list and of the ``decode_add`` loop (in the
    encoder's buffer and in one that ends with the last message), and count the same bytes."""
    compressor = make(spec)
    compressor.crc = crc
    messages, keys = encoded(compressor)
    listed = [bytes(compressor.encode(row, key)) for row, key in zip(vectors(13), keys, strict=True)]
    assert [bytes(m) for m in messages] == listed
    blocks = unpack_packed(messages, compressor.codec_id, D)
    assert isinstance(blocks, PackedBlocks)
    assert list(blocks) == [unpack_message(m, compressor.codec_id, D) for m in listed]
    reference = np.zeros(D)
    for message, key in zip(listed, keys, strict=True):
        compressor.decode_add(message, reference, key)
    reference /= 3.0
    for given in (messages, exact(messages), listed):
        assert np.array_equal(summed(compressor, given, keys), reference.view(np.int64))
    payloads, headers = split_each(messages)
    assert (payloads.tolist(), headers.tolist()) == tuple(a.tolist() for a in split_each(listed))
    assert counts(messages) == counts(listed)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("scale", [1.0, -0.37, 0.0, -0.0, np.inf])
@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply")  # inf * 0
def test_decode_add_rows_moves_each_row_as_decode_add_does(spec: str, scale: float) -> None:
    """``decode_add_rows`` of packed messages (by one kernel call a part) gives the bits of ``decode_add`` of each
    message into its own row, with and without a scale (signed zeros compared, a row of -0.0 among the targets)."""
    compressor = make(spec)
    messages, keys = encoded(compressor)
    start = np.random.default_rng(4).standard_normal((len(keys), D))
    start[0] = start[2] = -0.0
    expected = start.copy()
    for message, key, row in zip(messages, keys, expected, strict=True):
        compressor.decode_add(message, row, key, scale)
    calls: list[int] = []
    packed_each = compressor._add_payload_packed_each
    compressor._add_payload_packed_each = lambda *args, **kw: calls.append(len(args[1])) or packed_each(*args, **kw)  # type: ignore[method-assign]
    for given in (messages, exact(messages), [bytes(m) for m in messages]):
        targets = start.copy()
        assert compressor.decode_add_rows(given, keys, targets, scale) is targets
        assert np.array_equal(targets.view(np.int64), expected.view(np.int64))
    assert calls == [5, 1, 7, 13]


def writable(messages: PackedMessages) -> tuple[np.ndarray, np.ndarray]:
    """A copy of the messages in one buffer, to corrupt, and their offsets."""
    packed = exact(messages)
    data, offsets = packed.parts[0]
    return data.copy(), offsets


@pytest.mark.parametrize(
    ("corrupt", "error"),
    [
        ("norm", "message 9: invalid qsgd norm nan"),
        ("stream", "message 9: qsgd: malformed level stream|message 9: qsgd level stream"),
        ("padding", "message 9: qsgd level stream: nonzero padding bits"),
        ("zero norm", "message 9: qsgd: zero norm but a payload"),
    ],
)
def test_a_bad_payload_among_packed_messages_is_named(corrupt: str, error: str) -> None:
    """A payload that the header checks let through (a NaN norm, a stream cut short, nonzero padding bits, a
    payload with a zero norm) names its message, in the sum and in ``decode_add_rows``, as one by one."""
    compressor = make("qsgd(s=16)")
    compressor.crc = False
    messages, keys = encoded(compressor)
    data, offsets = writable(messages)
    start, end = int(offsets[9]), int(offsets[10])
    body = start + HEADER_BYTES + 8
    if corrupt == "norm":
        data[start + HEADER_BYTES : body] = np.frombuffer(np.float64(np.nan).tobytes(), np.uint8)
    elif corrupt == "stream":
        data[body:end] = 0  # Elias codes of zeros only: no codeword ends before the payload does
    elif corrupt == "padding":
        data[end - 1] |= 0x80  # message 9's stream ends within its last byte: its top bit is padding
    else:
        data[start + HEADER_BYTES : body] = 0
    bad = PackedMessages([(data, offsets)])
    for given in (bad, [bytes(m) for m in bad]):
        with pytest.raises(MessageError, match=error) as raised:
            summed(compressor, given, keys)
        assert raised.value.index == 9
        with pytest.raises(MessageError, match=error):
            compressor.decode_add_rows(given, keys, np.zeros((13, D)), 0.5)


@pytest.mark.parametrize("crc", [False, True])
def test_unusual_packed_messages_fall_back_and_name_the_message(crc: bool) -> None:
    """A header byte changed in one message, a length its header does not announce, a wrong codec or d: not
    unpacked as arrays; the one-by-one path's error names the message; the byte count as one by one."""
    compressor = make("qsgd(s=16)")
    compressor.crc = crc
    messages, keys = encoded(compressor)
    assert unpack_packed(messages, compressor.codec_id + 1, D) is None
    assert unpack_packed(messages, compressor.codec_id, D + 1) is None
    data, offsets = writable(messages)
    data[int(offsets[9]) + 8] ^= 1  # message 9's d
    bad = PackedMessages([(data, offsets)])
    assert unpack_packed(bad, compressor.codec_id, D) is None
    with pytest.raises(MessageError, match="message 9: dimension mismatch") as raised:
        summed(compressor, bad, keys)
    assert raised.value.index == 9
    data, offsets = writable(messages)
    shifted = offsets.copy()
    shifted[10] -= 1  # message 9 a byte short, message 10 a byte long
    bad = PackedMessages([(data, shifted)])
    assert unpack_packed(bad, compressor.codec_id, D) is None
    with pytest.raises(MessageError, match="message 9: truncated message"):
        summed(compressor, bad, keys)
    with pytest.raises(MessageError, match="truncated message"):
        counts(bad)


@pytest.mark.parametrize("norm", [-1.0, np.inf, -0.0])
def test_a_packed_norm_is_checked_as_one_by_one(norm: float) -> None:
    """A negative or infinite norm names its message; -0.0, a zero norm, adds nothing (its payload is empty)."""
    compressor = make("qsgd(s=16)")
    compressor.crc = False
    messages, keys = encoded(compressor)
    data, offsets = writable(messages)
    start = int(offsets[2]) + HEADER_BYTES  # message 2: the zero vector, an empty payload
    data[start : start + 8] = np.frombuffer(np.float64(norm).tobytes(), np.uint8)
    bad = PackedMessages([(data, offsets)])
    listed = [bytes(m) for m in bad]
    if norm == 0.0:
        assert np.array_equal(summed(compressor, bad, keys), summed(compressor, listed, keys))
        return
    for given in (bad, listed):
        with pytest.raises(MessageError, match=f"message 2: invalid qsgd norm {norm!r}"):
            summed(compressor, given, keys)


@pytest.mark.parametrize("change", ["key flag", "crc flag", "reserved field"])
def test_a_header_flag_unlike_the_others_falls_back(change: str) -> None:
    """One message with a key fingerprint flag, without its CRC-32 flag (and trailer), or with a nonzero
    fingerprint field but no flag: not read as arrays by the check nor by the byte count; the one-by-one path names
    it (or, for the message without a checksum, which is valid alone, sums it as one by one)."""
    compressor = make("qsgd(s=16)")
    messages, keys = encoded(compressor)
    listed = [bytes(m) for m in messages]
    if change == "crc flag":
        compressor.crc = False
        listed[9] = bytes(compressor.encode(vectors(13)[9], keys[9]))
        compressor.crc = True
    else:
        message = bytearray(listed[9])
        if change == "key flag":
            message[4] |= FLAG_KEY
        else:
            message[FINGERPRINT_AT] = 5
        listed[9] = bytes(message)
    bad = PackedMessages(
        [(np.frombuffer(b"".join(listed), np.uint8).copy(), np.concatenate(([0], np.cumsum([len(m) for m in listed]))))]
    )
    assert unpack_packed(bad, compressor.codec_id, D) is None
    if change == "crc flag":
        assert np.array_equal(summed(compressor, bad, keys), summed(compressor, listed, keys))
        assert counts(bad) == counts(listed)
        return
    assert (packed_splits(bad) is None) == (change == "reserved field")  # the byte count refuses only that one
    with pytest.raises(MessageError, match="message 9: ") as raised:
        summed(compressor, bad, keys)
    assert raised.value.index == 9


def test_a_wrong_checksum_among_packed_messages_is_named() -> None:
    compressor = make("qsgd(s=16)")
    messages, keys = encoded(compressor)
    data, offsets = writable(messages)
    data[int(offsets[7]) + HEADER_BYTES + 9] ^= 1  # a payload byte of message 7
    bad = PackedMessages([(data, offsets)])
    assert unpack_packed(bad, compressor.codec_id, D) is None
    with pytest.raises(MessageError, match="message 7: CRC32 mismatch") as raised:
        summed(compressor, bad, keys)
    assert raised.value.index == 7


def test_encode_many_names_a_row_holding_nan_or_inf() -> None:
    rows = np.ones((3, D))
    rows[1, 7] = np.inf
    with pytest.raises(ValueError, match="row 1: .*(NaN|Inf|non-finite)"):
        make("qsgd(s=16)").encode_many(rows, [RandomKey(0, 0, w) for w in range(3)])


def test_the_gather_keeps_packed_messages_packed() -> None:
    """The master's gather gives packed messages (its own parts, then the inbox as one) when its own are; a rank's
    packed messages go to MPI as their one buffer, uncopied."""
    compressor = make("qsgd(s=16)")
    messages, keys = encoded(compressor, (6,))
    others, _ = encoded(compressor, (3, 4))
    inbox = np.frombuffer(b"".join(bytes(m) for m in others), dtype=np.uint8)
    together = with_received(messages, inbox, others.lengths())
    assert isinstance(together, PackedMessages)
    assert [bytes(m) for m in together] == [bytes(m) for m in messages] + [bytes(m) for m in others]
    data, offsets = messages.parts[0]
    sent = joined(messages)
    assert np.shares_memory(sent, data) and bytes(sent) == b"".join(bytes(m) for m in messages)
    listed = [bytes(m) for m in together]
    all_keys = keys + [RandomKey(5, 2, w, 0) for w in range(7)]
    assert np.array_equal(summed(compressor, together, all_keys), summed(compressor, listed, all_keys))
