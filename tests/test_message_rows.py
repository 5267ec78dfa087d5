"""The block path: alike messages held as rows of 2-D blocks (``wire.MessageRows``) are validated,
counted and summed exactly as the same messages one by one, and every unusual case falls back to
the one-by-one path that names the bad message."""

from __future__ import annotations

import numpy as np
import pytest

from mpicomp.comm import ByteCounter, LocalTransport
from mpicomp.comm.accounting import split_each
from mpicomp.comm.mpi import joined, with_received
from mpicomp.compressors import Compressor, MessageError, make, sparse
from mpicomp.rng import RandomKey, RoundKeys, key_fingerprints
from mpicomp.wire import MessageBlocks, MessageRows, unpack_message, unpack_uniform
from mpicomp.wire.message import FLAG_KEY, HEADER_BYTES

D = 40
SPECS = [
    "natural",
    "identity",
    "dither(s=3,p=2)",
    "natdither(s=3,p=inf)",
    "block(size=16,s=2)",
    "terngrad",
    "topk(k=0.2)",
    "topk(k=0.3,dtype=float32)",
    "randk(k=0.2,send_indices=True)",
    "randk(k=0.2)",
    "laq(bits=3)",
    "laq(bits=12)",
]


def encoded(compressor: Compressor, batches: tuple[int, ...] = (5, 1, 7)) -> tuple[MessageRows, list[RandomKey]]:
    """Messages of ``sum(batches)`` workers, ``encode_many`` batch by batch, one all-zero vector among
    them (signed zeros in the sum); their keys."""
    n = sum(batches)
    rows = np.random.default_rng(3).standard_normal((n, D))
    rows[2] = 0.0
    keys = [RandomKey(5, 2, w, 0) for w in range(n)]
    parts, start = [], 0
    for m in batches:
        batch = compressor.encode_many(rows[start : start + m], keys[start : start + m])
        assert isinstance(batch, MessageRows)
        parts.append(batch)
        start += m
    return MessageRows.joined(parts), keys


def writable(rows: MessageRows) -> list[np.ndarray]:
    """Copies of the blocks, to corrupt."""
    return [block.copy() for block in rows.blocks]


def summed(compressor: Compressor, messages, keys) -> np.ndarray:
    """``decode_sum`` into a fresh vector, as int bit patterns (signed zeros compared)."""
    return compressor.decode_sum(messages, keys, np.full(D, np.nan), divisor=3.0).view(np.int64)


def counts(uploads) -> dict:
    counter = ByteCounter(len(uploads) + 2, complete=True)
    counter.count_uploads(range(1, 1 + len(uploads)), uploads)
    return counter.end_round().to_dict()


