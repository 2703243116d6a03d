"""Private wire primitives shared by tensor maps, envelopes and transfer parts:
protobuf varints, keys and a bounds-checked field walker, alignment padding,
checked bytes-like and UTF-8 handling, and CRC-32C.

This package is internal (its API may change in any release); it is the one
place flwire reads and writes raw protobuf encoding.
"""

from flwire._protowire.buffers import byte_view, decode_utf8, utf8
from flwire._protowire.checksum import crc32c, crc32c_around, crc32c_combine
from flwire._protowire.fields import (
    EGROUP,
    I32,
    I64,
    LEN,
    SGROUP,
    VARINT,
    Field,
    as_signed64,
    decode_packed_varints,
    decode_varint,
    encode_varint,
    expect_wire_type,
    field_key,
    iter_fields,
    len_field,
)
from flwire._protowire.padding import ALIGNMENT, padding_field
from flwire._protowire.segments import Segments

__all__ = [
    "ALIGNMENT",
    "EGROUP",
    "I32",
    "I64",
    "LEN",
    "SGROUP",
    "Segments",
    "VARINT",
    "Field",
    "as_signed64",
    "byte_view",
    "crc32c",
    "crc32c_around",
    "crc32c_combine",
    "decode_packed_varints",
    "decode_utf8",
    "decode_varint",
    "encode_varint",
    "expect_wire_type",
    "field_key",
    "iter_fields",
    "len_field",
    "padding_field",
    "utf8",
]
