"""In-network aggregation, host side: worker vectors to integers, summed by the switch, and back.

``[compressor] aggregation = "switch"`` replaces gather + master + broadcast by two switch
exchanges (:class:`~mpicomp.methods.link.Link`): the workers agree one exponent per block of P
coordinates (P = the packet size, 256 or 64: one exponent per packet, as in SwitchML) with an
int8 max-agreement, then send integers that the switch adds in int32 registers, and every worker
receives the sum. With n workers both encodings use the headroom ``H = 30 - ceil(log2 n)``, so that
``n 2^H <= 2^30`` and the n-way sum of values ``|q| <= 2^H`` cannot overflow.

**fixed point** (uplink ``identity``; the SwitchML baseline). Worker i's block exponent is the
smallest e with ``max_{j in b} |x_ij| < 2^e`` (``frexp``; -127 at least, -128 for an all-zero block);
with the agreed ``E_b = max_i e_ib`` it sends ``q_ij = rint(x_ij 2^(H - E_b))`` and the hosts decode
``S_j = 2^(E_b - H) sum_i q_ij``. Deterministic, with
``|S_j - sum_i x_ij| <= n 2^(E_b - H - 1) < n 2^-H max_{i, j in b} |x_ij|`` (round to nearest; E_b > -127).
SwitchML scales by ``(2^31 - 1) / (n 2^E)``; a power of two keeps the decode exact for < 1 bit.
With ``identity(dtype=float32)`` the vectors are rounded to float32 first, as SwitchML's hosts do.

**natural** (uplink ``natural``; poster 004, exact integer form of C_nat). Worker i compresses
``x_i`` with C_nat (the ``natural`` codec's rounding and key) to values ``±2^k``; per block
``K_ib = max k`` (-128 if all zero) and the agreed ``K*_b = max_i K_ib``. A value with
``k >= K*_b - H`` is sent as the code ``r = k - K*_b + H + 1`` (the switch's table maps it to
``±2^(r - 1)``); a smaller one cannot be represented and is re-rounded unbiasedly: ``r = 1`` with
probability ``2^(k - K*_b + H)``, else 0 (never flushed to zero). The hosts decode
``S_j = 2^(K*_b - H) sum_i (±2^(r_ij - 1))``, which is exactly ``sum_i C_nat(x_i)_j`` whenever no value
of the block lies below its range (``31 - ceil(log2 n)`` binades under the block's largest), and
``E S = sum_i x_i`` always. 9 bits per value on the wire, as C_nat.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from ..compressors import Compressor
from ..compressors.natural import EXPONENT_BIAS, natural_codes
from ..rng import STREAM_AGGREGATION, RandomKey
from .link import Link

AGGREGATIONS = ("gather", "switch")
SWITCH_ENCODINGS = {"identity": "fixed", "natural": "natural"}  # uplink compressor -> host encoding
EXPONENT_WIDTH = 8  # agreed block exponents travel as int8, as in SwitchML
EMPTY_BLOCK = -128  # the exponent of an all-zero block: below every real one
SMALLEST_EXPONENT = -127
LARGEST_MAGNITUDE = 2.0**127


def headroom(n_workers: int) -> int:
    """``H = 30 - ceil(log2 n)``: n integers of magnitude at most ``2^H`` sum to at most ``2^30``."""
    return 30 - math.ceil(math.log2(n_workers))


class SwitchSum(ABC):
    """``sum_i x_i`` over every worker through the switch, on every process (float64, ``(d,)``)."""

    def __init__(self, n_workers: int, d: int, packet_values: int) -> None:
        self.n, self.d, self.packet_values = n_workers, d, packet_values
        self.headroom = headroom(n_workers)
        self.blocks = -(-d // packet_values)

    @abstractmethod
    def total(self, vectors: Sequence[np.ndarray], keys: Sequence[RandomKey], link: Link) -> np.ndarray:
        """The sum of every worker's vector; ``vectors[j]`` and ``keys[j]`` (its uplink key) belong to
        the local worker ``link.local_workers[j]``."""

    def block_max(self, values: np.ndarray, empty: float) -> np.ndarray:
        """Per block of ``packet_values`` coordinates, the max of ``values`` (``empty`` pads the last block)."""
        padded = np.full(self.blocks * self.packet_values, empty, dtype=values.dtype)
        padded[: self.d] = values
        return padded.reshape(self.blocks, self.packet_values).max(axis=1)

    def per_coordinate(self, per_block: np.ndarray) -> np.ndarray:
        return np.repeat(per_block, self.packet_values)[: self.d]

    def agree(self, exponents: list[np.ndarray], link: Link) -> np.ndarray:
        return link.max_agree(exponents, self.blocks, width=EXPONENT_WIDTH, packet_values=self.packet_values)


class FixedPointSum(SwitchSum):
    """SwitchML's fixed point: one agreed exponent per block, ``rint(x 2^(H - E))`` as int32."""

    def __init__(self, n_workers: int, d: int, packet_values: int, float32: bool) -> None:
        super().__init__(n_workers, d, packet_values)
        self.float32 = float32

    def block_exponents(self, x: np.ndarray) -> np.ndarray:
        """Per block, the smallest e >= -127 with ``max |x| < 2^e`` (-128 for an all-zero block)."""
        largest = self.block_max(np.abs(x), 0.0)
        if largest.size and largest.max() >= LARGEST_MAGNITUDE:
            raise ValueError(f"|x| = {largest.max():.3g} >= 2^127 has no int8 block exponent for the switch")
        exponents = np.maximum(np.frexp(largest)[1], SMALLEST_EXPONENT)
        return np.where(largest > 0, exponents, EMPTY_BLOCK).astype(np.int64)

    def total(self, vectors: Sequence[np.ndarray], keys: Sequence[RandomKey], link: Link) -> np.ndarray:
        if self.float32:
            vectors = [v.astype(np.float32).astype(np.float64) for v in vectors]
        agreed = self.agree([self.block_exponents(v) for v in vectors], link)
        shift = self.per_coordinate(self.headroom - agreed)
        integers = [np.rint(np.ldexp(v, shift)).astype(np.int64) for v in vectors]
        total = link.integer_sum(integers, self.d, packet_values=self.packet_values)
        return np.ldexp(total.astype(np.float64), -shift)