def test_message_rows_are_a_sequence_of_views() -> None:
    """Indexing, negative indices, slices (rows again, across blocks), iteration and lengths give the
    messages' bytes; the views are read-only; the blocks are not copied."""
    compressor = make("natural")
    rows, _ = encoded(compressor)
    listed = [bytes(message) for message in rows]
    assert len(rows) == len(listed) == 13
    assert [bytes(rows[i]) for i in range(-13, 13)] == listed + listed
    assert isinstance(rows[3:9], MessageRows)
    assert [bytes(m) for m in rows[3:9]] == listed[3:9]
    assert [bytes(m) for m in rows[-2:]] == listed[-2:]
    assert rows.lengths().tolist() == [len(m) for m in listed]
    assert rows[0].readonly and not rows.blocks[0].flags.writeable
    with pytest.raises(IndexError):
        rows[13]
    mixed = MessageRows([*rows.blocks, np.zeros((3, 0), dtype=np.uint8), np.zeros((0, 9), dtype=np.uint8)])
    assert [bytes(m) for m in mixed] == [*listed, b"", b"", b""]
    assert mixed.lengths().tolist()[-3:] == [0, 0, 0]
    with pytest.raises(ValueError, match="C-contiguous"):
        MessageRows([np.zeros((4, 30), dtype=np.uint8)[:, ::2]])


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("crc", [False, True])
def test_block_path_is_the_one_by_one_path(spec: str, crc: bool) -> None:
    """Alike rows: the same messages as ``unpack_message`` of each (with their key fingerprints, checked against
    the keys', for a codec with shared randomness), the same bits of ``decode_sum`` as the list path and the
    ``decode_add`` loop, the same byte counts."""
    compressor = make(spec)
    compressor.crc = crc
    rows, keys = encoded(compressor)
    listed = [bytes(message) for message in rows]
    fingerprints = key_fingerprints(keys) if compressor.uses_shared_key else None
    blocks = unpack_uniform(rows, compressor.codec_id, D, fingerprints)
    assert isinstance(blocks, MessageBlocks)
    assert (
        list(blocks)
        == [unpack_message(m, compressor.codec_id, D) for m in listed]
        == unpack_uniform(listed, compressor.codec_id, D, fingerprints)
    )
    if fingerprints is not None:  # keyed messages are not alike without their keys' fingerprints, nor with others
        others = key_fingerprints([RandomKey(5, 3, w, 0) for w in range(len(keys))])
        assert unpack_uniform(rows, compressor.codec_id, D) is unpack_uniform(listed, compressor.codec_id, D) is None
        assert unpack_uniform(rows, compressor.codec_id, D, others) is None
        assert unpack_uniform(listed, compressor.codec_id, D, others) is None
    assert [blocks[i] for i in (0, 6, -1)] == [unpack_message(listed[i], compressor.codec_id, D) for i in (0, 6, -1)]
    reference = np.zeros(D)
    for message, key in zip(listed, keys, strict=True):
        compressor.decode_add(message, reference, key)
    reference /= 3.0
    assert np.array_equal(summed(compressor, rows, keys), reference.view(np.int64))
    assert np.array_equal(summed(compressor, rows, keys), summed(compressor, listed, keys))
    payloads, headers = split_each(rows)
    assert (payloads.tolist(), headers.tolist()) == tuple(a.tolist() for a in split_each(listed))
    assert counts(rows) == counts(listed)


@pytest.mark.parametrize("crc", [False, True])
def test_unusual_rows_fall_back_and_name_the_message(crc: bool) -> None:
    """A changed header byte in one row, a wrong codec or d: the one-by-one path's error naming the
    message; byte counts as one by one (a header that is valid but not alike is split on its own)."""
    compressor = make("natural")
    compressor.crc = crc
    rows, keys = encoded(compressor)
    blocks = writable(rows)
    blocks[2][3, 4] ^= FLAG_KEY  # message 9 (blocks of 5, 1, 7): a key fingerprint flag
    bad = MessageRows(blocks)
    assert unpack_uniform(bad, compressor.codec_id, D) is None
    for messages in (bad, [bytes(m) for m in bad]):
        with pytest.raises(MessageError, match="message 9: .*(key fingerprint|CRC32 mismatch)") as error:
            summed(compressor, messages, keys)
        assert error.value.index == 9
    assert counts(bad) == counts([bytes(m) for m in bad])
    assert unpack_uniform(rows, compressor.codec_id + 1, D) is None
    assert unpack_uniform(rows, compressor.codec_id, D + 1) is None


def test_a_wrong_checksum_among_rows_is_named() -> None:
    """With the CRC-32 flag every row's checksum is checked: a corrupt payload byte in one row names it."""
    compressor = make("natural")
    rows, keys = encoded(compressor)
    blocks = writable(rows)
    blocks[2][1, -5] ^= 1  # message 7's last payload byte
    bad = MessageRows(blocks)
    assert unpack_uniform(bad, compressor.codec_id, D) is None
    with pytest.raises(MessageError, match="message 7: CRC32 mismatch") as error:
        summed(compressor, bad, keys)
    assert error.value.index == 7


