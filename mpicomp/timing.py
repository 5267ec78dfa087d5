"""Process-wide stopwatches: where a rank's wall time goes (compression versus communication).

``CODEC`` accumulates the seconds spent encoding and decoding vectors (compressors, and the host
conversions of in-network aggregation); each transport keeps its own in ``transport.clock``. The runner
logs both, cumulative, as ``codec_time`` and ``comm_time``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stopwatch:
    """Accumulated seconds of the ``timing()`` blocks run in this process; a block nested in another
    (a composed compressor encoding with its outer codec) is counted once, by the outermost."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.depth = 0

    @contextmanager
    def timing(self) -> Iterator[None]:
        self.depth += 1
        start = time.perf_counter()
        try:
            yield
        finally:
            self.depth -= 1
            if self.depth == 0:
                self.seconds += time.perf_counter() - start


CODEC = Stopwatch()
