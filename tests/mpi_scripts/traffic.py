"""Deterministic test traffic: the uploads and downlinks of a round, the same on every rank.

A message is either a real identity-compressor message or a crafted frame with a random
codec id, dimension, scalars, payload and CRC flag; an upload concatenates 1-3 of them or
is empty (a skipped worker, about 30% of uploads). Round :data:`ALL_EMPTY_ROUND` has only
empty uploads and round :data:`EMPTY_DOWNLINK_ROUND` an empty downlink.
"""

from __future__ import annotations

import numpy as np

from mpicomp.compressors import make
from mpicomp.rng import RandomKey
from mpicomp.wire import pack_message, split_messages, unpack_message

ALL_EMPTY_ROUND = 2
EMPTY_DOWNLINK_ROUND = 3
DOWNLINK = -1
_IDENTITY = {"float64": make("identity"), "float32": make("identity(dtype='float32')")}


def _message(rng: np.random.Generator, seed: int, rnd: int, worker: int) -> bytes:
    if rng.random() < 0.5:
        codec = _IDENTITY["float64" if rng.random() < 0.5 else "float32"]
        return codec.encode(rng.standard_normal(int(rng.integers(0, 40))), RandomKey(seed, rnd, worker))
    scalars = tuple(rng.standard_normal(int(rng.integers(0, 4))).tolist())
    payload = rng.bytes(int(rng.integers(0, 120)))
    return pack_message(
        int(rng.integers(1, 14)), int(rng.integers(0, 1000)), scalars, payload, bool(rng.random() < 0.5)
    )


def traffic(seed: int, rnd: int, worker: int) -> bytes:
    """Worker ``worker``'s upload in round ``rnd`` (``worker = DOWNLINK`` for the master's downlink)."""
    rng = np.random.default_rng([seed, rnd, worker + 1])
    if worker == DOWNLINK and rnd == EMPTY_DOWNLINK_ROUND:
        return b""
    if worker != DOWNLINK and (rnd == ALL_EMPTY_ROUND or rng.random() < 0.3):
        return b""
    return b"".join(_message(rng, seed, rnd, worker) for _ in range(int(rng.integers(1, 4))))


def payload_and_header(buf: bytes) -> tuple[int, int]:
    """(payload, header) bytes through the full decoder path (CRC checked): the reference count."""
    messages = [unpack_message(view) for view in split_messages(buf)]
    return sum(len(m.payload) for m in messages), sum(m.overhead_bytes for m in messages)
