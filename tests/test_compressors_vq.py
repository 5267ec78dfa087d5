"""Vector quantizers: StoVoQ (biased and unbiased), HSQ (greedy and span) and cross-polytope.

Statistical checks use mpicomp.testing (chi2 / CLT tolerances, fixed seeds); predictions come from
the exact radial integrals of :mod:`mpicomp.compressors._radial`, which are themselves checked
against an independent NumPy Monte Carlo and against the talk's M^(-2/d) limit. Small codebooks
(P = 6..10) keep the many-draw tests fast; the defaults are checked on fewer draws.
"""

from __future__ import annotations

from itertools import pairwise
from math import gamma, pi

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mpicomp.compressors._codebook as codebook_module
from mpicomp.compressors import make
from mpicomp.compressors._buckets import write_codewords
from mpicomp.compressors._codebook import (
    best_codewords,
    gaussian_codebook,
    gaussian_codewords,
)
from mpicomp.compressors._radial import codebook_variance, radial_table
from mpicomp.compressors.cross_polytope import draw_vertices, largest_bucket_norm
from mpicomp.compressors.hsq import hsq_codewords, span_decomposition
from mpicomp.compressors.stovoq import radius_grid
from mpicomp.rng import RandomKey
from mpicomp.testing import (
    Z_TAIL,
    assert_mean_close,
    assert_omega,
    assert_unbiased,
    check_unbiased,
    check_variance,
    draws,
    fixed_vectors,
    mean_with_error,
)
from mpicomp.wire import MessageError, index_bits, pack_message, pack_uint, unpack_message, unpack_uint
from tests.runs import assert_same_metrics, run_inprocess, run_mpiexec

KEY = RandomKey(2024, 3, 1, 0)
SMALL_UNBIASED = ["stovoq(P=8,R=2,size=4)", "hsq(mode=span,P=6,R=4,size=4)", "cross-polytope(samples=3,size=5)"]
UNBIASED = [*SMALL_UNBIASED, "stovoq", "hsq(mode=span)", "cross-polytope"]
BIASED = ["stovoq(P=8,size=4,unbiased=False)", "stovoq(unbiased=False)", "hsq", "hsq(P=6,R=4,size=4)"]
EVERY = UNBIASED + BIASED


