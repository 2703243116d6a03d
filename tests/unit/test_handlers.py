"""Message handlers: dispatch by type name (old API) and by body class (typed
routes); failures are counted and logged; a handler that raises is reported to
the caller as HandlerError (so its delivery can be retried, not committed)."""

from __future__ import annotations

import asyncio
import logging

import pytest
import torch

from flwire import messages
from flwire.compat.communication.message_handlers import (
    ClientMessageHandler,
    MessageHandler,
    ServerMessageHandler,
)
from flwire.compat.serialization.message_serializer import MessageSerializer, legacy_type_name
from flwire.compat.serialization.weight_serializer import WeightSerializer
from flwire.messages import HandlerError
from flwire.messages.schema import types_from
from flwire.v1 import messages_pb2 as pb
from flwire.v1 import tensor_pb2, values_pb2

LOGGER = "flwire.compat.communication.message_handlers"
WEIGHTS = {"w": torch.tensor([[1.0, 2.0], [3.0, -4.0]]), "n": torch.tensor([5], dtype=torch.int64)}


def run(coro):
    return asyncio.run(coro)


def same_weights(raw) -> bool:
    got = WeightSerializer.deserialize_weights(raw)
    return list(got) == list(WEIGHTS) and all(torch.equal(got[k], v) for k, v in WEIGHTS.items())


class AsyncClient:
    def __init__(self):
        self.calls = []

    async def process_global_update(self, round_id, weights):
        await asyncio.sleep(0)
        self.calls.append(("process_global_update", round_id, weights))

    async def start_training_round(self, payload):
        self.calls.append(("start_training_round", payload))

    async def perform_evaluation(self, payload):
        self.calls.append(("perform_evaluation", payload))

    async def shutdown(self):
        self.calls.append(("shutdown",))


class SyncClient:
    def __init__(self):
        self.calls = []

    def process_global_update(self, round_id, weights):
        self.calls.append(("process_global_update", round_id, weights))

    def start_training_round(self, payload):
        self.calls.append(("start_training_round", payload))

    def perform_evaluation(self, payload):
        self.calls.append(("perform_evaluation", payload))

    def shutdown(self):
        self.calls.append(("shutdown",))


class AsyncServer:
    def __init__(self):
        self.calls = []

    async def process_client_update(self, client_id, round_id, weights, metrics):
        await asyncio.sleep(0)
        self.calls.append(("process_client_update", client_id, round_id, weights, metrics))

    async def register_client(self, client_id, payload):
        self.calls.append(("register_client", client_id, payload))

    async def update_client_heartbeat(self, client_id):
        self.calls.append(("update_client_heartbeat", client_id))


class SyncServer:
    def __init__(self):
        self.calls = []

    def process_client_update(self, client_id, round_id, weights, metrics):
        self.calls.append(("process_client_update", client_id, round_id, weights, metrics))

    def register_client(self, client_id, payload):
        self.calls.append(("register_client", client_id, payload))

    def update_client_heartbeat(self, client_id):
        self.calls.append(("update_client_heartbeat", client_id))


# ----------------------------------------------------------------------------- client side


@pytest.mark.parametrize("client_class", [AsyncClient, SyncClient])
def test_client_handler_dispatches_every_server_message(client_class):
    client = client_class()
    handler = ClientMessageHandler(client)
    blobs = [
        messages.global_update(7, WEIGHTS, {"lr": 0.1}).to_bytes(),
        messages.training_start(8, {"local_epochs": 2}, ["c1"]).to_bytes(),
        messages.evaluation_request(9, None, {"batch_size": 32}).to_bytes(),
        messages.shutdown("finished").to_bytes(),
    ]
    results = [run(handler.handle_message(b)) for b in blobs]
    assert results == [True, True, True, True]
    names = [c[0] for c in client.calls]
    assert names == [
        "process_global_update",
        "start_training_round",
        "perform_evaluation",
        "shutdown",
    ]
    _, round_id, weights = client.calls[0]
    assert round_id == 7
    assert same_weights(weights)
    expected = {"round_id": 8, "config": {"local_epochs": 2}, "client_ids": ["c1"]}
    assert client.calls[1][1] == expected
    # Known fields are always present (empty when the sender left them out).
    assert client.calls[2][1] == {"round_id": 9, "config": {"batch_size": 32}, "client_ids": []}
    assert handler.stats == {"received": 4, "handled": 4}


