"""Natural dithering D_nat^{p,s}: poster 004; Horváth et al., "Natural compression for distributed
deep learning" (2019).

Levels are ``0`` and the s powers of two ``2^(1-s), ..., 2^-1, 1``. With ``N = ||x||_p`` and
``r_i = |x_i| / N``, ``r_i`` in ``[2^e, 2^(e+1)]`` is rounded up with probability
``(r_i - 2^e) / 2^e`` (exactly, from the float64 mantissa), and ``r_i < 2^(1-s)`` becomes
``2^(1-s)`` with probability ``r_i 2^(s-1)``, else 0; ``Q(x)_i = N sign(x_i) level_i``. Unbiased.

Variance: between two powers of two, ``(2^(e+1) - r)(r - 2^e) <= r^2 / 8`` (the natural
compression bound); below ``sigma = 2^(1-s)``, ``(sigma - r) r <= min(sigma^2 / 4, sigma r)``. So
``E||Q(x) - x||^2 <= ||x||^2 / 8 + N^2 sum_i min(sigma^2/4, sigma r_i)`` and (see
:func:`~mpicomp.compressors._levels.rounding_variance_bound` with step sigma):

* p = 2: ``omega = 1/8 + min(d 2^(-2s), sqrt(d) 2^(1-s))``,
* p = inf: ``omega = 1/8 + R``, ``R = 2^-s sqrt(d - 1)`` if ``2^(1-s) sqrt(d - 1) >= 4``,
  else ``4 (d - 1) sigma^2 / (16 + (d - 1) sigma^2)``;

both within the paper's ``1/8 + d^(1/min(p,2)) 2^(1-s) min(1, d^(1/min(p,2)) 2^(1-s))``.

Wire (codec ``natdither``): one float64 scalar, the norm; payload: d codes of
``1 + ceil(log2(s + 1))`` bits, ``level | negative << ceil(log2(s + 1))`` where level 0 is zero
and level ``k = 1..s`` is ``2^(k - s)``.
"""

from __future__ import annotations

import numpy as np

from ..rng import RandomKey
from ..wire import Message
from ._levels import (
    block_scales,
    check_levels,
    check_norm_order,
    decode_levels,
    encode_levels,
    pow2_code,
    rounding_variance_bound,
)
from .base import Compressor, check_scalar
from .registry import register

MAX_LEVELS = 1022  # the smallest level 2^(1-s) stays a normal float64


@register
class NaturalDither(Compressor):
    """Natural dithering with ``s`` power-of-two levels relative to the p-norm (p = 2 or inf)."""

    name = "natdither"
    unbiased = True
    n_scalars = 1

    def __init__(self, s: int = 3, p: float = 2) -> None:
        self.s = check_levels(self.name, s, MAX_LEVELS)
        self.p = check_norm_order(self.name, p)
        self.code = pow2_code(1 - self.s, self.s, self.s.bit_length(), 1.0)

    @property
    def params(self) -> dict[str, object]:
        return {"s": self.s, "p": self.p}

    def omega(self, d: int) -> float:
        return 0.125 + rounding_variance_bound(d, 2.0 ** (1 - self.s), self.p)

    def expected_bits(self, d: int) -> float:
        return float(d * self.code.bits)

    def _encode(self, x: np.ndarray, key: RandomKey) -> tuple[tuple[float, ...], np.ndarray]:
        if x.size == 0:
            return (0.0,), b""
        norms, mult, pre = block_scales(x, x.size, self.p, 1.0)
        return (float(norms[0]),), encode_levels(x, key.state, self.code, x.size, mult, pre)

    def _decode(self, msg: Message, key: RandomKey | None) -> np.ndarray:
        norm = check_scalar(msg.scalars[0], "norm")
        payload = np.frombuffer(msg.payload, dtype=np.uint8)
        return decode_levels(payload, msg.d, self.code, msg.d, np.array([norm]), self.name)
