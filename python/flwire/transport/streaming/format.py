"""The records of a streamed transfer (wire format section 14.5): writing and
parsing ``flwire.v1.StreamPart`` (a head, chunks, a seal).

Chunks are written and read by hand, so that a chunk's encoded tensor slice is
neither parsed into generated classes nor copied on the way: the reader gets
a view on the record for it. The head and the seal are small and go through
the generated classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flwire._protowire import (
    LEN,
    VARINT,
    byte_view,
    decode_utf8,
    encode_varint,
    expect_wire_type,
    field_key,
    iter_fields,
    len_field,
    utf8,
)
from flwire.exceptions import SerializationException
from flwire.v1 import messages_pb2, transfer_pb2

#: Header marking a record as a part of a streamed transfer; its value is the
#: part's index in decimal.
STREAM_HEADER = "flwire-stream"
#: Longest transfer id a reader takes, in UTF-8 bytes (ids are message ids).
MAX_TRANSFER_ID_BYTES = 128
#: Room a writer leaves in each record for a chunk's fields besides the encoded
#: elements' data (part fields, transfer id, tensor header, padding).
CHUNK_OVERHEAD = 1024

_P = transfer_pb2.StreamPart.DESCRIPTOR.fields_by_name
_ID, _INDEX = _P["transfer_id"].number, _P["part_index"].number
_HEAD, _CHUNK, _SEAL = _P["head"].number, _P["chunk"].number, _P["seal"].number
_C = transfer_pb2.TensorChunk.DESCRIPTOR.fields_by_name
_TENSOR, _OFFSET, _ELEMENTS = (
    _C["tensor_index"].number,
    _C["element_offset"].number,
    _C["elements"].number,
)
_UINT32_MAX = (1 << 32) - 1


@dataclass
class Chunk:
    """A run of one tensor's elements; ``elements`` is a view on the record."""

    tensor_index: int
    element_offset: int
    elements: memoryview


@dataclass
class StreamPart:
    """One parsed part: exactly one of ``head``, ``chunk``, ``seal`` is set."""

    transfer_id: str
    index: int
    head: transfer_pb2.StreamHead | None = None
    chunk: Chunk | None = None
    seal: transfer_pb2.StreamSeal | None = None


def _prefix(transfer_id: str, index: int) -> bytes:
    ident = utf8(transfer_id, "transfer_id")
    out = len_field(_ID, len(ident)) + ident
    if index:
        out += field_key(_INDEX, VARINT) + encode_varint(index)
    return out


def head_part(
    transfer_id: str,
    envelope: messages_pb2.Envelope,
    tensors: list[transfer_pb2.TensorInfo],
    *,
    signed: bool = False,
) -> bytes:
    """Part 0: the envelope (its body's weights absent), the tensors to expect,
    and whether the seal will be signed."""
    head = transfer_pb2.StreamHead(envelope=envelope, tensors=tensors, signed=signed)
    return transfer_pb2.StreamPart(transfer_id=transfer_id, head=head).SerializeToString()


def chunk_part(
    transfer_id: str, index: int, tensor_index: int, element_offset: int, elements: list[Any]
) -> bytes:
    """A chunk part around ``elements`` (the pieces of an encoded one-tensor
    TensorMap), as one buffer: the pieces are copied once, into it."""
    size = sum(memoryview(p).nbytes for p in elements)
    fields = b""
    if tensor_index:
        fields += field_key(_TENSOR, VARINT) + encode_varint(tensor_index)
    if element_offset:
        fields += field_key(_OFFSET, VARINT) + encode_varint(element_offset)
    inner = fields + len_field(_ELEMENTS, size)
    head = _prefix(transfer_id, index) + len_field(_CHUNK, len(inner) + size) + inner
    return b"".join((head, *elements))


def seal_part(
    transfer_id: str,
    index: int,
    crc: int,
    signature: messages_pb2.Signature | None = None,
) -> bytes:
    """The last part: the part count (this one included) and the CRC-32C of
    every earlier part's record value."""
    seal = transfer_pb2.StreamSeal(part_count=index + 1, stream_crc32c=crc)
    if signature is not None:
        seal.signature.CopyFrom(signature)
    part = transfer_pb2.StreamPart(transfer_id=transfer_id, part_index=index, seal=seal)
    return part.SerializeToString()


def parse_part(value: Any) -> StreamPart:
    """Parse a StreamPart record value; a chunk's elements stay a view on it.
    Raises SerializationException naming what is wrong."""
    buf = byte_view(value, "StreamPart")
    ident = None
    index = 0
    items = []
    for f in iter_fields(buf, 0, len(buf), "StreamPart"):
        if f.number == _ID:
            expect_wire_type(f, LEN, "StreamPart")
            ident = f
        elif f.number == _INDEX:
            expect_wire_type(f, VARINT, "StreamPart")
            if f.value > _UINT32_MAX:
                raise SerializationException(
                    f"invalid stream part: part_index {f.value} does not fit its uint32 field"
                )
            index = f.value
        elif f.number in (_HEAD, _CHUNK, _SEAL):
            expect_wire_type(f, LEN, "StreamPart")
            items.append(f)
    if ident is None or ident.start == ident.end:
        raise SerializationException("invalid stream part: no transfer_id")
    if ident.end - ident.start > MAX_TRANSFER_ID_BYTES:
        raise SerializationException(
            f"invalid stream part: transfer_id of {ident.end - ident.start} bytes, longer "
            f"than {MAX_TRANSFER_ID_BYTES}"
        )
    part = StreamPart(decode_utf8(buf, ident.start, ident.end, "transfer_id"), index)
    if len(items) != 1 or len({f.number for f in items}) != 1:
        raise SerializationException(
            f"stream part {index} of {part.transfer_id} holds {len(items)} items; "
            "exactly one of head, chunk and seal must be set"
        )
    item = items[0]
    body = bytes(buf[item.start : item.end]) if item.number != _CHUNK else b""
    try:
        if item.number == _HEAD:
            part.head = transfer_pb2.StreamHead.FromString(body)
        elif item.number == _SEAL:
            part.seal = transfer_pb2.StreamSeal.FromString(body)
    except Exception as exc:  # the generated parser's DecodeError
        raise SerializationException(
            f"stream part {index} of {part.transfer_id}: malformed "
            f"{'head' if item.number == _HEAD else 'seal'}: {exc}"
        ) from None
    if item.number == _CHUNK:
        part.chunk = _parse_chunk(buf, item.start, item.end)
    if (index == 0) != (part.head is not None):
        raise SerializationException(
            f"stream part {index} of {part.transfer_id}: "
            + ("part 0 must be the head" if index == 0 else "only part 0 may be a head")
        )
    return part


def _parse_chunk(buf: memoryview, start: int, end: int) -> Chunk:
    tensor = offset = 0
    elements = None
    for f in iter_fields(buf, start, end, "TensorChunk"):
        if f.number in (_TENSOR, _OFFSET):
            expect_wire_type(f, VARINT, "TensorChunk")
            if f.number == _TENSOR:
                if f.value > _UINT32_MAX:
                    raise SerializationException(
                        f"invalid chunk: tensor_index {f.value} does not fit its uint32 field"
                    )
                tensor = f.value
            else:
                offset = f.value
        elif f.number == _ELEMENTS:
            expect_wire_type(f, LEN, "TensorChunk")
            if elements is not None:
                # Protobuf would merge the two maps; refusing keeps readers in agreement.
                raise SerializationException("invalid chunk: elements given twice")
            elements = buf[f.start : f.end]
    if elements is None:
        raise SerializationException("invalid chunk: no elements")
    return Chunk(tensor, offset, elements)
