"""Run whole experiments from tests: the kit's runners (:mod:`mpicomp.testing`), with the test-only
methods of ``tests/methods_for_tests.py`` registered under ``mpiexec`` when asked.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from mpicomp import testing
from mpicomp.comm import Transport
from mpicomp.testing import assert_same_metrics, overrides, run_inprocess

__all__ = [
    "MPIEXEC",
    "RecordingLink",
    "assert_same_metrics",
    "mpiexec_run",
    "overrides",
    "run_inprocess",
    "run_mpiexec",
]

MPIEXEC = Path(sys.executable).parent / "mpiexec"

WITH_TEST_METHODS = Path(__file__).parent / "mpi_scripts" / "run_with_test_methods.py"


def mpiexec_run(
    raw: dict[str, dict[str, Any]], out: Path, n: int, timeout: float = 600, test_methods: bool = False
) -> subprocess.CompletedProcess:
    """``mpiexec -n n python -m mpicomp run --set ...`` (with the test-only methods registered if asked)."""
    return testing.mpiexec_run(raw, out, n, timeout, [str(WITH_TEST_METHODS)] if test_methods else ("-m", "mpicomp"))


def run_mpiexec(raw: dict[str, dict[str, Any]], out: Path, n: int, timeout: float = 600, test_methods: bool = False):
    """:func:`mpiexec_run`, which must succeed; returns ``read_results(out)``."""
    return testing.run_mpiexec(raw, out, n, timeout, [str(WITH_TEST_METHODS)] if test_methods else ("-m", "mpicomp"))


class RecordingLink:
    """A transport that keeps what the last round gathered (the master's view) and broadcast."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.uploads: list[memoryview] | None = None
        self.downlink: memoryview | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)

    def gather(self, uploads, **options):
        self.uploads = self.transport.gather(uploads, **options)
        return self.uploads

    def broadcast(self, message, **options):
        self.downlink = self.transport.broadcast(message, **options)
        return self.downlink

    def play(self, method, k: int) -> tuple[list[memoryview] | None, memoryview | None]:
        """Round ``k`` of ``method``; returns ``(uploads, downlink)`` as they travelled."""
        method.round(k, self)
        return self.uploads, self.downlink
