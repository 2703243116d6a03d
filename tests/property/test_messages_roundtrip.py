"""Every FL message type survives encode -> decode unchanged, and its bytes are
exactly what the generated protobuf classes write for the same Envelope.

The second half builds Envelopes with the generated classes only (values
converted by a reference written here, weights parsed into the body's
TensorMap field) and checks that ``decode_message`` reads them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from helpers import assert_same_state_dict, assert_same_values
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import encode_options, py_values, state_dicts

from flwire import messages
from flwire.tensors import encode_tensor_map
from flwire.v1 import messages_pb2 as pb
from flwire.v1 import tensor_pb2, values_pb2

# ----------------------------------------------------------------------------- strategies

ids = st.text(min_size=1, max_size=16)
rounds = st.integers(min_value=0, max_value=2**62)
counts = st.integers(min_value=0, max_value=2**62)
value_maps = st.dictionaries(st.text(max_size=10), py_values(max_leaves=8), max_size=4)
# For the second and later maps of a message (extensions, capabilities): keep examples cheap.
#: Extension keys: never a body field's name or "weights" (validation refuses those).
FIELD_NAMES = {f.name for kind in messages.BODY_TYPES.values() for f in kind.descriptor.fields} | {
    "weights"
}
small_maps = st.dictionaries(
    st.text(max_size=6).filter(lambda k: k not in FIELD_NAMES),
    py_values(max_leaves=8),
    max_size=2,
)


# ----------------------------------------------------------------------------- message cases


@dataclass
class Case:
    """A built message and what a reader must find in it."""

    msg: messages.Message
    type: str
    sender: str
    scalars: dict[str, Any] = field(default_factory=dict)  # dotted body path -> value
    maps: dict[str, dict[str, Any]] = field(default_factory=dict)  # dotted path -> dict
    weights: dict[str, torch.Tensor] | None = None
    extensions: dict[str, Any] = field(default_factory=dict)


def _kind(delta: bool) -> int:
    return pb.WEIGHTS_KIND_DELTA if delta else pb.WEIGHTS_KIND_UNSPECIFIED


@st.composite
def client_update_case(draw: Any) -> Case:
    cid, rnd, sd, metrics = draw(ids), draw(rounds), draw(state_dicts), draw(value_maps)
    n, delta, ext = draw(counts), draw(st.booleans()), draw(small_maps)
    options = draw(encode_options)
    msg = messages.client_update(
        cid, rnd, sd, metrics, n, delta=delta, options=options, extensions=ext
    )
    scalars = {"client_id": cid, "round_id": rnd, "num_examples": n, "weights_kind": _kind(delta)}
    return Case(msg, "client_update", cid, scalars, {"metrics": metrics}, sd, ext)


@st.composite
def global_update_case(draw: Any) -> Case:
    rnd, sd, config, sender = draw(rounds), draw(state_dicts), draw(value_maps), draw(ids)
    delta, options, ext = draw(st.booleans()), draw(encode_options), draw(small_maps)
    msg = messages.global_update(
        rnd, sd, config, delta=delta, sender_id=sender, options=options, extensions=ext
    )
    scalars = {"round_id": rnd, "weights_kind": _kind(delta)}
    return Case(msg, "global_update", sender, scalars, {"config": config}, sd, ext)


_MODEL_FIELDS = ("name", "version", "parameter_count", "architecture_hash", "parameters")
_CODEC_CHOICES = {
    "zstd": tensor_pb2.CODEC_ZSTD,
    "lz4": tensor_pb2.CODEC_LZ4,
    "unspecified": tensor_pb2.CODEC_UNSPECIFIED,
}
_FILTER_CHOICES = {
    "byte_shuffle": tensor_pb2.FILTER_BYTE_SHUFFLE,
    "FILTER_BYTE_SHUFFLE": tensor_pb2.FILTER_BYTE_SHUFFLE,
    "unspecified": tensor_pb2.FILTER_UNSPECIFIED,
}


@st.composite
def client_registration_case(draw: Any) -> Case:
    cid = draw(ids)
    codec_names = draw(st.lists(st.sampled_from(sorted(_CODEC_CHOICES)), max_size=3))
    filter_names = draw(st.lists(st.sampled_from(sorted(_FILTER_CHOICES)), max_size=3))
    max_bytes = draw(st.integers(0, 2**63))
    caps, attrs, ext = draw(small_maps), draw(value_maps), draw(small_maps)
    extra = {k: v for k, v in draw(small_maps).items() if k not in _MODEL_FIELDS}
    name, version, arch = draw(st.text(max_size=8)), draw(st.text(max_size=8)), draw(st.text())
    params = draw(counts)
    model_info = {
        **extra,
        "name": name,
        "version": version,
        "parameter_count": params,
        "architecture_hash": arch,
    }
    msg = messages.client_registration(
        cid,
        supported_codecs=codec_names,
        supported_filters=filter_names,
        max_message_bytes=max_bytes,
        capabilities=caps,
        model_info=model_info,
        attributes=attrs,
        extensions=ext,
    )
    scalars = {
        "client_id": cid,
        "capabilities.supported_codecs": [_CODEC_CHOICES[c] for c in codec_names],
        "capabilities.supported_filters": [_FILTER_CHOICES[f] for f in filter_names],
        "capabilities.max_message_bytes": max_bytes,
        "model_info.name": name,
        "model_info.version": version,
        "model_info.parameter_count": params,
        "model_info.architecture_hash": arch,
    }
    maps = {"capabilities.extra": caps, "model_info.extra": extra, "attributes": attrs}
    return Case(msg, "client_registration", cid, scalars, maps, None, ext)


_STATUS = {
    "idle": pb.CLIENT_STATUS_IDLE,
    "training": pb.CLIENT_STATUS_TRAINING,
    "EVALUATING": pb.CLIENT_STATUS_EVALUATING,
    "stopping": pb.CLIENT_STATUS_STOPPING,
    "CLIENT_STATUS_ERROR": pb.CLIENT_STATUS_ERROR,
    0: pb.CLIENT_STATUS_UNSPECIFIED,
    2: pb.CLIENT_STATUS_TRAINING,
}


@st.composite
def heartbeat_case(draw: Any) -> Case:
    cid, status = draw(ids), draw(st.sampled_from(list(_STATUS)))
    metrics, ext = draw(value_maps), draw(small_maps)
    msg = messages.heartbeat(cid, status, metrics, extensions=ext)
    scalars = {"client_id": cid, "status": _STATUS[status]}
    return Case(msg, "heartbeat", cid, scalars, {"system_metrics": metrics}, None, ext)


@st.composite
def training_start_case(draw: Any) -> Case:
    rnd, config, sender, ext = draw(rounds), draw(value_maps), draw(ids), draw(small_maps)
    client_ids = draw(st.lists(ids, max_size=4))
    msg = messages.training_start(rnd, config, client_ids, sender_id=sender, extensions=ext)
    scalars = {"round_id": rnd, "client_ids": client_ids}
    return Case(msg, "training_start", sender, scalars, {"config": config}, None, ext)


@st.composite
def evaluation_request_case(draw: Any) -> Case:
    rnd, config, sender, ext = draw(rounds), draw(value_maps), draw(ids), draw(small_maps)
    sd, options = draw(st.none() | state_dicts), draw(encode_options)
    client_ids = draw(st.lists(ids, max_size=4))
    msg = messages.evaluation_request(
        rnd, sd, config, client_ids, sender_id=sender, options=options, extensions=ext
    )
    scalars = {"round_id": rnd, "client_ids": client_ids}
    return Case(msg, "evaluation_request", sender, scalars, {"config": config}, sd, ext)


@st.composite
def evaluation_result_case(draw: Any) -> Case:
    cid, rnd, n = draw(ids), draw(rounds), draw(counts)
    metrics, ext = draw(value_maps), draw(small_maps)
    msg = messages.evaluation_result(cid, rnd, metrics, n, extensions=ext)
    scalars = {"client_id": cid, "round_id": rnd, "num_examples": n}
    return Case(msg, "evaluation_result", cid, scalars, {"metrics": metrics}, None, ext)


@st.composite
def shutdown_case(draw: Any) -> Case:
    reason, sender, ext = draw(st.text()), draw(ids), draw(small_maps)
    msg = messages.shutdown(reason, sender_id=sender, extensions=ext)
    return Case(msg, "shutdown", sender, {"reason": reason}, {}, None, ext)


@st.composite
def custom_case(draw: Any) -> Case:
    name = draw(st.text(min_size=1, max_size=12).filter(lambda t: t not in messages.BODY_TYPES))
    payload, sender, ext = draw(value_maps), draw(ids), draw(small_maps)
    sd, options = draw(st.none() | state_dicts), draw(encode_options)
    msg = messages.custom(name, payload, sd, sender_id=sender, options=options, extensions=ext)
    return Case(msg, "custom", sender, {"type": name}, {"payload": payload}, sd, ext)


@st.composite
def partial_aggregate_case(draw: Any) -> Case:
    agg, rnd, sd, ext = draw(ids), draw(rounds), draw(state_dicts), draw(small_maps)
    clients = draw(st.dictionaries(ids, st.integers(1, 2**62), max_size=4))
    heaviest = draw(st.lists(st.tuples(ids, ids, st.integers(1, 2**62)), max_size=3))
    options = draw(encode_options)
    msg = messages.partial_aggregate(
        agg, rnd, sd, clients, heaviest, options=options, extensions=ext
    )
    scalars = {
        "aggregator_id": agg,
        "round_id": rnd,
        "clients": [pb.FoldedClient(client_id=c, num_examples=n) for c, n in clients.items()],
        "heaviest": [
            pb.HeaviestContributor(tensor=t, client_id=c, num_examples=n) for t, c, n in heaviest
        ],
    }
    return Case(msg, "partial_aggregate", agg, scalars, {}, sd, ext)


CASES = {
    "client_update": client_update_case(),
    "global_update": global_update_case(),
    "client_registration": client_registration_case(),
    "heartbeat": heartbeat_case(),
    "training_start": training_start_case(),
    "evaluation_request": evaluation_request_case(),
    "evaluation_result": evaluation_result_case(),
    "shutdown": shutdown_case(),
    "custom": custom_case(),
    "partial_aggregate": partial_aggregate_case(),
}


def test_cases_cover_every_message_type():
    assert set(CASES) == set(messages.MESSAGE_TYPES)
    assert len(messages.MESSAGE_TYPES) == 10


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def check_decoded(got: messages.Message, case: Case) -> None:
    sent = case.msg
    assert got.type == case.type
    assert type(got.body).__name__ == type(sent.body).__name__
    assert got.sender_id == case.sender
    assert got.message_id == sent.message_id and got.message_id
    assert got.timestamp == sent.timestamp
    assert got.schema_version == f"{messages.SCHEMA_MAJOR}.{messages.SCHEMA_MINOR}"
    for path, want in case.scalars.items():
        value = _get(got.body, path)
        if isinstance(want, list):
            value = list(value)
        assert value == want, path
    for path, want in case.maps.items():
        assert_same_values(messages.value_map_to_dict(_get(got.body, path)), want)
    assert_same_values(messages.value_map_to_dict(got.envelope.extensions), case.extensions)
    if case.weights is None:
        assert got.weights is None
        assert not got.has_weights
    else:
        assert got.has_weights
        assert_same_state_dict(got.tensors(), case.weights)
        assert [r.name for r in got.weights_info().records] == list(case.weights)


# ----------------------------------------------------------------------------- round trips


def _weights_field(kind: str) -> str:
    """The name of the body's TensorMap field (``weights``; ``sums`` of a partial)."""
    (name,) = [
        f.name
        for f in messages.BODY_TYPES[kind].descriptor.fields
        if f.message_type is not None and f.message_type.full_name == "flwire.v1.TensorMap"
    ]
    return name


