"""Switch packets: the format in which workers' integer vectors travel to the emulated switch.

A vector of ``n`` values goes out as ``ceil(n / P)`` packets of ``P`` values (the packet size,
256 by default and 64 allowed, as in SwitchML); the last packet holds the remainder, and an
empty vector is sent as no packet at all. A packet is a 12-byte header and its values::

    offset size field
    0      1    u8   op: 1 = sum, 2 = max
    1      1    u8   lanes: how values are encoded (1 = two's-complement integers, 2 = natural codes)
    2      1    u8   register width in bits: 8, 16 or 32
    3      1    u8   flags: bit 0 set on the switch's aggregate, bit 1 = a register overflowed
    4      4    u32  packet index p: the packet holds values [p P, p P + count)
    8      2    u16  count: values in this packet (P, or the remainder in the last one)
    10     2    u16  sender: the worker id, or 0xFFFF for the switch
    12     ...       count values in the lanes' encoding:
                     int:     width/8 bytes each, two's complement, little-endian
                     natural: count bytes r (0 = zero, 1..31 = 2^(r-1)), then a sign bitmap of
                              ceil(count/8) bytes (bit j % 8 of byte j // 8, LSB first; padding 0):
                              9 bits per value, the switch maps r | negative << 8 to an integer
                              with a 512-entry table (natural lanes need 32-bit registers)

All numbers are little-endian. Per packet, the byte accounting counts the 12 header bytes as
``header`` and the values as ``payload`` (no size prefixes: every rank knows ``n``, ``P`` and the
encoding, so the length of every stream follows from them).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
from numba import int64, njit

from ..wire import MessageError

HEADER_BYTES = 12
HEADER_DTYPE = np.dtype(
    [
        ("op", "u1"),
        ("lanes", "u1"),
        ("width", "u1"),
        ("flags", "u1"),
        ("index", "<u4"),
        ("count", "<u2"),
        ("sender", "<u2"),
    ]
)
OP_SUM, OP_MAX = 1, 2
OPS = {OP_SUM: "sum", OP_MAX: "max"}
FLAG_AGGREGATE, FLAG_OVERFLOW = 0x01, 0x02
SWITCH_SENDER = 0xFFFF
PACKET_SIZES = (64, 256)
REGISTER_WIDTHS = (8, 16, 32)


class AggregationOverflowError(ArithmeticError):
    """The switch's registers could not hold an exact sum: the aggregate is wrong and the run must stop."""


def register_range(width: int) -> tuple[int, int]:
    """The signed range ``[-2^(width-1), 2^(width-1) - 1]`` of a ``width``-bit register."""
    return -(1 << (width - 1)), (1 << (width - 1)) - 1


class Lanes(ABC):
    """How a packet's values are encoded; the switch turns every encoded value into an integer."""

    code: int
    name: str

    @abstractmethod
    def value_bytes(self, count: int, width: int) -> int:
        """Payload bytes of a packet of ``count`` values."""

    @abstractmethod
    def write(self, values: np.ndarray, width: int, out: np.ndarray) -> None:
        """Encode ``values`` (integers, ``(k, count)``) into ``out`` (uint8, ``(k, value_bytes)``)."""

    @abstractmethod
    def read(self, payload: np.ndarray, count: int, width: int, first: int) -> np.ndarray:
        """The integers (``(k, count)``, any integer dtype) of the payloads ``(k, value_bytes)`` of packets
        ``first, first + 1, ...``; MessageError naming the packet if a value is invalid."""

    @abstractmethod
    def check_values(self, values: np.ndarray, width: int, what: str) -> None:
        """ValueError unless every value of ``values`` can be encoded."""


class IntegerLanes(Lanes):
    """Two's-complement integers of the register width, ``width / 8`` bytes each."""

    code = 1
    name = "int"

    def value_bytes(self, count: int, width: int) -> int:
        return count * width // 8

    def write(self, values: np.ndarray, width: int, out: np.ndarray) -> None:
        out.view(f"<i{width // 8}")[...] = values

    def read(self, payload: np.ndarray, count: int, width: int, first: int) -> np.ndarray:
        return payload.view(f"<i{width // 8}")

    def check_values(self, values: np.ndarray, width: int, what: str) -> None:
        low, high = register_range(width)
        if values.size and (values.min() < low or values.max() > high):
            raise ValueError(
                f"{what}: values must fit {width}-bit registers [{low}, {high}], got {values.min()}..{values.max()}"
            )


def _natural_table() -> tuple[np.ndarray, np.ndarray]:
    """The switch's match-action table: code ``r | negative << 8`` -> ``(-1)^negative 2^(r - 1)``, and validity."""
    table = np.zeros(512, dtype=np.int64)
    valid = np.zeros(512, dtype=bool)
    valid[0] = True
    for r in range(1, NaturalLanes.max_exponent_code + 1):
        table[r], table[r | 256] = 1 << (r - 1), -(1 << (r - 1))
        valid[r] = valid[r | 256] = True
    return table, valid


