"""Byte accounting: what every round really moves, split into payload, header and control.

An upload (one logical worker's contribution to one ``gather``) and a downlink message are
concatenations of self-delimiting mpicomp messages (``b""`` for a skipped worker). Per
message, ``payload`` is the announced payload length L and ``header`` is everything else
(fixed header, codec scalars, CRC-32 trailer when present): ``header = message_length - L``.

Control bytes are the size prefixes the protocol sends, counted per logical worker so the
numbers do not depend on how workers are spread over ranks:

* uplink: one int64 (:data:`SIZE_PREFIX_BYTES` = 8 bytes) per worker per ``gather``, sent
  even for a skipped worker (it announces the length 0);
* downlink: one int64 (8 bytes) per ``broadcast``, the message length.

They are counted the same when every rank knows the sizes ahead (a codec of fixed message size:
``gather(..., size=)``, ``broadcast(..., size=)``) and the transport does not send them: a message
on a real network carries its length, so the counts do not depend on that shortcut.

Switch aggregations (``integer_sum``, ``max_agree``, ``flagged_sum``, ``fallback_sum``) are counted as
the frames a real switch would see (:class:`mpicomp.comm.packets.Frame`): per worker, its values are
``payload`` (padded to whole packets where the format pads) and, per packet, the Ethernet/IPv4(/UDP)
headers, the format's own header and the FCS are ``header``; no control bytes (every rank knows the
stream lengths). The switch's multicast of the aggregate is counted once, as downlink, the same way.
``switch_packets`` counts the packets one worker sent through the switch, ``overflow_packets`` the
aggregate packets flagged as overflowed (ATP), ``fallback_bytes`` the bytes of their re-sending to
the master and back (also counted in the payload and header above).

The downlink is counted once, as what the master sends (not once per receiving rank).
Per worker, ``up_bytes[w] = payload + header + control`` of worker ``w``, so
``sum(up_bytes) == up_payload + up_header + up_control``; ``uploads[w]`` counts its
non-empty contributions (0 or 1 per ``gather``, 1 per switch aggregation) and ``skips[w]``
its empty uploads (a skipped worker: it costs only its size prefix).

Only the master sees every upload, so only the master's counter is complete; a counter
on another rank counts its own workers' uploads and the downlink (``RoundBytes.complete``
says which).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

import numpy as np

from ..wire import HEADER_BYTES, MessageRows, PackedMessages, alike_headers, alike_rows, byte_view, message_sizes
from ..wire.packed import packed_splits

SIZE_PREFIX_BYTES = 8


def split_bytes(buf: bytes | memoryview | np.ndarray) -> tuple[int, int]:
    """``(payload, header)`` bytes of a concatenation of messages; ``(0, 0)`` for ``b""``.

    Parses headers only (no CRC check): the receiver's decoder validates the rest. A buffer
    that is not a concatenation of whole messages raises :class:`mpicomp.wire.MessageError`.
    """
    view = byte_view(buf).cast("B")
    if not view:
        return 0, 0
    if (whole := whole_message_split(view)) is not None:
        return whole
    payload = header = offset = 0
    while offset < len(view):
        total, length = message_sizes(view, offset)
        payload += length
        header += total - length
        offset += total
    return payload, header


def split_alike(uploads: Sequence[bytes | memoryview]) -> tuple[int, int] | None:
    """``(payload, header)`` bytes of every upload when all are one whole message each, of one length and
    with byte-identical fixed headers but for their key fingerprints, which do not change a message's sizes (a
    rank's workers with one codec: one split serves all), else None. :class:`mpicomp.wire.MessageRows` compare their
    headers as arrays, block by block."""
    if isinstance(uploads, PackedMessages):
        return None  # of data-dependent lengths: split_each reads their headers as arrays
    if isinstance(uploads, MessageRows):
        if not (uploads.blocks and alike_rows(uploads, keyed=True)):
            return None
        first = uploads[0]
    else:
        views = [byte_view(upload).cast("B") for upload in uploads]
        if not (views and alike_headers(views, keyed=True)):
            return None
        first = views[0]
    return whole_message_split(first)


_SPLITS: dict[tuple[bytes, int], tuple[int, int] | None] = {}  # whole_message_split's memory
_SPLITS_KEPT = 256  # kinds of message remembered at most (a run has a few; fuzzed input, many)


def whole_message_split(view: memoryview) -> tuple[int, int] | None:
    """``(payload, header)`` bytes of ``view`` when it holds exactly one message, else None (a bad header
    raises :class:`mpicomp.wire.MessageError`). Its 16 header bytes and its length decide the answer, which is
    remembered by them: a run's few kinds of message are parsed once each, not once per exchange."""
    kind = (bytes(view[:HEADER_BYTES]), len(view))
    if kind not in _SPLITS:
        total, payload = message_sizes(view)
        if len(_SPLITS) >= _SPLITS_KEPT:
            _SPLITS.clear()
        _SPLITS[kind] = (payload, total - payload) if total == len(view) else None
    return _SPLITS[kind]