@pytest.mark.parametrize("kind", sorted(CASES))
@settings(max_examples=30)
@given(data=st.data())
def test_round_trip_and_generated_equivalence(kind, data):
    case = data.draw(CASES[kind])
    blob = case.msg.to_bytes()
    assert isinstance(blob, bytes)

    # The bytes are exactly what the generated classes write for the same Envelope.
    env = pb.Envelope.FromString(blob)
    assert env.SerializeToString(deterministic=True) == blob
    assert env.WhichOneof("body") == kind
    if case.weights is not None:
        # The generated parser finds the weights inside the body, where they belong.
        body_weights = getattr(getattr(env, kind), _weights_field(kind))
        assert body_weights.SerializeToString(deterministic=True) == bytes(case.msg.weights)

    got = messages.decode_message(blob)
    check_decoded(got, case)
    # Re-encoding a decoded message gives the same bytes (the splice of a view).
    assert got.to_bytes() == blob
    # Any bytes-like input reads the same.
    check_decoded(messages.decode_message(memoryview(bytearray(blob))), case)


# ----------------------------------------------------------------------------- generated -> flwire


def ref_value(obj: Any, out: values_pb2.Value) -> None:
    """Python value -> Value, written against the schema (not flwire.values)."""
    if obj is None:
        out.null_value = 0
    elif isinstance(obj, bool):
        out.bool_value = obj
    elif isinstance(obj, int):
        out.int_value = obj
    elif isinstance(obj, float):
        out.double_value = obj
    elif isinstance(obj, str):
        out.string_value = obj
    elif isinstance(obj, bytes):
        out.bytes_value = obj
    elif isinstance(obj, list):
        out.list_value.SetInParent()
        for item in obj:
            ref_value(item, out.list_value.values.add())
    else:
        out.map_value.SetInParent()
        for key, item in obj.items():
            ref_value(item, out.map_value.fields[key])


