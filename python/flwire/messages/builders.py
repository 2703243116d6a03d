"""Build FL messages from Python values.

:func:`build` makes any message type from the schema alone: keyword arguments
are the body's fields (scalars, enums by name, repeated fields, typed-value
maps, nested messages as dicts), ``weights`` its TensorMap. The typed builders
below (:func:`client_update`, :func:`global_update`, ...) are conveniences on
top of it with the old API's argument names; a new message type needs a
message in messages.proto and, at most, one such function.

    msg = client_update("client-1", round_id=3, weights=model.state_dict(),
                        metrics={"loss": 0.21, "epochs": 2}, num_examples=600)
    blob = msg.to_bytes()
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor

from flwire._args import require_str
from flwire.exceptions import SerializationException
from flwire.messages.capabilities import enum_value, lossy_values
from flwire.messages.message import Message
from flwire.messages.schema import body_type
from flwire.messages.validation import SCHEMA_MAJOR, SCHEMA_MINOR, validate
from flwire.messages.values import PyValue, fill_value_map, to_value
from flwire.tensors import (
    WRITER_LIMITS,
    EncodeOptions,
    encode_tensor_map_segments,
    read_tensor_map,
)
from flwire.tensors import codecs as _codecs
from flwire.tensors.lossy import METHODS
from flwire.tensors.sources import prepare, require_state_dict
from flwire.v1 import messages_pb2 as pb
from flwire.v1 import values_pb2

#: The sender id of the server's messages.
SERVER_ID = "server"
#: What a client id is, as argument errors say it.
_CLIENT_ID = "the client's id, e.g. 'client-1'"

Weights = Mapping[str, Any] | bytes | bytearray | memoryview
Builder = Callable[..., Message]

#: The typed builder of each message type that has one, by type name; the
#: compat serializer maps payload keys onto its parameters.
BUILDERS: dict[str, Builder] = {}


_BuilderT = TypeVar("_BuilderT", bound=Builder)


def _builder(name: str) -> Callable[[_BuilderT], _BuilderT]:
    def register(fn: _BuilderT) -> _BuilderT:
        body_type(name)  # the type must exist in the schema
        BUILDERS[name] = fn
        return fn

    return register


def _new_envelope(sender_id: str | None, extensions: Mapping[str, PyValue] | None) -> pb.Envelope:
    env = pb.Envelope(message_id=uuid.uuid4().hex, sender_id=sender_id or "")
    env.timestamp.FromNanoseconds(time.time_ns())
    env.schema_version.major = SCHEMA_MAJOR
    env.schema_version.minor = SCHEMA_MINOR
    if extensions:
        fill_value_map(extensions, env.extensions, "extensions")
    return env


def _weights_segments(weights: Weights, options: EncodeOptions | None) -> list[Any]:
    if isinstance(weights, (bytes, bytearray, memoryview)):
        if options is not None and options.lossy is not None:
            raise SerializationException(
                "a lossy encoding needs a state dict: these weights are encoded bytes already"
            )
        # Structure check only (refuses old base64 text early); a sender may encode zeros.
        read_tensor_map(weights, limits=WRITER_LIMITS)
        return [weights]
    if isinstance(weights, str):
        raise SerializationException(
            "weights are a str: pass a state dict or TensorMap bytes "
            "(WeightSerializer.serialize_weights), not the old base64 text"
        )
    return encode_tensor_map_segments(require_state_dict(weights, "weights"), options)


def _set_field(target: Any, field: FieldDescriptor, value: Any, path: str) -> None:
    """Set one field of a generated message from a Python value."""
    name = field.name
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        if value_field.message_type is values_pb2.Value.DESCRIPTOR:
            fill_value_map(value, getattr(target, name), path)
        else:
            getattr(target, name).update(value)
        return
    if field.is_repeated:
        items = [value] if isinstance(value, (str, bytes)) else list(value)
        if field.enum_type is not None:
            items = [enum_value(field.enum_type, item, path) for item in items]
        getattr(target, name).extend(items)
        return
    if field.message_type is values_pb2.Value.DESCRIPTOR:
        to_value(value, getattr(target, name), path)
    elif field.message_type is not None:
        if not isinstance(value, Mapping):
            raise SerializationException(f"{path}: expected a dict, got {type(value).__name__}")
        sub = getattr(target, name)
        sub.SetInParent()
        fill_fields(sub, value, path)
    elif field.enum_type is not None:
        setattr(target, name, enum_value(field.enum_type, value, path))
    else:
        try:
            setattr(target, name, value)
        except (TypeError, ValueError) as exc:
            raise SerializationException(f"{path}: {exc}") from None


def fill_fields(target: Any, values: Mapping[str, Any], path: str) -> None:
    """Set the fields of a generated message from a dict of Python values
    (``None`` leaves a field unset); unknown names are refused."""
    fields = target.DESCRIPTOR.fields_by_name
    for name, value in values.items():
        if value is None:
            continue
        field = fields.get(name)
        if field is None:
            raise SerializationException(
                f"{path}: {target.DESCRIPTOR.name} has no field {name!r} "
                f"(its fields: {', '.join(fields)})"
            )
        _set_field(target, field, value, f"{path}.{name}")


def build(
    message_type: str,
    sender_id: str | None = None,
    *,
    weights: Weights | None = None,
    options: EncodeOptions | None = None,
    extensions: Mapping[str, PyValue] | None = None,
    **fields: Any,
) -> Message:
    """A message of any type, from the schema alone.

    ``fields`` are the body's fields by name: scalars, enums by value or name
    (``status="training"``), lists for repeated fields, dicts for typed-value
    maps and nested messages. ``weights`` (a state dict, encoded with
    ``options``, or TensorMap bytes) fills the body's TensorMap field. The
    message is validated against the schema's rules: a broken rule raises
    :class:`~flwire.exceptions.MessageValidationError` listing every violation.
    """
    kind = body_type(message_type)
    if sender_id is not None:
        require_str(sender_id, "sender_id", "the sender's id")
    if kind.weights_field is not None and kind.weights_field in fields:
        raise SerializationException(f"pass {message_type} weights as weights=, not as a field")
    env = _new_envelope(sender_id, extensions)
    body = getattr(env, kind.name)
    body.SetInParent()
    fill_fields(body, fields, message_type)
    msg = Message(env)
    if weights is not None:
        if kind.weights_number is None:
            raise SerializationException(f"a {message_type} message carries no weights")
        if isinstance(options, EncodeOptions) and options.stream and isinstance(weights, Mapping):
            msg = Message.with_sources(env, prepare(weights, None, options.threads), options)
        else:
            msg = Message(env, _weights_segments(weights, options))
    validate(msg)
    return msg


def _weights_kind(delta: bool) -> pb.WeightsKind:
    return pb.WEIGHTS_KIND_DELTA if delta else pb.WEIGHTS_KIND_UNSPECIFIED


@_builder("client_update")
def client_update(
    client_id: str,
    round_id: int,
    weights: Weights,
    metrics: Mapping[str, PyValue] | None = None,
    num_examples: int = 0,
    *,
    delta: bool = False,
    options: EncodeOptions | None = None,
    extensions: Mapping[str, PyValue] | None = None,
) -> Message:
    """A client's trained weights (or delta) for a round. ``options`` says how
    the weights are encoded; its ``lossy`` must be a method the receiver
    supports (see :func:`~flwire.messages.pick_lossy`)."""
    require_str(client_id, "client_id", _CLIENT_ID)
    return build(
        "client_update",
        client_id,
        weights=weights,
        options=options,
        extensions=extensions,
        client_id=client_id,
        round_id=round_id,
        metrics=metrics,
        num_examples=num_examples,
        weights_kind=_weights_kind(delta),
    )


@_builder("global_update")
def global_update(
    round_id: int,
    weights: Weights,
    config: Mapping[str, PyValue] | None = None,
    *,
    delta: bool = False,
    sender_id: str = SERVER_ID,
    options: EncodeOptions | None = None,
    extensions: Mapping[str, PyValue] | None = None,
) -> Message:
    """The server's aggregated weights for a round."""
    return build(
        "global_update",
        sender_id,
        weights=weights,
        options=options,
        extensions=extensions,
        round_id=round_id,
        config=config,
        weights_kind=_weights_kind(delta),
    )


