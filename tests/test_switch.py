"""Switch packets and the switch's arithmetic: format, validation, overflow flags."""

from __future__ import annotations

import numpy as np
import pytest

from mpicomp.comm import AggregationOverflowError, PacketSpec
from mpicomp.comm.packets import (
    CHUNK_PACKETS,
    FLAG_OVERFLOW,
    HEADER_BYTES,
    OP_MAX,
    OP_SUM,
    decode_packets,
    encode_packets,
)
from mpicomp.comm.switch import read_aggregate, switch_aggregate
from mpicomp.wire import MessageError

SPEC = PacketSpec(OP_SUM, "int", 32, 64)


def streams(values: list[np.ndarray], spec: PacketSpec = SPEC) -> list[bytes]:
    return [encode_packets(v, spec, w).tobytes() for w, v in enumerate(values)]


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 200])
@pytest.mark.parametrize("width", [8, 16, 32])
def test_packets_round_trip_with_the_documented_sizes(n, width):
    spec = PacketSpec(OP_SUM, "int", width, 64)
    low, high = -(1 << (width - 1)), (1 << (width - 1)) - 1
    values = np.random.default_rng(n).integers(low, high + 1, size=n)
    stream = encode_packets(values, spec, sender=5)
    packets = -(-n // 64)
    assert stream.size == n * width // 8 + HEADER_BYTES * packets == spec.stream_bytes(n)
    assert spec.split(n) == (n * width // 8, (14 + 20 + 8 + HEADER_BYTES + 4) * packets)  # counted as frames
    decoded, overflowed = decode_packets(stream.tobytes(), spec, n, sender=5)
    np.testing.assert_array_equal(decoded, values)
    assert overflowed.shape == (packets,) and not overflowed.any()


def test_header_layout_is_the_documented_one():
    stream = encode_packets(np.arange(70), SPEC, sender=3)
    second = stream[HEADER_BYTES + 64 * 4 :]
    assert second[:HEADER_BYTES].tobytes() == bytes([OP_SUM, 1, 32, 0]) + (1).to_bytes(4, "little") + (6).to_bytes(
        2, "little"
    ) + (3).to_bytes(2, "little")
    assert second[HEADER_BYTES:].view("<i4").tolist() == list(range(64, 70))


def corrupt(offset: int, value: int) -> bytes:
    stream = bytearray(encode_packets(np.arange(100), SPEC, sender=0).tobytes())
    stream[offset] = value
    return bytes(stream)


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (
            encode_packets(np.arange(100), SPEC, 0).tobytes()[:-1],
            "has 423 bytes; 100 values in packets of 64 .int, 32-bit. take 424",
        ),
        (encode_packets(np.arange(100), SPEC, 0).tobytes() + b"\0", "has 425 bytes"),
        (encode_packets(np.arange(99), SPEC, 0).tobytes(), "bytes"),
        (corrupt(0, OP_MAX), "field op"),
        (corrupt(1, 7), "field lanes"),
        (corrupt(2, 16), "field width"),
        (corrupt(3, 0x80), "invalid flags"),
        (corrupt(3, FLAG_OVERFLOW), "claims an overflow"),
        (corrupt(4, 9), "field index"),
        (corrupt(8, 63), "field count"),
        (corrupt(HEADER_BYTES + 256 + 10, 1), "field sender"),
    ],
)
def test_malformed_packets_raise_message_error(stream, reason):
    with pytest.raises(MessageError, match=reason):
        decode_packets(stream, SPEC, 100, sender=0)


def test_switch_sums_and_takes_max_exactly():
    rng = np.random.default_rng(1)
    values = [rng.integers(-(2**28), 2**28, size=130) for _ in range(5)]
    total = read_aggregate(switch_aggregate(streams(values), SPEC, 130).tobytes(), SPEC, 130)[0]
    np.testing.assert_array_equal(total, np.sum(values, axis=0))
    spec = PacketSpec(OP_MAX, "int", 32, 64)
    top = read_aggregate(switch_aggregate(streams(values, spec), spec, 130).tobytes(), spec, 130)[0]
    np.testing.assert_array_equal(top, np.max(values, axis=0))


def test_switch_flags_only_the_packets_that_overflow():
    """Two workers at 2^30: packet 1 (values 64..127) sums to 2^31, one past the int32 register."""
    values = [np.zeros(200, dtype=np.int64) for _ in range(2)]
    for v in values:
        v[100] = 2**30
    aggregate = switch_aggregate(streams(values), SPEC, 200).tobytes()
    _, overflowed = decode_packets(aggregate, SPEC, 200, 0xFFFF, flags=1)
    assert overflowed.tolist() == [False, True, False, False]
    with pytest.raises(AggregationOverflowError, match=r"1 of 4 packets \(first: packet 1, values 64..127\)"):
        read_aggregate(aggregate, SPEC, 200)


