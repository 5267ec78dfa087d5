"""Random dithering (standard dithering D_sta^{p,s}): poster 000 Example 1, poster 004.

``Q(x) = ||x||_p (1/s) sign(x) ∘ floor(s |x_i| / ||x||_p + xi_i)``, ``xi ~ U[0, 1]^d``, with
``p in {2, inf}`` and ``s >= 1`` uniform levels. Unbiased: ``E floor(r + xi) = r``.

Variance: with ``r_i = s |x_i| / N`` (N = ||x||_p) and ``f_i`` its fractional part, coordinate i
has variance ``(N/s)^2 f_i (1 - f_i) <= min(N^2 / (4 s^2), N |x_i| / s)``. Summing (see
:func:`~mpicomp.compressors._levels.rounding_variance_bound` with step ``1/s``):

* p = 2: ``omega = min(d / (4 s^2), sqrt(d) / s)`` (tighter than Alistarh et al. 2017,
  Lemma 3.1, ``min(d / s^2, sqrt(d) / s)``).
* p = inf: with ``m = d - 1``, ``omega = sqrt(m) / (2 s)`` if ``sqrt(m) >= 4 s``, else
  ``4 m / (16 s^2 + m)`` (the largest coordinate is sent exactly).

Wire (codec ``dither``): one float64 scalar, the norm ``||x||_p``; payload: d codes of
``1 + ceil(log2(s + 1))`` bits, ``level | negative << ceil(log2(s + 1))`` with ``level in 0..s``
(layout of :mod:`mpicomp.compressors._levels`). Decoding checks the norm (finite, >= 0), every
level (``<= s``), canonical signs and padding.
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
    linear_code,
    rounding_variance_bound,
)
from .base import Compressor, check_scalar
from .registry import register

MAX_LEVELS = 2**31 - 1  # 31 level bits + 1 sign bit fill a 32-bit code


@register
class Dither(Compressor):
    """Random dithering with ``s`` uniform levels relative to the p-norm (p = 2 or inf)."""

    name = "dither"
    unbiased = True
    n_scalars = 1

    def __init__(self, s: int = 1, p: float = 2) -> None:
        self.s = check_levels(self.name, s, MAX_LEVELS)
        self.p = check_norm_order(self.name, p)
        self.code = linear_code(self.s)

    @property
    def params(self) -> dict[str, object]:
        return {"s": self.s, "p": self.p}

    def omega(self, d: int) -> float:
        return rounding_variance_bound(d, 1.0 / self.s, self.p)

    def expected_bits(self, d: int) -> float:
        return float(d * self.code.bits)

    def _encode(self, x: np.ndarray, key: RandomKey) -> tuple[tuple[float, ...], np.ndarray]:
        if x.size == 0:
            return (0.0,), b""
        norms, mult, pre = block_scales(x, x.size, self.p, float(self.s))
        return (float(norms[0]),), encode_levels(x, key.state, self.code, x.size, mult, pre)

    def _decode(self, msg: Message, key: RandomKey | None) -> np.ndarray:
        norm = check_scalar(msg.scalars[0], "norm")
        payload = np.frombuffer(msg.payload, dtype=np.uint8)
        return decode_levels(payload, msg.d, self.code, msg.d, np.array([norm]), self.name)
