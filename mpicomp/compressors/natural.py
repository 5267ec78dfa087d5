"""Natural compression C_nat: poster 004; Horváth et al., "Natural compression for distributed
deep learning" (2019).

``C_nat(t) = sign(t) 2^floor(log2|t|)`` with probability ``(2^ceil(log2|t|) - |t|) / 2^floor(log2|t|)``,
else ``sign(t) 2^ceil(log2|t|)``: unbiased, and ``(2^(e+1) - |t|)(|t| - 2^e) <= t^2 / 8`` gives
``omega = 1/8``. The rounding is read off the float64 bit pattern (exact for float32 and float64
input): the exponent field is ``floor(log2|t|)``, the 52-bit mantissa ``m`` rounds up with
probability ``m / 2^52``.

Wire (codec ``natural``, no scalars): d codes of 9 bits, float32-style ``exponent | sign << 8``:
exponent code 0 is zero, codes 1..254 are ``2^(code - 127)``; code 255 and a signed zero are
invalid. So a code shifted left by 23 is the float32 bit pattern of the decoded value.

Range: ``|t| > 2^127`` (whose rounding may reach ``2^128``) raises ValueError at encode.
``0 < |t| < 2^-126`` (float32 subnormals, tiny float64) is rounded between 0 and ``2^-126``
with probability ``|t| 2^126``: still unbiased, but its variance ``(2^-126 - |t|) |t|`` can exceed
``t^2 / 8``, so ``omega = 1/8`` holds up to an additive ``2^-126 sum_{|x_i| < 2^-126} |x_i|``.
"""

from __future__ import annotations

import numpy as np

from ..rng import RandomKey
from ..wire import Message
from ._levels import decode_levels, encode_levels, pow2_code, quantize_levels
from .base import Compressor
from .registry import register

EXPONENT_BITS = 8
_CODE = pow2_code(-126, 254, EXPONENT_BITS, np.inf, limit=2.0**127)
_UNIT = np.ones(1)
EXPONENT_BIAS = 127  # exponent code e > 0 stands for 2^(e - 127)


def natural_codes(x: np.ndarray, key: RandomKey) -> np.ndarray:
    """The 9-bit codes ``e | negative << 8`` (uint32) that ``natural`` sends for ``x`` with ``key``:
    ``C_nat(x)_i = (-1)^negative 2^(e - 127)``, 0 for ``e = 0``; bit for bit the codec's rounding."""
    x = np.asarray(x)
    if x.ndim != 1 or x.dtype not in (np.float32, np.float64):
        raise ValueError(f"natural codes of a 1-D float32 or float64 vector, got {x.dtype} {x.shape}")
    return quantize_levels(np.ascontiguousarray(x), key.state, _CODE)


@register
class Natural(Compressor):
    """Natural compression: unbiased stochastic rounding to a signed power of two, 9 bits each."""

    name = "natural"
    unbiased = True
    code = _CODE

    def omega(self, d: int) -> float:
        return 0.125

    def expected_bits(self, d: int) -> float:
        return float(d * self.code.bits)

    def _encode(self, x: np.ndarray, key: RandomKey) -> tuple[tuple[float, ...], np.ndarray]:
        return (), encode_levels(x, key.state, self.code, x.size, _UNIT, _UNIT)

    def _decode(self, msg: Message, key: RandomKey | None) -> np.ndarray:
        return decode_levels(np.frombuffer(msg.payload, dtype=np.uint8), msg.d, self.code, msg.d, _UNIT, self.name)