def test_wrapped_partial_sums_are_not_overflow():
    """Two's complement is exact modulo 2^32: a sum that leaves int32 midway but ends in range is exact."""
    values = [np.array([2**31 - 1]), np.array([2**31 - 1]), np.array([-(2**31)]), np.array([-(2**31) + 5])]
    total = read_aggregate(switch_aggregate(streams(values), SPEC, 1).tobytes(), SPEC, 1)[0]
    assert total.tolist() == [3]


def test_zero_length_vectors_send_no_packets():
    aggregate = switch_aggregate(streams([np.zeros(0, dtype=np.int64)] * 3), SPEC, 0)
    assert aggregate.size == 0
    assert read_aggregate(b"", SPEC, 0)[0].shape == (0,)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"op": 3}, "op"),
        ({"op": OP_SUM, "lanes": "float"}, "lanes"),
        ({"op": OP_SUM, "width": 64}, "register width"),
        ({"op": OP_SUM, "packet_values": 100}, "packets hold 64 or 256 values"),
        ({"op": OP_SUM, "packet_values": 64, "frame": "atp"}, "atp packets hold 62 values"),
        ({"op": OP_SUM, "frame": "rdma"}, "frame"),
        ({"op": OP_SUM, "lanes": "int_be", "width": 16}, "32-bit values"),
    ],
)
def test_packet_spec_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PacketSpec(**kwargs)


NATURAL_SPEC = PacketSpec(OP_SUM, "natural", 32, 64)


def natural_stream(codes: np.ndarray) -> bytearray:
    return bytearray(encode_packets(codes, NATURAL_SPEC, sender=0).tobytes())


def test_natural_lanes_are_nine_bits_a_value_and_map_through_the_table():
    codes = np.array([0, 1, 2 | 256, 31, 31 | 256, 5, 6, 7, 8, 9], dtype=np.int64)
    stream = natural_stream(codes)
    assert len(stream) == HEADER_BYTES + 10 + 2 == NATURAL_SPEC.stream_bytes(10)
    values, _ = decode_packets(bytes(stream), NATURAL_SPEC, 10, sender=0)
    assert values.tolist() == [0, 1, -2, 2**30, -(2**30), 16, 32, 64, 128, 256]


@pytest.mark.parametrize(
    ("offset", "value", "reason"),
    [
        (HEADER_BYTES + 3, 32, "value 3 has the invalid natural code 0x020"),
        (HEADER_BYTES + 0, 0, "value 0 has the invalid natural code 0x100"),  # r = 0 with a sign: negative zero
        (HEADER_BYTES + 10 + 1, 0x80, "nonzero padding bits"),
    ],
)
def test_invalid_natural_codes_raise_message_error(offset, value, reason):
    stream = natural_stream(np.array([1 | 256, 1, 1, 1, 1, 1, 1, 1, 1, 1], dtype=np.int64))
    stream[offset] = value
    with pytest.raises(MessageError, match=reason):
        decode_packets(bytes(stream), NATURAL_SPEC, 10, sender=0)


@pytest.mark.parametrize("code", [32, 256, 512, -1, 31 | 256 | 32])
def test_a_host_cannot_send_an_invalid_natural_code(code):
    """r > 31, a zero with a sign, codes outside 0..511: refused where they are written, and named."""
    codes = np.ones(70, dtype=np.int64)
    codes[67] = code
    with pytest.raises(ValueError, match=f"value 67 = {code} cannot travel"):
        encode_packets(codes, NATURAL_SPEC, sender=0)


def test_the_switch_finds_an_invalid_code_deep_in_a_later_workers_stream():
    """The switch checks codes as it adds them, chunk by chunk: a bad code in packet 300 (beyond the
    first chunk) of worker 1's stream is named by its packet, and nothing is returned."""
    n = 301 * NATURAL_SPEC.packet_values
    codes = np.ones(n, dtype=np.int64)
    good = encode_packets(codes, NATURAL_SPEC, sender=0).tobytes()
    bad = bytearray(encode_packets(codes, NATURAL_SPEC, sender=1).tobytes())
    stride = NATURAL_SPEC.stream_bytes(NATURAL_SPEC.packet_values)
    assert CHUNK_PACKETS < 300
    bad[300 * stride + HEADER_BYTES + 5] = 40  # r = 40 > 31
    with pytest.raises(MessageError, match="packet 300: value 5 has the invalid natural code 0x028"):
        switch_aggregate([good, bytes(bad)], NATURAL_SPEC, n)


def test_a_stream_for_another_block_count_is_refused():
    """300 values are 5 packets of 64; a worker sending the packets of 256 values is caught."""
    with pytest.raises(MessageError, match="take"):
        decode_packets(natural_stream(np.ones(256, dtype=np.int64)), NATURAL_SPEC, 300, sender=0)


def test_natural_lanes_need_32_bit_sum_registers():
    with pytest.raises(ValueError, match="natural lanes"):
        PacketSpec(OP_SUM, "natural", 16, 64)


