"""The switch capabilities of a transport, the same checks in-process and under mpiexec.

``mpiexec -n N python -m mpi4py capabilities.py N_WORKERS`` runs :func:`exercise` on an
MPITransport; tests call it with a LocalTransport too. For every case (vector length, register
width, packet size) each rank checks ``integer_sum`` and ``max_agree`` against NumPy on every
worker's values, then an integer sum that must overflow (with two or more workers) has to raise
on every rank. Rank 0 prints ``RESULT <json>`` with the per-case counts.
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


if __name__ == "__main__":
    with MPITransport(int(sys.argv[1])) as mpi:
        counts = exercise(mpi)
        if mpi.is_master:
            print("RESULT " + json.dumps({"size": mpi.size, "rounds": counts}))