@_builder("client_registration")
def client_registration(
    client_id: str,
    *,
    supported_codecs: Iterable[str | int] | None = None,
    supported_filters: Iterable[str | int] = ("byte_shuffle",),
    supported_lossy: Iterable[str | int] = tuple(METHODS),
    max_message_bytes: int = 0,
    capabilities: Mapping[str, PyValue] | None = None,
    model_info: Mapping[str, PyValue] | None = None,
    attributes: Mapping[str, PyValue] | None = None,
    extensions: Mapping[str, PyValue] | None = None,
) -> Message:
    """A client announcing itself. ``supported_codecs`` defaults to every codec
    this flwire decodes. ``model_info`` keys ``name``, ``version``,
    ``parameter_count`` and ``architecture_hash`` fill ModelInfo's fields, other
    keys its ``extra`` map; ``capabilities`` fills Capabilities.extra.
    ``supported_lossy`` lists the lossy encodings the client decodes (short
    names ``float16``, ``bfloat16``, ``int8``, ``topk``, enum names or values;
    default: all four)."""
    require_str(client_id, "client_id", _CLIENT_ID)
    info = dict(model_info or {})
    count = info.pop("parameter_count", None)
    if count is None:  # the old get_model_info() calls it "parameters"
        count = info.pop("parameters", 0)
    model = {
        "name": str(info.pop("name", "")),
        "version": str(info.pop("version", "")),
        "parameter_count": int(count or 0),
        "architecture_hash": str(info.pop("architecture_hash", "")),
        "extra": info,
    }
    caps = {
        "supported_codecs": _codecs.names() if supported_codecs is None else supported_codecs,
        "supported_filters": supported_filters,
        "supported_lossy": lossy_values(supported_lossy),
        "max_message_bytes": max_message_bytes,
        "extra": capabilities or {},
    }
    return build(
        "client_registration",
        client_id,
        extensions=extensions,
        client_id=client_id,
        capabilities=caps,
        model_info=model,
        attributes=attributes,
    )


