"""Compressors: ``make(spec)`` builds one; each module registers its codecs on import."""

from . import identity  # noqa: F401  (registers)
from .base import Compressor
from .registry import available, make, register

__all__ = ["Compressor", "available", "make", "register"]
