"""The compressor contract shared by every codec.

A compressor ``C`` maps ``x in R^d`` to bytes and back. Unbiased ones satisfy
``E C(x) = x`` and ``E||C(x) - x||^2 <= omega ||x||^2``; contractive (biased) ones satisfy
``E||C(x) - x||^2 <= (1 - alpha) ||x||^2``. Every message is framed by
:func:`mpicomp.wire.pack_message`; subclasses only produce codec scalars and a payload.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from ..rng import RandomKey
from ..timing import CODEC
from ..wire import Message, MessageError, overhead_bytes, pack_message, unpack_message

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

# Little-endian float formats for values sent as is (identity, sparsifiers), by their spec name.
VALUE_DTYPES = {"float64": np.dtype("<f8"), "float32": np.dtype("<f4")}


def check_dtype(codec: str, dtype: object) -> str:
    """Validate a spec's value dtype: one of the names in :data:`VALUE_DTYPES`."""
    if dtype not in VALUE_DTYPES:
        raise ValueError(f"{codec}: dtype must be one of {', '.join(VALUE_DTYPES)}, got {dtype!r}")
    return str(dtype)


def check_input(x: np.ndarray) -> np.ndarray:
    """Validate a vector to compress: 1-D, float32 or float64, all finite."""
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"compressors take 1-D vectors, got shape {x.shape}")
    if x.dtype not in (np.float32, np.float64):
        raise ValueError(f"compressors take float32 or float64 vectors, got dtype {x.dtype}")
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x))[0])
        raise ValueError(f"cannot compress a non-finite vector: x[{bad}] = {x[bad]} (NaN or Inf)")
    return np.ascontiguousarray(x)


def check_scalar(value: float, what: str, minimum: float = 0.0) -> float:
    """Validate a decoded codec scalar (a norm, a scale): finite and ``>= minimum``."""
    if not np.isfinite(value) or value < minimum:
        raise MessageError(f"invalid {what} {value!r} in message header")
    return float(value)


class Compressor(ABC):
    """Base class: ``encode(x, key) -> bytes`` and ``decode(buf, d, key) -> float64 vector``.

    Subclasses set ``name`` (the registry name), ``unbiased`` and implement
    :meth:`_encode`, :meth:`_decode` and :meth:`expected_bits`, plus :meth:`omega` (unbiased)
    or :meth:`alpha` (contractive). Constructor keyword arguments are the spec parameters.
    """

    name: ClassVar[str]
    unbiased: ClassVar[bool]
    n_scalars: ClassVar[int] = 0
    crc: bool = True

    @property
    def codec_id(self) -> int:
        return CODEC_IDS[self.name]

    @property
    def params(self) -> dict[str, Any]:
        """The spec parameters this instance was built with (name -> value)."""
        return {}

    @property
    def spec(self) -> str:
        """Canonical spec string; ``make(c.spec)`` rebuilds an equal compressor."""
        args = ",".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.name}({args})" if args else self.name

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

    def encode(self, x: np.ndarray, key: RandomKey) -> bytes:
        """Compress ``x`` into one framed, bit-packed message."""
        with CODEC.timing():
            x = check_input(x)
            scalars, payload = self._encode(x, key)
            fingerprint = key.fingerprint if self.uses_shared_key else None
            return pack_message(self.codec_id, x.size, scalars, payload, crc=self.crc, key_fingerprint=fingerprint)

    def decode(self, buf: bytes | memoryview, d: int | None = None, key: RandomKey | None = None) -> np.ndarray:
        """Decode a message into a float64 vector; :class:`MessageError` on any bad buffer.

        ``key`` is the encoder's key; codecs with shared randomness (Rand-K) need it, and their
        messages carry its fingerprint so that a wrong key is caught instead of decoding garbage.
        """
        with CODEC.timing():
            msg = unpack_message(buf, codec=self.codec_id, d=d)
            if len(msg.scalars) != self.n_scalars:
                raise MessageError(f"{self.name}: message has {len(msg.scalars)} scalars, codec uses {self.n_scalars}")
            if self.uses_shared_key:
                check_fingerprint(self.name, msg.key_fingerprint, require_key(self.name, key))
            elif msg.key_fingerprint is not None:
                raise MessageError(f"{self.name}: message carries a key fingerprint, but this codec uses no shared key")
            return self._decode(msg, key)

    def header_bits(self) -> int:
        """Bits of framing (header, scalars, CRC) around each message of this codec."""
        return 8 * overhead_bytes(self.n_scalars, self.crc)

    def omega(self, d: int) -> float | None:
        """Variance bound omega of an unbiased compressor in dimension d (None if biased)."""
        return None

    def alpha(self, d: int) -> float | None:
        """Contraction alpha of a biased compressor in dimension d (None if not contractive)."""
        return None

    @abstractmethod
    def expected_bits(self, d: int) -> float:
        """Payload bits per message in theory (excluding :meth:`header_bits`)."""

    @abstractmethod
    def _encode(self, x: np.ndarray, key: RandomKey) -> tuple[tuple[float, ...], np.ndarray | bytes]:
        """Return (codec scalars, payload) for a validated vector."""

    @abstractmethod
    def _decode(self, msg: Message, key: RandomKey | None) -> np.ndarray:
        """Rebuild the vector from a validated message; raise MessageError on bad payload."""


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
