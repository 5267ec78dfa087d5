"""Several compressed vectors in one upload or downlink: a concatenation of self-delimiting messages.

Methods that send more than one vector per exchange (VR-DIANA's step and refresh coin) join the
messages with :func:`bundle` and take them apart with :func:`unbundle`, so they never touch the
wire format themselves; every part is counted by the byte accounting like any message.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..wire import MessageError, split_messages


def bundle(messages: Sequence[bytes | memoryview]) -> bytes:
    """One buffer holding ``messages`` in order."""
    return b"".join(messages)


def unbundle(buf: bytes | memoryview, count: int, what: str) -> list[memoryview]:
    """The ``count`` messages of a bundle; :class:`MessageError` naming ``what`` if it holds another number."""
    parts = split_messages(buf)
    if len(parts) != count:
        raise MessageError(f"{what} holds {len(parts)} messages, expected {count}")
    return parts
