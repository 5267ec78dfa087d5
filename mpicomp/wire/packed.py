"""Messages of data-dependent lengths back to back (a rank's workers with a codec such as QSGD), held, framed
and validated together: the counterpart of :mod:`mpicomp.wire.rows` for messages whose lengths differ.

:class:`PackedMessages` keeps messages in parts, each a 1-D uint8 buffer and the offsets of its messages
(``Compressor.encode_many``'s buffer, the master's inbox of a gather), and builds a memoryview only for the
message that is indexed. :func:`frame_packed` frames every message of a buffer with array operations, and
:func:`unpack_packed` validates them the same way (giving :class:`PackedBlocks`: no Python object per message
unless one is asked for).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import overload

import numpy as np
from isal.isal_zlib import crc32

from ._parts import Parted
from .errors import MessageError
from .message import (
    CRC_BYTES,
    FINGERPRINT_AT,
    FLAG_CRC32,
    FLAG_KEY,
    HEADER_BYTES,
    MAGIC,
    VERSION,
    Message,
    _header,
    byte_view,
    overhead_bytes,
    payload_offset,
    unpack_message,
)

_LENGTH_AT = 12  # the header's u32 payload length field
_HEADER_COLUMNS = np.arange(HEADER_BYTES)
_MAGIC_VERSION = np.frombuffer(MAGIC + bytes([VERSION]), np.uint8)


class PackedMessages(Parted[memoryview]):
    """A sequence of messages stored back to back in ``parts``: each ``(data, offsets)``, a read-only 1-D uint8
    array and int64 offsets (one more than its messages, nondecreasing), its message j at
    ``data[offsets[j] : offsets[j + 1]]``; ``messages[i]`` is a read-only memoryview of message i, built when
    indexed; a slice is again a :class:`PackedMessages`."""

    __slots__ = ("_starts", "_views", "parts")

    def __init__(self, parts: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        kept = []
        for data, offsets in parts:
            if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 1):
                raise ValueError(f"packed messages lie in 1-D uint8 arrays, got {type(data).__name__} {data!r:.60}")
            if not data.flags.c_contiguous:
                raise ValueError("packed messages must lie in a contiguous buffer")
            offsets = np.array(offsets, dtype=np.int64)  # a copy of its own, read-only: the layout cannot change
            offsets.flags.writeable = False
            if (
                offsets.ndim != 1
                or offsets.size < 1
                or offsets[0] < 0
                or offsets[-1] > data.size
                or (np.diff(offsets) < 0).any()
            ):
                raise ValueError(f"offsets {offsets!r:.80} are not nondecreasing within a buffer of {data.size} bytes")
            if offsets.size > 1:
                view = data.view()
                view.flags.writeable = False
                kept.append((view, offsets))
        self.parts: tuple[tuple[np.ndarray, np.ndarray], ...] = tuple(kept)
        self._views = tuple(byte_view(data) for data, _ in self.parts)
        self._starts = [0, *accumulate(offsets.size - 1 for _, offsets in self.parts)]

    @classmethod
    def joined(cls, parts: Iterable[PackedMessages]) -> PackedMessages:
        """The messages of ``parts`` one after the other (their buffers, not copied)."""
        return cls(part for packed in parts for part in packed.parts)

    @overload
    def __getitem__(self, index: int) -> memoryview: ...

    @overload
    def __getitem__(self, index: slice) -> PackedMessages: ...

    def __getitem__(self, index: int | slice) -> memoryview | PackedMessages:
        if isinstance(index, slice):
            bounds = self._slice_bounds(index, "packed messages")
            kept = zip(self.parts, bounds, strict=True)
            return PackedMessages((data, offsets[a : b + 1]) for (data, offsets), (a, b) in kept)
        p, j = self._locate(index)
        offsets = self.parts[p][1]
        return self._views[p][int(offsets[j]) : int(offsets[j + 1])].toreadonly()

    def __iter__(self) -> Iterator[memoryview]:
        for (_, offsets), view in zip(self.parts, self._views, strict=True):
            bounds = offsets.tolist()
            yield from (view[start:stop] for start, stop in zip(bounds[:-1], bounds[1:], strict=True))

    def lengths(self) -> np.ndarray:
        """Every message's length in bytes (int64)."""
        return np.concatenate([np.empty(0, dtype=np.int64), *(np.diff(offsets) for _, offsets in self.parts)])

    def contiguous(self) -> np.ndarray | None:
        """The bytes of every message back to back as one uint8 array, a view of the one part that holds them all;
        None when they lie in several parts."""
        if len(self.parts) > 1:
            return None
        if not self.parts:
            return np.empty(0, dtype=np.uint8)
        data, offsets = self.parts[0]
        return data[offsets[0] : offsets[-1]]


