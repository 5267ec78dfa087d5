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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numba import int32, int64, njit, uint32

from ..wire import MessageError

HEADER_BYTES = 12  # the emulated packet's own header (below); what MPI moves per packet
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
ETHERNET_BYTES, IPV4_BYTES, UDP_BYTES, FCS_BYTES = 14, 20, 8, 4


@dataclass(frozen=True)
class Frame:
    """How a packet of one switch format appears on a real link: ``link`` bytes of Ethernet/IPv4(/UDP)
    headers, the format's ``own`` header, the values, the FCS. ``padded``: every packet carries all
    ``P`` lanes (the last one zero-padded), as in fixed-size P4 pipelines."""

    name: str
    link: int
    own: int
    packet_sizes: tuple[int, ...]
    padded: bool

    @property
    def header_bytes(self) -> int:
        """Counted header bytes per packet: link headers + the format's header + FCS."""
        return self.link + self.own + FCS_BYTES


FRAMES = {
    frame.name: frame
    for frame in (
        Frame("mpicomp", ETHERNET_BYTES + IPV4_BYTES + UDP_BYTES, HEADER_BYTES, PACKET_SIZES, padded=False),
        Frame("switchml", ETHERNET_BYTES + IPV4_BYTES + UDP_BYTES, 8 + 2, PACKET_SIZES, padded=True),
        Frame("atp", ETHERNET_BYTES + IPV4_BYTES, 26, (62,), padded=True),
    )
}


class AggregationOverflowError(ArithmeticError):
    """The switch's registers could not hold an exact sum: the aggregate is wrong and the run must stop."""


def register_range(width: int) -> tuple[int, int]:
    """The signed range ``[-2^(width-1), 2^(width-1) - 1]`` of a ``width``-bit register."""
    return -(1 << (width - 1)), (1 << (width - 1)) - 1


class Lanes(ABC):
    """How a packet's values are encoded; the switch turns every encoded value into an integer."""

    code: int
    name: str
    widths: tuple[int, ...] = REGISTER_WIDTHS

    @abstractmethod
    def value_bytes(self, count: int, width: int) -> int:
        """Payload bytes of a packet of ``count`` values."""

    @abstractmethod
    def write(self, values: np.ndarray, width: int, out: np.ndarray) -> int:
        """Encode ``values`` (integers, ``(k, count)``) into ``out`` (uint8, ``(k, value_bytes)``); returns
        the flat index of the first value that cannot be encoded (nothing valid is promised then), or -1."""

    @abstractmethod
    def accumulate(self, payload: np.ndarray, count: int, width: int, total: np.ndarray, add: bool) -> int:
        """``total (+)= `` the integers of the payloads ``(k, value_bytes)`` (``total``: int64 ``(k, count)``);
        returns the first row holding an invalid value (``total`` is then unspecified; :meth:`validate`
        says what is wrong), or -1."""

    def validate(self, payload: np.ndarray, count: int, first: int) -> None:  # noqa: B027 - integers are all valid
        """MessageError naming the packet (numbered from ``first``) if a payload holds an invalid value."""

    def describe(self, width: int) -> str:
        low, high = register_range(width)
        return f"values must fit {width}-bit registers [{low}, {high}]"


class IntegerLanes(Lanes):
    """Two's-complement integers of the register width, ``width / 8`` bytes each, little-endian."""

    code = 1
    name = "int"

    def value_bytes(self, count: int, width: int) -> int:
        return count * width // 8

    def write(self, values: np.ndarray, width: int, out: np.ndarray) -> int:
        low, high = register_range(width)
        return _write_ints(values, low, high, out.view(f"<i{width // 8}"))

    def accumulate(self, payload: np.ndarray, count: int, width: int, total: np.ndarray, add: bool) -> int:
        _add_ints(payload.view(f"<i{width // 8}"), total, add)
        return -1


class BigEndianLanes(Lanes):
    """Two's-complement int32 in network byte order (SwitchML's and ATP's lanes)."""

    code = 3
    name = "int_be"
    widths = (32,)

    def value_bytes(self, count: int, width: int) -> int:
        return 4 * count

    def write(self, values: np.ndarray, width: int, out: np.ndarray) -> int:
        low, high = register_range(32)
        return _write_ints_be(values, low, high, out.view("<u4"))

    def accumulate(self, payload: np.ndarray, count: int, width: int, total: np.ndarray, add: bool) -> int:
        _add_ints_be(payload.view("<u4"), total, add)
        return -1