def ref_map(values: dict[str, Any], target: Any) -> None:
    for key, item in values.items():
        ref_value(item, target[key])


def generated_envelope(message_id: str, sender: str, minor: int = 0) -> pb.Envelope:
    env = pb.Envelope(message_id=message_id, sender_id=sender)
    env.timestamp.FromNanoseconds(1_700_000_000_123_456_789)
    env.schema_version.major = 1
    env.schema_version.minor = minor
    return env


@given(
    kind=st.sampled_from(["client_update", "global_update", "evaluation_request"]),
    message_id=ids,
    sender=ids,
    rnd=rounds,
    sd=state_dicts,
    values=value_maps,
    ext=value_maps,
    compression=st.sampled_from(["zstd", "lz4", "none"]),
    deterministic=st.booleans(),
)
def test_generated_envelope_with_weights_decodes(
    kind, message_id, sender, rnd, sd, values, ext, compression, deterministic
):
    env = generated_envelope(message_id, sender)
    ref_map(ext, env.extensions)
    body = getattr(env, kind)
    body.round_id = rnd
    if kind == "client_update":
        body.client_id = sender
        body.num_examples = 7
        ref_map(values, body.metrics)
    else:
        ref_map(values, body.config)
    tensor_map = encode_tensor_map(sd, compression=compression)
    body.weights.CopyFrom(tensor_pb2.TensorMap.FromString(tensor_map))
    blob = env.SerializeToString(deterministic=deterministic)

    got = messages.decode_message(blob)
    assert got.type == kind
    assert got.message_id == message_id
    assert got.sender_id == sender
    assert got.schema_version == "1.0"
    assert got.timestamp == pytest.approx(1_700_000_000.123456789)
    assert got.body.round_id == rnd
    assert not got.body.HasField("weights")  # carved out, handed over as a view
    assert got.weights is not None
    assert bytes(got.weights) == body.weights.SerializeToString(deterministic=True)
    assert_same_state_dict(got.tensors(), sd)
    values_field = "metrics" if kind == "client_update" else "config"
    assert_same_values(messages.value_map_to_dict(getattr(got.body, values_field)), values)
    assert_same_values(messages.value_map_to_dict(got.envelope.extensions), ext)
    if kind == "client_update":
        assert got.body.client_id == sender
        assert got.body.num_examples == 7
    # Re-encoding may add alignment padding that the generated writer did not, so
    # compare what the bytes say, and that the generated classes keep ours as they are.
    again = got.to_bytes()
    assert pb.Envelope.FromString(again).SerializeToString(deterministic=True) == again
    back = messages.decode_message(again)
    assert back.body == got.body and back.envelope.extensions == got.envelope.extensions
    assert back.weights is not None
    assert bytes(back.weights) == bytes(got.weights)


