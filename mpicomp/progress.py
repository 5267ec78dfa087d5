"""Progress of a run on rank 0: a bar on a terminal, a plain line now and then in a log file.

On a terminal a tqdm bar redraws in place. Redirected to a file (a SLURM log, or rank 0's pipe
under ``mpiexec``), a bar would write one carriage-return-separated line of ~100 bytes per update;
instead a plain line with the elapsed time and an estimate of the time left is logged at a bounded
rate: every ``PLAIN_SECONDS`` seconds, and at every 10% of the rounds (round ``ceil(j N / 10)``).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from tqdm import tqdm

log = logging.getLogger("mpicomp")

PLAIN_SECONDS = 30.0
PLAIN_STEPS = 10  # a plain line at every 1/PLAIN_STEPS of the rounds


def duration(seconds: float) -> str:
    """``seconds`` as ``1h02m03s``, ``2m03s`` or ``3.4s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    """``update`` once per round, ``note`` with the latest metrics; ``close`` at the end.

    ``enabled``: report progress at all (rank 0, not ``-q``). ``bar``: draw a tqdm bar when
    ``stream`` is a terminal; elsewhere, or with ``bar=False``, plain log lines.
    """

    def __init__(self, total: int, enabled: bool, stream: TextIO | None = None, bar: bool = True) -> None:
        stream = stream or sys.stderr
        self.total = total
        self.enabled = enabled
        self.bar = (
            tqdm(total=total, unit="round", dynamic_ncols=True, file=stream)
            if enabled and bar and stream.isatty()
            else None
        )
        self.done = 0
        self.postfix: dict[str, str] = {}
        self.start = self.last_line = time.monotonic()
        self.step = 1  # the next milestone is round ceil(step * total / PLAIN_STEPS)

    def update(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.enabled and self._line_due():
            elapsed = time.monotonic() - self.start
            rate = self.done / max(elapsed, 1e-9)
            left = (self.total - self.done) / rate
            extra = "".join(f", {key} {value}" for key, value in self.postfix.items())
            log.info(
                "round %d/%d (%.0f%%, %.1f rounds/s, elapsed %s, about %s left%s)",
                self.done,
                self.total,
                100 * self.done / self.total,
                rate,
                duration(elapsed),
                duration(left),
                extra,
            )

    def _milestone(self) -> int:
        return -(-self.step * self.total // PLAIN_STEPS)

    def _line_due(self) -> bool:
        now = time.monotonic()
        reached = self.done >= self._milestone()
        if now - self.last_line >= PLAIN_SECONDS or reached or self.done == self.total:
            self.last_line = now
            while self.step <= PLAIN_STEPS and self.done >= self._milestone():
                self.step += 1
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