def _natural_codes() -> np.ndarray:
    """Which codes ``r | negative << 8`` are valid: ``r`` in 0..31, and only a nonzero ``r`` has a sign."""
    valid = np.zeros(512, dtype=np.bool_)
    valid[: NaturalLanes.max_exponent_code + 1] = True
    valid[257 : 256 + NaturalLanes.max_exponent_code + 1] = True
    return valid


class NaturalLanes(Lanes):
    """Natural codes relative to the block: ``r`` (one byte) and a sign bit per value, 9 bits in all."""

    code = 2
    name = "natural"
    widths = (32,)
    max_exponent_code = 31  # r = 31 is 2^30, the largest power of two below the int32 limit

    def value_bytes(self, count: int, width: int) -> int:
        return count + (count + 7) // 8

    def write(self, values: np.ndarray, width: int, out: np.ndarray) -> int:
        return _write_natural(values, out)

    def accumulate(self, payload: np.ndarray, count: int, width: int, total: np.ndarray, add: bool) -> int:
        return _add_natural(payload, total, add)

    def validate(self, payload: np.ndarray, count: int, first: int) -> None:
        signs = np.unpackbits(payload[:, count:], axis=1, bitorder="little")
        codes = payload[:, :count].astype(np.int64) | signs[:, :count].astype(np.int64) << 8
        padding = signs[:, count:].any(axis=1)
        for row in np.flatnonzero(~_NATURAL_VALID[codes].all(axis=1) | padding):
            invalid = np.flatnonzero(~_NATURAL_VALID[codes[row]])
            if invalid.size == 0:
                raise MessageError(f"packet {first + row}: nonzero padding bits after the last sign")
            j = int(invalid[0])
            raise MessageError(
                f"packet {first + row}: value {j} has the invalid natural code {int(codes[row, j]):#05x} "
                f"(r must be 0..{self.max_exponent_code}, and a zero has no sign)"
            )

    def describe(self, width: int) -> str:
        return f"natural codes are r | negative << 8 with r in 0..{self.max_exponent_code}"


@njit(cache=True, nogil=True)
def _write_ints(values, low, high, out):
    """``out = values`` row by row, checking the register range; first bad flat index or -1."""
    count = values.shape[1]
    bad = -1
    for p in range(values.shape[0]):
        row, src = out[p], values[p]
        ok = True
        for j in range(count):
            v = int64(src[j])
            ok &= (v >= low) & (v <= high)
            row[j] = v
        if not ok and bad < 0:
            for j in range(count):
                if not low <= int64(src[j]) <= high:
                    bad = p * count + j
                    break
    return bad


@njit(cache=True, inline="always")
def _swap32(u):
    return ((u >> 24) & 0xFF) | ((u >> 8) & 0xFF00) | ((u << 8) & 0xFF0000) | ((u << 24) & 0xFF000000)


@njit(cache=True, nogil=True)
def _write_ints_be(values, low, high, out):
    """``out`` = ``values`` as big-endian int32 (``out`` viewed as uint32), checking the range.

    A twin of :func:`_write_ints` with a byte swap: numba has no arrays of non-native byte order."""
    count = values.shape[1]
    bad = -1
    for p in range(values.shape[0]):
        row, src = out[p], values[p]
        ok = True
        for j in range(count):
            v = int64(src[j])
            ok &= (v >= low) & (v <= high)
            row[j] = _swap32(uint32(v & 0xFFFFFFFF))
        if not ok and bad < 0:
            for j in range(count):
                if not low <= int64(src[j]) <= high:
                    bad = p * count + j
                    break
    return bad


@njit(cache=True, nogil=True)
def _add_ints(payload, total, add):
    for p in range(payload.shape[0]):
        src, dst = payload[p], total[p]
        if add:
            for j in range(src.size):
                dst[j] += src[j]
        else:
            for j in range(src.size):
                dst[j] = src[j]


@njit(cache=True, nogil=True)
def _add_ints_be(payload, total, add):
    for p in range(payload.shape[0]):
        src, dst = payload[p], total[p]
        for j in range(src.size):
            v = int64(int32(_swap32(src[j])))
            dst[j] = dst[j] + v if add else v


