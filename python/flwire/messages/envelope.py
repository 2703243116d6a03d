"""Envelope bytes with the weights carved out: splice on encode, split on decode.

The generated classes copy every ``bytes`` field they parse, so the tensor data
never goes through them. On encode, the envelope is serialized by the generated
class with the body's ``weights`` field empty, and the TensorMap bytes are
spliced in at the place (field-number order) the generated serializer would
have put them. On decode, the wire is walked to find the weights field; the
rest (ids, metrics, config: small) is parsed by the generated class and the
weights are handed out as a view on the received buffer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.message import DecodeError

from flwire._protowire import (
    LEN,
    byte_view,
    expect_wire_type,
    iter_fields,
    len_field,
    padding_field,
)
from flwire.exceptions import SerializationException
from flwire.messages.schema import BODY_TYPES, BY_NUMBER, PADDING_NUMBER, SIGNATURE_NUMBER
from flwire.v1 import messages_pb2


def splice(envelope: messages_pb2.Envelope, weights: Sequence[Any] | None) -> list[Any]:
    """Serialize ``envelope`` with ``weights`` (TensorMap bytes as a list of
    buffers) as its body's weights field; return the output as buffers."""
    body_name = envelope.WhichOneof("body")
    if body_name is None:
        raise SerializationException("the envelope has no body: set one message type")
    body = getattr(envelope, body_name)
    kind = BODY_TYPES[body_name]
    if kind.weights_field is not None and body.HasField(kind.weights_field):
        raise SerializationException("pass weights as TensorMap bytes, not inside the body")
    body_bytes = body.SerializeToString(deterministic=True)
    body_number = kind.number
    # Everything but the body (unknown fields of a newer minor version included),
    # then the body: the order the generated serializer uses for known fields.
    head = _without_body(envelope, body_name)
    head.ClearField("padding")
    # A signature goes last, after the body: it signs every byte before it
    # (wire format section 14.3), so a signed envelope re-encodes to its own bytes.
    signature = _signature_field(head)
    prefix = head.SerializeToString(deterministic=True)
    if weights is None:
        return [prefix + len_field(body_number, len(body_bytes)) + body_bytes + signature]
    number = kind.weights_number
    if number is None:
        raise SerializationException(f"a {body_name} message carries no weights")
    weights_len = sum(memoryview(w).nbytes for w in weights)
    view = memoryview(body_bytes)
    insert_at = len(body_bytes)
    for field in iter_fields(view, 0, len(view), body_name):
        if field.number > number:
            insert_at = field.key_start
            break
    weights_key = len_field(number, weights_len)
    body_len = len(body_bytes) + len(weights_key) + weights_len
    body_key = len_field(body_number, body_len)
    # Pad the envelope so the TensorMap starts aligned: its uncompressed tensor
    # data is aligned relative to the map's own start.
    pad = padding_field(
        PADDING_NUMBER, lambda n: len(prefix) + n + len(body_key) + insert_at + len(weights_key)
    )
    return [
        prefix + pad + body_key + body_bytes[:insert_at] + weights_key,
        *weights,
        body_bytes[insert_at:] + signature,
    ]


def _signature_field(head: messages_pb2.Envelope) -> bytes:
    """The envelope's signature field (key and payload), cleared from ``head``;
    empty when it has none."""
    if not head.HasField("signature"):
        return b""
    field = signature_field(head.signature)
    head.ClearField("signature")
    return field


def signature_field(signature: messages_pb2.Signature) -> bytes:
    """An envelope's signature field as it goes on the wire, last: key, length
    and the encoded ``Signature``."""
    payload = signature.SerializeToString(deterministic=True)
    return len_field(SIGNATURE_NUMBER, len(payload)) + payload


def _without_body(envelope: messages_pb2.Envelope, body_name: str) -> Any:
    """A copy of the envelope with its body cleared (the body is small: weights
    are kept apart)."""
    head = messages_pb2.Envelope()
    head.CopyFrom(envelope)
    head.ClearField(body_name)
    return head


def split(data: Any) -> tuple[messages_pb2.Envelope, memoryview | None]:
    """Parse envelope bytes; return the envelope (weights field left empty) and
    a view on the TensorMap bytes of its weights, if any."""
    buf = byte_view(data, "message")
    body = None
    for field in iter_fields(buf, 0, len(buf), "Envelope"):
        if field.number in BY_NUMBER:
            expect_wire_type(field, LEN, "Envelope")
            if body is not None:
                raise SerializationException("the envelope holds more than one body field")
            body = field
    weights = None
    kind = BY_NUMBER[body.number] if body is not None else None
    if body is not None and kind is not None and kind.weights_number is not None:
        name, number = kind.name, kind.weights_number
        for field in iter_fields(buf, body.start, body.end, name):
            if field.number == number:
                expect_wire_type(field, LEN, f"{name}.weights")
                if weights is not None:
                    raise SerializationException(f"{name} holds its weights field twice")
                weights = field
    envelope = messages_pb2.Envelope()
    try:
        if weights is None:
            envelope.ParseFromString(buf)
            return envelope, None
        assert body is not None
        stripped = b"".join(
            (
                buf[: body.key_start],
                len_field(body.number, (body.end - body.start) - (weights.end - weights.key_start)),
                buf[body.start : weights.key_start],
                buf[weights.end :],
            )
        )
        envelope.ParseFromString(stripped)
    except DecodeError as exc:
        raise SerializationException(f"malformed envelope: {exc}") from None
    return envelope, buf[weights.start : weights.end]
