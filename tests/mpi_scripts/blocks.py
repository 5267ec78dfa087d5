"""Run under ``mpiexec -n N python -m mpi4py blocks.py N_WORKERS``.

Every rank encodes its workers' vectors with ``encode_many`` (message rows, two workers per batch) and
gathers them with the size announced, then the same messages as a list of bytes. The master checks
that the rows come back as rows, with the bytes, byte counts and ``decode_sum`` bits of the list
path and of one ``encode`` per worker; rank 0 prints ``OK``. Any failed check raises (and mpi4py's
``-m mpi4py`` runner aborts the whole job instead of hanging).
"""

from __future__ import annotations

import sys

import numpy as np

from mpicomp.comm import MPITransport
from mpicomp.compressors import MessageRows, make
from mpicomp.rng import RandomKey

D = 30


def main(n_workers: int) -> None:
    codec = make("natural")
    vectors = np.random.default_rng(1).standard_normal((n_workers, D))
    vectors[n_workers // 2] = 0.0
    keys = [RandomKey(1, 0, w, 0) for w in range(n_workers)]
    size = codec.message_capacity(D)
    with MPITransport(n_workers) as transport:
        workers = transport.local_workers
        batches = [
            codec.encode_many(vectors[lo : min(lo + 2, workers.stop)], keys[lo : min(lo + 2, workers.stop)])
            for lo in range(workers.start, workers.stop, 2)
        ]
        rows = MessageRows.joined(batch for batch in batches if isinstance(batch, MessageRows))
        gathered = transport.gather(rows, size=size)
        by_rows = transport.counter.end_round()
        if transport.is_master:
            assert isinstance(gathered, MessageRows), type(gathered)
            received = [bytes(message) for message in gathered]
            mean = codec.decode_sum(gathered, keys, np.empty(D), n_workers)
        listed = transport.gather([bytes(message) for message in rows], size=size)
        assert transport.counter.end_round() == by_rows
        if transport.is_master:
            assert isinstance(listed, list)
            assert received == [bytes(message) for message in listed]
            assert received == [bytes(codec.encode(v, k)) for v, k in zip(vectors, keys, strict=True)]
            reference = codec.decode_sum(listed, keys, np.empty(D), n_workers)
            assert np.array_equal(mean.view(np.int64), reference.view(np.int64))
            print("OK")


if __name__ == "__main__":
    main(int(sys.argv[1]))
