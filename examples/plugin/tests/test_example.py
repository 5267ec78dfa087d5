"""The example plugin checked with mpicomp.testing: the codec's claims, wrong variants, and runs.

Run after ``pip install ./examples/plugin`` (the entry points must be installed):
``pytest examples/plugin/tests``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from mpicomp_example.codecs import CoinFlip
from mpicomp_example.methods import HeavyBall

from mpicomp.compressors import make
from mpicomp.methods import method_class
from mpicomp.testing import check_rank_independent, check_unbiased, check_variance, check_wire

D = 50
DRAWS = 1000  # a 20% bias gives E T = 1 + DRAWS 0.2^2 / (0.8^2 omega) = 63.5 at p = 1/2, threshold 20


class BiasedCoinFlip(CoinFlip):
    """Wrong: claims unbiased, but compresses 0.8 x."""

    def _encode(self, x, key):
        return super()._encode(0.8 * x, key)


class OptimisticCoinFlip(CoinFlip):
    """Wrong: declares half its omega."""

    def omega(self, d):
        return 0.5 * super().omega(d)


class ThriftyCoinFlip(CoinFlip):
    """Wrong: counts the kept values as float32 while sending float64."""

    def expected_bits(self, d):
        return d + 32 * self.p * d


class CarelessCoinFlip(CoinFlip):
    """Wrong: decodes the mask and the values it needs, and ignores any bytes after them."""

    def _decode(self, msg, key):
        mask = -(-msg.d // 8)
        kept = int(np.unpackbits(np.frombuffer(msg.payload[:mask], np.uint8), bitorder="little")[: msg.d].sum())
        return super()._decode(dataclasses.replace(msg, payload=msg.payload[: mask + 8 * kept]), key)


@pytest.mark.parametrize("p", [0.5, 0.1])
def test_coinflip_keeps_its_promises(p):
    codec = CoinFlip(p)
    check_variance(codec, D, samples=check_unbiased(codec, D, n_draws=DRAWS))
    check_wire(codec, 200)


@pytest.mark.parametrize(
    ("wrong", "check", "message"),
    [
        (BiasedCoinFlip(0.5), lambda c: check_unbiased(c, D, n_draws=DRAWS), "bias detected"),
        (OptimisticCoinFlip(0.5), lambda c: check_variance(c, D, n_draws=DRAWS), "exceeds bound"),
        (ThriftyCoinFlip(0.5), lambda c: check_wire(c, 200), "mean payload"),
        (CarelessCoinFlip(0.5), lambda c: check_wire(c, 200), "payload one byte long"),
    ],
)
def test_wrong_variants_fail_the_matching_check(wrong, check, message):
    with pytest.raises(AssertionError, match=message):
        check(wrong)


def test_entry_points_name_the_classes():
    assert type(make("coinflip(p=0.25)")) is CoinFlip
    assert make("coinflip(p=0.25)") == make("mpicomp_example.codecs:CoinFlip(p=0.25)")
    assert method_class("heavy-ball") is HeavyBall


@pytest.mark.mpi
@pytest.mark.parametrize("uplink", ["coinflip(p=0.5)", "mpicomp_example.codecs:CoinFlip(p=0.5)"])
def test_runs_are_rank_independent(uplink):
    """By entry point and by module:Class: mpiexec -n 1 and -n 2 write identical metrics."""
    check_rank_independent(
        {
            "problem": {"name": "logistic", "dataset": "sklearn:breast_cancer"},
            "data": {"workers": 4},
            "method": {"name": "heavy-ball", "momentum": 0.5},
            "compressor": {"uplink": uplink},
            "run": {"rounds": 10},
        },
        ranks=(1, 2),
        timeout=300,
    )
