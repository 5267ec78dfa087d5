"""Sequences of messages held in consecutive parts (blocks of message rows, buffers of packed messages, validated
blocks): where each part starts, which part holds an index, which of its items a slice takes."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


class Parted(Sequence[T]):
    """A sequence whose items lie in consecutive parts; a subclass sets ``_starts``, the index of every part's first
    item and then the length."""

    __slots__ = ()
    _starts: list[int]

    def __len__(self) -> int:
        return self._starts[-1]

    def block_starts(self) -> list[int]:
        """The index of every part's first item."""
        return self._starts[:-1]

    def _locate(self, index: int) -> tuple[int, int]:
        """``(part, position in the part)`` of item ``index`` (negative: from the end); IndexError outside."""
        i = index + len(self) if index < 0 else index
        if not 0 <= i < len(self):
            raise IndexError(f"message {index} of {len(self)}")
        part = bisect.bisect_right(self._starts, i) - 1
        return part, i - self._starts[part]

    def _slice_bounds(self, index: slice, what: str) -> list[tuple[int, int]]:
        """Per part, the ``(start, stop)`` positions in it of the items ``index`` takes (step 1 only, else a
        ValueError naming ``what``); a reversed slice takes none."""
        start, stop, step = index.indices(len(self))
        if step != 1:
            raise ValueError(f"{what} are sliced with step 1")
        stop = max(stop, start)
        return [
            (min(max(start - first, 0), end - first), min(max(stop - first, 0), end - first))
            for first, end in zip(self._starts[:-1], self._starts[1:], strict=True)
        ]
