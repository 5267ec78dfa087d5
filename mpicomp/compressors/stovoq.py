"""StoVoQ: Voronoi vector quantization against a fresh random codebook per call (talk 001, second part;
Leconte, Dieuleveut, Oyallon, Moulines, Pagès, "DoStoVoQ", 2021).

Encoding x in R^D (the paper's D; d = ``size`` is the bucket dimension):

1. ``N = ||x||_2``; the buckets (:mod:`mpicomp.compressors._buckets`) of ``x sqrt(D) / N`` are
   ``b_1, ..., b_L``, so that ``sum_l ||b_l||^2 = D`` (a bucket of a Gaussian-like x has norm
   about ``sqrt(d)``).
2. Codebook ``C_M``: ``M = 2^P`` codewords i.i.d. ``N(0, alpha^2 I_d)``, ``alpha^2 = 1 + 2/d`` (the
   talk's optimum for Gaussian inputs), drawn from the message's RandomKey at every call and never
   sent (:func:`~mpicomp.compressors._codebook.gaussian_codebook`); one codebook serves all the
   buckets of a message (as in the talk's Algorithm 1, one seed per worker and round), different
   keys draw independent ones. Buckets of one message thus have dependent errors, but they occupy
   disjoint coordinates, so ``||C(x) - x||^2`` is the sum of the buckets' errors and the
   per-bucket statements below add up.
3. ``i_l = argmin_j ||b_l - c_j||`` for all buckets at once: a tiled GEMM
   (:func:`~mpicomp.compressors._codebook.best_codewords`).

Biased variant (``unbiased=False``, plain nearest codeword): ``C(x) = (N / sqrt(D)) [c_{i_l}]_l``.
Since the codebook's law is unitarily invariant, ``E c_{i_l} = r_M(||b_l||) b_l``: the bias is
radial (the talk's theorem), so each bucket's mean is colinear with the bucket ("directionally
unbiased"; the whole message's mean is colinear with x when its buckets have equal norms).

Unbiased variant (the default): with ``y_l = 1 / r_M(||b_l||)`` from the exact table of
:mod:`mpicomp.compressors._radial` (computed once, deterministically), each bucket also sends an
R-bit index into the geometric grid ``o_k = y_lo (y_hi / y_lo)^(k / (Q - 1))``, ``Q = 2^R``,
``y_lo = min_l y_l``, ``y_hi = max_l y_l``, chosen by unbiased stochastic rounding
(``E o = y_l``) with uniforms of the same key independent of the codebook. Decoding gives
``C(x) = (N / sqrt(D)) [o_{k_l} c_{i_l}]_l`` and, the rounding being independent of the codebook,
``E o_{k_l} c_{i_l} = y_l r_M b_l = b_l``: unbiased, up to the table's accuracy (interpolated r_M
within 2e-5 relative of the integral at the defaults) and float32 near-ties in the search.

Variance (unbiased). Per bucket of norm rho, ``E||o c - b||^2 = E[o^2] e_M(rho) - rho^2`` with
``e_M(rho) = E||VQ(b)||^2`` from the table and ``E[o^2] = y^2 + (o_{k+1} - y)(y - o_k)``; on a
geometric grid of ratio ``q`` the rounding adds at most ``delta = (q - 1)^2 / (4 q)`` relative
(the maximum of ``(q o - y)(y - o) / y^2`` over ``y in [o, q o]``, at ``y = 2 q o / (q + 1)``).
Whatever the message, ``q <= (max y / min y)^(1 / (Q - 1))`` over the norms ``0 <= rho <= sqrt(D)``, so
``v(rho) = (1 + delta) y(rho)^2 e_M(rho) - rho^2`` bounds every bucket's error, and omega is
:func:`~mpicomp.compressors._radial.bucket_ratio_bound` of v over the norms ``0 <= rho <= sqrt(D)``
with ``sum rho_l^2 = D`` (a short last bucket counts as a full one; decoding drops its padding's
error, so for D < d the bound is loose). This is computed from the tabulated exact integrals (not a Monte Carlo
estimate), sampled at ``BOUND_POINTS`` norms. At D = d (one bucket, y_lo = y_hi, delta = 0) it is
the exact variance ``(y^2 e_M - d) / d`` at rho = sqrt(d). With many buckets the worst case puts
most of x in few buckets and leaves the rest nearly empty, and an empty bucket still decodes to a
codeword (``e_M(0) = 3.0`` at the defaults): omega = 0.68 at D = 16, 1.17 at D = 512, 1.51 at
D = 10^5, 1.67 at D = 2^20, while Gaussian-like vectors measure about 0.69.

Biased variant: per bucket ``E||VQ(b) - b||^2 = rho^2 - 2 rho^2 r_M + e_M``; the same bound gives
``1 - alpha``, and alpha is returned only when that is below 1: 0.58 at D = 16, 0.21 at 256, 0.04
at 1024, none from D = 2000 on (a vector held by one bucket leaves the others to be quantized to
codewords, and the error can exceed ``||x||^2``).

Wire (codec ``stovoq``): scalars ``N`` (biased) or ``N, y_lo, y_hi`` (unbiased); payload: L codes
of ``P`` bits (biased) or ``P + R`` bits ``i_l | k_l << P`` (unbiased), bucket by bucket. The
codebook costs no bits. Decoding regenerates only the L codewords it needs from the key.
"""

