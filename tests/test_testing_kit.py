"""mpicomp.testing on every built-in codec, and deliberately wrong compressors failing the matching check.

The wrong compressors are subclasses of built-in codecs defined here, outside mpicomp: they travel
as outside codecs (codec 255 and their own tag), as a plugin's would.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from mpicomp.compressors import make
from mpicomp.compressors.identity import Identity
from mpicomp.compressors.registry import _REGISTRY
from mpicomp.compressors.sparse import RandK, TopK
from mpicomp.testing import check_contractive, check_rank_independent, check_unbiased, check_variance, check_wire
from mpicomp.wire import MessageError

# One spec per built-in codec (compositions with either sparsifier), at d = 200.
BUILT_IN = {"randk": "randk(k=0.3)", "topk": "topk(k=0.2)", "qsgd": "qsgd(s=4)"}
WIRE_SPECS = [BUILT_IN.get(name, name) for name in sorted(_REGISTRY) if name != "compose"] + [
    "natural∘randk(k=0.1)",
    "sign∘topk(k=0.2)",
    "randk(k=2,send_indices=True)",
]


@pytest.mark.parametrize("spec", WIRE_SPECS)
def test_every_built_in_codec_passes_check_wire(spec):
    check_wire(make(spec), 200)


class BiasedRandK(RandK):
    """Claims unbiased, but compresses 0.8 x: E C(x) = 0.8 x."""

    def select(self, x, key):
        indices, values = super().select(x, key)
        return indices, 0.8 * values


class OptimisticRandK(RandK):
    """Declares half its true omega = d/k - 1."""

    def omega(self, d):
        return 0.5 * super().omega(d)


class GreedyTopK(TopK):
    """Declares alpha = 1 (exact), while Top-K loses every coordinate it drops."""

    def alpha(self, d):
        return 1.0


class UnderCountedIdentity(Identity):
    """Reports 32 bits per coordinate while sending float64."""

    def expected_bits(self, d):
        return 32.0 * d


class LenientIdentity(Identity):
    """Reads the first 8d payload bytes and ignores the rest: a longer payload is not detected."""

    def _decode_into(self, msg, key, out, accumulate):
        values = np.frombuffer(msg.payload, dtype="<f8", count=msg.d) if len(msg.payload) >= 8 * msg.d else None
        if values is None:
            raise MessageError("short payload")
        if accumulate:
            out += values
        else:
            out[:] = values


class MisroutedRowsIdentity(Identity):
    """Adds every message of a batch into the first row: each worker's memory is not its own."""

    def decode_add_rows(self, bufs, keys, targets, scale=1.0):
        for message, key in zip(bufs, keys, strict=True):
            self.decode_add(message, targets[0], key, scale)
        return targets


def test_correct_codecs_pass_the_statistical_checks():
    check_variance(make("randk(k=0.3)"), 20, samples=check_unbiased(make("randk(k=0.3)"), 20, n_draws=300))
    check_contractive(make("topk(k=0.2)"), 20, n_draws=20)


def test_claimed_unbiased_but_biased_fails_check_unbiased():
    """Bias 0.2 x under Rand-K noise with k = d/2 (tr Cov = 0.8^2 ||x||^2): over N = 1000 draws
    E T = 1 + N 0.2^2 / 0.8^2 = 63.5, against the chi2_1 threshold 20."""
    with pytest.raises(AssertionError, match=r"BiasedRandK.*bias detected"):
        check_unbiased(BiasedRandK(k=0.5), x={"dense": np.random.default_rng(1).standard_normal(50)}, n_draws=1000)


def test_too_small_omega_fails_check_variance():
    with pytest.raises(AssertionError, match=r"OptimisticRandK.*exceeds bound"):
        check_variance(OptimisticRandK(k=0.3), 50, n_draws=300)


def test_too_large_alpha_fails_check_contractive():
    with pytest.raises(AssertionError, match=r"GreedyTopK.*exceeds bound"):
        check_contractive(GreedyTopK(k=0.2), 50, n_draws=5)


def test_under_counted_bits_fail_check_wire():
    with pytest.raises(AssertionError, match=r"expected_bits\(100\) = 3200 but every message sends 6400"):
        check_wire(UnderCountedIdentity(), 100)


def test_undetected_corruption_fails_check_wire():
    with pytest.raises(AssertionError, match="payload one byte long .* decoded without error"):
        check_wire(LenientIdentity(), 100)


def test_rows_added_into_one_row_fail_check_wire():
    with pytest.raises(AssertionError, match="decode_add_rows differs from decode_add of each message"):
        check_wire(MisroutedRowsIdentity(), 100)


def test_outside_codecs_are_told_apart_on_the_wire():
    """The subclasses are outside codecs: a built-in decoder refuses their messages and vice versa."""
    message = UnderCountedIdentity().encode(np.ones(5), key=None)
    with pytest.raises(MessageError, match="codec"):
        make("identity").decode(message, 5)
    with pytest.raises(MessageError, match="another outside codec"):
        LenientIdentity().decode(message, 5)


class ProcessNoise(Identity):
    """Draws its noise from the process (its pid), not from the key: runs depend on the rank layout."""

    def _encode_into(self, x, key, payload):
        noise = np.random.default_rng(os.getpid()).standard_normal(x.size)
        return super()._encode_into(x + 1e-3 * noise, key, payload)


@pytest.mark.mpi
def test_process_dependent_randomness_fails_check_rank_independent():
    config = {
        "data": {"workers": 4},
        "compressor": {"uplink": f"{__name__}:ProcessNoise"},  # importable by the ranks: they start in the repo root
        "run": {"rounds": 3},
    }
    with pytest.raises(AssertionError, match="the run on 1 and on 2 ranks differs"):
        check_rank_independent(config, ranks=(1, 2), timeout=300)
