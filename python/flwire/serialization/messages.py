"""Typed FL messages: build them from Python values, encode, decode, validate.

    msg = client_update("client-1", round_id=3, weights=model.state_dict(),
                        metrics={"loss": 0.21, "epochs": 2}, num_examples=600)
    blob = msg.to_bytes()
    got = decode_message(blob)          # ids and metrics parsed; weights untouched
    got.type, got.body.round_id         # "client_update", 3
    state = got.tensors()               # the weights, decoded on request

A decoded message keeps its weights as a view on the received buffer until
:meth:`Message.tensors` is called.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flwire.exceptions import SerializationException
from flwire.serialization import envelope as _envelope
from flwire.serialization.lossy import METHOD_NAMES, METHODS, LossyConfig
from flwire.serialization.tensor_codec import (
    TensorMapView,
    decode_tensor_map,
    encode_tensor_map_segments,
    read_tensor_map,
)
from flwire.serialization.values import PyValue, fill_value_map
from flwire.v1 import messages_pb2 as pb
from flwire.v1 import tensor_pb2

SCHEMA_MAJOR = 1
SCHEMA_MINOR = 0
SERVER_ID = "server"

#: Every message type, by its Envelope body field name.
MESSAGE_TYPES: tuple[str, ...] = tuple(_envelope.BODY_NUMBER_BY_NAME)

Weights = Mapping[str, Any] | bytes | bytearray | memoryview


class MessageDecodeError(SerializationException, ValueError):
    """Bytes are not a valid flwire message. Also a ValueError, which is what the
    old ``MessageSerializer.deserialize_message`` raised."""


@dataclass
class Message:
    """One FL message: the envelope (body's weights field empty) plus the
    TensorMap bytes of its weights, kept apart so they are never copied twice."""

    envelope: pb.Envelope
    _weights: list[Any] | None = field(default=None, repr=False)

    @property
    def type(self) -> str:
        """The body's field name, e.g. ``"client_update"``."""
        name = self.envelope.WhichOneof("body")
        return name or ""

    @property
    def body(self) -> Any:
        """The body message (ClientUpdate, GlobalUpdate, ...)."""
        return getattr(self.envelope, self.type)

    @property
    def message_id(self) -> str:
        return self.envelope.message_id

    @property
    def sender_id(self) -> str:
        return self.envelope.sender_id

    @property
    def timestamp(self) -> float:
        """Creation time in seconds since the epoch."""
        ts = self.envelope.timestamp
        return ts.seconds + ts.nanos / 1e9

    @property
    def schema_version(self) -> str:
        v = self.envelope.schema_version
        return f"{v.major}.{v.minor}"

    @property
    def has_weights(self) -> bool:
        return self._weights is not None

    @property
    def weights_nbytes(self) -> int:
        """Size of the weights' TensorMap bytes (0 without weights), without joining them."""
        return sum(memoryview(w).nbytes for w in self._weights or ())

    @property
    def weights(self) -> memoryview | bytes | None:
        """The TensorMap bytes of the weights (a view where possible), or None."""
        if self._weights is None:
            return None
        if len(self._weights) == 1:
            return memoryview(self._weights[0])
        joined = b"".join(self._weights)
        self._weights = [joined]
        return joined

    def weights_info(self) -> TensorMapView:
        """Names, dtypes, shapes and sizes of the weights, without decoding them."""
        return read_tensor_map(self._require_weights())

    def tensors(self, **decode_options: Any) -> dict[str, Any]:
        """Decode the weights (options as for :func:`decode_tensor_map`)."""
        return decode_tensor_map(self._require_weights(), **decode_options)

    def to_bytes(self) -> bytes:
        """The wire form: an encoded ``flwire.v1.Envelope``."""
        return b"".join(_envelope.splice(self.envelope, self._weights))

    def _require_weights(self) -> memoryview | bytes:
        w = self.weights
        if w is None:
            raise SerializationException(f"this {self.type or 'empty'} message carries no weights")
        return w


def _new_envelope(sender_id: str | None, extensions: Mapping[str, PyValue] | None) -> pb.Envelope:
    env = pb.Envelope(message_id=uuid.uuid4().hex, sender_id=sender_id or "")
    env.timestamp.FromNanoseconds(time.time_ns())
    env.schema_version.major = SCHEMA_MAJOR
    env.schema_version.minor = SCHEMA_MINOR
    if extensions:
        fill_value_map(extensions, env.extensions, "extensions")
    return env


def _weights_segments(weights: Weights | None, codec: Mapping[str, Any] | None) -> list[Any] | None:
    if weights is None:
        return None
    if isinstance(weights, (bytes, bytearray, memoryview)):
        read_tensor_map(weights)  # structure check only: refuses old base64 text early
        return [weights]
    if isinstance(weights, str):
        raise SerializationException(
            "weights are a str: pass a state dict or TensorMap bytes "
            "(WeightSerializer.serialize_weights), not the old base64 text"
        )
    if not isinstance(weights, Mapping):
        raise SerializationException(
            f"weights must be a state dict or TensorMap bytes, got {type(weights).__name__}"
        )
    return encode_tensor_map_segments(weights, **(codec or {}))


def _with_lossy(
    codec: Mapping[str, Any] | None, lossy: LossyConfig | None
) -> Mapping[str, Any] | None:
    if lossy is None:
        return codec
    if codec and codec.get("lossy") not in (None, lossy):
        raise SerializationException("lossy= given twice: as an argument and in codec")
    return {**(codec or {}), "lossy": lossy}


def _message(
    body_name: str,
    body: Any,
    sender_id: str | None,
    weights: Weights | None = None,
    codec: Mapping[str, Any] | None = None,
    extensions: Mapping[str, PyValue] | None = None,
    lossy: LossyConfig | None = None,
) -> Message:
    codec = _with_lossy(codec, lossy)
    if (
        codec
        and codec.get("lossy") is not None
        and isinstance(weights, (bytes, bytearray, memoryview))
    ):
        raise SerializationException(
            "lossy= needs a state dict: these weights are encoded bytes already"
        )
    env = _new_envelope(sender_id, extensions)
    getattr(env, body_name).CopyFrom(body)
    msg = Message(env, _weights_segments(weights, codec))
    validate(msg)
    return msg


def _weights_kind(delta: bool) -> pb.WeightsKind:
    return pb.WEIGHTS_KIND_DELTA if delta else pb.WEIGHTS_KIND_UNSPECIFIED


def _values(target: Any, values: Mapping[str, PyValue] | None, path: str) -> None:
    if values:
        fill_value_map(values, target, path)


def client_update(
    client_id: str,
    round_id: int,
    weights: Weights,
    metrics: Mapping[str, PyValue] | None = None,
    num_examples: int = 0,
    *,
    delta: bool = False,
    codec: Mapping[str, Any] | None = None,
    extensions: Mapping[str, PyValue] | None = None,
    lossy: LossyConfig | None = None,
) -> Message:
    """A client's trained weights (or delta) for a round. ``codec`` holds
    options for :func:`encode_tensor_map` (e.g. ``{"shuffle": True}``);
    ``lossy`` opts in to a lossy encoding the receiver supports (see
    :func:`pick_lossy`)."""
    body = pb.ClientUpdate(
        client_id=client_id,
        round_id=round_id,
        num_examples=num_examples,
        weights_kind=_weights_kind(delta),
    )
    _values(body.metrics, metrics, "metrics")
    return _message("client_update", body, client_id, weights, codec, extensions, lossy)


def global_update(
    round_id: int,
    weights: Weights,
    config: Mapping[str, PyValue] | None = None,
    *,
    delta: bool = False,
    sender_id: str = SERVER_ID,
    codec: Mapping[str, Any] | None = None,
    extensions: Mapping[str, PyValue] | None = None,
    lossy: LossyConfig | None = None,
) -> Message:
    """The server's aggregated weights for a round (``lossy``: as in client_update)."""
    body = pb.GlobalUpdate(round_id=round_id, weights_kind=_weights_kind(delta))
    _values(body.config, config, "config")
    return _message("global_update", body, sender_id, weights, codec, extensions, lossy)


def _enum_values(enum: Any, prefix: str, items: Iterable[Any], path: str) -> list[int]:
    out = []
    for item in items:
        if isinstance(item, int):
            out.append(item)
            continue
        name = str(item).upper()
        try:
            out.append(enum.Value(name if name.startswith(prefix) else prefix + name))
        except ValueError:
            raise SerializationException(f"{path}: unknown value {item!r}") from None
    return out


def client_registration(
    client_id: str,
    *,
    supported_codecs: Iterable[str | int] = ("zstd",),
    supported_filters: Iterable[str | int] = ("byte_shuffle",),
    supported_lossy: Iterable[str | int] = tuple(METHODS),
    max_message_bytes: int = 0,
    capabilities: Mapping[str, PyValue] | None = None,
    model_info: Mapping[str, PyValue] | None = None,
    attributes: Mapping[str, PyValue] | None = None,
    extensions: Mapping[str, PyValue] | None = None,
) -> Message:
    """A client announcing itself. ``model_info`` keys ``name``, ``version``,
    ``parameter_count`` and ``architecture_hash`` fill ModelInfo's fields, other
    keys its ``extra`` map; ``capabilities`` fills Capabilities.extra.
    ``supported_lossy`` lists the lossy encodings the client decodes (short
    names ``float16``, ``bfloat16``, ``int8``, ``topk``, enum names or values;
    default: all four)."""
    body = pb.ClientRegistration(client_id=client_id)
    caps = body.capabilities
    caps.supported_codecs.extend(
        _enum_values(tensor_pb2.Codec, "CODEC_", supported_codecs, "supported_codecs")
    )
    caps.supported_filters.extend(
        _enum_values(tensor_pb2.Filter, "FILTER_", supported_filters, "supported_filters")
    )
    caps.supported_lossy.extend(_lossy_values(supported_lossy))
    caps.max_message_bytes = max_message_bytes
    _values(caps.extra, capabilities, "capabilities")
    info = dict(model_info or {})
    mi = body.model_info
    mi.name = str(info.pop("name", ""))
    mi.version = str(info.pop("version", ""))
    count = info.pop("parameter_count", None)
    if count is None:  # the old get_model_info() calls it "parameters"
        count = info.pop("parameters", 0)
    mi.parameter_count = int(count or 0)
    mi.architecture_hash = str(info.pop("architecture_hash", ""))
    _values(mi.extra, info, "model_info")
    _values(body.attributes, attributes, "attributes")
    return _message("client_registration", body, client_id, extensions=extensions)


def _lossy_values(items: Iterable[str | int]) -> list[int]:
    out = []
    for item in items:
        if isinstance(item, str) and item.lower() in METHODS:
            out.append(METHODS[item.lower()])
        else:
            out += _enum_values(tensor_pb2.Lossy, "LOSSY_", [item], "supported_lossy")
    return out


def supported_lossy(registration: Any) -> list[str]:
    """Short names (``float16``, ``bfloat16``, ``int8``, ``topk``) of the lossy
    encodings a client announced; ``registration`` is a decoded
    client_registration :class:`Message`, a ClientRegistration or a Capabilities.
    Values this flwire does not know are left out."""
    if isinstance(registration, Message):
        registration = registration.body
    caps = getattr(registration, "capabilities", registration)
    if not isinstance(caps, pb.Capabilities):
        raise SerializationException(
            f"expected a client registration or its capabilities, got {type(caps).__name__}"
        )
    return [METHOD_NAMES[v] for v in caps.supported_lossy if v in METHOD_NAMES]


def pick_lossy(
    registrations: Iterable[Any], preferred: Iterable[str | LossyConfig]
) -> LossyConfig | None:
    """The first of ``preferred`` (short method names or LossyConfigs, best
    first) that every client in ``registrations`` supports, as a LossyConfig;
    None when there is none, i.e. send losslessly. ``registrations`` are what
    :func:`supported_lossy` takes (one client: pass a one-element list)."""
    regs = list(registrations)
    if not regs:
        return None
    common = set(METHODS)
    for reg in regs:
        common &= set(supported_lossy(reg))
    for choice in preferred:
        config = choice if isinstance(choice, LossyConfig) else LossyConfig(choice)  # type: ignore[arg-type]
        if config.method in common:
            return config
    return None


def heartbeat(
    client_id: str,
    status: str | int = "idle",
    system_metrics: Mapping[str, PyValue] | None = None,
    *,
    extensions: Mapping[str, PyValue] | None = None,
) -> Message:
    """A client's liveness report (status: idle, training, evaluating, stopping, error)."""
    (status_value,) = _enum_values(pb.ClientStatus, "CLIENT_STATUS_", [status], "status")
    body = pb.Heartbeat(client_id=client_id)
    body.status = status_value  # type: ignore[assignment]
    _values(body.system_metrics, system_metrics, "system_metrics")
    return _message("heartbeat", body, client_id, extensions=extensions)


def training_start(
    round_id: int,
    config: Mapping[str, PyValue] | None = None,
    client_ids: Sequence[str] = (),
    *,
    sender_id: str = SERVER_ID,
    extensions: Mapping[str, PyValue] | None = None,
) -> Message:
    """The server asking (some or all) clients to train a round."""
    body = pb.TrainingStart(round_id=round_id, client_ids=list(client_ids))
    _values(body.config, config, "config")
    return _message("training_start", body, sender_id, extensions=extensions)


def evaluation_request(
    round_id: int,
    weights: Weights | None = None,
    config: Mapping[str, PyValue] | None = None,
    client_ids: Sequence[str] = (),
    *,
    sender_id: str = SERVER_ID,
    codec: Mapping[str, Any] | None = None,
    extensions: Mapping[str, PyValue] | None = None,
    lossy: LossyConfig | None = None,
) -> Message:
    """The server asking clients to evaluate (given weights, or their latest)."""
    body = pb.EvaluationRequest(round_id=round_id, client_ids=list(client_ids))
    _values(body.config, config, "config")
    return _message("evaluation_request", body, sender_id, weights, codec, extensions, lossy)


def evaluation_result(
    client_id: str,
    round_id: int,
    metrics: Mapping[str, PyValue] | None = None,
    num_examples: int = 0,
    *,
    extensions: Mapping[str, PyValue] | None = None,
) -> Message:
    """A client's evaluation metrics for a round."""
    body = pb.EvaluationResult(client_id=client_id, round_id=round_id, num_examples=num_examples)
    _values(body.metrics, metrics, "metrics")
    return _message("evaluation_result", body, client_id, extensions=extensions)


def shutdown(
    reason: str = "",
    *,
    sender_id: str = SERVER_ID,
    extensions: Mapping[str, PyValue] | None = None,
) -> Message:
    """The server ending the job."""
    return _message("shutdown", pb.Shutdown(reason=reason), sender_id, extensions=extensions)


# ----------------------------------------------------------------------------- validation

# body name -> (fields that must be non-empty ids, fields that must be >= 0)
_RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "client_update": (("client_id",), ("round_id", "num_examples")),
    "global_update": ((), ("round_id",)),
    "client_registration": (("client_id",), ()),
    "heartbeat": (("client_id",), ()),
    "training_start": ((), ("round_id",)),
    "evaluation_request": ((), ("round_id",)),
    "evaluation_result": (("client_id",), ("round_id", "num_examples")),
    "shutdown": ((), ()),
}
_NEEDS_WEIGHTS = ("client_update", "global_update")