def _fill_without_weights(env: pb.Envelope, kind: str, cid: str, values: dict[str, Any]) -> None:
    if kind == "client_registration":
        body = env.client_registration
        body.client_id = cid
        body.capabilities.supported_codecs.append(tensor_pb2.CODEC_ZSTD)
        body.capabilities.max_message_bytes = 1 << 20
        body.model_info.name = "SimpleCNN"
        body.model_info.parameter_count = 1234
        ref_map(values, body.attributes)
    elif kind == "heartbeat":
        env.heartbeat.client_id = cid
        env.heartbeat.status = pb.CLIENT_STATUS_TRAINING
        ref_map(values, env.heartbeat.system_metrics)
    elif kind == "training_start":
        env.training_start.round_id = 5
        env.training_start.client_ids.extend([cid, "other"])
        ref_map(values, env.training_start.config)
    elif kind == "evaluation_request":
        env.evaluation_request.round_id = 5
        env.evaluation_request.client_ids.append(cid)
        ref_map(values, env.evaluation_request.config)
    elif kind == "evaluation_result":
        env.evaluation_result.client_id = cid
        env.evaluation_result.round_id = 5
        env.evaluation_result.num_examples = 10
        ref_map(values, env.evaluation_result.metrics)
    else:
        assert kind == "shutdown"
        env.shutdown.reason = cid


_NO_WEIGHTS = [
    "client_registration",
    "heartbeat",
    "training_start",
    "evaluation_request",
    "evaluation_result",
    "shutdown",
]


@pytest.mark.parametrize("kind", _NO_WEIGHTS)
@settings(max_examples=15)
@given(cid=ids, values=value_maps)
def test_generated_envelope_without_weights_decodes(kind, cid, values):
    env = generated_envelope("m-1", cid)
    _fill_without_weights(env, kind, cid, values)
    blob = env.SerializeToString()
    got = messages.decode_message(blob)
    assert got.type == kind
    assert got.weights is None
    assert got.sender_id == cid
    # Every field reads back as the generated parser reads it.
    reference = pb.Envelope.FromString(blob)
    assert got.envelope.SerializeToString(deterministic=True) == reference.SerializeToString(
        deterministic=True
    )
    assert got.to_bytes() == env.SerializeToString(deterministic=True)
    if kind != "shutdown":
        values_field = {
            "client_registration": "attributes",
            "heartbeat": "system_metrics",
            "evaluation_result": "metrics",
        }.get(kind, "config")
        assert_same_values(messages.value_map_to_dict(getattr(got.body, values_field)), values)
