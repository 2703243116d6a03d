"""What the schema says about each message type, read from the descriptors.

Every body of ``Envelope.body`` declares its rules in messages.proto as
options (options.proto): the topic it travels on, its sender, and per field
whether it is required or must not be negative. This module turns them into
:class:`BodyType` values that validation, topic routing, dispatch and the
compat serializer use, so a message type's knowledge lives in the schema once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message_factory import GetMessageClass

from flwire.exceptions import SerializationException
from flwire.v1 import messages_pb2, options_pb2, tensor_pb2

_BODY = messages_pb2.Envelope.DESCRIPTOR.oneofs_by_name["body"]

#: Short names of ``flwire.v1.Topic`` and ``flwire.v1.Role`` values
#: (``TOPIC_UPDATES`` -> ``updates``).
TOPIC_NAMES = {
    v.number: v.name.removeprefix("TOPIC_").lower() for v in options_pb2.Topic.DESCRIPTOR.values
}
ROLE_NAMES = {
    v.number: v.name.removeprefix("ROLE_").lower() for v in options_pb2.Role.DESCRIPTOR.values
}
#: The topic and role of application-defined messages: the sender names the topic.
ANY = "any"
#: The Envelope body of application-defined message types (``CustomMessage``).
CUSTOM = "custom"


@dataclass(frozen=True)
class FieldRule:
    """One rule of one field: ``rule`` is ``required`` or ``non_negative``."""

    field: str
    rule: str
    #: The field's kind: ``string``, ``message``, ``weights`` (the carved-out
    #: TensorMap) or ``integer``.
    kind: str

    def holds(self, body: Any, has_weights: bool) -> bool:
        if self.kind == "weights":  # kept apart from the body: "required" is the only rule
            return has_weights
        if self.rule == "non_negative":
            return bool(getattr(body, self.field) >= 0)
        if self.kind == "message":
            return bool(body.HasField(self.field))
        return bool(getattr(body, self.field))

    def describe(self, body: Any) -> str:
        if self.rule == "non_negative":
            return f"is negative ({getattr(body, self.field)}); it must be >= 0"
        if self.kind == "weights":
            return "is missing: this message carries no weights"
        return "is empty; it is required" if self.kind == "string" else "is missing; it is required"


@dataclass(frozen=True)
class BodyType:
    """One message type: the body field of the Envelope and its rules."""

    #: The Envelope body field name, e.g. ``client_update``: the message's type name.
    name: str
    #: The Envelope field number of the body.
    number: int
    descriptor: Descriptor
    #: The generated class of the body (``messages_pb2.ClientUpdate``).
    cls: type
    #: The topic of a job's layout it travels on: ``broadcast``, ``updates`` or
    #: ``control``; ``any`` for custom messages, whose sender names the topic.
    topic: str
    #: Who sends it: ``server`` or ``client`` (``any`` for custom messages).
    sender: str
    #: Field number of its TensorMap field (the weights), or None.
    weights_number: int | None
    rules: tuple[FieldRule, ...]

    @property
    def weights_field(self) -> str | None:
        if self.weights_number is None:
            return None
        return str(self.descriptor.fields_by_number[self.weights_number].name)


def _field_rules(descriptor: Descriptor) -> tuple[FieldRule, ...]:
    rules = []
    for f in descriptor.fields:
        options = f.GetOptions().Extensions[options_pb2.field]
        if f.message_type is tensor_pb2.TensorMap.DESCRIPTOR:
            kind = "weights"
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            kind = "message"
        elif f.type == FieldDescriptor.TYPE_STRING:
            kind = "string"
        else:
            kind = "integer"
        if options.required:
            rules.append(FieldRule(f.name, "required", kind))
        if options.non_negative:
            rules.append(FieldRule(f.name, "non_negative", kind))
    return tuple(rules)


def _body_type(field: FieldDescriptor) -> BodyType:
    descriptor = field.message_type
    options = descriptor.GetOptions().Extensions[options_pb2.message]
    if not options.topic or not options.sender:
        raise ImportError(  # a schema defect: fail at import, not at the first message
            f"message {descriptor.full_name} declares no (flwire.v1.message) topic and sender"
        )
    weights = [
        f.number for f in descriptor.fields if f.message_type is tensor_pb2.TensorMap.DESCRIPTOR
    ]
    if len(weights) > 1:
        raise ImportError(f"message {descriptor.full_name} has more than one TensorMap field")
    return BodyType(
        name=field.name,
        number=field.number,
        descriptor=descriptor,
        cls=GetMessageClass(descriptor),
        topic=TOPIC_NAMES[options.topic],
        sender=ROLE_NAMES[options.sender],
        weights_number=weights[0] if weights else None,
        rules=_field_rules(descriptor),
    )


#: Every message type, by type name, in Envelope field order.
BODY_TYPES: dict[str, BodyType] = {f.name: _body_type(f) for f in _BODY.fields}
BY_NUMBER: dict[int, BodyType] = {b.number: b for b in BODY_TYPES.values()}
BY_FULL_NAME: dict[str, BodyType] = {b.descriptor.full_name: b for b in BODY_TYPES.values()}
#: The rules of the Envelope's own fields (message_id, schema_version).
ENVELOPE_RULES = _field_rules(messages_pb2.Envelope.DESCRIPTOR)
#: Field number of ``Envelope.padding``.
PADDING_NUMBER = messages_pb2.Envelope.DESCRIPTOR.fields_by_name["padding"].number
#: The Envelope field that holds the signature (section 14.3): written last.
SIGNATURE_NUMBER = messages_pb2.Envelope.DESCRIPTOR.fields_by_name["signature"].number


def body_type(name: str) -> BodyType:
    """The message type called ``name``; SerializationException listing the known ones."""
    found = BODY_TYPES.get(name)
    if found is None:
        raise SerializationException(
            f"unknown message type {name!r}; known: {', '.join(BODY_TYPES)}"
        )
    return found


def body_type_of(body_class: Any) -> BodyType:
    """The message type whose body class is ``body_class`` (e.g. ``ClientUpdate``)."""
    descriptor = getattr(body_class, "DESCRIPTOR", None)
    found = BY_FULL_NAME.get(getattr(descriptor, "full_name", ""))
    if found is None:
        raise TypeError(f"{body_class!r} is not a flwire message body class")
    return found


def types_on(topic: str) -> tuple[str, ...]:
    """Names of the message types that the schema routes to ``topic`` (custom
    messages, which travel where their sender says, are not among them)."""
    return tuple(b.name for b in BODY_TYPES.values() if b.topic == topic)


def types_from(sender: str) -> tuple[str, ...]:
    """Names of the message types only ``sender`` (``server`` or ``client``) sends."""
    return tuple(b.name for b in BODY_TYPES.values() if b.sender == sender)
