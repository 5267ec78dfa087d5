"""Natural compression C_nat: poster 004; Horváth et al., "Natural compression for distributed
deep learning" (2019).

``C_nat(t) = sign(t) 2^floor(log2|t|)`` with probability ``(2^ceil(log2|t|) - |t|) / 2^floor(log2|t|)``,
else ``sign(t) 2^ceil(log2|t|)``: unbiased, and ``(2^(e+1) - |t|)(|t| - 2^e) <= t^2 / 8`` gives
``omega = 1/8``. The rounding is read off the float64 bit pattern (exact for float32 and float64
input): the exponent field is ``floor(log2|t|)``, the 52-bit mantissa ``m`` rounds up with
probability ``m / 2^52`` (up iff ``u >> 12 < m`` for the coordinate's random word ``u``).

Wire (codec ``natural``, no scalars): 9 bits per coordinate, as d exponent bytes followed by a
sign bitmap of ``ceil(d / 8)`` bytes (bit ``i % 8`` of byte ``i // 8`` is coordinate i's sign,
LSB first; padding bits zero). Exponent code 0 is zero, codes 1..254 are ``2^(code - 127)``
(a code shifted left by 23 is the float32 bit pattern of the magnitude); code 255 and a signed
zero are invalid. Bytes, not 9-bit fields, so that the kernels vectorize.

Range: ``|t| > 2^127`` (whose rounding may reach ``2^128``) raises ValueError at encode.
``0 < |t| < 2^-126`` (float32 subnormals, tiny float64) is rounded between 0 and ``2^-126``
with probability ``|t| 2^126``: still unbiased, but its variance ``(2^-126 - |t|) |t|`` can exceed
``t^2 / 8``, so ``omega = 1/8`` holds up to an additive ``2^-126 sum_{|x_i| < 2^-126} |x_i|``.

Kernels work on groups of 64 coordinates (one 64-bit sign word), threaded over group ranges
for long vectors; coordinate i draws ``random_u64(state, i)``, so the codes do not depend on
the number of threads.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import float64, int64, njit, uint8, uint32, uint64

from ..rng import RandomKey, key_states, random_u64
from ..wire import Message, MessageError
from ..wire.bitpack import (
    GROUP,
    PARALLEL_MIN_CHUNKS,
    chunk_count,
    group_count,
    parallel_tasks,
    run_split,
)
from ._levels import float64_bits, float64_from_bits, uniform_grid
from .base import Compressor, naming_message, non_finite_input
from .registry import register

EXPONENT_BITS = 8
EXPONENT_BIAS = 127  # exponent code e > 0 stands for 2^(e - 127)
_TINY_SCALE = 2.0**126  # 1 / the smallest code's magnitude 2^-126
_MANTISSA = np.uint64((1 << 52) - 1)
_MANTISSA32 = np.uint32((1 << 23) - 1)
_LIMIT64_TWICE = np.uint64(0x47E0000000000000 << 1)  # 2^127 as float64, shifted past the sign bit
_LIMIT32_TWICE = np.uint32(0x7F000000 << 1)  # 2^127 as float32, shifted past the sign bit
_TO_CODE = 1023 - EXPONENT_BIAS  # float64 exponent field minus the code
_USUAL_FIELDS = 1149 - (_TO_CODE + 1)  # float64 exponent fields 897..1149: 2^-126 <= |t| < 2^127


@njit(cache=True, inline="always")
def natural_code(value, u):
    """``(code, negative)`` of ``C_nat(value)`` with random word ``u``: ``2^floor(log2|t|)`` plus one
    step with probability ``m / 2^52``; below ``2^-126``, 0 or ``2^-126`` (code 1) with probability
    ``|t| 2^126``. Branch-free, so that the group loops vectorize."""
    pattern = float64_bits(float64(value))
    field = int64((pattern >> uint64(52)) & uint64(0x7FF))
    normal = field - _TO_CODE + int64((u >> uint64(12)) < (pattern & _MANTISSA))
    tiny = int64(uniform_grid(u) < abs(float64(value)) * _TINY_SCALE)
    code = normal if field > _TO_CODE else tiny
    return code, uint64(pattern >> uint64(63)) & uint64(code > 0)


@njit(cache=True, inline="always")
def too_large(value):
    """1 if ``|value| > 2^127`` or NaN, else 0: an integer compare of the bit patterns without the
    sign (NaN patterns lie above infinity's), which vectorizes where a float compare does not."""
    return uint64((float64_bits(float64(value)) << uint64(1)) > _LIMIT64_TWICE)


@njit(cache=True, nogil=True)
def first_too_large(x):
    """The first index with ``|x_i| > 2^127`` or NaN, or -1 (searched only after a kernel flagged one)."""
    for i in range(x.size):
        if too_large(x[i]):
            return i
    return -1


@njit(cache=True, inline="always")
def _store_signs(signs, g, word, count):
    for k in range((count + 7) // 8):
        signs[g * 8 + k] = uint8(word >> uint64(8 * k))


@njit(cache=True, nogil=True)
def _encode_exact(x, state, exponents, signs, g, count):
    """Group ``g`` (``count`` coordinates) by :func:`natural_code` itself: the tail group, and
    float64 groups holding nonzero magnitudes below ``2^-126`` (or too large ones); returns nonzero if a value is too large."""
    lo = g * GROUP
    word = uint64(0)
    over = uint64(0)
    for j in range(count):
        over |= too_large(x[lo + j])
        code, negative = natural_code(x[lo + j], random_u64(state, lo + j))
        exponents[lo + j] = uint8(code)
        word |= negative << uint64(j)
    _store_signs(signs, g, word, count)
    return over


@njit(cache=True, inline="always")
def _group32(patterns, state, exponents, signs, g):
    """A whole group of float32 input, from its 32-bit patterns: exponent field ``e``, ``code = e + (u >> 41 < m)``
    for the 23-bit mantissa m (the float64 rule, as float32's mantissa is float64's top 23 bits;
    ``e = 0`` gives the ``2^-126`` rounding of subnormals). Returns nonzero if a value is too large."""
    lo = g * GROUP
    bits, codes = patterns[lo : lo + GROUP], exponents[lo : lo + GROUP]
    word = uint64(0)
    over = uint32(0)
    for j in range(GROUP):
        pattern = bits[j]
        over |= uint32(uint32(pattern << uint32(1)) > _LIMIT32_TWICE)
        code = ((pattern >> uint32(23)) & uint32(0xFF)) + uint32(
            uint32(random_u64(state, lo + j) >> uint64(41)) < (pattern & _MANTISSA32)
        )
        codes[j] = uint8(code)
        word |= uint64((pattern >> uint32(31)) & uint32(code > 0)) << uint64(j)
    _store_signs(signs, g, word, GROUP)
    return uint64(over)


@njit(cache=True, inline="always")
def _is_zero(pattern):
    """1 for the float64 bit pattern of +0 or -0, else 0."""
    return uint64(pattern << uint64(1) == uint64(0))


@njit(cache=True, inline="always")
def _unusual(pattern):
    """1 unless the float64 bit pattern is a zero or its exponent field lies in ``[897, 1149]``, i.e.
    ``2^-126 <= |t| < 2^127``: tiny, huge and non-finite values need :func:`_encode_exact`."""
    field = (pattern >> uint64(52)) & uint64(0x7FF)
    return uint64(field - uint64(_TO_CODE + 1) > uint64(_USUAL_FIELDS)) & (_is_zero(pattern) ^ uint64(1))


@njit(cache=True, inline="always")
def _usual_code(pattern, u):
    """``(code, negative)`` of :func:`natural_code` for a float64 bit pattern of ``+-0`` or of
    ``2^-126 <= |t| < 2^127``: ``field - 896`` plus ``(u >> 12 < m)``, the sign bit as is (0 for zeros)."""
    nonzero = _is_zero(pattern) ^ uint64(1)
    field = int64(pattern >> uint64(52)) & 0x7FF
    up = int64(int64(u >> uint64(12)) < int64(pattern & _MANTISSA))
    return (field - _TO_CODE + up) * int64(nonzero), (pattern >> uint64(63)) & nonzero


@njit(cache=True, inline="always")
def _group64(x, state, exponents, signs, g):
    """A whole group of float64 input, assuming each ``x_i`` is ``+-0`` (code 0, sign 0, as
    :func:`natural_code` gives) or ``2^-126 <= |x_i| < 2^127`` (``code = field - 896`` plus the
    rounding, sign bit as is); returns nonzero if the assumption fails for some value, and the
    group must be encoded again by :func:`_encode_exact`."""
    lo = g * GROUP
    values, codes = x[lo : lo + GROUP], exponents[lo : lo + GROUP]
    word = uint64(0)
    unusual = uint64(0)
    for j in range(GROUP):
        pattern = float64_bits(float64(values[j]))  # float64(...): a no-op on the float64 input it serves
        unusual |= _unusual(pattern)
        code, negative = _usual_code(pattern, random_u64(state, lo + j))
        codes[j] = uint8(code)
        word |= negative << uint64(j)
    _store_signs(signs, g, word, GROUP)
    return unusual


@njit(cache=True, nogil=True)
def encode_single(x, state, exponents, signs, g0, g1):
    """Exponent bytes and sign bitmap of groups ``[g0, g1)`` of float32 ``x`` (:func:`_group32`);
    0 if some ``|x_i| > 2^127`` or NaN, else -1."""
    whole = min(g1, x.size // GROUP)
    patterns = x.view(np.uint32)
    over = uint64(0)
    for g in range(g0, whole):
        over |= _group32(patterns, state, exponents, signs, g)
    if g1 > whole:
        over |= _encode_exact(x, state, exponents, signs, whole, x.size - whole * GROUP)
    return 0 if over else -1


@njit(cache=True, nogil=True)
def encode_double(x, state, exponents, signs, g0, g1):
    """Exponent bytes and sign bitmap of groups ``[g0, g1)`` of float64 ``x``: :func:`_group64`, then
    :func:`_encode_exact` for the groups it flagged and the tail; 0 if some ``|x_i| > 2^127`` or
    NaN, else -1."""
    whole = min(g1, x.size // GROUP)
    unusual = uint64(0)
    for g in range(g0, whole):
        unusual |= _group64(x, state, exponents, signs, g)
    over = uint64(0)
    if unusual:
        for g in range(g0, whole):
            for i in range(g * GROUP, (g + 1) * GROUP):
                if _unusual(float64_bits(float64(x[i]))):
                    over |= _encode_exact(x, state, exponents, signs, g, GROUP)
                    break
    if g1 > whole:
        over |= _encode_exact(x, state, exponents, signs, whole, x.size - whole * GROUP)
    return 0 if over else -1


@njit(cache=True, inline="always")
def natural_value(code, negative):
    """``(-1)^negative 2^(code - 127)`` (0 for code 0), assembled as a float64 bit pattern."""
    pattern = ((uint64(code) + uint64(_TO_CODE)) << uint64(52)) | (negative << uint64(63))
    return float64_from_bits(pattern if code > 0 else uint64(0))


@njit(cache=True, inline="always")
def _decode_group(exponents, signs, out, g, count, accumulate, scale, divisor):
    """Values of group ``g`` (``count`` coordinates; a constant 64 for whole groups, so that the loop
    vectorizes) written into ``out`` (``accumulate``: ``scale`` times them added), then the group divided by
    ``divisor`` unless it is 1 (while the group is in L1); nonzero if a code is invalid (255, or a negative
    zero) or a padding bit after the last sign is set."""
    lo = g * GROUP
    word = uint64(0)
    for k in range((count + 7) // 8):
        word |= uint64(signs[g * 8 + k]) << uint64(8 * k)
    codes, target = exponents[lo : lo + count], out[lo : lo + count]
    invalid = uint64(word >> uint64(count) != 0) if count < GROUP else uint64(0)
    for j in range(count):
        code = uint64(codes[j])
        negative = (word >> uint64(j)) & uint64(1)
        invalid |= uint64(code == 255) | (uint64(code == 0) & negative)
        if accumulate:
            target[j] += scale * natural_value(code, negative)
        else:
            target[j] = natural_value(code, negative)
    if divisor != 1.0:
        for j in range(count):
            target[j] /= divisor
    return invalid


@njit(cache=True, nogil=True, error_model="numpy")  # a divisor of 0 gives inf and NaN, as NumPy's division does
def decode_natural(exponents, signs, out, accumulate, scale, divisor, g0, g1):
    """Decode groups ``[g0, g1)`` into ``out`` (``accumulate``: add ``scale`` times the values to it,
    ``scale = 1`` exactly the values), then divide them by ``divisor`` (``(out + v) / n``: the master's
    last upload and its mean in one pass); 0 if some code or padding bit is invalid, else -1."""
    whole = min(g1, out.size // GROUP)
    invalid = uint64(0)
    if accumulate:  # the flag is hoisted out of the group loops, so that each vectorizes on its own
        for g in range(g0, whole):
            invalid |= _decode_group(exponents, signs, out, g, GROUP, True, scale, divisor)
    else:
        for g in range(g0, whole):
            invalid |= _decode_group(exponents, signs, out, g, GROUP, False, scale, divisor)
    if g1 > whole:
        invalid |= _decode_group(exponents, signs, out, whole, out.size - whole * GROUP, accumulate, scale, divisor)
    return 0 if invalid else -1


@njit(cache=True, nogil=True)
def decode_rows_add(payloads, targets, factor):
    """``target += factor *`` the decoded payload of every row of ``payloads`` (``(m, d + ceil(d/8))`` uint8), in
    row order, the target ``targets[0]`` of every row (a sum) or ``targets[r]`` of row r (``(m, d)``); returns
    the first row holding an invalid code or padding bit, or -1."""
    d = targets.shape[1]
    for r in range(payloads.shape[0]):
        target = targets[r] if targets.shape[0] > 1 else targets[0]
        if decode_natural(payloads[r, :d], payloads[r, d:], target, True, factor, 1.0, 0, group_count(d)) >= 0:
            return r
    return -1


@njit(cache=True, nogil=True)
def encode_rows(rows, states, messages, start, single):
    """Every row of ``rows`` (float32 input if ``single``, else float64) encoded into its message, the
    payload at ``messages[r, start:]``; returns the first row with a value too large or NaN, or -1."""
    d = rows.shape[1]
    for r in range(rows.shape[0]):
        exponents, signs = messages[r, start : start + d], messages[r, start + d : start + d + (d + 7) // 8]
        if single:
            flagged = encode_single(rows[r], states[r], exponents, signs, 0, group_count(d))
        else:
            flagged = encode_double(rows[r], states[r], exponents, signs, 0, group_count(d))
        if flagged >= 0:
            return r
    return -1


@njit(cache=True, nogil=True)
def first_invalid(exponents, signs):
    """The first coordinate with an invalid code, ``d`` for nonzero sign padding, or -1."""
    d = exponents.size
    for i in range(d):
        if exponents[i] == 255 or (exponents[i] == 0 and (signs[i // 8] >> (i % 8)) & 1):
            return i
    return d if d % 8 and signs[d // 8] >> (d % 8) else -1


@njit(cache=True, nogil=True)
def _natural_codes(x, state, codes):
    """``codes[i] = e | negative << 8`` of every ``x_i``: the bit-pattern rule of :func:`_usual_code`, then
    :func:`natural_code` itself where it does not apply (tiny, too large or non-finite values, found by
    a flag so that the first loop vectorizes); 0 if some ``|x_i| > 2^127`` or NaN, else -1."""
    unusual = uint64(0)
    for i in range(x.size):
        pattern = float64_bits(float64(x[i]))
        unusual |= _unusual(pattern)
        code, negative = _usual_code(pattern, random_u64(state, i))
        codes[i] = uint32(code) | (uint32(negative) << uint32(EXPONENT_BITS))
    over = uint64(0)
    if unusual:
        for i in range(x.size):
            if _unusual(float64_bits(float64(x[i]))):
                over |= too_large(x[i])
                code, negative = natural_code(x[i], random_u64(state, i))
                codes[i] = uint32(code) | (uint32(negative) << uint32(EXPONENT_BITS))
    return 0 if over else -1


def _too_large(x: np.ndarray) -> ValueError:
    """The error for the first NaN, Inf or magnitude above ``2^127`` in ``x``."""
    bad = first_too_large(x)
    if not np.isfinite(x[bad]):
        return non_finite_input(x, bad)
    return ValueError(
        f"x[{bad}] = {float(x[bad])!r}: natural compression encodes magnitudes up to 2^127; rescale the vector"
    )


def natural_codes(x: np.ndarray, key: RandomKey, out: np.ndarray | None = None) -> np.ndarray:
    """The codes ``e | negative << 8`` (uint32, or into ``out``: uint16 or uint32 of x's size) of
    ``C_nat(x)`` with ``key``: ``C_nat(x)_i = (-1)^negative 2^(e - 127)``, 0 for ``e = 0``; bit for bit
    the codec's rounding."""
    x = np.asarray(x)
    if x.ndim != 1 or x.dtype not in (np.float32, np.float64):
        raise ValueError(f"natural codes of a 1-D float32 or float64 vector, got {x.dtype} {x.shape}")
    x = np.ascontiguousarray(x)
    codes = np.empty(x.size, dtype=np.uint32) if out is None else out
    if _natural_codes(x, np.uint64(key.state), codes) >= 0:
        raise _too_large(x)
    return codes


@register
class Natural(Compressor):
    """Natural compression: unbiased stochastic rounding to a signed power of two, 9 bits each."""

    name = "natural"
    unbiased = True
    checks_finite = True

    def omega(self, d: int) -> float:
        return 0.125

    def expected_bits(self, d: int) -> float:
        return float(d * (EXPONENT_BITS + 1))

    def payload_bytes(self, d: int) -> int:
        return d + -(-d // 8)

    def _encode_into(self, x: np.ndarray, key: RandomKey, payload: np.ndarray) -> tuple[float, ...]:
        d = x.size
        args = (x, np.uint64(key.state), payload[:d], payload[d:])
        kernel = encode_single if x.dtype == np.float32 else encode_double
        if run_split(kernel, group_count(d), parallel_tasks(d), *args) >= 0:
            raise _too_large(x)
        return ()

    def _encode_rows_into(
        self, rows: np.ndarray, keys: Sequence[RandomKey], messages: np.ndarray, start: int
    ) -> np.ndarray:
        if (bad := encode_rows(rows, key_states(keys), messages, start, rows.dtype == np.float32)) >= 0:
            raise ValueError(f"row {bad}: {_too_large(rows[bad])}")
        return np.empty((len(rows), 0))

    def _payload(self, msg: Message) -> np.ndarray:
        """The payload bytes of a validated message, checked to be ``d`` exponents and ``ceil(d/8)`` sign bytes."""
        payload = np.frombuffer(msg.payload, dtype=np.uint8)
        if payload.size != self.payload_bytes(msg.d):
            raise MessageError(
                f"natural: payload holds {payload.size} bytes, d={msg.d} exponent bytes and sign bits need "
                f"{self.payload_bytes(msg.d)}"
            )
        return payload

    def _sums_payload_rows(self, d: int) -> bool:
        """Short vectors (a rank's many workers): their payloads summed as rows by one kernel call a stack; a
        long vector takes the (threaded) per-message kernel."""
        return chunk_count(d) < PARALLEL_MIN_CHUNKS

    def _add_payload_rows(self, payloads: np.ndarray, scalars: np.ndarray, out: np.ndarray) -> int:
        """One ``decode_rows_add`` call into ``out``."""
        return int(decode_rows_add(payloads, out[np.newaxis], 1.0))

    def _add_payload_rows_each(
        self, payloads: np.ndarray, scalars: np.ndarray, targets: np.ndarray, factor: float
    ) -> int:
        """One ``decode_rows_add`` call, row r into ``targets[r]``."""
        return int(decode_rows_add(payloads, targets, factor))

    def _decode_sum_into(
        self, messages: list[Message], keys: Sequence[RandomKey | None], out: np.ndarray, divisor: float
    ) -> None:
        """Long vectors (the master's mean of the uploads): the first message written rather than added to zeros
        (natural decodes no negative zero, so ``0 + v`` is ``v``, bit for bit) and the division fused into the
        last message's pass, a group at a time: two passes over ``out`` fewer than zero, add each, divide."""
        if len(messages) < 2 or self._sums_payload_rows(out.size):
            super()._decode_sum_into(messages, keys, out, divisor)
            return
        last = len(messages) - 1
        for i, msg in enumerate(messages):
            naming_message(i, self._decode_payload, msg, out, i > 0, 1.0, divisor if i == last else 1.0)

    def _decode_into(self, msg: Message, key: RandomKey | None, out: np.ndarray, accumulate: bool) -> None:
        self._decode_payload(msg, out, accumulate, 1.0, 1.0)

    def _decode_scaled_add(self, msg: Message, key: RandomKey | None, out: np.ndarray, scale: float) -> None:
        self._decode_payload(msg, out, True, scale, 1.0)

    def _decode_payload(self, msg: Message, out: np.ndarray, accumulate: bool, scale: float, divisor: float) -> None:
        """The values written into ``out``, or (``accumulate``) ``scale`` times them added to it; then ``out`` divided
        by ``divisor``."""
        d = msg.d
        payload = self._payload(msg)
        exponents, signs = payload[:d], payload[d:]
        tasks = parallel_tasks(d)
        if run_split(decode_natural, group_count(d), tasks, exponents, signs, out, accumulate, scale, divisor) < 0:
            return
        bad = first_invalid(exponents, signs)
        if bad >= d:
            raise MessageError("natural: nonzero padding bits after the last sign")
        if bad >= 0:
            raise MessageError(f"natural: invalid code for coordinate {bad} (exponent code 255 or a negative zero)")
