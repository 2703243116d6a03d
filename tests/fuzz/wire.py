"""A small protobuf wire-format tree, written apart from flwire's own walker so
that the fuzzer does not share its assumptions: parse bytes into fields
(descending into length-delimited fields that parse as messages), edit them,
and serialize them back, optionally with overlong varints or lying lengths.
"""

from __future__ import annotations

from dataclasses import dataclass

VARINT, I64, LEN, I32 = 0, 1, 2, 5
MASK64 = (1 << 64) - 1
#: Deepest nesting parsed as messages (Envelope > body > weights > Tensor > lossy).
MAX_DEPTH = 6


class WireError(ValueError):
    """Bytes that do not parse as a protobuf message (the tree parser only)."""


def encode_varint(value: int, pad: int = 0) -> bytes:
    """``value`` (taken modulo 2^64) as a varint, with ``pad`` extra
    continuation bytes: an overlong encoding of the same value (more than 10
    bytes in all is invalid protobuf, which is the point of some mutations)."""
    value &= MASK64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            break
    if pad > 0:
        out[-1] |= 0x80
        out += b"\x80" * (pad - 1) + b"\x00"
    return bytes(out)


def decode_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it); at most 10 bytes."""
    value = shift = 0
    for i in range(10):
        if pos + i >= len(buf):
            raise WireError("truncated varint")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value & MASK64, pos + i + 1
        shift += 7
    raise WireError("varint longer than 10 bytes")


@dataclass
class Node:
    """One field. ``value`` is the varint's value, the 4 or 8 fixed bytes, or a
    length-delimited field's payload (``children`` when it parsed as a message;
    serializing then writes the children). The ``*_pad`` fields make the key,
    length or varint value overlong; ``len_delta`` makes the length lie."""

    number: int
    wire: int
    value: int | bytes
    children: list[Node] | None = None
    key_pad: int = 0
    len_pad: int = 0
    val_pad: int = 0
    len_delta: int = 0

    def payload(self) -> bytes:
        if self.children is not None:
            return serialize(self.children)
        assert isinstance(self.value, bytes)
        return self.value


def parse(buf: bytes, depth: int = 0) -> list[Node]:
    """The fields of ``buf``; raises WireError when it is not a message."""
    nodes: list[Node] = []
    pos = 0
    while pos < len(buf):
        key, pos = decode_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0 or number >= 1 << 29:
            raise WireError(f"field number {number}")
        value: int | bytes
        children = None
        if wire == VARINT:
            value, pos = decode_varint(buf, pos)
        elif wire in (I64, I32):
            size = 8 if wire == I64 else 4
            if pos + size > len(buf):
                raise WireError("truncated fixed field")
            value, pos = buf[pos : pos + size], pos + size
        elif wire == LEN:
            size, pos = decode_varint(buf, pos)
            if pos + size > len(buf):
                raise WireError("truncated length-delimited field")
            value, pos = buf[pos : pos + size], pos + size
            if value and depth < MAX_DEPTH:
                try:
                    children = parse(value, depth + 1)
                except WireError:
                    children = None
        else:
            raise WireError(f"wire type {wire}")
        nodes.append(Node(number, wire, value, children))
    return nodes


def serialize(nodes: list[Node]) -> bytes:
    out = bytearray()
    for node in nodes:
        out += encode_varint((node.number << 3) | node.wire, node.key_pad)
        if node.wire == VARINT:
            assert isinstance(node.value, int)
            out += encode_varint(node.value, node.val_pad)
        elif node.wire == LEN:
            data = node.payload()
            out += encode_varint(max(0, len(data) + node.len_delta), node.len_pad)
            out += data
        else:
            assert isinstance(node.value, bytes)
            out += node.value
    return bytes(out)


def walk(nodes: list[Node]) -> list[tuple[list[Node], int]]:
    """Every node at any depth, as (the list that holds it, its index there)."""
    found: list[tuple[list[Node], int]] = []
    for i, node in enumerate(nodes):
        found.append((nodes, i))
        if node.children is not None:
            found += walk(node.children)
    return found
