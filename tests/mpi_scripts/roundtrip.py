"""Run under ``mpiexec -n N python -m mpi4py roundtrip.py N_WORKERS ROUNDS SEED [WAIT]``.

Every rank sends its workers' :func:`traffic.traffic` uploads; the master checks it received
exactly every worker's upload in worker order, every rank checks the downlink, then the
uncounted operations (all_equal, agree, gather_rank_values) are checked to count nothing. Rank 0
prints ``RESULT <json>`` with its per-round counts; any failed check raises (and mpi4py's
``-m mpi4py`` runner aborts the whole job instead of hanging).
"""

from __future__ import annotations

import json
import sys

import numpy as np
from traffic import DOWNLINK, payload_and_header, traffic

from mpicomp.comm import SIZE_PREFIX_BYTES, MPITransport, RoundBytes


def main(n_workers: int, rounds: int, seed: int, wait: str) -> None:
    transport = MPITransport(n_workers, wait=wait)
    counted = []
    for rnd in range(rounds):
        local = [traffic(seed, rnd, w) for w in transport.local_workers]
        gathered = transport.gather(local)
        expected_down = traffic(seed, rnd, DOWNLINK)
        if transport.is_master:
            expected = [traffic(seed, rnd, w) for w in range(n_workers)]
            assert [bytes(g) for g in gathered] == expected, f"round {rnd}: master received wrong uploads"
        else:
            assert gathered is None
        down = transport.broadcast(expected_down if transport.is_master else None)
        assert bytes(down) == expected_down, f"round {rnd}: rank {transport.rank} got a wrong downlink"
        counts = transport.counter.end_round()
        assert counts.complete == transport.is_master
        check_local_counts(counts, local, transport.local_workers, expected_down)
        counted.append(counts.to_dict())

    assert transport.all_equal(b"same digest")
    assert transport.all_equal(bytes([transport.rank == transport.size - 1])) == (transport.size == 1)
    assert transport.agree(7 if transport.is_master else None) == 7
    rows = transport.gather_rank_values(np.array([transport.rank, len(transport.local_workers), -1.5]))
    if transport.is_master:
        sizes = [len(block) for block in transport._worker_blocks()]
        expected_rows = np.array([[r, sizes[r], -1.5] for r in range(transport.size)])
        assert rows is not None and np.array_equal(rows, expected_rows), f"rank values gathered as {rows}"
    else:
        assert rows is None
    assert transport.counter.end_round() == RoundBytes.zeros(n_workers, transport.is_master), "bookkeeping was counted"
    if transport.is_master:
        print("RESULT " + json.dumps({"size": transport.size, "layout": transport.layout_summary(), "rounds": counted}))


def check_local_counts(counts: RoundBytes, local: list[bytes], workers: range, downlink: bytes) -> None:
    """Every rank's counter matches the reference count of what its own workers sent."""
    for worker, upload in zip(workers, local, strict=True):
        assert counts.up_bytes[worker] == len(upload) + SIZE_PREFIX_BYTES
        assert counts.uploads[worker] == (len(upload) > 0)
    assert (counts.down_payload, counts.down_header) == payload_and_header(downlink)
    assert counts.down_control == SIZE_PREFIX_BYTES


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:4]), sys.argv[4] if len(sys.argv) > 4 else "auto")
