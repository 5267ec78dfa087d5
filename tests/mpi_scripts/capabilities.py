"""The switch capabilities of a transport, the same checks in-process and under mpiexec.

``mpiexec -n N python -m mpi4py capabilities.py N_WORKERS`` runs :func:`exercise` on an
MPITransport; tests call it with a LocalTransport too. For every case (vector length, register
width, packet size) each rank checks ``integer_sum`` and ``max_agree`` against NumPy on every
worker's values; then ATP's ``flagged_sum`` (a packet worker 0 flags, a packet whose sum overflows
with two or more workers) and ``fallback_sum`` of the flagged packets' float32 values; then an
integer sum that must overflow (with two or more workers) has to raise on every rank. Rank 0
prints ``RESULT <json>`` with the per-case counts.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from mpicomp.comm import AggregationOverflowError, MPITransport, Transport

# (length, register width, packet size): empty, one value, odd lengths, a partial last packet
CASES = [(0, 32, 256), (1, 32, 256), (7, 8, 64), (300, 16, 64), (513, 32, 256)]


def worker_values(case: int, worker: int, n_workers: int, length: int, width: int) -> np.ndarray:
    """Worker ``worker``'s integers for ``case``: spread over the register, small enough that n of them add up."""
    bound = (1 << (width - 1)) // n_workers
    return np.random.default_rng([case, worker]).integers(-bound, bound, size=length)


def exercise(transport: Transport) -> list[dict]:
    n = transport.n_workers
    counted = []
    for case, (length, width, packets) in enumerate(CASES):
        everyone = np.array([worker_values(case, w, n, length, width) for w in range(n)]).reshape(n, length)
        local = [everyone[w] for w in transport.local_workers]
        total = transport.integer_sum(local, length, width=width, packet_values=packets)
        assert total.dtype == np.int64 and np.array_equal(total, everyone.sum(axis=0)), f"case {case}: wrong sum"
        top = transport.max_agree(local, length, width=width, packet_values=packets)
        assert np.array_equal(top, everyone.max(axis=0)), f"case {case}: wrong max"
        counted.append(transport.counter.end_round().to_dict())
    counted.append(exercise_atp(transport))
    largest = [np.full(3, 2**31 - 1) for _ in transport.local_workers]
    try:
        transport.integer_sum(largest, 3)
        overflowed = False
    except AggregationOverflowError as exc:
        assert "overflowed the switch's 32-bit registers" in str(exc), exc
        overflowed = True
    assert overflowed == (n > 1), f"rank {transport.rank}: overflow raised {overflowed} with {n} workers"
    transport.counter.end_round()
    return counted


ATP_LENGTH = 130  # three packets of 62 values, the last one of 6


def exercise_atp(transport: Transport) -> dict:
    """ATP's switch and fallback: packet 1 flagged by worker 0, packet 2 overflowing with n > 1 workers."""
    n = transport.n_workers
    everyone = [np.random.default_rng([9, w]).integers(-1000, 1000, size=ATP_LENGTH) for w in range(n)]
    for values in everyone:
        values[125] = 2**31 - 1
    flags = [np.array([False, w == 0, False]) for w in range(n)]
    local = list(transport.local_workers)
    total, overflowed = transport.flagged_sum([everyone[w] for w in local], [flags[w] for w in local], ATP_LENGTH)
    assert overflowed.tolist() == [False, True, n > 1], overflowed
    np.testing.assert_array_equal(total[:62], np.sum(everyone, axis=0)[:62])
    index = np.concatenate([np.arange(62 * p, min(62 * (p + 1), ATP_LENGTH)) for p in np.flatnonzero(overflowed)])
    floats = [np.random.default_rng([10, w]).standard_normal(index.size).astype(np.float32) for w in range(n)]
    expected = np.zeros(index.size, dtype=np.float32)
    for row in floats:
        expected += row
    summed = transport.fallback_sum([floats[w] for w in local], index.size)
    np.testing.assert_array_equal(summed, expected)
    return transport.counter.end_round().to_dict()


if __name__ == "__main__":
    with MPITransport(int(sys.argv[1])) as mpi:
        counts = exercise(mpi)
        if mpi.is_master:
            print("RESULT " + json.dumps({"size": mpi.size, "rounds": counts}))
