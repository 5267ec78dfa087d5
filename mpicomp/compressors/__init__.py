"""Compressors: ``make(spec)`` builds one; each module registers its codecs on import."""

from . import (  # noqa: F401  (each module registers its compressors)
    block,
    compose,
    dither,
    identity,
    natdither,
    natural,
    qsgd,
    sign,
    sparse,
    terngrad,
)
from .base import Compressor
from .registry import available, make, register

__all__ = ["Compressor", "available", "make", "register"]