def test_an_invalid_payload_in_a_block_is_named() -> None:
    """A payload that the header checks let through (exponent code 255) names its message, as one by one."""
    compressor = make("natural")
    compressor.crc = False
    rows, keys = encoded(compressor)
    blocks = writable(rows)
    blocks[2][2, 16 + 3] = 255  # message 8, coordinate 3
    bad = MessageRows(blocks)
    for messages in (bad, [bytes(m) for m in bad]):
        with pytest.raises(MessageError, match="message 8: natural: invalid code for coordinate 3") as error:
            summed(compressor, messages, keys)
        assert error.value.index == 8


@pytest.mark.parametrize(
    ("corrupt", "error"),
    [
        ("value", "payload holds non-finite values"),
        ("index", "indices are not strictly ascending within"),
        ("order", "indices are not strictly ascending within"),
    ],
)
def test_a_bad_sparse_payload_in_a_block_is_named(corrupt: str, error: str) -> None:
    """Top-k's block sum checks every row's indices (ascending, below d) and values (finite) as one by one
    does, and names the message of a bad one."""
    compressor = make("topk(k=0.2)")
    compressor.crc = False
    rows, keys = encoded(compressor)
    blocks = writable(rows)
    k, split = compressor.count(D), compressor.index_nbytes(D)  # 8 indices of 6 bits: 6 bytes
    row = blocks[2][2, 16:]  # message 8's payload
    if corrupt == "value":
        row[split + 8 : split + 16] = 0xFF  # its second value: a NaN
    elif corrupt == "index":
        row[split - 1] |= 0xFC  # its last index: 63 >= d
    else:
        row[0] = (row[0] & 0xC0) | 63  # its first index above the second
    bad = MessageRows(blocks)
    assert k == 8 and isinstance(unpack_uniform(bad, compressor.codec_id, D), MessageBlocks)
    for messages in (bad, [bytes(m) for m in bad]):
        with pytest.raises(MessageError, match=f"message 8: topk: {error}") as raised:
            summed(compressor, messages, keys)
        assert raised.value.index == 8


@pytest.mark.parametrize(
    ("spec", "corrupt", "error"),
    [
        ("dither(s=3,p=2)", "norm", "invalid norm nan in message header"),
        ("dither(s=3,p=2)", "padding", "dither: nonzero padding bits after the last code"),
        ("natdither(s=2,p=2)", "levels", "natdither: invalid code for coordinate 0"),
        ("block(size=16,s=2)", "head", "block: invalid norm -1.0 of block 0"),
    ],
)
def test_a_bad_level_payload_in_a_block_is_named(spec: str, corrupt: str, error: str) -> None:
    """The dithering codecs' block sum checks every row's norms (finite, >= 0), codes and padding as one by
    one does, and names the message of a bad one, in rows and in a list."""
    compressor = make(spec)
    compressor.crc = False
    d = 41  # 3 bits a code: 123 bits, 5 of padding
    keys = [RandomKey(5, 2, w, 0) for w in range(6)]
    block = compressor.encode_many(np.random.default_rng(3).standard_normal((6, d)), keys).blocks[0].copy()
    start = block.shape[1] - compressor.payload_bytes(d)
    message = block[4]
    if corrupt == "norm":
        message[start - 8 : start] = np.frombuffer(np.float64(np.nan).tobytes(), np.uint8)
    elif corrupt == "head":
        message[start : start + 8] = np.frombuffer(np.float64(-1.0).tobytes(), np.uint8)
    elif corrupt == "padding":
        message[-1] |= 0x80
    else:
        message[start : start + 10] = 0xFF  # both level planes of coordinates 0-37: level 3 > s = 2
    for messages in (MessageRows([block]), [bytes(m) for m in block]):
        with pytest.raises(MessageError, match=f"message 4: {error}") as raised:
            compressor.decode_sum(messages, keys, np.zeros(d), divisor=6.0)
        assert raised.value.index == 4


