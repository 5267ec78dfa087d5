"""The mpicomp message: a fixed little-endian header, codec scalars, payload, optional CRC-32.

Layout (documented byte by byte in ``docs/wire-format.md``)::

    0   2  magic  b"MC"
    2   1  u8     version (1)
    3   1  u8     codec id
    4   1  u8     flags (bit 0: CRC-32 trailer present; bit 1: key fingerprint present; others 0)
    5   1  u8     n_scalars, the number of float64 codec scalars
    6   2  u16    key fingerprint with flag bit 1 (16 bits of the encoder's RandomKey), else 0
    8   4  u32    d, the dimension of the encoded vector
    12  4  u32    payload length L in bytes
    16  8n f64    codec scalars (norms, radii, scales)
    .   L  bytes  payload (bit-packed)
    .   4  u32    CRC-32 (zlib's polynomial) of all preceding bytes of the message, if flag bit 0

Messages are self-delimiting, so several can be concatenated into one upload. The CRC-32 is
optional (``[compressor] checksum`` in a run): MPI delivers bytes intact, so it guards stored or fuzzed
messages; header and payload validity checks apply either way. It is computed by python-isal
(ISA-L's hardware-accelerated CRC-32, the same checksum as ``zlib.crc32``).

Encoders write in place: the payload at :func:`payload_offset`, then :func:`frame_message` adds
the header, scalars and trailer around it, so a message is built without copying its payload.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from isal.isal_zlib import crc32

from .errors import MessageError

MAGIC = b"MC"
VERSION = 1
FLAG_CRC32 = 0x01
FLAG_KEY = 0x02
FINGERPRINT_AT = 6  # the header's u16 key fingerprint field
HEADER = struct.Struct("<2sBBBBHII")
HEADER_BYTES = HEADER.size
CRC_BYTES = 4
MAX_SCALARS = 255
MAX_D = 2**32 - 1


@dataclass(frozen=True)
class Message:
    """A parsed message; ``payload`` is a read-only view into the received buffer."""

    codec: int
    d: int
    scalars: tuple[float, ...]
    payload: memoryview
    nbytes: int
    key_fingerprint: int | None = None  # 16 bits of the encoder's key, for codecs with shared randomness

    @property
    def overhead_bytes(self) -> int:
        """Everything that is not payload: fixed header, scalars and CRC trailer."""
        return self.nbytes - len(self.payload)


def byte_view(buf: bytes | bytearray | memoryview | np.ndarray) -> memoryview:
    """``memoryview(buf)``; for a NumPy array its ``.data``, the same view, typed as one before Python 3.12."""
    return buf.data if isinstance(buf, np.ndarray) else memoryview(buf)


def overhead_bytes(n_scalars: int, crc: bool = True) -> int:
    """Header + scalars + trailer size of a message with ``n_scalars`` scalars."""
    return HEADER_BYTES + 8 * n_scalars + (CRC_BYTES if crc else 0)


def payload_offset(n_scalars: int) -> int:
    """Where the payload starts in a message with ``n_scalars`` codec scalars."""
    return HEADER_BYTES + 8 * n_scalars


def _header(codec: int, d: int, n_scalars: int, payload_bytes: int, crc: bool, key_fingerprint: int | None) -> bytes:
    """The 16 fixed header bytes of a message."""
    if not 0 <= d <= MAX_D:
        raise ValueError(f"dimension d={d} does not fit the u32 header field")
    if n_scalars > MAX_SCALARS:
        raise ValueError(f"{n_scalars} codec scalars exceed the limit of {MAX_SCALARS}")
    flags = (FLAG_CRC32 if crc else 0) | (FLAG_KEY if key_fingerprint is not None else 0)
    return HEADER.pack(MAGIC, VERSION, codec, flags, n_scalars, key_fingerprint or 0, d, payload_bytes)


def frame_message(
    out: np.ndarray,
    codec: int,
    d: int,
    scalars: tuple[float, ...] | list[float],
    payload_bytes: int,
    crc: bool = True,
    key_fingerprint: int | None = None,
) -> int:
    """Write the header and scalars in front of the payload already at ``out[payload_offset:]`` and
    (optionally) the CRC-32 trailer after it; returns the message's total size in bytes.

    ``out`` is a writable uint8 array with room for :func:`overhead_bytes` + ``payload_bytes``.
    """
    header = _header(codec, d, len(scalars), payload_bytes, crc, key_fingerprint)
    return _write_frame(out, header, scalars, payload_offset(len(scalars)) + payload_bytes, crc)


def _write_frame(out: np.ndarray, header: bytes, scalars: Sequence[float], end: int, crc: bool) -> int:
    """``header`` and ``scalars`` in front of the payload that ends at ``out[end]``, then the CRC-32 trailer
    when ``crc``; the message's total size."""
    view = out.data
    view[:HEADER_BYTES] = header
    if scalars:
        struct.pack_into(f"<{len(scalars)}d", view, HEADER_BYTES, *scalars)
    if not crc:
        return end
    struct.pack_into("<I", view, end, crc32(out[:end]))
    return end + CRC_BYTES


