"""Compressors: ``make(spec)`` builds one; each module registers its codecs on import."""

from ..wire import MessageError, MessageRows, PackedMessages, message_lengths
from . import (  # noqa: F401  (each module registers its compressors)
    block,
    compose,
    cross_polytope,
    dither,
    hsq,
    identity,
    laq,
    natural,
    qsgd,
    sign,
    sparse,
    stovoq,
    terngrad,
)
from .base import Compressor, message_checksums
from .bundle import bundle, unbundle
from .registry import available, make, register

__all__ = [
    "Compressor",
    "MessageError",
    "MessageRows",
    "PackedMessages",
    "available",
    "bundle",
    "make",
    "message_checksums",
    "message_lengths",
    "register",
    "unbundle",
]
