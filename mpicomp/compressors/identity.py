"""Identity: the vector itself as raw little-endian floats (the uncompressed baseline).

The kernels copy (and cast) in one pass that also finds the first non-finite value, so an
encode or a decode reads and writes each coordinate once; the master's sum of many payloads
(:meth:`~mpicomp.compressors.base.Compressor.decode_sum`) reads each payload once and reads and
writes the running sum once per group of four payloads.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import float64, njit

from ..rng import RandomKey
from ..wire import Message, MessageError, overhead_bytes, payload_offset
from .base import (
    VALUE_DTYPES,
    Compressor,
    check_dtype,
    message_buffer,
    naming_message,
    non_finite_input,
)
from .registry import register


@njit(cache=True, nogil=True)
def _first_non_finite(values):
    for i in range(values.size):
        if not np.isfinite(values[i]):
            return i
    return -1


@njit(cache=True, nogil=True)
def find_non_finite(values):
    """The first index of a non-finite value, or -1 (one vectorised pass when all are finite)."""
    finite = True
    for i in range(values.size):
        finite &= values[i] - values[i] == 0.0
    return -1 if finite else _first_non_finite(values)


@njit(cache=True, nogil=True)
def copy_finite(source, target):
    """``target[:] = source`` cast to target's dtype; returns the first index whose cast value is
    not finite, or -1."""
    finite = True
    for i in range(source.size):
        target[i] = source[i]
        finite &= target[i] - target[i] == 0.0  # NaN exactly for NaN and +-Inf
    return -1 if finite else _first_non_finite(target)


@njit(cache=True, nogil=True)
def add_scaled_finite(source, total, scale):
    """``total += scale * source`` (float64; ``scale = 1`` adds exactly); returns the first index of
    a non-finite ``source`` value, or -1."""
    finite = True
    for i in range(source.size):
        value = float64(source[i])
        total[i] += scale * value
        finite &= value - value == 0.0
    return -1 if finite else _first_non_finite(source)


SUM_GROUP = 4  # payloads per sum_finite call (a tuple of 1 to 4: four compiled signatures per dtype)


@njit(cache=True, nogil=True, error_model="numpy")  # a divisor of 0 gives inf and NaN, as NumPy's division does
def sum_finite(payloads, total, fresh, divisor):
    """``total = (total + payloads[0] + payloads[1] + ...) / divisor`` (``0 + ...`` when ``fresh``),
    added in that order coordinate by coordinate, so the bits equal adding them one by one; one pass
    that reads each payload once (the tuple's length is a compile-time constant, so the inner loop
    unrolls and the outer one vectorises). Returns the position in ``payloads`` of the first one
    holding a non-finite value, or -1."""
    finite = True
    for i in range(total.size):
        running = 0.0 if fresh else total[i]
        for j in range(len(payloads)):
            value = float64(payloads[j][i])
            running += value
            finite &= value - value == 0.0
        total[i] = running / divisor
    if finite:
        return -1
    for j in range(len(payloads)):
        if _first_non_finite(payloads[j]) >= 0:
            return j
    return -1


@register
class Identity(Compressor):
    """``C(x) = x`` sent as float64 (exact, omega = 0) or float32 (rounded to nearest)."""

    name = "identity"
    unbiased = True
    checks_finite = True

    def __init__(self, dtype: str = "float64") -> None:
        self.dtype = check_dtype(self.name, dtype)

    @property
    def params(self) -> dict[str, object]:
        return {} if self.dtype == "float64" else {"dtype": self.dtype}

    def omega(self, d: int) -> float:
        return 0.0

    def expected_bits(self, d: int) -> float:
        return 8.0 * VALUE_DTYPES[self.dtype].itemsize * d

    def payload_bytes(self, d: int) -> int:
        return d * VALUE_DTYPES[self.dtype].itemsize

    def payload_vector(self, out: np.ndarray | None, d: int) -> np.ndarray | None:
        """float64 identity: the payload slot of ``out`` as a float64 vector of length d."""
        if out is None or self.dtype != "float64":
            return None
        start, size = payload_offset(self.framed_scalars), self.payload_bytes(d)
        buffer = message_buffer(out, overhead_bytes(self.framed_scalars, self.crc) + size)
        return buffer[start : start + size].view(np.float64)

    def _encode_into(self, x: np.ndarray, key: RandomKey, payload: np.ndarray) -> tuple[float, ...]:
        values = payload.view(VALUE_DTYPES[self.dtype])
        in_place = np.may_share_memory(x, values)  # x computed in the payload slot (payload_vector)
        if in_place and (x.dtype != values.dtype or x.ctypes.data != values.ctypes.data):
            raise ValueError(
                f"{self.spec}: x overlaps the message buffer without being its payload slot (payload_vector)"
            )
        bad = find_non_finite(x) if in_place else copy_finite(x, values)
        if bad >= 0:
            if np.isfinite(x[bad]):
                raise ValueError(
                    f"{self.spec}: x[{bad}] = {x[bad]!r} exceeds the {self.dtype} range; use dtype='float64'"
                )
            raise non_finite_input(x, bad)
        return ()

    def _values(self, msg: Message) -> np.ndarray:
        """The payload as a read-only, aligned array of ``msg.d`` values (a view where aligned)."""
        dtype = VALUE_DTYPES[self.dtype]
        if len(msg.payload) != msg.d * dtype.itemsize:
            raise MessageError(
                f"identity: payload of {len(msg.payload)} bytes, d={msg.d} {self.dtype} values need {msg.d * dtype.itemsize}"
            )
        values = np.frombuffer(msg.payload, dtype=dtype)
        # A payload at an odd offset of a gathered buffer is copied: the kernels assume alignment.
        values = values.copy() if not values.flags.aligned else values.view()
        values.flags.writeable = False  # one kernel signature for every payload (read-only)
        return values

    def compile_kernels(self, d: int, dtypes: tuple[type, ...] = (np.float64,)) -> None:
        """Also the encode of a vector computed in its payload slot (float64) and :func:`sum_finite`
        for each of its tuple lengths (1 to ``SUM_GROUP`` payloads)."""
        super().compile_kernels(d, dtypes)
        capacity = self.message_capacity(d)
        assert capacity is not None, "identity messages have a fixed size"
        out = np.zeros(capacity, dtype=np.uint8)
        slot = self.payload_vector(out, d)
        message = self.encode(np.zeros(d) if slot is None else slot, RandomKey(0), out=out)
        for count in range(1, SUM_GROUP + 1):
            self.decode_sum([message] * count, [None] * count, np.empty(d), float(count))

    def _decode_into(self, msg: Message, key: RandomKey | None, out: np.ndarray, accumulate: bool) -> None:
        values = self._values(msg)
        if (add_scaled_finite(values, out, 1.0) if accumulate else copy_finite(values, out)) >= 0:
            raise MessageError("identity: payload holds non-finite values")

    def _decode_scaled_add(self, msg: Message, key: RandomKey | None, out: np.ndarray, scale: float) -> None:
        if add_scaled_finite(self._values(msg), out, scale) >= 0:
            raise MessageError("identity: payload holds non-finite values")

    def _decode_sum_into(
        self, messages: list[Message], keys: Sequence[RandomKey | None], out: np.ndarray, divisor: float
    ) -> None:
        if not messages:
            out.fill(0.0)
            return
        payloads = [naming_message(i, self._values, msg) for i, msg in enumerate(messages)]
        for start in range(0, len(payloads), SUM_GROUP):
            last = start + SUM_GROUP >= len(payloads)
            bad = sum_finite(tuple(payloads[start : start + SUM_GROUP]), out, start == 0, divisor if last else 1.0)
            if bad >= 0:
                raise MessageError(
                    f"message {start + bad}: identity: payload holds non-finite values", index=start + bad
                )
