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

from collections.abc import Callable, Sequence
from functools import cache

import numpy as np
from numba import float64, int32, int64

from ..rng import RandomKey
from ..wire import Message, MessageError, packed_nbytes
from ..wire.bitpack import (
    CHUNK_VALUES,
    chunk_count,
    load_chunk,
    pack_chunk,
    pack_octets,
    run_chunks,
    specialized,
    store_chunk,
    unpack_chunk,
    unpack_octets,
)
from .base import Compressor, naming_row, non_finite_input
from .numeric import first_non_finite, max_magnitude
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


_SPAN_CHUNKS = 64  # chunks (2048 coordinates) quantized per vectorized loop before they are packed
_SPAN = _SPAN_CHUNKS * CHUNK_VALUES


@cache
def _encoder(bits: int) -> Callable[..., int]:
    """Kernel ``(x, radius, levels, packed, c0, c1)``: eq. (5)'s codes of chunks ``[c0, c1)``
    (``CHUNK_VALUES`` coordinates each), ``q_i = floor((x_i + R) (2^b - 1) / (2R) + 1/2)`` capped at
    ``2^b - 1`` against rounding, packed with ``bits`` compiled in straight into the bytes ``packed``."""

    dtype = np.uint8 if bits <= 8 else (np.uint32 if bits < 31 else np.uint64)
    convert = int32 if bits < 31 else int64  # int32 conversions vectorize, int64 ones do not

    @specialized(f"bits{bits}")
    def encode_range(x, radius, levels, packed, c0, c1):
        scratch = np.zeros(_SPAN, dtype=dtype)
        octets = scratch.view(np.uint64)
        words = np.empty(bits, dtype=np.uint32)
        scale = levels / (2.0 * radius)
        n = x.size
        for s0 in range(c0, c1, _SPAN_CHUNKS):
            s1 = min(c1, s0 + _SPAN_CHUNKS)
            values = x[s0 * CHUNK_VALUES : min(n, s1 * CHUNK_VALUES)]
            for k in range(values.size):  # a plain loop: it vectorizes
                q = min(np.floor((float64(values[k]) + radius) * scale + 0.5), levels)
                scratch[k] = convert(q)
            scratch[values.size :] = 0  # past d: the last chunk's padding bits are zero
            if bits <= 8:  # whole bytes per 8 codes; stores stay inside this range's bytes (threads)
                limit = min(packed.size, 4 * bits * c1)
                pack_octets(octets, (s1 - s0) * CHUNK_VALUES // 8, packed, 4 * bits * s0, limit, bits)
            else:
                for c in range(s0, s1):
                    pack_chunk(scratch, (c - s0) * CHUNK_VALUES, words, 0, bits)
                    store_chunk(packed, 4 * bits * c, words)
        return -1

    return encode_range


@cache
def _decoder(bits: int, accumulate: bool) -> Callable[..., int]:
    """Kernel ``(packed, radius, levels, out, c0, c1)``: eq. (6), ``2 tau R q_i - R`` with
    ``tau = 1/(2^b - 1)``, for the chunks ``[c0, c1)`` of ``packed`` (``bits`` compiled in), written
    (``accumulate``: added) into ``out``."""

    @specialized(f"bits{bits}{'_add' if accumulate else ''}")
    def decode_range(packed, radius, levels, out, c0, c1):
        step = 2.0 * radius / levels
        n = out.size
        if bits <= 8:  # spans of byte codes, spread 8 at a time from bits bytes (unpack_octets)
            scratch = np.empty(_SPAN, dtype=np.uint8)
            octets = scratch.view(np.uint64)
            for s0 in range(c0, c1, _SPAN_CHUNKS):
                s1 = min(c1, s0 + _SPAN_CHUNKS)
                unpack_octets(packed, 4 * bits * s0, (s1 - s0) * CHUNK_VALUES // 8, bits, octets)
                target = out[s0 * CHUNK_VALUES : min(n, s1 * CHUNK_VALUES)]
                for k in range(target.size):  # a plain loop: it vectorizes (int32 conversions do)
                    value = float64(int32(scratch[k])) * step - radius
                    if accumulate:
                        target[k] += value
                    else:
                        target[k] = value
            return -1
        codes = np.empty(CHUNK_VALUES, dtype=np.uint64)
        words = np.empty(bits, dtype=np.uint32)
        for c in range(c0, c1):
            load_chunk(packed, 4 * bits * c, words)
            unpack_chunk(words, 0, bits, codes)
            lo = c * CHUNK_VALUES
            target = out[lo : min(n, lo + CHUNK_VALUES)]
            for k in range(target.size):
                value = float64(codes[k]) * step - radius
                if accumulate:
                    target[k] += value
                else:
                    target[k] = value
        return -1

    return decode_range


@register
class LAQQuantizer(Compressor):
    """LAQ's quantizer: b-bit nearest rounding on the grid spanning ``+-||x||_inf``, radius as float32."""

    name = "laq"
    unbiased = False
    checks_finite = True  # a non-finite max |x_i| is searched for NaN / Inf

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

    def payload_bytes(self, d: int) -> int:
        return RADIUS_BYTES + packed_nbytes(d, self.bits)

    def _encode_into(self, x: np.ndarray, key: RandomKey, payload: np.ndarray) -> tuple[float, ...]:
        largest = max_magnitude(x)
        if not np.isfinite(largest):
            raise non_finite_input(x, first_non_finite(x))
        radius = float32_radius(largest)
        payload[:RADIUS_BYTES] = np.array([radius], dtype=RADIUS).view(np.uint8)
        packed = payload[RADIUS_BYTES:]
        if radius > 0.0:
            run_chunks(_encoder(self.bits), x.size, x, radius, self.levels, packed)
        else:
            packed[:] = 0
        return ()

    def _decode_into(self, msg: Message, key: RandomKey | None, out: np.ndarray, accumulate: bool) -> None:
        data = np.frombuffer(msg.payload, dtype=np.uint8)
        need = self.payload_bytes(msg.d)
        if data.size != need:
            raise MessageError(f"laq: payload of {data.size} bytes, d={msg.d} codes of {self.bits} bits need {need}")
        radius = float(data[:RADIUS_BYTES].view(RADIUS)[0])
        if not np.isfinite(radius) or radius < 0.0 or np.signbit(radius):
            raise MessageError(f"laq: invalid radius {radius!r} (must be finite and >= 0, not -0)")
        packed = data[RADIUS_BYTES:]
        tail_bits = (msg.d * self.bits) % 8
        if tail_bits and packed[-1] >> tail_bits:
            raise MessageError("laq: nonzero padding bits after the last code")
        if radius == 0.0:
            if packed.any():
                raise MessageError("laq: nonzero codes with radius 0 (a zero innovation is sent as all-zero codes)")
            if accumulate:
                np.add(out, 0.0, out=out)  # the zero vector added: -0.0 becomes +0.0, as in any sum
            else:
                out.fill(0.0)
            return
        run_chunks(_decoder(self.bits, accumulate), msg.d, packed, radius, self.levels, out)

    def _encode_rows_into(
        self, rows: np.ndarray, keys: Sequence[RandomKey], messages: np.ndarray, start: int
    ) -> np.ndarray:
        """Every row's radius from two reductions over the block (its largest ``|x_i|`` as ``max(max x_i, -min
        x_i)``, rounded up to float32 as :func:`float32_radius` does), then each row's codes by one call of its kernel: the bytes of ``encode`` of
        each. A row with NaN or Inf, or a radius beyond float32, raises encode's error, naming the row."""
        m, d = rows.shape
        largest = np.zeros(m)
        if d:  # max |x_i| = max(max x_i, -min x_i), without a block of |x| (+ 0.0: a zero row's radius is +0)
            np.maximum(rows.max(axis=1), -rows.min(axis=1), out=largest, dtype=np.float64)
            largest += 0.0
        bad = ~np.isfinite(largest) | (largest > FLOAT32_MAX)
        if bad.any():
            r = int(np.argmax(bad))
            naming_row(r, self._encode_into, rows[r], keys[r], np.empty(self.payload_bytes(d), dtype=np.uint8))
        radii = largest.astype(np.float32)
        below = radii.astype(np.float64) < largest
        radii[below] = np.nextafter(radii[below], np.float32(np.inf))
        messages[:, start : start + RADIUS_BYTES] = radii.astype(RADIUS).view(np.uint8).reshape(m, RADIUS_BYTES)
        encoder, chunks = _encoder(self.bits), chunk_count(d)
        codes = messages[:, start + RADIUS_BYTES : start + self.payload_bytes(d)]
        for row, radius, packed in zip(rows, radii.astype(np.float64).tolist(), codes, strict=True):
            if radius > 0.0:
                encoder(row, radius, self.levels, packed, 0, chunks)
            else:
                packed[:] = 0
        return np.empty((m, 0))

    def _sums_payload_rows(self, d: int) -> bool:
        """Short vectors (a rank's many workers): their payloads checked as arrays and added by one kernel call
        each; a long vector takes the (threaded) per-message kernel."""
        return self.batches_rows(d)

    def _add_payload_rows(self, payloads: np.ndarray, scalars: np.ndarray, out: np.ndarray) -> int:
        return self._add_rows(payloads, out[np.newaxis], False, 1.0)

    def _add_payload_rows_each(
        self, payloads: np.ndarray, scalars: np.ndarray, targets: np.ndarray, factor: float
    ) -> int:
        return self._add_rows(payloads, targets, True, factor)

    def _add_rows(self, payloads: np.ndarray, targets: np.ndarray, each: bool, factor: float) -> int:
        """``targets[r if each else 0] += factor C(payload r)`` for the rows up to the first bad one (a radius
        that is not finite, negative or -0, padding bits, codes with radius 0: :meth:`_decode_into`'s checks, as
        arrays), which is returned (else -1): the bits of ``decode_add`` of each, the codes added in place where
        ``factor`` is 1, else decoded whole, scaled and added."""
        d = targets.shape[1]
        radii = np.ascontiguousarray(payloads[:, :RADIUS_BYTES]).view(RADIUS).reshape(-1).astype(np.float64)
        codes = payloads[:, RADIUS_BYTES:]
        zero = radii == 0.0
        bad = ~np.isfinite(radii) | (radii < 0.0) | np.signbit(radii) | (zero & codes.any(axis=1))
        if tail_bits := (d * self.bits) % 8:
            bad |= (codes[:, -1] >> tail_bits) != 0
        first_bad = int(np.argmax(bad)) if bad.any() else len(payloads)
        chunks = chunk_count(d)
        add, write = _decoder(self.bits, True), _decoder(self.bits, False)
        values = np.empty(0 if factor == 1.0 else d)
        for r in range(first_bad):
            target = targets[r if each else 0]
            if factor == 1.0:
                if zero[r]:
                    np.add(target, 0.0, out=target)  # as decode_add: the zero vector added
                else:
                    add(codes[r], radii[r], self.levels, target, 0, chunks)
                continue
            if zero[r]:
                values.fill(0.0)
            else:
                write(codes[r], radii[r], self.levels, values, 0, chunks)
            np.multiply(values, factor, out=values)
            target += values
        return -1 if first_bad == len(payloads) else first_bad
