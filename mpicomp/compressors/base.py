"""The compressor contract shared by every codec.

A compressor ``C`` maps ``x in R^d`` to bytes and back. Unbiased ones satisfy
``E C(x) = x`` and ``E||C(x) - x||^2 <= omega ||x||^2``; contractive (biased) ones satisfy
``E||C(x) - x||^2 <= (1 - alpha) ||x||^2``. Every message is framed by
:func:`mpicomp.wire.frame_message`; subclasses only produce codec scalars and a payload.

Buffers: ``encode(x, key, out=)`` writes the message into a caller's byte buffer (the codec's
payload kernel writes straight into it: no copy, no fresh pages), ``decode(buf, d, key, out=)``
into a caller's float64 vector, ``decode_add(buf, total, key, scale)`` adds ``scale`` times the
decoded vector to ``total`` (a model step ``x -= gamma C(m)`` without a temporary), and
``decode_sum(bufs, keys, out, divisor)`` is the master's fused ``(sum_i C(m_i)) / divisor`` in list
order (bit-identical to zeroing ``out``, ``decode_add`` of each, then dividing). Codecs with a fixed payload size implement
:meth:`Compressor.payload_bytes` and :meth:`Compressor._encode_into`; the others :meth:`Compressor._encode`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar

import numpy as np

from ..rng import RandomKey, RoundKeys, key_fingerprints, key_states
from ..timing import CODEC
from ..wire import (
    Message,
    MessageBlocks,
    MessageError,
    MessageFrame,
    MessageRows,
    byte_view,
    frame_message,
    frame_messages,
    overhead_bytes,
    payload_offset,
    unpack_message,
    unpack_uniform,
)
from ..wire.bitpack import parallel_tasks
from ..wire.message import CRC_BYTES, MAX_D
from ..wire.packed import PackedBlocks, PackedMessages, frame_packed, unpack_packed
from .numeric import first_non_finite

T = TypeVar("T")
STACK_BYTES = 1 << 22  # payload bytes stacked per _add_payload_rows call when a list of messages is summed

# Codec ids on the wire; one per compressor class, never reused.
CODEC_IDS = {
    "identity": 1,
    "dither": 2,
    "natural": 3,
    "natdither": 4,
    "randk": 5,
    "topk": 6,
    "block": 7,
    "qsgd": 8,
    "terngrad": 9,
    "sign": 10,
    "compose": 11,
    "stovoq": 12,
    "laq": 13,
    "cross-polytope": 14,
    "hsq": 15,
}

# Every codec defined outside mpicomp travels under this id; its first codec scalar is the codec's
# tag (below), so that a message is decoded by the class that encoded it or raises MessageError.
EXTENSION_CODEC = 255
_EXTENSION_TAGS: dict[int, str] = {}  # tag -> "module:QualName", to refuse a second class with the same tag


def extension_tag(target: str) -> int:
    """The 32-bit wire tag of an outside codec: the first 4 bytes (big-endian) of SHA-256 of its
    ``module:QualName``; sent as an exact float64 scalar."""
    return int.from_bytes(hashlib.sha256(target.encode()).digest()[:4], "big")


def _claim_tag(cls: type) -> int | None:
    """The tag of a compressor class defined outside mpicomp (None inside), checked against every
    other outside class seen in this process: a collision is a TypeError at class creation."""
    if cls.__module__.split(".")[0] == "mpicomp":
        return None
    target = f"{cls.__module__}:{cls.__qualname__}"
    tag = extension_tag(target)
    holder = _EXTENSION_TAGS.setdefault(tag, target)
    if holder != target:
        raise TypeError(f"codec tag 0x{tag:08x} of {target} collides with {holder}; rename one of the classes")
    return tag


# Little-endian float formats for values sent as is (identity, sparsifiers), by their spec name.
VALUE_DTYPES: dict[str, np.dtype] = {"float64": np.dtype("<f8"), "float32": np.dtype("<f4")}


def check_dtype(codec: str, dtype: object) -> str:
    """Validate a spec's value dtype: one of the names in :data:`VALUE_DTYPES`."""
    if dtype not in VALUE_DTYPES:
        raise ValueError(f"{codec}: dtype must be one of {', '.join(VALUE_DTYPES)}, got {dtype!r}")
    return str(dtype)


def check_input(x: np.ndarray, finite: bool = True, ndim: int = 1) -> np.ndarray:
    """Validate a vector (``ndim = 1``) or an ``(m, d)`` array of rows (``ndim = 2``) to compress:
    float32 or float64, and (with ``finite``) all finite; returned C-contiguous."""
    x = np.asarray(x)
    if x.ndim != ndim:
        shape = "1-D vectors" if ndim == 1 else "(m, d) arrays of rows"
        raise ValueError(f"compressors take {shape}, got shape {x.shape}")
    if x.dtype not in (np.float32, np.float64):
        raise ValueError(f"compressors take float32 or float64 vectors, got dtype {x.dtype}")
    x = np.ascontiguousarray(x)
    bad = first_non_finite(x.reshape(-1)) if finite else -1
    if bad >= 0:
        row, column = divmod(bad, x.shape[-1])
        error = non_finite_input(x.reshape(-1, x.shape[-1])[row], column)
        raise error if ndim == 1 else ValueError(f"row {row}: {error}")
    return x


def non_finite_input(x: np.ndarray, bad: int) -> ValueError:
    """The error for a vector to compress whose coordinate ``bad`` is NaN or Inf."""
    return ValueError(f"cannot compress a non-finite vector: x[{bad}] = {x[bad]} (NaN or Inf)")


