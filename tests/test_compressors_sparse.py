"""Rand-K, Top-K, QSGD, TernGrad, scaled sign and compositions: statistics, sizes, validation."""

from __future__ import annotations

import numpy as np
import pytest

from mpicomp.compressors import make
from mpicomp.compressors.compose import outer_key
from mpicomp.compressors.qsgd import gaussian_stream_bits
from mpicomp.compressors.registry import available
from mpicomp.compressors.sparse import random_k_indices
from mpicomp.rng import RandomKey
from mpicomp.testing import (
    assert_mean_close,
    assert_omega,
    assert_unbiased,
    check_contractive,
    check_unbiased,
    check_variance,
    draws,
    fixed_vectors,
)
from mpicomp.wire import (
    MessageError,
    index_bits,
    pack_message,
    pack_uint,
    unpack_message,
)
from mpicomp.wire.elias import elias_code_bits, encode_elias

# d = 1 with k > 1 is a deliberate edge case: the "k exceeds d" warning is expected there.
pytestmark = pytest.mark.filterwarnings("ignore:.* exceeds d = 1; all 1 coordinates are kept:UserWarning")
KEY = RandomKey(2024, 3, 1, 0)
UNBIASED = [
    "randk(k=0.3)",
    "randk(k=2,send_indices=True)",
    "qsgd(s=1)",
    "qsgd(s=4,code=gamma)",
    "terngrad",
    "identity∘randk(k=0.25)",
    "qsgd(s=2)∘randk(k=0.4)",
]
CONTRACTIVE = ["topk(k=0.1)", "topk(k=3,dtype=float32)", "sign", "sign∘topk(k=0.2)", "qsgd(s=16)∘topk(k=0.1)"]
EVERY_SPEC = UNBIASED + CONTRACTIVE + ["randk(k=0.1,dtype=float32)", "topk(k=0.5)∘randk(k=0.5)"]


def payload_bits(compressor, message: bytes) -> int:
    return 8 * len(unpack_message(message).payload)


def cases(dims: tuple[int, ...], names: tuple[str, ...] | None = None) -> list[tuple[int, str]]:
    return [(d, name) for d in dims for name in (names or tuple(fixed_vectors(d)))]


# ---------------------------------------------------------------- statistics


@pytest.mark.parametrize("spec", UNBIASED)
@pytest.mark.parametrize(("d", "vector"), cases((1, 7), ("dense", "heavy-tailed")) + cases((1000,)))
def test_unbiased_and_omega(spec: str, d: int, vector: str) -> None:
    compressor = make(spec)
    x = {vector: fixed_vectors(d)[vector]}
    check_variance(compressor, x=x, samples=check_unbiased(compressor, x=x, n_draws=300))


@pytest.mark.parametrize("spec", ["randk(k=0.01)", "qsgd(s=8)", "terngrad"])
def test_unbiased_and_omega_large_d(spec: str) -> None:
    compressor = make(spec)
    x = fixed_vectors(100_000)["dense"]
    check_variance(compressor, x=x, samples=check_unbiased(compressor, x=x, n_draws=60))


@pytest.mark.parametrize("spec", CONTRACTIVE)
@pytest.mark.parametrize(("d", "vector"), cases((1, 7), ("dense", "heavy-tailed")) + cases((1000,)))
def test_alpha(spec: str, d: int, vector: str) -> None:
    compressor = make(spec)
    check_contractive(compressor, x={vector: fixed_vectors(d)[vector]}, n_draws=50)


def test_randk_omega_is_exact() -> None:
    """E||Q(x)||^2 = (d/k) ||x||^2 exactly, so the measured second moment matches omega from both sides."""
    compressor, x = make("randk(k=5)"), fixed_vectors(40)["dense"]
    errors = np.sum((draws(compressor, x, 4000) - x) ** 2, axis=1)
    assert_mean_close(errors, compressor.omega(x.size) * float(x @ x), "randk(k=5) E||Q(x) - x||^2")


def test_terngrad_omega_is_attained() -> None:
    """x = (1, t, ..., t) with t = 1/(sqrt(d) + 1) attains omega = (sqrt(d) - 1)/2: the bound is tight."""
    d = 49
    x = np.full(d, 1.0 / (np.sqrt(d) + 1.0))
    x[0] = 1.0
    compressor = make("terngrad")
    errors = np.sum((draws(compressor, x, 4000) - x) ** 2, axis=1)
    expected = compressor.omega(d) * float(x @ x)
    assert expected == pytest.approx(float(np.abs(x).sum() - x @ x))
    assert_mean_close(errors, expected, "terngrad E||Q(x) - x||^2")