def split_each(uploads: Sequence[bytes | memoryview]) -> tuple[np.ndarray, np.ndarray]:
    """``(payload, header)`` bytes of every upload (int64 arrays, :func:`split_bytes` of each), split once
    when they are alike (:func:`split_alike`; message rows block by block), from their headers as arrays for packed
    messages (:func:`mpicomp.wire.packed.packed_splits`)."""
    alike = split_alike(uploads)
    if alike is not None:
        return np.full(len(uploads), alike[0], dtype=np.int64), np.full(len(uploads), alike[1], dtype=np.int64)
    if isinstance(uploads, PackedMessages) and (splits := packed_splits(uploads)) is not None:
        return splits
    if isinstance(uploads, MessageRows) and len(uploads.blocks) > 1:
        parts = [split_each(block) for block in uploads.per_block()]
        return np.concatenate([payload for payload, _ in parts]), np.concatenate([header for _, header in parts])
    split = np.array([split_bytes(upload) for upload in uploads], dtype=np.int64).reshape(-1, 2)
    return split[:, 0], split[:, 1]


@dataclass(frozen=True, eq=False)
class RoundBytes:
    """Bytes counted in one round (see the module docstring for what each field holds).

    ``up_bytes``, ``uploads`` and ``skips`` (int64) have one entry per logical worker; entries
    of workers this rank does not see are 0 unless ``complete``.
    """

    up_payload: int
    up_header: int
    up_control: int
    down_payload: int
    down_header: int
    down_control: int
    switch_packets: int  # packets one worker sent through the switch (the time model's window)
    overflow_packets: int  # aggregate packets the switch flagged as overflowed (ATP falls back on them)
    fallback_bytes: int  # bytes of overflowed packets re-sent to the master and back (ATP), also in the above
    up_bytes: np.ndarray
    uploads: np.ndarray
    skips: np.ndarray
    complete: bool

    @classmethod
    def zeros(cls, n_workers: int, complete: bool) -> RoundBytes:
        """Nothing counted yet."""
        empty = np.zeros(n_workers, dtype=np.int64)
        return cls(
            0, 0, 0, 0, 0, 0, 0, 0, 0, up_bytes=empty, uploads=empty.copy(), skips=empty.copy(), complete=complete
        )

    @property
    def up_total(self) -> int:
        return self.up_payload + self.up_header + self.up_control

    @property
    def down_bytes(self) -> int:
        """Everything the master sent down: payload + header + control."""
        return self.down_payload + self.down_header + self.down_control

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RoundBytes):
            return NotImplemented
        return all(np.array_equal(getattr(self, f.name), getattr(other, f.name)) for f in fields(self))

    def __add__(self, other: RoundBytes) -> RoundBytes:
        if len(self.up_bytes) != len(other.up_bytes):
            raise ValueError(f"cannot add counts of {len(self.up_bytes)} and {len(other.up_bytes)} workers")
        sums = {name: getattr(self, name) + getattr(other, name) for name in _SUMMED}
        return RoundBytes(**sums, complete=self.complete and other.complete)

    def to_dict(self) -> dict[str, int | bool | list[int]]:
        """Plain Python values (arrays as lists), e.g. for JSON."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


_SUMMED = tuple(f.name for f in fields(RoundBytes) if f.name != "complete")  # what __add__ adds


def _plain(value: np.ndarray | np.integer | int | bool) -> int | bool | list[int]:
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value if isinstance(value, bool) else int(value)


class ByteCounter:
    """Accumulates one round's counts until :meth:`end_round` returns and resets them.

    ``complete`` is True for a counter that sees every worker's upload (the master's).
    """

    def __init__(self, n_workers: int, complete: bool) -> None:
        self.n_workers = n_workers
        self.complete = complete
        self.totals = RoundBytes.zeros(n_workers, complete)
        self._reset()

    def _reset(self) -> None:
        self._scalars = dict.fromkeys(
            (
                "up_payload",
                "up_header",
                "up_control",
                "down_payload",
                "down_header",
                "down_control",
                "switch_packets",
                "overflow_packets",
                "fallback_bytes",
            ),
            0,
        )
        self._up_bytes = np.zeros(self.n_workers, dtype=np.int64)
        self._uploads = np.zeros(self.n_workers, dtype=np.int64)
        self._skips = np.zeros(self.n_workers, dtype=np.int64)
        self._alike: dict[tuple[int, int, int], int] = {}  # (first, stop, bytes of each) -> gathers, see _snapshot

    def _snapshot(self) -> RoundBytes:
        for (first, stop, each), gathers in self._alike.items():  # a few NumPy calls a round, not one per gather
            self._up_bytes[first:stop] += gathers * each
            self._uploads[first:stop] += gathers
        return RoundBytes(
            **self._scalars, up_bytes=self._up_bytes, uploads=self._uploads, skips=self._skips, complete=self.complete
        )

    def count_uploads(self, workers: range, uploads: Sequence[bytes | memoryview]) -> None:
        """Count one ``gather``: ``uploads[j]`` is what worker ``workers[j]`` sent (a range of step 1)."""
        if workers.step != 1 or len(workers) != len(uploads):
            raise ValueError(f"count_uploads takes a range of step 1 with one worker per upload, got {workers}")
        ids, count = slice(workers.start, workers.stop), len(uploads)
        self._scalars["up_control"] += SIZE_PREFIX_BYTES * count
        alike = split_alike(uploads)
        if alike is not None:  # one split serves all: scalars, no per-upload arrays
            payload, header = alike
            self._scalars["up_payload"] += count * payload
            self._scalars["up_header"] += count * header
            alike_key = (workers.start, workers.stop, payload + header + SIZE_PREFIX_BYTES)
            self._alike[alike_key] = self._alike.get(alike_key, 0) + 1
            return
        payloads, headers = split_each(uploads)
        message_bytes = payloads + headers  # 0 for a skip (b""), at least a header otherwise
        sent = message_bytes > 0
        self._scalars["up_payload"] += int(payloads.sum())
        self._scalars["up_header"] += int(headers.sum())
        self._up_bytes[ids] += message_bytes + SIZE_PREFIX_BYTES
        self._uploads[ids] += sent
        self._skips[ids] += ~sent

    def count_packets(
        self, workers: Iterable[int], payload: int, header: int, packets: int = 0, fallback: bool = False
    ) -> None:
        """Count one switch aggregation: each of ``workers`` sent ``packets`` frames of ``payload`` + ``header``
        bytes (``fallback``: re-sent overflowed packets, also counted in ``fallback_bytes``)."""
        self._scalars["switch_packets"] += packets
        for worker in workers:
            self._scalars["up_payload"] += payload
            self._scalars["up_header"] += header
            self._scalars["fallback_bytes"] += (payload + header) * fallback
            self._up_bytes[worker] += payload + header
            self._uploads[worker] += not fallback

    def count_packet_downlink(self, payload: int, header: int, fallback: bool = False) -> None:
        """Count the switch's multicast of an aggregate (once), or the master's reply to a fallback."""
        self._scalars["down_payload"] += payload
        self._scalars["down_header"] += header
        self._scalars["fallback_bytes"] += (payload + header) * fallback

    def count_overflow(self, packets: int) -> None:
        """Count aggregate packets the switch flagged as overflowed (every rank sees the same flags)."""
        self._scalars["overflow_packets"] += packets

    def count_downlink(self, message: bytes | memoryview) -> None:
        """Count one ``broadcast`` of ``message`` (once, as the master sends it)."""
        payload, header = split_bytes(message)
        self._scalars["down_payload"] += payload
        self._scalars["down_header"] += header
        self._scalars["down_control"] += SIZE_PREFIX_BYTES

    def end_round(self) -> RoundBytes:
        """The counts since the previous call; also added to :attr:`totals` (all rounds so far)."""
        counts = self._snapshot()
        self.totals = self.totals + counts
        self._reset()
        return counts
