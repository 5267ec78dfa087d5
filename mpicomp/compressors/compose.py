"""Composition ``C ∘ S`` of a compressor C with a sparsifier S (poster 004: ``natural ∘ randk``).

S (Rand-K or Top-K) picks k indices and their values ``v = S(x)_I``; C compresses v as a dense
k-vector. Payload: S's index section (empty for Rand-K, whose indices derive from the key), then
C's own complete message for v (nested, with its header and CRC). C draws its randomness from the
key's stream shifted by ``OUTER_STREAM_OFFSET``, independent of S's.

Bounds, with ``k = k(d)`` and C evaluated in dimension k:

* both unbiased: ``E||C(S(x))||^2 <= (omega_C + 1) E||S(x)||^2 <= (omega_C + 1)(omega_S + 1) ||x||^2``,
  so omega = ``(omega_C + 1)(omega_S + 1) - 1``.
* S = Top-K: ``C(v) - v`` lives on I and ``v - x`` off I, so
  ``E||C(v) - x||^2 = E||C(v) - v||^2 + ||x||^2 - ||v||^2`` with ``||v||^2 >= (k/d) ||x||^2``.
  C contractive: ``<= ||x||^2 - alpha_C ||v||^2``, alpha = ``alpha_C k/d``; C unbiased with
  ``omega_C < 1``: ``<= ||x||^2 - (1 - omega_C) ||v||^2``, alpha = ``(1 - omega_C) k/d``.
"""

from __future__ import annotations

import numpy as np

from ..rng import RandomKey
from ..wire import Message
from .base import Compressor
from .registry import register
from .sparse import Sparsifier, TopK, add_entries

OUTER_STREAM_OFFSET = 1 << 32


def outer_key(key: RandomKey) -> RandomKey:
    """The key of the outer compressor: same seed, round and worker, stream shifted by OUTER_STREAM_OFFSET."""
    return key.with_stream(key.stream + OUTER_STREAM_OFFSET)


@register
class Compose(Compressor):
    """``outer ∘ inner``: the outer compressor applied to the k values the inner sparsifier keeps."""

    name = "compose"

    def __init__(self, outer: Compressor, inner: Compressor) -> None:
        if not isinstance(outer, Compressor):
            raise ValueError(f"compose: the outer factor must be a Compressor, got {outer!r}")  # noqa: TRY004
        if not isinstance(inner, Sparsifier):
            raise ValueError(  # noqa: TRY004  (a spec such as "natural∘sign" is a bad value, not a bad type)
                f"compose: the inner (right-hand) factor must be a sparsifier (randk or topk), got {inner!r}"
            )
        self.outer = outer
        self.inner = inner
        self.checks_finite = inner.checks_finite  # Top-K's selection reads (and checks) all of x
        self.unbiased = outer.unbiased and inner.unbiased

    @property
    def params(self) -> dict[str, object]:
        return {"outer": self.outer.spec, "inner": self.inner.spec}

    @property
    def spec(self) -> str:
        return f"{self.outer.spec}∘{self.inner.spec}"

    @property
    def uses_shared_key(self) -> bool:
        return self.inner.uses_shared_key

    def omega(self, d: int) -> float | None:
        omega_outer = self.outer.omega(self.inner.count(d))
        omega_inner = self.inner.omega(d)
        if omega_outer is None or omega_inner is None:
            return None
        return (omega_outer + 1.0) * (omega_inner + 1.0) - 1.0

    def alpha(self, d: int) -> float | None:
        if not isinstance(self.inner, TopK):
            return None
        k = self.inner.count(d)
        alpha_outer = self.outer.alpha(k)
        if alpha_outer is not None:
            return alpha_outer * k / d
        omega_outer = self.outer.omega(k)
        if omega_outer is not None and omega_outer < 1.0:
            return (1.0 - omega_outer) * k / d
        return None

    def expected_bits(self, d: int) -> float:
        k = self.inner.count(d)
        return self.inner.index_payload_bits(d) + self.outer.expected_bits(k) + self.outer.header_bits()

    def _encode(self, x: np.ndarray, key: RandomKey) -> tuple[tuple[float, ...], np.ndarray]:
        indices, values = self.inner.select(x, key)
        nested = np.frombuffer(self.outer.encode(values, outer_key(key)), dtype=np.uint8)
        return (), np.concatenate((self.inner.encode_indices(indices, x.size), nested))

    def _entries(self, msg: Message, key: RandomKey | None) -> tuple[np.ndarray, np.ndarray]:
        """(indices, decoded values) of a message: the inner section's indices, the nested message's values."""
        split = self.inner.index_nbytes(msg.d)
        indices = self.inner.decode_indices(msg.payload[:split], msg.d, key)
        nested_key = outer_key(key) if key is not None else None
        return indices, self.outer.decode(msg.payload[split:], indices.size, nested_key)

    def _decode_into(self, msg: Message, key: RandomKey | None, out: np.ndarray, accumulate: bool) -> None:
        add_entries(out, *self._entries(msg, key), accumulate)

    def _decode_scaled_add(self, msg: Message, key: RandomKey | None, out: np.ndarray, scale: float) -> None:
        add_entries(out, *self._entries(msg, key), True, scale)
