"""``coinflip(p)``: Bernoulli sparsification in plain NumPy.

Each coordinate is kept with probability p, independently, and scaled by 1/p, so
``E C(x) = x`` and ``E||C(x) - x||^2 = (1/p - 1) ||x||^2``: omega = (1 - p)/p. The payload is a
bitmap of the kept coordinates (d bits, LSB first) and their values as little-endian float64,
``d + 64 p d`` bits in expectation.
"""

from __future__ import annotations

import numpy as np

from mpicomp.compressors import Compressor, MessageError
from mpicomp.rng import RandomKey
from mpicomp.wire import Message


class CoinFlip(Compressor):
    """Bernoulli sparsification: each coordinate kept with probability p and scaled by 1/p (unbiased)."""

    name = "coinflip"
    unbiased = True

    def __init__(self, p: float = 0.5) -> None:
        if not (isinstance(p, float | int) and 0 < p <= 1):
            raise ValueError(f"coinflip: p must be a probability in (0, 1], got {p!r}")
        self.p = float(p)

    @property
    def params(self) -> dict[str, float]:
        return {"p": self.p}

    def omega(self, d: int) -> float:
        return (1.0 - self.p) / self.p

    def expected_bits(self, d: int) -> float:
        return d + 64 * self.p * d

    def _encode(self, x: np.ndarray, key: RandomKey) -> tuple[tuple[float, ...], np.ndarray]:
        keep = key.uniform(x.size) < self.p
        values = (x[keep].astype(np.float64) / self.p).astype("<f8")
        return (), np.concatenate([np.packbits(keep, bitorder="little"), values.view(np.uint8)])

    def _decode(self, msg: Message, key: RandomKey | None) -> np.ndarray:
        payload = np.frombuffer(msg.payload, dtype=np.uint8)
        mask_bytes = -(-msg.d // 8)
        if payload.size < mask_bytes:
            raise MessageError(f"coinflip: payload of {payload.size} bytes is shorter than the {mask_bytes}-byte mask")
        bits = np.unpackbits(payload[:mask_bytes], bitorder="little")
        if bits[msg.d :].any():
            raise MessageError("coinflip: nonzero padding bits after the mask")
        keep = bits[: msg.d].astype(bool)
        values = payload[mask_bytes:]
        if values.size != 8 * np.count_nonzero(keep):
            raise MessageError(
                f"coinflip: {np.count_nonzero(keep)} kept coordinates need {8 * np.count_nonzero(keep)} value bytes, "
                f"the payload has {values.size}"
            )
        kept = values.view("<f8")
        if not np.isfinite(kept).all():
            raise MessageError("coinflip: non-finite value in the payload")
        out = np.zeros(msg.d)
        out[keep] = kept
        return out