def validate(msg: Message) -> None:
    """Raise MessageDecodeError unless the message is complete and consistent."""
    env = msg.envelope
    if not env.message_id:
        raise MessageDecodeError("message has an empty message_id")
    if not env.HasField("schema_version"):
        raise MessageDecodeError("message has no schema_version; is it a flwire envelope?")
    major, minor = env.schema_version.major, env.schema_version.minor
    if major != SCHEMA_MAJOR:
        raise MessageDecodeError(
            f"message uses schema version {major}.{minor}; this flwire reads major version "
            f"{SCHEMA_MAJOR} only (upgrade flwire to read version {major} messages)"
        )
    kind = msg.type
    if not kind:
        raise MessageDecodeError("message has no body (none of the known message types is set)")
    ids, counts = _RULES[kind]
    body = msg.body
    for name in ids:
        if not getattr(body, name):
            raise MessageDecodeError(f"{kind} message has an empty {name}")
    for name in counts:
        if getattr(body, name) < 0:
            raise MessageDecodeError(f"{kind} message has negative {name}: {getattr(body, name)}")
    if kind in _NEEDS_WEIGHTS and not msg.has_weights:
        raise MessageDecodeError(f"{kind} message carries no weights")


def decode_message(data: Any, *, check: bool = True) -> Message:
    """Parse an encoded Envelope. The weights stay a view on ``data`` (nothing
    decoded or copied) until :meth:`Message.tensors` asks for them."""
    if isinstance(data, str):
        raise MessageDecodeError(
            "expected bytes, got str: flwire messages are binary protobuf, not the old JSON"
        )
    if isinstance(data, (bytes, bytearray, memoryview)) and len(data) == 0:
        raise MessageDecodeError("empty message (0 bytes): expected an encoded flwire Envelope")
    try:
        envelope, weights = _envelope.split(data)
    except SerializationException as exc:
        raise MessageDecodeError(f"not a valid flwire message: {exc}") from None
    msg = Message(envelope, None if weights is None else [weights])
    if check:
        validate(msg)
    return msg


def encode_message(msg: Message) -> bytes:
    """The wire form of a message (same as ``msg.to_bytes()``)."""
    return msg.to_bytes()