def test_client_handler_gets_evaluation_weights_in_the_payload():
    client = AsyncClient()
    handler = ClientMessageHandler(client)
    assert run(handler.handle_message(messages.evaluation_request(2, WEIGHTS).to_bytes()))
    payload = client.calls[0][1]
    assert payload["round_id"] == 2
    assert same_weights(payload["weights"])


@pytest.mark.parametrize(
    "blob",
    [
        messages.client_update("c1", 1, WEIGHTS).to_bytes(),
        messages.heartbeat("c1").to_bytes(),
        messages.client_registration("c1").to_bytes(),
        messages.evaluation_result("c1", 1, {"acc": 1.0}).to_bytes(),
    ],
)
def test_client_handler_leaves_client_messages_unhandled(blob, caplog):
    client = AsyncClient()
    handler = ClientMessageHandler(client)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert run(handler.handle_message(blob)) is False
    assert client.calls == []
    assert handler.stats["unhandled"] == 1
    assert handler.stats["handled"] == 0
    record = caplog.records[-1]
    assert record.levelno == logging.WARNING
    assert legacy_type_name(messages.decode_message(blob).type) in record.getMessage()
    assert "c1" in record.getMessage()


def test_client_handler_maps_every_type_the_server_sends():
    # The routes follow the schema's (flwire.v1.message).sender options.
    assert set(ClientMessageHandler.METHODS) == set(types_from("server"))


def test_server_handler_maps_only_types_clients_send():
    assert set(ServerMessageHandler.METHODS) <= set(types_from("client"))
    assert set(ServerMessageHandler.METHODS) == {
        "client_update",
        "client_registration",
        "heartbeat",
    }


# ----------------------------------------------------------------------------- server side


@pytest.mark.parametrize("server_class", [AsyncServer, SyncServer])
def test_server_handler_dispatches_every_client_message(server_class):
    server = server_class()
    handler = ServerMessageHandler(server)
    update = MessageSerializer.create_client_update_message(
        "c1", 3, WeightSerializer.serialize_weights(WEIGHTS), {"loss": 0.5, "epochs": 1}
    )
    registration = messages.client_registration(
        "c2", model_info={"name": "CNN", "parameter_count": 10}, attributes={"site": "x"}
    ).to_bytes()
    beat = MessageSerializer.serialize_message("client_heartbeat", {"client_id": "c3"}, "c3")
    results = [run(handler.handle_message(b)) for b in (update, registration, beat)]
    assert results == [True, True, True]
    assert [c[0] for c in server.calls] == [
        "process_client_update",
        "register_client",
        "update_client_heartbeat",
    ]
    _, client_id, round_id, weights, metrics = server.calls[0]
    assert (client_id, round_id, metrics) == ("c1", 3, {"loss": 0.5, "epochs": 1})
    assert type(metrics["epochs"]) is int
    assert same_weights(weights)
    _, client_id, payload = server.calls[1]
    assert client_id == "c2"
    assert payload["client_id"] == "c2"
    assert payload["model_info"] == {"name": "CNN", "parameter_count": 10}
    assert payload["attributes"] == {"site": "x"}
    assert server.calls[2] == ("update_client_heartbeat", "c3")
    assert handler.stats == {"received": 3, "handled": 3}


