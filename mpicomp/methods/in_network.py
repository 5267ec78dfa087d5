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
``|S_j - sum_i x_ij| <= n 2^(E_b - H - 1) <= n 2^-H max_{i, j in b} |x_ij|`` (round to nearest; E_b > -127).
SwitchML scales by ``(2^31 - 1) / (n 2^E)``; a power of two keeps the decode exact for < 1 bit.
With ``identity(dtype=float32)`` the vectors are rounded to float32 first, as SwitchML's hosts do
(the bound then holds for the rounded vectors; against the float64 ones add ``n 2^(E_b - 25)``).

**natural** (uplink ``natural``; poster 004, exact integer form of C_nat). Worker i compresses
``x_i`` with C_nat (the ``natural`` codec's rounding and key) to values ``±2^k``; per block
``K_ib = max k`` (-128 if all zero) and the agreed ``K*_b = max_i K_ib``. A value with
``k >= K*_b - H`` is sent as the code ``r = k - K*_b + H + 1`` (the switch's table maps it to
``±2^(r - 1)``); a smaller one cannot be represented and is re-rounded unbiasedly: ``r = 1`` with
probability ``2^(k - K*_b + H)``, else 0 (never flushed to zero). The hosts decode
``S_j = 2^(K*_b - H) sum_i (±2^(r_ij - 1))``, which is exactly ``sum_i C_nat(x_i)_j`` whenever no value
of the block lies below its range (the H + 1 binades from the block's largest down), and
``E S = sum_i x_i`` always. 9 bits per value on the wire, as C_nat.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from ..compressors import Compressor
from ..compressors._switch_kernels import (
    fixed_block_exponents,
    fixed_to_integers,
    from_integers,
    natural_block_exponents,
    natural_relative_codes,
)
from ..compressors.natural import EXPONENT_BIAS, natural_codes
from ..rng import STREAM_AGGREGATION, RandomKey
from ..timing import CODEC
from .link import Link

AGGREGATIONS = ("gather", "switch")
SWITCH_ENCODINGS = {"identity": "fixed", "natural": "natural"}  # uplink compressor -> host encoding
EXPONENT_WIDTH = 8  # agreed block exponents travel as int8, as in SwitchML


def headroom(n_workers: int) -> int:
    """``H = 30 - ceil(log2 n)``: n integers of magnitude at most ``2^H`` sum to at most ``2^30``."""
    return 30 - math.ceil(math.log2(n_workers))


class SwitchSum(ABC):
    """``sum_i x_i`` over every worker through the switch, on every process (float64, ``(d,)``).

    A round: each worker ``prepare``s its vector, the workers agree the block exponents
    (``max_agree``), convert to integers (``to_integers``), the switch sums, and every process
    converts back (``from_integers``). The host steps are separate methods so that they can be
    timed on their own (``tools/bench_switch.py``).
    """

    lanes: str  # how the integers travel: "int" or "natural"

    def __init__(self, n_workers: int, d: int, packet_values: int) -> None:
        self.n, self.d, self.packet_values = n_workers, d, packet_values
        self.headroom = headroom(n_workers)
        self.blocks = -(-d // packet_values)

    def total(self, vectors: Sequence[np.ndarray], keys: Sequence[RandomKey], link: Link) -> np.ndarray:
        """The sum of every worker's vector; ``vectors[j]`` and ``keys[j]`` (its uplink key) belong to
        the local worker ``link.local_workers[j]``."""
        with CODEC.timing():
            prepared = [self.prepare(v, key) for v, key in zip(vectors, keys, strict=True)]
            exponents = [self.block_exponents(p) for p in prepared]
        agreed = link.max_agree(exponents, self.blocks, width=EXPONENT_WIDTH, packet_values=self.packet_values)
        with CODEC.timing():
            integers = [self.to_integers(p, agreed, key) for p, key in zip(prepared, keys, strict=True)]
        total = link.integer_sum(integers, self.d, packet_values=self.packet_values, lanes=self.lanes)
        with CODEC.timing():
            return self.from_integers(total, agreed)

    def warm_up(self) -> None:
        """Run the host conversions once (their numba kernels compile on first use)."""
        key = RandomKey(0)
        prepared = self.prepare(np.linspace(-1.0, 1.0, self.d), key)
        agreed = self.block_exponents(prepared)
        self.from_integers(self.to_integers(prepared, agreed, key).astype(np.int64), agreed)

    @abstractmethod
    def prepare(self, x: np.ndarray, key: RandomKey) -> np.ndarray:
        """The worker's vector as the encoding sees it (e.g. rounded to float32, or C_nat's exponents)."""

    @abstractmethod
    def block_exponents(self, prepared: np.ndarray) -> np.ndarray:
        """The worker's exponent per block (int64 in the int8 range, -128 for an all-zero block)."""

    @abstractmethod
    def to_integers(self, prepared: np.ndarray, agreed: np.ndarray, key: RandomKey) -> np.ndarray:
        """What the worker sends the switch, given the agreed block exponents."""

    def from_integers(self, total: np.ndarray, agreed: np.ndarray) -> np.ndarray:
        """The float64 sum ``2^(E_b - H) total`` from the switch's integer sum (exact)."""
        out = np.empty(self.d)
        from_integers(total, agreed, self.packet_values, self.headroom, out)
        return out


class FixedPointSum(SwitchSum):
    """SwitchML's fixed point: one agreed exponent per block, ``rint(x 2^(H - E))`` as int32."""

    lanes = "int"

    def __init__(self, n_workers: int, d: int, packet_values: int, float32: bool) -> None:
        super().__init__(n_workers, d, packet_values)
        self.float32 = float32

    def prepare(self, x: np.ndarray, key: RandomKey) -> np.ndarray:
        return x.astype(np.float32).astype(np.float64) if self.float32 else x

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

    def to_integers(self, prepared: np.ndarray, agreed: np.ndarray, key: RandomKey) -> np.ndarray:
        out = np.empty(self.d, dtype=np.int32)
        fixed_to_integers(prepared, agreed, self.packet_values, self.headroom, out)
        return out


class NaturalSum(SwitchSum):
    """C_nat's values ``±2^k`` as exact integers ``±2^(k - K* + H)`` relative to the agreed block exponent.

    ``prepare`` keeps C_nat's 9-bit codes ``e | negative << 8`` (``k = e - 127``, ``e = 0`` for zero).
    """

    lanes = "natural"

    def prepare(self, x: np.ndarray, key: RandomKey) -> np.ndarray:
        return natural_codes(x, key)

    def block_exponents(self, prepared: np.ndarray) -> np.ndarray:
        out = np.empty(self.blocks, dtype=np.int64)
        natural_block_exponents(prepared, self.packet_values, EXPONENT_BIAS, out)
        return out

    def to_integers(self, prepared: np.ndarray, agreed: np.ndarray, key: RandomKey) -> np.ndarray:
        """``r | negative << 8`` with ``r = k - (K*_b - H) + 1``; below the range ``r = 1`` with probability
        ``2^(k - K*_b + H)``, else 0 (uniforms of the worker's aggregation stream)."""
        out = np.empty(self.d, dtype=np.int16)
        state = key.with_stream(STREAM_AGGREGATION).state
        natural_relative_codes(prepared, agreed, self.packet_values, self.headroom, EXPONENT_BIAS, state, out)
        return out


def make_switch_sum(
    aggregation: str, uplink: Compressor, n_workers: int, d: int, packet_values: int
) -> SwitchSum | None:
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
