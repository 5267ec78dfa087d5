"""numba's CPU features under mpicomp: the 256-bit preference off on AVX-512 hosts, the user's choice kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from llvmlite import binding

from mpicomp._vector_width import NOT_PREFERRING_256_BIT, full_width_features

PROBE = (
    "import json, mpicomp, numba; from numba.core.registry import cpu_target; "
    "print(json.dumps([numba.config.CPU_FEATURES, cpu_target.target_context.codegen()._tm_features]))"
)


def compiled_features(env: dict[str, str]) -> tuple[str | None, str]:
    """numba's configured CPU features and those its code generator took, in a fresh process that imports mpicomp."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True, timeout=120
    )
    configured, generator = json.loads(done.stdout)
    return configured, generator


def test_avx512_hosts_lose_only_the_256_bit_preference() -> None:
    host = "+64bit,+avx2,+avx512f,-avx512fp16"
    assert full_width_features(host) == host + "," + NOT_PREFERRING_256_BIT
    assert full_width_features("+64bit,+avx2,-avx512f") is None
    assert full_width_features("+64bit,+avx2") is None


def test_import_sets_the_features_before_numba_compiles() -> None:
    """The code generator (created by the first compilation) takes the full-width features: nothing
    compiles before ``mpicomp/__init__`` sets them. On a host without AVX-512F numba's default stays."""
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CPU_FEATURES", "NUMBA_CPU_NAME")}
    configured, generator = compiled_features(env)
    expected = full_width_features(binding.get_host_cpu_features().flatten())
    assert configured == expected
    if expected is not None:
        assert generator == expected


def test_the_users_features_are_kept() -> None:
    host = binding.get_host_cpu_features().flatten()
    configured, generator = compiled_features({**os.environ, "NUMBA_CPU_FEATURES": host})
    assert configured == host and generator == host