@pytest.mark.parametrize("spec", ["dither(s=3,p=inf)", "natdither(s=3,p=2)", "block(size=50,s=2)"])
@pytest.mark.parametrize("d", [1, 64, 130, 2000])
def test_level_rows_encode_and_sum_as_one_by_one(spec: str, d: int) -> None:
    """``encode_many`` of the dithering codecs (one kernel call for the norms, one for the codes) writes the
    bytes of ``encode`` row by row, and ``decode_sum`` of them gives the bits of the ``decode_add`` loop, for
    rows whose norms take every path: zero, sparse, tiny and huge (rescaled sums of squares)."""
    compressor = make(spec)
    rows = np.random.default_rng(d).standard_normal((6, d))
    rows[1] = 0.0
    rows[2, ::3] = 0.0
    rows[3] *= 1e-300
    rows[4] *= 1e300
    keys = [RandomKey(5, 2, w, 0) for w in range(6)]
    listed = [bytes(compressor.encode(row, key)) for row, key in zip(rows, keys, strict=True)]
    batch = compressor.encode_many(rows, keys)
    assert [bytes(m) for m in batch] == listed
    reference = np.zeros(d)
    for message, key in zip(listed, keys, strict=True):
        compressor.decode_add(message, reference, key)
    reference /= 6.0
    for messages in (batch, listed):
        total = compressor.decode_sum(messages, keys, np.full(d, np.nan), divisor=6.0)
        assert np.array_equal(total.view(np.int64), reference.view(np.int64))


@pytest.mark.parametrize(
    "spec", ["topk(k=3)", "topk(k=0.5)", "topk(k=1)", "topk(k=39)", "topk(k=40)", "topk(k=0.2,dtype=float32)"]
)
@pytest.mark.parametrize("d", [40, 1000, 2048, 20000])
def test_top_k_rows_encode_as_one_by_one(spec: str, d: int) -> None:
    """Top-K's ``encode_many`` (one kernel call for short float64 rows with float64 values; k = d, float32 values
    and float32 rows row by row; from d = 2,048 above a sampled bound where k <= d / 8) writes the bytes of
    ``encode`` row by row: ties at the threshold (a row of zeros, a row of +-1, repeated magnitudes), signed zeros,
    tiny and huge values, index fields of 6 to 15 bits."""
    compressor = make(spec)
    rng = np.random.default_rng(d)
    rows = rng.standard_normal((7, d))
    rows[1] = 0.0
    rows[2] = np.where(rng.random(d) < 0.5, -1.0, 1.0)
    rows[3] = np.round(rows[3])
    rows[4, ::2] = -0.0
    rows[5] *= 1e-300
    rows[6] *= 1e300
    keys = [RandomKey(5, 2, w, 0) for w in range(7)]
    if "float32" in spec:
        rows = rows[:6]  # 1e300 exceeds float32 values (a ValueError either way)
    for given in (rows, rows[:5].astype(np.float32)):
        listed = [bytes(compressor.encode(row, key)) for row, key in zip(given, keys, strict=False)]
        assert [bytes(m) for m in compressor.encode_many(given, keys[: len(given)])] == listed


@pytest.mark.parametrize("spec", ["randk(k=3)", "randk(k=3,send_indices=True)", "randk(k=0.5)", "randk(k=2000)"])
@pytest.mark.parametrize("entry_bytes", [sparse.ENTRY_BYTES, 1])
def test_rand_k_rows_draw_encode_sum_and_add_as_one_by_one(spec: str, entry_bytes: int, monkeypatch) -> None:
    """Rand-K's rows (d = 5,000: k = 3 draws with the hash set, k = 2,500 and 2,000 with the bitmap), keys from a
    round's :class:`RoundKeys` and built one by one: ``encode_many`` writes the bytes of ``encode`` row by row (the
    key fingerprints framed per row), and ``decode_sum`` and ``decode_add_rows`` of the block, which draw every row's
    indices from its key in one kernel call (a part of the block at a time: one row a part with ``entry_bytes`` 1),
    give the bits of ``decode_add`` message by message."""
    monkeypatch.setattr(sparse, "ENTRY_BYTES", entry_bytes)
    compressor, d = make(spec), 5000
    rows = np.random.default_rng(9).standard_normal((6, d))
    rows[3] = -0.0
    for keys in (RoundKeys(5, 2, range(6), 0), [RandomKey(5, 2, w, 0) for w in range(6)]):
        batch = compressor.encode_many(rows, keys)
        assert [bytes(m) for m in batch] == [
            bytes(compressor.encode(row, key)) for row, key in zip(rows, keys, strict=True)
        ]
        reference = np.zeros(d)
        for message, key in zip(batch, keys, strict=True):
            compressor.decode_add(message, reference, key)
        assert np.array_equal(compressor.decode_sum(batch, keys, np.full(d, np.nan)), reference)
        start = np.random.default_rng(1).standard_normal((6, d))
        start[0] = -0.0
        expected = start.copy()
        for message, key, row in zip(batch, keys, expected, strict=True):
            compressor.decode_add(message, row, key, 0.5)
        moved = compressor.decode_add_rows(batch, keys, start, 0.5)
        assert np.array_equal(moved.view(np.int64), expected.view(np.int64))