@njit(cache=True, nogil=True)
def _write_natural(values, out):
    """Per packet row: the bytes ``r``, then the sign bits ``values >> 8`` packed LSB first, 8 per byte;
    returns the first invalid flat index (a code outside 0..511, ``r > 31``, or a zero with a sign) or -1."""
    count = values.shape[1]
    sign_bytes = (count + 7) // 8
    for p in range(values.shape[0]):
        row, codes = out[p], values[p]
        invalid = 0
        for j in range(count):
            code = int64(codes[j])
            r = code & 0xFF
            invalid |= (code >> 9) | (r >> 5) | ((code >> 8) & ((r - 1) >> 63))  # (r - 1) >> 63: -1 iff r = 0
            row[j] = r
        for g in range(sign_bytes):
            bits = 0
            for b in range(min(8, count - 8 * g)):
                bits |= ((int64(codes[8 * g + b]) >> 8) & 1) << b
            row[count + g] = bits
        if invalid:
            for j in range(count):
                code = int64(codes[j])
                r = code & 0xFF
                if (code >> 9) | (r >> 5) | ((code >> 8) & ((r - 1) >> 63)):
                    return p * count + j
    return -1


@njit(cache=True, nogil=True)
def _add_natural(payload, total, add):
    """``total (+)= (-1)^negative 2^(r-1)`` (0 for r = 0), what the switch's 512-entry match-action table
    gives for code ``r | negative << 8``, checking the codes in the same pass: returns the first row
    with ``r > 31``, a zero with a sign or nonzero padding bits, or -1. Branch-free, so it vectorises."""
    count = total.shape[1]
    sign_bytes = (count + 7) // 8
    signs = np.empty(8 * sign_bytes, dtype=np.int64)
    for p in range(payload.shape[0]):
        row, values = payload[p], total[p]
        for g in range(sign_bytes):
            byte = int64(row[count + g])
            for b in range(8):
                signs[8 * g + b] = (byte >> b) & 1
        invalid = 0
        for j in range(count, 8 * sign_bytes):
            invalid |= signs[j]
        if add:
            for j in range(count):
                r, negative = int64(row[j]), signs[j]
                invalid |= (r >> 5) | (negative & ((r - 1) >> 63))  # (r - 1) >> 63 is -1 iff r = 0
                values[j] += (((int64(1) << (r & 31)) >> 1) ^ -negative) + negative
        else:
            for j in range(count):
                r, negative = int64(row[j]), signs[j]
                invalid |= (r >> 5) | (negative & ((r - 1) >> 63))
                values[j] = (((int64(1) << (r & 31)) >> 1) ^ -negative) + negative
        if invalid:
            return p
    return -1


_NATURAL_VALID = _natural_codes()
LANES: dict[str, Lanes] = {lanes.name: lanes for lanes in (IntegerLanes(), NaturalLanes(), BigEndianLanes())}


