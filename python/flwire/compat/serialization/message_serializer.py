"""Drop-in replacement for ``common.serialization.message_serializer``.

Same names and call shapes as the old JSON ``MessageSerializer``; underneath,
every message is a typed ``flwire.v1.Envelope``. The mapping between payload
dicts and messages is derived, not listed: payload keys go to the parameters
of a type's builder (:data:`flwire.messages.BUILDERS`) or, for a type without
one, to the body's fields; decoding turns the body's fields back into payload
keys. Keys the schema has no field for are kept, typed, in the envelope's
``extensions`` map and come back in the payload on decode, so nothing a sender
put in a payload is dropped. Values the schema cannot carry (objects, sets,
non-str dict keys) are refused with the key that held them.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from flwire import messages as m
from flwire.exceptions import MessageValidationError, SerializationException
from flwire.messages.capabilities import enum_short_name
from flwire.messages.schema import BODY_TYPES, CUSTOM, BodyType
from flwire.tensors import WRITER_LIMITS, read_tensor_map
from flwire.tensors.lossy import METHOD_NAMES
from flwire.v1 import messages_pb2 as pb
from flwire.v1 import values_pb2

logger = logging.getLogger(__name__)

# The old handlers say "client_heartbeat"; the schema's message is Heartbeat.
_ALIASES = {"client_heartbeat": "heartbeat"}
_LEGACY_NAMES = {v: k for k, v in _ALIASES.items()}
#: Builder parameters that are not payload keys.
_NOT_PAYLOAD = {"extensions", "options", "sender_id"}
#: Enum fields the old payloads carry as a flag: weights_kind DELTA -> "delta": True.
_FLAGS = {"weights_kind": ("delta", pb.WEIGHTS_KIND_DELTA)}


def _schema_type(message_type: str) -> BodyType | None:
    """The schema's type for an old type name; None for an application's own type."""
    if not isinstance(message_type, str) or not message_type:
        raise SerializationException(f"message_type must be a non-empty str, got {message_type!r}")
    kind = BODY_TYPES.get(_ALIASES.get(message_type, message_type))
    return None if kind is None or kind.name == CUSTOM else kind


def _is_weights(value: Any) -> bool:
    """Whether a custom payload's ``weights`` value is tensors: TensorMap bytes,
    or a state dict (every value an array or a tensor). Other bytes stay bytes."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        if not len(value):
            return False
        try:
            read_tensor_map(value, limits=WRITER_LIMITS)
        except SerializationException:
            return False
        return True
    return (
        isinstance(value, Mapping)
        and bool(value)
        and all(hasattr(v, "shape") and hasattr(v, "dtype") for v in value.values())
    )


def _custom(message_type: str, payload: Mapping[str, Any]) -> m.Message:
    weights = payload.get("weights")
    if _is_weights(weights):
        data = {k: v for k, v in payload.items() if k != "weights"}
        return m.custom(message_type, data, weights)
    return m.custom(message_type, payload)


def _builder(kind: BodyType) -> tuple[Callable[..., m.Message], set[str]]:
    """The builder of a message type and the payload keys it takes."""
    typed = m.BUILDERS.get(kind.name)
    if typed is not None:
        params = inspect.signature(typed).parameters
        return typed, {p for p in params if p not in _NOT_PAYLOAD}
    keys = {f.name for f in kind.descriptor.fields if f.number != kind.weights_number}
    if kind.weights_number is not None:
        keys.add("weights")

    def generic(**kwargs: Any) -> m.Message:
        return m.build(kind.name, **kwargs)

    return generic, keys


@functools.cache
def _payload_keys(type_name: str) -> frozenset[str]:
    """The payload keys of a message type (its builder's), looked up once."""
    return frozenset(_builder(BODY_TYPES[type_name])[1])