def test_server_handler_accepts_memoryview_and_bytearray_input():
    server = AsyncServer()
    handler = ServerMessageHandler(server)
    assert run(handler.handle_message(memoryview(messages.heartbeat("c9").to_bytes())))
    assert run(handler.handle_message(bytearray(messages.heartbeat("c9").to_bytes())))
    assert server.calls == [("update_client_heartbeat", "c9")] * 2


def test_server_handler_counts_a_redelivered_update_once():
    """Kafka delivers at least once: the same message (same id) arriving again,
    e.g. after a consumer crash before its commit, is not handled twice."""
    server = AsyncServer()
    handler = ServerMessageHandler(server)
    blob = messages.client_update("c1", 4, WEIGHTS, {"loss": 1.0}).to_bytes()
    assert run(handler.handle_message(blob))
    assert not run(handler.handle_message(bytes(blob)))
    assert [call[0] for call in server.calls] == ["process_client_update"]
    assert handler.stats["duplicates"] == 1 and handler.stats["handled"] == 1


def test_a_failed_message_is_handled_again_when_redelivered():
    class Flaky(AsyncServer):
        failures = 1

        async def process_client_update(self, *args):
            if self.failures:
                self.failures -= 1
                raise RuntimeError("disk full")
            await super().process_client_update(*args)

    server = Flaky()
    handler = ServerMessageHandler(server)
    blob = messages.client_update("c1", 4, WEIGHTS, {"loss": 1.0}).to_bytes()
    with pytest.raises(HandlerError, match="disk full"):
        run(handler.handle_message(blob))
    assert run(handler.handle_message(blob))  # the retry is not mistaken for a duplicate
    assert handler.stats["handler_errors"] == 1 and handler.stats["handled"] == 1


# ----------------------------------------------------------------------------- typed routes


def test_typed_route_receives_the_decoded_message():
    handler = MessageHandler()
    seen = []

    async def on_update(msg):
        seen.append(msg)

    handler.route(pb.ClientUpdate, on_update)
    blob = messages.client_update("c1", 4, WEIGHTS, {"loss": 0.1}).to_bytes()
    assert run(handler.handle_message(blob)) is True
    (msg,) = seen
    assert isinstance(msg, messages.Message)
    assert msg.type == "client_update"
    assert msg.body.round_id == 4
    assert msg.sender_id == "c1"
    got = msg.tensors()
    assert all(torch.equal(got[k], v) for k, v in WEIGHTS.items())


def test_sync_typed_route_and_legacy_handler_both_run():
    handler = MessageHandler()
    order = []
    handler.route(pb.Heartbeat, lambda msg: order.append(("typed", msg.body.client_id)))
    handler.register_handler(
        "client_heartbeat", lambda d: order.append(("old", d["payload"]["client_id"]))
    )
    assert run(handler.handle_message(messages.heartbeat("c5").to_bytes())) is True
    assert order == [("typed", "c5"), ("old", "c5")]


def test_every_body_class_can_be_routed():
    handler = MessageHandler()
    for field in pb.Envelope.DESCRIPTOR.oneofs_by_name["body"].fields:
        body_class = getattr(pb, field.message_type.name)
        handler.route(body_class, lambda msg: None)
    assert set(handler.routes) == set(messages.MESSAGE_TYPES)


@pytest.mark.parametrize(
    "not_a_body",
    [
        pb.Envelope,
        pb.SchemaVersion,
        pb.Capabilities,
        tensor_pb2.TensorMap,
        values_pb2.Value,
        str,
        1,
    ],
    ids=repr,
)
def test_route_with_a_non_body_class_raises_type_error(not_a_body):
    handler = MessageHandler()
    with pytest.raises(TypeError):
        handler.route(not_a_body, lambda msg: None)
    assert handler.routes == {}


# ----------------------------------------------------------------------------- failures


