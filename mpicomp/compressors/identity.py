"""Identity: the vector itself as raw little-endian floats (the uncompressed baseline)."""

from __future__ import annotations

import numpy as np

from ..rng import RandomKey
from ..wire import Message, MessageError
from .base import VALUE_DTYPES, Compressor, check_dtype
from .registry import register


@register
class Identity(Compressor):
    """``C(x) = x`` sent as float64 (exact, omega = 0) or float32 (rounded to nearest)."""

    name = "identity"
    unbiased = True

    def __init__(self, dtype: str = "float64") -> None:
        self.dtype = check_dtype(self.name, dtype)

    @property
    def params(self) -> dict[str, object]:
        return {} if self.dtype == "float64" else {"dtype": self.dtype}

    def omega(self, d: int) -> float:
        return 0.0

    def expected_bits(self, d: int) -> float:
        return 8.0 * VALUE_DTYPES[self.dtype].itemsize * d

    def _encode(self, x: np.ndarray, key: RandomKey) -> tuple[tuple[float, ...], np.ndarray]:
        with np.errstate(over="ignore"):
            values = x.astype(VALUE_DTYPES[self.dtype], copy=False)
        if not np.isfinite(values).all():
            bad = int(np.flatnonzero(~np.isfinite(values))[0])
            raise ValueError(f"{self.spec}: x[{bad}] = {x[bad]!r} exceeds the {self.dtype} range; use dtype='float64'")
        return (), values

    def _decode(self, msg: Message, key: RandomKey | None) -> np.ndarray:
        dtype = VALUE_DTYPES[self.dtype]
        if len(msg.payload) != msg.d * dtype.itemsize:
            raise MessageError(f"identity: payload of {len(msg.payload)} bytes, d={msg.d} {self.dtype} values need {msg.d * dtype.itemsize}")
        out = np.frombuffer(msg.payload, dtype=dtype).astype(np.float64)
        if not np.isfinite(out).all():
            raise MessageError("identity: payload holds non-finite values")
        return out
