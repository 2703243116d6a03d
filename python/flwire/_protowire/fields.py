"""Protobuf wire-format primitives: varints, field keys and a bounds-checked field walker.

This is the one place flwire reads and writes raw protobuf encoding; everything
else (the tensor codec, the envelope splitter) builds on these helpers. Every
read is checked against the end of its region, so a truncated or hostile input
raises :class:`SerializationException` instead of reading past the buffer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from flwire.exceptions import SerializationException

VARINT = 0
I64 = 1
LEN = 2
SGROUP = 3
EGROUP = 4
I32 = 5

_WIRE_TYPE_NAMES = {VARINT: "varint", I64: "fixed64", LEN: "length-delimited", I32: "fixed32"}
_UINT64_MASK = (1 << 64) - 1
#: A varint holds at most 64 bits: 10 bytes of 7 bits.
MAX_VARINT_BYTES = 10
#: Deepest nesting of (deprecated) groups the walker skips before refusing the input.
MAX_GROUP_DEPTH = 32


def encode_varint(value: int) -> bytes:
    """Encode an integer as a protobuf varint (negative values as 64-bit two's complement)."""
    if 0 <= value < 0x80:
        return bytes((value,))
    value &= _UINT64_MASK
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field_key(number: int, wire_type: int) -> bytes:
    """Encoded key (tag) of a field."""
    return encode_varint((number << 3) | wire_type)


def len_field(number: int, payload_size: int) -> bytes:
    """Key and length prefix of a length-delimited field whose payload follows."""
    return field_key(number, LEN) + encode_varint(payload_size)


def as_signed64(value: int) -> int:
    """Reinterpret a decoded varint as int64."""
    return value - (1 << 64) if value >= 1 << 63 else value


def decode_varint(buf: memoryview, pos: int, end: int, what: str) -> tuple[int, int]:
    """Decode a varint at ``pos``; return (value, next position). ``what`` names it in errors."""
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise SerializationException(f"truncated varint in {what} at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & _UINT64_MASK, pos
        shift += 7
        if shift >= 7 * MAX_VARINT_BYTES:
            raise SerializationException(f"varint longer than 10 bytes in {what} at byte {pos}")


class Field(NamedTuple):
    """One decoded field: ``value`` is the integer for varint/fixed types; for
    length-delimited fields ``start``/``end`` bound the payload in the buffer.
    ``key_start`` is where the field's key begins (the field spans
    ``key_start:end``)."""

    number: int
    wire_type: int
    value: int
    start: int
    end: int
    key_start: int = 0


def iter_fields(buf: memoryview, start: int, end: int, what: str) -> Iterator[Field]:
    """Walk the fields of the message occupying ``buf[start:end]``.

    Groups (deprecated wire types 3/4) are skipped as unknown fields, like stock
    parsers do. Any length that runs past ``end`` raises SerializationException.
    """
    pos = start
    # One-byte varints (keys, small values and lengths) are read inline: walking
    # costs per field, and most fields of a tensor are small.
    while pos < end:
        key_start = pos
        key = buf[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = decode_varint(buf, pos, end, what)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise SerializationException(f"field number 0 in {what} at byte {pos}")
        if wire_type == VARINT:
            if pos < end and buf[pos] < 0x80:
                value = buf[pos]
                pos += 1
            else:
                value, pos = decode_varint(buf, pos, end, what)
            yield Field(number, wire_type, value, pos, pos, key_start)
        elif wire_type == LEN:
            if pos < end and buf[pos] < 0x80:
                size = buf[pos]
                pos += 1
            else:
                size, pos = decode_varint(buf, pos, end, what)
            if size > end - pos:
                raise SerializationException(
                    f"field {number} of {what} declares {size} bytes but only "
                    f"{end - pos} remain (truncated input?)"
                )
            yield Field(number, wire_type, size, pos, pos + size, key_start)
            pos += size
        elif wire_type in (I32, I64):
            width = 4 if wire_type == I32 else 8
            if width > end - pos:
                raise SerializationException(f"truncated fixed-width field {number} in {what}")
            value = int.from_bytes(buf[pos : pos + width], "little")
            yield Field(number, wire_type, value, pos, pos + width, key_start)
            pos += width
        elif wire_type == SGROUP:
            pos = _skip_group(buf, pos, end, number, what, 1)
        else:
            raise SerializationException(
                f"invalid wire type {wire_type} for field {number} in {what} at byte {pos}"
            )


def _skip_group(buf: memoryview, pos: int, end: int, number: int, what: str, depth: int) -> int:
    if depth > MAX_GROUP_DEPTH:
        raise SerializationException(f"groups nested deeper than {MAX_GROUP_DEPTH} in {what}")
    while pos < end:
        key, pos = decode_varint(buf, pos, end, what)
        inner, wire_type = key >> 3, key & 7
        if wire_type == EGROUP:
            if inner != number:
                raise SerializationException(f"mismatched end of group {number} in {what}")
            return pos
        if wire_type == SGROUP:
            pos = _skip_group(buf, pos, end, inner, what, depth + 1)
        elif wire_type == VARINT:
            _, pos = decode_varint(buf, pos, end, what)
        elif wire_type == LEN:
            size, pos = decode_varint(buf, pos, end, what)
            pos += size
        elif wire_type in (I32, I64):
            pos += 4 if wire_type == I32 else 8
        else:
            raise SerializationException(f"invalid wire type {wire_type} inside group in {what}")
        if pos > end:
            raise SerializationException(f"truncated group {number} in {what}")
    raise SerializationException(f"unterminated group {number} in {what}")


def expect_wire_type(field: Field, expected: int, what: str) -> None:
    """Raise if a known field arrived with the wrong wire type."""
    if field.wire_type != expected:
        raise SerializationException(
            f"field {field.number} of {what} has wire type "
            f"{_WIRE_TYPE_NAMES.get(field.wire_type, field.wire_type)}, expected "
            f"{_WIRE_TYPE_NAMES[expected]}"
        )


def decode_packed_varints(
    buf: memoryview,
    start: int,
    end: int,
    what: str,
    max_count: int | None = None,
    too_many: str = "",
) -> list[int]:
    """Decode a packed repeated varint payload; past ``max_count`` values, raise
    at once, with ``too_many`` as the message (before building a list of what a
    few megabytes can hold)."""
    message = too_many or f"{what} holds more than {max_count} values"
    if max_count is not None and end - start > MAX_VARINT_BYTES * max_count:
        raise SerializationException(message)
    values = []
    pos = start
    while pos < end:
        value, pos = decode_varint(buf, pos, end, what)
        values.append(value)
        if max_count is not None and len(values) > max_count:
            raise SerializationException(message)
    return values
