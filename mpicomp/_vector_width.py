"""The full AVX-512 vector width for numba's kernels on CPUs that LLVM tunes down to 256 bits.

LLVM's x86 backend gives Intel's AVX-512 server CPUs (Skylake-SP through Emerald Rapids) the
``prefer-256-bit`` tuning, once meant to spare Skylake-SP the clock drop of 512-bit instructions: numba's
vectorized loops, and the 512-bit vector types of mpicomp's kernels, are then split into 256-bit halves.
mpicomp's kernels do a few vector operations per coordinate of a streamed vector; on an Emerald Rapids
node the full width runs them up to 2x faster (natural encode 0.53 -> 0.88 Gelem/s, decode_add 1.1 ->
2.2; nothing slower; ``docs/performance/notes.md``). So the tuning is switched off for the process, in
numba's CPU features, before numba compiles anything, unless the user chose them (``NUMBA_CPU_FEATURES``
or ``NUMBA_CPU_NAME``: setting ``NUMBA_CPU_FEATURES`` to the host's own features keeps LLVM's choice).
"""

from __future__ import annotations

import numba
from llvmlite import binding

NOT_PREFERRING_256_BIT = "-prefer-256-bit"


def full_width_features(host_features: str) -> str | None:
    """The CPU feature string (LLVM's ``+name,-name,...``) that numba should compile for: the host's
    with the 256-bit preference off where the host has AVX-512F; None (keep numba's default) elsewhere."""
    if "+avx512f" not in host_features.split(","):
        return None
    return f"{host_features},{NOT_PREFERRING_256_BIT}"


def use_full_vector_width() -> bool:
    """Set numba's CPU features to :func:`full_width_features` of the host unless the user set the CPU
    name or features; whether they were set. Takes effect only if numba has compiled nothing yet in this
    process (its code generator keeps the features it was created with)."""
    if numba.config.CPU_FEATURES is not None or numba.config.CPU_NAME is not None:  # type: ignore[attr-defined]  # numba.config sets its options at import time, untyped
        return False
    features = full_width_features(binding.get_host_cpu_features().flatten())
    if features is None:
        return False
    numba.config.CPU_FEATURES = features  # type: ignore[attr-defined]  # as above
    return True
