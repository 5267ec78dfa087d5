"""Alike messages (one length, byte-identical fixed headers: a rank's workers with one codec), held and
validated together.

:class:`MessageRows` keeps messages as the rows of ``(m, size)`` uint8 blocks (``Compressor.encode_many``'s
buffer, the master's inbox of a gather with announced sizes) and builds a memoryview only for the
message that is indexed. :func:`unpack_uniform` validates alike messages at once: a list of buffers
with one vectorized header comparison, :class:`MessageRows` with array operations on the blocks
(:func:`unpack_rows`, giving :class:`MessageBlocks`: no Python object per message unless one is asked for).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from itertools import accumulate
from typing import overload

import numpy as np
from isal.isal_zlib import crc32

from ._parts import Parted
from .errors import MessageError
from .message import CRC_BYTES, FINGERPRINT_AT, HEADER_BYTES, Message, byte_view, unpack_message
from .packed import PackedMessages

_FIXED = np.r_[0:FINGERPRINT_AT, FINGERPRINT_AT + 2 : HEADER_BYTES]  # the header bytes but the key fingerprint


class MessageRows(Parted[memoryview]):
    """A sequence of messages stored as the rows of C-contiguous ``(m, size)`` uint8 ``blocks`` (the
    messages of a block are of one size; blocks may differ): ``rows[i]`` is a read-only memoryview of
    message i, built when indexed; a slice is again a :class:`MessageRows`."""

    __slots__ = ("_starts", "blocks", "flat")

    def __init__(self, blocks: Iterable[np.ndarray]) -> None:
        kept = []
        for block in blocks:
            if not (isinstance(block, np.ndarray) and block.dtype == np.uint8 and block.ndim == 2):
                raise ValueError(f"message rows are 2-D uint8 arrays, got {type(block).__name__} {block!r:.60}")
            if not block.flags.c_contiguous:
                raise ValueError("message rows must be C-contiguous")
            if len(block):
                view = block.view()
                view.flags.writeable = False
                kept.append(view)
        self.blocks: tuple[np.ndarray, ...] = tuple(kept)
        self.flat = tuple(byte_view(block.reshape(-1)) for block in self.blocks)  # each block's bytes
        self._starts = [0, *accumulate(len(block) for block in self.blocks)]

    @classmethod
    def joined(cls, parts: Iterable[MessageRows]) -> MessageRows:
        """The messages of ``parts`` one after the other (their blocks, not copied)."""
        return cls(block for part in parts for block in part.blocks)

    @overload
    def __getitem__(self, index: int) -> memoryview: ...

    @overload
    def __getitem__(self, index: slice) -> MessageRows: ...

    def __getitem__(self, index: int | slice) -> memoryview | MessageRows:
        if isinstance(index, slice):
            bounds = self._slice_bounds(index, "message rows")
            return MessageRows(block[a:b] for block, (a, b) in zip(self.blocks, bounds, strict=True))
        b, j = self._locate(index)
        size = self.blocks[b].shape[1]
        return self.flat[b][j * size : (j + 1) * size]

    def __iter__(self) -> Iterator[memoryview]:
        for block, flat in zip(self.blocks, self.flat, strict=True):
            size = block.shape[1]
            yield from (flat[j : j + size] for j in range(0, len(flat), size)) if size else [flat] * len(block)

    def lengths(self) -> np.ndarray:
        """Every message's length in bytes (int64)."""
        return np.repeat([block.shape[1] for block in self.blocks], [len(block) for block in self.blocks]).astype(
            np.int64
        )

    def per_block(self) -> list[MessageRows]:
        """The messages of each block, a :class:`MessageRows` each."""
        return [MessageRows([block]) for block in self.blocks]


def message_lengths(messages: Sequence[Sized]) -> np.ndarray:
    """The length in bytes of every message (int64): one array operation for :class:`MessageRows` and
    :class:`mpicomp.wire.PackedMessages`."""
    if isinstance(messages, (MessageRows, PackedMessages)):
        return messages.lengths()
    return np.fromiter((len(message) for message in messages), dtype=np.int64, count=len(messages))