@pytest.mark.parametrize("spec", ["randk(k=3)", "randk(k=0.5)"])
def test_rand_k_rows_of_another_key_are_named(spec: str) -> None:
    """A block whose fifth message was encoded with another key (its fingerprint differs from the decoder's) is
    decoded one by one, which names it; a message whose fingerprint field was changed likewise."""
    compressor, d = make(spec), 5000
    rows = np.random.default_rng(9).standard_normal((6, d))
    keys = RoundKeys(5, 2, range(6), 0)
    mixed = compressor.encode_many(rows, [*keys[:4], RandomKey(5, 3, 4, 0), keys[5]])
    with pytest.raises(MessageError, match="message 4: randk: message was encoded with another RandomKey"):
        compressor.decode_sum(mixed, keys, np.empty(d))
    with pytest.raises(MessageError, match="message 4: randk: message was encoded with another RandomKey"):
        compressor.decode_add_rows([bytes(m) for m in mixed], keys, np.zeros((6, d)))
    compressor.crc = False  # else the CRC-32 catches the change first
    block = compressor.encode_many(rows, keys).blocks[0].copy()
    block[1, 6] ^= 1  # the fingerprint's lowest bit
    with pytest.raises(MessageError, match="message 1: randk: message was encoded with another RandomKey"):
        compressor.decode_add_rows(MessageRows([block]), keys, np.zeros((6, d)))


@pytest.mark.filterwarnings("ignore:overflow encountered in multiply")  # encode's own scaling, then its check
def test_rand_k_rows_refuse_values_beyond_float64_as_encode_does() -> None:
    rows = np.ones((3, 16))
    rows[1] = 1e308  # times d/k = 8: beyond the float64 range
    keys = [RandomKey(0, 0, w) for w in range(3)]
    with pytest.raises(ValueError, match="values exceed the float64 range") as single:
        make("randk(k=2)").encode(rows[1], keys[1])
    with pytest.raises(ValueError, match="row 1: randk") as batch:
        make("randk(k=2)").encode_many(rows, keys)
    assert str(batch.value) == f"row 1: {single.value}"