@_builder("heartbeat")
def heartbeat(
    client_id: str,
    status: str | int = "idle",
    system_metrics: Mapping[str, PyValue] | None = None,
    *,
    extensions: Mapping[str, PyValue] | None = None,
) -> Message:
    """A client's liveness report (status: idle, training, evaluating, stopping, error)."""
    require_str(client_id, "client_id", _CLIENT_ID)
    return build(
        "heartbeat",
        client_id,
        extensions=extensions,
        client_id=client_id,
        status=status,
        system_metrics=system_metrics,
    )


@_builder("training_start")
def training_start(
    round_id: int,
    config: Mapping[str, PyValue] | None = None,
    client_ids: Sequence[str] = (),
    *,
    sender_id: str = SERVER_ID,
    extensions: Mapping[str, PyValue] | None = None,
) -> Message:
    """The server asking (some or all) clients to train a round."""
    return build(
        "training_start",
        sender_id,
        extensions=extensions,
        round_id=round_id,
        config=config,
        client_ids=list(client_ids),
    )


@_builder("evaluation_request")
def evaluation_request(
    round_id: int,
    weights: Weights | None = None,
    config: Mapping[str, PyValue] | None = None,
    client_ids: Sequence[str] = (),
    *,
    sender_id: str = SERVER_ID,
    options: EncodeOptions | None = None,
    extensions: Mapping[str, PyValue] | None = None,
) -> Message:
    """The server asking clients to evaluate (given weights, or their latest)."""
    return build(
        "evaluation_request",
        sender_id,
        weights=weights,
        options=options,
        extensions=extensions,
        round_id=round_id,
        config=config,
        client_ids=list(client_ids),
    )


@_builder("evaluation_result")
def evaluation_result(
    client_id: str,
    round_id: int,
    metrics: Mapping[str, PyValue] | None = None,
    num_examples: int = 0,
    *,
    extensions: Mapping[str, PyValue] | None = None,
) -> Message:
    """A client's evaluation metrics for a round."""
    require_str(client_id, "client_id", _CLIENT_ID)
    return build(
        "evaluation_result",
        client_id,
        extensions=extensions,
        client_id=client_id,
        round_id=round_id,
        metrics=metrics,
        num_examples=num_examples,
    )


@_builder("shutdown")
def shutdown(
    reason: str = "",
    *,
    sender_id: str = SERVER_ID,
    extensions: Mapping[str, PyValue] | None = None,
) -> Message:
    """The server ending the job."""
    return build("shutdown", sender_id, extensions=extensions, reason=reason)


@_builder("custom")
def custom(
    message_type: str,
    payload: Mapping[str, PyValue] | None = None,
    weights: Weights | None = None,
    *,
    sender_id: str | None = None,
    options: EncodeOptions | None = None,
    extensions: Mapping[str, PyValue] | None = None,
) -> Message:
    """A message of a type the application defines and the schema does not
    (``message_type`` must not be one the schema declares): its ``payload`` as
    typed values, its ``weights``, if any, as a TensorMap. The sender names the
    topic it goes to."""
    return build(
        "custom",
        sender_id,
        weights=weights,
        options=options,
        extensions=extensions,
        type=message_type,
        payload=payload,
    )


@_builder("partial_aggregate")
def partial_aggregate(
    aggregator_id: str,
    round_id: int,
    sums: Weights,
    clients: Mapping[str, int],
    heaviest: Sequence[tuple[str, str, int]] = (),
    *,
    options: EncodeOptions | None = None,
    extensions: Mapping[str, PyValue] | None = None,
) -> Message:
    """One aggregator's partial FedAvg sums of a round (scale-out, see
    :mod:`flwire.aggregation.scaleout`): ``sums`` per tensor (float64 sums of
    ``num_examples * weights`` for floating tensors, the heaviest contributor's
    value for integer ones), ``clients`` folded (id -> example count), and per
    integer tensor ``(tensor, client_id, num_examples)`` of its heaviest
    contributor."""
    require_str(aggregator_id, "aggregator_id", "the aggregator's id")
    return build(
        "partial_aggregate",
        aggregator_id,
        weights=sums,
        options=options,
        extensions=extensions,
        round_id=round_id,
        aggregator_id=aggregator_id,
        clients=[pb.FoldedClient(client_id=c, num_examples=n) for c, n in clients.items()],
        heaviest=[
            pb.HeaviestContributor(tensor=t, client_id=c, num_examples=n) for t, c, n in heaviest
        ],
    )