def frame_packed(
    data: np.ndarray,
    offsets: np.ndarray,
    codec: int,
    d: int,
    scalars: np.ndarray,
    crc: bool = True,
    fingerprints: np.ndarray | None = None,
) -> None:
    """:func:`mpicomp.wire.frame_message` for every message of ``data`` (message j at ``data[offsets[j] :
    offsets[j + 1]]``, its payload in place after the header and ``scalars[j]``, ``(m, n_scalars)``, and before
    the CRC-32 trailer; for a codec with shared randomness its key fingerprint ``fingerprints[j]``): the header,
    the same for every message but its payload length and fingerprint, is built once."""
    n_scalars = scalars.shape[1]
    starts, totals = offsets[:-1], np.diff(offsets)
    payloads = totals - overhead_bytes(n_scalars, crc)
    header = np.frombuffer(_header(codec, d, n_scalars, 0, crc, None if fingerprints is None else 0), np.uint8)
    data[starts[:, None] + _HEADER_COLUMNS] = header
    if fingerprints is not None:
        columns = starts[:, None] + np.arange(FINGERPRINT_AT, FINGERPRINT_AT + 2)
        data[columns] = np.asarray(fingerprints, dtype="<u2")[:, None].view(np.uint8)
    data[starts[:, None] + np.arange(_LENGTH_AT, HEADER_BYTES)] = payloads.astype("<u4")[:, None].view(np.uint8)
    body = payload_offset(n_scalars)
    data[starts[:, None] + np.arange(HEADER_BYTES, body)] = np.ascontiguousarray(scalars, "<f8").view(np.uint8)
    if crc:
        ends = offsets[1:] - CRC_BYTES
        bounds = zip(starts.tolist(), ends.tolist(), strict=True)
        sums = np.array([crc32(data[start:end]) for start, end in bounds], dtype="<u4")
        data[ends[:, None] + np.arange(CRC_BYTES)] = sums[:, None].view(np.uint8)


@dataclass(frozen=True)
class PackedBlock:
    """Validated messages of one part: message j's codec ``scalars[j]`` (``(m, n_scalars)`` float64), its payload
    at ``data[starts[j] : starts[j] + lengths[j]]`` (int64 arrays), and for a codec with shared randomness its key
    fingerprint ``fingerprints[j]``."""

    scalars: np.ndarray
    data: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    fingerprints: np.ndarray | None = None


class PackedBlocks(Sequence[Message]):
    """Validated packed messages of one ``codec`` and ``d`` (one header but for the payload length and a shared
    key's fingerprint) as :class:`PackedBlock` s; ``messages[i]`` is the :class:`Message` that ``unpack_message``
    gives, built when indexed."""

    def __init__(self, codec: int, d: int, packed: PackedMessages, blocks: Sequence[PackedBlock]) -> None:
        self.codec, self.d, self.packed = codec, d, packed
        self.blocks = tuple(blocks)

    def __len__(self) -> int:
        return len(self.packed)

    @overload
    def __getitem__(self, index: int) -> Message: ...

    @overload
    def __getitem__(self, index: slice) -> list[Message]: ...

    def __getitem__(self, index: int | slice) -> Message | list[Message]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return unpack_message(self.packed[index], self.codec, self.d)

    def __iter__(self) -> Iterator[Message]:
        yield from (unpack_message(view, self.codec, self.d) for view in self.packed)

    def block_starts(self) -> list[int]:
        """The index of every block's first message."""
        return self.packed.block_starts()


