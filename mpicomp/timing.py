"""Process-wide stopwatches: where a rank's wall time goes (compression versus communication).

``CODEC`` accumulates the seconds spent encoding and decoding vectors (compressors, and the host
conversions of in-network aggregation); transports keep their own ``comm_seconds``. The runner
logs both, cumulative, as ``codec_time`` and ``comm_time``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stopwatch:
    """Accumulated seconds of the ``timing()`` blocks run in this process."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextmanager
    def timing(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start


CODEC = Stopwatch()
