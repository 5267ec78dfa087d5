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
from llvmlite import ir
from numba import float64, njit, uint8, uint64
from numba.core import types

from ..rng import GOLDEN, RandomKey, mix64
from ..wire import Message, MessageError
from ..wire.bitpack import llvm_intrinsic, store_u64
from ._levels import random_counter, uniform_grid
from .base import Compressor, check_scalar, non_finite_input
from .numeric import first_non_finite, float64_bits, float64_from_bits, max_magnitude
from .registry import register

TRITS_PER_BYTE = 5
_VALID_BYTES = 3**TRITS_PER_BYTE
# _TRIT_BYTES[b]: the five base-3 digits of byte b, digit j in byte j of a little-endian word (the
# decoding table; bytes >= 243 are invalid and decode to no digits).
_TRIT_BYTES = np.zeros(256, dtype=np.uint64)
_TRIT_BYTES[:_VALID_BYTES] = (np.arange(_VALID_BYTES)[:, None] // 3 ** np.arange(TRITS_PER_BYTE) % 3) @ (
    256 ** np.arange(TRITS_PER_BYTE)
)
_SPAN_BYTES = 512  # bytes (2560 coordinates) per span: trits in a vectorized loop, then packed or spread
_SPAN = TRITS_PER_BYTE * _SPAN_BYTES
_PACK_BYTES = 64  # bytes packed at once by pack_trit_bytes (_SPAN_BYTES is a multiple)
_PACK_DIGITS = TRITS_PER_BYTE * _PACK_BYTES
_HALF_ULP = 2.0**-53


@llvm_intrinsic
def pack_trit_bytes(typingctx, trits, start, out, at):
    """``out[at + g] = sum_j 3^j trits[start + 5g + j]`` for ``g < 64``: 320 base-3 digits (uint8) into
    64 bytes, by Horner's rule on five vector shuffles of one load (no bounds check)."""
    if not all(isinstance(t, types.Array) and t.dtype == types.uint8 for t in (trits, out)):
        return None

    def codegen(context, builder, signature, args):
        def vector_pointer(array, index, length):
            data = context.make_array(signature.args[array])(context, builder, args[array]).data
            pointer = builder.gep(data, [context.cast(builder, args[index], signature.args[index], types.intp)])
            return builder.bitcast(pointer, ir.VectorType(ir.IntType(8), length).as_pointer())

        digits = builder.load(vector_pointer(0, 1, _PACK_DIGITS), align=1)
        packed = None
        for j in reversed(range(TRITS_PER_BYTE)):  # ((t4 3 + t3) 3 + ...) 3 + t0
            lanes = ir.Constant(
                ir.VectorType(ir.IntType(32), _PACK_BYTES), list(range(j, _PACK_DIGITS, TRITS_PER_BYTE))
            )
            digit = builder.shuffle_vector(digits, digits, lanes)
            packed = digit if packed is None else builder.add(builder.add(builder.add(packed, packed), packed), digit)
        builder.store(packed, vector_pointer(2, 3, _PACK_BYTES), align=1)
        return context.get_dummy_value()

    return types.void(trits, start, out, at), codegen


@njit(cache=True, nogil=True)
def _ternarize(x, scale, state, out):
    """Trits ``b_i (1 + [x_i < 0])``, ``b_i = [u_i s < |x_i|]`` with ``u_i`` = :func:`~mpicomp.rng.random_uniform`
    (so ``P(b_i = 1) = |x_i| / s``; ``u_i <= 1 - 2**-53`` keeps ``fl(u_i s) < s``: the largest
    coordinate is always kept), packed five per byte as ``sum_j t_{5g+j} 3^j``.

    Span by span: a vectorized loop draws the trits (the uniform assembled from bit patterns, as a
    uint64-to-float conversion does not vectorize), then :func:`pack_trit_bytes` packs them 64
    bytes at a time into ``packed``, whose first bytes are copied out.
    """
    d = x.size
    trits = np.zeros(_SPAN, dtype=np.uint8)
    packed = np.empty(_SPAN_BYTES, dtype=np.uint8)
    counter = random_counter(state, 0)
    for g0 in range(0, out.size, _SPAN_BYTES):
        g1 = min(out.size, g0 + _SPAN_BYTES)
        values = x[TRITS_PER_BYTE * g0 : min(d, TRITS_PER_BYTE * g1)]
        for j in range(values.size):
            value = float64(values[j])
            u = mix64(counter)
            counter += GOLDEN
            uniform = uniform_grid(u) + (_HALF_ULP if (u >> uint64(11)) & uint64(1) else 0.0)
            trits[j] = uint8(uniform * scale < abs(value)) * (uint8(1) + uint8(value < 0.0))
        trits[values.size :] = 0  # past d: zero digits in the last byte
        for g in range(0, g1 - g0, _PACK_BYTES):
            pack_trit_bytes(trits, TRITS_PER_BYTE * g, packed, g)
        out[g0:g1] = packed[: g1 - g0]