@dataclass(frozen=True)
class MessageBlock:
    """Validated messages of one block: row j's codec ``scalars[j]`` (``(m, n_scalars)`` float64) and
    payload ``payloads[j]`` (``(m, L)`` uint8, a strided read-only view of the block's payload columns), and
    for a codec with shared randomness row j's key fingerprint ``fingerprints[j]``."""

    scalars: np.ndarray
    payloads: np.ndarray
    rows: memoryview  # the block's bytes, flat (the payloads' owner, for the messages' views)
    fingerprints: np.ndarray | None = None


class MessageBlocks(Parted[Message]):
    """Validated alike messages (one ``codec``, ``d``, ``size`` in bytes and fixed header, but for the key
    fingerprint of a codec with shared randomness; the payload at offset ``start``) as :class:`MessageBlock` s;
    ``messages[i]`` is the :class:`Message` that ``unpack_message`` gives, built when indexed."""

    def __init__(self, codec: int, d: int, size: int, start: int, blocks: Sequence[MessageBlock]) -> None:
        self.codec, self.d, self.size, self.start = codec, d, size, start
        self.blocks = tuple(blocks)
        self._starts = [0, *accumulate(len(block.payloads) for block in self.blocks)]

    @overload
    def __getitem__(self, index: int) -> Message: ...

    @overload
    def __getitem__(self, index: slice) -> list[Message]: ...

    def __getitem__(self, index: int | slice) -> Message | list[Message]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        b, j = self._locate(index)
        return self._message(self.blocks[b], j)

    def _message(self, block: MessageBlock, j: int) -> Message:
        offset = j * self.size + self.start
        payload = block.rows[offset : offset + block.payloads.shape[1]]
        fingerprint = None if block.fingerprints is None else int(block.fingerprints[j])
        return Message(self.codec, self.d, tuple(block.scalars[j].tolist()), payload, self.size, fingerprint)

    def __iter__(self) -> Iterator[Message]:
        for block in self.blocks:
            yield from (self._message(block, j) for j in range(len(block.payloads)))


def unpack_rows(rows: MessageRows, codec: int, d: int, fingerprints: np.ndarray | None = None) -> MessageBlocks | None:
    """:func:`unpack_uniform` of messages held as rows: the first message validated
    in full (``unpack_message(rows[0], codec, d)``), every other row's fixed header compared with its
    header in one array comparison per block (and its key fingerprint with ``fingerprints``), and (with the CRC-32
    flag) every row's checksum; ``None`` when a message is not alike (unpack them one by one: that names the bad
    one)."""
    if not len(rows):
        return MessageBlocks(codec, d, 0, 0, ())
    keyed = fingerprints is not None
    if not alike_rows(rows, keyed) or (first := _first_alike(rows[0], codec, d, fingerprints)) is None:
        return None
    size = first.nbytes
    start = HEADER_BYTES + 8 * len(first.scalars)
    stop = start + len(first.payload)
    blocks = []
    for block, flat, first_row in zip(rows.blocks, rows.flat, rows.block_starts(), strict=True):
        own = None
        if fingerprints is not None:
            own = fingerprints[first_row : first_row + len(block)].astype(np.uint16)
            carried = np.ascontiguousarray(block[:, FINGERPRINT_AT : FINGERPRINT_AT + 2]).view("<u2").reshape(-1)
            if not np.array_equal(carried, own):
                return None
        if stop < size and not checksums_right(block, stop):
            return None
        scalars = np.ascontiguousarray(block[:, HEADER_BYTES:start]).view("<f8").astype(np.float64)
        blocks.append(MessageBlock(scalars, block[:, start:stop], flat, own))
    return MessageBlocks(codec, d, size, start, blocks)


def checksums_right(block: np.ndarray, stop: int) -> bool:
    """Whether every row of ``block`` holds at ``stop`` the CRC-32 of its first ``stop`` bytes."""
    stored = np.ascontiguousarray(block[:, stop : stop + CRC_BYTES]).view("<u4").reshape(-1)
    computed = np.fromiter((crc32(row[:stop]) for row in block), dtype=np.uint32, count=len(block))
    return bool(np.array_equal(stored, computed))