def test_randk_indices_are_uniform() -> None:
    """Every coordinate is kept with probability k/d (chi-square over 2000 draws, P(fail) < 1e-6)."""
    d, k, n = 10, 3, 2000
    counts = np.zeros(d)
    for r in range(n):
        counts[random_k_indices(d, k, RandomKey(7, r))] += 1
    expected = n * k / d
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert chi2 < 40.0  # chi2 with 9 degrees of freedom exceeds 40 with probability 7e-6


def test_floyd_sparse_and_bitmap_paths_agree() -> None:
    """The hash-set and bitmap variants of Floyd's algorithm pick the same subset."""
    from mpicomp.compressors.sparse import _floyd_bitmap, _floyd_sparse

    state = KEY.state
    for d, k in ((1, 1), (10, 10), (1000, 17), (5000, 2500), (64, 64), (130, 65), (100003, 1001)):
        a, b = np.empty(k, dtype=np.int64), np.empty(k + 1, dtype=np.int64)  # the bitmap's spare slot
        _floyd_sparse(state, d, k, a)
        _floyd_bitmap(state, d, k, b)
        np.testing.assert_array_equal(a, b[:k])
        assert np.unique(a).size == k and a[0] >= 0 and a[-1] < d


# ---------------------------------------------------------------- keys and determinism


def test_randk_needs_the_key_unless_indices_are_sent() -> None:
    x = fixed_vectors(100)["dense"]
    message = make("randk(k=10)").encode(x, KEY)
    with pytest.raises(ValueError, match="RandomKey"):
        make("randk(k=10)").decode(message, 100)
    with pytest.raises(ValueError, match="RandomKey"):
        make("identity∘randk(k=10)").decode(make("identity∘randk(k=10)").encode(x, KEY), 100)
    sent = make("randk(k=10,send_indices=True)")
    np.testing.assert_array_equal(sent.decode(sent.encode(x, KEY), 100), make("randk(k=10)").decode(message, 100, KEY))


@pytest.mark.parametrize("spec", ["randk(k=10)", "natural∘randk(k=10)"])
def test_a_wrong_key_is_caught_by_the_fingerprint(spec: str) -> None:
    """Key-derived indices would decode silently to another vector: the message's key fingerprint stops that."""
    compressor, x = make(spec), fixed_vectors(100)["dense"]
    message = compressor.encode(x, KEY)
    assert np.count_nonzero(compressor.decode(message, 100, KEY)) <= 10
    next_round = RandomKey(KEY.seed, KEY.round + 1, KEY.worker, KEY.stream)
    with pytest.raises(MessageError, match="encoded with another RandomKey"):
        compressor.decode(message, 100, next_round)


def test_sent_indices_need_no_key_and_carry_no_fingerprint() -> None:
    compressor, x = make("randk(k=10,send_indices=True)"), fixed_vectors(100)["dense"]
    message = compressor.encode(x, KEY)
    np.testing.assert_array_equal(compressor.decode(message, 100, RandomKey(1)), compressor.decode(message, 100))


@pytest.mark.parametrize("spec", EVERY_SPEC)
def test_same_key_same_bytes_other_key_other_bytes(spec: str) -> None:
    compressor, x = make(spec), fixed_vectors(1000)["dense"]
    assert compressor.encode(x, KEY) == compressor.encode(x.copy(), RandomKey(2024, 3, 1, 0))
    if compressor.unbiased:
        assert compressor.encode(x, KEY) != compressor.encode(x, RandomKey(2024, 4, 1, 0))


def test_composition_uses_an_independent_outer_stream() -> None:
    """The outer compressor sees the key of a shifted stream, so it is not correlated with the inner one."""
    x = fixed_vectors(1000)["dense"]
    composed = make("qsgd(s=2)∘randk(k=0.5)")
    inner = make("randk(k=0.5)")
    _, values = inner.select(x, KEY)
    nested = make("qsgd(s=2)").encode(values, outer_key(KEY))
    assert outer_key(KEY) != KEY
    assert composed.encode(x, KEY)[-len(nested) - 4 : -4] == nested


