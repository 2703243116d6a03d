"""Mutations of protobuf inputs, deterministic from a ``random.Random``.

Byte-level: bit flips, bytes set to interesting values, a varint rewritten
(huge, minimal, overlong), chunks duplicated, deleted or spliced in from
another seed, truncation, junk appended or inserted. Protobuf-aware (through
:mod:`.wire`, at any depth, the enclosing lengths kept consistent): a varint
field set to an interesting value, an overlong key/length/value, a lying
length, a field re-encoded with another wire type or renumbered, fields
duplicated (up to hundreds of times), deleted, reordered, junk fields added,
and a length-delimited field's payload mutated or swapped for another seed's.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from .wire import (
    I32,
    I64,
    LEN,
    MASK64,
    VARINT,
    Node,
    WireError,
    encode_varint,
    parse,
    serialize,
    walk,
)

#: Inputs never grow beyond this (a larger input only runs slower).
MAX_INPUT = 256 << 10
INTERESTING_BYTES = (0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE)
INTERESTING_VARINTS = (
    0, 1, 2, 0x7F, 0x80, 0xFF, 0x3FFF, 0x4000, 1 << 16, (1 << 31) - 1, 1 << 31,
    (1 << 32) - 1, 1 << 32, (1 << 32) + 1, 1 << 53, 1 << 62, (1 << 63) - 1, 1 << 63, MASK64,
)  # fmt: skip
INTERESTING_I32 = (
    b"\x00" * 4,
    b"\xff" * 4,
    b"\xff\xff\xff\x7f",
    b"\x00\x00\x80\x7f",
    b"\x01\x00\x80\x7f",
)
INTERESTING_I64 = (b"\x00" * 8, b"\xff" * 8, b"\xff" * 7 + b"\x7f", b"\x00" * 6 + b"\xf0\x7f")

ByteOp = Callable[[random.Random, bytes, Sequence[bytes]], tuple[bytes, str]]
TreeOp = Callable[[random.Random, list[Node], Sequence[bytes]], str]


def _interesting_varint(rng: random.Random, current: int = 0) -> int:
    roll = rng.random()
    if roll < 0.6:
        return rng.choice(INTERESTING_VARINTS)
    if roll < 0.9:
        return rng.choice((current - 1, current + 1, current * 2, current << 8, -current)) & MASK64
    return rng.getrandbits(rng.choice((8, 16, 32, 64)))


def _span(rng: random.Random, size: int) -> tuple[int, int]:
    start = rng.randrange(size)
    length = min(size - start, rng.choice((1, 2, 4, 8, 16, 64, 256, 4096)))
    return start, start + rng.randint(1, max(1, length))


# ----------------------------------------------------------------------------- byte level


def flip_bits(rng: random.Random, data: bytes, donors: Sequence[bytes]) -> tuple[bytes, str]:
    out = bytearray(data)
    flips = [(rng.randrange(len(out)), rng.randrange(8)) for _ in range(rng.choice((1, 1, 2, 4)))]
    for pos, bit in flips:
        out[pos] ^= 1 << bit
    return bytes(out), f"flip {flips}"


def set_byte(rng: random.Random, data: bytes, donors: Sequence[bytes]) -> tuple[bytes, str]:
    pos = rng.randrange(len(data))
    value = rng.choice(INTERESTING_BYTES) if rng.random() < 0.8 else rng.randrange(256)
    return data[:pos] + bytes([value]) + data[pos + 1 :], f"byte {pos}={value:#x}"


def rewrite_varint(rng: random.Random, data: bytes, donors: Sequence[bytes]) -> tuple[bytes, str]:
    """Whatever varint starts at a random offset, replaced by another value or an
    overlong form (up to 11 bytes)."""
    pos = rng.randrange(len(data))
    end = pos
    while end < len(data) and end - pos < 10 and data[end] & 0x80:
        end += 1
    end = min(end + 1, len(data))
    value = _interesting_varint(rng, int.from_bytes(data[pos:end], "little"))
    pad = rng.choice((0, 0, 1, 3, 10 - len(encode_varint(value)), 11 - len(encode_varint(value))))
    new = encode_varint(value, max(0, pad))
    return data[:pos] + new + data[end:], f"varint@{pos}={value}+{pad}"


def duplicate_chunk(rng: random.Random, data: bytes, donors: Sequence[bytes]) -> tuple[bytes, str]:
    start, end = _span(rng, len(data))
    at = rng.randrange(len(data) + 1)
    return data[:at] + data[start:end] + data[at:], f"dup [{start}:{end}]@{at}"


def delete_chunk(rng: random.Random, data: bytes, donors: Sequence[bytes]) -> tuple[bytes, str]:
    start, end = _span(rng, len(data))
    return data[:start] + data[end:], f"delete [{start}:{end}]"


def splice(rng: random.Random, data: bytes, donors: Sequence[bytes]) -> tuple[bytes, str]:
    """A chunk of another seed inserted or written over this one."""
    donor = rng.choice([d for d in donors if d] or [b"\x00"])
    start, end = _span(rng, len(donor))
    at = rng.randrange(len(data) + 1)
    if rng.random() < 0.5:
        return data[:at] + donor[start:end] + data[at:], f"splice-in {end - start}@{at}"
    return data[:at] + donor[start:end] + data[
        at + end - start :
    ], f"splice-over {end - start}@{at}"


def truncate(rng: random.Random, data: bytes, donors: Sequence[bytes]) -> tuple[bytes, str]:
    at = rng.randrange(len(data))
    return data[:at], f"truncate {at}"


def junk_field(rng: random.Random) -> bytes:
    """One well-formed field of a random number (known ones included) and wire type."""
    number = rng.choice((1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15, 16, 100, 1000, (1 << 29) - 1))
    wire = rng.choice((VARINT, I64, LEN, I32))
    value: int | bytes
    if wire == VARINT:
        value = _interesting_varint(rng)
    elif wire == LEN:
        value = rng.randbytes(rng.choice((0, 1, 4, 16, 300)))
    else:
        value = rng.randbytes(8 if wire == I64 else 4)
    return serialize([Node(number, wire, value)])


def append_junk(rng: random.Random, data: bytes, donors: Sequence[bytes]) -> tuple[bytes, str]:
    if rng.random() < 0.5:
        junk = junk_field(rng)
    else:
        junk = rng.randbytes(rng.randint(1, 16))
    at = len(data) if rng.random() < 0.7 else rng.randrange(len(data) + 1)
    return data[:at] + junk + data[at:], f"junk {junk[:16].hex()}@{at}"


BYTE_OPS: tuple[ByteOp, ...] = (
    flip_bits, set_byte, rewrite_varint, duplicate_chunk, delete_chunk, splice, truncate,
    append_junk,
)  # fmt: skip


# ----------------------------------------------------------------------------- protobuf aware


def _pick(rng: random.Random, tree: list[Node], wire: int | None = None) -> tuple[list[Node], int]:
    spots = [(holder, i) for holder, i in walk(tree) if wire is None or holder[i].wire == wire]
    if not spots:
        raise WireError("no such field")
    return rng.choice(spots)


def set_varint(rng: random.Random, tree: list[Node], donors: Sequence[bytes]) -> str:
    holder, i = _pick(rng, tree, VARINT)
    node = holder[i]
    assert isinstance(node.value, int)
    node.value = _interesting_varint(rng, node.value)
    return f"field {node.number} = {node.value}"


def set_fixed(rng: random.Random, tree: list[Node], donors: Sequence[bytes]) -> str:
    holder, i = _pick(rng, tree, rng.choice((I32, I64)))
    node = holder[i]
    pool = INTERESTING_I32 if node.wire == I32 else INTERESTING_I64
    node.value = rng.choice(pool) if rng.random() < 0.7 else rng.randbytes(len(pool[0]))
    return f"field {node.number} fixed = {node.value!r}"


def overlong(rng: random.Random, tree: list[Node], donors: Sequence[bytes]) -> str:
    holder, i = _pick(rng, tree)
    node = holder[i]
    pad = rng.choice((1, 2, 5, 9, 10))
    what = rng.choice(
        ("key", "len" if node.wire == LEN else "val" if node.wire == VARINT else "key")
    )
    setattr(node, f"{what}_pad", pad)
    return f"field {node.number} overlong {what} +{pad}"


def lie_length(rng: random.Random, tree: list[Node], donors: Sequence[bytes]) -> str:
    holder, i = _pick(rng, tree, LEN)
    node = holder[i]
    node.len_delta = rng.choice(
        (-1, 1, -2, 2, -8, 8, 1 << 20, 1 << 31, 1 << 32, 1 << 62, -(1 << 20))
    )
    return f"field {node.number} length {node.len_delta:+d}"


def change_wire_type(rng: random.Random, tree: list[Node], donors: Sequence[bytes]) -> str:
    """Re-encode a field with another wire type, keeping its number."""
    holder, i = _pick(rng, tree)
    node = holder[i]
    old = node.wire
    raw = node.payload() if node.wire == LEN else node.value
    as_bytes = raw if isinstance(raw, bytes) else encode_varint(raw)
    new = rng.choice([w for w in (VARINT, I64, LEN, I32) if w != old])
    value: int | bytes
    if new == VARINT:
        value = int.from_bytes(as_bytes[:8], "little") if old != VARINT else 0
        if old == LEN:
            value = len(as_bytes) if rng.random() < 0.5 else value
    elif new == LEN:
        value = as_bytes
    else:
        size = 8 if new == I64 else 4
        value = as_bytes[:size].ljust(size, b"\x00")
    holder[i] = Node(node.number, new, value)
    return f"field {node.number} wire {old}->{new}"


def renumber(rng: random.Random, tree: list[Node], donors: Sequence[bytes]) -> str:
    holder, i = _pick(rng, tree)
    node = holder[i]
    old = node.number
    node.number = rng.choice((old - 1, old + 1, 1, 2, 3, 5, 8, 15, 16, 19, 100, (1 << 29) - 1))
    node.number = max(1, node.number)
    return f"field {old} renumbered {node.number}"


def duplicate_field(rng: random.Random, tree: list[Node], donors: Sequence[bytes]) -> str:
    holder, i = _pick(rng, tree)
    node = holder[i]
    size = len(serialize([node])) or 1
    times = rng.choice((1, 1, 1, 2, 10, 300))
    times = max(1, min(times, MAX_INPUT // 4 // size))
    at = rng.randrange(len(holder) + 1)
    holder[at:at] = [_copy(node) for _ in range(times)]
    return f"field {node.number} x{times}@{at}"


def delete_field(rng: random.Random, tree: list[Node], donors: Sequence[bytes]) -> str:
    holder, i = _pick(rng, tree)
    node = holder.pop(i)
    return f"field {node.number} deleted"


def reorder(rng: random.Random, tree: list[Node], donors: Sequence[bytes]) -> str:
    holder, i = _pick(rng, tree)
    j = rng.randrange(len(holder))
    holder[i], holder[j] = holder[j], holder[i]
    return f"swap {i}<->{j}"


def insert_junk(rng: random.Random, tree: list[Node], donors: Sequence[bytes]) -> str:
    holder, _ = _pick(rng, tree)
    junk = parse(junk_field(rng))
    at = rng.randrange(len(holder) + 1)
    holder[at:at] = junk
    return f"junk field {junk[0].number}/{junk[0].wire}@{at}"


def mutate_payload(rng: random.Random, tree: list[Node], donors: Sequence[bytes]) -> str:
    """A byte-level mutation inside one length-delimited field (lengths fixed up)."""
    holder, i = _pick(rng, tree, LEN)
    node = holder[i]
    data = node.payload()
    op = rng.choice(BYTE_OPS) if data else append_junk
    new, what = op(rng, data, donors)
    node.value, node.children = new, None
    return f"field {node.number}: {what}"


def swap_payload(rng: random.Random, tree: list[Node], donors: Sequence[bytes]) -> str:
    """A length-delimited field's payload taken from another seed's field of the
    same number (another tensor, another body, another lossy block)."""
    holder, i = _pick(rng, tree, LEN)
    node = holder[i]
    donor = parse(rng.choice(donors))
    same = [h[j] for h, j in walk(donor) if h[j].wire == LEN and h[j].number == node.number]
    if not same:
        raise WireError("no donor field")
    other = rng.choice(same)
    node.value, node.children = other.payload(), other.children
    return f"field {node.number} payload from a donor"


def _copy(node: Node) -> Node:
    return Node(
        node.number,
        node.wire,
        node.value,
        None if node.children is None else [_copy(c) for c in node.children],
        node.key_pad,
        node.len_pad,
        node.val_pad,
        node.len_delta,
    )


TREE_OPS: tuple[TreeOp, ...] = (
    set_varint, set_varint, set_fixed, overlong, lie_length, change_wire_type, renumber,
    duplicate_field, delete_field, reorder, insert_junk, mutate_payload, mutate_payload,
    swap_payload,
)  # fmt: skip


# ----------------------------------------------------------------------------- one input


def mutate(rng: random.Random, data: bytes, donors: Sequence[bytes]) -> tuple[bytes, str]:
    """One mutation of ``data``: protobuf-aware when it parses (about 2 in 3), else
    byte-level."""
    if data and rng.random() < 0.65:
        try:
            tree = parse(data)
            what = rng.choice(TREE_OPS)(rng, tree, donors)
            out = serialize(tree)
            if len(out) <= MAX_INPUT:
                return out, what
        except WireError:
            pass
    if not data:
        return append_junk(rng, data, donors)
    out, what = rng.choice(BYTE_OPS)(rng, data, donors)
    return out[:MAX_INPUT], what


def mutate_stack(
    rng: random.Random, data: bytes, donors: Sequence[bytes]
) -> tuple[bytes, list[str]]:
    """1 to 5 mutations in a row (mostly 1 or 2)."""
    steps = []
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 5))):
        data, what = mutate(rng, data, donors)
        steps.append(what)
    return data, steps
