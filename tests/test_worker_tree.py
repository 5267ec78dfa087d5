"""Sums over workers in the fixed tree of :mod:`mpicomp.comm.worker_tree`: exact cover, the same bits in
every rank layout, and O(log n) rows in memory. (Under ``mpiexec`` the layout tests of
``test_memory_layout.py`` compare whole runs at 1, 2 and 4 ranks.)"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from mpicomp.comm import LocalTransport, worker_range
from mpicomp.comm.worker_tree import covering_nodes, fold_block, fold_nodes, join_nodes, tree_leaves, tree_sum


def rows_of(n: int, width: int = 6) -> np.ndarray:
    """Rows over 14 orders of magnitude: a different order of additions changes the bits."""
    rng = np.random.default_rng(n)
    return rng.normal(size=(n, width)) * 10.0 ** rng.integers(-7, 7, size=(n, 1))


def pairwise(rows: np.ndarray, start: int, size: int) -> np.ndarray | None:
    """The tree's sum written out recursively: halves of a power-of-two range, empty beyond the rows."""
    if start >= len(rows):
        return None
    if size == 1:
        return rows[start].copy()
    left, right = pairwise(rows, start, size // 2), pairwise(rows, start + size // 2, size // 2)
    assert left is not None
    return left if right is None else left + right


@pytest.mark.parametrize(
    ("lo", "hi", "n", "expected"),
    [
        (0, 1, 1, [(0, 1)]),
        (0, 5, 5, [(0, 4), (4, 1)]),
        (3, 11, 13, [(3, 1), (4, 4), (8, 2), (10, 1)]),
        (0, 13, 13, [(0, 8), (8, 4), (12, 1)]),
        (6, 6, 13, []),
    ],
)
def test_covering_nodes_are_the_largest_aligned_nodes(lo, hi, n, expected):
    assert covering_nodes(lo, hi, n) == expected


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 13, 64, 100])
def test_every_rank_layout_gives_the_bits_of_the_written_out_tree(n):
    """Layouts of 1 to 7 ranks as ``worker_range`` splits them (ranks with no worker included)."""
    rows = rows_of(n)
    expected = pairwise(rows, 0, tree_leaves(n))
    assert expected is not None
    np.testing.assert_array_equal(tree_sum(lambda ws: rows[ws.start : ws.stop], n, rows.shape[1]), expected)
    for ranks in range(1, 8):
        blocks = [worker_range(n, ranks, r) for r in range(ranks)]
        sums = {}
        for block in blocks:
            nodes = covering_nodes(block.start, block.stop, n)
            assert len(nodes) <= 2 * max(tree_leaves(n).bit_length(), 1)
            sums.update(zip(nodes, fold_nodes(lambda ws: rows[ws.start : ws.stop], nodes, rows.shape[1]), strict=True))
        np.testing.assert_array_equal(join_nodes(sums, n), expected)
    np.testing.assert_allclose(expected, rows.sum(axis=0), rtol=1e-12, atol=1e-12 * np.abs(rows).max())


def test_the_transport_sums_in_the_same_tree():
    rows = rows_of(11)
    transport = LocalTransport(11)
    total = transport.sum_partials(lambda ws: rows[ws.start : ws.stop], rows.shape[1])
    np.testing.assert_array_equal(total, pairwise(rows, 0, 16))


def test_a_fold_keeps_logarithmically_many_rows_and_one_block():
    """4,096 rows of 80 KB (328 MB if held together): the fold asks for blocks of at most ``fold_block`` workers
    inside one node, in worker order, and its peak stays below that block plus 20 rows."""
    width = 10_000
    asked: list[range] = []

    def rows_of(workers: range) -> np.ndarray:
        asked.append(workers)
        return np.repeat(np.arange(workers.start, workers.stop, dtype=np.float64)[:, None], width, axis=1)

    tracemalloc.start()
    try:
        total = tree_sum(rows_of, 4096, width)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total[0] == 4095 * 4096 / 2
    block = fold_block(width)
    assert 1 < block < 4096 and all(0 < len(workers) <= block for workers in asked)
    assert [w for workers in asked for w in workers] == list(range(4096))
    assert peak < (block + 20) * 8 * width, f"peak {peak} B"