# ---------------------------------------------------------------- Top-K selection


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("k", [1, 3, 50, 999, 1000])
def test_topk_keeps_exactly_the_k_largest(dtype: type, k: int) -> None:
    x = fixed_vectors(1000)["heavy-tailed"].astype(dtype)
    compressor = make(f"topk(k={k})")
    indices, values = compressor.select(x, KEY)
    expected = np.sort(np.argsort(-np.abs(x), kind="stable")[:k])
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_array_equal(values, x[expected].astype(np.float64))
    decoded = compressor.decode(compressor.encode(x, KEY), x.size)
    np.testing.assert_array_equal(np.flatnonzero(decoded), expected)
    np.testing.assert_array_equal(decoded[expected], x[expected])


@pytest.mark.parametrize("d", [1000, 40_000])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_topk_selection_paths_agree_with_a_stable_sort(d: int, dtype: type) -> None:
    """The quickselect path (short vectors), the radix select on all of x and the selection (for long
    vectors: above a sampled bound) pick the same set, ties included."""
    from mpicomp.compressors.sparse import _top_k_by_quickselect, _top_k_indices, top_k_indices

    x = np.round(fixed_vectors(d)["heavy-tailed"], 1).astype(dtype)  # rounding makes many ties
    words = x.view(np.uint64 if dtype == np.float64 else np.uint32)
    for k in (1, d // 20, d - 1):
        expected = np.sort(np.argsort(-np.abs(x), kind="stable")[:k])
        radix, quick = np.empty(k, dtype=np.int64), np.empty(k, dtype=np.int64)
        _top_k_indices(words, k, 8 * x.itemsize - 1, radix)
        _top_k_by_quickselect(words, k, 8 * x.itemsize - 1, quick, np.empty(d, dtype=np.uint64))
        np.testing.assert_array_equal(quick, expected)
        np.testing.assert_array_equal(radix, expected)
        np.testing.assert_array_equal(top_k_indices(x, k), expected)


@pytest.mark.parametrize("order", ["random", "ascending", "descending", "all equal", "organ pipe", "two values"])
def test_quickselect_finds_the_kth_key_or_says_it_gave_up(order: str) -> None:
    """``_kth_smallest`` returns ``np.partition``'s k-th key wherever it says it finished, on orders that
    defeat naive pivots; it finishes on all of them here (median of three), and where it would give up the
    caller runs the radix select."""
    from mpicomp.compressors.sparse import _kth_smallest

    d = 4099
    keys = {
        "random": np.random.default_rng(3).integers(0, 2**63, d, dtype=np.uint64),
        "ascending": np.arange(d, dtype=np.uint64),
        "descending": np.arange(d, dtype=np.uint64)[::-1].copy(),
        "all equal": np.full(d, 7, dtype=np.uint64),
        "organ pipe": np.concatenate([np.arange(d // 2), np.arange(d - d // 2)[::-1]]).astype(np.uint64),
        "two values": np.random.default_rng(4).integers(0, 2, d, dtype=np.uint64),
    }[order]
    for kth in (0, 1, d // 100, d // 2, d - 2, d - 1):
        value, finished = _kth_smallest(keys.copy(), kth)
        assert finished
        assert value == np.partition(keys, kth)[kth]


def test_topk_breaks_ties_towards_low_indices() -> None:
    x = np.array([1.0, -3.0, 3.0, 2.0, -3.0, 3.0, 0.0])
    indices, _ = make("topk(k=3)").select(x, KEY)
    np.testing.assert_array_equal(indices, [1, 2, 4])
    indices, _ = make("topk(k=6)").select(np.zeros(7), KEY)
    np.testing.assert_array_equal(indices, np.arange(6))


# ---------------------------------------------------------------- sizes


@pytest.mark.parametrize("spec", [spec for spec in EVERY_SPEC if "qsgd" not in spec])  # qsgd: test_qsgd_size_*
@pytest.mark.parametrize("d", [1, 7, 1000])
def test_size_matches_expected_bits(spec: str, d: int) -> None:
    """Deterministic-size codecs: payload = expected bits rounded up to whole bytes; each of at most two
    bit-packed sections (indices, a nested message's payload) pads fewer than 8 bits."""
    compressor = make(spec)
    message = compressor.encode(fixed_vectors(d)["dense"], KEY)
    measured = payload_bits(compressor, message)
    assert 0 <= measured - compressor.expected_bits(d) < 16
    assert len(message) == measured // 8 + compressor.header_bits() // 8


def test_qsgd_size_matches_gaussian_expectation_within_one_percent() -> None:
    """For s = sqrt(d) (the paper's dense regime) and d = 1e5 the code length of one Gaussian draw
    has a relative spread of about 1e-3, so 1% is a 10-sigma margin; it also stays below the
    paper's 2.8 d + 32 bits."""
    d = 100_000
    x = np.random.default_rng(5).standard_normal(d)
    for spec in ("qsgd(s=316)", "qsgd(s=316,code=gamma)", "qsgd(s=1000)"):
        compressor = make(spec)
        measured = payload_bits(compressor, compressor.encode(x, KEY))
        assert measured == pytest.approx(compressor.expected_bits(d), rel=0.01), spec
    compressor = make("qsgd(s=316)")
    assert payload_bits(compressor, compressor.encode(x, KEY)) <= 2.8 * d + 32


def test_qsgd_size_sparse_regime_matches_on_average() -> None:
    """s = 1: about 250 nonzeros, so one draw varies by ~5%; the mean of 40 draws is within 2%."""
    d = 100_000
    x = np.random.default_rng(6).standard_normal(d)
    compressor = make("qsgd(s=1)")
    bits = [payload_bits(compressor, compressor.encode(x, RandomKey(9, r))) for r in range(40)]
    assert np.mean(bits) == pytest.approx(compressor.expected_bits(d), rel=0.02)


def test_qsgd_gaussian_model_matches_a_direct_sum() -> None:
    """The closed-form level tails agree with numerical integration over the half-normal, and the
    dyadic-block sum equals the plain sum over every gap length and level."""
    from scipy import integrate, stats

    from mpicomp.compressors.qsgd import _level_tail
    from mpicomp.wire import elias_code_bits

    d, s = 400, 30
    sigma = s / np.sqrt(d)
    for j in range(1, s + 2):
        direct = integrate.quad(
            lambda r, j=j: min(1.0, max(0.0, r - j + 1.0)) * stats.halfnorm.pdf(r, scale=sigma), j - 1, np.inf
        )[0]
        expected = direct if j <= s else 0.0
        assert _level_tail(np.array([float(j)]), d, s)[0] == pytest.approx(expected, abs=1e-9)
    tails = _level_tail(np.arange(1.0, s + 2), d, s)
    p = tails[0]
    g = np.arange(1, d + 2)
    gaps = np.where(g <= d, (1 - p) ** (g - 1) * p * ((d - g) * p + 2), (1 - p) ** d)
    plain = float(gaps @ elias_code_bits(g, "omega"))
    plain += d * float((tails[:-1] - tails[1:]) @ (1 + elias_code_bits(np.arange(1, s + 1), "omega")))
    assert gaussian_stream_bits(d, s, "omega") == pytest.approx(plain, rel=1e-12)


def test_composition_expected_bits_adds_the_nested_header() -> None:
    composed = make("qsgd(s=4)∘topk(k=0.1)")
    d = 1000
    inner, outer = make("topk(k=0.1)"), make("qsgd(s=4)")
    assert composed.expected_bits(d) == 100 * index_bits(d) + outer.expected_bits(100) + outer.header_bits()
    message = composed.encode(fixed_vectors(d)["dense"], KEY)
    nested = unpack_message(message).payload[inner.index_nbytes(d) :]
    assert len(nested) == len(outer.encode(inner.select(fixed_vectors(d)["dense"], KEY)[1], outer_key(KEY)))


# ---------------------------------------------------------------- edge cases and bad input


@pytest.mark.parametrize("spec", EVERY_SPEC)
def test_zero_vector_and_single_coordinate(spec: str) -> None:
    compressor = make(spec)
    for x in (np.zeros(50), np.zeros(1)):
        np.testing.assert_array_equal(compressor.decode(compressor.encode(x, KEY), x.size, KEY), x)
    x = np.array([-2.5])
    decoded = compressor.decode(compressor.encode(x, KEY), 1, KEY)
    assert decoded.dtype == np.float64
    np.testing.assert_allclose(decoded, x, rtol=1e-7)


@pytest.mark.parametrize("spec", EVERY_SPEC)
def test_float32_input_and_non_finite_input(spec: str) -> None:
    compressor = make(spec)
    x = fixed_vectors(64)["dense"]
    decoded32 = compressor.decode(compressor.encode(x.astype(np.float32), KEY), 64, KEY)
    assert decoded32.dtype == np.float64 and np.isfinite(decoded32).all()
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[5] = bad
        with pytest.raises(ValueError, match="non-finite"):
            compressor.encode(y, KEY)


def test_values_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="float32 range"):
        make("topk(k=1,dtype=float32)").encode(np.array([1e300, 1.0]), KEY)
    with pytest.raises(ValueError, match="float64 range"):
        make("qsgd(s=2)").encode(np.full(10, 1e308), KEY)
    np.testing.assert_allclose(make("sign").decode(make("sign").encode(np.full(3, -1e308), KEY), 3), -1e308)


def test_huge_and_tiny_vectors_keep_their_scale() -> None:
    for name in ("huge", "tiny"):
        x = fixed_vectors(100)[name]
        for spec in ("qsgd(s=4)", "sign", "terngrad", "topk(k=10)", "randk(k=10)"):
            decoded = make(spec).decode(make(spec).encode(x, KEY), 100, KEY)
            assert np.isfinite(decoded).all()
            assert 0 < np.linalg.norm(decoded / np.abs(x).max()) < 100


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("randk", "parameter k must be"),
        ("randk(k=0)", "k as a count"),
        ("randk(k=1.5)", "k as a fraction"),
        ("randk(k='a')", "parameter k must be"),
        ("randk(k=2,send_indices=1)", "send_indices"),
        ("topk(k=2,dtype=float16)", "dtype must be one of float64, float32"),
        ("qsgd", "s \\(number of levels\\)"),
        ("qsgd(s=0)", "s \\(number of levels\\)"),
        ("qsgd(s=2,code=delta)", "code must be one of gamma, omega"),
        ("randk(q=1)", "valid parameters: k, dtype, send_indices"),
        ("terngrad(s=1)", "valid parameters: none"),
        ("randk(k=2)∘qsgd(s=1)", "must be a sparsifier"),
        ("natural∘sign", "must be a sparsifier|unknown compressor"),
    ],
)
def test_bad_specs_raise_value_error(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(spec)


def test_specs_round_trip() -> None:
    for spec in EVERY_SPEC:
        compressor = make(spec)
        assert make(compressor.spec) == compressor
        assert compressor.spec.replace("'", "") == spec.replace("*", "∘").replace("'", "")


# ---------------------------------------------------------------- malformed payloads (valid CRC)


def forged(compressor, d: int, payload: bytes | np.ndarray, scalars: tuple[float, ...] = (), key=None) -> bytes:
    """A hand-made message; ``key`` stamps its fingerprint (codecs that decode with the shared key check it)."""
    fingerprint = None if key is None else key.fingerprint
    return pack_message(
        compressor.codec_id, d, scalars, np.asarray(payload, dtype=np.uint8).tobytes(), key_fingerprint=fingerprint
    )


def test_sparse_payload_validation() -> None:
    topk = make("topk(k=3)")
    values = np.ones(3).view(np.uint8)
    for indices in ([1, 1, 2], [2, 1, 5], [1, 2, 7]):  # duplicate, descending, 7 >= d = 6
        payload = np.concatenate((pack_uint(np.array(indices), index_bits(6)), values))
        with pytest.raises(MessageError, match="strictly ascending within"):
            topk.decode(forged(topk, 6, payload))
    with pytest.raises(MessageError, match="payload of"):
        topk.decode(forged(topk, 8, np.zeros(5)))
    nan_values = np.array([1.0, np.nan, 2.0]).view(np.uint8)
    payload = np.concatenate((pack_uint(np.array([0, 1, 2]), index_bits(8)), nan_values))
    with pytest.raises(MessageError, match="non-finite"):
        topk.decode(forged(topk, 8, payload))
    with pytest.raises(MessageError, match="payload of"):
        make("randk(k=3)").decode(forged(make("randk(k=3)"), 8, np.zeros(25), key=KEY), 8, KEY)


def qsgd_stream(y: np.ndarray, norm: float, s: int, code: str) -> np.ndarray:
    """QSGD's payload for the decoded vector y, written from the definition: per nonzero
    Elias(gap), the sign bit, Elias(level); then Elias(gap to d); LSB-first, zero-padded."""

    def codeword(n: int) -> list[int]:
        length = int(elias_code_bits(np.array([n], dtype=np.uint64), code)[0])
        packed = encode_elias(np.array([n], dtype=np.uint64), code)
        return list(np.unpackbits(packed, bitorder="little")[:length])

    bits: list[int] = []
    previous = -1
    for i in np.flatnonzero(y):
        bits += codeword(int(i - previous)) + [int(y[i] < 0)] + codeword(int(round(abs(y[i]) * s / norm)))
        previous = int(i)
    bits += codeword(y.size - previous)
    return np.packbits(np.array(bits, dtype=np.uint8), bitorder="little")


@pytest.mark.parametrize("code", ["omega", "gamma"])
@pytest.mark.parametrize("s", [3, 5000, 2**14, 2**20])
def test_qsgd_stream_follows_the_definition(s: int, code: str) -> None:
    """The table-driven writer and reader agree with the codeword-by-codeword definition, on
    triples inside and outside the tables: gaps of 10,000 and more (beyond the 8,192 codewords of the
    encoder's table and the 12-bit triples of the decoder's), levels up to 2^20."""
    rng = np.random.default_rng(s)
    x = np.zeros(60_000)
    dense = rng.integers(0, 20_000, 3000)
    x[dense] = rng.standard_normal(dense.size) * np.exp(rng.uniform(-6, 6, dense.size))
    x[[0, 30_000, 45_000, x.size - 1]] = [1e6, -5e4, 3e4, 7e4]  # gaps of 10,000 and more, top levels
    compressor = make(f"qsgd(s={s},code={code})")
    message = compressor.encode(x, KEY)
    y = compressor.decode(message, x.size, KEY)
    norm = float(np.linalg.norm(x))
    levels = np.abs(y) * s / norm
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-6)
    assert levels.max() > min(s, 8192) / 2 and np.diff(np.r_[-1, np.flatnonzero(y), y.size]).max() > 8192
    np.testing.assert_array_equal(unpack_message(message).payload, qsgd_stream(y, norm, s, code))
    total = rng.standard_normal(x.size)
    np.testing.assert_array_equal(compressor.decode_add(message, total.copy(), KEY), total + y)


@pytest.mark.parametrize("code", ["omega", "gamma"])
@pytest.mark.parametrize("s", [64, 4096])
def test_qsgd_dense_stream_follows_the_definition(s: int, code: str) -> None:
    """Dense QSGD (most coordinates coded, short triples back to back): the decoder's window is
    reloaded at every bit offset, and the stream still matches the definition."""
    x = np.random.default_rng(s).standard_normal(20_000)
    compressor = make(f"qsgd(s={s},code={code})")
    message = compressor.encode(x, KEY)
    y = compressor.decode(message, x.size, KEY)
    assert np.count_nonzero(y) > (0.5 if s == 4096 else 0.05) * x.size
    np.testing.assert_array_equal(unpack_message(message).payload, qsgd_stream(y, float(np.linalg.norm(x)), s, code))


def test_qsgd_payload_validation() -> None:
    qsgd = make("qsgd(s=2)")
    # omega(1) is the single bit 0, so [3, 1, 3] reads as: gap 3 (position 2), sign +, level 3 > s
    with pytest.raises(MessageError, match="exceeds s"):
        qsgd.decode(forged(qsgd, 8, encode_elias(np.array([3, 1, 3, 6])), (1.0,)))
    with pytest.raises(MessageError, match="past the end"):
        qsgd.decode(forged(qsgd, 8, encode_elias(np.array([12])), (1.0,)))
    with pytest.raises(MessageError, match="truncated"):
        qsgd.decode(forged(qsgd, 8, [], (1.0,)))
    with pytest.raises(MessageError, match="zero norm"):
        qsgd.decode(forged(qsgd, 8, [1], (0.0,)))
    with pytest.raises(MessageError, match="norm"):
        qsgd.decode(forged(qsgd, 8, encode_elias(np.array([9])), (-1.0,)))
    valid = encode_elias(np.array([9]))
    with pytest.raises(MessageError, match="bytes hold"):
        qsgd.decode(forged(qsgd, 8, np.concatenate((valid, [0])), (1.0,)))
    np.testing.assert_array_equal(qsgd.decode(forged(qsgd, 8, valid, (1.0,))), np.zeros(8))


def test_terngrad_and_sign_payload_validation() -> None:
    terngrad, sign = make("terngrad"), make("sign")
    with pytest.raises(MessageError, match="ternary"):
        terngrad.decode(forged(terngrad, 5, [243], (1.0,)))
    with pytest.raises(MessageError, match="ternary"):
        terngrad.decode(forged(terngrad, 4, [81], (1.0,)))  # fifth trit set beyond d = 4
    with pytest.raises(MessageError, match="payload of"):
        terngrad.decode(forged(terngrad, 6, [0], (1.0,)))
    np.testing.assert_array_equal(terngrad.decode(forged(terngrad, 3, [1 + 2 * 9], (2.0,))), [2.0, 0.0, -2.0])
    with pytest.raises(MessageError, match="padding"):
        sign.decode(forged(sign, 3, [0b1000], (1.0,)))
    with pytest.raises(MessageError, match="scale"):
        sign.decode(forged(sign, 3, [0], (np.inf,)))


def test_natural_composition() -> None:
    compressor, x = make("natural∘randk(k=0.1)"), fixed_vectors(1000)["dense"]
    assert compressor.omega(1000) == pytest.approx((make("natural").omega(100) + 1) * 10 - 1)
    samples = draws(compressor, x, 300)
    assert_unbiased(samples, x)
    assert_omega(compressor, samples, x)


def test_every_sparse_family_compressor_is_registered() -> None:
    assert {"randk", "topk", "qsgd", "terngrad", "sign"} <= set(available())


# ---------------------------------------------------------------- fused decoding, fast paths


@pytest.mark.parametrize(
    "spec", ["randk(k=0.05)", "topk(k=0.3,dtype=float32)", "natural∘randk(k=0.1)", "sign", "terngrad", "laq(bits=3)"]
)
@pytest.mark.parametrize("scale", [1.0, -0.5, 2.0, 0.0, -0.0])
def test_decode_add_is_the_dense_sum_bit_for_bit(spec: str, scale: float) -> None:
    """decode_add writes into the target without the dense vector, yet gives the bits of
    ``total + scale * decode(m)``, signed zeros included (off the indices +0.0 turns a -0.0 into
    +0.0, and -0.0 leaves it)."""
    d = 3000
    rng = np.random.default_rng(5)
    x = rng.standard_normal(d)
    x[::9] = -0.0
    compressor = make(spec)
    message = compressor.encode(x, KEY)
    decoded = compressor.decode(message, d, KEY)
    total = rng.standard_normal(d)
    total[::3], total[1::3] = -0.0, 0.0
    expected = total + (decoded if scale == 1.0 else decoded * scale)
    got = compressor.decode_add(message, total.copy(), KEY, scale=scale)
    np.testing.assert_array_equal(got.view(np.uint64), expected.view(np.uint64))
    into = np.full(d, -0.0)
    compressor.decode(message, d, KEY, out=into)
    np.testing.assert_array_equal(into.view(np.uint64), decoded.view(np.uint64))


@pytest.mark.parametrize("kind", ["gaussian", "ties", "half zero", "float32", "strided spikes"])
@pytest.mark.parametrize("d", [2048, 7850, 9 * 4096 + 5])
def test_top_k_sampled_bound_picks_the_radix_select_set(kind: str, d: int) -> None:
    """The one-pass selection above a sampled bound (d / 8 sampled keys below 32,768, 4,096 above; the candidates
    selected by quickselect or, many, by the radix select) returns the set of the full radix select (lowest indices
    among ties), including inputs that defeat the sample (the fallback)."""
    from mpicomp.compressors.sparse import _top_k_indices, top_k_indices

    x = np.random.default_rng(3).standard_normal(d)
    if kind == "ties":
        x = np.round(x * 2.0)
    elif kind == "half zero":
        x[::2] = 0.0
    elif kind == "float32":
        x = x.astype(np.float32)
    elif kind == "strided spikes":  # every sampled coordinate small, the large ones between them
        x = np.abs(x) * 1e-3
        x[1::9] += 10.0
    words = x.view(np.uint64 if x.dtype == np.float64 else np.uint32)
    for k in (1, 37, d // 100, d // 8):
        full = np.empty(k, dtype=np.int64)
        _top_k_indices(words, k, 8 * x.itemsize - 1, full)
        np.testing.assert_array_equal(top_k_indices(x, k), full)


def test_a_kept_selection_scratch_gives_the_fresh_selection_at_any_size() -> None:
    """One scratch reused over vectors of growing and shrinking size (its buffers then hold an earlier
    call's candidates beyond the current ones) selects what a fresh scratch selects, and one Top-K
    codec's messages are those of a new codec per vector."""
    from mpicomp.compressors.sparse import _SAMPLE, SelectionScratch, top_k_indices

    rng = np.random.default_rng(6)
    vectors = [rng.standard_normal(d) for d in (40 * _SAMPLE + 1, 9 * _SAMPLE + 5, 40 * _SAMPLE + 1)]
    vectors[1][1::9] += 10.0  # the fallback's input in the middle of the sequence
    scratch = SelectionScratch()
    kept = make("topk(k=0.02)")
    for x in vectors:
        for k in (x.size // 50, x.size // 9):
            np.testing.assert_array_equal(top_k_indices(x, k, scratch), top_k_indices(x, k))
        assert bytes(kept.encode(x, KEY)) == bytes(make("topk(k=0.02)").encode(x, KEY))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("d", [7850, 9 * 4096 + 5])
def test_top_k_sampled_pass_refuses_non_finite_input(bad: float, d: int) -> None:
    """The one-pass selection finds NaN and Inf among its candidates (their keys lie above any finite
    bound, or the bound is itself one of them): at a sampled coordinate and between samples."""
    from mpicomp.compressors.sparse import _sample_size, top_k_indices

    for where in (0, d // _sample_size(d) * 7, d - 5):
        x = np.random.default_rng(4).standard_normal(d)
        x[where] = bad
        with pytest.raises(ValueError, match="non-finite"):
            top_k_indices(x, d // 100)


@pytest.mark.parametrize("spec", ["terngrad", "sign", "laq(bits=3)", "laq(bits=11)", "topk(k=0.01)"])
def test_messages_do_not_depend_on_the_thread_count(spec: str) -> None:
    """Long vectors split over threads (ranges ending inside a packed word) give the same bytes and
    the same decoded vector as one thread."""
    import numba

    x = np.random.default_rng(8).standard_normal(200_003)
    compressor = make(spec)
    previous = numba.get_num_threads()
    try:
        results = []
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            message = bytes(compressor.encode(x, KEY))
            results.append((message, compressor.decode(message, x.size, KEY)))
    finally:
        numba.set_num_threads(previous)
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])


@pytest.mark.parametrize("d", [1, 7, 319, 320, 321, 2561, 2560 * 3 + 1603])
def test_terngrad_payload_matches_a_numpy_reference(d: int) -> None:
    """The packed digits are ``b_i (1 + [x_i < 0])``, ``b_i = [u_i s < |x_i|]`` with the key's uniforms,
    five per byte: across whole and partial 64-byte packing blocks and spans."""
    x = fixed_vectors(d)["heavy-tailed"]
    scale = np.abs(x).max()
    trits = (KEY.uniform(d) * scale < np.abs(x)) * (1 + (x < 0))
    digits = np.zeros(-(-d // 5) * 5, dtype=np.int64)
    digits[:d] = trits
    expected = digits.reshape(-1, 5) @ 3 ** np.arange(5)
    payload = unpack_message(make("terngrad").encode(x, KEY)).payload
    np.testing.assert_array_equal(np.frombuffer(payload, dtype=np.uint8), expected)


def test_terngrad_rejects_digits_past_d_and_bytes_above_242() -> None:
    """A nonzero digit past d in the last byte, or a byte >= 243, is a MessageError naming the byte."""
    compressor = make("terngrad")
    for payload, byte in ((bytes([0, 9]), 1), (bytes([243, 0]), 0), (bytes([0, 0] * 600 + [250, 0]), 1200)):
        d = 5 * len(payload) - 3  # digit 2 of the last byte (value 9) is coordinate d
        message = pack_message(compressor.codec_id, d, (1.0,), payload)
        with pytest.raises(MessageError, match=f"byte {byte} "):
            compressor.decode(message, d)
