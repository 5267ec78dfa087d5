"""Straightforward NumPy versions of the quantizer codecs (natural, dither, natdither, block), for speed
comparisons in ``tools/bench_kernels.py``.

``NUMPY_REFERENCES[spec] = (encode, decode)``, the convention of ``numpy_reference_sparse``:

* ``encode(x, key) -> (scalars, payload)``: the codec scalars and payload bytes of the message body,
* ``decode(scalars, payload, d, key) -> float64 vector``.

They draw the same per-coordinate random words as the numba kernels (``numpy_reference_sparse.uniforms``,
cut to the 52-bit grid uniform of ``mpicomp.compressors._levels``), apply the same roundings and lay
the codes out the same way (dither, natdither, block: bit planes per group of 64 coordinates, see
:func:`pack_planes`), so the payloads equal the numba ones bit for bit whenever the norms agree to the
last bit (always for natural compression and p = inf; for p = 2 when the sums of squares are exact,
e.g. for integer-valued vectors). Decoders trust their input.
"""

from __future__ import annotations

import numpy as np
from numpy_reference_sparse import uniforms

from mpicomp.rng import RandomKey

Encoded = tuple[tuple[float, ...], bytes]
NATURAL_LIMIT = 2.0**127


def pack_planes(codes: np.ndarray, width: int) -> bytes:
    """Codes of ``width`` bits in the bit-plane layout of ``mpicomp.compressors._levels``: per group of
    64 coordinates (the last one shorter), ``width`` fields of the group's length, field t holding
    bit t of each code; all fields one LSB-first bit stream."""
    d = codes.size
    full = d - d % 64
    planes = np.empty((width, d), dtype=np.uint8)
    for t in range(width):
        planes[t] = (codes >> t) & 1
    groups = planes[:, :full].reshape(width, -1, 64).transpose(1, 0, 2)  # (group, plane, coordinate)
    stream = np.concatenate((groups.ravel(), planes[:, full:].ravel()))
    return np.packbits(stream, bitorder="little").tobytes()


def unpack_planes(payload: bytes, d: int, width: int) -> np.ndarray:
    """Inverse of :func:`pack_planes`."""
    stream = np.unpackbits(np.frombuffer(payload, dtype=np.uint8), count=d * width, bitorder="little")
    full = d - d % 64
    groups = stream[: full * width].reshape(-1, width, 64).transpose(1, 0, 2).reshape(width, full)
    planes = np.concatenate((groups, stream[full * width :].reshape(width, d - full)), axis=1)
    codes = np.zeros(d, dtype=np.int64)
    for t in range(width):
        codes |= planes[t].astype(np.int64) << t
    return codes


def grid_uniforms(key: RandomKey, n: int) -> np.ndarray:
    """The kernels' uniforms ``(u >> 12) 2^-52``: the 53-bit uniforms cut to 52 bits (exact)."""
    return np.floor(uniforms(key, n) * 2.0**52) * 2.0**-52


