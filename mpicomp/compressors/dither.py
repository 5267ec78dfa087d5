"""Random dithering D_sta^{p,s} (poster 000 Example 1, poster 004) and natural dithering D_nat^{p,s}
(poster 004; Horváth et al., "Natural compression for distributed deep learning" (2019)).

Both round each ``|x_i| / N``, ``N = ||x||_p`` with ``p in {2, inf}``, unbiasedly to 0 or one of
``s >= 1`` nonzero levels and send ``Q(x)_i = N sign(x_i) level_i``; they differ only in the levels.

Random dithering (codec ``dither``), s uniform levels:
``Q(x) = ||x||_p (1/s) sign(x) ∘ floor(s |x_i| / ||x||_p + xi_i)``, ``xi ~ U[0, 1]^d``. Unbiased:
``E floor(r + xi) = r``. Variance: with ``r_i = s |x_i| / N`` and ``f_i`` its fractional part,
coordinate i has variance ``(N/s)^2 f_i (1 - f_i) <= min(N^2 / (4 s^2), N |x_i| / s)``. Summing
(see :func:`~mpicomp.compressors._levels.rounding_variance_bound` with step ``1/s``):

* p = 2: ``omega = min(d / (4 s^2), sqrt(d) / s)`` (tighter than Alistarh et al. 2017,
  Lemma 3.1, ``min(d / s^2, sqrt(d) / s)``).
* p = inf: with ``m = d - 1``, ``omega = sqrt(m) / (2 s)`` if ``sqrt(m) >= 4 s``, else
  ``4 m / (16 s^2 + m)`` (the largest coordinate is sent exactly).

Natural dithering (codec ``natdither``), levels ``0`` and the s powers of two
``2^(1-s), ..., 2^-1, 1``: ``r_i = |x_i| / N`` in ``[2^e, 2^(e+1)]`` is rounded up with probability
``(r_i - 2^e) / 2^e`` (exactly, from the float64 mantissa), and ``r_i < 2^(1-s)`` becomes
``2^(1-s)`` with probability ``r_i 2^(s-1)``, else 0. Unbiased. Variance: between two powers of
two, ``(2^(e+1) - r)(r - 2^e) <= r^2 / 8`` (the natural compression bound); below
``sigma = 2^(1-s)``, ``(sigma - r) r <= min(sigma^2 / 4, sigma r)``. So
``E||Q(x) - x||^2 <= ||x||^2 / 8 + N^2 sum_i min(sigma^2/4, sigma r_i)`` and (see
:func:`~mpicomp.compressors._levels.rounding_variance_bound` with step sigma):

* p = 2: ``omega = 1/8 + min(d 2^(-2s), sqrt(d) 2^(1-s))``,
* p = inf: ``omega = 1/8 + R``, ``R = 2^-s sqrt(d - 1)`` if ``2^(1-s) sqrt(d - 1) >= 4``,
  else ``4 (d - 1) sigma^2 / (16 + (d - 1) sigma^2)``;

both within the paper's ``1/8 + d^(1/min(p,2)) 2^(1-s) min(1, d^(1/min(p,2)) 2^(1-s))``.

Wire (both codecs): one float64 scalar, the norm ``||x||_p``; payload: d codes of
``P = 1 + ceil(log2(s + 1))`` bits, ``level | negative << (P - 1)`` with ``level in 0..s``, stored
as bit planes per group of 64 coordinates (layout of :mod:`mpicomp.compressors._levels`, ``d P``
bits): level k is ``k / s`` (``dither``), or 0 for k = 0 and ``2^(k - s)`` for ``k = 1..s``
(``natdither``), times the norm. Decoding checks the norm (finite, >= 0), every level (``<= s``),
canonical signs and padding. The norm pass also rejects NaN and Inf input.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from ..rng import RandomKey, key_states
from ..wire import Message
from ._level_codec import LevelQuantizer
from ._levels import (
    LevelCode,
    check_levels,
    check_norm_order,
    decode_levels,
    encode_level_rows,
    encode_levels,
    linear_code,
    pow2_code,
    rounding_variance_bound,
)
from .base import check_scalar
from .registry import register


class Dithering(LevelQuantizer):
    """``s`` nonzero levels relative to the p-norm (p = 2 or inf): the norm, then d sign + level codes.

    Subclasses give the registry name, the largest ``s``, the constructor defaults, the level code
    and omega. The normalised magnitudes ``cap |x_i| / ||x||_p`` fill the code's range ``[0, cap]``.
    """

    n_scalars = 1
    max_levels: ClassVar[int]

    def __init__(self, s: int, p: float) -> None:
        self.s = check_levels(self.name, s, self.max_levels)
        self.p = check_norm_order(self.name, p)
        self.code = self._level_code()

    @abstractmethod
    def _level_code(self) -> LevelCode:
        """The sign + level code with ``self.s`` nonzero levels."""

    @property
    def params(self) -> dict[str, object]:
        return {"s": self.s, "p": self.p}

    def expected_bits(self, d: int) -> float:
        return float(d * self.code.bits)

    def payload_bytes(self, d: int) -> int:
        return self.code.nbytes(d)

    def _encode_into(self, x: np.ndarray, key: RandomKey, payload: np.ndarray) -> tuple[float, ...]:
        if x.size == 0:
            return (0.0,)
        return (float(encode_levels(x, key.state, self.code, x.size, self.p, payload)[0]),)

    def _encode_rows_into(
        self, rows: np.ndarray, keys: Sequence[RandomKey], messages: np.ndarray, start: int
    ) -> list[tuple[float, ...]] | np.ndarray:
        """Short rows' norms and codes by two kernel calls (:func:`~mpicomp.compressors._levels.encode_level_rows`)."""
        if not self._sums_payload_rows(rows.shape[1]):
            return super()._encode_rows_into(rows, keys, messages, start)
        return encode_level_rows(rows, key_states(keys), self.code, rows.shape[1], self.p, messages, start)

    def _decode_levels(self, msg: Message, out: np.ndarray, accumulate: bool, factor: float) -> None:
        norm = check_scalar(msg.scalars[0], "norm")
        payload = np.frombuffer(msg.payload, dtype=np.uint8)
        decode_levels(payload, self.code, msg.d, np.array([norm]), self.name, out, accumulate, factor)

    def _row_codes(self, payloads: np.ndarray, scalars: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray, int]:
        """The whole payload is codes; the norm is the codec scalar; one block."""
        return payloads, scalars, d


@register
class Dither(Dithering):
    """Random dithering with ``s`` uniform levels relative to the p-norm (p = 2 or inf)."""

    name = "dither"
    max_levels = 2**31 - 1  # 31 level bits + 1 sign bit fill a 32-bit code

    def __init__(self, s: int = 1, p: float = 2) -> None:
        super().__init__(s, p)

    def _level_code(self) -> LevelCode:
        return linear_code(self.s)

    def omega(self, d: int) -> float:
        return rounding_variance_bound(d, 1.0 / self.s, self.p)


@register
class NaturalDither(Dithering):
    """Natural dithering with ``s`` power-of-two levels relative to the p-norm (p = 2 or inf)."""

    name = "natdither"
    max_levels = 1022  # the smallest level 2^(1-s) stays a normal float64

    def __init__(self, s: int = 3, p: float = 2) -> None:
        super().__init__(s, p)

    def _level_code(self) -> LevelCode:
        return pow2_code(1 - self.s, self.s, self.s.bit_length(), 1.0)

    def omega(self, d: int) -> float:
        return 0.125 + rounding_variance_bound(d, 2.0 ** (1 - self.s), self.p)