@dataclass(frozen=True)
class MessageFrame:
    """The layout shared by every message of one codec in dimension ``d`` with a payload of fixed size and
    no key fingerprint (a run's messages on one link), computed once: :meth:`write` frames a payload
    without building the header again, :meth:`unpack` checks a message by comparing its 16 header bytes
    with :attr:`header` instead of parsing them (a message that differs goes to :func:`unpack_message`,
    whose error says what is wrong)."""

    codec: int
    d: int
    n_scalars: int
    payload_bytes: int
    crc: bool
    header: bytes  # the 16 fixed header bytes
    start: int  # where the payload starts
    total: int  # the message's size in bytes

    @classmethod
    def of(cls, codec: int, d: int, n_scalars: int, payload_bytes: int, crc: bool) -> MessageFrame:
        header = _header(codec, d, n_scalars, payload_bytes, crc, None)
        start = payload_offset(n_scalars)
        total = overhead_bytes(n_scalars, crc) + payload_bytes
        return cls(codec, d, n_scalars, payload_bytes, crc, header, start, total)

    def payload(self, out: np.ndarray) -> np.ndarray:
        """The payload's bytes in the message buffer ``out``."""
        return out[self.start : self.start + self.payload_bytes]

    def write(self, out: np.ndarray, scalars: Sequence[float]) -> int:
        """:func:`frame_message` of the payload already in ``out`` (``n_scalars`` scalars); the total size."""
        return _write_frame(out, self.header, scalars, self.start + self.payload_bytes, self.crc)

    def unpack(self, buf: bytes | memoryview) -> Message | None:
        """``unpack_message(buf, codec, d)`` when ``buf`` is one message of this frame (its header byte for
        byte, its size; the CRC-32 checked when present), else None."""
        view = byte_view(buf).cast("B")
        if len(view) != self.total or view[:HEADER_BYTES] != self.header:
            return None
        if self.crc:
            _check_crc(view, self.total)
        return _message_at(view, self.codec, self.d, self.n_scalars, self.payload_bytes, self.total, None)


def frame_messages(
    out: np.ndarray,
    codec: int,
    d: int,
    scalars: np.ndarray,
    payload_bytes: int,
    crc: bool = True,
    fingerprints: np.ndarray | None = None,
) -> None:
    """:func:`frame_message` for every row of ``out`` (``(m, frame)`` uint8, row j's payload in place)
    with row j's scalars ``scalars[j]`` (``(m, n_scalars)``) and, for a codec with shared randomness, row j's key
    fingerprint ``fingerprints[j]``: the header, the same for every row but the fingerprint, is built once; the
    CRC-32 is computed per row. Every message is ``frame`` bytes."""
    n_scalars = scalars.shape[1]
    keyed = None if fingerprints is None else 0
    out[:, :HEADER_BYTES] = np.frombuffer(_header(codec, d, n_scalars, payload_bytes, crc, keyed), np.uint8)
    if fingerprints is not None:
        out[:, FINGERPRINT_AT : FINGERPRINT_AT + 2] = np.asarray(fingerprints, dtype="<u2")[:, None].view(np.uint8)
    start = payload_offset(n_scalars)
    out[:, HEADER_BYTES:start] = np.ascontiguousarray(scalars, dtype="<f8").view(np.uint8)
    end = start + payload_bytes
    if crc:
        out[:, end : end + CRC_BYTES] = np.array([crc32(row[:end]) for row in out], dtype="<u4")[:, None].view(np.uint8)


def pack_message(
    codec: int,
    d: int,
    scalars: tuple[float, ...] | list[float] = (),
    payload: bytes | bytearray | memoryview | np.ndarray = b"",
    crc: bool = True,
    key_fingerprint: int | None = None,
) -> bytes:
    """Frame ``payload`` with the header, (optionally) a CRC-32 trailer and the encoder's key fingerprint."""
    body = np.frombuffer(byte_view(payload).cast("B"), dtype=np.uint8)
    out = np.empty(overhead_bytes(len(scalars), crc) + body.size, dtype=np.uint8)
    start = payload_offset(len(scalars))
    out[start : start + body.size] = body
    return out[: frame_message(out, codec, d, scalars, body.size, crc, key_fingerprint)].tobytes()


