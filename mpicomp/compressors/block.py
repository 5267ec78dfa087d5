"""Block quantization: poster 000 Example 3.

``x = [v_1, ..., v_t]`` is split into blocks of ``size`` coordinates (the last one shorter) and
each block is randomly dithered with p = 2 and ``s`` levels (s = 1 in the poster):
``Q(x)_i = ||v_b||_2 (1/s) sign(x_i) floor(s |x_i| / ||v_b||_2 + xi_i)`` for i in block b.

Variance: each block obeys the p = 2 dithering bound (see :mod:`mpicomp.compressors.dither`),
``E||Q(v_b) - v_b||^2 <= min(d_b / (4 s^2), sqrt(d_b) / s) ||v_b||^2``, which grows with
``d_b``; summing over blocks, ``omega = min(m / (4 s^2), sqrt(m) / s)`` with
``m = min(size, d)``. The poster states ``max_b sqrt(d_b) + 1``, a weaker bound.

Wire (codec ``block``, no header scalars): payload = ``ceil(d / size)`` float64 block norms
(little-endian), then d codes of ``1 + ceil(log2(s + 1))`` bits laid out as in
:mod:`mpicomp.compressors.dither` (bit planes per group of 64 coordinates, whatever the block
size). The norm pass also rejects NaN and Inf input.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..rng import RandomKey, key_states
from ..wire import Message, MessageError
from ..wire.message import MAX_D
from ._level_codec import LevelQuantizer
from ._levels import (
    check_levels,
    decode_levels,
    encode_level_rows,
    encode_levels,
    linear_code,
    rounding_variance_bound,
)
from .dither import Dither
from .registry import register

_LARGEST = np.finfo(np.float64).max


@register
class Block(LevelQuantizer):
    """Block quantization: random dithering (p = 2, ``s`` levels) of each block of ``size`` coordinates."""

    name = "block"

    def __init__(self, size: int = 2000, s: int = 1) -> None:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 1 <= size <= MAX_D:
            raise ValueError(f"block: size (coordinates per block) must be an integer in 1..{MAX_D}, got {size!r}")
        self.size = int(size)
        self.s = check_levels(self.name, s, Dither.max_levels)
        self.code = linear_code(self.s)

    @property
    def params(self) -> dict[str, object]:
        return {"size": self.size, "s": self.s}

    def n_blocks(self, d: int) -> int:
        """Number of blocks of a d-dimensional vector: ``ceil(d / size)``."""
        return -(-d // self.size)

    def omega(self, d: int) -> float:
        return rounding_variance_bound(min(self.size, d), 1.0 / self.s, 2)

    def expected_bits(self, d: int) -> float:
        return float(64 * self.n_blocks(d) + d * self.code.bits)

    def payload_bytes(self, d: int) -> int:
        return 8 * self.n_blocks(d) + self.code.nbytes(d)

    def _encode_into(self, x: np.ndarray, key: RandomKey, payload: np.ndarray) -> tuple[float, ...]:
        if x.size == 0:
            return ()
        head = 8 * self.n_blocks(x.size)
        norms = encode_levels(x, key.state, self.code, self.size, 2, payload[head:])
        payload[:head] = norms.astype("<f8").view(np.uint8)
        return ()

    def _encode_rows_into(
        self, rows: np.ndarray, keys: Sequence[RandomKey], messages: np.ndarray, start: int
    ) -> list[tuple[float, ...]] | np.ndarray:
        """Short rows' block norms and codes by two kernel calls
        (:func:`~mpicomp.compressors._levels.encode_level_rows`), then the norms into the payloads' heads."""
        m, d = rows.shape
        if not self._sums_payload_rows(d):
            return super()._encode_rows_into(rows, keys, messages, start)
        head = 8 * self.n_blocks(d)
        norms = encode_level_rows(rows, key_states(keys), self.code, self.size, 2, messages, start + head)
        messages[:, start : start + head] = norms.astype("<f8").view(np.uint8)
        return np.empty((m, 0))

    def _row_codes(self, payloads: np.ndarray, scalars: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray, int]:
        """The block norms are the head of each payload, the codes the rest."""
        head = 8 * self.n_blocks(d)
        return payloads[:, head:], np.ascontiguousarray(payloads[:, :head]).view("<f8"), self.size

    def _decode_levels(self, msg: Message, out: np.ndarray, accumulate: bool, factor: float) -> None:
        payload = np.frombuffer(msg.payload, dtype=np.uint8)
        head = 8 * self.n_blocks(msg.d)
        if payload.size < head:
            raise MessageError(f"{self.spec}: payload of {payload.size} bytes cannot hold {head // 8} block norms")
        norms = np.frombuffer(msg.payload, dtype="<f8", count=head // 8)
        valid = (norms >= 0.0) & (norms <= _LARGEST)
        if not valid.all():
            bad = int(np.argmin(valid))
            raise MessageError(f"{self.name}: invalid norm {float(norms[bad])!r} of block {bad}")
        decode_levels(payload[head:], self.code, self.size, norms, self.name, out, accumulate, factor)