# --- formats: big-endian lanes, frames as a switch sees them, ATP's flagged packets ---------------


def test_big_endian_lanes_are_network_byte_order_int32():
    spec = PacketSpec(OP_SUM, "int_be", 32, 64, "switchml")
    stream = encode_packets(np.array([1, -2, 2**31 - 1]), spec, sender=0)
    assert stream[HEADER_BYTES:].tobytes() == (1).to_bytes(4, "big") + (-2).to_bytes(4, "big", signed=True) + (
        2**31 - 1
    ).to_bytes(4, "big")
    values, _ = decode_packets(stream.tobytes(), spec, 3, sender=0)
    assert values.tolist() == [1, -2, 2**31 - 1]
    with pytest.raises(ValueError, match="cannot travel"):
        encode_packets(np.array([2**31]), spec, sender=0)


@pytest.mark.parametrize(
    ("frame", "lanes", "packet_values", "n", "payload", "header"),
    [
        # Ethernet 14 + IPv4 20 + UDP 8 + own header + FCS 4 per packet
        ("mpicomp", "int", 256, 300, 4 * 300, 2 * (42 + 12 + 4)),
        ("mpicomp", "natural", 64, 70, (64 + 8) + (6 + 1), 2 * (42 + 12 + 4)),
        # SwitchML: 8-byte header + 2-byte exponent field; fixed-size packets (the last one padded)
        ("switchml", "int_be", 64, 100, 2 * 256, 2 * (42 + 10 + 4)),
        ("switchml", "int_be", 256, 256, 1024, 42 + 10 + 4),
        # ATP: Ethernet + IPv4 (34 bytes, no UDP, as its packet.h), 26-byte header, 62 int32, FCS
        ("atp", "int_be", 62, 125, 3 * 248, 3 * (34 + 26 + 4)),
    ],
)
def test_frames_count_the_bytes_a_switch_sees(frame, lanes, packet_values, n, payload, header):
    assert PacketSpec(OP_SUM, lanes, 32, packet_values, frame).split(n) == (payload, header)


def test_payload_efficiency_of_full_frames():
    """SwitchML 256 / 312 (82 %), ATP 248 / 312 (79.5 %), mpicomp int32 1024 / 1082 (94.6 %)."""
    for frame, lanes, p, efficiency in [
        ("switchml", "int_be", 64, 256 / 312),
        ("atp", "int_be", 62, 248 / 312),
        ("mpicomp", "int", 256, 1024 / 1082),
    ]:
        payload, header = PacketSpec(OP_SUM, lanes, 32, p, frame).split(p)
        assert payload / (payload + header) == pytest.approx(efficiency, rel=1e-12)


ATP_SPEC = PacketSpec(OP_SUM, "int_be", 32, 62, "atp", fallback=True)


def test_atp_switch_flags_worker_flagged_and_overflowing_packets_without_raising():
    """Packet 0: worker 1 flagged it (a value did not fit int32); packet 2: the sum leaves int32."""
    values = [np.zeros(150, dtype=np.int64) for _ in range(2)]
    values[0][130] = values[1][130] = 2**30 + 1
    flagged = [np.zeros(3, dtype=bool), np.array([True, False, False])]
    streams_ = [
        encode_packets(v, ATP_SPEC, w, overflow=f).tobytes()
        for w, (v, f) in enumerate(zip(values, flagged, strict=True))
    ]
    total, overflowed = read_aggregate(switch_aggregate(streams_, ATP_SPEC, 150).tobytes(), ATP_SPEC, 150)
    assert overflowed.tolist() == [True, False, True]
    assert total[0] == 0 and total[130] == 2**31 + 2 - 2**32  # a hardware register wraps


def test_only_atp_workers_may_flag_their_packets():
    stream = encode_packets(np.zeros(5, dtype=np.int64), SPEC, 0, overflow=np.array([True])).tobytes()
    with pytest.raises(MessageError, match="claims an overflow"):
        switch_aggregate([stream], SPEC, 5)


@pytest.mark.parametrize(
    ("spec", "offset", "value", "reason"),
    [
        (ATP_SPEC, None, None, "has 259 bytes"),  # truncated by one byte
        (ATP_SPEC, 1, 1, "field lanes is 1, expected 3"),  # little-endian lanes where ATP's are big-endian
        (PacketSpec(OP_SUM, "int_be", 32, 64, "switchml"), 4, 7, "field index"),
        (PacketSpec(OP_SUM, "int_be", 32, 64, "switchml"), 3, FLAG_OVERFLOW, "claims an overflow"),
    ],
)
def test_malformed_switchml_and_atp_packets_raise_message_error(spec, offset, value, reason):
    stream = bytearray(encode_packets(np.arange(62), spec, sender=0).tobytes())
    if offset is None:
        stream = stream[:-1]
    else:
        stream[offset] = value
    with pytest.raises(MessageError, match=reason):
        switch_aggregate([bytes(stream)], spec, 62)
