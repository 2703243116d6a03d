"""Kafka headers of a message and the confluent-kafka style serdes."""

from __future__ import annotations

import pytest
import torch
from confluent_kafka.serialization import MessageField, SerializationContext

from flwire import messages
from flwire.exceptions import SerializationException
from flwire.transport import (
    FlwireDeserializer,
    FlwireSerializer,
    headers,
    message_headers,
    read_headers,
)
from flwire.transport.chunking import split_payload

WEIGHTS = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}


def all_messages() -> list[messages.Message]:
    return [
        messages.client_update("client-ü", 1, WEIGHTS, {"loss": 0.5}),
        messages.global_update(1, WEIGHTS),
        messages.client_registration("c2"),
        messages.heartbeat("c3", "training"),
        messages.training_start(2, {"epochs": 1}),
        messages.evaluation_request(2),
        messages.evaluation_result("c4", 2, {"acc": 0.75}),
        messages.shutdown("bye", sender_id="srv"),
    ]


@pytest.mark.parametrize("msg", all_messages(), ids=lambda m: m.type)
def test_message_headers_name_type_version_sender_and_id(msg):
    hdrs = message_headers(msg)
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in hdrs)
    as_dict = dict(hdrs)
    assert len(as_dict) == len(hdrs) == 4
    assert as_dict["flwire-type"] == msg.type.encode()
    assert as_dict["flwire-schema-version"] == b"1.2"
    assert as_dict["flwire-sender-id"] == msg.sender_id.encode("utf-8")
    assert as_dict["flwire-message-id"] == msg.message_id.encode()
    assert headers.TYPE == "flwire-type"


@pytest.mark.parametrize("msg", all_messages(), ids=lambda m: m.type)
def test_read_headers_parses_them_back(msg):
    got = read_headers(message_headers(msg))
    assert got == {
        "flwire-type": msg.type,
        "flwire-schema-version": "1.2",
        "flwire-sender-id": msg.sender_id,
        "flwire-message-id": msg.message_id,
    }


def test_headers_match_what_the_receiver_decodes():
    msg = messages.client_update("client-ü", 1, WEIGHTS)
    got = messages.decode_message(msg.to_bytes())
    assert read_headers(message_headers(msg)) == read_headers(message_headers(got))
    assert read_headers(message_headers(msg))["flwire-sender-id"] == "client-ü"


def test_read_headers_ignores_other_headers():
    hdrs = [
        ("traceparent", b"00-abc-def-01"),
        ("flwire-type", b"heartbeat"),
        ("content-type", b"application/x-protobuf"),
        ("flwire-sender-id", None),  # no value: ignored
        ("FLWIRE-TYPE", b"shutdown"),  # other case: not a flwire header
        ("flwire-message-id", "already-a-str"),
        ("x-flwire-type", b"shutdown"),
    ]
    assert read_headers(hdrs) == {"flwire-type": "heartbeat", "flwire-message-id": "already-a-str"}


def test_read_headers_last_one_wins_and_bad_utf8_is_replaced():
    hdrs = [("flwire-type", b"shutdown"), ("flwire-type", b"heartbeat"), ("flwire-x", b"\xff")]
    assert read_headers(hdrs) == {"flwire-type": "heartbeat", "flwire-x": "\ufffd"}


@pytest.mark.parametrize("empty", [None, [], ()])
def test_read_headers_of_nothing(empty):
    assert read_headers(empty) == {}


# ----------------------------------------------------------------------------- serdes


@pytest.mark.parametrize("msg", all_messages(), ids=lambda m: m.type)
def test_serdes_round_trip(msg):
    data = FlwireSerializer()(msg, None)
    assert isinstance(data, bytes)
    assert data == msg.to_bytes()
    got = FlwireDeserializer()(data, None)
    assert isinstance(got, messages.Message)
    assert got.type == msg.type
    assert got.message_id == msg.message_id
    assert got.sender_id == msg.sender_id
    assert got.to_bytes() == data
    if msg.has_weights:
        assert torch.equal(got.tensors()["w"], WEIGHTS["w"])


def test_serdes_pass_none_through():
    assert FlwireSerializer()(None, None) is None
    assert FlwireDeserializer()(None, None) is None
    assert FlwireSerializer()(None) is None


def test_serializer_passes_bytes_like_through():
    blob = messages.heartbeat("c1").to_bytes()
    assert FlwireSerializer()(blob, None) == blob
    assert FlwireSerializer()(bytearray(blob), None) == blob
    assert FlwireSerializer()(memoryview(blob), None) == blob


@pytest.mark.parametrize("data", [b"", b"junk", b"\x0a\x01"], ids=repr)
def test_deserializer_refuses_invalid_records(data):
    with pytest.raises(messages.MessageDecodeError):
        FlwireDeserializer()(data, None)


@pytest.mark.parametrize("value", [5, 1.5, "text", ["a"], {"k": 1}])
def test_serializer_refuses_what_is_not_a_message_or_bytes(value):
    with pytest.raises(SerializationException, match="takes a flwire Message or bytes"):
        FlwireSerializer()(value)


@pytest.mark.parametrize("with_headers", [True, False])
def test_deserializer_refuses_a_part_and_names_the_api_that_reassembles(with_headers):
    blob = messages.heartbeat("c1").to_bytes() * 40
    part, _, _ = next(split_payload(blob, "transfer-1", 1000))
    ctx = SerializationContext("t", MessageField.VALUE, [("flwire-part", b"0/3")])
    with pytest.raises(SerializationException, match=r"Channel\.receive"):
        FlwireDeserializer()(part, ctx if with_headers else None)


@pytest.mark.parametrize("with_headers", [True, False])
def test_deserializer_refuses_a_stream_part_and_names_the_api_that_decodes_it(with_headers):
    """Records of a streamed transfer are refused as such (they said the schema
    version was missing, and suggested upgrading flwire)."""
    from stream_tools import run, stream_values, streamed

    values = run(stream_values(streamed({"w": torch.ones(3000)})))
    assert len(values) >= 3
    for index, value in enumerate(values):
        ctx = SerializationContext(
            "t", MessageField.VALUE, [("flwire-stream", str(index).encode())]
        )
        with pytest.raises(SerializationException, match=r"one part of a streamed transfer") as e:
            FlwireDeserializer()(value, ctx if with_headers else None)
        assert "Channel.receive" in str(e.value)
