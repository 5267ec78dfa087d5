"""A problem built for one rank holds only that rank's workers' data; its collective values are the
one-process problem's, bit for bit.

``mpiexec -n N python -m mpi4py layout.py N_WORKERS CACHE_DIR`` runs :func:`exercise` on an
MPITransport; tests call it with a LocalTransport too. Every rank builds the problem twice, for
itself (``collective`` = the transport) and whole (every worker, no collective), and checks that
its own shards and held-out blocks are the whole problem's rows and that every collective value
(loss, gradient, Hessian product, potential, constants, cache key, test accuracy, reference
optimum and MAP) equals the whole problem's exactly. Rank 0 prints ``RESULT <json>``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from mpicomp.comm import MPITransport, Transport
from mpicomp.problems import build_problem
from mpicomp.rng import root_seed

OPTIONS = {"l2": 0.05, "partition": "unbalanced", "seed": root_seed(2)}


def same(a, b, what: str) -> None:
    """``a`` and ``b`` hold the same bits (floats, arrays or tuples of them)."""
    if isinstance(a, tuple):
        for x, y in zip(a, b, strict=True):
            same(x, y, what)
        return
    assert np.array_equal(np.asarray(a), np.asarray(b)), f"{what}: {a!r} != {b!r}"


def check_rows(transport: Transport, mine, whole) -> int:
    """Only the local workers' shards and held-out blocks are here, with the whole problem's rows; returns the row count."""
    local = transport.local_workers
    assert mine.features.shape[0] == int(whole.shard_sizes[local.start : local.stop].sum())
    for w in range(whole.n_workers):
        if w in local:
            same(mine.local(w).features, whole.local(w).features, f"worker {w}'s rows")
            same(mine.local(w).targets, whole.local(w).targets, f"worker {w}'s targets")
        else:
            try:
                mine.local(w)
            except IndexError:
                continue
            raise AssertionError(f"rank {transport.rank} built worker {w}'s shard")
    start = int(whole.test_sizes[: local.start].sum())
    block = slice(start, start + mine.test_features.shape[0])
    same(mine.test_features, whole.test_features[block], "held-out block")
    same(mine.test_targets, whole.test_targets[block], "held-out targets")
    return mine.features.shape[0]


def check_collectives(transport: Transport, mine, whole) -> None:
    x = np.random.default_rng(0).normal(size=whole.d)
    v = np.random.default_rng(1).normal(size=whole.d)
    same(mine.loss_and_grad(x), whole.loss_and_grad(x), "F and grad f")
    master_only = mine.loss_and_grad(x, everyone=False)
    assert (master_only is None) != transport.is_master
    if transport.is_master:
        same(master_only, whole.loss_and_grad(x), "F and grad f on the master")
    accuracy = mine.test_accuracy(x)
    assert accuracy == (whole.test_accuracy(x) if transport.is_master else None)
    same(mine.hessp(x, v), whole.hessp(x, v), "Hessian product")
    same(mine.potential_and_grad(x), whole.potential_and_grad(x), "U and grad U")
    same(mine.local_smoothness(), whole.local_smoothness(), "L_i")
    same(mine.sample_smoothness(), whole.sample_smoothness(), "L_max")
    assert mine.cache_key() == whole.cache_key()
    same(mine.map_point(), whole.map_point(), "MAP")


def check_optimum(transport: Transport, n_workers: int, cache: Path, whole) -> None:
    """Solved by every rank together and cached by the master; then read from that cache by the master alone."""
    reference = whole.optimum()
    for attempt in ("solved", "cached"):
        mine = build_problem(
            "softmax",
            "sklearn:wine",
            n_workers,
            collective=transport,
            cache_dir=cache,
            **OPTIONS,
        )
        found = mine.optimum()
        if transport.is_master or attempt == "solved":
            same(found, reference, f"{attempt} optimum")
        else:
            assert found is None, f"rank {transport.rank} got the {attempt} optimum"


def check_gather(transport: Transport) -> None:
    rows = np.array([[w, -2.0 * w] for w in transport.local_workers]).reshape(-1, 2)
    expected = np.array([[w, -2.0 * w] for w in range(transport.n_workers)])
    same(transport.gather_partials(rows, everyone=True), expected, "gathered rows")
    to_master = transport.gather_partials(rows)
    if transport.is_master:
        same(to_master, expected, "rows on the master")
    else:
        assert to_master is None


def exercise(transport: Transport, cache: Path) -> dict[str, int]:
    n = transport.n_workers
    check_gather(transport)
    whole = build_problem(
        "softmax",
        "sklearn:wine",
        n,
        cache_dir=cache / f"whole-{transport.rank}",
        **OPTIONS,
    )
    mine = build_problem(
        "softmax",
        "sklearn:wine",
        n,
        collective=transport,
        cache_dir=cache / "unused",
        **OPTIONS,
    )
    rows = check_rows(transport, mine, whole)
    check_collectives(transport, mine, whole)
    check_optimum(transport, n, cache / "split", whole)
    return {
        "rank": transport.rank,
        "workers": len(transport.local_workers),
        "rows": rows,
    }


if __name__ == "__main__":
    with MPITransport(int(sys.argv[1])) as mpi:
        report = exercise(mpi, Path(sys.argv[2]))
        reports = mpi.comm.gather(report, root=0)
        if mpi.is_master:
            print("RESULT " + json.dumps(reports))
