"""In-network aggregation, the round: worker vectors to integers, summed by the switch, and back.

``[compressor] aggregation = "switch"`` replaces gather + master + broadcast by switch exchanges
(:class:`~mpicomp.methods.link.Link`). The host arithmetic of each ``[compressor] switch_format``
is :mod:`mpicomp.compressors.switch_encoding`'s; a round here is:

* formats with block exponents (mpicomp's fixed point and natural, SwitchML): the workers agree
  one exponent per packet with an int8 ``max_agree``, convert to integers, the switch adds them
  (``integer_sum``) and every worker converts the sum back;
* ATP (no exponents): the switch adds and flags the packets that overflowed (``flagged_sum``); the
  workers re-send those packets' values as float32 to the master, which adds them in worker order
  (``fallback_sum``), and every worker takes the float sum there, the switch's elsewhere.

With ``evaluate_error`` set (the runner's logged rounds), the round also measures the relative
error of the aggregate against the float64 sum of the workers' vectors (an uncounted bookkeeping
gather, so it costs no counted bytes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..compressors import Compressor
from ..compressors.switch_encoding import (
    ATP_FALLBACK_DTYPE,
    EXPONENT_WIDTH,
    SWITCH_FORMATS,
    ATPEncoding,
    SwitchEncoding,
    make_switch_encoding,
)
from ..rng import RandomKey
from ..timing import CODEC
from .link import Link

AGGREGATIONS = ("gather", "switch")


class SwitchSum:
    """``sum_i x_i`` over every worker through the switch, on every process (float64, ``(d,)``).

    Keeps its buffers from round to round (one per local worker for the integers, one for the sum):
    a fresh 4-8 MB array costs a pass of page faults. The returned sum is valid until the next call.
    """

    def __init__(self, encoding: SwitchEncoding) -> None:
        self.encoding = encoding
        self.n, self.d = encoding.n, encoding.d
        self._integers: list[np.ndarray] = []
        self._prepared: list[np.ndarray | None] = []
        self._sum = np.empty(self.d)
        self.last_error = float("nan")  # relative error of the last evaluated aggregate
        self.overflow_packets = 0  # packets the switch flagged so far (ATP falls back on them)

    @property
    def frame(self) -> str:
        return self.encoding.name

    def warm_up(self) -> None:
        self.encoding.warm_up()

    def _buffers(self, count: int) -> None:
        """One integer buffer (and prepared-vector buffer, if the encoding needs one) per local worker."""
        enc = self.encoding
        while len(self._integers) < count:
            self._integers.append(np.empty(self.d, dtype=enc.integer_dtype))
            self._prepared.append(None if enc.prepared_dtype is None else np.empty(self.d, dtype=enc.prepared_dtype))

    def total(
        self, vectors: Sequence[np.ndarray], keys: Sequence[RandomKey], link: Link, evaluate_error: bool = False
    ) -> np.ndarray:
        """The sum of every worker's vector; ``vectors[j]`` and ``keys[j]`` (its uplink key) belong to
        the local worker ``link.local_workers[j]``. With ``evaluate_error`` (collective), also sets
        :attr:`last_error` on the master: ``||S - sum_i x_i|| / ||sum_i x_i||`` against the float64 sum."""
        enc = self.encoding
        self._buffers(len(vectors))
        with CODEC.timing():
            prepared = [enc.prepare(v, key, out) for v, key, out in zip(vectors, keys, self._prepared, strict=False)]
        if isinstance(enc, ATPEncoding):
            total = self._atp_total(enc, prepared, link)
        else:
            with CODEC.timing():
                exponents = [enc.block_exponents(p) for p in prepared]
            agreed = link.max_agree(
                exponents, enc.blocks, width=EXPONENT_WIDTH, packet_values=enc.packet_values, frame=enc.name
            )
            with CODEC.timing():
                integers = [
                    enc.to_integers(p, agreed, key, out=out)
                    for p, key, out in zip(prepared, keys, self._integers, strict=False)
                ]
            summed = link.integer_sum(
                integers, self.d, packet_values=enc.packet_values, lanes=enc.lanes, frame=enc.name
            )
            with CODEC.timing():
                total = enc.from_integers(summed, agreed, out=self._sum)
        if evaluate_error:
            self.last_error = self._relative_error(vectors, total, link)
        return total

    def _atp_total(self, enc: ATPEncoding, prepared: list[np.ndarray], link: Link) -> np.ndarray:
        """ATP: the switch's sum where no packet overflowed, the master's float32 sum of the others."""
        with CODEC.timing():
            quantized = [enc.quantize(p, out=out) for p, out in zip(prepared, self._integers, strict=False)]
        summed, overflowed = link.flagged_sum(
            [q for q, _ in quantized],
            [flags for _, flags in quantized],
            self.d,
            packet_values=enc.packet_values,
            lanes=enc.lanes,
            frame=enc.name,
        )
        with CODEC.timing():
            total = enc.from_integers(summed, np.zeros(0, dtype=np.int64), out=self._sum)
        flagged = np.flatnonzero(overflowed)
        self.overflow_packets += flagged.size
        if flagged.size:
            p = enc.packet_values
            index = np.concatenate([np.arange(int(b) * p, min((int(b) + 1) * p, self.d)) for b in flagged])
            floats = [np.ascontiguousarray(p[index], dtype=ATP_FALLBACK_DTYPE) for p in prepared]
            total[index] = link.fallback_sum(floats, index.size, packet_values=enc.packet_values, frame=enc.name)
        return total

    def _relative_error(self, vectors: Sequence[np.ndarray], total: np.ndarray, link: Link) -> float:
        """``||S - sum_i x_i|| / ||sum_i x_i||`` on the master (the float64 sum of the x_i taken uncounted, in
        the fixed worker tree: ``O(log n)`` vectors in memory, not one per worker)."""
        first = link.local_workers.start
        exact = link.sum_partials(
            lambda workers: np.stack([vectors[w - first] for w in workers]).astype(np.float64, copy=False), self.d
        )
        if exact is None:
            return float("nan")
        norm = float(np.linalg.norm(exact))
        return float(np.linalg.norm(total - exact)) / norm if norm > 0 else 0.0


def make_switch_sum(
    aggregation: str, uplink: Compressor, n_workers: int, d: int, packet_values: int, switch_format: str = "mpicomp"
) -> SwitchSum | None:
    """The switch round for ``aggregation = "switch"`` with this uplink and format; ``None`` for ``"gather"``."""
    if aggregation == "gather":
        return None
    try:
        encoding = make_switch_encoding(switch_format, uplink, n_workers, d, packet_values)
    except ValueError as exc:
        raise ValueError(f"[compressor] {exc}") from None
    return SwitchSum(encoding)


__all__ = ["AGGREGATIONS", "SWITCH_FORMATS", "SwitchSum", "make_switch_sum"]
