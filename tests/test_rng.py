"""The counter-based generator: determinism, moments, independence of adjacent streams.

With N = 2^20 draws, the sample mean of U(0,1) has standard error sqrt(1/12/N) = 2.8e-4, the
sample variance of U has s.e. sqrt((1/80 - 1/144)/N) = 7.3e-5, and a sample correlation
between independent streams has s.e. 1/sqrt(N) = 9.8e-4; the tolerances are 5 s.e.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from mpicomp.rng import RandomKey, RoundKeys, key_states, random_below, random_uniform, root_seed

N = 2**20
Z = 5.0


def test_same_key_same_numbers_and_kernels_agree():
    key = RandomKey(11, 4, 2, 0)
    np.testing.assert_array_equal(key.uniform(1000), RandomKey(11, 4, 2, 0).uniform(1000))

    @njit
    def first_uniforms(state, n):
        return np.array([random_uniform(state, i) for i in range(n)])

    np.testing.assert_array_equal(first_uniforms(key.state, 1000), key.uniform(1000))


@pytest.mark.parametrize("worker", [0, 7, -1])
def test_uniform_moments(worker):
    u = RandomKey(1, 2, worker, 0).uniform(N)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < Z * np.sqrt(1 / 12 / N)
    assert abs(u.var() - 1 / 12) < Z * np.sqrt((1 / 80 - 1 / 144) / N)


def test_normal_moments():
    z = RandomKey(3, 0, 0, 1).normal(N)
    assert abs(z.mean()) < Z / np.sqrt(N)
    assert abs(z.var() - 1.0) < Z * np.sqrt(2 / N)
    assert abs(np.mean(z**4) - 3.0) < Z * np.sqrt(96 / N)  # Var(z^4) = 105 - 9 = 96


@pytest.mark.parametrize(
    "other",
    [RandomKey(5, 9, 3, 1), RandomKey(5, 9, 4, 0), RandomKey(5, 10, 3, 0), RandomKey(6, 9, 3, 0)],
    ids=["stream+1", "worker+1", "round+1", "seed+1"],
)
def test_adjacent_keys_are_uncorrelated(other):
    base = RandomKey(5, 9, 3, 0).uniform(N)
    assert abs(np.corrcoef(base, other.uniform(N))[0, 1]) < Z / np.sqrt(N)


def test_consecutive_draws_are_uncorrelated():
    u = RandomKey(8, 1, 1, 1).uniform(N)
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < Z / np.sqrt(N)


def test_random_below_is_uniform():
    """Chi-square goodness of fit over n = 10 cells: P(chi2_9 > 33.7) = 1e-4."""

    @njit
    def draws(state, n, cells):
        return np.array([random_below(state, i, cells) for i in range(n)])

    counts = np.bincount(draws(RandomKey(2).state, 100_000, 10), minlength=10)
    expected = 100_000 / 10
    assert counts.size == 10
    assert np.sum((counts - expected) ** 2 / expected) < 33.7


def test_keys_validate_and_seed_from_seedsequence():
    with pytest.raises(TypeError, match="RandomKey.round"):
        RandomKey(1, 2.5)
    assert root_seed(0) == root_seed(0) != root_seed(1)
    assert 0 <= root_seed(123) < 2**63


def test_small_samples_are_uniform_over_subsets():
    """Floyd's branch (size^2 <= 8m): m = 6, size = 3 has 20 subsets; P(chi2_19 > 43.8) = 1e-3."""
    counts: dict[tuple[int, ...], int] = {}
    for r in range(20_000):
        subset = RandomKey(4, r).sample(6, 3)
        assert len(set(subset)) == 3
        counts[tuple(sorted(subset))] = counts.get(tuple(sorted(subset)), 0) + 1
    assert len(counts) == 20
    observed = np.array(list(counts.values()))
    assert np.sum((observed - 1000) ** 2 / 1000) < 43.8


def test_large_samples_are_uniform_permutation_prefixes():
    """Fisher-Yates branch (size^2 > 8m): every position is uniform on range(m); P(chi2_39 > 72) = 1e-3."""
    first, last = np.zeros(40), np.zeros(40)
    for r in range(8000):
        sample = RandomKey(5, r).sample(40, 30)
        assert len(set(sample)) == 30
        first[sample[0]] += 1
        last[sample[-1]] += 1
    for counts in (first, last):
        assert np.sum((counts - 200) ** 2 / 200) < 72.0
    with pytest.raises(ValueError, match="cannot sample"):
        RandomKey(0).sample(3, 4)


@pytest.mark.parametrize("stream", [0, 2])
def test_round_keys_are_the_keys_one_by_one(stream):
    """``RoundKeys``' states (one kernel call), the states and fingerprints of its keys, and per-key samples are
    those of ``RandomKey`` built one by one, for ranges, lists with the master's id -1, slices, and both sampling branches (Floyd, Fisher-Yates)."""
    seed = root_seed(11)
    for workers in (range(3, 900, 7), [-1, 0, 5, 2**40]):
        keys = RoundKeys(seed, 17, workers, stream)
        one_by_one = [RandomKey(seed, 17, w, stream) for w in workers]
        assert keys.states.tolist() == [key.state for key in one_by_one]
        assert list(keys) == one_by_one and list(keys[1:3]) == one_by_one[1:3]
        seeded = [(key.state, key.fingerprint) for key in keys]  # taken from the round's arrays
        assert seeded == [(key.state, key.fingerprint) for key in one_by_one]
        assert all(type(state) is np.uint64 and type(print_) is int for state, print_ in seeded)
        assert key_states(one_by_one).tolist() == keys.states.tolist()
    keys = RoundKeys(seed, 4, range(400), stream)
    counts = np.arange(400) % 50 + 1  # sizes below, at and above the sample size
    for size in (5, 16):
        drawn = keys.sample_each(counts, size)
        for w in np.flatnonzero(counts > size):
            assert np.array_equal(drawn[w], RandomKey(seed, 4, int(w), stream).sample(int(counts[w]), size))


def test_round_keys_refuse_what_a_key_refuses():
    with pytest.raises(TypeError, match="worker ids must be integers"):
        _ = RoundKeys(1, 0, [0.5], 0).states
    with pytest.raises(TypeError, match="RandomKey.round"):
        RoundKeys(1, 1.0, range(3), 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one count per key"):
        RoundKeys(1, 0, range(3), 0).sample_each(np.ones(2, dtype=np.int64), 1)
