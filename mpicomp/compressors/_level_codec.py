"""What the sign + level codecs (dither, natdither, block) share around the kernels of :mod:`._levels`:
decoding with an optional factor in one pass, and the master's sum of many short messages as payload rows."""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from ..rng import RandomKey
from ..wire import Message
from ..wire.bitpack import parallel_tasks
from ._levels import LevelCode, add_level_rows
from .base import Compressor


class LevelQuantizer(Compressor):
    """A codec whose payload holds sign + level codes (:class:`~._levels.LevelCode` ``code``) relative to
    per-block norms. Subclasses say where the norms are (:meth:`_row_codes`) and decode one message
    (:meth:`_decode_levels`)."""

    unbiased = True
    checks_finite = True  # the norm pass rejects NaN and Inf
    code: LevelCode

    @abstractmethod
    def _decode_levels(self, msg: Message, out: np.ndarray, accumulate: bool, factor: float) -> None:
        """The values written into ``out``, or (``accumulate``) ``factor`` times them added to it, in one pass."""

    @abstractmethod
    def _row_codes(self, payloads: np.ndarray, scalars: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray, int]:
        """``(codes, norms, block)`` of a stack of payloads with their codec scalars: the code bytes of each row,
        its ``(m, blocks)`` block norms and the block size."""

    def _decode_into(self, msg: Message, key: RandomKey | None, out: np.ndarray, accumulate: bool) -> None:
        self._decode_levels(msg, out, accumulate, 1.0)

    def _decode_scaled_add(self, msg: Message, key: RandomKey | None, out: np.ndarray, scale: float) -> None:
        self._decode_levels(msg, out, True, scale)

    def _sums_payload_rows(self, d: int) -> bool:
        """Short vectors (a rank's many workers): summed as rows by one kernel call a stack."""
        return d > 0 and parallel_tasks(d) == 1

    def _add_payload_rows(self, payloads: np.ndarray, scalars: np.ndarray, out: np.ndarray) -> int:
        """Every row into ``out`` by :meth:`_add_level_rows`."""
        return self._add_level_rows(payloads, scalars, out[np.newaxis], 1.0)

    def _add_payload_rows_each(
        self, payloads: np.ndarray, scalars: np.ndarray, targets: np.ndarray, factor: float
    ) -> int:
        """Row r into ``targets[r]`` by :meth:`_add_level_rows`."""
        return self._add_level_rows(payloads, scalars, targets, factor)

    def _add_level_rows(self, payloads: np.ndarray, scalars: np.ndarray, targets: np.ndarray, factor: float) -> int:
        """The codes with their norms (:meth:`_row_codes`) by one :func:`~mpicomp.compressors._levels.add_level_rows`
        call (``targets``: one row for a sum, else one row each)."""
        codes, norms, block = self._row_codes(payloads, scalars, targets.shape[1])
        return add_level_rows(codes, self.code, block, norms, targets, factor)
