"""Each message type is declared once, in messages.proto: its rules (options in
options.proto) drive validation, topic routing, dispatch and the compat
mapping. These tests read the rules from the descriptors independently and
hold every consumer of them to the schema."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from google.protobuf.message import Message

from flwire import messages
from flwire.compat.communication.message_handlers import (
    ClientMessageHandler,
    ServerMessageHandler,
)
from flwire.compat.serialization.message_serializer import MessageSerializer
from flwire.exceptions import (
    InvalidMessageError,
    MessageDecodeError,
    MessageValidationError,
    SerializationException,
)
from flwire.messages import schema
from flwire.transport import TopicLayout
from flwire.v1 import messages_pb2, options_pb2

BODY = messages_pb2.Envelope.DESCRIPTOR.oneofs_by_name["body"]
WEIGHTS = {"w": np.arange(12, dtype=np.float32).reshape(3, 4)}


def _declared(field) -> tuple[options_pb2.MessageRules, dict[str, options_pb2.FieldRules]]:
    desc = field.message_type
    rules = {f.name: f.GetOptions().Extensions[options_pb2.field] for f in desc.fields}
    return desc.GetOptions().Extensions[options_pb2.message], rules


def test_every_body_declares_a_topic_and_a_sender():
    for field in BODY.fields:
        message, _ = _declared(field)
        assert message.topic != options_pb2.TOPIC_UNSPECIFIED, field.name
        assert message.sender != options_pb2.ROLE_UNSPECIFIED, field.name


def test_schema_tables_match_the_declared_options():
    assert list(schema.BODY_TYPES) == [f.name for f in BODY.fields]
    for field in BODY.fields:
        message, rules = _declared(field)
        kind = schema.BODY_TYPES[field.name]
        body_cls: type[Message] = kind.cls
        assert issubclass(body_cls, Message)
        assert body_cls.DESCRIPTOR is field.message_type
        assert kind.topic == options_pb2.Topic.Name(message.topic).removeprefix("TOPIC_").lower()
        assert kind.sender == options_pb2.Role.Name(message.sender).removeprefix("ROLE_").lower()
        declared = {(n, "required") for n, r in rules.items() if r.required}
        declared |= {(n, "non_negative") for n, r in rules.items() if r.non_negative}
        assert {(r.field, r.rule) for r in kind.rules} == declared


def test_topic_routing_follows_the_schema():
    layout = TopicLayout("job7")
    names = {
        "broadcast": layout.broadcast,
        "updates": layout.updates,
        "control": layout.control,
        "aggregates": layout.aggregates,
    }
    for name, kind in schema.BODY_TYPES.items():
        if kind.topic == schema.ANY:  # an application's own types: only the custom body
            assert (name, kind.sender) == (schema.CUSTOM, schema.ANY)
            continue
        assert layout.for_message(name) == names[kind.topic]
    # What clients send goes to the server's topics and back: never mixed.
    assert set(schema.types_on("broadcast")) == set(schema.types_from("server"))
    assert set(schema.types_on("updates")) | set(schema.types_on("control")) == set(
        schema.types_from("client")
    )
    # The aggregates topic is the server side's own: only the aggregators write it.
    assert (
        schema.types_on("aggregates") == schema.types_from("aggregator") == ("partial_aggregate",)
    )
    with pytest.raises(ValueError, match="unknown topic"):
        layout.topic("gossip")
    with pytest.raises(ValueError, match="unknown topic"):
        layout.topic(schema.ANY)


def test_building_an_invalid_message_lists_every_violation():
    with pytest.raises(MessageValidationError) as info:
        messages.client_update("", -3, None, num_examples=-1)  # type: ignore[arg-type]
    err = info.value
    assert not isinstance(err, MessageDecodeError)
    assert [(v.field, v.rule) for v in err.violations] == [
        ("client_update.client_id", "required"),
        ("client_update.round_id", "non_negative"),
        ("client_update.weights", "required"),
        ("client_update.num_examples", "non_negative"),
    ]
    assert "4 rules broken" in str(err) and "round_id" in str(err)


def test_decoding_a_message_that_breaks_the_rules_is_a_decode_and_a_validation_error():
    msg = messages.heartbeat("c1")
    msg.body.client_id = ""
    msg.envelope.schema_version.major = 9
    with pytest.raises(InvalidMessageError) as info:
        messages.decode_message(msg.to_bytes())
    assert isinstance(info.value, MessageDecodeError)
    assert isinstance(info.value, MessageValidationError)
    assert {(v.field, v.rule) for v in info.value.violations} == {
        ("envelope.schema_version", "schema_major"),
        ("heartbeat.client_id", "required"),
    }
    assert messages.decode_message(msg.to_bytes(), check=False).body.client_id == ""


def test_any_type_can_be_built_from_the_schema_alone():
    msg = messages.build(
        "evaluation_request",
        "server",
        weights=WEIGHTS,
        round_id=4,
        config={"batch": 32},
        client_ids=["a", "b"],
    )
    got = messages.decode_message(msg.to_bytes())
    assert got.type == "evaluation_request" and got.sender_id == "server"
    assert list(got.body.client_ids) == ["a", "b"] and got.body.config["batch"].int_value == 32
    assert np.array_equal(got.tensors(as_numpy=True)["w"], WEIGHTS["w"])
    hb = messages.build("heartbeat", "c1", client_id="c1", status="Evaluating")
    assert hb.body.status == messages_pb2.CLIENT_STATUS_EVALUATING
    with pytest.raises(MessageValidationError, match=r"heartbeat\.client_id: is empty"):
        messages.build("heartbeat", "c1")


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: messages.build("gossip"), "unknown message type 'gossip'; known: client_update"),
        (lambda: messages.build("shutdown", nope=1), "Shutdown has no field 'nope'"),
        (lambda: messages.build("shutdown", weights=WEIGHTS), "carries no weights"),
        (lambda: messages.build("heartbeat", client_id="c", status="dancing"), "'dancing'"),
        (lambda: messages.build("training_start", round_id="x"), "training_start.round_id"),
    ],
)
def test_generic_building_refuses_what_the_schema_does_not_have(call, match):
    with pytest.raises(SerializationException, match=match):
        call()


def test_a_type_without_a_typed_builder_still_works_through_the_compat_serializer(monkeypatch):
    monkeypatch.delitem(messages.BUILDERS, "training_start")
    payload = {"round_id": 2, "config": {"lr": 0.1}, "client_ids": ["c1"], "note": "x"}
    out = MessageSerializer.deserialize_message(
        MessageSerializer.serialize_message("training_start", payload, sender_id="server")
    )
    assert out["payload"] == payload


def test_dispatch_routes_by_body_class_or_type_name():
    seen: list[str] = []
    dispatcher = messages.Dispatcher(dedupe=True)
    dispatcher.route(messages_pb2.Heartbeat, lambda m: seen.append(m.body.client_id))
    dispatcher.route("shutdown", lambda m: seen.append(m.body.reason))
    with pytest.raises(TypeError):
        dispatcher.route(dict, print)
    hb = messages.heartbeat("c9").to_bytes()
    assert asyncio.run(dispatcher.handle_message(hb))
    assert not asyncio.run(dispatcher.handle_message(hb))  # a redelivery: counted once
    assert asyncio.run(dispatcher.handle_message(messages.shutdown("bye").to_bytes()))
    assert seen == ["c9", "bye"]
    assert dispatcher.stats["duplicates"] == 1


def test_concurrent_deliveries_of_one_message_run_its_handlers_once():
    """Issue 14: the seen check and the mark were separated by the handler's
    await, so two concurrent deliveries of the same bytes were both handled. A
    failed handler leaves the id unmarked: its redelivery is handled."""
    calls: list[str] = []
    fail = [True]

    async def handler(m: messages.Message) -> None:
        calls.append(m.message_id)
        await asyncio.sleep(0.01)
        if fail[0]:
            fail[0] = False
            raise RuntimeError("first try fails")

    async def main() -> list[object]:
        dispatcher = messages.Dispatcher(dedupe=True)
        dispatcher.route("heartbeat", handler)
        raw = messages.heartbeat("c1").to_bytes()
        first = await asyncio.gather(
            *(dispatcher.handle_message(raw) for _ in range(5)), return_exceptions=True
        )
        retried = await dispatcher.handle_message(raw)  # after the failure: handled
        again = await dispatcher.handle_message(raw)  # after the success: a duplicate
        assert dispatcher.stats["duplicates"] == 5
        return [
            *(type(r).__name__ if isinstance(r, Exception) else r for r in first),
            retried,
            again,
        ]

    outcome = asyncio.run(main())
    assert sorted(map(str, outcome[:5])) == ["False"] * 4 + ["HandlerError"]
    assert outcome[5:] == [True, False]
    assert len(calls) == 2  # the failed try and its redelivery, never concurrently


def test_the_legacy_handlers_cover_what_the_schema_says_each_side_receives():
    # A client receives every type the server sends; the old server API handles
    # the client types it had methods for (evaluation results go to typed routes).
    assert set(ClientMessageHandler.METHODS) == set(schema.types_from("server"))
    assert set(ServerMessageHandler.METHODS) <= set(schema.types_from("client"))
