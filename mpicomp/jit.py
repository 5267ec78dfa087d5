"""Compile every numba kernel ahead of a batch job (``mpicomp compile``).

numba compiles a kernel the first time it is called with a new type signature and caches the
machine code on disk (next to the package's ``.py`` files, or in ``NUMBA_CACHE_DIR``), so the first
run after an install pays seconds to a minute of compilation. Running this once, on the machine
and with the cache directory the jobs will use, moves that cost out of the jobs' start-up.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np

from .comm.packets import warm_up_packets
from .compressors import make
from .compressors.switch_encoding import ATPEncoding, FixedPointEncoding, NaturalEncoding, SwitchMLEncoding

SIZES = (1000, 200_000)  # small vectors and ones long enough for the multi-threaded paths


def compile_kernels(specs: Iterable[str]) -> list[tuple[str, float]]:
    """Encode, decode and decode-add float64 and float32 vectors with every spec, and run the switch host and
    packet kernels; returns ``(what, seconds)`` per item."""
    timings = []
    for spec in specs:
        start = time.perf_counter()
        compressor = make(spec)
        for d in SIZES:
            compressor.compile_kernels(d, (np.float64, np.float32))
        timings.append((spec, time.perf_counter() - start))
    start = time.perf_counter()
    encodings = (
        FixedPointEncoding(8, SIZES[0], 256, float32=False),
        NaturalEncoding(8, SIZES[0], 256),
        SwitchMLEncoding(8, SIZES[0], 256),
        ATPEncoding(8, SIZES[0]),
    )
    for encoding in encodings:
        encoding.warm_up()
    warm_up_packets()
    timings.append(("switch host and packet kernels", time.perf_counter() - start))
    return timings
