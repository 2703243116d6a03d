"""The message builders and the ``Message`` accessors."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import torch

from flwire import messages
from flwire.exceptions import SerializationException
from flwire.tensors import EncodeOptions, codecs, encode_tensor_map
from flwire.v1 import messages_pb2 as pb
from flwire.v1 import tensor_pb2

WEIGHTS = {"w": torch.ones(2, 2), "i": torch.tensor([1, 2], dtype=torch.int64)}


def test_schema_constants():
    assert (messages.SCHEMA_MAJOR, messages.SCHEMA_MINOR) == (1, 2)
    assert messages.MESSAGE_TYPES == (
        "client_update",
        "global_update",
        "client_registration",
        "heartbeat",
        "training_start",
        "evaluation_request",
        "evaluation_result",
        "shutdown",
        "custom",
        "partial_aggregate",
    )


def test_envelope_header_fields():
    before = time.time()
    msg = messages.client_update("c1", 2, WEIGHTS)
    after = time.time()
    assert re.fullmatch(r"[0-9a-f]{32}", msg.message_id)
    assert msg.sender_id == "c1"
    assert msg.schema_version == "1.2"
    assert before - 1e-3 <= msg.timestamp <= after + 1e-3
    assert isinstance(msg.timestamp, float)
    assert msg.type == "client_update"
    assert isinstance(msg.body, pb.ClientUpdate)
    assert msg.envelope.WhichOneof("body") == "client_update"
    # The body's own weights field stays empty: the tensors travel beside it.
    assert not msg.body.HasField("weights")
    # msg.to_bytes() is the one way to encode (the encode_message alias is gone).
    assert not hasattr(messages, "encode_message")
    assert messages.decode_message(msg.to_bytes()).message_id == msg.message_id


def test_message_ids_are_unique():
    ids = {messages.heartbeat("c").message_id for _ in range(200)}
    assert len(ids) == 200


def test_server_messages_default_to_the_server_sender():
    assert messages.global_update(0, WEIGHTS).sender_id == messages.SERVER_ID == "server"
    assert messages.training_start(0).sender_id == "server"
    assert messages.evaluation_request(0).sender_id == "server"
    assert messages.shutdown().sender_id == "server"
    assert messages.shutdown(sender_id="ctrl").sender_id == "ctrl"


def test_client_messages_are_sent_by_the_client():
    for msg in (
        messages.client_update("c7", 0, WEIGHTS),
        messages.client_registration("c7"),
        messages.heartbeat("c7"),
        messages.evaluation_result("c7", 0),
    ):
        assert msg.sender_id == "c7"


def test_delta_flag_sets_weights_kind():
    assert messages.client_update("c", 0, WEIGHTS).body.weights_kind == pb.WEIGHTS_KIND_UNSPECIFIED
    assert (
        messages.client_update("c", 0, WEIGHTS, delta=True).body.weights_kind
        == pb.WEIGHTS_KIND_DELTA
    )
    assert messages.global_update(0, WEIGHTS, delta=True).body.weights_kind == pb.WEIGHTS_KIND_DELTA


def test_weights_accessors_on_a_built_message():
    msg = messages.client_update("c", 0, WEIGHTS, options=EncodeOptions(compression="none"))
    assert msg.has_weights
    assert msg.weights is not None
    assert bytes(msg.weights) == encode_tensor_map(WEIGHTS, compression="none")
    info = msg.weights_info()
    assert [(r.name, r.dtype.name, r.shape) for r in info.records] == [
        ("w", "float32", (2, 2)),
        ("i", "int64", (2,)),
    ]
    got = msg.tensors()
    assert torch.equal(got["w"], WEIGHTS["w"]) and torch.equal(got["i"], WEIGHTS["i"])


def test_numpy_weights_are_accepted():
    arrays = {"a": np.arange(4, dtype=np.float32), "b": np.array([[1, 2]], dtype=np.int64)}
    got = messages.decode_message(messages.global_update(1, arrays).to_bytes()).tensors(
        as_numpy=True
    )
    np.testing.assert_array_equal(got["a"], arrays["a"])
    np.testing.assert_array_equal(got["b"], arrays["b"])


def test_messages_without_weights():
    for msg in (
        messages.client_registration("c"),
        messages.heartbeat("c"),
        messages.training_start(0),
        messages.evaluation_request(0),
        messages.evaluation_result("c", 0),
        messages.shutdown(),
    ):
        assert not msg.has_weights
        assert msg.weights is None
        with pytest.raises(SerializationException, match="no weights"):
            msg.tensors()
        with pytest.raises(SerializationException, match="no weights"):
            msg.weights_info()


@pytest.mark.parametrize("weights", ["b64text", "", 123, [torch.ones(1)], object()], ids=repr)
def test_weights_that_are_not_a_state_dict_or_bytes_are_refused(weights):
    with pytest.raises(SerializationException):
        messages.client_update("c", 0, weights)
    with pytest.raises(SerializationException):
        messages.global_update(0, weights)
    with pytest.raises(SerializationException):
        messages.evaluation_request(0, weights)


def test_weights_given_as_str_name_the_legacy_format():
    with pytest.raises(SerializationException, match="base64"):
        messages.client_update("c", 0, "gASVKAAAAAAAAAB9lC4=")  # type: ignore[arg-type]


def test_weights_bytes_are_structure_checked():
    with pytest.raises(SerializationException):
        messages.client_update("c", 0, b'{"w": [1, 2]}')
    with pytest.raises(SerializationException):
        messages.client_update("c", 0, b"\x0a\xff")


def test_state_dict_problems_are_refused():
    with pytest.raises(SerializationException):
        messages.client_update("c", 0, {"w": [1.0, 2.0]})
    with pytest.raises(SerializationException):
        messages.client_update("c", 0, {1: torch.ones(1)})  # type: ignore[dict-item]


def test_unknown_codec_option_is_refused():
    with pytest.raises(SerializationException, match="compression"):
        messages.client_update("c", 0, WEIGHTS, options=EncodeOptions(compression="gzip"))


def test_options_must_be_encode_options():
    # The builders' codec={...} dicts are gone: options=EncodeOptions(...).
    with pytest.raises(SerializationException, match="EncodeOptions"):
        messages.client_update("c", 0, WEIGHTS, options={"compression": "none"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="codec"):
        messages.client_update("c", 0, WEIGHTS, codec={"compression": "none"})  # type: ignore[call-arg]


@pytest.mark.parametrize("compression", ["zstd", "lz4", "none"])
def test_options_choose_the_codec_of_the_weights(compression):
    zeros = {"z": torch.zeros(4096)}
    msg = messages.global_update(0, zeros, options=EncodeOptions(compression=compression))
    (rec,) = messages.decode_message(msg.to_bytes()).weights_info().records
    none = tensor_pb2.CODEC_UNSPECIFIED
    wire = codecs.by_name(compression).wire if compression != "none" else none
    assert rec.codec == wire
    assert torch.equal(msg.tensors()["z"], zeros["z"])


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("idle", pb.CLIENT_STATUS_IDLE),
        ("TRAINING", pb.CLIENT_STATUS_TRAINING),
        ("client_status_evaluating", pb.CLIENT_STATUS_EVALUATING),
        ("stopping", pb.CLIENT_STATUS_STOPPING),
        ("error", pb.CLIENT_STATUS_ERROR),
        (3, pb.CLIENT_STATUS_EVALUATING),
    ],
)
def test_heartbeat_status(status, expected):
    msg = messages.decode_message(messages.heartbeat("c", status).to_bytes())
    assert msg.body.status == expected


def test_heartbeat_unknown_status_is_refused():
    with pytest.raises(SerializationException, match="sleeping"):
        messages.heartbeat("c", "sleeping")


def test_client_registration_fields():
    msg = messages.client_registration(
        "c1",
        supported_codecs=["zstd", "CODEC_UNSPECIFIED"],
        supported_filters=[tensor_pb2.FILTER_BYTE_SHUFFLE],
        max_message_bytes=10_000_000,
        capabilities={"gpu": True, "cores": 8},
        model_info={
            "name": "SimpleCNN",
            "version": "1.2",
            "parameters": 431_080,
            "architecture_hash": "abc",
            "framework": "torch",
        },
        attributes={"site": "hospital-3"},
    )
    body = messages.decode_message(msg.to_bytes()).body
    caps = body.capabilities
    assert list(caps.supported_codecs) == [tensor_pb2.CODEC_ZSTD, tensor_pb2.CODEC_UNSPECIFIED]
    assert list(caps.supported_filters) == [tensor_pb2.FILTER_BYTE_SHUFFLE]
    assert caps.max_message_bytes == 10_000_000
    assert messages.value_map_to_dict(caps.extra) == {"gpu": True, "cores": 8}
    info = body.model_info
    assert (info.name, info.version, info.parameter_count, info.architecture_hash) == (
        "SimpleCNN",
        "1.2",
        431_080,
        "abc",
    )
    assert messages.value_map_to_dict(info.extra) == {"framework": "torch"}
    assert messages.value_map_to_dict(body.attributes) == {"site": "hospital-3"}


def test_client_registration_defaults_advertise_every_codec_and_shuffle():
    caps = messages.client_registration("c1").body.capabilities
    # Every codec this flwire decodes: zstd and lz4.
    assert list(caps.supported_codecs) == [codecs.by_name(n).wire for n in codecs.names()]
    assert list(caps.supported_codecs) == [tensor_pb2.CODEC_ZSTD, tensor_pb2.CODEC_LZ4]
    assert list(caps.supported_filters) == [tensor_pb2.FILTER_BYTE_SHUFFLE]


def test_client_registration_unknown_codec_is_refused():
    with pytest.raises(SerializationException, match="brotli"):
        messages.client_registration("c1", supported_codecs=["brotli"])


def test_values_that_cannot_be_carried_are_refused_naming_their_place():
    with pytest.raises(SerializationException, match=r"metrics\['bad'\]"):
        messages.client_update("c", 0, WEIGHTS, {"bad": {1, 2}})
    with pytest.raises(SerializationException, match=r"config\['x'\]\[1\]"):
        messages.training_start(0, {"x": [1, object()]})
    with pytest.raises(SerializationException, match=r"extensions\['e'\]"):
        messages.shutdown(extensions={"e": 2**64})
    with pytest.raises(SerializationException, match="keys must be str"):
        messages.evaluation_result("c", 0, {3: 1.0})  # type: ignore[dict-item]


def test_round_trip_keeps_client_ids_order_and_duplicates():
    ids = ["b", "a", "b", "ü"]
    got = messages.decode_message(messages.training_start(1, None, ids).to_bytes())
    assert list(got.body.client_ids) == ids


def test_message_is_a_plain_dataclass_around_the_envelope():
    msg = messages.shutdown("x")
    again = messages.Message(msg.envelope)
    assert again.to_bytes() == msg.to_bytes()
    assert messages.Message(pb.Envelope()).type == ""
    with pytest.raises(SerializationException, match="no body"):
        messages.Message(pb.Envelope()).to_bytes()


def test_model_info_parameters_key_is_not_dropped_when_parameter_count_is_given():
    """KNOWN BUG (minor): ``parameters`` is the old alias of ``parameter_count``, but
    ``info.pop("parameter_count", info.pop("parameters", 0))`` pops it even when
    ``parameter_count`` is present, so its value silently disappears instead of
    landing in ModelInfo.extra (or being refused as a conflict)."""
    msg = messages.client_registration(
        "c", model_info={"parameter_count": 5, "parameters": "see model card"}
    )
    info = messages.decode_message(msg.to_bytes()).body.model_info
    assert info.parameter_count == 5
    assert messages.value_map_to_dict(info.extra) == {"parameters": "see model card"}