@njit(cache=True, nogil=True)
def _unternarize(buf, scale, table, out, accumulate):
    """Trits into ``{0, +s, -s}`` written (``accumulate``: added) into ``out``; returns -1, or the
    first byte that is invalid (>= 243, or digits past d).

    Span by span: bytes spread into digits through ``table`` (one 8-byte store per byte, the next
    one overwriting its 3 spare bytes), then a vectorized loop picks ``s``'s pattern, sign-flipped
    for digit 2, zeroed for digit 0.
    """
    d = out.size
    trits = np.zeros(_SPAN + 8, dtype=np.uint8)
    pattern = float64_bits(float64(scale))
    for g0 in range(0, buf.size, _SPAN_BYTES):
        g1 = min(buf.size, g0 + _SPAN_BYTES)
        invalid = False
        for g in range(g1 - g0):
            code = buf[g0 + g]
            invalid |= code >= _VALID_BYTES
            store_u64(trits, TRITS_PER_BYTE * g, table[code])
        target = out[TRITS_PER_BYTE * g0 : min(d, TRITS_PER_BYTE * g1)]
        if invalid or (g1 == buf.size and trits[target.size : TRITS_PER_BYTE * (g1 - g0)].any()):
            for g in range(g0, g1):
                if buf[g] >= _VALID_BYTES or (g == buf.size - 1 and table[buf[g]] >> uint64(8 * (d - 5 * g))):
                    return g
        for j in range(target.size):
            t = uint64(trits[j])
            value = float64_from_bits((pattern ^ (uint64(t == 2) << uint64(63))) & (uint64(0) - uint64(t != 0)))
            if accumulate:
                target[j] += value
            else:
                target[j] = value
    return -1


@register
class TernGrad(Compressor):
    """TernGrad: ``s sign(x) b`` with ``P(b_i = 1) = |x_i| / s``; unbiased, omega = (sqrt(d) - 1) / 2."""

    name = "terngrad"
    unbiased = True
    n_scalars = 1
    checks_finite = True  # a non-finite max |x_i| is searched for NaN / Inf

    def omega(self, d: int) -> float:
        return (np.sqrt(d) - 1.0) / 2.0

    def expected_bits(self, d: int) -> float:
        return 8.0 * -(-d // TRITS_PER_BYTE)

    def payload_bytes(self, d: int) -> int:
        return -(-d // TRITS_PER_BYTE)

    def _encode_into(self, x: np.ndarray, key: RandomKey, payload: np.ndarray) -> tuple[float, ...]:
        scale = max_magnitude(x)
        if not np.isfinite(scale):
            raise non_finite_input(x, first_non_finite(x))
        if scale > 0.0:
            _ternarize(x, scale, np.uint64(key.state), payload)
        else:
            payload[:] = 0
        return (scale,)

    def _decode_into(self, msg: Message, key: RandomKey | None, out: np.ndarray, accumulate: bool) -> None:
        scale = check_scalar(msg.scalars[0], "terngrad scale")
        data = np.frombuffer(msg.payload, dtype=np.uint8)
        need = self.payload_bytes(msg.d)
        if data.size != need:
            raise MessageError(f"terngrad: payload of {data.size} bytes, d={msg.d} trits need {need}")
        bad = _unternarize(data, scale, _TRIT_BYTES, out, accumulate)
        if bad >= 0:
            raise MessageError(f"terngrad: byte {bad} is not five valid ternary digits")