def alike_headers(views: Sequence[memoryview], keyed: bool = False) -> bool:
    """Whether the (non-empty) byte views are of one length and start with byte-identical fixed headers (but for
    their key fingerprints when ``keyed``)."""
    size = len(views[0])
    if size < HEADER_BYTES:
        return False
    if keyed:
        head, tail = views[0][:FINGERPRINT_AT], views[0][FINGERPRINT_AT + 2 : HEADER_BYTES]
        return all(
            len(view) == size and view[:FINGERPRINT_AT] == head and view[FINGERPRINT_AT + 2 : HEADER_BYTES] == tail
            for view in views
        )
    header = views[0][:HEADER_BYTES]
    return all(len(view) == size and view[:HEADER_BYTES] == header for view in views)


def alike_rows(rows: MessageRows, keyed: bool = False) -> bool:
    """:func:`alike_headers` of (non-empty) message rows: one array comparison per block."""
    size = rows.blocks[0].shape[1]
    if size < HEADER_BYTES:
        return False
    columns = _FIXED if keyed else slice(0, HEADER_BYTES)
    header = rows.blocks[0][0, columns]
    return all(block.shape[1] == size and (block[:, columns] == header).all() for block in rows.blocks)


def unpack_uniform(
    bufs: Sequence[bytes | memoryview], codec: int, d: int, fingerprints: np.ndarray | None = None
) -> list[Message] | MessageBlocks | None:
    """:func:`unpack_message` ``(buf, codec, d)`` of every buffer, the same messages, when they are alike:
    of one length, every fixed header byte for byte the first's, and (with the CRC-32 flag) every checksum right;
    the first is validated in full, the others' headers compared with its (:func:`unpack_rows` for
    :class:`MessageRows`: as arrays). Without ``fingerprints`` no message may carry a key fingerprint; with them
    (a codec with shared randomness) message j must carry ``fingerprints[j]``, the decoder's key's. ``None`` when
    they are not alike (unpack them one by one: that names the bad one)."""
    if isinstance(bufs, MessageRows):
        return unpack_rows(bufs, codec, d, fingerprints)
    if not bufs:
        return []
    views = [byte_view(buf).cast("B") for buf in bufs]
    keyed = fingerprints is not None
    if not alike_headers(views, keyed) or (first := _first_alike(views[0], codec, d, fingerprints)) is None:
        return None
    carried: list[int | None] = [None] * len(views)
    if fingerprints is not None:
        carried = [int(fingerprint) for fingerprint in fingerprints]
        if any(
            struct.unpack_from("<H", view, FINGERPRINT_AT)[0] != own for view, own in zip(views, carried, strict=True)
        ):
            return None
    size = len(views[0])
    n_scalars = len(first.scalars)
    start = HEADER_BYTES + 8 * n_scalars
    stop = start + len(first.payload)
    if stop < size and any(struct.unpack_from("<I", view, stop)[0] != crc32(view[:stop]) for view in views):
        return None
    rest = views[1:]  # the first is unpacked already
    scalars: list[tuple[float, ...]] = [()] * len(rest)
    if n_scalars and rest:
        packed = b"".join(view[HEADER_BYTES:start] for view in rest)
        scalars = list(struct.iter_unpack(f"<{n_scalars}d", packed))
    return [
        first,
        *(
            Message(codec, d, values, view[start:stop], size, own)
            for view, values, own in zip(rest, scalars, carried[1:], strict=True)
        ),
    ]


def _first_alike(view: memoryview, codec: int, d: int, fingerprints: np.ndarray | None) -> Message | None:
    """The first of alike messages, validated in full; None if it is bad, or carries a key fingerprint other than
    ``fingerprints[0]`` (none without ``fingerprints``)."""
    try:
        first = unpack_message(view, codec, d)
    except MessageError:
        return None
    expected = None if fingerprints is None else int(fingerprints[0])
    return first if first.key_fingerprint == expected else None
