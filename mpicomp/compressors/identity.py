"""Identity: the vector itself as raw little-endian floats (the uncompressed baseline).

The kernels copy (and cast) in one pass that also finds the first non-finite value, so an
encode or a decode reads and writes each coordinate once.
"""

from __future__ import annotations

import numpy as np
from numba import float64, njit

from ..rng import RandomKey
from ..wire import Message, MessageError
from .base import VALUE_DTYPES, Compressor, check_dtype, non_finite_input
from .registry import register


@njit(cache=True, nogil=True)
def _first_non_finite(values):
    for i in range(values.size):
        if not np.isfinite(values[i]):
            return i
    return -1


@njit(cache=True, nogil=True)
def copy_finite(source, target):
    """``target[:] = source`` cast to target's dtype; returns the first index whose cast value is
    not finite, or -1."""
    finite = True
    for i in range(source.size):
        target[i] = source[i]
        finite &= target[i] - target[i] == 0.0  # NaN exactly for NaN and +-Inf
    return -1 if finite else _first_non_finite(target)


@njit(cache=True, nogil=True)
def add_finite(source, total):
    """``total += source`` (float64); returns the first index of a non-finite ``source`` value, or -1."""
    finite = True
    for i in range(source.size):
        value = float64(source[i])
        total[i] += value
        finite &= value - value == 0.0
    return -1 if finite else _first_non_finite(source)


@register
class Identity(Compressor):
    """``C(x) = x`` sent as float64 (exact, omega = 0) or float32 (rounded to nearest)."""

    name = "identity"
    unbiased = True
    checks_finite = True

    def __init__(self, dtype: str = "float64") -> None:
        self.dtype = check_dtype(self.name, dtype)

    @property
    def params(self) -> dict[str, object]:
        return {} if self.dtype == "float64" else {"dtype": self.dtype}

    def omega(self, d: int) -> float:
        return 0.0

    def expected_bits(self, d: int) -> float:
        return 8.0 * VALUE_DTYPES[self.dtype].itemsize * d

    def payload_bytes(self, d: int) -> int:
        return d * VALUE_DTYPES[self.dtype].itemsize

    def _encode_into(self, x: np.ndarray, key: RandomKey, payload: np.ndarray) -> tuple[float, ...]:
        bad = copy_finite(x, payload.view(VALUE_DTYPES[self.dtype]))
        if bad >= 0:
            if np.isfinite(x[bad]):
                raise ValueError(f"{self.spec}: x[{bad}] = {x[bad]!r} exceeds the {self.dtype} range; use dtype='float64'")
            raise non_finite_input(x, bad)
        return ()

    def _decode_into(self, msg: Message, key: RandomKey | None, out: np.ndarray, accumulate: bool) -> None:
        dtype = VALUE_DTYPES[self.dtype]
        if len(msg.payload) != msg.d * dtype.itemsize:
            raise MessageError(f"identity: payload of {len(msg.payload)} bytes, d={msg.d} {self.dtype} values need {msg.d * dtype.itemsize}")
        values = np.frombuffer(msg.payload, dtype=dtype)
        if not values.flags.aligned:  # a payload at an odd offset of a gathered buffer: the kernels assume alignment
            values = values.copy()
            values.flags.writeable = False  # the kernels' signature for received payloads (read-only)
        if (add_finite(values, out) if accumulate else copy_finite(values, out)) >= 0:
            raise MessageError("identity: payload holds non-finite values")
