"""Sums over workers in one fixed binary tree over the worker ids, whatever the rank layout.

The tree has the leaves ``0 .. N-1`` (``N``, the worker count rounded up to a power of two); the node
``(start, size)`` covers ``[start, start + size)`` with ``size`` a power of two dividing ``start``,
and its sum is ``sum(left half) + sum(right half)`` (the right half left out where it lies beyond the
last worker). A process holding the workers ``[lo, hi)`` folds them into the sums of the largest
nodes inside ``[lo, hi)`` (:func:`covering_nodes`), at most ``max(1, 2 log2 N)`` of them, keeping
``O(log N)`` rows in memory plus one block of ``FOLD_BYTES`` (:func:`fold_nodes`); the master joins every process's nodes
(:func:`join_nodes`). Every addition is the same one in every layout, so the sum has the same bits
on 1 rank and on 7.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Node = tuple[int, int]  # (start, size)
FOLD_BYTES = 1 << 20  # rows asked for at once by a fold (fold_block): a block of workers computed together


def tree_leaves(n_workers: int) -> int:
    """``N``: ``n_workers`` rounded up to a power of two (at least 1)."""
    return 1 << max(n_workers - 1, 0).bit_length()


def covering_nodes(lo: int, hi: int, n_workers: int) -> list[Node]:
    """The largest tree nodes inside ``[lo, hi)``, in worker order (none for an empty range)."""
    nodes = []
    start = lo
    while start < hi:
        size = start & -start if start else tree_leaves(n_workers)
        while start + size > hi:
            size //= 2
        nodes.append((start, size))
        start += size
    return nodes


def fold_block(width: int) -> int:
    """Workers whose rows a fold asks for at once: ``FOLD_BYTES`` of float64 rows, at least one."""
    return max(1, FOLD_BYTES // (8 * max(width, 1)))


def fold_nodes(rows_of: Callable[[range], np.ndarray], nodes: Sequence[Node], width: int) -> np.ndarray:
    """``(len(nodes), width)``: each node's sum of the workers' rows, ``rows_of(workers)`` giving a
    ``(len(workers), width)`` array for a range of at most :func:`fold_block` workers of one node (so that
    they can be computed together), folded row by row as they come (:func:`_fold_rows`)."""
    sums = np.empty((len(nodes), width))
    block = fold_block(width)
    for out, (start, size) in zip(sums, nodes, strict=True):
        stack: list[tuple[int, np.ndarray]] = []
        for lo in range(start, start + size, block):
            workers = range(lo, min(lo + block, start + size))
            _fold_rows(stack, np.asarray(rows_of(workers), dtype=np.float64).reshape(len(workers), width))
        out[:] = stack[0][1]
    return sums


def _fold_rows(stack: list[tuple[int, np.ndarray]], rows: np.ndarray) -> None:
    """Push a copy of each row onto ``stack`` (subtrees as ``(size, sum)``), merging the top two while they are the
    same size; the block itself is not kept (one block and ``O(log N)`` rows in memory)."""
    for row in rows:
        stack.append((1, row.copy()))
        while len(stack) > 1 and stack[-1][0] == stack[-2][0]:
            right_size, right = stack.pop()
            left_size, left = stack.pop()
            left += right
            stack.append((left_size + right_size, left))


def join_nodes(sums: dict[Node, np.ndarray], n_workers: int) -> np.ndarray:
    """The root's sum from the sums of nodes that cover ``[0, n_workers)`` exactly (every process's
    :func:`covering_nodes`), each inner node the sum of its halves."""

    def total(start: int, size: int) -> np.ndarray | None:
        if start >= n_workers:
            return None
        if (start, size) in sums:
            return sums[(start, size)]
        assert size > 1, f"worker {start} has no node"
        left, right = total(start, size // 2), total(start + size // 2, size // 2)
        assert left is not None, "a node that starts before the last worker has a left half"
        return left if right is None else left + right

    root = total(0, tree_leaves(n_workers))
    assert root is not None, "at least one worker"
    return root


def tree_sum(rows_of: Callable[[range], np.ndarray], n_workers: int, width: int) -> np.ndarray:
    """``sum_w`` of the rows of the workers ``0 .. n_workers-1`` of one process (``rows_of`` as for
    :func:`fold_nodes`), in the same tree."""
    nodes = covering_nodes(0, n_workers, n_workers)
    return join_nodes(dict(zip(nodes, fold_nodes(rows_of, nodes, width), strict=True)), n_workers)