def message_buffer(out: np.ndarray | None, size: int) -> np.ndarray:
    """``out`` (a writable, contiguous 1-D uint8 array of at least ``size`` bytes), or a new one."""
    if out is None:
        return np.empty(size, dtype=np.uint8)
    if not (isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 1 and out.flags.c_contiguous):
        raise ValueError(
            f"out must be a contiguous 1-D uint8 array, got {type(out).__name__} {getattr(out, 'dtype', '')}"
        )
    if not out.flags.writeable or out.size < size:
        raise ValueError(f"out must be writable and hold {size} bytes (message_capacity); it has {out.size}")
    return out


def check_rows_buffer(out: np.ndarray, count: int, capacity: int | None) -> None:
    """Validate :meth:`Compressor.encode_many`'s ``out``: a writable C-contiguous ``(count, capacity)`` uint8
    array, for a codec of fixed message size (``capacity`` not None)."""
    if capacity is None:
        raise ValueError("out is for codecs of fixed message size; this codec's messages vary with the data")
    if not (isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.flags.c_contiguous and out.flags.writeable):
        raise ValueError(
            f"out must be a writable C-contiguous uint8 array, got {type(out).__name__} {getattr(out, 'dtype', '')}"
        )
    if out.shape != (count, capacity):
        raise ValueError(
            f"out must have shape ({count}, {capacity}): one row of message_capacity per row, got {out.shape}"
        )


def vector_buffer(out: np.ndarray, d: int) -> np.ndarray:
    """Validate a caller's decode target: a writable, contiguous float64 vector of length ``d``."""
    if not (isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == (d,) and out.flags.c_contiguous):
        raise ValueError(
            f"decode target must be a contiguous float64 vector of length {d}, got "
            f"{type(out).__name__} {getattr(out, 'dtype', '')} {getattr(out, 'shape', '')}"
        )
    if not out.flags.writeable:
        raise ValueError("decode target is read-only")
    return out


def rows_buffer(targets: np.ndarray) -> np.ndarray:
    """Validate a caller's rows to add into: a writable, C-contiguous ``(m, d)`` float64 array."""
    if not (isinstance(targets, np.ndarray) and targets.dtype == np.float64 and targets.ndim == 2):
        raise ValueError(
            f"decode targets must be an (m, d) float64 array, got {type(targets).__name__} "
            f"{getattr(targets, 'dtype', '')} {getattr(targets, 'shape', '')}"
        )
    if not (targets.flags.c_contiguous and targets.flags.writeable):
        raise ValueError("decode targets must be C-contiguous and writable")
    return targets


def check_scalar(value: float, what: str, minimum: float = 0.0) -> float:
    """Validate a decoded codec scalar (a norm, a scale): finite and ``>= minimum``."""
    if not np.isfinite(value) or value < minimum:
        raise MessageError(f"invalid {what} {value!r} in message header")
    return float(value)