@dataclass(frozen=True)
class PacketSpec:
    """What every rank agrees on before an aggregation: operation, encoding, register width, packet size
    and the frame format the byte counters see."""

    op: int
    lanes: str = "int"
    width: int = 32
    packet_values: int = 256
    frame: str = "mpicomp"
    fallback: bool = False  # ATP: workers may flag their own packets, and a flagged aggregate is not an error

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"packet op must be one of {sorted(OPS)} (sum, max), got {self.op!r}")
        if self.lanes not in LANES:
            raise ValueError(f"packet lanes must be one of {', '.join(LANES)}, got {self.lanes!r}")
        if self.width not in REGISTER_WIDTHS:
            raise ValueError(f"register width must be one of {REGISTER_WIDTHS} bits, got {self.width!r}")
        if self.frame not in FRAMES:
            raise ValueError(f"packet frame must be one of {', '.join(FRAMES)}, got {self.frame!r}")
        sizes = FRAMES[self.frame].packet_sizes
        if self.packet_values not in sizes:
            raise ValueError(
                f"{self.frame} packets hold {' or '.join(map(str, sizes))} values, got {self.packet_values!r}"
            )
        if self.lanes == "natural" and (self.op, self.width) != (OP_SUM, 32):
            raise ValueError("natural lanes are summed in 32-bit registers: use op sum and width 32")
        if self.width not in self.encoding.widths:
            raise ValueError(f"{self.lanes} lanes are {self.encoding.widths[0]}-bit values: use width 32")

    @property
    def encoding(self) -> Lanes:
        return LANES[self.lanes]

    def packets(self, n: int) -> int:
        """Packets of an ``n``-vector: ``ceil(n / P)``."""
        return -(-n // self.packet_values)

    def stream_bytes(self, n: int, lanes: Lanes | None = None) -> int:
        """Bytes of the emulated packets of an ``n``-vector (12-byte headers, unpadded values)."""
        lanes = lanes or self.encoding
        full, rest = divmod(n, self.packet_values)
        values = full * lanes.value_bytes(self.packet_values, self.width) + lanes.value_bytes(rest, self.width)
        return values + HEADER_BYTES * self.packets(n)

    def split(self, n: int, lanes: Lanes | None = None) -> tuple[int, int]:
        """Counted ``(payload, header)`` bytes of the frames of an ``n``-vector: the values (every packet
        full if the frame pads) and, per packet, the frame's link headers, own header and FCS."""
        lanes = lanes or self.encoding
        frame = FRAMES[self.frame]
        full, rest = divmod(n, self.packet_values)
        if frame.padded and rest:
            full, rest = full + 1, 0
        payload = full * lanes.value_bytes(self.packet_values, self.width) + lanes.value_bytes(rest, self.width)
        return payload, frame.header_bytes * self.packets(n)


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
    return block[:, :HEADER_BYTES], block[:, HEADER_BYTES:]


@lru_cache(maxsize=64)
def _headers(spec: PacketSpec, n: int, lanes_name: str, sender: int, flags: int) -> tuple[np.ndarray, ...]:
    """The header bytes (``(packets, 12)`` uint8, read-only) of each group of an ``n``-vector's stream."""
    lanes = LANES[lanes_name]
    out = []
    for first, packets, count, _ in _groups(spec, n, lanes):
        header = np.zeros(packets, dtype=HEADER_DTYPE)
        header["op"], header["lanes"], header["width"], header["flags"] = spec.op, lanes.code, spec.width, flags
        header["index"] = np.arange(first, first + packets)
        header["count"], header["sender"] = count, sender
        raw = header.view(np.uint8).reshape(packets, HEADER_BYTES)
        raw.flags.writeable = False
        out.append(raw)
    return tuple(out)


def encode_packets(
    values: np.ndarray,
    spec: PacketSpec,
    sender: int,
    flags: int = 0,
    lanes: Lanes | None = None,
    overflow: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The packet stream (uint8, into ``out`` if given) of ``values`` (integers) from ``sender``;
    ``overflow[p]`` sets packet p's overflow flag. ValueError if a value cannot be encoded."""
    lanes = lanes or spec.encoding
    n = values.size
    size = spec.stream_bytes(n, lanes)
    buf = np.empty(size, dtype=np.uint8) if out is None else out[:size]
    templates = _headers(spec, n, lanes.name, sender, flags)
    no_flags = np.zeros(0, dtype=np.bool_)
    for (first, packets, count, offset), template in zip(_groups(spec, n, lanes), templates, strict=True):
        header, payload = _group_view(buf, offset, packets, count, spec, lanes)
        _write_headers(header, template, no_flags if overflow is None else overflow[first : first + packets])
        start = first * spec.packet_values
        bad = lanes.write(values[start : start + packets * count].reshape(packets, count), spec.width, payload)
        if bad >= 0:
            raise ValueError(
                f"worker {sender}: value {start + bad} = {values[start + bad]} cannot travel: {lanes.describe(spec.width)}"
            )
    return buf


CHUNK_PACKETS = 256  # the switch adds the streams 256 packets at a time, so its registers stay in cache


def accumulate_packets(
    stream: bytes | memoryview | np.ndarray,
    spec: PacketSpec,
    n: int,
    sender: int,
    total: np.ndarray,
    add: bool,
    flags: int = 0,
    lanes: Lanes | None = None,
) -> np.ndarray:
    """``total (+)= `` the values (int64 ``(n,)``) of a packet stream; returns the per-packet overflow flags.

    MessageError unless the stream is exactly the packets of an ``n``-vector from ``sender`` with
    this spec, in order, with header flags ``flags`` (the overflow bit aside) and valid values.
    """
    return sum_streams([stream], spec, n, total, add, flags, lanes, senders=[sender])


def sum_streams(
    streams: Sequence[bytes | memoryview | np.ndarray],
    spec: PacketSpec,
    n: int,
    total: np.ndarray,
    add: bool = False,
    flags: int = 0,
    lanes: Lanes | None = None,
    senders: Sequence[int] | None = None,
    emit: Callable[[int, int, np.ndarray], None] | None = None,
) -> np.ndarray:
    """``total (+)= sum_w`` the values of ``streams[w]`` (from ``senders[w]``, default ``w``), checked as
    :func:`accumulate_packets`, added :data:`CHUNK_PACKETS` packets at a time over all streams; returns
    the OR of their per-packet overflow flags. With ``emit``, ``total`` is scratch for one chunk
    (``CHUNK_PACKETS P`` values) and each chunk's sums go to ``emit(group, first packet in the group,
    registers)`` while they are in cache. The values are checked as they are added: after a MessageError
    ``total`` is unspecified."""
    lanes = lanes or spec.encoding
    senders = range(len(streams)) if senders is None else senders
    overflowed = np.zeros(spec.packets(n), dtype=bool)
    views = []
    for stream, sender in zip(streams, senders, strict=True):
        buf = np.frombuffer(stream, dtype=np.uint8)
        expected = spec.stream_bytes(n, lanes)
        who = "the switch" if sender == SWITCH_SENDER else f"worker {sender}"
        if buf.size != expected:
            raise MessageError(
                f"packet stream from {who} has {buf.size} bytes; {n} values in packets of {spec.packet_values} "
                f"({lanes.name}, {spec.width}-bit) take {expected}"
            )
        templates = _headers(spec, n, lanes.name, sender, flags)
        groups = []
        for (first, packets, count, offset), template in zip(_groups(spec, n, lanes), templates, strict=True):
            header, payload = _group_view(buf, offset, packets, count, spec, lanes)
            overflowed[first : first + packets] |= (header[:, 3] & FLAG_OVERFLOW) != 0
            if not _headers_match(header, template, flags):
                _check_headers(header.view(HEADER_DTYPE)[:, 0], spec, lanes, first, count, sender, flags, who)
            groups.append(payload)
        views.append(groups)
    for index, (first, packets, count, _) in enumerate(_groups(spec, n, lanes)):
        start = first * spec.packet_values
        registers = total[start : start + packets * count].reshape(packets, count) if emit is None else None
        for lo in range(0, packets, CHUNK_PACKETS):
            hi = min(lo + CHUNK_PACKETS, packets)
            chunk = total[: (hi - lo) * count].reshape(hi - lo, count) if registers is None else registers[lo:hi]
            for w, groups in enumerate(views):
                if lanes.accumulate(groups[index][lo:hi], count, spec.width, chunk, add or w > 0) >= 0:
                    lanes.validate(groups[index][lo:hi], count, first + lo)
            if emit is not None:
                emit(index, lo, chunk)
    return overflowed


def _headers_match(header: np.ndarray, template: np.ndarray, flags: int) -> bool:
    """The headers equal the expected ones (whose flags are ``flags``), the overflow bit aside."""
    return bool(_headers_equal(header, template, FLAG_OVERFLOW))


@njit(cache=True, nogil=True)
def _headers_equal(header, template, ignored_flags):
    """Every header row equals the template row, the flags byte (3) up to the ``ignored_flags`` bits."""
    same = True
    for p in range(header.shape[0]):
        row, expected = header[p], template[p]
        for b in range(HEADER_BYTES):
            mask = ~ignored_flags if b == 3 else 0xFF
            same &= (row[b] & mask) == expected[b]
    return same


@njit(cache=True, nogil=True)
def _write_headers(header, template, overflow):
    """``header = template``, with the overflow flag set in row p where ``overflow[p]`` (if given)."""
    for p in range(header.shape[0]):
        row, source = header[p], template[p]
        for b in range(HEADER_BYTES):
            row[b] = source[b]
        if overflow.size and overflow[p]:
            row[3] |= FLAG_OVERFLOW


def decode_packets(
    stream: bytes | memoryview | np.ndarray,
    spec: PacketSpec,
    n: int,
    sender: int,
    flags: int = 0,
    lanes: Lanes | None = None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(values, overflowed)`` of a packet stream: int64 ``(n,)`` (into ``out`` if given) and a bool per
    packet; MessageError as :func:`accumulate_packets`."""
    values = np.empty(n, dtype=np.int64) if out is None else out
    overflowed = accumulate_packets(stream, spec, n, sender, values, add=False, flags=flags, lanes=lanes)
    if not flags & FLAG_AGGREGATE and not spec.fallback and overflowed.any():
        who = "the switch" if sender == SWITCH_SENDER else f"worker {sender}"
        raise MessageError(f"a packet from {who} claims an overflow: only the switch sets that flag")
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


def warm_up_packets() -> None:
    """Compile the lanes' kernels for the integer types hosts send (int16 codes, int32, int64)."""
    for lanes, dtypes in (
        ("natural", (np.int16, np.int64)),
        ("int", (np.int8, np.int32, np.int64)),
        ("int_be", (np.int32, np.int64)),
    ):
        spec = PacketSpec(OP_SUM, lanes, 32, PACKET_SIZES[0])
        for dtype in dtypes:
            values = np.zeros(3 * PACKET_SIZES[0] + 1, dtype=dtype)  # strided full packets and a remainder
            decode_packets(encode_packets(values, spec, 0).tobytes(), spec, values.size, 0)
