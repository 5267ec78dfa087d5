"""Compressors: ``make(spec)`` builds one; each module registers its codecs on import."""

from . import block  # noqa: F401  (registers)
from . import compose  # noqa: F401  (registers)
from . import dither  # noqa: F401  (registers)
from . import identity  # noqa: F401  (registers)
from . import natdither  # noqa: F401  (registers)
from . import natural  # noqa: F401  (registers)
from . import qsgd  # noqa: F401  (registers)
from . import sign  # noqa: F401  (registers)
from . import sparse  # noqa: F401  (registers)
from . import terngrad  # noqa: F401  (registers)
from .base import Compressor
from .registry import available, make, register

__all__ = ["Compressor", "available", "make", "register"]
