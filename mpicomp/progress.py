"""Progress of a run on rank 0: a bar on a terminal, a plain line now and then in a log file.

On a terminal a tqdm bar redraws in place. Redirected to a file (a SLURM log), a bar would write
one carriage-return-separated line of ~100 bytes per update; instead a plain line is logged at a
bounded rate: every ``PLAIN_SECONDS`` seconds, and at every 10% of the rounds.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from tqdm import tqdm

log = logging.getLogger("mpicomp")

PLAIN_SECONDS = 30.0
PLAIN_FRACTION = 0.1


class Progress:
    """``update`` once per round, ``note`` with the latest metrics; ``close`` at the end."""

    def __init__(self, total: int, enabled: bool, stream: TextIO | None = None) -> None:
        stream = stream or sys.stderr
        self.total = total
        self.enabled = enabled
        self.bar = (
            tqdm(total=total, unit="round", dynamic_ncols=True, file=stream) if enabled and stream.isatty() else None
        )
        self.done = 0
        self.postfix: dict[str, str] = {}
        self.start = self.last_line = time.monotonic()
        self.next_fraction = PLAIN_FRACTION

    def update(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.enabled and self._line_due():
            rate = self.done / max(time.monotonic() - self.start, 1e-9)
            extra = "".join(f", {key} {value}" for key, value in self.postfix.items())
            log.info(
                "round %d/%d (%.0f%%, %.1f rounds/s%s)",
                self.done,
                self.total,
                100 * self.done / self.total,
                rate,
                extra,
            )

    def _line_due(self) -> bool:
        now = time.monotonic()
        fraction = self.done / self.total
        if now - self.last_line >= PLAIN_SECONDS or fraction >= self.next_fraction or self.done == self.total:
            self.last_line = now
            while self.next_fraction <= fraction:
                self.next_fraction += PLAIN_FRACTION
            return True
        return False

    def note(self, **values: str) -> None:
        """The latest values shown next to the progress (loss, bits)."""
        self.postfix = values
        if self.bar is not None:
            self.bar.set_postfix(values)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
