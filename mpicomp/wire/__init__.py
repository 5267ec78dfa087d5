"""Wire format: message framing, bit packing, and the decoding error type."""

from .bitpack import (
    index_bits,
    pack_signs,
    pack_uint,
    packed_nbytes,
    unpack_signs,
    unpack_uint,
)
from .elias import ELIAS_CODES, decode_elias, elias_code_bits, encode_elias
from .errors import MessageError
from .message import (
    HEADER_BYTES,
    Message,
    alike_headers,
    byte_view,
    frame_message,
    frame_messages,
    message_length,
    message_sizes,
    overhead_bytes,
    pack_message,
    payload_offset,
    split_messages,
    unpack_message,
    unpack_uniform,
)

__all__ = [
    "ELIAS_CODES",
    "HEADER_BYTES",
    "Message",
    "MessageError",
    "alike_headers",
    "byte_view",
    "decode_elias",
    "elias_code_bits",
    "encode_elias",
    "frame_message",
    "frame_messages",
    "index_bits",
    "message_length",
    "message_sizes",
    "overhead_bytes",
    "pack_message",
    "pack_signs",
    "pack_uint",
    "packed_nbytes",
    "payload_offset",
    "split_messages",
    "unpack_message",
    "unpack_signs",
    "unpack_uniform",
    "unpack_uint",
]