def test_top_k_rows_name_a_row_holding_nan_or_inf() -> None:
    rows = np.ones((4, 50))
    rows[2, 7] = np.inf
    with pytest.raises(ValueError, match=r"row 2: .*x\[7\] = inf"):
        make("topk(k=5)").encode_many(rows, [RandomKey(0, 0, w) for w in range(4)])


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("scale", [1.0, -0.37, 0.0, -0.0, np.inf])
@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply")  # inf * 0
def test_decode_add_rows_moves_each_row_as_decode_add_does(spec: str, scale: float) -> None:
    """``decode_add_rows`` (a block of workers' memories, each moving by its own upload) gives the bits of
    ``decode_add`` of each message into its own row, with and without a scale, for messages held as blocks and as
    a list (signed zeros compared, a row of -0.0 among the targets); natural, the level codecs and the sparsifiers
    that send their indices add a block of rows by one kernel call."""
    compressor = make(spec)
    messages, keys = encoded(compressor)
    start = np.random.default_rng(4).standard_normal((len(keys), D))
    start[0] = -0.0
    expected = start.copy()
    for message, key, row in zip(messages, keys, expected, strict=True):
        compressor.decode_add(message, row, key, scale)
    calls: list[int] = []
    by_rows = compressor._add_payload_rows_each
    compressor._add_payload_rows_each = lambda *args, **kw: calls.append(len(args[0])) or by_rows(*args, **kw)  # type: ignore[method-assign]
    for given in (messages, [bytes(m) for m in messages]):
        targets = start.copy()
        assert compressor.decode_add_rows(given, keys, targets, scale) is targets
        assert np.array_equal(targets.view(np.int64), expected.view(np.int64))
    rows_each = type(compressor)._add_payload_rows_each is not Compressor._add_payload_rows_each
    assert calls == ([5, 1, 7] if rows_each else [])


@pytest.mark.parametrize(
    ("spec", "corrupt", "error"),
    [("natural", 20, "natural: invalid code"), ("dither(s=3,p=2)", 16, "invalid norm nan")],
)
def test_decode_add_rows_names_a_bad_message(spec: str, corrupt: int, error: str) -> None:
    """A bad payload in a block (natural's exponent code 255, a NaN norm of dither) is named, in rows and in a
    list; targets of another shape or dtype, or a key or row too few, are a ValueError."""
    compressor = make(spec)
    compressor.crc = False
    messages, keys = encoded(compressor, (6,))
    block = messages.blocks[0].copy()
    block[4, corrupt : corrupt + 8] = 0xFF  # natural: 8 exponent codes 255; dither: its norm a NaN
    for given in (MessageRows([block]), [bytes(m) for m in block]):
        with pytest.raises(MessageError, match=f"message 4: {error}") as raised:
            compressor.decode_add_rows(given, keys, np.zeros((6, D)), 0.5)
        assert raised.value.index == 4
    with pytest.raises(ValueError, match="one key and one target row per message"):
        compressor.decode_add_rows(messages, keys, np.zeros((5, D)))
    for bad in (np.zeros((6, D), dtype=np.float32), np.zeros((6, 2 * D))[:, ::2]):
        with pytest.raises(ValueError, match="decode targets must be"):
            compressor.decode_add_rows(messages, keys, bad)


@pytest.mark.parametrize(("spec", "where"), [("dither(s=3,p=2)", "x"), ("block(size=16,s=2)", "block 1 of x")])
def test_encode_many_names_a_row_whose_norm_overflows(spec: str, where: str) -> None:
    rows = np.ones((3, 40))
    rows[1, 20:] = 1e308
    with pytest.raises(ValueError, match=f"row 1: the 2-norm of {where} exceeds the float64 range"):
        make(spec).encode_many(rows, [RandomKey(0, 0, w) for w in range(3)])


def test_rows_of_mixed_lengths_and_skips_count_and_sum_as_one_by_one() -> None:
    """Blocks of two message lengths (with and without the CRC-32) sum and count as one by one; blocks
    of empty (skipped) uploads count as skips."""
    compressor = make("natural")
    with_crc, keys = encoded(compressor)
    compressor.crc = False
    without_crc, _ = encoded(compressor)
    mixed = MessageRows([*with_crc[:6].blocks, *without_crc[6:].blocks])
    listed = [bytes(m) for m in mixed]
    assert len(set(mixed.lengths().tolist())) == 2
    assert unpack_uniform(mixed, compressor.codec_id, D) is None
    assert np.array_equal(summed(compressor, mixed, keys), summed(compressor, listed, keys))
    assert counts(mixed) == counts(listed)
    skips = MessageRows([*with_crc[:4].blocks, np.zeros((3, 0), dtype=np.uint8), *with_crc[4:].blocks])
    assert counts(skips) == counts([bytes(m) for m in skips])
    assert counts(skips)["skips"][5:8] == [1, 1, 1]


