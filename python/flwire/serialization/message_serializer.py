"""Drop-in replacement for ``common.serialization.message_serializer``.

Same names and call shapes as the old JSON ``MessageSerializer``; underneath,
every message is a typed ``flwire.v1.Envelope``. Payload keys map onto the
schema's fields; keys the schema has no field for are kept, typed, in the
envelope's ``extensions`` map and come back in the payload on decode, so
nothing a sender put in a payload is dropped. Values the schema cannot carry
(objects, sets, non-str dict keys) are refused with the key that held them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from flwire.exceptions import SerializationException
from flwire.serialization import messages as m
from flwire.serialization.values import PyValue, value_map_to_dict
from flwire.v1 import messages_pb2 as pb
from flwire.v1 import tensor_pb2

# The old handlers say "client_heartbeat"; the schema's message is Heartbeat.
_ALIASES = {"client_heartbeat": "heartbeat"}
_OLD_NAMES = {v: k for k, v in _ALIASES.items()}

# Builder and the payload keys it takes as arguments, per message type.
_BUILDERS: dict[str, tuple[Callable[..., m.Message], tuple[str, ...]]] = {
    "client_update": (
        m.client_update,
        ("client_id", "round_id", "weights", "metrics", "num_examples", "delta"),
    ),
    "global_update": (m.global_update, ("round_id", "weights", "config", "delta")),
    "client_registration": (
        m.client_registration,
        (
            "client_id",
            "supported_codecs",
            "supported_filters",
            "supported_lossy",
            "max_message_bytes",
            "capabilities",
            "model_info",
            "attributes",
        ),
    ),
    "heartbeat": (m.heartbeat, ("client_id", "status", "system_metrics")),
    "training_start": (m.training_start, ("round_id", "config", "client_ids")),
    "evaluation_request": (m.evaluation_request, ("round_id", "weights", "config", "client_ids")),
    "evaluation_result": (
        m.evaluation_result,
        ("client_id", "round_id", "metrics", "num_examples"),
    ),
    "shutdown": (m.shutdown, ("reason",)),
}


def _schema_type(message_type: str) -> str:
    name = _ALIASES.get(message_type, message_type)
    if name not in _BUILDERS:
        known = ", ".join(sorted([*_BUILDERS, *_ALIASES]))
        raise SerializationException(f"unknown message type {message_type!r}; known: {known}")
    return name


def _enum_names(enum: Any, prefix: str, values: Any) -> list[str]:
    return [enum.Name(v).removeprefix(prefix).lower() for v in values]


def _payload(msg: m.Message) -> dict[str, Any]:
    """The old-style payload dict of a decoded message."""
    body = msg.body
    kind = msg.type
    out: dict[str, Any] = {}
    if kind in ("client_update", "client_registration", "heartbeat", "evaluation_result"):
        out["client_id"] = body.client_id
    if kind not in ("client_registration", "heartbeat", "shutdown"):
        out["round_id"] = body.round_id
    if msg.has_weights:
        out["weights"] = msg.weights
    if kind in ("client_update", "evaluation_result"):
        out["metrics"] = value_map_to_dict(body.metrics)
        if body.num_examples:
            out["num_examples"] = body.num_examples
    if kind in ("client_update", "global_update") and body.weights_kind == pb.WEIGHTS_KIND_DELTA:
        out["delta"] = True
    # Known fields come back even when empty, so handlers can index them.
    if kind in ("global_update", "training_start", "evaluation_request"):
        out["config"] = value_map_to_dict(body.config)
    if kind in ("training_start", "evaluation_request"):
        out["client_ids"] = list(body.client_ids)
    if kind == "heartbeat":
        if body.status:
            out["status"] = pb.ClientStatus.Name(body.status).removeprefix("CLIENT_STATUS_").lower()
        if body.system_metrics:
            out["system_metrics"] = value_map_to_dict(body.system_metrics)
    if kind == "client_registration":
        _registration_payload(body, out)
    if kind == "shutdown" and body.reason:
        out["reason"] = body.reason
    out.update(value_map_to_dict(msg.envelope.extensions))
    return out


def _registration_payload(body: pb.ClientRegistration, out: dict[str, Any]) -> None:
    caps = body.capabilities
    out["supported_codecs"] = _enum_names(tensor_pb2.Codec, "CODEC_", caps.supported_codecs)
    out["supported_filters"] = _enum_names(tensor_pb2.Filter, "FILTER_", caps.supported_filters)
    out["supported_lossy"] = m.supported_lossy(caps)
    if caps.max_message_bytes:
        out["max_message_bytes"] = caps.max_message_bytes
    if caps.extra:
        out["capabilities"] = value_map_to_dict(caps.extra)
    info = body.model_info
    if body.HasField("model_info") and info.ByteSize():
        model: dict[str, PyValue] = value_map_to_dict(info.extra)
        for name in ("name", "version", "parameter_count", "architecture_hash"):
            if getattr(info, name):
                model[name] = getattr(info, name)
        out["model_info"] = model
    if body.attributes:
        out["attributes"] = value_map_to_dict(body.attributes)


def old_type_name(schema_type: str) -> str:
    """The old API's name for a schema message type (heartbeat -> client_heartbeat)."""
    return _OLD_NAMES.get(schema_type, schema_type)


def message_to_dict(msg: m.Message) -> dict[str, Any]:
    """A decoded message in the old dict form (see ``deserialize_message``)."""
    return {
        "type": old_type_name(msg.type),
        "payload": _payload(msg),
        "sender_id": msg.sender_id or None,
        "timestamp": msg.timestamp,
        "datetime": datetime.fromtimestamp(msg.timestamp).isoformat(),
        "version": msg.schema_version,
        "message_id": msg.message_id,
    }


class MessageSerializer:
    """Serialize FL messages (old names and call shapes; protobuf bytes underneath)."""

    @staticmethod
    def serialize_message(
        message_type: str, payload: Mapping[str, Any], sender_id: str | None = None
    ) -> bytes:
        """Encode a message of ``message_type`` from a payload dict."""
        kind = _schema_type(message_type)
        if not isinstance(payload, Mapping):
            raise SerializationException(
                f"{message_type} payload must be a dict, got {type(payload).__name__}"
            )
        builder, known = _BUILDERS[kind]
        kwargs = {k: v for k, v in payload.items() if k in known}
        extensions = {k: v for k, v in payload.items() if k not in known}
        try:
            msg = builder(**kwargs, extensions=extensions)
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

        Raises :class:`~flwire.serialization.messages.MessageDecodeError` (a
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
