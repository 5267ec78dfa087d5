"""numba's CPU features under mpicomp: the 256-bit preference off on AVX-512 hosts, the user's choice kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from numba.core.codegen import get_host_cpu_features

from mpicomp import cli, jit
from mpicomp._vector_width import NOT_PREFERRING_256_BIT, full_width_features, vector_width_summary

HOST = get_host_cpu_features()
LATER = " (256 bits on Intel: README, Vector width)"
FULL_WIDTH = full_width_features(HOST)
REPORT = (
    "import json, numba; from numba.core.registry import cpu_target; "
    "from mpicomp._vector_width import vector_width_summary; "
    "print(json.dumps([numba.config.CPU_FEATURES, cpu_target.target_context.codegen()._tm_features, "
    "vector_width_summary()]))"
)


def features_after_import(env: dict[str, str], before: str = "") -> tuple[str | None, str, str, str]:
    """numba's configured CPU features, those its code generator took, the run log's summary of them and
    stderr, in a fresh process that runs ``before`` and then imports mpicomp."""
    clean = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CPU_FEATURES", "NUMBA_CPU_NAME")}
    done = subprocess.run(
        [sys.executable, "-c", f"{before}\nimport mpicomp\n{REPORT}"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    configured, generator, summary = json.loads(done.stdout)
    return configured, generator, summary, done.stderr


def test_avx512_hosts_lose_only_the_256_bit_preference() -> None:
    host = "+64bit,+avx2,+avx512f,-avx512fp16"
    assert full_width_features(host) == host + "," + NOT_PREFERRING_256_BIT
    assert full_width_features("+64bit,+avx2,-avx512f") is None
    assert full_width_features("+64bit,+avx2") is None


def test_import_sets_the_features_before_numba_creates_its_code_generator() -> None:
    """Nothing in ``mpicomp/__init__`` defines a jitted function before the features are set; on a host
    without AVX-512F numba's default stays."""
    configured, generator, summary, _ = features_after_import({})
    assert configured == FULL_WIDTH
    assert generator == (HOST if FULL_WIDTH is None else FULL_WIDTH)
    assert summary.endswith("no AVX-512" if FULL_WIDTH is None else "AVX-512 at 512 bits")


def test_the_users_features_and_numbas_avx_switch_are_kept() -> None:
    configured, generator, summary, _ = features_after_import({"NUMBA_CPU_FEATURES": HOST})
    assert (configured, generator) == (HOST, HOST)
    assert summary.endswith("no AVX-512" if FULL_WIDTH is None else "AVX-512 at LLVM's preferred width" + LATER)
    configured, generator, summary, _ = features_after_import({"NUMBA_ENABLE_AVX": "0"})
    assert configured is None and "+avx512f" not in generator.split(",") and summary.endswith("no AVX-512")
    assert features_after_import({"NUMBA_CPU_NAME": "generic"})[2] == "numba compiles for generic: no AVX-512"


def test_a_code_generator_created_before_mpicomp_keeps_its_features_and_is_reported() -> None:
    before = "import numba\n@numba.njit\ndef identity(x):\n    return x"
    configured, generator, _, stderr = features_after_import({}, before)
    assert configured is None and generator == HOST
    assert ("import mpicomp first" in stderr) == (FULL_WIDTH is not None)


def test_compile_states_what_numba_compiles_for(monkeypatch, capsys) -> None:
    """``mpicomp compile`` prints the run log's line on the CPU and vector width (here without compiling)."""
    monkeypatch.setattr(jit, "compile_kernels", lambda specs: [("every kernel", 0.0)])
    assert cli.main(["compile"]) == 0
    assert f"{vector_width_summary()}; numba keeps its cache per CPU name and features" in capsys.readouterr().out
