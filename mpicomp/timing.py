"""Process-wide stopwatches: where a rank's wall time goes (compression versus communication).

``CODEC`` accumulates the seconds spent encoding and decoding vectors (compressors, and the host
conversions of in-network aggregation); each transport keeps its own in ``transport.clock``. The runner
logs both, cumulative, as ``codec_time`` and ``comm_time``.
"""

from __future__ import annotations

import time


class Stopwatch:
    """Accumulated seconds of the ``with stopwatch.timing():`` blocks run in this process; a block nested
    in another (a composed compressor encoding with its outer codec) is counted once, by the outermost.

    The stopwatch is its own context manager (no generator per block: rounds enter several)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.depth = 0
        self._start = 0.0

    def timing(self) -> Stopwatch:
        return self

    def __enter__(self) -> None:
        if self.depth == 0:
            self._start = time.perf_counter()
        self.depth += 1

    def __exit__(self, *exc: object) -> None:
        self.depth -= 1
        if self.depth == 0:
            self.seconds += time.perf_counter() - self._start


CODEC = Stopwatch()