def squared_errors(samples: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.sum((samples - x) ** 2, axis=1)


# ---------------------------------------------------------------- the radial table


@pytest.mark.parametrize("rho", [0.0, 0.7, 2.0, 6.0, 40.0])
def test_radial_table_matches_an_independent_monte_carlo(rho: float) -> None:
    """r_M and e_M of the table against plain NumPy nearest-codeword search over 20,000 codebooks."""
    d, bits, n = 3, 5, 20_000
    rng = np.random.default_rng(int(10 * rho))
    codebooks = rng.standard_normal((n, 2**bits, d)) * np.sqrt(codebook_variance(d))
    b = np.zeros(d)
    b[0] = rho
    nearest = codebooks[np.arange(n), np.argmin(np.sum((codebooks - b) ** 2, axis=2), axis=1)]
    table = radial_table(d, bits)
    assert_mean_close(np.sum(nearest**2, axis=1), float(table.second_moment(rho)), f"e_M({rho})")
    if rho > 0:
        assert_mean_close(nearest[:, 0] / rho, float(table.bias(rho)), f"r_M({rho})")
    assert_mean_close(np.sum((nearest - b) ** 2, axis=1), float(table.distortion(rho)), f"distortion({rho})")


def test_table_distortion_follows_the_m_to_the_minus_2_over_d_law() -> None:
    """The talk's theorem: ``M^(2/d) E||VQ(x) - x||^2 -> C_d p(x)^(-2/d)``, C_d = Gamma(1+2/d) Gamma(1+d/2)^(2/d) / pi.

    At d = 4 the relative gap to the limit must shrink with M (about 4x per 4 more index bits,
    the next order M^(-2/d)) and be below 1% at M = 2^16.
    """
    d = 4
    rho = np.sqrt(d)
    a2 = codebook_variance(d)
    limit = gamma(1 + 2 / d) * gamma(1 + d / 2) ** (2 / d) / pi * 2 * pi * a2 * np.exp(rho**2 / (d * a2))
    gaps = [float(radial_table(d, bits).distortion(rho)) * 2 ** (2 * bits / d) / limit - 1 for bits in (4, 8, 12, 16)]
    assert all(3 < before / after < 5 for before, after in pairwise(gaps)), gaps
    assert 0 < gaps[-1] < 0.01


@pytest.mark.parametrize("bits", [4, 8, 12])
def test_measured_distortion_scales_with_the_codebook_size(bits: int) -> None:
    """Biased StoVoQ on one bucket (D = size = 4, so every bucket has norm 2): E||C(x) - x||^2 is the
    table's distortion at rho = 2, which falls as M^(-2/d) = 2^(-bits/2) (previous test)."""
    compressor = make(f"stovoq(P={bits},size=4,unbiased=False)")
    x = np.array([1.5, -0.5, 2.0, 0.25])
    scale = float(x @ x) / x.size  # ||x||^2 / D: the bucket is x sqrt(D) / ||x||
    errors = squared_errors(draws(compressor, x, 1500), x)
    assert_mean_close(errors, scale * float(radial_table(4, bits).distortion(2.0)), f"distortion at P={bits}")


# ---------------------------------------------------------------- statistics


@pytest.mark.parametrize("spec", SMALL_UNBIASED)
@pytest.mark.parametrize("vector", list(fixed_vectors(8)))
def test_unbiased_and_omega(spec: str, vector: str) -> None:
    compressor = make(spec)
    x = {vector: fixed_vectors(300)[vector]}
    check_variance(compressor, x=x, samples=check_unbiased(compressor, x=x, n_draws=400))


@pytest.mark.parametrize("spec", ["stovoq", "hsq(mode=span)", "cross-polytope"])
@pytest.mark.parametrize(("d", "vector"), [(16, "dense"), (7, "heavy-tailed"), (300, "sparse")])
def test_defaults_unbiased_and_omega(spec: str, d: int, vector: str) -> None:
    compressor = make(spec)
    x = fixed_vectors(d)[vector]
    samples = draws(compressor, x, 300)
    assert_unbiased(samples, x)
    assert_omega(compressor, samples, x)


def stovoq_prediction(compressor, x: np.ndarray) -> tuple[np.ndarray, float]:
    """(E C(x), E||C(x) - x||^2) of StoVoQ from the table: per bucket ``r b`` (biased) or b, and
    ``rho^2 - 2 rho^2 r + e`` (biased) or ``E[o^2] e - rho^2`` with the message's radius grid."""
    d, size = x.size, compressor.size
    norm = np.linalg.norm(x)
    buckets = np.zeros((-(-d // size), size))
    buckets.reshape(-1)[:d] = x / norm * np.sqrt(d)
    rho = np.linalg.norm(buckets, axis=1)
    table = radial_table(size, compressor.P)
    if not compressor.unbiased:
        mean = (table.bias(rho)[:, None] * buckets).reshape(-1)[:d] * norm / np.sqrt(d)
        return mean, float(table.distortion(rho).sum()) * norm**2 / d
    y = 1.0 / table.bias(rho)
    grid = radius_grid(y.min(), y.max(), 2**compressor.R)
    j = np.clip(np.searchsorted(grid, y, side="right") - 1, 0, max(0, grid.size - 2))
    upper = grid[np.minimum(j + 1, grid.size - 1)]
    second = y * y + (upper - y) * (y - grid[j])
    return x, float((second * table.second_moment(rho) - rho**2).sum()) * norm**2 / d


@pytest.mark.parametrize(
    ("spec", "d", "n"),
    [
        ("stovoq", 16, 400),
        ("stovoq(P=8,R=2,size=4)", 4, 3000),
        ("stovoq(P=8,R=2,size=4)", 300, 1500),
        ("stovoq(P=10,R=3)", 1008, 300),
    ],
)
def test_stovoq_unbiased_variance_is_the_tables(spec: str, d: int, n: int) -> None:
    """E||C(x) - x||^2 equals its exact value, with the radius rounding of the message's own grid."""
    compressor = make(spec)
    x = fixed_vectors(d, seed=3)["heavy-tailed"]
    _, expected = stovoq_prediction(compressor, x)
    assert_mean_close(squared_errors(draws(compressor, x, n), x), expected, spec)


@pytest.mark.parametrize(
    ("spec", "d", "n"), [("stovoq(unbiased=False)", 16, 500), ("stovoq(P=8,size=4,unbiased=False)", 300, 1500)]
)
def test_biased_stovoq_is_directionally_unbiased(spec: str, d: int, n: int) -> None:
    """E C(x) restricted to bucket l is r_M(rho_l) times it: colinear, with the table's radial factor."""
    compressor = make(spec)
    x = fixed_vectors(d, seed=4)["heavy-tailed"]
    mean, expected = stovoq_prediction(compressor, x)
    samples = draws(compressor, x, n)
    assert_unbiased(samples, mean)
    assert_mean_close(squared_errors(samples, x), expected, spec)
    assert np.linalg.norm(samples.mean(axis=0) - x) > 0.1 * np.linalg.norm(x)  # the bias is real


@pytest.mark.parametrize("spec", SMALL_UNBIASED)
def test_unbiased_distortion_falls_as_one_over_k(spec: str) -> None:
    """K workers compressing the same x independently: E||x - (1/K) sum_k C_k(x)||^2 = E||C(x) - x||^2 / K."""
    compressor, k = make(spec), 20
    x = fixed_vectors(40, seed=5)["dense"]
    samples = draws(compressor, x, 8000)
    single = squared_errors(samples, x)
    averaged = squared_errors(samples.reshape(-1, k, x.size).mean(axis=1), x)
    (m1, e1), (mk, ek) = mean_with_error(single), mean_with_error(averaged)
    assert abs(k * mk - m1) <= Z_TAIL * np.hypot(k * ek, e1), (
        f"K = 1: {m1:.4g}, K = {k}: {mk:.4g} (x {k} = {k * mk:.4g})"
    )


def test_greedy_hsq_does_not_average_out() -> None:
    """HSQ's codebook is fixed, so greedy HSQ's error is the same for every worker: K = 20 gains nothing
    beyond the magnitude rounding (one bucket: none at all)."""
    compressor = make("hsq")
    x = fixed_vectors(16, seed=6)["dense"]
    samples = draws(compressor, x, 40)
    np.testing.assert_array_equal(samples, np.broadcast_to(samples[0], samples.shape))


def test_cross_polytope_variance_is_exact() -> None:
    """E||Q(x) - x||^2 = (D nu^2 - ||x||^2) / samples, nu the largest bucket norm."""
    compressor = make("cross-polytope(samples=3,size=5)")
    x = fixed_vectors(23, seed=8)["heavy-tailed"]
    nu = max(np.linalg.norm(x[i : i + 5]) for i in range(0, 23, 5))
    assert_mean_close(squared_errors(draws(compressor, x, 4000), x), (23 * nu**2 - x @ x) / 3, "cross-polytope")


def reference_vertices(x: np.ndarray, size: int, samples: int, key: RandomKey) -> np.ndarray:
    """The draw rule of cross_polytope.draw_vertices, bucket by bucket in plain Python (same float64
    operations in the same order): the codes the lane kernel must reproduce bit for bit."""
    nu_scaled, pre = largest_bucket_norm(x, size)
    shift = index_bits(size)
    uniforms = key.uniform(-(-x.size // size) * samples)
    codes = []
    for row, lo in enumerate(range(0, x.size, size)):
        bucket = x[lo : lo + size].astype(np.float64)
        n, total, running = bucket.size, 0.0, []
        for value in bucket:
            total += abs(value) * pre
            running.append(total)
        radius = np.sqrt(float(n)) * nu_scaled
        mass = total / radius
        for u in uniforms[row * samples : (row + 1) * samples]:
            if u < mass:
                inside = min(sum(r <= u * radius for r in running), n - 1)
                codes.append(inside | int(bucket[inside] < 0.0) << shift)
            else:
                spread = min(int((u - mass) * 2.0 * n / (1.0 - mass)), 2 * n - 1)
                codes.append(spread >> 1 | (spread & 1) << shift)
    return np.array(codes)


@pytest.mark.parametrize(
    ("d", "size", "samples", "dtype"),
    [
        (1000, 16, 2, np.float64),
        (1003, 16, 3, np.float32),
        (261, 7, 1, np.float64),
        (112, 7, 2, np.float64),  # one tile of 16 buckets whose last block of 8 reads past x: the padded copy
        (530, 33, 2, np.float32),
        (9, 16, 4, np.float64),
        (300, 1, 2, np.float64),
        (2048, 64, 5, np.float64),
    ],
)
def test_cross_polytope_vertices_match_the_scalar_rule(d: int, size: int, samples: int, dtype: type) -> None:
    """Tiles of 16 buckets in lanes, blocks of 8 coordinates, a padded tile, the last buckets one by one,
    short buckets, float32, odd samples."""
    x = fixed_vectors(d, seed=3)["heavy-tailed"].astype(dtype)
    x[::9] = 0.0
    nu, codes = draw_vertices(x, size, samples, KEY.state)
    np.testing.assert_array_equal(codes, reference_vertices(x, size, samples, KEY))
    assert nu == pytest.approx(max(np.linalg.norm(x[i : i + size].astype(np.float64)) for i in range(0, d, size)))


def test_hsq_span_decomposes_and_kappa_bounds_the_l1_norm() -> None:
    decompose, kappa = span_decomposition(16, 10)
    directions = hsq_codewords(16, 10)[:512]
    b = np.random.default_rng(9).standard_normal((500, 16))
    p = b @ decompose
    np.testing.assert_allclose(p @ directions, b, atol=1e-10)
    ratio = np.sum(np.abs(p), axis=1) ** 2 / np.sum(b * b, axis=1)
    assert ratio.max() <= kappa and 8 < ratio.mean() < 12  # ||p||_1^2 ~ (16 E|cos|)^2 ||b||^2 ~ 10 ||b||^2


def test_hsq_span_draws_the_first_direction_past_u_times_the_l1_norm() -> None:
    """The batched running sums and binary search pick what a plain scan in index order picks: the
    first j whose running sum of |p| exceeds ``u ||p||_1`` (the last one if none), signed."""
    from mpicomp.compressors.hsq import _draw_directions

    rng = np.random.default_rng(4)
    p = rng.standard_normal((103, 64)) * rng.exponential(size=(103, 64))  # 103 rows: a partial batch of 4
    p[5] = 0.0
    uniforms = rng.uniform(size=103)
    uniforms[7] = np.nextafter(1.0, 0.0)
    index, l1 = np.empty(103, dtype=np.int64), np.empty(103)
    _draw_directions(p, uniforms, index, l1)
    for row in range(103):
        running = np.cumsum(np.abs(p[row]))
        past = np.flatnonzero(running[:-1] > uniforms[row] * running[-1])
        j = past[0] if past.size else 63
        assert (index[row], l1[row]) == (j + 64 * (p[row, j] < 0), running[-1])


def test_greedy_hsq_picks_the_best_codeword() -> None:
    words = hsq_codewords(16, 10)
    b = np.random.default_rng(10).standard_normal((300, 16))
    chosen = best_codewords(b, words)
    exact = np.max(b @ words.T, axis=1)
    np.testing.assert_allclose(np.einsum("lk,lk->l", b, words[chosen]), exact, rtol=1e-5)


# ---------------------------------------------------------------- codebooks and the search


def test_codebook_comes_from_the_key_and_decoding_regenerates_its_rows() -> None:
    book = gaussian_codebook(KEY.state, 64, 5, 2.0)
    np.testing.assert_array_equal(book.reshape(-1), 2.0 * KEY.normal(64 * 5))
    rows = np.array([63, 0, 17, 17])
    np.testing.assert_array_equal(gaussian_codewords(KEY.state, rows, 5, 2.0), book[rows])


def test_tiles_and_threads_do_not_change_the_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many small tiles, one or several threads: the same codewords, each the nearest up to float32 rounding."""
    buckets = np.random.default_rng(11).standard_normal((700, 16)) * 1.3
    book = gaussian_codebook(KEY.state, 2**10, 16, np.sqrt(codebook_variance(16)))
    offsets = -0.5 * np.sum(book**2, axis=1)
    reference = best_codewords(buckets, book, offsets)
    distances = np.sum((buckets[:, None, :] - book[None]) ** 2, axis=2)
    np.testing.assert_allclose(distances[np.arange(700), reference], distances.min(axis=1), rtol=1e-5)
    monkeypatch.setattr(codebook_module, "TILE_SCORES", 3 * 2**10)
    for threads in (1, 2):
        monkeypatch.setattr(codebook_module.numba, "get_num_threads", lambda t=threads: t)
        np.testing.assert_array_equal(best_codewords(buckets, book, offsets), reference)


def test_same_key_same_bytes_and_the_codebook_is_fresh_per_key() -> None:
    compressor = make("stovoq")
    x = fixed_vectors(64)["dense"]
    assert compressor.encode(x, KEY) == compressor.encode(x.copy(), RandomKey(2024, 3, 1, 0))
    other = RandomKey(2024, 4, 1, 0)
    first, second = (
        compressor.decode(compressor.encode(x, KEY), 64, KEY),
        compressor.decode(compressor.encode(x, other), 64, other),
    )
    assert not np.array_equal(first, second)
    with pytest.raises((MessageError, ValueError)):  # the codebook is the key's: no key, or another key, cannot decode
        compressor.decode(compressor.encode(x, KEY), 64)
    with pytest.raises(MessageError):
        compressor.decode(compressor.encode(x, KEY), 64, other)


@pytest.mark.parametrize("spec", ["hsq", "hsq(mode=span)", "cross-polytope"])
def test_fixed_codebooks_decode_without_the_key(spec: str) -> None:
    compressor = make(spec)
    x = fixed_vectors(50)["dense"]
    message = compressor.encode(x, KEY)
    np.testing.assert_array_equal(compressor.decode(message, 50), compressor.decode(message, 50, KEY))


# ---------------------------------------------------------------- sizes and edge cases


@pytest.mark.parametrize("spec", EVERY)
@pytest.mark.parametrize("d", [1, 5, 16, 17, 1001])
def test_bytes_on_the_wire_are_the_documented_bits(spec: str, d: int) -> None:
    """Header and scalars, then ceil(expected_bits / 8) payload bytes: codebooks cost nothing."""
    compressor = make(spec)
    message = compressor.encode(fixed_vectors(d)["dense"], KEY)
    assert len(unpack_message(message).payload) == -(-int(compressor.expected_bits(d)) // 8)
    assert 8 * len(message) == compressor.header_bits() + 8 * -(-int(compressor.expected_bits(d)) // 8)


def test_expected_bits_formulas() -> None:
    assert make("stovoq").expected_bits(1000) == 63 * 16
    assert make("stovoq(unbiased=False)").expected_bits(1000) == 63 * 13
    assert make("hsq(mode=span)").expected_bits(32) == 2 * 16
    assert make("cross-polytope").expected_bits(32) == 2 * 2 * 5
    assert make("cross-polytope(samples=1,size=5)").expected_bits(6) == 2 * 4


@pytest.mark.parametrize("spec", EVERY)
def test_zero_float32_huge_and_tiny_vectors(spec: str) -> None:
    compressor = make(spec)
    for d in (1, 40):
        for dtype in (np.float32, np.float64):
            zero = compressor.decode(compressor.encode(np.zeros(d, dtype=dtype), KEY), d, KEY)
            assert zero.dtype == np.float64 and not zero.any()
    for name in ("huge", "tiny"):
        x = fixed_vectors(100)[name]
        decoded = compressor.decode(compressor.encode(x, KEY), 100, KEY)
        assert np.isfinite(decoded).all() and 0.05 < np.linalg.norm(decoded) / np.linalg.norm(x) < 20
    decoded = compressor.decode(compressor.encode(fixed_vectors(64)["dense"].astype(np.float32), KEY), 64, KEY)
    assert decoded.dtype == np.float64 and np.isfinite(decoded).all()


@pytest.mark.parametrize("spec", ["stovoq", "hsq", "cross-polytope"])
def test_non_finite_and_overflowing_input_is_refused(spec: str) -> None:
    compressor = make(spec)
    x = np.ones(10)
    x[4] = np.nan
    with pytest.raises(ValueError, match=r"x\[4\]"):
        compressor.encode(x, KEY)
    with pytest.raises(ValueError, match="overflows"):
        compressor.encode(np.full(10, 1e308), KEY)


def test_option_values_and_omega() -> None:
    unbiased, biased = make("stovoq"), make("stovoq(unbiased=False)")
    assert unbiased.omega(16) == pytest.approx(
        float(1 / radial_table(16, 13).bias(4.0) ** 2 * radial_table(16, 13).second_moment(4.0)) / 16 - 1
    )
    assert unbiased.omega(16) < unbiased.omega(1000) < unbiased.omega(2**20) < 2
    assert biased.alpha(16) == pytest.approx(1 - float(radial_table(16, 13).distortion(4.0)) / 16)
    assert biased.alpha(2**20) is None and biased.omega(16) is None and unbiased.alpha(16) is None
    assert make("cross-polytope").omega(100) == pytest.approx(99 / 2)
    assert make("hsq").omega(100) is None and make("hsq").alpha(100) is None


# ---------------------------------------------------------------- decoding


def decoded_by_the_rule(compressor, message: bytes, key: RandomKey) -> np.ndarray:
    """The vector a message stands for, by each codec's decoding rule in NumPy: bucket l's codeword
    (StoVoQ: row ``i_l`` of the key's codebook times its radius ``o_{k_l}``, then ``||x|| / sqrt(D)``; HSQ:
    ``u_{i_l} T k_l / (2^R - 1)``) or its vertices' mean (cross-polytope), the buckets cut at d."""
    parsed = unpack_message(message)
    d, name = parsed.d, compressor.name
    n_buckets = -(-d // compressor.size)
    if name == "cross-polytope":
        codes = unpack_uint(parsed.payload, n_buckets * compressor.samples, compressor.code_bits).astype(np.int64)
        codes = codes.reshape(n_buckets, compressor.samples)
        shift = index_bits(compressor.size)
        lengths = np.minimum(compressor.size, d - compressor.size * np.arange(n_buckets))
        step = np.sqrt(lengths) * parsed.scalars[0] / compressor.samples
        rows = np.zeros((n_buckets, compressor.size))
        np.add.at(
            rows,
            (np.arange(n_buckets)[:, None], codes & ((1 << shift) - 1)),
            np.where(codes >> shift, -1.0, 1.0) * step[:, None],
        )
        return rows.reshape(-1)[:d]
    codes = unpack_uint(parsed.payload, n_buckets, compressor.code_bits).astype(np.int64)
    index, level = codes & (2**compressor.P - 1), codes >> compressor.P
    if name == "hsq":
        words = hsq_codewords(compressor.size, compressor.P)[index]
        return (words * (parsed.scalars[0] * (level / (2**compressor.R - 1)))[:, None]).reshape(-1)[:d]
    words = gaussian_codewords(key.state, index, compressor.size, compressor.scale)
    if compressor.unbiased:
        words *= radius_grid(parsed.scalars[1], parsed.scalars[2], 2**compressor.R)[level][:, None]
    return words.reshape(-1)[:d] * (parsed.scalars[0] / np.sqrt(d))


@pytest.mark.parametrize("spec", [*EVERY, "stovoq(P=4,R=2,size=4)", "stovoq(P=4,size=4,unbiased=False)"])
@pytest.mark.parametrize("d", [1, 17, 1001])
def test_decode_and_decode_add_are_the_decoding_rule_bit_for_bit(spec: str, d: int) -> None:
    """The fused decode kernels (one pass, no bucket array; StoVoQ's words from the whole codebook when
    the buckets outnumber them, as for P = 4 here) give the rule's bits: decode, decode_add and
    the scaled add ``total + scale C(x)``, signed zeros included."""
    compressor = make(spec)
    x = np.random.default_rng(d).standard_normal(d)
    message = compressor.encode(x, KEY)
    expected = decoded_by_the_rule(compressor, message, KEY)
    total = np.random.default_rng(1).standard_normal(d)
    total[::3] = -0.0
    for got, want in [
        (compressor.decode(message, d, KEY), expected),
        (compressor.decode_add(message, total.copy(), KEY), total + expected),
        (compressor.decode_add(message, total.copy(), KEY, scale=-0.3), total + expected * -0.3),
    ]:
        np.testing.assert_array_equal(got.view(np.uint64), want.view(np.uint64))


def test_the_overflow_check_sees_exactly_the_decoded_values() -> None:
    """``write_codewords`` flags a bucket whose largest entry overflows, and not the padding of a cut
    last bucket (which is dropped)."""
    words, factors = np.array([[1.0, 1e300], [1.0, 2.0]]), np.array([1e10])
    out = np.empty(3)
    assert not write_codewords(words, np.array([0, 1], dtype=np.uint32), 1, factors, 1.0, out, False, 1.0)
    assert write_codewords(words, np.array([1, 0], dtype=np.uint32), 1, factors, 1.0, out, False, 1.0)
    np.testing.assert_array_equal(out, [1e10, 2e10, 1e10])


# ---------------------------------------------------------------- validation


def reframe(message: bytes, scalars=None, payload=None) -> bytes:
    """The message with its scalars or payload replaced, framed again with a valid CRC (and its key fingerprint)."""
    parsed = unpack_message(message)
    return pack_message(
        parsed.codec,
        parsed.d,
        parsed.scalars if scalars is None else scalars,
        bytes(parsed.payload) if payload is None else payload,
        key_fingerprint=parsed.key_fingerprint,
    )


def codes_message(compressor, d: int, codes: np.ndarray, scalars: tuple[float, ...]) -> bytes:
    """A well-framed message (with the key's fingerprint when the codec uses the key) carrying raw codes."""
    payload = pack_uint(np.asarray(codes), compressor.code_bits).tobytes()
    fingerprint = KEY.fingerprint if compressor.uses_shared_key else None
    return pack_message(compressor.codec_id, d, scalars, payload, key_fingerprint=fingerprint)


@pytest.mark.parametrize("spec", EVERY)
def test_payload_length_padding_and_scalar_count_checked(spec: str) -> None:
    compressor = make(spec)
    d = 21
    message = compressor.encode(fixed_vectors(d)["dense"], KEY)
    payload = bytes(unpack_message(message).payload)
    for bad in (payload[:-1], payload + b"\0", b""):
        with pytest.raises(MessageError, match="payload of"):
            compressor.decode(reframe(message, payload=bad), d, KEY)
    if 8 * len(payload) > compressor.expected_bits(d):  # a last byte with padding bits (not for 16-bit codes)
        padded = bytearray(payload)
        padded[-1] |= 0x80
        with pytest.raises(MessageError, match="padding"):
            compressor.decode(reframe(message, payload=bytes(padded)), d, KEY)
    with pytest.raises(MessageError, match="scalars"):
        compressor.decode(reframe(message, scalars=(1.0,) * (compressor.n_scalars + 1)), d, KEY)


@pytest.mark.parametrize("spec", EVERY)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -1.0])
def test_invalid_norm_scalar(spec: str, bad: float) -> None:
    compressor = make(spec)
    message = compressor.encode(fixed_vectors(20)["dense"], KEY)
    scalars = unpack_message(message).scalars
    with pytest.raises(MessageError):
        compressor.decode(reframe(message, scalars=(bad, *scalars[1:])), 20, KEY)


@pytest.mark.parametrize("spec", EVERY)
def test_nonzero_codes_with_zero_norm_rejected(spec: str) -> None:
    compressor = make(spec)
    message = compressor.encode(fixed_vectors(20)["dense"], KEY)
    scalars = unpack_message(message).scalars
    with pytest.raises(MessageError, match="nonzero codes"):
        compressor.decode(reframe(message, scalars=(0.0, *scalars[1:])), 20, KEY)


@pytest.mark.parametrize(("spec", "scalars"), [("stovoq", (1e300, 1e10, 1e10)), ("cross-polytope", (1.7e308,))])
def test_overflowing_scalars_rejected(spec: str, scalars: tuple[float, ...]) -> None:
    compressor = make(spec)
    message = compressor.encode(fixed_vectors(20)["dense"], KEY)
    with pytest.raises(MessageError, match="overflow"):
        compressor.decode(reframe(message, scalars=scalars), 20, KEY)


def test_hsq_cannot_overflow() -> None:
    """Unit codewords times a level at most 1: every decoded value is at most the scalar."""
    compressor = make("hsq")
    message = compressor.encode(fixed_vectors(20)["dense"], KEY)
    decoded = compressor.decode(reframe(message, scalars=(np.finfo(np.float64).max,)), 20)
    assert np.isfinite(decoded).all()


@pytest.mark.parametrize("spec", EVERY)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_random_payloads_decode_or_raise(spec: str, data: st.DataObject) -> None:
    """Arbitrary payload bytes of the right length, framed with the key's fingerprint and arbitrary
    finite scalars: a finite float64 vector of the right size or MessageError, never a crash."""
    compressor = make(spec)
    d = data.draw(st.integers(1, 200))
    size = len(unpack_message(compressor.encode(np.ones(d), KEY)).payload)
    payload = data.draw(st.binary(min_size=size, max_size=size))
    scalars = tuple(data.draw(st.floats(0.0, 1e6)) for _ in range(compressor.n_scalars))
    fingerprint = KEY.fingerprint if compressor.uses_shared_key else None
    message = pack_message(compressor.codec_id, d, scalars, payload, key_fingerprint=fingerprint)
    try:
        decoded = compressor.decode(message, d, KEY)
    except MessageError:
        return
    assert decoded.dtype == np.float64 and decoded.shape == (d,) and np.isfinite(decoded).all()


@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0), (1.0, np.inf), (np.nan, 1.0)])
def test_stovoq_radius_scalars_checked(low: float, high: float) -> None:
    compressor = make("stovoq")
    message = compressor.encode(fixed_vectors(40)["dense"], KEY)
    norm = unpack_message(message).scalars[0]
    with pytest.raises(MessageError, match="radius"):
        compressor.decode(reframe(message, scalars=(norm, low, high)), 40, KEY)


def test_cross_polytope_index_beyond_a_short_bucket_is_rejected() -> None:
    compressor = make("cross-polytope(samples=1,size=8)")  # d = 11: buckets of 8 and 3 coordinates
    codes = np.array([7, 2])
    np.testing.assert_allclose(
        compressor.decode(codes_message(compressor, 11, codes, (1.0,)), 11)[[7, 10]], [np.sqrt(8), np.sqrt(3)]
    )
    with pytest.raises(MessageError, match="beyond"):
        compressor.decode(codes_message(compressor, 11, np.array([7, 3]), (1.0,)), 11)


def test_stovoq_decodes_codes_to_the_keys_codewords() -> None:
    """Codeword i of bucket l is row i of the key's codebook, times o_k and ||x|| / sqrt(D)."""
    compressor = make("stovoq(P=4,R=1,size=2)")
    codes = np.array([3 | 1 << 4, 15])
    decoded = compressor.decode(codes_message(compressor, 4, codes, (2.0, 1.0, 4.0)), 4, KEY)
    book = gaussian_codebook(KEY.state, 16, 2, np.sqrt(codebook_variance(2)))
    np.testing.assert_allclose(decoded, np.concatenate((4.0 * book[3], 1.0 * book[15])) * 2.0 / 2.0)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("stovoq(P=0)", "P .codeword index bits."),
        ("stovoq(P=17)", "P .codeword index bits."),
        ("stovoq(R=0)", "R .radius bits"),
        ("stovoq(R=9)", "R .radius bits"),
        ("stovoq(R=3,unbiased=False)", "R must be 0"),
        ("stovoq(size=1)", "size"),
        ("stovoq(unbiased=1)", "unbiased must be"),
        ("stovoq(P=2.5)", "P .codeword index bits."),
        ("hsq(mode=best)", "mode must be one of greedy, span"),
        ("hsq(mode=span,P=4,size=16)", "span needs"),
        ("hsq(R=0)", "R .magnitude bits."),
        ("cross-polytope(samples=0)", "samples"),
        ("cross-polytope(size=True)", "size"),
        ("cross-polytope(k=2)", "valid parameters: samples, size"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(spec)


def test_specs_round_trip() -> None:
    for spec in EVERY:
        compressor = make(spec)
        assert make(compressor.spec) == compressor
    assert make("stovoq").spec == "stovoq(P=13,R=3,size=16)"
    assert make("stovoq(unbiased=False)").spec == "stovoq(P=13,R=0,size=16,unbiased=False)"


# ---------------------------------------------------------------- DoStoVoQ-SGD


@pytest.mark.mpi
def test_dostovoq_sgd_runs_counts_the_documented_bytes_and_is_rank_independent(tmp_path) -> None:
    """quantized-sgd with StoVoQ both ways (DoStoVoQ-SGD, downlink compressed too) decreases the loss,
    every upload is exactly one StoVoQ message of the documented size, and two MPI ranks write the
    same metrics as one process (the search's tiles and threads do not change a codeword)."""
    raw = {
        "problem": {"name": "logistic", "dataset": "sklearn:breast_cancer", "l2": 1e-2},
        "data": {"workers": 4, "batch": 0},
        "method": {"name": "quantized-sgd"},
        "compressor": {"uplink": "stovoq(P=10)", "downlink": "stovoq(P=10)"},
        "run": {"rounds": 30, "seed": 0},
    }
    results = run_inprocess(raw, tmp_path / "dostovoq.h5")
    loss = results.metrics["loss"]
    assert loss[-1] < 0.8 * loss[0]
    compressor = make("stovoq(P=10)")
    compressor.crc = False  # as in the run: [compressor] checksum is off by default
    uploads = 4 * results.metrics["round"][-1]
    assert results.metrics["up_payload_bytes"][-1] == uploads * -(
        -int(compressor.expected_bits(results.final_x.size)) // 8
    )
    assert results.metrics["up_header_bytes"][-1] == uploads * compressor.header_bits() // 8
    assert_same_metrics(results, run_mpiexec(raw, tmp_path / "dostovoq_n2.h5", 2))
