"""Wire format: message framing, bit packing, and the decoding error type."""

from .bitpack import index_bits, pack_signs, pack_uint, packed_nbytes, unpack_signs, unpack_uint
from .errors import MessageError
from .message import (
    HEADER_BYTES,
    Message,
    message_length,
    overhead_bytes,
    pack_message,
    split_messages,
    unpack_message,
)

__all__ = [
    "HEADER_BYTES",
    "Message",
    "MessageError",
    "index_bits",
    "message_length",
    "overhead_bytes",
    "pack_message",
    "pack_signs",
    "pack_uint",
    "packed_nbytes",
    "split_messages",
    "unpack_message",
    "unpack_signs",
    "unpack_uint",
]
