"""Compressors: ``make(spec)`` builds one; each module registers its codecs on import."""

from ..wire import MessageError
from . import (  # noqa: F401  (each module registers its compressors)
    block,
    compose,
    dither,
    identity,
    natural,
    qsgd,
    sign,
    sparse,
    terngrad,
)
from .base import Compressor
from .bundle import bundle, unbundle
from .registry import available, make, register

__all__ = ["Compressor", "MessageError", "available", "bundle", "make", "register", "unbundle"]