def _is_value_map(field: FieldDescriptor) -> bool:
    entry = field.message_type
    return bool(
        entry is not None
        and entry.GetOptions().map_entry
        and entry.fields_by_name["value"].message_type is values_pb2.Value.DESCRIPTOR
    )


def _capabilities(caps: pb.Capabilities, out: dict[str, Any]) -> None:
    """Capabilities flattened into the payload, as ``client_registration`` takes them."""
    fields = pb.Capabilities.DESCRIPTOR.fields_by_name
    for name in ("supported_codecs", "supported_filters"):
        out[name] = [enum_short_name(fields[name].enum_type, v) for v in getattr(caps, name)]
    # Short method names (int8, topk); a value this flwire does not know stays a number.
    out["supported_lossy"] = [METHOD_NAMES.get(v, v) for v in caps.supported_lossy]
    if caps.max_message_bytes:
        out["max_message_bytes"] = caps.max_message_bytes
    if caps.extra:
        out["capabilities"] = m.value_map_to_dict(caps.extra)


def _model_info(info: pb.ModelInfo, out: dict[str, Any]) -> None:
    """ModelInfo as the ``model_info`` dict ``client_registration`` takes."""
    if not info.ByteSize():
        return
    model: dict[str, Any] = m.value_map_to_dict(info.extra)
    for name in ("name", "version", "parameter_count", "architecture_hash"):
        if getattr(info, name):
            model[name] = getattr(info, name)
    out["model_info"] = model


#: Nested messages, flattened the way the builder that takes them expects.
_NESTED: dict[str, Callable[[Any, dict[str, Any]], None]] = {
    pb.Capabilities.DESCRIPTOR.full_name: _capabilities,
    pb.ModelInfo.DESCRIPTOR.full_name: _model_info,
}


def _payload(msg: m.Message) -> dict[str, Any]:
    """The old-style payload dict of a decoded message, field by field.

    Maps and lists always come back (empty if not sent), so handlers can index
    them; scalars the schema has a rule for (ids, rounds, counts) always come
    back; other scalars and enums only when set.
    """
    kind = BODY_TYPES[msg.type]
    body = msg.body
    if kind.name == CUSTOM:
        out = m.value_map_to_dict(body.payload)
        if msg.has_weights:
            out["weights"] = msg.weights
        for key, value in m.value_map_to_dict(msg.envelope.extensions).items():
            out.setdefault(key, value)  # the payload wins
        return out
    ruled = {r.field for r in kind.rules}
    out = {}
    for f in kind.descriptor.fields:
        value = getattr(body, f.name)
        if f.number == kind.weights_number:
            if msg.has_weights:
                out["weights"] = msg.weights
        elif _is_value_map(f):
            out[f.name] = m.value_map_to_dict(value)
        elif f.is_repeated:
            enum = f.enum_type
            out[f.name] = [enum_short_name(enum, v) for v in value] if enum else list(value)
        elif f.message_type is not None:
            if body.HasField(f.name):
                _NESTED.get(f.message_type.full_name, _generic_nested(f.name))(value, out)
        elif f.name in _FLAGS:
            key, flag = _FLAGS[f.name]
            if value == flag:
                out[key] = True
        elif f.enum_type is not None:
            if value:
                out[f.name] = enum_short_name(f.enum_type, value)
        elif value or f.name in ruled:
            out[f.name] = value
    # Extensions never stand in for what the body says (validation refuses those
    # named like a field; these are the payload keys the builder derives).
    payload_keys = _payload_keys(kind.name)
    for key, value in m.value_map_to_dict(msg.envelope.extensions).items():
        if key in out or key in payload_keys:
            logger.warning("ignored extension %r of a %s message: a payload key", key, kind.name)
        else:
            out[key] = value
    return out


def _generic_nested(name: str) -> Callable[[Any, dict[str, Any]], None]:
    def nested(value: Any, out: dict[str, Any]) -> None:
        fields = value.DESCRIPTOR.fields
        out[name] = {
            f.name: getattr(value, f.name)
            for f in fields
            if not f.is_repeated and f.message_type is None
        }

    return nested


