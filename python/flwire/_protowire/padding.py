"""Padding fields that align the data following them (wire format, section 13)."""

from __future__ import annotations

from collections.abc import Callable

from flwire._protowire.fields import LEN, encode_varint, field_key

#: Writers align uncompressed tensor data to this many bytes from the start of
#: the outermost message, so readers can hand out aligned zero-copy views.
ALIGNMENT = 64


def padding_field(number: int, offset_after: Callable[[int], int], align: int = ALIGNMENT) -> bytes:
    """The shortest ``bytes`` field ``number`` of zeros after which the data lands
    aligned: ``offset_after(n)`` is the data's offset when the field takes ``n``
    bytes on the wire. Returns b"" when the data is aligned without padding."""
    if offset_after(0) % align == 0:
        return b""
    key = field_key(number, LEN)

    def field(size: int) -> bytes:
        return key + encode_varint(size) + bytes(size)

    # Direct guess: key + 1-byte length + size bytes closes the gap. At least one
    # byte of content: an empty bytes field is a proto3 default, which a protobuf
    # runtime drops when it re-serializes the message.
    gap = -offset_after(0) % align
    guess = field((gap - len(key) - 1) % align or align)
    if offset_after(len(guess)) % align == 0:
        return guess
    # Lengths elsewhere grew with the padding (a varint crossed 128): search.
    for size in range(1, 2 * align + 2):
        candidate = field(size)
        if offset_after(len(candidate)) % align == 0:
            return candidate
    raise AssertionError("unreachable: some padding length always aligns")