from __future__ import annotations

import numpy as np

from ..rng import RandomKey
from ..wire import Message, MessageError, pack_uint
from ._buckets import (
    BucketDecoder,
    bucket_count,
    check_integer,
    stochastic_round,
    unit_buckets,
    unpack_codes,
    write_codewords,
    zero_codes,
)
from ._codebook import (
    best_codewords,
    codebook_uniforms,
    gaussian_codebook,
    gaussian_codewords,
    key_uniforms,
)
from ._radial import bucket_ratio_bound, codebook_variance, radial_table
from .base import Compressor, check_scalar, require_key
from .registry import register

MAX_INDEX_BITS = 16  # 2^16 codewords of up to 64 coordinates: an 8 MiB codebook per call
MAX_RADIUS_BITS = 8
MAX_SIZE = 64
BOUND_POINTS = 2048  # bucket norms at which omega / alpha's bound is evaluated


def radius_grid(low: float, high: float, levels: int) -> np.ndarray:
    """The geometric grid ``low (high / low)^(k / (levels - 1))``, k = 0..levels-1, ending exactly at ``high``."""
    grid = low * (high / low) ** (np.arange(levels) / max(1, levels - 1))
    grid[-1] = high
    return grid


@register
class StoVoQ(BucketDecoder, Compressor):
    """StoVoQ: nearest codeword of a fresh Gaussian codebook (2^P words, from the key) per bucket; radial bias removed."""

    name = "stovoq"
    unbiased = True  # the default variant; unbiased=False sets it per instance

    def __init__(self, P: int = 13, R: int | None = None, size: int = 16, unbiased: bool = True) -> None:
        if not isinstance(unbiased, bool):
            raise ValueError(f"stovoq: unbiased must be True or False, got {unbiased!r}")  # noqa: TRY004
        self.unbiased = unbiased
        self.P = check_integer(self.name, "P (codeword index bits)", P, 1, MAX_INDEX_BITS)
        self.size = check_integer(self.name, "size (bucket dimension)", size, 2, MAX_SIZE)
        if unbiased:
            self.R = check_integer(
                self.name, "R (radius bits, unbiased variant)", 3 if R is None else R, 1, MAX_RADIUS_BITS
            )
        elif R not in (None, 0):
            raise ValueError(f"stovoq: the biased variant sends no radius, so R must be 0, got {R!r}")
        else:
            self.R = 0
        self.n_scalars = 3 if unbiased else 1
        self.scale = float(np.sqrt(codebook_variance(self.size)))

    @property
    def params(self) -> dict[str, object]:
        params: dict[str, object] = {"P": self.P, "R": self.R, "size": self.size}
        if not self.unbiased:
            params["unbiased"] = False
        return params

    @property
    def uses_shared_key(self) -> bool:
        """The codebook comes from the key: decoding needs the encoder's key."""
        return True

    @property
    def code_bits(self) -> int:
        """Bits per bucket: ``P + R``."""
        return self.P + self.R

    def expected_bits(self, d: int) -> float:
        return float(bucket_count(d, self.size) * self.code_bits)

    def _bucket_errors(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        """Norms ``0 .. sqrt(d)`` (in the table's variable t) and the per-bucket error bound v there."""
        table = radial_table(self.size, self.P)
        top = np.sqrt(d) / (np.sqrt(d) + np.sqrt(self.size))
        rho = np.sqrt(self.size) * (t := np.linspace(0.0, top, BOUND_POINTS)) / (1.0 - t)
        rho[-1] = np.sqrt(d)
        if not self.unbiased:
            return rho, table.distortion(rho)
        y = 1.0 / table.bias(rho)
        q = (y.max() / y.min()) ** (1.0 / (2**self.R - 1))
        delta = (q - 1.0) ** 2 / (4.0 * q) if bucket_count(d, self.size) > 1 else 0.0  # one bucket: y_lo = y_hi
        return rho, (1.0 + delta) * y * y * table.second_moment(rho) - rho * rho

    def omega(self, d: int) -> float | None:
        if not self.unbiased:
            return None
        return bucket_ratio_bound(*self._bucket_errors(d), d, self.size)

    def alpha(self, d: int) -> float | None:
        if self.unbiased:
            return None
        bound = bucket_ratio_bound(*self._bucket_errors(d), d, self.size)
        return 1.0 - bound if bound < 1.0 else None

    def _encode(self, x: np.ndarray, key: RandomKey) -> tuple[tuple[float, ...], np.ndarray]:
        d, m = x.size, 2**self.P
        n_buckets = bucket_count(d, self.size)
        norm, buckets = unit_buckets(self.name, x, self.size)
        if norm == 0.0:
            return (0.0, 1.0, 1.0)[: self.n_scalars], zero_codes(n_buckets, self.code_bits)
        buckets *= np.sqrt(d)
        codebook = gaussian_codebook(key.state, m, self.size, self.scale)
        index = best_codewords(buckets, codebook, -0.5 * np.einsum("jk,jk->j", codebook, codebook))
        if not self.unbiased:
            return (norm,), pack_uint(index, self.code_bits)
        y = 1.0 / radial_table(self.size, self.P).bias(np.linalg.norm(buckets, axis=1))
        low, high = float(y.min()), float(y.max())
        uniforms = key_uniforms(key.state, codebook_uniforms(m, self.size), n_buckets)
        level = stochastic_round(y, radius_grid(low, high, 2**self.R), uniforms)
        return (norm, low, high), pack_uint(index | level << self.P, self.code_bits)

    def _write_buckets(
        self, msg: Message, key: RandomKey | None, out: np.ndarray, accumulate: bool, scale: float
    ) -> None:
        """Bucket l: the key codebook's word ``c_{i_l}`` times its radius ``o_{k_l}`` (1 when biased),
        times ``||x|| / sqrt(D)``, written into ``out`` or (``accumulate``) ``scale`` times it added, in
        one kernel pass. The words come from the whole codebook when there are more buckets than
        words (2^P draws of ``size`` normals instead of one per bucket), else one by one."""
        state = require_key(self.name, key).state
        norm = check_scalar(msg.scalars[0], "stovoq norm")
        codes = unpack_codes(msg.payload, bucket_count(msg.d, self.size), self.code_bits, self.name)
        if norm == 0.0:
            if codes.any():
                raise MessageError("stovoq: nonzero codes in a message of norm 0")
            if accumulate:
                out += 0.0 * scale  # what adding the zero vector does, signed zeros included
            else:
                out.fill(0.0)
            return
        radii = np.ones(1)
        if self.unbiased:
            low = check_scalar(msg.scalars[1], "stovoq radius y_lo", np.finfo(np.float64).tiny)
            high = check_scalar(msg.scalars[2], "stovoq radius y_hi", low)
            with np.errstate(over="ignore", invalid="ignore"):
                radii = radius_grid(low, high, 2**self.R)
        if codes.size > 2**self.P:
            words = gaussian_codebook(state, 2**self.P, self.size, self.scale)
        else:  # bucket l's word is row l: its code's index becomes l
            words = gaussian_codewords(state, codes & (2**self.P - 1), self.size, self.scale)
            codes = np.arange(codes.size, dtype=codes.dtype) | (codes >> self.P << self.P)
        if not write_codewords(words, codes, self.P, radii, norm / np.sqrt(msg.d), out, accumulate, scale):
            raise MessageError("stovoq: norm and radii overflow float64")
