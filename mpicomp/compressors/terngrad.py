"""TernGrad (Wen, Xu, Yan, Wu, Wang, Chen, Li 2017): ``Q(x)_i = s sign(x_i) b_i``, ``s = max_j |x_j|``,
``b_i ~ Bernoulli(|x_i| / s)`` independent.

Unbiased, with ``E||Q(x) - x||^2 = sum_i |x_i| (s - |x_i|) = s ||x||_1 - ||x||_2^2``. Bound: scale so
that s = 1 at coordinate 1 and let the others be ``t_i in [0, 1]``, ``S = sum t_i``. Cauchy-Schwarz
gives ``sum t_i^2 >= S^2 / (d - 1)``, so the ratio to ``||x||^2`` is at most
``(1 + S) / (1 + S^2 / (d - 1)) - 1``, maximal at ``S = sqrt(d) - 1``: omega = (sqrt(d) - 1) / 2,
attained by ``x = (1, t, ..., t)`` with ``t = 1 / (sqrt(d) + 1)``, hence tight.

Wire: s as the one float64 codec scalar; the ternary digits (0: zero, 1: +s, 2: -s) packed five
per byte as ``sum_j t_{5g+j} 3^j`` (1.6 bits per coordinate; bytes >= 243 are invalid).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..rng import RandomKey, random_uniform
from ..wire import Message, MessageError
from .base import Compressor, check_scalar
from .numeric import max_magnitude
from .registry import register

TRITS_PER_BYTE = 5
_VALID_BYTES = 3**TRITS_PER_BYTE
# _TRITS[b, j]: digit j of byte b in base 3, the decoding table of the five-trit packing.
_TRITS = (np.arange(_VALID_BYTES)[:, None] // 3 ** np.arange(TRITS_PER_BYTE) % 3).astype(np.int8)


@njit(cache=True, inline="always")
def _trit(x, scale, state, i):
    """Trit of coordinate i: ``b_i (1 + [x_i < 0])`` with ``b_i = [u_i s < |x_i|]``, ``P(b_i = 1) = |x_i| / s``.

    ``u_i <= 1 - 2**-53`` keeps ``fl(u_i s) < s``, so the largest coordinate is always kept, as it must be.
    """
    value = np.float64(x[i])
    return (random_uniform(state, i) * scale < abs(value)) * (1 + (value < 0))


@njit(cache=True)
def _ternarize(x, scale, state, out):
    """Draw the trits and pack five per byte, ``sum_j t_{5g+j} 3^j`` by Horner's rule from j = 4."""
    full = x.size // TRITS_PER_BYTE
    for g in range(full):
        code = 0
        for j in range(TRITS_PER_BYTE - 1, -1, -1):  # a constant trip count, unrolled
            code = 3 * code + _trit(x, scale, state, TRITS_PER_BYTE * g + j)
        out[g] = code
    if full < out.size:
        code = 0
        for i in range(x.size - 1, TRITS_PER_BYTE * full - 1, -1):
            code = 3 * code + _trit(x, scale, state, i)
        out[full] = code


@njit(cache=True)
def _unternarize(buf, scale, trits, out):
    """Unpack trits into ``{0, +s, -s}`` with the ``trits`` table; returns -1, or the first invalid byte."""
    d = out.size
    values = np.array((0.0, scale, -scale))
    for g in range(buf.size):
        code = buf[g]
        if code >= _VALID_BYTES:
            return g
        for j in range(TRITS_PER_BYTE):
            i = TRITS_PER_BYTE * g + j
            trit = trits[code, j]
            if i < d:
                out[i] = values[trit]
            elif trit:
                return g
    return -1


@register
class TernGrad(Compressor):
    """TernGrad: ``s sign(x) b`` with ``P(b_i = 1) = |x_i| / s``; unbiased, omega = (sqrt(d) - 1) / 2."""

    name = "terngrad"
    unbiased = True
    n_scalars = 1

    def omega(self, d: int) -> float:
        return (np.sqrt(d) - 1.0) / 2.0

    def expected_bits(self, d: int) -> float:
        return 8.0 * -(-d // TRITS_PER_BYTE)

    def _encode(self, x: np.ndarray, key: RandomKey) -> tuple[tuple[float, ...], np.ndarray]:
        scale = max_magnitude(x)
        out = np.zeros(-(-x.size // TRITS_PER_BYTE), dtype=np.uint8)
        if scale > 0.0:
            _ternarize(x, scale, key.state, out)
        return (scale,), out

    def _decode(self, msg: Message, key: RandomKey | None) -> np.ndarray:
        scale = check_scalar(msg.scalars[0], "terngrad scale")
        data = np.frombuffer(msg.payload, dtype=np.uint8)
        need = -(-msg.d // TRITS_PER_BYTE)
        if data.size != need:
            raise MessageError(f"terngrad: payload of {data.size} bytes, d={msg.d} trits need {need}")
        out = np.empty(msg.d)
        bad = _unternarize(data, scale, _TRITS, out)
        if bad >= 0:
            raise MessageError(f"terngrad: byte {bad} is not five valid ternary digits")
        return out
