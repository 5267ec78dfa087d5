"""The process-wide stopwatches (``mpicomp.timing``)."""

from __future__ import annotations

import time

import pytest

from mpicomp.timing import Stopwatch


def test_a_nested_block_is_counted_once_by_the_outermost() -> None:
    watch = Stopwatch()
    with watch.timing():
        time.sleep(0.01)
        with watch.timing():
            time.sleep(0.01)
        inner_done = watch.seconds
    assert inner_done == 0.0  # nothing counted until the outermost block ends
    assert 0.02 <= watch.seconds < 1.0
    before = watch.seconds
    with watch.timing():
        pass
    assert watch.seconds >= before and watch.depth == 0


def test_a_block_left_by_an_exception_is_counted_and_closed() -> None:
    watch = Stopwatch()
    with pytest.raises(RuntimeError), watch.timing():
        time.sleep(0.01)
        raise RuntimeError("bad")
    assert watch.depth == 0 and watch.seconds >= 0.01