def test_gather_keeps_rows_only_with_one_announced_size() -> None:
    """The master's gather gives rows (its own blocks, then the inbox as one block) when every size is one,
    a list otherwise; the uploads as sent either way; a rank's rows go to MPI as their blocks."""
    compressor = make("natural")
    rows, _ = encoded(compressor)
    size = len(rows[0])
    inbox = np.frombuffer(b"".join(bytes(m) for m in rows[:4]), dtype=np.uint8)
    together = with_received(rows, inbox, np.full(4, size))
    assert isinstance(together, MessageRows)
    assert [bytes(m) for m in together] == [bytes(m) for m in rows] + [bytes(m) for m in rows[:4]]
    apart = with_received(rows, inbox, np.array([size - 1, size + 1, size, size]))
    assert isinstance(apart, list) and b"".join(apart[len(rows) :]) == inbox.tobytes()
    assert isinstance(with_received(list(rows), inbox, np.full(4, size)), list)
    assert bytes(joined(rows)) == b"".join(bytes(m) for m in rows)
    assert np.shares_memory(joined(rows[:5]), rows.blocks[0])
    with LocalTransport(len(rows)) as transport:
        assert transport.gather(rows, size=size) is rows
        by_rows = transport.counter.end_round()
        transport.gather([bytes(m) for m in rows], size=size)
        assert transport.counter.end_round() == by_rows


@pytest.mark.parametrize(("value", "error"), [(np.inf, "row 1: .*(NaN|Inf|non-finite)"), (1e39, "row 1: laq: radius")])
def test_laq_rows_name_a_row_holding_inf_or_beyond_float32(value: float, error: str) -> None:
    rows = np.ones((3, D))
    rows[1, 5] = value
    with pytest.raises(ValueError, match=error):
        make("laq(bits=3)").encode_many(rows, [RandomKey(0, 0, w) for w in range(3)])


@pytest.mark.parametrize(
    ("corrupt", "error"),
    [
        ("nan radius", "invalid radius nan"),
        ("-0 radius", "invalid radius -0.0"),
        ("padding", "nonzero padding bits"),
        ("codes with radius 0", "nonzero codes with radius 0"),
    ],
)
def test_a_bad_laq_payload_in_a_block_is_named(corrupt: str, error: str) -> None:
    """LAQ's checks as arrays over a block (radius, padding bits, codes of a zero innovation) name the message as
    decoding it alone does, in the sum and in ``decode_add_rows``."""
    compressor = make("laq(bits=3)")
    compressor.crc = False
    d, keys = 41, [RandomKey(5, 2, w, 0) for w in range(6)]
    rows = np.random.default_rng(3).standard_normal((6, d))
    block = compressor.encode_many(rows, keys).blocks[0].copy()
    expected = np.zeros(d)  # a padded tail (123 bits of codes) sums as one by one
    for row, key in zip(rows, keys, strict=True):
        compressor.decode_add(compressor.encode(row, key), expected, key)
    assert np.array_equal(compressor.decode_sum(MessageRows([block]), keys, np.zeros(d)), expected)
    radius = slice(HEADER_BYTES, HEADER_BYTES + 4)
    if corrupt == "padding":
        block[4, -1] |= 0x80  # 41 codes of 3 bits: 123 bits, the last byte's top 5 bits are padding
    else:
        value = {"nan radius": np.nan, "-0 radius": -0.0, "codes with radius 0": 0.0}[corrupt]
        block[4, radius] = np.frombuffer(np.float32(value).tobytes(), np.uint8)
    for given in (MessageRows([block]), [bytes(m) for m in block]):
        with pytest.raises(MessageError, match=f"message 4: laq: {error}"):
            compressor.decode_sum(given, keys, np.zeros(d))
        with pytest.raises(MessageError, match=f"message 4: laq: {error}"):
            compressor.decode_add_rows(given, keys, np.zeros((6, d)), 0.5)