class Compressor(ABC):
    """Base class: ``encode(x, key) -> message`` and ``decode(buf, d, key) -> float64 vector``.

    Subclasses set ``name`` (the registry name), ``unbiased`` and implement :meth:`expected_bits`,
    either :meth:`_encode` or (fixed payload size) :meth:`payload_bytes` and :meth:`_encode_into`,
    either :meth:`_decode` or :meth:`_decode_into`, plus :meth:`omega` (unbiased) or
    :meth:`alpha` (contractive). Constructor keyword arguments are the spec parameters.
    """

    name: ClassVar[str]
    unbiased: bool  # a class constant, or set per instance (compose, hsq, stovoq)
    n_scalars: int = 0
    checks_finite: bool = False  # True: the codec rejects NaN/Inf in its own pass (compose: per instance)
    crc: bool = True  # append the CRC-32 trailer (a run sets it from [compressor] checksum)
    extension_tag: ClassVar[int | None] = None  # set for classes outside mpicomp (EXTENSION_CODEC)

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in vars(cls) and cls._decode is Compressor._decode and cls._decode_into is Compressor._decode_into:
            raise TypeError(f"compressor {cls.name!r} must implement _decode or _decode_into")
        cls.extension_tag = _claim_tag(cls)

    @property
    def codec_id(self) -> int:
        return CODEC_IDS[self.name] if self.extension_tag is None else EXTENSION_CODEC

    @property
    def framed_scalars(self) -> int:
        """Scalars in the message: the codec's own, after the extension tag of an outside codec."""
        return self.n_scalars + (self.extension_tag is not None)

    def _framed(self, scalars: Sequence[float]) -> tuple[float, ...]:
        """The codec's scalars as framed: an outside codec's tag first."""
        return tuple(scalars) if self.extension_tag is None else (float(self.extension_tag), *scalars)

    @property
    def params(self) -> dict[str, Any]:
        """The spec parameters this instance was built with (name -> value)."""
        return {}

    @property
    def spec(self) -> str:
        """Canonical spec string; ``make(c.spec)`` rebuilds an equal compressor."""
        from .registry import spec_name  # the registry imports this module

        args = ",".join(f"{k}={v}" for k, v in self.params.items())
        name = spec_name(type(self))
        return f"{name}({args})" if args else name

    def __repr__(self) -> str:
        return f"<Compressor {self.spec}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Compressor) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash(self.spec)

    @property
    def uses_shared_key(self) -> bool:
        """True if decoding needs the encoder's key (shared randomness, e.g. Rand-K's indices): such
        messages carry the key's fingerprint, and a decoder given another key raises MessageError."""
        return False

    def payload_bytes(self, d: int) -> int | None:
        """The payload size of every message in dimension d, for codecs whose size does not depend
        on the data (they implement :meth:`_encode_into`); None for the others."""
        return None

    def payload_vector(self, out: np.ndarray | None, d: int) -> np.ndarray | None:
        """The float64 vector that ``encode(x, key, out=out)`` stores verbatim as its payload, as a
        writable view of ``out``, or None (the default: the codec transforms x, or ``out`` is None).
        A caller that computes x there saves the copy: encode then only checks it (zero-copy)."""
        return None

    def message_capacity(self, d: int) -> int | None:
        """Bytes an ``encode(x, key, out=)`` buffer needs in dimension d (None: data-dependent)."""
        size = self.payload_bytes(d)
        return None if size is None else overhead_bytes(self.framed_scalars, self.crc) + size

    def encode(self, x: np.ndarray, key: RandomKey, out: np.ndarray | None = None) -> memoryview:
        """Compress ``x`` into one framed, bit-packed message, a read-only view of its bytes.

        With ``out`` (a writable uint8 array of :meth:`message_capacity` bytes or more) the message
        is written at its start and the view is of ``out``; it stays valid while ``out`` is unchanged.
        An instance encodes one vector at a time (codecs keep scratch buffers from call to call):
        threads that encode at once need an instance each.
        """
        with CODEC.timing():
            x = check_input(x, finite=not self.checks_finite)
            frame = self._frame(x.size)
            fingerprint = key.fingerprint if self.uses_shared_key else None
            if frame is not None:
                buffer = message_buffer(out, frame.total)
                scalars = self._framed(self._encode_into(x, key, frame.payload(buffer)))
                if fingerprint is None:
                    total = frame.write(buffer, scalars)
                else:
                    total = frame_message(
                        buffer, self.codec_id, x.size, scalars, frame.payload_bytes, self.crc, fingerprint
                    )
            else:
                scalars, payload = self._encode(x, key)
                body = np.frombuffer(byte_view(payload).cast("B"), dtype=np.uint8)
                start = payload_offset(self.framed_scalars)
                buffer = message_buffer(out, overhead_bytes(self.framed_scalars, self.crc) + body.size)
                buffer[start : start + body.size] = body
                total = frame_message(
                    buffer, self.codec_id, x.size, self._framed(scalars), body.size, self.crc, fingerprint
                )
            return byte_view(buffer[:total]).toreadonly()

    def _frame(self, d: int) -> MessageFrame | None:
        """The :class:`mpicomp.wire.MessageFrame` of this codec's messages in dimension ``d`` (None for a codec
        of data-dependent size), built once per ``(d, crc)`` and kept: a run frames and checks every message of
        a link with it."""
        frames: dict[tuple[int, bool], MessageFrame | None] = self.__dict__.setdefault("_frames", {})
        layout = (d, self.crc)
        if layout not in frames:
            size = self.payload_bytes(d)
            frames[layout] = (
                None if size is None else MessageFrame.of(self.codec_id, d, self.framed_scalars, size, self.crc)
            )
        return frames[layout]

    def batches_rows(self, d: int) -> bool:
        """Whether :meth:`encode_many` pays for several rows of length ``d`` at once: for vectors short
        enough that the kernels run on one thread (a longer vector's kernels split it over threads)."""
        return parallel_tasks(d) == 1

    def encode_many(
        self, rows: np.ndarray, keys: Sequence[RandomKey], out: np.ndarray | None = None
    ) -> Sequence[memoryview]:
        """One message per row of the ``(m, d)`` array ``rows``, row j with ``keys[j]``: the bytes of
        ``encode(rows[j], keys[j])``, written into one buffer (a rank's local workers, batched; one
        kernel call for codecs with a rows kernel, :meth:`_encode_rows_into`) and returned as its rows
        (:class:`mpicomp.wire.MessageRows`); for codecs of data-dependent size, the messages back to back
        (:class:`mpicomp.wire.PackedMessages`) where the codec packs them, else a list of messages.

        ``out``, for codecs of fixed message size: a writable C-contiguous ``(m, message_capacity(d))``
        uint8 array that message j is written into row j of (kept by the caller from round to round: fresh
        pages cost a pass over memory each); the messages come back as its rows (:class:`mpicomp.wire.MessageRows`),
        for codecs with shared randomness too. A codec of data-dependent size with a packed kernel
        (:meth:`_encode_rows_packed`) writes them back to back into one buffer, without ``out``: they come back as
        :class:`mpicomp.wire.PackedMessages`."""
        rows = np.asarray(rows)
        if rows.ndim != 2 or len(keys) != rows.shape[0]:
            raise ValueError(
                f"encode_many takes an (m, d) array and m keys, got shape {rows.shape} and {len(keys)} keys"
            )
        size = self.payload_bytes(rows.shape[1])
        if out is not None:
            check_rows_buffer(out, len(rows), self.message_capacity(rows.shape[1]))
        if size is None:
            if out is None and self._packs_rows(rows.shape[1]):
                return self._encode_packed(rows, keys)
            if out is None:
                return [
                    naming_row(r, self.encode, row, key) for r, (row, key) in enumerate(zip(rows, keys, strict=True))
                ]
            for r, (row, key, message) in enumerate(zip(rows, keys, out, strict=True)):
                naming_row(r, self.encode, row, key, message)  # a fixed-size message fills its row
            return MessageRows([out])
        with CODEC.timing():
            rows = check_input(rows, finite=not self.checks_finite, ndim=2)
            frame = overhead_bytes(self.framed_scalars, self.crc) + size
            buffer = np.empty((len(rows), frame), dtype=np.uint8) if out is None else out
            scalars = self._encode_rows_into(rows, keys, buffer, payload_offset(self.framed_scalars))
            table = np.array(scalars, dtype=np.float64).reshape(len(rows), -1)
            if self.extension_tag is not None:  # as :meth:`_framed`, for every row at once
                table = np.column_stack((np.full(len(rows), float(self.extension_tag)), table))
            fingerprints = key_fingerprints(keys) if self.uses_shared_key else None
            frame_messages(buffer, self.codec_id, rows.shape[1], table, size, self.crc, fingerprints)
            return MessageRows([buffer])

    def _packs_rows(self, d: int) -> bool:
        """Whether :meth:`encode_many` and the sums of messages in dimension ``d`` go a block at a time through the
        packed hooks (:meth:`_encode_rows_packed`, :meth:`_add_payload_packed`): a codec of data-dependent size
        that implements them, for vectors whose kernels run on one thread."""
        hooks = ("_encode_rows_packed", "_add_payload_packed", "_add_payload_packed_each")
        implemented = all(getattr(type(self), hook) is not getattr(Compressor, hook) for hook in hooks)
        return implemented and self.batches_rows(d)

    def _encode_packed(self, rows: np.ndarray, keys: Sequence[RandomKey]) -> PackedMessages:
        """:meth:`encode_many` of a codec of data-dependent size with a packed kernel: every row's payload from one
        :meth:`_encode_rows_packed` call, then every message framed at once (:func:`mpicomp.wire.frame_packed`)."""
        if not len(rows):
            return PackedMessages([])
        with CODEC.timing():
            rows = check_input(rows, finite=not self.checks_finite, ndim=2)
            head, tail = payload_offset(self.framed_scalars), CRC_BYTES if self.crc else 0
            data, offsets, scalars = self._encode_rows_packed(rows, keys, head, tail)
            table = np.asarray(scalars, dtype=np.float64).reshape(len(rows), -1)
            if self.extension_tag is not None:  # as :meth:`_framed`, for every row at once
                table = np.column_stack((np.full(len(rows), float(self.extension_tag)), table))
            fingerprints = key_fingerprints(keys) if self.uses_shared_key else None
            frame_packed(data, offsets, self.codec_id, rows.shape[1], table, self.crc, fingerprints)
            return PackedMessages([(data, offsets)])

    def decode(
        self, buf: bytes | memoryview, d: int | None = None, key: RandomKey | None = None, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Decode a message into a float64 vector (into ``out`` when given); :class:`MessageError` on
        any bad buffer.

        ``key`` is the encoder's key; codecs with shared randomness (Rand-K) need it, and their
        messages carry its fingerprint so that a wrong key is caught instead of decoding garbage.
        Without ``d`` the header's dimension is taken: a fixed-size codec checks its payload against it
        before allocating, but one that declares no fixed size (``payload_bytes`` None: QSGD, compositions,
        the vector quantizers) allocates the vector the header announces; pass ``d`` for untrusted messages.
        """
        with CODEC.timing():
            msg = self._message(buf, d, key)
            if d is None and (size := self.payload_bytes(msg.d)) is not None and len(msg.payload) != size:
                raise MessageError(f"{self.name}: payload of {len(msg.payload)} bytes, d={msg.d} needs {size}")
            if out is None:
                return self._decode(msg, key)
            self._decode_into(msg, key, vector_buffer(out, msg.d), accumulate=False)
            return out

    def decode_add(
        self, buf: bytes | memoryview, total: np.ndarray, key: RandomKey | None = None, scale: float = 1.0
    ) -> np.ndarray:
        """``total += scale * C(x)``, the vector decoded from ``buf`` added in place (fused where the
        codec can, without building the vector); returns ``total``. ``total -= gamma C(x)`` is
        ``scale = -gamma``, with the same bits. After a :class:`MessageError` (the header is checked
        first, the payload on the way), ``total`` may hold part of the sum."""
        with CODEC.timing():
            msg = self._message(buf, len(total), key)
            self._add_message(msg, key, vector_buffer(total, msg.d), float(scale))
            return total

    def _add_message(self, msg: Message, key: RandomKey | None, target: np.ndarray, scale: float) -> None:
        """``target += scale * C(msg)`` of a checked message: the plain sum where ``scale`` is 1."""
        if scale == 1.0:
            self._decode_into(msg, key, target, accumulate=True)
        else:
            self._decode_scaled_add(msg, key, target, scale)

    def decode_add_rows(
        self,
        bufs: Sequence[bytes | memoryview],
        keys: Sequence[RandomKey | None],
        targets: np.ndarray,
        scale: float = 1.0,
    ) -> np.ndarray:
        """``targets[j] += scale * C(m_j)`` for every message j, each into its own row of ``targets`` (``(m, d)``
        float64: a block of workers' memories moving by their own uploads); bit for bit :meth:`decode_add` of
        each; returns ``targets``. Every header is checked first; a :class:`MessageError` names the bad message
        (``index``), and the rows before it may have moved. Alike messages held as rows
        (:class:`mpicomp.wire.MessageRows`) of a codec that implements :meth:`_add_payload_rows_each` go by one
        call of it a block, packed messages (:class:`mpicomp.wire.PackedMessages`) of a codec with packed hooks by
        one call of :meth:`_add_payload_packed_each` a part."""
        if not len(bufs) == len(keys) == len(targets):
            raise ValueError(
                f"decode_add_rows takes one key and one target row per message, got {len(bufs)} messages, "
                f"{len(keys)} keys and {len(targets)} rows"
            )
        with CODEC.timing():
            targets = rows_buffer(targets)
            d, size = targets.shape[1], self.payload_bytes(targets.shape[1])
            messages = self._messages(bufs, d, keys)
            if (
                isinstance(messages, MessageBlocks)
                and type(self)._add_payload_rows_each is not Compressor._add_payload_rows_each
                and self._sums_payload_rows(d)
                and size
                and len(messages)
                and len(messages[0].payload) == size
            ):
                for start, block in zip(messages.block_starts(), messages.blocks, strict=True):
                    moved = targets[start : start + len(block.payloads)]
                    extra = self._keyed(keys, start, len(moved))
                    bad = self._add_payload_rows_each(block.payloads, block.scalars, moved, float(scale), **extra)
                    if bad != -1:
                        raise self._bad_payload(start + bad, messages, keys, d)
                return targets
            if isinstance(messages, PackedBlocks):
                for start, packed in zip(messages.block_starts(), messages.blocks, strict=True):
                    moved = targets[start : start + len(packed.starts)]
                    extra = self._keyed(keys, start, len(moved))
                    args = (packed.data, packed.starts, packed.lengths, packed.scalars)
                    if (bad := self._add_payload_packed_each(*args, moved, float(scale), **extra)) != -1:
                        raise self._bad_payload(start + bad, messages, keys, d)
                return targets
            for j, (msg, key) in enumerate(zip(messages, keys, strict=True)):
                naming_message(j, self._add_message, msg, key, targets[j], float(scale))
            return targets

    def decode_sum(
        self,
        bufs: Sequence[bytes | memoryview],
        keys: Sequence[RandomKey | None],
        out: np.ndarray,
        divisor: float = 1.0,
    ) -> np.ndarray:
        """``out = (C(m_0) + C(m_1) + ...) / divisor``, summed in list order (the master's mean of the
        uploads: ``divisor = n``); bit-identical to zeroing ``out``, :meth:`decode_add` of each
        message, then dividing. ``out`` must not overlap any message. Every header is checked before
        ``out`` is touched; a :class:`MessageError` names the bad message (``index``), and after a bad
        payload ``out`` may hold part of the sum. Alike messages held as rows (:class:`mpicomp.wire.MessageRows`)
        are checked and summed a block at a time (:meth:`_decode_blocks_sum_into`), packed messages
        (:class:`mpicomp.wire.PackedMessages`) of a codec with packed hooks a part at a time."""
        if len(bufs) != len(keys):
            raise ValueError(f"decode_sum takes one key per message, got {len(bufs)} messages and {len(keys)} keys")
        with CODEC.timing():
            out = vector_buffer(out, np.size(out))
            messages = self._messages(bufs, out.size, keys)
            check_apart(out, messages)
            if isinstance(messages, MessageBlocks):
                self._decode_blocks_sum_into(messages, keys, out, float(divisor))
            elif isinstance(messages, PackedBlocks):
                self._decode_packed_sum_into(messages, keys, out, float(divisor))
            else:
                self._decode_sum_into(messages, keys, out, float(divisor))
            return out

    def _messages(
        self, bufs: Sequence[bytes | memoryview], d: int, keys: Sequence[RandomKey | None]
    ) -> list[Message] | MessageBlocks | PackedBlocks:
        """:meth:`_message` of every buffer (a MessageError names the bad one); alike messages of a codec
        that frames no tag (a rank's many workers) are checked in one pass (:func:`mpicomp.wire.unpack_uniform`,
        blocks of rows a block at a time, a shared key's fingerprints against the keys' in one comparison),
        without building their keys; so are packed messages of a codec with packed hooks
        (:func:`mpicomp.wire.unpack_packed`)."""
        keyed = self.uses_shared_key
        complete = isinstance(keys, RoundKeys) or not any(key is None for key in keys)
        if self.extension_tag is None and not (keyed and not complete):
            fingerprints = key_fingerprints(keys) if keyed else None  # type: ignore[arg-type]  # no None among them
            if isinstance(bufs, PackedMessages) and self._packs_rows(d):
                packed = unpack_packed(bufs, self.codec_id, d, fingerprints)
                if packed is not None and (not packed.blocks or packed.blocks[0].scalars.shape[1] == self.n_scalars):
                    return packed
            alike = unpack_uniform(bufs, self.codec_id, d, fingerprints)  # the first's scalar count is everyone's
            if alike is not None and (not len(alike) or len(alike[0].scalars) == self.n_scalars):
                return alike
        return [
            naming_message(i, self._message, buf, d, key) for i, (buf, key) in enumerate(zip(bufs, keys, strict=True))
        ]

    def _message(self, buf: bytes | memoryview, d: int | None, key: RandomKey | None) -> Message:
        """The parsed message, checked against this codec: id, d, scalar count and key fingerprint (a message
        of this codec's :meth:`_frame` in dimension ``d`` by comparing its header bytes)."""
        frame = None if d is None or d > MAX_D or self.uses_shared_key else self._frame(d)
        msg = None if frame is None else frame.unpack(buf)
        if msg is None:
            msg = unpack_message(buf, codec=self.codec_id, d=d)
        if self.extension_tag is not None:
            tag = msg.scalars[0] if msg.scalars else None
            if tag != self.extension_tag:
                raise MessageError(
                    f"{self.name}: message of another outside codec (tag {tag!r}, this codec's "
                    f"0x{self.extension_tag:08x} = {type(self).__module__}:{type(self).__qualname__})"
                )
            msg = dataclasses.replace(msg, scalars=msg.scalars[1:])
        if len(msg.scalars) != self.n_scalars:
            raise MessageError(f"{self.name}: message has {len(msg.scalars)} scalars, codec uses {self.n_scalars}")
        if self.uses_shared_key:
            check_fingerprint(self.name, msg.key_fingerprint, require_key(self.name, key))
        elif msg.key_fingerprint is not None:
            raise MessageError(f"{self.name}: message carries a key fingerprint, but this codec uses no shared key")
        return msg

    def compile_kernels(self, d: int, dtypes: tuple[type, ...] = (np.float64,)) -> None:
        """Run encode, encode_many, decode, decode_add, decode_sum and decode_add_rows once per input dtype on a ramp
        of length ``d`` with a throwaway key, so that numba compiles (or loads) their kernels before they are timed."""
        key = RandomKey(0)
        for dtype in dtypes:
            ramp: np.ndarray = np.linspace(-1.0, 1.0, d, dtype=dtype)
            message = self.encode(ramp, key)
            decoded = self.decode(message, d, key)
            self.decode_add(message, decoded, key, scale=-0.5)
            self.decode_sum([message, message], [key, key], decoded, divisor=2.0)
            batch = self.encode_many(np.stack([ramp, ramp]), [key, key])
            self.decode_sum(batch, [key, key], decoded, divisor=2.0)
            self.decode_add_rows(batch, [key, key], np.stack([decoded, decoded]), 0.5)

    def header_bits(self) -> int:
        """Bits of framing (header, scalars, CRC) around each message of this codec."""
        return 8 * overhead_bytes(self.framed_scalars, self.crc)

    def omega(self, d: int) -> float | None:
        """Variance bound omega of an unbiased compressor in dimension d (None if biased)."""
        return None

    def alpha(self, d: int) -> float | None:
        """Contraction alpha of a biased compressor in dimension d (None if not contractive)."""
        return None

    @abstractmethod
    def expected_bits(self, d: int) -> float:
        """Payload bits per message in theory (excluding :meth:`header_bits`)."""

    def _encode(self, x: np.ndarray, key: RandomKey) -> tuple[tuple[float, ...], np.ndarray | bytes]:
        """Return (codec scalars, payload) for a validated vector (codecs of data-dependent size). The
        payload may be a view of a buffer the codec reuses: callers copy it before its next call."""
        raise NotImplementedError(f"compressor {self.name!r} must implement _encode or payload_bytes + _encode_into")

    def _encode_into(self, x: np.ndarray, key: RandomKey, payload: np.ndarray) -> tuple[float, ...]:
        """Write the payload of a validated vector into ``payload`` (``payload_bytes(d)`` bytes) and
        return the codec scalars. Default: :meth:`_encode`, copied."""
        scalars, data = self._encode(x, key)
        payload[:] = np.frombuffer(byte_view(data).cast("B"), dtype=np.uint8)
        return scalars

    def _encode_rows_into(
        self, rows: np.ndarray, keys: Sequence[RandomKey], messages: np.ndarray, start: int
    ) -> list[tuple[float, ...]] | np.ndarray:
        """Write row j's payload into ``messages[j, start : start + payload_bytes(d)]`` (``messages``
        is ``(m, frame)`` uint8) and return every row's scalars (one tuple per row, or an ``(m, scalars)``
        array). Default: :meth:`_encode_into` per row."""
        end = start + messages.shape[1] - overhead_bytes(self.framed_scalars, self.crc)
        return [
            naming_row(r, self._encode_into, row, key, message[start:end])
            for r, (row, key, message) in enumerate(zip(rows, keys, messages, strict=True))
        ]

    def _decode(self, msg: Message, key: RandomKey | None) -> np.ndarray:
        """Rebuild the vector from a validated message; raise MessageError on bad payload."""
        out = np.empty(msg.d)
        self._decode_into(msg, key, out, accumulate=False)
        return out

    def _decode_into(self, msg: Message, key: RandomKey | None, out: np.ndarray, accumulate: bool) -> None:
        """Write (``accumulate``: add) the decoded vector into ``out``. Default: :meth:`_decode`."""
        values = self._decode(msg, key)
        if accumulate:
            out += values
        else:
            out[:] = values

    def _decode_scaled_add(self, msg: Message, key: RandomKey | None, out: np.ndarray, scale: float) -> None:
        """``out += scale * C(msg)``. Default: decode into a temporary vector, scale it in place, add."""
        values = self._decode(msg, key)
        np.multiply(values, scale, out=values)
        out += values

    def _decode_sum_into(
        self, messages: list[Message], keys: Sequence[RandomKey | None], out: np.ndarray, divisor: float
    ) -> None:
        """``out = (sum of the decoded messages, in order) / divisor``. Default: several messages whose payloads
        the codec sums as rows (:meth:`_sums_payload_rows`), all of ``payload_bytes(d)`` bytes, are stacked
        ``STACK_BYTES`` at a time and handed to :meth:`_sum_payload_rows`; otherwise zero, add each, divide."""
        d, size = out.size, self.payload_bytes(out.size)
        if size and len(messages) >= 2 and self._sums_payload_rows(d) and all(len(m.payload) == size for m in messages):
            rows = max(1, STACK_BYTES // size)
            parts = ((start, messages[start : start + rows]) for start in range(0, len(messages), rows))
            stacks = (
                (
                    start,
                    np.frombuffer(b"".join(m.payload for m in part), np.uint8).reshape(-1, size),
                    np.array([m.scalars for m in part], dtype=np.float64).reshape(len(part), -1),
                )
                for start, part in parts
            )
            self._sum_payload_rows(stacks, messages, keys, out, divisor)
            return
        out.fill(0.0)
        for i, (msg, key) in enumerate(zip(messages, keys, strict=True)):
            naming_message(i, self._decode_into, msg, key, out, True)
        if divisor != 1.0:
            out /= divisor

    def _decode_blocks_sum_into(
        self, messages: MessageBlocks, keys: Sequence[RandomKey | None], out: np.ndarray, divisor: float
    ) -> None:
        """:meth:`_decode_sum_into` of alike messages held as blocks (``messages.blocks``: codec scalars and
        payload columns as arrays). Default: each block's payload columns (a strided view, no copy) to
        :meth:`_sum_payload_rows` where the codec sums payloads as rows and they have ``payload_bytes(d)``
        bytes (alike messages: the first's size is everyone's); else one :class:`Message` each."""
        d, size = out.size, self.payload_bytes(out.size)
        if size and len(messages) >= 2 and self._sums_payload_rows(d) and len(messages[0].payload) == size:
            blocks = ((block.payloads, block.scalars) for block in messages.blocks)
            stacks = ((start, *block) for start, block in zip(messages.block_starts(), blocks, strict=True))
            self._sum_payload_rows(stacks, messages, keys, out, divisor)
            return
        self._decode_sum_into(list(messages), keys, out, divisor)

    def _decode_packed_sum_into(
        self, messages: PackedBlocks, keys: Sequence[RandomKey | None], out: np.ndarray, divisor: float
    ) -> None:
        """:meth:`_decode_sum_into` of packed messages: zero ``out``, :meth:`_add_payload_packed` of each part,
        divide (bit for bit adding each in turn). A bad payload raises the :class:`MessageError` of decoding that
        message alone, naming it."""
        out.fill(0.0)
        for start, packed in zip(messages.block_starts(), messages.blocks, strict=True):
            extra = self._keyed(keys, start, len(packed.starts))
            args = (packed.data, packed.starts, packed.lengths, packed.scalars)
            if (bad := self._add_payload_packed(*args, out, **extra)) != -1:
                raise self._bad_payload(start + bad, messages, keys, out.size)
        if divisor != 1.0:
            out /= divisor

    def _encode_rows_packed(
        self, rows: np.ndarray, keys: Sequence[RandomKey], head: int, tail: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every row's payload, back to back in one buffer: returns ``(data, offsets, scalars)``, message j at
        ``data[offsets[j] : offsets[j + 1]]`` (int64 offsets) with its payload from ``offsets[j] + head`` to
        ``offsets[j + 1] - tail`` (the framing's room, written after) and its codec scalars ``scalars[j]`` (``(m,
        n_scalars)``). Optional, for codecs of data-dependent size, with :meth:`_add_payload_packed` and
        :meth:`_add_payload_packed_each`: :meth:`encode_many` goes through it, and the sums of the packed messages
        it gives through those; no default."""
        raise NotImplementedError(f"compressor {self.name!r} does not encode rows into packed messages")

    def _add_payload_packed(
        self, data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, scalars: np.ndarray, out: np.ndarray
    ) -> int:
        """``out +=`` the decoded vector of every payload ``data[starts[j] : starts[j] + lengths[j]]`` (its codec
        scalars ``scalars[j]``) in order, the bits of :meth:`decode_add` of each in turn; returns the first bad
        message (``out`` may hold part of the sum), else -1. The packed hook of :meth:`decode_sum` (see
        :meth:`_encode_rows_packed`); a codec with shared randomness gets ``states`` too, as
        :meth:`_add_payload_rows`."""
        raise NotImplementedError(f"compressor {self.name!r} does not add packed payloads")

    def _add_payload_packed_each(
        self,
        data: np.ndarray,
        starts: np.ndarray,
        lengths: np.ndarray,
        scalars: np.ndarray,
        targets: np.ndarray,
        factor: float,
    ) -> int:
        """``targets[j] += factor *`` the decoded vector of payload j (as :meth:`_add_payload_packed`) for every
        j, the bits of :meth:`decode_add` of each with ``scale = factor``; returns the first bad message (the rows
        before it moved), else -1. The packed hook of :meth:`decode_add_rows`."""
        raise NotImplementedError(f"compressor {self.name!r} does not add packed payloads into rows")

    def _sums_payload_rows(self, d: int) -> bool:
        """Whether several messages in dimension ``d`` are added as rows of their payloads, a stack at a time, by
        :meth:`_add_payload_rows` (a codec with a kernel over many payloads). Default: no."""
        return False

    def _add_payload_rows(self, payloads: np.ndarray, scalars: np.ndarray, out: np.ndarray) -> int:
        """``out +=`` the decoded vector of every row of ``payloads`` (``(m, payload_bytes(d))`` uint8, their codec
        scalars ``(m, n_scalars)`` float64) in row order, the bits of :meth:`decode_add` of each in turn; returns the
        first row whose payload is bad (``out`` may hold part of the sum), else -1. The hook of a codec whose
        :meth:`_sums_payload_rows` says so; no default. A codec with shared randomness gets a keyword more,
        ``states``: the rows' key states (uint64)."""
        raise NotImplementedError(f"compressor {self.name!r} sums payload rows but lacks _add_payload_rows")

    def _add_payload_rows_each(
        self, payloads: np.ndarray, scalars: np.ndarray, targets: np.ndarray, factor: float
    ) -> int:
        """``targets[r] += factor *`` the decoded vector of row r of ``payloads`` for every row (``targets``:
        ``(m, d)``), the bits of :meth:`decode_add` of each with ``scale = factor``; returns the first bad row (the
        rows before it moved), else -1. Optional, with :meth:`_sums_payload_rows`: :meth:`decode_add_rows` of
        alike messages goes a block at a time through it where a codec implements it. A codec with shared
        randomness gets ``states`` too, as :meth:`_add_payload_rows`."""
        raise NotImplementedError(f"compressor {self.name!r} does not add payload rows into rows of their own")

    def _bad_payload(
        self, i: int, messages: Sequence[Message], keys: Sequence[RandomKey | None], d: int
    ) -> MessageError:
        """The :class:`MessageError` of message ``i``, whose payload a rows kernel flagged: decoding it alone
        raises the codec's own words, naming it."""
        naming_message(i, self._decode_into, messages[i], keys[i], np.empty(d), False)
        return MessageError(f"message {i}: {self.name}: invalid payload", index=i)

    def _sum_payload_rows(
        self,
        stacks: Iterable[tuple[int, np.ndarray, np.ndarray]],
        messages: Sequence[Message],
        keys: Sequence[RandomKey | None],
        out: np.ndarray,
        divisor: float,
    ) -> None:
        """``out = (sum of the messages, in order) / divisor`` from ``stacks`` of ``(index of the first message,
        payloads, codec scalars)`` of consecutive messages, each added by :meth:`_add_payload_rows`: bit for bit
        zeroing ``out``, adding each and dividing. A bad payload raises the :class:`MessageError` of decoding
        that message alone, naming it."""
        out.fill(0.0)
        for start, payloads, scalars in stacks:
            if (bad := self._add_payload_rows(payloads, scalars, out, **self._keyed(keys, start, len(payloads)))) != -1:
                raise self._bad_payload(start + bad, messages, keys, out.size)
        if divisor != 1.0:
            out /= divisor

    def _keyed(self, keys: Sequence[RandomKey | None], start: int, count: int) -> dict[str, np.ndarray]:
        """The rows hooks' extra argument for a codec with shared randomness: ``states``, the key states of
        messages ``start`` to ``start + count`` (uint64); nothing for the others."""
        if not self.uses_shared_key:
            return {}
        return {"states": key_states(keys[start : start + count])}  # type: ignore[arg-type]  # checked by the parse


def check_apart(out: np.ndarray, messages: Sequence[Message]) -> None:
    """ValueError naming the first message whose payload overlaps ``out``; each buffer the payloads lie
    in (each block of :class:`mpicomp.wire.MessageBlocks` or :class:`mpicomp.wire.PackedBlocks`) is compared
    with ``out`` once, and message by message only where it overlaps."""
    groups: list[tuple[np.ndarray | None, Sequence[int]]]
    if isinstance(messages, MessageBlocks):
        groups = [
            (block.payloads, range(start, start + len(block.payloads)))
            for block, start in zip(messages.blocks, messages.block_starts(), strict=True)
        ]
    elif isinstance(messages, PackedBlocks):
        groups = [
            (packed.data, range(start, start + len(packed.starts)))
            for packed, start in zip(messages.blocks, messages.block_starts(), strict=True)
        ]
    else:
        owners: dict[int, list[int]] = {}
        for i, msg in enumerate(messages):
            owners.setdefault(id(msg.payload.obj), []).append(i)
        groups = [(_flat_owner(messages[indices[0]].payload), indices) for indices in owners.values()]
    for whole, indices in groups:
        if whole is None or np.may_share_memory(out, whole):
            for i in indices:
                if np.may_share_memory(out, np.frombuffer(messages[i].payload, dtype=np.uint8)):
                    raise ValueError(f"decode_sum: out overlaps message {i}; sum into a vector of its own")


def _flat_owner(payload: memoryview) -> np.ndarray | None:
    """The whole buffer a payload view lies in (an array as it is: its bounds are what ``np.may_share_memory``
    compares), else viewed as uint8; None for an exporter that is not one flat buffer."""
    if isinstance(payload.obj, np.ndarray):
        return payload.obj
    try:
        return np.frombuffer(memoryview(payload.obj), dtype=np.uint8)
    except (TypeError, ValueError, BufferError):
        return None


def naming_message(i: int, decode: Callable[..., T], *args: object) -> T:
    """``decode(*args)`` for message ``i`` of a batch; its MessageError names the message (``index = i``)."""
    try:
        return decode(*args)
    except MessageError as error:
        raise MessageError(f"message {i}: {error}", index=i) from error


def naming_row(r: int, encode: Callable[..., T], *args: object) -> T:
    """``encode(*args)`` for row ``r`` of a batch; its ValueError names the row."""
    try:
        return encode(*args)
    except ValueError as error:
        raise ValueError(f"row {r}: {error}") from error


@contextmanager
def message_checksums(enabled: bool) -> Iterator[None]:
    """Within the block, every compressor that has not set its own ``crc`` frames its messages with
    (or without) the CRC-32 trailer: a run's ``[compressor] checksum``. Decoders read the header's
    flag, so either kind of message decodes anywhere."""
    previous = Compressor.crc
    Compressor.crc = bool(enabled)
    try:
        yield
    finally:
        Compressor.crc = previous


def check_fingerprint(name: str, fingerprint: int | None, key: RandomKey) -> None:
    """MessageError unless the message carries the fingerprint of ``key`` (the decoder's key)."""
    if fingerprint is None:
        raise MessageError(f"{name}: message carries no key fingerprint, but decoding depends on the encoder's key")
    if fingerprint != key.fingerprint:
        raise MessageError(
            f"{name}: message was encoded with another RandomKey (fingerprint 0x{fingerprint:04x}, decoder's "
            f"0x{key.fingerprint:04x}): wrong round, worker or stream on one side"
        )


def require_key(name: str, key: RandomKey | None) -> RandomKey:
    """Codecs with shared randomness cannot decode without the sender's key."""
    if key is None:
        raise ValueError(f"{name}: decoding needs the encoder's RandomKey (shared randomness is not sent)")
    return key