def _parse_header(view: memoryview, offset: int) -> tuple[int, int, int, int, int, int, int | None]:
    remaining = len(view) - offset
    if remaining < HEADER_BYTES:
        raise MessageError(f"truncated message: {remaining} bytes, the header alone needs {HEADER_BYTES}")
    magic, version, codec, flags, n_scalars, reserved, d, length = HEADER.unpack_from(view, offset)
    if magic != MAGIC:
        raise MessageError(f"bad magic {bytes(magic)!r}: not an mpicomp message (expected {MAGIC!r})")
    if version != VERSION:
        raise MessageError(f"unsupported wire version {version} (this build reads version {VERSION})")
    if flags & ~(FLAG_CRC32 | FLAG_KEY) or (reserved and not flags & FLAG_KEY):
        raise MessageError(f"unknown flag bits 0x{flags:02x} / reserved field {reserved}: corrupt header")
    total = HEADER_BYTES + 8 * n_scalars + length + (CRC_BYTES if flags & FLAG_CRC32 else 0)
    if total > remaining:
        raise MessageError(f"truncated message: header announces {total} bytes, only {remaining} present")
    return codec, flags, n_scalars, d, length, total, (reserved if flags & FLAG_KEY else None)


def message_sizes(buf: bytes | memoryview, offset: int = 0) -> tuple[int, int]:
    """``(total, payload)`` bytes of the message that starts at ``offset`` (header checked, CRC not)."""
    _, _, _, _, payload, total, _ = _parse_header(memoryview(buf).cast("B"), offset)
    return total, payload


def message_length(buf: bytes | memoryview, offset: int = 0) -> int:
    """Total size in bytes of the message that starts at ``offset`` (header checked)."""
    return message_sizes(buf, offset)[0]


def unpack_message(
    buf: bytes | bytearray | memoryview | np.ndarray,
    codec: int | None = None,
    d: int | None = None,
    exact: bool = True,
) -> Message:
    """Parse and validate one message; raise :class:`MessageError` on anything wrong.

    ``codec`` and ``d``, when given, must match the header. With ``exact`` the buffer must
    hold exactly one message (no trailing bytes).
    """
    view = byte_view(buf).cast("B")
    msg_codec, flags, n_scalars, msg_d, length, total, fingerprint = _parse_header(view, 0)
    if exact and total != len(view):
        raise MessageError(f"oversized buffer: message is {total} bytes but {len(view)} were given")
    if codec is not None and msg_codec != codec:
        raise MessageError(f"wrong codec: message has codec id {msg_codec}, decoder expects {codec}")
    if d is not None and msg_d != d:
        raise MessageError(f"dimension mismatch: message has d={msg_d}, decoder expects d={d}")
    if flags & FLAG_CRC32:
        _check_crc(view, total)
    return _message_at(view, msg_codec, msg_d, n_scalars, length, total, fingerprint)


def _message_at(
    view: memoryview, codec: int, d: int, n_scalars: int, length: int, total: int, fingerprint: int | None
) -> Message:
    """The :class:`Message` of a checked header: its scalars and a view of its ``length`` payload bytes."""
    start = HEADER_BYTES + 8 * n_scalars
    scalars = struct.unpack_from(f"<{n_scalars}d", view, HEADER_BYTES) if n_scalars else ()
    return Message(codec, d, scalars, view[start : start + length], total, fingerprint)


def _check_crc(view: memoryview, total: int) -> None:
    """:class:`MessageError` unless the CRC-32 trailer of the ``total``-byte message in ``view`` is right."""
    (stored,) = struct.unpack_from("<I", view, total - CRC_BYTES)
    computed = crc32(view[: total - CRC_BYTES])
    if stored != computed:
        raise MessageError(f"CRC32 mismatch (stored 0x{stored:08x}, computed 0x{computed:08x}): corrupt message")


def split_messages(buf: bytes | memoryview) -> list[memoryview]:
    """Split a concatenation of messages into one view per message."""
    view = memoryview(buf).cast("B")
    out, offset = [], 0
    while offset < len(view):
        total = message_length(view, offset)
        out.append(view[offset : offset + total])
        offset += total
    return out
