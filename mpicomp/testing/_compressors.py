"""The property checks of a compressor: unbiasedness, variance (omega), contraction (alpha), wire.

Each check draws with fixed seeds, raises ``AssertionError`` saying what failed and by how much, and
returns the draws it took (``{vector name: (n, d) samples}``) so that the next check on the same
vectors can reuse them (``samples=``). Statistical thresholds are in :mod:`._statistics`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from ..compressors import Compressor, MessageError, make, message_checksums
from ..rng import RandomKey
from ..wire import pack_message, unpack_message
from ._statistics import (
    MEAN_FALSE_FAILURE,
    MOMENT_FALSE_FAILURE,
    SEED,
    Z_TAIL,
    assert_second_moment_below,
    assert_unbiased,
    draws,
    fixed_vectors,
)

Vectors = np.ndarray | Mapping[str, np.ndarray] | None
Samples = dict[str, np.ndarray]
PADDING_BITS = 16  # a payload of at most two byte-aligned sections (indices, values) pads < 16 bits
MODEL_RTOL = 0.02  # data-dependent sizes: expected_bits models Gaussian input (QSGD: ||x|| ~ sqrt(d))


def _vectors(d: int | None, x: Vectors) -> dict[str, np.ndarray]:
    if x is None:
        if d is None:
            raise ValueError("give the dimension d or the vectors x")
        return fixed_vectors(d)
    if isinstance(x, np.ndarray):
        return {"x": x}
    return dict(x)


def _drawn(
    compressor: Compressor, d: int | None, x: Vectors, n_draws: int, seed: int, samples: Samples | None
) -> tuple[dict[str, np.ndarray], Samples]:
    vectors = _vectors(d, x)
    if samples is None:
        samples = {name: draws(compressor, v, n_draws, seed) for name, v in vectors.items()}
    missing = set(vectors) - set(samples)
    if missing:
        raise ValueError(f"samples= lacks the draws of vector(s) {sorted(missing)}")
    return vectors, samples


def _each_vector(
    compressor: Compressor, vectors: dict[str, np.ndarray], check: Callable[[np.ndarray, np.ndarray], None], **kw
) -> None:
    """``check(samples, x)`` for every named vector; a failure names the compressor, vector and d."""
    for name, x in vectors.items():
        try:
            check(kw["samples"][name], np.asarray(x, dtype=np.float64))
        except AssertionError as error:
            raise AssertionError(f"{compressor.spec}, vector {name!r} (d={x.size}): {error}") from None


def check_unbiased(
    compressor: Compressor,
    d: int | None = None,
    *,
    x: Vectors = None,
    n_draws: int = 1000,
    seed: int = SEED,
    samples: Samples | None = None,
    false_failure: float = MEAN_FALSE_FAILURE,
) -> Samples:
    """Assert ``E C(x) = x`` for each test vector (default: :func:`fixed_vectors` of dimension ``d``):
    the squared error of the mean of ``n_draws`` draws against its own sampling variance, failing
    an unbiased compressor with probability ``false_failure`` per vector (chi2_1 tail)."""
    if not compressor.unbiased:
        raise AssertionError(f"{compressor.spec} does not declare itself unbiased (unbiased = False)")
    vectors, samples = _drawn(compressor, d, x, n_draws, seed, samples)

    def unbiased(s: np.ndarray, v: np.ndarray) -> None:
        assert_unbiased(s, v, false_failure)

    _each_vector(compressor, vectors, unbiased, samples=samples)
    return samples


def check_variance(
    compressor: Compressor,
    d: int | None = None,
    *,
    x: Vectors = None,
    n_draws: int = 1000,
    seed: int = SEED,
    samples: Samples | None = None,
    false_failure: float = MOMENT_FALSE_FAILURE,
) -> Samples:
    """Assert ``E||C(x) - x||^2 <= omega(d) ||x||^2`` with the compressor's declared omega, for each
    test vector, up to the CLT slack of ``n_draws`` draws (false failure ``false_failure`` per vector)."""
    vectors, samples = _drawn(compressor, d, x, n_draws, seed, samples)

    def bounded(s: np.ndarray, v: np.ndarray) -> None:
        omega = compressor.omega(v.size)
        if omega is None:
            raise AssertionError("declares no omega (omega(d) returned None)")
        assert_second_moment_below(s, v, omega * float(v @ v), f"omega={omega:.4g}", false_failure)

    _each_vector(compressor, vectors, bounded, samples=samples)
    return samples


def check_contractive(
    compressor: Compressor,
    d: int | None = None,
    *,
    x: Vectors = None,
    n_draws: int = 200,
    seed: int = SEED,
    samples: Samples | None = None,
    false_failure: float = MOMENT_FALSE_FAILURE,
) -> Samples:
    """Assert ``E||C(x) - x||^2 <= (1 - alpha(d)) ||x||^2`` with the declared alpha, for each test
    vector, up to the CLT slack of ``n_draws`` draws (false failure ``false_failure`` per vector)."""
    vectors, samples = _drawn(compressor, d, x, n_draws, seed, samples)

    def bounded(s: np.ndarray, v: np.ndarray) -> None:
        alpha = compressor.alpha(v.size)
        if alpha is None:
            raise AssertionError("declares no alpha (alpha(d) returned None)")
        if not 0 < alpha <= 1:
            raise AssertionError(f"declares alpha = {alpha}, outside (0, 1]")
        assert_second_moment_below(s, v, (1 - alpha) * float(v @ v), f"alpha={alpha:.4g}", false_failure)

    _each_vector(compressor, vectors, bounded, samples=samples)
    return samples


def _must_raise(what: str, decoder: Compressor, message: bytes, d: int, key: RandomKey) -> None:
    """``decoder.decode(message, d, key)`` must raise MessageError: anything else (a vector, another
    exception) fails the check."""
    try:
        decoder.decode(message, d, key)
    except MessageError:
        return
    except Exception as error:  # noqa: BLE001  (a crash on bad input is what the check reports)
        raise AssertionError(f"{what}: raised {type(error).__name__}: {error} instead of MessageError") from error
    raise AssertionError(f"{what}: decoded without error (expected MessageError)")


def _check_sizes(compressor: Compressor, d: int, n_draws: int, seed: int, message: memoryview) -> None:
    """Declared bits against the bytes sent: exact (up to byte padding) for a fixed payload size, the
    mean over ``n_draws`` Gaussian vectors within the CLT slack and MODEL_RTOL of the model otherwise."""
    spec, expected = compressor.spec, compressor.expected_bits(d)
    parsed = unpack_message(message)
    if 8 * len(message) != compressor.header_bits() + 8 * len(parsed.payload):
        raise AssertionError(
            f"{spec}: header_bits() = {compressor.header_bits()} but the message frames its payload with "
            f"{8 * (len(message) - len(parsed.payload))} bits"
        )
    fixed = compressor.payload_bytes(d)
    if fixed is not None:
        if len(parsed.payload) != fixed:
            raise AssertionError(
                f"{spec}: payload_bytes({d}) = {fixed} but the payload has {len(parsed.payload)} bytes"
            )
        sent = 8 * fixed
        if not 0 <= sent - expected < PADDING_BITS:
            raise AssertionError(
                f"{spec}: expected_bits({d}) = {expected:g} but every message sends {sent} payload bits "
                f"({sent - expected:+g} bits; byte padding allows 0 to {PADDING_BITS - 1})"
            )
        return
    rng = np.random.default_rng(seed)
    bits = np.array(
        [
            8 * len(unpack_message(compressor.encode(rng.standard_normal(d), RandomKey(seed, k, 2, 0))).payload)
            for k in range(n_draws)
        ],
        dtype=np.float64,
    )
    slack = Z_TAIL * bits.std(ddof=1) / np.sqrt(n_draws) + MODEL_RTOL * expected + PADDING_BITS
    if abs(bits.mean() - expected) > slack:
        raise AssertionError(
            f"{spec}: expected_bits({d}) = {expected:g} but the mean payload over {n_draws} Gaussian vectors is "
            f"{bits.mean():.1f} bits ({bits.mean() - expected:+.1f}; allowed +-{slack:.1f})"
        )


def check_wire(
    compressor: Compressor, d: int, *, x: np.ndarray | None = None, n_draws: int = 40, seed: int = SEED
) -> None:
    """Assert the wire properties of ``compressor`` in dimension ``d`` (``x``: default a fixed dense vector):

    * the size matches the declared bits: :meth:`~Compressor.expected_bits` against the payload (exactly,
      up to byte padding, for fixed-size codecs; over ``n_draws`` Gaussian vectors otherwise) and
      :meth:`~Compressor.header_bits` against the framing;
    * the same key gives the same bytes, and ``decode`` / ``decode(out=)`` / ``decode_add`` agree bit for bit; so do
      a batch's ``decode_sum`` and ``decode_add_rows`` (``encode_many`` of three rows) with ``decode_add`` of each;
    * a truncated, extended or bit-flipped message, a payload one byte short or long (framed again with
      a valid header and CRC), another dimension and another codec's message raise ``MessageError``.

    Messages carry the CRC-32 during the check (``message_checksums(True)``).
    """
    x = fixed_vectors(d)["dense"] if x is None else np.asarray(x)
    d, spec = x.size, compressor.spec
    key = RandomKey(seed, 3, 1, 0)
    with message_checksums(True):
        message = bytes(compressor.encode(x, key))
        if bytes(compressor.encode(x.copy(), key)) != message:
            raise AssertionError(f"{spec}: two encodings of the same x with the same key differ")
        decoded = compressor.decode(message, d, key)
        for how, again in (
            ("decode again", compressor.decode(message, d, key)),
            ("decode(out=)", compressor.decode(message, d, key, out=np.empty(d))),
            ("decode_add into zeros", compressor.decode_add(message, np.zeros(d), key)),
        ):
            if not np.array_equal(again, decoded):
                raise AssertionError(f"{spec}: {how} differs from decode in {np.sum(again != decoded)} coordinates")
        _check_batch(compressor, x, seed)
        _check_sizes(compressor, d, n_draws, seed, memoryview(message))
        _check_corruptions(compressor, message, d, key)


def _check_batch(compressor: Compressor, x: np.ndarray, seed: int) -> None:
    """``decode_sum`` and ``decode_add_rows`` (scale 0.5) of ``encode_many`` of ``x``, ``-x/2`` and zeros give the
    bits of ``decode_add`` message by message (the sum zeroed first, divided after)."""
    d, spec = x.size, compressor.spec
    keys = [RandomKey(seed, 4, w, 0) for w in range(3)]
    batch = compressor.encode_many(np.stack([x, -0.5 * x, np.zeros(d)]), keys)
    start = np.linspace(-1.0, 1.0, 3 * d).reshape(3, d)
    moved, total = start.copy(), np.zeros(d)
    for message, key, row in zip(batch, keys, moved, strict=True):
        compressor.decode_add(message, row, key, 0.5)
        compressor.decode_add(message, total, key)
    total /= 3.0
    if not np.array_equal(compressor.decode_add_rows(batch, keys, start, 0.5), moved):
        raise AssertionError(f"{spec}: decode_add_rows differs from decode_add of each message")
    if not np.array_equal(compressor.decode_sum(batch, keys, np.empty(d), 3.0), total):
        raise AssertionError(f"{spec}: decode_sum differs from decode_add of each message, then the division")


def _check_corruptions(compressor: Compressor, message: bytes, d: int, key: RandomKey) -> None:
    spec, size = compressor.spec, len(message)
    for cut in sorted({0, 1, 15, 16, size // 2, size - 1} - {size}):
        _must_raise(f"{spec}: message truncated to {cut} of {size} bytes", compressor, message[:cut], d, key)
    for extra in (b"\0", message[:1], message):
        _must_raise(f"{spec}: message extended by {len(extra)} bytes", compressor, message + extra, d, key)
    header_bits = np.arange(16 * 8)
    spread = np.linspace(16 * 8, 8 * size - 1, 64).astype(int)
    for bit in np.unique(np.concatenate([header_bits, spread])):
        flipped = bytearray(message)
        flipped[bit // 8] ^= 1 << (bit % 8)
        _must_raise(f"{spec}: bit {bit} flipped", compressor, bytes(flipped), d, key)
    parsed = unpack_message(message)
    payload = bytes(parsed.payload)

    def reframed(body: bytes) -> bytes:
        return pack_message(parsed.codec, d, parsed.scalars, body, key_fingerprint=parsed.key_fingerprint)

    if payload:
        _must_raise(
            f"{spec}: payload one byte short (valid header and CRC)", compressor, reframed(payload[:-1]), d, key
        )
    _must_raise(f"{spec}: payload one byte long (valid header and CRC)", compressor, reframed(payload + b"\0"), d, key)
    _must_raise(f"{spec}: decoded as d = {d + 1}", compressor, message, d + 1, key)
    for other in (make("identity"), make("sign")):
        if type(other) is not type(compressor):
            foreign = bytes(other.encode(np.ones(d), key))
            _must_raise(f"{spec}: decoding a {other.spec} message", compressor, foreign, d, key)
            _must_raise(f"{other.spec}: decoding a {spec} message", other, message, d, key)