def legacy_type_name(schema_type: str) -> str:
    """The old API's name for a schema message type (heartbeat -> client_heartbeat)."""
    return _LEGACY_NAMES.get(schema_type, schema_type)


def legacy_type(msg: m.Message) -> str:
    """The old API's type name of a message: a custom message's own type name."""
    return str(msg.body.type) if msg.type == CUSTOM else legacy_type_name(msg.type)


def _local_iso(timestamp: float) -> str:
    """ISO 8601 in local time, as the old API gave it; in UTC at the ends of the
    range, where the local time would fall outside years 1 to 9999."""
    try:
        return datetime.fromtimestamp(timestamp).isoformat()
    except (OverflowError, OSError, ValueError):
        return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat()


def message_to_dict(msg: m.Message) -> dict[str, Any]:
    """A decoded message in the old dict form (see ``deserialize_message``)."""
    return {
        "type": legacy_type(msg),
        "payload": _payload(msg),
        "sender_id": msg.sender_id or None,
        "timestamp": msg.timestamp,
        "datetime": _local_iso(msg.timestamp),
        "version": msg.schema_version,
        "message_id": msg.message_id,
    }


class MessageSerializer:
    """Serialize FL messages (old names and call shapes; protobuf bytes underneath)."""

    @staticmethod
    def serialize_message(
        message_type: str, payload: Mapping[str, Any], sender_id: str | None = None
    ) -> bytes:
        """Encode a message of ``message_type`` from a payload dict. A type the
        schema does not declare is carried as a custom message (see the module)."""
        kind = _schema_type(message_type)
        if not isinstance(payload, Mapping):
            raise SerializationException(
                f"{message_type} payload must be a dict, got {type(payload).__name__}"
            )
        try:
            if kind is None:
                msg = _custom(message_type, payload)
            else:
                builder, known = _builder(kind)
                kwargs = {k: v for k, v in payload.items() if k in known}
                extensions = {k: v for k, v in payload.items() if k not in known}
                msg = builder(**kwargs, extensions=extensions)
        except MessageValidationError as exc:  # keep the class and its violations
            raise MessageValidationError(f"{message_type} payload: {exc}", exc.violations) from None
        except SerializationException as exc:
            raise SerializationException(f"{message_type} payload: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise SerializationException(f"{message_type} payload is invalid: {exc}") from None
        msg.envelope.sender_id = sender_id or ""
        return msg.to_bytes()

    @staticmethod
    def deserialize_message(message_str: Any) -> dict[str, Any]:
        """Decode to a dict with the old keys: type, payload, sender_id,
        timestamp (float seconds), datetime (ISO 8601), version; plus message_id.

        Raises :class:`~flwire.exceptions.MessageDecodeError` (a
        SerializationException and a ValueError) for anything that is not a
        valid message. ``payload["weights"]`` is a view on the input, accepted
        by ``WeightSerializer.deserialize_weights``.
        """
        return message_to_dict(m.decode_message(message_str))

    @staticmethod
    def create_client_update_message(
        client_id: str, round_id: int, weights: Any, metrics: Mapping[str, Any]
    ) -> bytes:
        """A client_update message (weights: TensorMap bytes or a state dict)."""
        payload = {
            "client_id": client_id,
            "round_id": round_id,
            "weights": weights,
            "metrics": metrics,
        }
        return MessageSerializer.serialize_message("client_update", payload, sender_id=client_id)

    @staticmethod
    def create_server_broadcast_message(
        round_id: int, weights: Any, config: Mapping[str, Any] | None = None
    ) -> bytes:
        """A global_update message from the server."""
        payload = {"round_id": round_id, "weights": weights, "config": config or {}}
        return MessageSerializer.serialize_message("global_update", payload, sender_id=m.SERVER_ID)