def test_failing_handler_is_counted_logged_and_raised_as_handler_error(caplog):
    handler = MessageHandler()
    handled = []

    async def flaky(message):
        if message["payload"]["round_id"] == 1:
            raise RuntimeError("kaboom")
        handled.append(message["payload"]["round_id"])

    handler.register_handler("client_update", flaky)
    first = messages.client_update("client-A", 1, WEIGHTS)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        with pytest.raises(HandlerError) as raised:
            run(handler.handle_message(first.to_bytes()))
        assert run(handler.handle_message(messages.client_update("c", 2, WEIGHTS).to_bytes()))
    assert raised.value.message_id == first.message_id
    assert raised.value.message_type == "client_update"
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert handled == [2]
    assert handler.stats["handler_errors"] == 1
    assert handler.stats["handled"] == 1
    assert handler.stats["received"] == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    text = errors[0].getMessage()
    assert "client_update" in text
    assert "client-A" in text
    assert first.message_id in text
    assert errors[0].exc_info is not None and "kaboom" in str(errors[0].exc_info[1])


def test_failing_typed_route_is_counted_and_logged(caplog):
    handler = MessageHandler()

    def broken(msg):
        raise KeyError("missing")

    handler.route(pb.Shutdown, broken)
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        with pytest.raises(HandlerError, match="KeyError"):
            run(handler.handle_message(messages.shutdown(sender_id="the-server").to_bytes()))
    assert handler.stats["handler_errors"] == 1
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "shutdown" in record.getMessage() and "the-server" in record.getMessage()


def test_failing_client_method_is_counted():
    class BrokenClient(AsyncClient):
        async def shutdown(self):
            raise OSError("disk gone")

    handler = ClientMessageHandler(BrokenClient())
    with pytest.raises(HandlerError, match="disk gone"):
        run(handler.handle_message(messages.shutdown().to_bytes()))
    assert run(handler.handle_message(messages.training_start(1).to_bytes())) is True
    assert handler.stats["handler_errors"] == 1
    assert handler.stats["handled"] == 1


@pytest.mark.parametrize(
    "raw",
    [b"garbage", b"", "a str", None, 12, b"\x0a\x02id", messages.heartbeat("c").to_bytes()[:-3]],
    ids=repr,
)
def test_undecodable_message_is_counted_and_logged(raw, caplog):
    server = AsyncServer()
    handler = ServerMessageHandler(server)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert run(handler.handle_message(raw)) is False
    assert handler.stats["decode_errors"] == 1
    assert handler.stats["received"] == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "undecodable" in errors[0].getMessage()
    # the next message is handled normally
    assert run(handler.handle_message(messages.heartbeat("c7").to_bytes())) is True
    assert server.calls == [("update_client_heartbeat", "c7")]


def test_unhandled_type_is_counted_and_logged(caplog):
    handler = MessageHandler()
    handler.register_handler("shutdown", lambda d: None)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert run(handler.handle_message(messages.heartbeat("lonely").to_bytes())) is False
    assert handler.stats["unhandled"] == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "client_heartbeat" in warnings[0].getMessage()
    assert "lonely" in warnings[0].getMessage()


def test_mixed_stream_stats(monkeypatch):
    server = AsyncServer()
    handler = ServerMessageHandler(server)

    def explode(*args):
        raise ValueError("bad registration")

    monkeypatch.setattr(server, "register_client", explode)
    stream = [
        messages.heartbeat("c1").to_bytes(),
        b"\x00\x01\x02",
        messages.shutdown().to_bytes(),  # no server handler for it
        messages.client_registration("c2").to_bytes(),
        messages.client_update("c1", 0, WEIGHTS).to_bytes(),
    ]

    async def loop():
        out: list[bool | str] = []
        for raw in stream:
            try:
                out.append(await handler.handle_message(raw))
            except HandlerError:
                out.append("raised")
        return out

    assert run(loop()) == [True, False, False, "raised", True]
    assert handler.stats == {
        "received": 5,
        "handled": 2,
        "decode_errors": 1,
        "unhandled": 1,
        "handler_errors": 1,
    }
    assert [c[0] for c in server.calls] == ["update_client_heartbeat", "process_client_update"]