class NaturalSum(SwitchSum):
    """C_nat's values ``±2^k`` as exact integers ``±2^(k - K* + H)`` relative to the agreed block exponent."""

    def total(self, vectors: Sequence[np.ndarray], keys: Sequence[RandomKey], link: Link) -> np.ndarray:
        codes = [natural_codes(v, key).astype(np.int64) for v, key in zip(vectors, keys, strict=True)]
        exponents = [np.where(c & 0xFF, (c & 0xFF) - EXPONENT_BIAS, EMPTY_BLOCK) for c in codes]
        agreed = self.agree([self.block_max(k, EMPTY_BLOCK) for k in exponents], link)
        floor = self.per_coordinate(agreed - self.headroom)  # exponent of the integer 1 in each block
        sent = [
            self.relative_codes(c, k, floor, key.with_stream(STREAM_AGGREGATION))
            for c, k, key in zip(codes, exponents, keys, strict=True)
        ]
        total = link.integer_sum(sent, self.d, packet_values=self.packet_values, lanes="natural")
        return np.ldexp(total.astype(np.float64), floor)

    @staticmethod
    def relative_codes(codes: np.ndarray, exponents: np.ndarray, floor: np.ndarray, key: RandomKey) -> np.ndarray:
        """``r | negative << 8`` with ``r = k - floor + 1``; below the range ``r = 1`` w.p. ``2^(k - floor)``, else 0."""
        nonzero = (codes & 0xFF) != 0
        shift = exponents - floor
        kept = np.where(nonzero & (shift >= 0), shift + 1, 0)
        below = nonzero & (shift < 0)
        if below.any():
            rounded_up = key.uniform(codes.size) < np.ldexp(1.0, np.minimum(shift, 0))
            kept = np.where(below, rounded_up.astype(np.int64), kept)
        return np.where(kept > 0, kept | (codes >> 8) << 8, 0)


def make_switch_sum(aggregation: str, uplink: Compressor, n_workers: int, d: int, packet_values: int) -> SwitchSum | None:
    """The host encoding for ``aggregation = "switch"`` with this uplink compressor; ``None`` for ``"gather"``."""
    if aggregation == "gather":
        return None
    encoding = SWITCH_ENCODINGS.get(uplink.name)
    if encoding is None:
        raise ValueError(
            f"[compressor] aggregation = 'switch' needs an uplink with an integer form: "
            f"{' or '.join(SWITCH_ENCODINGS)}, got {uplink.spec!r}"
        )
    if encoding == "natural":
        return NaturalSum(n_workers, d, packet_values)
    return FixedPointSum(n_workers, d, packet_values, float32=uplink.params.get("dtype") == "float32")
