"""The radial bias of Voronoi quantization against a fresh Gaussian codebook (StoVoQ), as exact integrals.

Setting (talk 001, second part; Leconte, Dieuleveut, Oyallon, Moulines, Pagès 2021): codewords
``c_1, ..., c_M`` i.i.d. ``N(0, alpha^2 I_d)`` with ``alpha^2 = 1 + 2/d``, and
``VQ(b) = argmin_j ||b - c_j||``. The codebook's law is unitarily invariant, so (the talk's
theorem) ``E VQ(b) = r_M(rho) b`` and ``e_M(rho) = E||VQ(b)||^2`` depend on ``rho = ||b||`` only.

Both are one-dimensional integrals. The distances ``S_j = ||b - c_j||`` are i.i.d.:
``S_j^2 / alpha^2`` is non-central chi-square (d degrees, non-centrality ``rho^2 / alpha^2``), so
``S_j`` has the density

    h(s) = (s / alpha^2) exp(-(s - rho)^2 / (2 alpha^2)) (s / rho)^(d/2 - 1) Ie_{d/2-1}(s rho / alpha^2)

(``Ie_nu(z) = e^-z I_nu(z)``, the scaled modified Bessel function) and CDF ``H``. The nearest
distance ``S = min_j S_j`` has density ``M h(s) (1 - H(s))^(M-1)``. Given ``S = s``, the nearest
codeword is distributed as ``c`` given ``||c - b|| = s``: ``c - b ~ N(-b, alpha^2 I)`` conditioned
on its norm, whose direction is von Mises-Fisher with mean ``-b / rho`` and concentration
``kappa = s rho / alpha^2``, of mean resultant ``A_d(kappa) = I_{d/2}(kappa) / I_{d/2-1}(kappa)``.
Hence ``E[c_J | S = s] = b - s A_d(kappa) b / rho`` and

    g(rho) := r_M(rho) rho = E[(rho - S) + S (1 - A_d(S rho / alpha^2))],
    e_M(rho)               = E[(rho - S)^2 + 2 rho S (1 - A_d(S rho / alpha^2))],

written so that nothing cancels when rho is large; ``E||VQ(b) - b||^2 = rho^2 - 2 rho g + e_M``.
Limits: at ``rho = 0`` (``A_d(kappa) ~ kappa / d``) ``r_M(0) = 1 - E[S^2] / (alpha^2 d)`` and
``e_M(0) = E[S^2]``, S the smallest codeword norm; as ``rho -> inf`` the nearest codeword is the
one of largest projection on ``b / rho``, so ``g -> alpha E[Z]`` and
``e_M -> alpha^2 (E[Z^2] + d - 1)``, Z the largest of M standard normals.

Table: ``TABLE_NODES`` nodes uniform in ``t = rho / (rho + sqrt(d))`` over [0, 1] (dense where
bucket norms usually are, ``rho ~ sqrt(d)``; ``t = 1`` is ``rho = inf``), holding
``q = r_M / (1 - t)`` and ``e_M``, both bounded and smooth in t; between nodes, linear
interpolation in t. Quadrature (:func:`_nearest_distance_moments`): H by cumulative Simpson on
``QUAD_POINTS`` points over ``rho -+ W`` (``P(||c|| > W) < 1e-30``), then the moments by Simpson on
as many points over the range where S lives. Checked in the tests against a Monte Carlo and
against the talk's limit ``M^(2/d) E||VQ(x) - x||^2 -> C_d p(x)^(-2/d)``. Nothing random: every
process computes the same table.

:func:`bucket_ratio_bound` turns a per-bucket error ``v(rho)`` into a bound on
``sum_l v(rho_l) / ||x||^2`` over all bucket norms allowed by the normalisation
``sum_l rho_l^2 = D`` (StoVoQ's omega, and its alpha when it has one).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy import special

from ._buckets import bucket_count

TABLE_NODES = 257
QUAD_POINTS = 1025
_TAIL = 1e-30  # mass left outside the quadrature ranges


def codebook_variance(d: int) -> float:
    """``alpha^2 = 1 + 2/d``, the codeword variance the talk finds optimal for Gaussian inputs."""
    return 1.0 + 2.0 / d


def _bessel_ratio(d: int, kappa: np.ndarray) -> np.ndarray:
    """``A_d(kappa) = I_{d/2}(kappa) / I_{d/2-1}(kappa)`` (0 at kappa = 0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = special.ive(d / 2, kappa) / special.ive(d / 2 - 1, kappa)
    return np.where(kappa > 0, ratio, 0.0)


def _distance_density(s: np.ndarray, rho: np.ndarray, d: int) -> np.ndarray:
    """Density h of ``S_j = ||b - c_j||`` at s (rows: one norm rho each, a column vector)."""
    from scipy import stats  # here and below, imported when a table is built: it costs every process 0.45 s

    a2 = codebook_variance(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        shape = np.nan_to_num((s / rho) ** (d / 2 - 1) * special.ive(d / 2 - 1, s * rho / a2))
        return np.where(
            rho > 0,
            (s / a2) * np.exp(-((s - rho) ** 2) / (2 * a2)) * shape,
            stats.chi.pdf(s / np.sqrt(a2), d) / np.sqrt(a2),
        )


def _grid(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return lo + (hi - lo) * np.linspace(0.0, 1.0, QUAD_POINTS)


def _nearest_distance_moments(rho: np.ndarray, d: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(g(rho), e_M(rho), E S^2)`` for finite norms ``rho`` by quadrature over the nearest distance S.

    A first pass over ``rho -+ W`` locates, per norm, where S lives (from ``M H(s) = 1e-9`` to
    ``(1 - H(s))^M = 1e-30``); the moments come from a second grid over that range alone, so that a
    nearest distance far below the first grid's spacing (small d, large M) is still resolved.
    """
    from scipy import integrate, stats

    a2 = codebook_variance(d)
    rho = rho[:, None]
    width = np.sqrt(a2 * stats.chi2.isf(_TAIL, d))
    s = _grid(np.maximum(0.0, rho - width), rho + width)
    cdf = integrate.cumulative_simpson(_distance_density(s, rho, d), x=s, axis=1, initial=0.0)
    start = np.maximum((m * cdf < 1e-9).sum(axis=1) - 1, 0)
    stop = np.minimum((m * -np.log1p(-np.minimum(cdf, 0.5)) < -np.log(_TAIL)).sum(axis=1), QUAD_POINTS - 1)
    rows = np.arange(rho.shape[0])
    s = _grid(s[rows, start][:, None], s[rows, stop][:, None])
    h = _distance_density(s, rho, d)
    cdf = np.clip(cdf[rows, start][:, None] + integrate.cumulative_simpson(h, x=s, axis=1, initial=0.0), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        density = m * h * np.exp((m - 1) * np.log1p(-cdf))
    slack = 1.0 - _bessel_ratio(d, s * rho / a2)
    g = integrate.simpson(density * ((rho - s) + s * slack), x=s, axis=1)
    e = integrate.simpson(density * ((rho - s) ** 2 + 2 * rho * s * slack), x=s, axis=1)
    return g, e, integrate.simpson(density * s * s, x=s, axis=1)


def _largest_normal_moments(m: int) -> tuple[float, float]:
    """``(E Z, E Z^2)`` for Z the largest of m standard normals, by quadrature of its density."""
    from scipy import integrate, stats

    z = np.linspace(-12.0, 12.0, 4 * QUAD_POINTS)
    density = m * stats.norm.pdf(z) * np.exp((m - 1) * stats.norm.logcdf(z))
    return float(integrate.simpson(density * z, x=z)), float(integrate.simpson(density * z * z, x=z))


@dataclass(frozen=True)
class RadialTable:
    """``r_M`` and ``e_M`` of an ``(M, d)`` Gaussian codebook at the nodes ``t`` (see the module docstring)."""

    d: int
    m: int
    t: np.ndarray
    q: np.ndarray
    e: np.ndarray

    def _t(self, rho: np.ndarray) -> np.ndarray:
        return rho / (rho + np.sqrt(self.d))

    def bias(self, rho: np.ndarray | float) -> np.ndarray:
        """``r_M(rho)``: ``E VQ(b) = r_M(||b||) b``."""
        t = self._t(np.asarray(rho, dtype=np.float64))
        return np.interp(t, self.t, self.q) * (1.0 - t)

    def second_moment(self, rho: np.ndarray | float) -> np.ndarray:
        """``e_M(rho) = E||VQ(b)||^2`` for ``||b|| = rho``."""
        return np.interp(self._t(np.asarray(rho, dtype=np.float64)), self.t, self.e)

    def distortion(self, rho: np.ndarray | float) -> np.ndarray:
        """``E||VQ(b) - b||^2 = rho^2 - 2 rho^2 r_M(rho) + e_M(rho)``."""
        rho = np.asarray(rho, dtype=np.float64)
        return rho * rho * (1.0 - 2.0 * self.bias(rho)) + self.second_moment(rho)


@cache
def radial_table(d: int, bits: int) -> RadialTable:
    """The table for buckets of dimension d and ``M = 2^bits`` codewords (computed once per process)."""
    m = 2**bits
    a2 = codebook_variance(d)
    root = np.sqrt(d)
    t = np.linspace(0.0, 1.0, TABLE_NODES)
    rho = root * t[:-1] / (1.0 - t[:-1])
    g, e, smallest = _nearest_distance_moments(rho, d, m)
    r = np.concatenate(([1.0 - smallest[0] / (a2 * d)], g[1:] / rho[1:]))
    mean, square = _largest_normal_moments(m)
    q = np.append(
        r / (1.0 - t[:-1]), np.sqrt(a2) * mean / root
    )  # at t = 1: r (rho + sqrt d) / sqrt d -> g(inf) / sqrt d
    e = np.append(e, a2 * (square + d - 1))
    for nodes in (t, q, e):
        nodes.flags.writeable = False  # cached and shared
    return RadialTable(d, m, t, q, e)


def bucket_ratio_bound(rho: np.ndarray, v: np.ndarray, d: int, size: int) -> float:
    """Bound on ``sum_l v(rho_l) / D`` over bucket norms with ``sum_l rho_l^2 = D``, L = ceil(D/size) buckets.

    ``rho`` (ascending, from 0 to ``sqrt D``) samples the allowed norms and ``v`` the per-bucket error
    there. For any lambda, ``sum_l v(rho_l) <= L max_rho (v - lambda rho^2) + lambda D``; with
    ``a = L / D`` the bound is ``min_lambda max_i [(1 - a rho_i^2) lambda + a v_i]``, a 1-D linear
    program whose value is the best two-point mixture: ``max a v_i`` over rows with
    ``a rho_i^2 = 1``, and over pairs with ``a rho_i^2 < 1 < a rho_j^2`` the mixture meeting the
    constraint, ``(s_i a v_j - s_j a v_i) / (s_i - s_j)`` with ``s = 1 - a rho^2``.
    """
    a = bucket_count(d, size) / d
    slope = 1.0 - a * rho * rho
    slope[np.abs(slope) < 1e-12] = 0.0
    level = a * v
    below, above = slope > 0, slope < 0
    best = float(level[slope == 0].max(initial=-np.inf))
    if below.any() and above.any():
        si, vi = slope[below][:, None], level[below][:, None]
        sj, vj = slope[above][None, :], level[above][None, :]
        best = max(best, float(((si * vj - sj * vi) / (si - sj)).max()))
    return best
