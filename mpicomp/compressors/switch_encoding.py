"""Switch encodings: a worker's float vector as the integers a programmable switch adds, and back.

An encoding turns worker i's vector into integers per block of P coordinates (P = the packet
size: one block per packet), possibly relative to an exponent per block that the workers agree
(the maximum over workers, which the switch computes); the switch adds the integers in 32-bit
registers and every host turns the sum back into floats. The round itself (agreement, sum,
fallback) is :mod:`mpicomp.methods.in_network`'s; this module is the host arithmetic only.
``[compressor] switch_format`` chooses the family:

**"mpicomp"** (the default), with the headroom ``H = 30 - ceil(log2 n)`` (``n 2^H <= 2^30``):

* fixed point (uplink ``identity``). Worker i's block exponent is the smallest e with
  ``max_{j in b} |x_ij| < 2^e`` (-127 at least, -128 for an all-zero block); with the agreed
  ``E_b = max_i e_ib`` it sends ``q_ij = rint(x_ij 2^(H - E_b))`` and the hosts decode
  ``S_j = 2^(E_b - H) sum_i q_ij``, with ``|S_j - sum_i x_ij| <= n 2^(E_b - H - 1)``. A power of two
  keeps the decode exact; with ``identity(dtype=float32)`` the vectors are rounded to float32 first.
* natural (uplink ``natural``; poster 004). Worker i compresses ``x_i`` with C_nat to values
  ``±2^k``; per block ``K_ib = max k`` and the agreed ``K*_b = max_i K_ib``. A value with
  ``k >= K*_b - H`` is sent as the code ``r = k - K*_b + H + 1`` (the switch's table maps it to
  ``±2^(r - 1)``); a smaller one is re-rounded unbiasedly: ``r = 1`` with probability
  ``2^(k - K*_b + H)``, else 0. The hosts decode ``S_j = 2^(K*_b - H) sum_i (±2^(r_ij - 1))``, exactly
  ``sum_i C_nat(x_i)_j`` when no value lies below its block's H + 1 binades; ``E S = sum_i x_i`` always.

**"switchml"** (SwitchML's client quantiser, float32 as its hosts): per packet, worker i's exponent
is the float32 exponent field of ``max_{j in b} |x_ij|`` minus 126 (so ``2^e > max |x|``; -126 for a
zero block), the switch keeps ``E_b = max_i e_ib``, and each value becomes the int32
``round(x_ij s_b)`` with the float32 scale ``s_b = INT32_MAX / (n 2^E_b)`` and a float32 product,
rounded half away from zero (``std::round``, the client's portable loop; built with ``VCL`` defined,
its vector loop rounds ties to even instead: the two differ only where ``x s_b`` is exactly k + 1/2).
The hosts decode ``float32(S_j) / s_b`` in float32.
Where ``s_b`` overflows float32 (a zero block, or one below about ``2^-97``) SwitchML's conversion is
undefined and its hosts decode 0: here such a block is sent as zeros and decodes to 0. At most
:data:`SWITCHML_MAX_WORKERS` workers (its 32-bit worker bitmap).

**"atp"** (ATP's policy): no exponents; each value becomes ``rint(float32(x_ij 10^6))`` (ties to
even, as its AVX conversion), 62 values a packet, decoded as ``float32(S_j) / 10^6``. A packet whose
values do not fit int32 on a worker, or whose sum overflows the switch's registers, is flagged and
re-sent as float32 to the master, which adds it there (:data:`ATP_FALLBACK_DTYPE`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np

from ..rng import STREAM_AGGREGATION, RandomKey
from ._switch_kernels import (
    atp_from_integers,
    atp_to_integers,
    fixed_block_exponents,
    fixed_to_integers,
    float32_block_exponents,
    from_integers,
    natural_block_exponents,
    natural_relative_codes,
    switchml_from_integers,
    switchml_to_integers,
)
from .base import Compressor
from .natural import EXPONENT_BIAS, natural_codes

SWITCH_FORMATS = ("mpicomp", "switchml", "atp")  # [compressor] switch_format
MPICOMP_UPLINKS = {"identity": "fixed", "natural": "natural"}  # uplink compressor -> mpicomp encoding
EXPONENT_WIDTH = 8  # agreed block exponents travel as int8, as in SwitchML
SWITCHML_MAX_WORKERS = 32  # SwitchML's worker bitmap has 32 bits
ATP_PACKET_VALUES = 62  # ATP: 248 payload bytes of int32
ATP_SCALE = 1e6  # ATP's fixed quantisation factor
ATP_FALLBACK_DTYPE = np.float32  # what an overflowed ATP packet is re-sent as


def headroom(n_workers: int) -> int:
    """``H = 30 - ceil(log2 n)``: n integers of magnitude at most ``2^H`` sum to at most ``2^30``."""
    return 30 - math.ceil(math.log2(n_workers))


class SwitchEncoding(ABC):
    """The host side of one switch format for ``n`` workers, ``d``-vectors and ``P``-value packets.

    A worker ``prepare``s its vector, computes its ``block_exponents`` (if ``agrees_exponents``), and,
    given the agreed (maximum) exponents, its ``to_integers``; every host turns the switch's integer
    sum back into floats with ``from_integers``. Kernels write into caller buffers where given.
    """

    name: str  # the format ("mpicomp", "switchml", "atp")
    lanes: str  # how the integers travel to the switch (comm.packets lanes: "int", "int_be", "natural")
    agrees_exponents: bool = True  # False: no exponent exchange before the sum
    fallback: bool = False  # True: overflowed packets are re-sent as floats to the master (ATP)
    prepared_dtype: type[np.generic] | None = np.float32  # what ``prepare`` writes into ``out`` (None: needs none)
    integer_dtype: type[np.generic] = np.int32  # what ``to_integers`` writes

    def __init__(self, n_workers: int, d: int, packet_values: int) -> None:
        self.n, self.d, self.packet_values = n_workers, d, packet_values
        self.blocks = -(-d // packet_values)

    def warm_up(self) -> None:
        """Run the host conversions once (their numba kernels compile on first use)."""
        key = RandomKey(0)
        prepared = self.prepare(np.linspace(-1.0, 1.0, self.d), key)
        agreed = self.block_exponents(prepared)
        self.from_integers(self.to_integers(prepared, agreed, key).astype(np.int64), agreed)

    @abstractmethod
    def prepare(self, x: np.ndarray, key: RandomKey, out: np.ndarray | None = None) -> np.ndarray:
        """The worker's vector as the encoding sees it (e.g. float32, or C_nat's codes)."""

    def block_exponents(self, prepared: np.ndarray) -> np.ndarray:
        """The worker's exponent per block (int64 in the int8 range); empty without an agreement."""
        return np.zeros(0, dtype=np.int64)

    @abstractmethod
    def to_integers(
        self, prepared: np.ndarray, agreed: np.ndarray, key: RandomKey, out: np.ndarray | None = None
    ) -> np.ndarray:
        """What the worker sends the switch, given the agreed block exponents."""

    @abstractmethod
    def from_integers(self, total: np.ndarray, agreed: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The float64 sum from the switch's integer sum (``total``, any integer dtype)."""

    def _buffer(self, out: np.ndarray | None, dtype: type) -> np.ndarray:
        return np.empty(self.d, dtype=dtype) if out is None else out


class FixedPointEncoding(SwitchEncoding):
    """mpicomp's fixed point: one agreed exponent per block, ``rint(x 2^(H - E))`` as int32."""

    name, lanes = "mpicomp", "int"
    prepared_dtype: type[np.generic] | None = np.float64

    def __init__(self, n_workers: int, d: int, packet_values: int, float32: bool) -> None:
        super().__init__(n_workers, d, packet_values)
        self.headroom = headroom(n_workers)
        self.float32 = float32

    def prepare(self, x: np.ndarray, key: RandomKey, out: np.ndarray | None = None) -> np.ndarray:
        if not self.float32:
            return x
        out = self._buffer(out, np.float64)
        out[:] = x.astype(np.float32)
        return out

    def block_exponents(self, prepared: np.ndarray) -> np.ndarray:
        """Per block, the smallest e >= -127 with ``max |x| < 2^e`` (-128 for an all-zero block)."""
        out = np.empty(self.blocks, dtype=np.int64)
        bad = fixed_block_exponents(prepared, self.packet_values, out)
        if bad >= 0:
            raise ValueError(
                f"x[{bad}] = {prepared[bad]!r}: the switch's fixed point needs finite values below 2^127 "
                "(int8 exponents)" + (" that fit float32 (the uplink's dtype)" if self.float32 else "")
            )
        return out

    def to_integers(
        self, prepared: np.ndarray, agreed: np.ndarray, key: RandomKey, out: np.ndarray | None = None
    ) -> np.ndarray:
        out = self._buffer(out, np.int32)
        fixed_to_integers(prepared, agreed, self.packet_values, self.headroom, out)
        return out

    def from_integers(self, total: np.ndarray, agreed: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``2^(E_b - H) total`` (exact)."""
        out = self._buffer(out, np.float64)
        from_integers(total, agreed, self.packet_values, self.headroom, out)
        return out


class NaturalEncoding(FixedPointEncoding):
    """C_nat's values ``±2^k`` as exact integers ``±2^(k - K* + H)`` relative to the agreed block exponent.

    ``prepare`` keeps C_nat's 9-bit codes ``e | negative << 8`` (``k = e - 127``, ``e = 0`` for zero).
    """

    name, lanes = "mpicomp", "natural"
    prepared_dtype, integer_dtype = np.uint16, np.int16

    def __init__(self, n_workers: int, d: int, packet_values: int) -> None:
        super().__init__(n_workers, d, packet_values, float32=False)

    def prepare(self, x: np.ndarray, key: RandomKey, out: np.ndarray | None = None) -> np.ndarray:
        return natural_codes(x, key, np.empty(self.d, dtype=np.uint16) if out is None else out)

    def block_exponents(self, prepared: np.ndarray) -> np.ndarray:
        out = np.empty(self.blocks, dtype=np.int64)
        natural_block_exponents(prepared, self.packet_values, EXPONENT_BIAS, out)
        return out

    def to_integers(
        self, prepared: np.ndarray, agreed: np.ndarray, key: RandomKey, out: np.ndarray | None = None
    ) -> np.ndarray:
        """``r | negative << 8`` with ``r = k - (K*_b - H) + 1``; below the range ``r = 1`` with probability
        ``2^(k - K*_b + H)``, else 0 (uniforms of the worker's aggregation stream)."""
        out = self._buffer(out, np.int16)
        state = key.with_stream(STREAM_AGGREGATION).state
        natural_relative_codes(prepared, agreed, self.packet_values, self.headroom, EXPONENT_BIAS, state, out)
        return out


def _float32_copy(x: np.ndarray, out: np.ndarray | None, d: int) -> np.ndarray:
    """``x`` rounded to float32 (into ``out``); ValueError naming the first value float32 cannot hold."""
    out = np.empty(d, dtype=np.float32) if out is None else out
    with np.errstate(over="ignore", invalid="ignore"):
        out[:] = x
    return out


class SwitchMLEncoding(SwitchEncoding):
    """SwitchML's block floating point: per-packet exponents, int32 ``round(x INT32_MAX / (n 2^E))``."""

    name, lanes = "switchml", "int_be"

    def __init__(self, n_workers: int, d: int, packet_values: int) -> None:
        if n_workers > SWITCHML_MAX_WORKERS:
            raise ValueError(f"SwitchML's worker bitmap holds at most {SWITCHML_MAX_WORKERS} workers, got {n_workers}")
        super().__init__(n_workers, d, packet_values)

    def prepare(self, x: np.ndarray, key: RandomKey, out: np.ndarray | None = None) -> np.ndarray:
        return _float32_copy(x, out, self.d)

    def block_exponents(self, prepared: np.ndarray) -> np.ndarray:
        out = np.empty(self.blocks, dtype=np.int64)
        bad = float32_block_exponents(prepared, self.packet_values, out)
        if bad >= 0:
            raise ValueError(
                f"x[{bad}] = {float(prepared[bad])!r} as float32: SwitchML's int8 exponents need finite values below 2^127"
            )
        return out

    def to_integers(
        self, prepared: np.ndarray, agreed: np.ndarray, key: RandomKey, out: np.ndarray | None = None
    ) -> np.ndarray:
        out = self._buffer(out, np.int32)
        switchml_to_integers(prepared, agreed, self.packet_values, self.n, out)
        return out

    def from_integers(self, total: np.ndarray, agreed: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        out = self._buffer(out, np.float64)
        switchml_from_integers(total, agreed, self.packet_values, self.n, out)
        return out


class ATPEncoding(SwitchEncoding):
    """ATP's fixed point: ``rint(x 10^6)`` as int32, 62 values a packet, overflowed packets as float32."""

    name, lanes = "atp", "int_be"
    agrees_exponents, fallback = False, True

    def __init__(self, n_workers: int, d: int) -> None:
        super().__init__(n_workers, d, ATP_PACKET_VALUES)

    def prepare(self, x: np.ndarray, key: RandomKey, out: np.ndarray | None = None) -> np.ndarray:
        prepared = _float32_copy(x, out, self.d)
        if not np.isfinite(prepared).all():
            bad = int(np.flatnonzero(~np.isfinite(prepared))[0])
            raise ValueError(f"x[{bad}] = {x[bad]!r}: ATP's hosts need finite float32 values")
        return prepared

    def to_integers(
        self, prepared: np.ndarray, agreed: np.ndarray, key: RandomKey, out: np.ndarray | None = None
    ) -> np.ndarray:
        return self.quantize(prepared, out)[0]

    def quantize(self, prepared: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(integers, overflowed)``: int32 values, and per packet whether a value did not fit int32."""
        out = self._buffer(out, np.int32)
        overflowed = np.empty(self.blocks, dtype=bool)
        atp_to_integers(prepared, self.packet_values, np.float32(ATP_SCALE), out, overflowed)
        return out, overflowed

    def from_integers(self, total: np.ndarray, agreed: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        out = self._buffer(out, np.float64)
        atp_from_integers(total, np.float32(ATP_SCALE), out)
        return out


def make_switch_encoding(
    switch_format: str, uplink: Compressor, n_workers: int, d: int, packet_values: int
) -> SwitchEncoding:
    """The host encoding of ``switch_format`` for this uplink compressor; ValueError if it has none."""
    if switch_format not in SWITCH_FORMATS:
        raise ValueError(f"switch format must be one of {', '.join(SWITCH_FORMATS)}, got {switch_format!r}")
    if switch_format == "mpicomp":
        encoding = MPICOMP_UPLINKS.get(uplink.name)
        if encoding is None:
            raise ValueError(
                f"aggregation = 'switch' needs an uplink with an integer form: "
                f"{' or '.join(MPICOMP_UPLINKS)}, got {uplink.spec!r}"
            )
        if encoding == "natural":
            return NaturalEncoding(n_workers, d, packet_values)
        return FixedPointEncoding(n_workers, d, packet_values, float32=uplink.params.get("dtype") == "float32")
    if uplink.name != "identity":
        raise ValueError(
            f"switch format {switch_format!r} quantises float vectors: use uplink 'identity', got {uplink.spec!r}"
        )
    if switch_format == "switchml":
        return SwitchMLEncoding(n_workers, d, packet_values)
    return ATPEncoding(n_workers, d)
