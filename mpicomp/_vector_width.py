"""The full AVX-512 vector width for numba's kernels on CPUs that LLVM tunes down to 256 bits.

LLVM's x86 backend gives Intel's AVX-512 CPUs (Skylake-SP and its successors) the ``prefer-256-bit``
tuning, once meant to spare Skylake-SP the clock drop of 512-bit instructions: the loop and SLP
vectorizers, which turn numba's loops into vector code, then pick 256-bit vectors. mpicomp's kernels do a
few vector operations per coordinate of a streamed vector; on an Emerald Rapids node the full width runs
natural's encode 1.5x faster (0.57 -> 0.88 Gelem/s at d = 2^24), the other scalar encodes and decode_adds
up to 25 % faster and two decodes about 5 % slower (``docs/performance.md``, "A second machine"). So the
tuning is switched off in numba's CPU features before numba creates its code generator, unless the user
chose them (``NUMBA_CPU_FEATURES`` or ``NUMBA_CPU_NAME``; ``NUMBA_CPU_FEATURES`` set to the host's own
features keeps LLVM's choice). On other CPUs (AMD's have no such tuning) the flag changes nothing.
"""

from __future__ import annotations

import logging

import numba
from llvmlite import binding
from numba.core import codegen, registry

NOT_PREFERRING_256_BIT = "-prefer-256-bit"

log = logging.getLogger("mpicomp")


def full_width_features(host_features: str) -> str | None:
    """The CPU feature string (LLVM's ``+name,-name,...``) that numba should compile for: the host's
    with the 256-bit preference off where the host has AVX-512F; None (keep numba's default) elsewhere."""
    if "+avx512f" not in host_features.split(","):
        return None
    return f"{host_features},{NOT_PREFERRING_256_BIT}"


def generator_created() -> bool:
    """Whether numba has created its CPU code generator in this process (it does when the first jitted
    function is defined), which keeps the CPU features it was created with."""
    return "_toplevel_target_context" in vars(registry.cpu_target)


def use_full_vector_width() -> bool:
    """Set numba's CPU features to :func:`full_width_features` of the host's (numba's view of them, which
    honours ``NUMBA_ENABLE_AVX``) unless the user set the CPU name or features; whether they were set.
    Too late once numba has created its code generator (a package that defines jitted functions was
    imported before mpicomp): then a warning says so, on AVX-512 hosts."""
    if numba.config.CPU_FEATURES is not None or numba.config.CPU_NAME is not None:  # type: ignore[attr-defined]  # numba.config sets its options at import time, untyped
        return False
    features = full_width_features(codegen.get_host_cpu_features())
    if features is None:
        return False
    if generator_created():
        log.warning(
            "numba was set up before mpicomp was imported (a jitted function was defined), so mpicomp's kernels "
            "keep LLVM's vector width, 256 bits on Intel's AVX-512 CPUs (natural's encode 1.5x slower there): "
            "import mpicomp first"
        )
        return False
    numba.config.CPU_FEATURES = features  # type: ignore[attr-defined]  # as above
    return True


def vector_width_summary() -> str:
    """One line for a run's log: the CPU numba compiles for and the vector width its AVX-512 gets (from
    numba's configured name and features, else the host's)."""
    name = numba.config.CPU_NAME or binding.get_host_cpu_name()  # type: ignore[attr-defined]  # as above
    configured = numba.config.CPU_FEATURES  # type: ignore[attr-defined]  # as above
    features = (codegen.get_host_cpu_features() if configured is None else configured).split(",")
    if "+avx512f" not in features:
        width = "no AVX-512"
    elif NOT_PREFERRING_256_BIT in features:
        width = "AVX-512 at 512 bits"
    else:
        width = "AVX-512 at LLVM's preferred width (256 bits on Intel: README, Vector width)"
    return f"numba compiles for {name}: {width}"
