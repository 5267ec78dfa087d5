"""Property checks for compressors and runs: the kit mpicomp's own tests use, for yours too.

Usable from any pytest (each check raises ``AssertionError`` saying what failed and by how much)::

    from mpicomp.testing import check_unbiased, check_variance, check_contractive, check_wire
    from mpicomp.testing import check_rank_independent

    def test_my_codec():
        codec = make("mypkg.codecs:FlipSign(p=0.1)")
        samples = check_unbiased(codec, 100, n_draws=500)      # E C(x) = x (chi2 bound)
        check_variance(codec, 100, n_draws=500, samples=samples)  # E||C(x)-x||^2 <= omega ||x||^2
        check_wire(codec, 100)                                  # sizes, determinism, corruptions

Statistical thresholds come from the sampling distribution with fixed seeds (module
``mpicomp.testing._statistics``); ``false_failure`` is the probability, per test vector, that a
correct compressor fails. The names exported here are a stable API. See ``docs/extending.md``.
"""

from ._compressors import check_contractive, check_unbiased, check_variance, check_wire
from ._runs import (
    TIMING_COLUMNS,
    assert_same_metrics,
    check_rank_independent,
    mpiexec_path,
    mpiexec_run,
    overrides,
    run_inprocess,
    run_mpiexec,
)
from ._statistics import (
    CHI2_1_TAIL,
    MEAN_CLOSE_FALSE_FAILURE,
    MEAN_FALSE_FAILURE,
    MOMENT_FALSE_FAILURE,
    Z_TAIL,
    assert_alpha,
    assert_mean_close,
    assert_omega,
    assert_second_moment_below,
    assert_unbiased,
    draws,
    fixed_vectors,
    mean_with_error,
)

__all__ = [
    "CHI2_1_TAIL",
    "MEAN_CLOSE_FALSE_FAILURE",
    "MEAN_FALSE_FAILURE",
    "MOMENT_FALSE_FAILURE",
    "TIMING_COLUMNS",
    "Z_TAIL",
    "assert_alpha",
    "assert_mean_close",
    "assert_omega",
    "assert_same_metrics",
    "assert_second_moment_below",
    "assert_unbiased",
    "check_contractive",
    "check_rank_independent",
    "check_unbiased",
    "check_variance",
    "check_wire",
    "draws",
    "fixed_vectors",
    "mean_with_error",
    "mpiexec_path",
    "mpiexec_run",
    "overrides",
    "run_inprocess",
    "run_mpiexec",
]
