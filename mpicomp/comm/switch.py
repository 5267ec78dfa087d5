"""The emulated programmable switch: it adds (or takes the max of) integers, nothing else.

The switch receives every worker's packet stream (:mod:`mpicomp.comm.packets`), turns each
value into an integer as its lanes say, and combines them per slot in registers of the declared
width: ``r_j = sum_i v_ij`` (op sum) or ``r_j = max_i v_ij`` (op max). No floating point, no
randomness, so the result does not depend on the order in which packets arrive.

Overflow: hardware registers wrap around silently. Two's-complement addition is exact modulo
``2^width``, so a wrapped register still holds the exact sum whenever the exact sum lies in the
register range, whatever the order of additions; the emulation therefore computes the exact sum
(in int64) and sets the overflow flag of every aggregate packet in which it leaves the range.
Every receiver checks the flags (:func:`read_aggregate`) and raises
:class:`~mpicomp.comm.packets.AggregationOverflowError`, so an overflow is never used silently.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .packets import (
    FLAG_AGGREGATE,
    LANES,
    OP_SUM,
    SWITCH_SENDER,
    AggregationOverflowError,
    PacketSpec,
    decode_packets,
    encode_packets,
    register_range,
)

RESULT_LANES = LANES["int"]  # the switch multicasts its registers as plain integers


def switch_aggregate(streams: Sequence[bytes | memoryview], spec: PacketSpec, n: int) -> np.ndarray:
    """The aggregate packet stream of the workers' ``streams`` (``streams[w]`` from worker w).

    MessageError if any stream is malformed; register overflows are flagged, not raised.
    """
    total = None
    for worker, stream in enumerate(streams):
        values, _ = decode_packets(stream, spec, n, sender=worker)
        if total is None:
            total = values
        elif spec.op == OP_SUM:
            total += values
        else:
            np.maximum(total, values, out=total)
    if total is None:
        raise ValueError("the switch needs at least one worker's packets")
    low, high = register_range(spec.width)
    outside = (total < low) | (total > high)
    starts = np.arange(0, n, spec.packet_values)
    overflow = np.add.reduceat(outside, starts) > 0 if n else np.zeros(0, dtype=bool)
    return encode_packets(total, spec, SWITCH_SENDER, FLAG_AGGREGATE, lanes=RESULT_LANES, overflow=overflow)


def read_aggregate(stream: bytes | memoryview, spec: PacketSpec, n: int) -> np.ndarray:
    """The switch's registers (int64, ``(n,)``) from its multicast; AggregationOverflowError if any overflowed."""
    values, overflowed = decode_packets(stream, spec, n, SWITCH_SENDER, FLAG_AGGREGATE, lanes=RESULT_LANES)
    if overflowed.any():
        bad = np.flatnonzero(overflowed)
        low, high = register_range(spec.width)
        raise AggregationOverflowError(
            f"integer {'sum' if spec.op == OP_SUM else 'max'} overflowed the switch's {spec.width}-bit registers "
            f"[{low}, {high}] in {bad.size} of {overflowed.size} packets (first: packet {bad[0]}, values "
            f"{bad[0] * spec.packet_values}..{min(n, (bad[0] + 1) * spec.packet_values) - 1}); "
            "the hosts must scale their integers so that the n-way sum fits"
        )
    return values