def unpack_packed(
    messages: PackedMessages, codec: int, d: int, fingerprints: np.ndarray | None = None
) -> PackedBlocks | None:
    """``unpack_message(messages[i], codec, d)`` of every message, checked with array operations: the first
    validated in full, every other's header compared with its but for the payload length (and the key fingerprint,
    compared with ``fingerprints`` for a codec with shared randomness), each length against its header and (with the
    CRC-32 flag) each checksum. ``None`` when a message is not alike (unpack them one by one: that names the bad
    one)."""
    if not len(messages):
        return PackedBlocks(codec, d, messages, ())
    try:
        first = unpack_message(messages[0], codec, d)
    except MessageError:
        return None
    if first.key_fingerprint != (None if fingerprints is None else int(fingerprints[0])):
        return None
    n_scalars = len(first.scalars)
    overhead = first.overhead_bytes
    crc = bool(messages[0][4] & FLAG_CRC32)
    fixed = (
        np.r_[0:FINGERPRINT_AT, FINGERPRINT_AT + 2 : _LENGTH_AT] if fingerprints is not None else np.r_[0:_LENGTH_AT]
    )
    expected = np.frombuffer(messages[0], np.uint8)[fixed]
    blocks = []
    for (data, offsets), first_row in zip(messages.parts, messages.block_starts(), strict=True):
        starts, totals = offsets[:-1], np.diff(offsets)
        if (totals < overhead).any():
            return None
        heads = data[starts[:, None] + _HEADER_COLUMNS]
        if not (heads[:, fixed] == expected).all():
            return None
        declared = np.ascontiguousarray(heads[:, _LENGTH_AT:]).view("<u4").reshape(-1)
        if not np.array_equal(declared, totals - overhead):
            return None
        own = None
        if fingerprints is not None:
            own = fingerprints[first_row : first_row + starts.size].astype(np.uint16)
            if not np.array_equal(
                np.ascontiguousarray(heads[:, FINGERPRINT_AT : FINGERPRINT_AT + 2]).view("<u2")[:, 0], own
            ):
                return None
        if crc and not _checksums_right(data, offsets):
            return None
        body = payload_offset(n_scalars)
        scalars = data[starts[:, None] + np.arange(HEADER_BYTES, body)].view("<f8").astype(np.float64)
        lengths = totals - overhead
        blocks.append(PackedBlock(scalars.reshape(starts.size, n_scalars), data, starts + body, lengths, own))
    return PackedBlocks(codec, d, messages, blocks)


def packed_splits(messages: PackedMessages) -> tuple[np.ndarray, np.ndarray] | None:
    """``(payload, header)`` bytes of every message (int64 arrays) from their headers, read as arrays, when each
    is one message by its header (magic, version, known flags, and the size its header announces its own);
    None otherwise (split them one by one: that names the bad one)."""
    payloads, headers = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.int64)]
    for data, offsets in messages.parts:
        starts, totals = offsets[:-1], np.diff(offsets)
        if (totals < HEADER_BYTES).any():
            return None
        heads = data[starts[:, None] + _HEADER_COLUMNS]
        flags = heads[:, 4].astype(np.int64)
        reserved = heads[:, FINGERPRINT_AT].astype(np.int64) | heads[:, FINGERPRINT_AT + 1]
        if not (
            (heads[:, :3] == _MAGIC_VERSION).all()
            and (flags & ~(FLAG_CRC32 | FLAG_KEY) == 0).all()
            and ((flags & FLAG_KEY != 0) | (reserved == 0)).all()  # the fingerprint field is 0 without its flag
        ):
            return None
        payload = np.ascontiguousarray(heads[:, _LENGTH_AT:]).view("<u4").reshape(-1).astype(np.int64)
        overhead = HEADER_BYTES + 8 * heads[:, 5].astype(np.int64) + CRC_BYTES * (flags & FLAG_CRC32)
        if not np.array_equal(payload + overhead, totals):
            return None
        payloads.append(payload)
        headers.append(overhead)
    return np.concatenate(payloads), np.concatenate(headers)


def _checksums_right(data: np.ndarray, offsets: np.ndarray) -> bool:
    """Whether every message of ``data`` ends with the CRC-32 of its other bytes."""
    bounds = offsets.tolist()
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        if int.from_bytes(data[stop - CRC_BYTES : stop].tobytes(), "little") != crc32(data[start : stop - CRC_BYTES]):
            return False
    return True
