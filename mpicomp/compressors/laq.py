"""LAQ's innovation quantizer (Sun, Chen, Giannakis, Yang 2019, paper 003, eqs. (5)-(6)).

A worker quantizes its gradient innovation ``v = grad f_m(theta^k) - Q_m(theta_hat^{k-1})`` on a
uniform grid of ``2^b`` points spanning ``[-R, R]``, ``R = ||v||_inf``, ``tau = 1/(2^b - 1)``::

    q_i = floor((v_i + R) / (2 tau R) + 1/2)  in {0, ..., 2^b - 1}       (5)
    delta Q = 2 tau R q - R 1                                          (6)

Deterministic nearest rounding: ``|delta Q_i - v_i| <= tau R`` for every i. As a compressor
``C(v) = delta Q`` (the method keeps the reference ``Q_m(theta_hat)`` and adds it back; used alone,
the reference is 0). The coordinates at ``+-R`` sit on the grid, every other one may be off by up
to ``tau R``, so ``||C(v) - v||^2 <= (d - 1) tau^2 R^2 <= (d - 1) tau^2 ||v||^2``: C is contractive
with ``alpha = 1 - (d - 1) tau^2`` when that is positive (tight for ``v = (R, 0, ..., 0)``); the
float32 radius below adds a relative ``2^-23``, included in :meth:`LAQQuantizer.alpha`.

Wire (codec ``laq``, no float64 scalars): the payload is R as a little-endian float32 (the paper's
32 radius bits), then the d codes of b bits (:mod:`mpicomp.wire.bitpack` layout): ``32 + b d``
bits. R is rounded **up** to float32 and both sides quantize with that value, so every code stays
in range. R = 0 (a zero innovation) is sent with all codes 0; R must be finite, non-negative and
not ``-0.0``; any other payload length, padding bit or nonzero code with R = 0 is a MessageError.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..rng import RandomKey
from ..wire import Message, MessageError, pack_uint, packed_nbytes, unpack_uint
from .base import Compressor
from .numeric import max_magnitude
from .registry import register

RADIUS = np.dtype("<f4")  # the radius R on the wire
RADIUS_BYTES = RADIUS.itemsize
MAX_BITS = 32
FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT32_RELATIVE = 2.0**-23  # rounding R up to float32 enlarges it by at most this factor (normal range)


def float32_radius(radius: float) -> float:
    """The smallest float32 ``>= radius`` (ValueError if none: the radius leaves the float32 range)."""
    if radius > FLOAT32_MAX:
        raise ValueError(f"laq: radius ||x||_inf = {radius:.6g} exceeds the float32 range of the wire format")
    rounded = np.float32(radius)
    if float(rounded) < radius:
        rounded = np.nextafter(rounded, np.float32(np.inf))
    return float(rounded)


@njit(cache=True)
def _nearest_codes(v, radius, levels, out):
    """Eq. (5): ``q_i = floor((v_i + R) (2^b - 1) / (2R) + 1/2)``, capped at ``2^b - 1`` against rounding."""
    scale = levels / (2.0 * radius)
    for i in range(v.size):
        q = np.floor((np.float64(v[i]) + radius) * scale + 0.5)
        out[i] = min(q, levels)


@njit(cache=True)
def _grid_values(codes, radius, levels, out):
    """Eq. (6): ``delta Q_i = 2 tau R q_i - R`` with ``tau = 1/(2^b - 1)``."""
    step = 2.0 * radius / levels
    for i in range(codes.size):
        out[i] = codes[i] * step - radius


@register
class LAQQuantizer(Compressor):
    """LAQ's quantizer: b-bit nearest rounding on the grid spanning ``+-||x||_inf``, radius as float32."""

    name = "laq"
    unbiased = False

    def __init__(self, bits: int = 3) -> None:
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
            raise ValueError(f"laq: bits must be an integer in 1..{MAX_BITS}, got {bits!r}")
        self.bits = bits
        self.levels = float(2**bits - 1)  # 1/tau

    @property
    def params(self) -> dict[str, int]:
        return {"bits": self.bits}

    def alpha(self, d: int) -> float | None:
        """``1 - ((d - 1) tau^2 + 2^-46)(1 + 2^-23)^2``, None when not positive (no contraction for this d)."""
        u = FLOAT32_RELATIVE
        alpha = 1.0 - ((d - 1) / self.levels**2 + u * u) * (1.0 + u) ** 2
        return alpha if alpha > 0.0 else None

    def expected_bits(self, d: int) -> float:
        return float(8 * RADIUS_BYTES + self.bits * d)

    def _encode(self, x: np.ndarray, key: RandomKey) -> tuple[tuple[float, ...], np.ndarray]:
        radius = float32_radius(max_magnitude(x))
        codes = np.zeros(x.size, dtype=np.uint32)
        if radius > 0.0:
            _nearest_codes(x, radius, self.levels, codes)
        head = np.array([radius], dtype=RADIUS).view(np.uint8)
        return (), np.concatenate((head, pack_uint(codes, self.bits)))

    def _decode(self, msg: Message, key: RandomKey | None) -> np.ndarray:
        data = np.frombuffer(msg.payload, dtype=np.uint8)
        need = RADIUS_BYTES + packed_nbytes(msg.d, self.bits)
        if data.size != need:
            raise MessageError(f"laq: payload of {data.size} bytes, d={msg.d} codes of {self.bits} bits need {need}")
        radius = float(data[:RADIUS_BYTES].view(RADIUS)[0])
        if not np.isfinite(radius) or radius < 0.0 or np.signbit(radius):
            raise MessageError(f"laq: invalid radius {radius!r} (must be finite and >= 0, not -0)")
        packed = data[RADIUS_BYTES:]
        tail_bits = (msg.d * self.bits) % 8
        if tail_bits and packed[-1] >> tail_bits:
            raise MessageError("laq: nonzero padding bits after the last code")
        codes = unpack_uint(packed, msg.d, self.bits)
        if radius == 0.0:
            if codes.any():
                raise MessageError("laq: nonzero codes with radius 0 (a zero innovation is sent as all-zero codes)")
            return np.zeros(msg.d)
        out = np.empty(msg.d)
        _grid_values(codes, radius, self.levels, out)
        return out