class NaturalLanes(Lanes):
    """Natural codes relative to the block: ``r`` (one byte) and a sign bit per value, 9 bits in all."""

    code = 2
    name = "natural"
    max_exponent_code = 31  # r = 31 is 2^30, the largest power of two below the int32 limit

    def value_bytes(self, count: int, width: int) -> int:
        return count + (count + 7) // 8

    def write(self, values: np.ndarray, width: int, out: np.ndarray) -> None:
        _write_natural(values, out)

    def read(self, payload: np.ndarray, count: int, width: int, first: int) -> np.ndarray:
        values = np.empty((payload.shape[0], count), dtype=np.int64)
        bad = _read_natural(payload, _NATURAL_TABLE, _NATURAL_VALID, values)
        if bad >= 0:
            row, j = divmod(bad, count + 1)
            if j == count:
                raise MessageError(f"packet {first + row}: nonzero padding bits after the last sign")
            code = int(payload[row, j]) | (int(payload[row, count + j // 8]) >> (j % 8) & 1) << 8
            raise MessageError(
                f"packet {first + row}: value {j} has the invalid natural code {code:#05x} "
                f"(r must be 0..{self.max_exponent_code}, and a zero has no sign)"
            )
        return values

    def check_values(self, values: np.ndarray, width: int, what: str) -> None:
        if values.size and (values.min() < 0 or values.max() > 511 or not _NATURAL_VALID[values].all()):
            raise ValueError(f"{what}: natural codes are r | negative << 8 with r in 0..{self.max_exponent_code}")


@njit(cache=True, nogil=True)
def _write_natural(values, out):
    """Per packet row: the bytes ``r``, then the sign bits ``values >> 8`` packed LSB first."""
    count = values.shape[1]
    for p in range(values.shape[0]):
        row, codes = out[p], values[p]
        for j in range(count):
            row[j] = codes[j] & 0xFF
        for byte in range((count + 7) // 8):
            bits = 0
            for bit in range(min(8, count - 8 * byte)):
                bits |= ((codes[8 * byte + bit] >> 8) & 1) << bit
            row[count + byte] = bits


@njit(cache=True, nogil=True)
def _read_natural(payload, table, valid, out):
    """``out[p, j] = table[r | negative << 8]``; returns ``p (count + 1) + j`` of the first invalid
    code (``j = count``: nonzero padding bits), or -1."""
    count = out.shape[1]
    for p in range(payload.shape[0]):
        row, values = payload[p], out[p]
        ok = True
        for j in range(count):
            code = int64(row[j]) | ((int64(row[count + (j >> 3)]) >> (j & 7)) & 1) << 8
            values[j] = table[code]
            ok &= valid[code]
        if not ok:
            for j in range(count):
                if not valid[int64(row[j]) | ((int64(row[count + (j >> 3)]) >> (j & 7)) & 1) << 8]:
                    return p * (count + 1) + j
        if count % 8 and row[count + count // 8] >> (count % 8):
            return p * (count + 1) + count
    return -1


_NATURAL_TABLE, _NATURAL_VALID = _natural_table()
LANES: dict[str, Lanes] = {lanes.name: lanes for lanes in (IntegerLanes(), NaturalLanes())}


@dataclass(frozen=True)
class PacketSpec:
    """What every rank agrees on before an aggregation: operation, encoding, register width, packet size."""

    op: int
    lanes: str = "int"
    width: int = 32
    packet_values: int = 256

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"packet op must be one of {sorted(OPS)} (sum, max), got {self.op!r}")
        if self.lanes not in LANES:
            raise ValueError(f"packet lanes must be one of {', '.join(LANES)}, got {self.lanes!r}")
        if self.width not in REGISTER_WIDTHS:
            raise ValueError(f"register width must be one of {REGISTER_WIDTHS} bits, got {self.width!r}")
        if self.packet_values not in PACKET_SIZES:
            raise ValueError(f"packet size must be one of {PACKET_SIZES} values, got {self.packet_values!r}")
        if self.lanes == "natural" and (self.op, self.width) != (OP_SUM, 32):
            raise ValueError("natural lanes are summed in 32-bit registers: use op sum and width 32")

    @property
    def encoding(self) -> Lanes:
        return LANES[self.lanes]

    def packets(self, n: int) -> int:
        """Packets of an ``n``-vector: ``ceil(n / P)``."""
        return -(-n // self.packet_values)

    def split(self, n: int, lanes: Lanes | None = None) -> tuple[int, int]:
        """``(payload, header)`` bytes of the packets of an ``n``-vector (in ``lanes``, default this spec's)."""
        lanes = lanes or self.encoding
        full, rest = divmod(n, self.packet_values)
        payload = full * lanes.value_bytes(self.packet_values, self.width) + lanes.value_bytes(rest, self.width)
        return payload, HEADER_BYTES * self.packets(n)

    def stream_bytes(self, n: int, lanes: Lanes | None = None) -> int:
        """Bytes of the packets of an ``n``-vector."""
        return sum(self.split(n, lanes))


def _groups(spec: PacketSpec, n: int, lanes: Lanes) -> list[tuple[int, int, int, int]]:
    """``(first packet, packets, count, byte offset)`` of the full packets and of the remainder packet."""
    full, rest = divmod(n, spec.packet_values)
    stride = HEADER_BYTES + lanes.value_bytes(spec.packet_values, spec.width)
    groups = [(0, full, spec.packet_values, 0)] if full else []
    if rest:
        groups.append((full, 1, rest, full * stride))
    return groups


def _group_view(buf: np.ndarray, offset: int, packets: int, count: int, spec: PacketSpec, lanes: Lanes):
    stride = HEADER_BYTES + lanes.value_bytes(count, spec.width)
    block = buf[offset : offset + packets * stride].reshape(packets, stride)
    return block[:, :HEADER_BYTES].view(HEADER_DTYPE)[:, 0], block[:, HEADER_BYTES:]


def encode_packets(
    values: np.ndarray, spec: PacketSpec, sender: int, flags: int = 0, lanes: Lanes | None = None, overflow=None
) -> np.ndarray:
    """The packet stream (uint8) of ``values`` (integers) from ``sender``; ``overflow[p]`` sets packet p's flag."""
    lanes = lanes or spec.encoding
    n = values.size
    buf = np.empty(spec.stream_bytes(n, lanes), dtype=np.uint8)
    for first, packets, count, offset in _groups(spec, n, lanes):
        header, payload = _group_view(buf, offset, packets, count, spec, lanes)
        header["op"], header["lanes"], header["width"] = spec.op, lanes.code, spec.width
        header["flags"] = flags
        if overflow is not None:
            header["flags"] |= np.where(overflow[first : first + packets], FLAG_OVERFLOW, 0).astype(np.uint8)
        header["index"] = np.arange(first, first + packets)
        header["count"], header["sender"] = count, sender
        start = first * spec.packet_values
        lanes.write(values[start : start + packets * count].reshape(packets, count), spec.width, payload)
    return buf


def decode_packets(
    stream: bytes | memoryview | np.ndarray,
    spec: PacketSpec,
    n: int,
    sender: int,
    flags: int = 0,
    lanes: Lanes | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(values, overflowed)`` of a packet stream: int64 ``(n,)`` and a bool per packet.

    MessageError unless the stream is exactly the packets of an ``n``-vector from ``sender`` with
    this spec, in order, with header flags ``flags`` (the overflow bit aside) and valid values.
    """
    lanes = lanes or spec.encoding
    buf = np.frombuffer(stream, dtype=np.uint8)
    expected = spec.stream_bytes(n, lanes)
    who = "the switch" if sender == SWITCH_SENDER else f"worker {sender}"
    if buf.size != expected:
        raise MessageError(
            f"packet stream from {who} has {buf.size} bytes; {n} values in packets of {spec.packet_values} "
            f"({lanes.name}, {spec.width}-bit) take {expected}"
        )
    values = np.empty(n, dtype=np.int64)
    overflowed = np.zeros(spec.packets(n), dtype=bool)
    for first, packets, count, offset in _groups(spec, n, lanes):
        header, payload = _group_view(buf, offset, packets, count, spec, lanes)
        _check_headers(header, spec, lanes, first, count, sender, flags, who)
        overflowed[first : first + packets] = (header["flags"] & FLAG_OVERFLOW) != 0
        start = first * spec.packet_values
        values[start : start + packets * count] = lanes.read(payload, count, spec.width, first).ravel()
    return values, overflowed


def _check_headers(header, spec: PacketSpec, lanes: Lanes, first: int, count: int, sender: int, flags: int, who: str):
    expected = {
        "op": spec.op,
        "lanes": lanes.code,
        "width": spec.width,
        "index": np.arange(first, first + len(header)),
        "count": count,
        "sender": sender,
    }
    for field, value in expected.items():
        bad = np.flatnonzero(header[field] != value)
        if bad.size:
            p = first + int(bad[0])
            want = value[bad[0]] if isinstance(value, np.ndarray) else value
            raise MessageError(
                f"packet {p} from {who}: header field {field} is {header[field][bad[0]]}, expected {want}"
            )
    bad = np.flatnonzero((header["flags"] & ~np.uint8(FLAG_OVERFLOW)) != flags)
    if bad.size:
        raise MessageError(f"packet {first + int(bad[0])} from {who}: invalid flags {header['flags'][bad[0]]:#04x}")
    if not flags & FLAG_AGGREGATE and (header["flags"] & FLAG_OVERFLOW).any():
        raise MessageError(f"a packet from {who} claims an overflow: only the switch sets that flag")


def warm_up_packets() -> None:
    """Compile the natural lanes' kernels for the integer types hosts send (int16 codes, int64)."""
    spec = PacketSpec(OP_SUM, "natural", 32, PACKET_SIZES[0])
    for dtype in (np.int16, np.int64):
        values = np.zeros(3 * PACKET_SIZES[0] + 1, dtype=dtype)  # strided full packets and a remainder
        decode_packets(encode_packets(values, spec, 0).tobytes(), spec, values.size, 0)
