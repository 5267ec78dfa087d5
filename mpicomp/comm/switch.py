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
from numba import njit

from ..wire import MessageError, byte_view
from .packets import (
    CHUNK_PACKETS,
    FLAG_AGGREGATE,
    FLAG_OVERFLOW,
    LANES,
    OP_SUM,
    SWITCH_SENDER,
    AggregationOverflowError,
    PacketSpec,
    _group_view,
    _groups,
    _headers,
    _write_headers,
    decode_packets,
    encode_packets,
    register_range,
    sum_streams,
)

RESULT_LANES = LANES["int"]  # the switch multicasts its registers as plain integers


class Switch:
    """The emulated switch of one rank (the master's): keeps its registers and output buffer across rounds."""

    def __init__(self) -> None:
        self._registers = np.empty(0, dtype=np.int64)
        self._output = np.empty(0, dtype=np.uint8)

    def aggregate(self, streams: Sequence[bytes | memoryview | np.ndarray], spec: PacketSpec, n: int) -> memoryview:
        """The aggregate packet stream of the workers' ``streams`` (``streams[w]`` from worker w).

        MessageError if any stream is malformed; register overflows (and, with ``spec.fallback``, packets
        a worker flagged) set the aggregate's overflow flags, they are not raised here. The returned
        view is valid until the next call.
        """
        if not streams:
            raise ValueError("the switch needs at least one worker's packets")
        size = spec.stream_bytes(n, RESULT_LANES)
        if self._output.size < size:
            self._output = np.empty(size, dtype=np.uint8)
        if spec.op == OP_SUM:
            return self._sum(streams, spec, n, self._output[:size])
        return self._max(streams, spec, n)

    def _max(self, streams: Sequence[bytes | memoryview | np.ndarray], spec: PacketSpec, n: int) -> memoryview:
        """Op max (the exponent agreement: a few bytes per packet of values), stream by stream."""
        if self._registers.size < n:
            self._registers = np.empty(n, dtype=np.int64)
        total = self._registers[:n]
        flagged = np.zeros(spec.packets(n), dtype=bool)
        for worker, stream in enumerate(streams):
            values, flagged_now = decode_packets(stream, spec, n, sender=worker)
            if worker == 0:
                total[:] = values
            else:
                np.maximum(total, values, out=total)
            flagged |= flagged_now
        if flagged.any() and not spec.fallback:
            raise MessageError("a worker's packet claims an overflow: only the switch sets that flag")
        _wrap_registers(total, spec.packet_values, spec.width, flagged)
        stream = encode_packets(
            total, spec, SWITCH_SENDER, FLAG_AGGREGATE, lanes=RESULT_LANES, overflow=flagged, out=self._output
        )
        return byte_view(stream).toreadonly()

    def _sum(self, streams: Sequence[bytes | memoryview | np.ndarray], spec: PacketSpec, n: int, out: np.ndarray):
        """Op sum: the streams added chunk by chunk in int64 registers that stay in cache, each chunk
        wrapped to the register width, flagged if an exact sum left its range, and written straight
        into the multicast ``out``."""
        if self._registers.size < CHUNK_PACKETS * spec.packet_values:
            self._registers = np.empty(CHUNK_PACKETS * spec.packet_values, dtype=np.int64)
        groups = [
            _group_view(out, offset, packets, count, spec, RESULT_LANES)
            for _, packets, count, offset in _groups(spec, n, RESULT_LANES)
        ]
        firsts = [first for first, _, _, _ in _groups(spec, n, RESULT_LANES)]
        overflow = np.zeros(spec.packets(n), dtype=bool)
        lanes_dtype = f"<i{spec.width // 8}"

        def emit(group: int, lo: int, registers: np.ndarray) -> None:
            payload = groups[group][1][lo : lo + registers.shape[0]].view(lanes_dtype)
            first = firsts[group] + lo
            _emit_registers(registers, spec.width, payload, overflow[first : first + registers.shape[0]])

        flagged = sum_streams(streams, spec, n, self._registers, emit=emit)
        if flagged.any() and not spec.fallback:
            raise MessageError("a worker's packet claims an overflow: only the switch sets that flag")
        flagged |= overflow
        templates = _headers(spec, n, RESULT_LANES.name, SWITCH_SENDER, FLAG_AGGREGATE)
        for (header, _), first, template in zip(groups, firsts, templates, strict=True):
            _write_headers(header, template, flagged[first : first + header.shape[0]])
        return byte_view(out).toreadonly()


@njit(cache=True, nogil=True)
def _emit_registers(registers, width, payload, overflow):
    """``payload`` = the registers as hardware holds them (modulo ``2^width``); ``overflow[p]`` if an exact
    sum of packet row p left the register range."""
    shift = 64 - width
    for p in range(registers.shape[0]):
        values, lanes = registers[p], payload[p]
        outside = False
        for j in range(values.size):
            wrapped = (values[j] << shift) >> shift
            outside |= wrapped != values[j]
            lanes[j] = wrapped
        overflow[p] = outside


@njit(cache=True, nogil=True)
def _wrap_registers(total, block, width, flagged):
    """The registers as hardware holds them (the exact sums modulo ``2^width``, in place), and per packet of
    ``block`` values ``flagged[p] |=`` whether an exact sum left the register range."""
    shift = 64 - width
    for p in range(flagged.size):
        values = total[p * block : (p + 1) * block]
        outside = False
        for j in range(values.size):
            wrapped = (values[j] << shift) >> shift
            outside |= wrapped != values[j]
            values[j] = wrapped
        flagged[p] |= outside


def switch_aggregate(streams: Sequence[bytes | memoryview | np.ndarray], spec: PacketSpec, n: int) -> np.ndarray:
    """The aggregate packet stream of the workers' ``streams`` (a fresh switch; see :meth:`Switch.aggregate`)."""
    return np.frombuffer(Switch().aggregate(streams, spec, n), dtype=np.uint8).copy()


def read_aggregate(
    stream: bytes | memoryview, spec: PacketSpec, n: int, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(registers, flagged)``: the switch's registers (int64, ``(n,)``, into ``out``) from its multicast and
    its per-packet overflow flags; AggregationOverflowError if any is set, unless ``spec.fallback``."""
    values, overflowed = decode_packets(stream, spec, n, SWITCH_SENDER, FLAG_AGGREGATE, lanes=RESULT_LANES, out=out)
    if overflowed.any() and not spec.fallback:
        bad = np.flatnonzero(overflowed)
        low, high = register_range(spec.width)
        raise AggregationOverflowError(
            f"integer {'sum' if spec.op == OP_SUM else 'max'} overflowed the switch's {spec.width}-bit registers "
            f"[{low}, {high}] in {bad.size} of {overflowed.size} packets (first: packet {bad[0]}, values "
            f"{bad[0] * spec.packet_values}..{min(n, (bad[0] + 1) * spec.packet_values) - 1}); "
            "the hosts must scale their integers so that the n-way sum fits"
        )
    return values, overflowed


__all__ = ["FLAG_OVERFLOW", "Switch", "read_aggregate", "switch_aggregate"]