def linear_levels(r: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Random dithering of ``r >= 0`` to integers: ``floor(r) + [u < r - floor(r)]``."""
    low = np.floor(r)
    return (low + (u < r - low)).astype(np.int64)


def pow2_levels(r: np.ndarray, u: np.ndarray, e_min: int) -> np.ndarray:
    """Unbiased rounding of ``r >= 0`` to 0 or ``2^(e_min + level - 1)``: between powers of two, and
    between 0 and ``2^e_min`` below it."""
    mantissa, exponent = np.frexp(r)  # r = mantissa 2^exponent, mantissa in [0.5, 1)
    floor_log2 = np.where(r > 0, exponent - 1, e_min - 1)
    up = u < 2.0 * mantissa - 1.0
    tiny = u < np.ldexp(r, -e_min)
    return np.where(floor_log2 >= e_min, floor_log2 - e_min + 1 + up, tiny).astype(np.int64)


def sign_codes(x: np.ndarray, levels: np.ndarray, level_bits: int) -> np.ndarray:
    """``level | negative << level_bits`` with ``negative`` only for nonzero levels."""
    return levels | (((x < 0) & (levels > 0)).astype(np.int64) << level_bits)


def split_codes(codes: np.ndarray, level_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(levels, sign factors ±1) of codes built by :func:`sign_codes`."""
    return codes & ((1 << level_bits) - 1), 1.0 - 2.0 * (codes >> level_bits)


def natural_encode(x: np.ndarray, key: RandomKey) -> Encoded:
    magnitude = np.abs(x.astype(np.float64))
    if np.any(magnitude > NATURAL_LIMIT):
        raise ValueError("natural: magnitudes above 2^127 cannot be encoded")
    levels = pow2_levels(magnitude, grid_uniforms(key, x.size), -126)
    negative = (x < 0) & (levels > 0)
    return (), levels.astype(np.uint8).tobytes() + np.packbits(negative, bitorder="little").tobytes()


def natural_decode(scalars: tuple[float, ...], payload: bytes, d: int, key: RandomKey) -> np.ndarray:
    raw = np.frombuffer(payload, dtype=np.uint8)
    levels = raw[:d].astype(np.int64)
    signs = 1.0 - 2.0 * np.unpackbits(raw[d:], count=d, bitorder="little")
    return signs * np.where(levels > 0, np.ldexp(1.0, levels - 127), 0.0)


def dither_encode(x: np.ndarray, key: RandomKey, s: int, p: float) -> Encoded:
    norm = float(np.linalg.norm(x.astype(np.float64), p))
    ratio = np.minimum(np.abs(x) * (s / norm), s) if norm > 0 else np.zeros(x.size)
    codes = sign_codes(x, linear_levels(ratio, grid_uniforms(key, x.size)), s.bit_length())
    return (norm,), pack_planes(codes, s.bit_length() + 1)


def dither_decode(scalars: tuple[float, ...], payload: bytes, d: int, key: RandomKey, s: int) -> np.ndarray:
    levels, signs = split_codes(unpack_planes(payload, d, s.bit_length() + 1), s.bit_length())
    return signs * levels * (scalars[0] / s)


def natdither_encode(x: np.ndarray, key: RandomKey, s: int, p: float) -> Encoded:
    norm = float(np.linalg.norm(x.astype(np.float64), p))
    ratio = np.minimum(np.abs(x) * (1.0 / norm), 1.0) if norm > 0 else np.zeros(x.size)
    codes = sign_codes(x, pow2_levels(ratio, grid_uniforms(key, x.size), 1 - s), s.bit_length())
    return (norm,), pack_planes(codes, s.bit_length() + 1)


def natdither_decode(scalars: tuple[float, ...], payload: bytes, d: int, key: RandomKey, s: int) -> np.ndarray:
    levels, signs = split_codes(unpack_planes(payload, d, s.bit_length() + 1), s.bit_length())
    return signs * np.where(levels > 0, np.ldexp(scalars[0], levels - s), 0.0)


def block_encode(x: np.ndarray, key: RandomKey, size: int, s: int) -> Encoded:
    starts = np.arange(0, x.size, size)
    values = x.astype(np.float64)
    norms = np.sqrt(np.add.reduceat(values * values, starts))
    multipliers = np.divide(s, norms, out=np.zeros_like(norms), where=norms > 0)
    ratio = np.minimum(np.abs(values) * np.repeat(multipliers, np.diff(np.append(starts, x.size))), s)
    codes = sign_codes(x, linear_levels(ratio, grid_uniforms(key, x.size)), s.bit_length())
    return (), norms.astype("<f8").tobytes() + pack_planes(codes, s.bit_length() + 1)


def block_decode(scalars: tuple[float, ...], payload: bytes, d: int, key: RandomKey, size: int, s: int) -> np.ndarray:
    nblocks = -(-d // size)
    norms = np.frombuffer(payload[: 8 * nblocks], dtype="<f8")
    levels, signs = split_codes(unpack_planes(payload[8 * nblocks :], d, s.bit_length() + 1), s.bit_length())
    return signs * levels * np.repeat(norms / s, size)[:d]


NUMPY_REFERENCES = {
    "natural": (natural_encode, natural_decode),
    "dither(s=1,p=2)": (
        lambda x, key: dither_encode(x, key, 1, 2),
        lambda scalars, payload, d, key: dither_decode(scalars, payload, d, key, 1),
    ),
    "dither(s=15,p=inf)": (
        lambda x, key: dither_encode(x, key, 15, np.inf),
        lambda scalars, payload, d, key: dither_decode(scalars, payload, d, key, 15),
    ),
    "natdither(s=3,p=2)": (
        lambda x, key: natdither_encode(x, key, 3, 2),
        lambda scalars, payload, d, key: natdither_decode(scalars, payload, d, key, 3),
    ),
    "block(size=2000,s=1)": (
        lambda x, key: block_encode(x, key, 2000, 1),
        lambda scalars, payload, d, key: block_decode(scalars, payload, d, key, 2000, 1),
    ),
}
