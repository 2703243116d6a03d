"""Dispatcher.handle_delivery, the README's receive loop: a streamed update
(no payload bytes; its message decoded as it came) and an update in one record
are both handed to their handler, verified first when the dispatcher has a
verifier, and never committed unhandled. What handle_message and route are
handed by mistake raises TypeError naming the call to use."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
import torch
from stream_tools import SMALL_LIMIT, assert_same_weights, random_tensor, run, started, streamed

from flwire import security
from flwire.exceptions import HandlerError
from flwire.messages import Dispatcher, Message, client_update
from flwire.security import TrustStore, Verifier
from flwire.transport import Channel, Delivery, InMemoryBroker
from flwire.v1 import messages_pb2

WEIGHTS = {"w": random_tensor(torch.float32, (3000,), 1)}  # 12 kB: above SMALL_LIMIT
TOPIC = "updates"
KEY = security.private_key_from_seed(b"\x05" * 32)


async def _loop(
    messages: list[Message], dispatcher: Dispatcher
) -> tuple[Channel, list[Delivery], InMemoryBroker]:
    """Send ``messages``, then run the README's receive loop until each is settled."""
    broker = InMemoryBroker()
    sender = Channel(await started(broker))
    for msg in messages:
        await sender.send_message(TOPIC, msg)
    channel = Channel(await started(broker))
    settled: list[Delivery] = []
    async for delivery in channel.receive([TOPIC], "server", dedupe=False):
        try:
            await dispatcher.handle_delivery(delivery)
        except HandlerError as exc:
            await delivery.fail(exc)
        else:
            await delivery.done()
        settled.append(delivery)
        if len(settled) == len(messages):
            break
    return channel, settled, broker


def test_streamed_and_whole_updates_reach_the_handler() -> None:
    got: list[Message] = []
    dispatcher = Dispatcher()
    dispatcher.route(messages_pb2.ClientUpdate, got.append)
    stream = streamed(WEIGHTS, sender="client-1")
    whole = client_update("client-2", 1, WEIGHTS, num_examples=3)
    _, settled, _ = run(_loop([stream, whole], dispatcher))
    assert [d.streamed for d in settled] == [True, False]
    assert [m.sender_id for m in got] == ["client-1", "client-2"]
    for msg in got:
        assert_same_weights(msg.tensors(), WEIGHTS)  # bit for bit (random bits: NaNs too)
    assert dispatcher.stats["handled"] == 2 and dispatcher.stats["received"] == 2


def test_a_streamed_update_is_verified_before_its_handler_runs() -> None:
    trust = TrustStore({"client-1": KEY.public_key()})
    got: list[str] = []
    signed = streamed(WEIGHTS, sender="client-1")
    security.sign_in_place(signed, "client-1", KEY)
    unsigned = streamed(WEIGHTS, sender="client-1")
    dispatcher = Dispatcher(verifier=Verifier(trust))
    dispatcher.route(messages_pb2.ClientUpdate, lambda m: got.append(m.message_id))
    _, settled, _ = run(_loop([signed, unsigned], dispatcher))
    assert got == [signed.message_id]
    assert dispatcher.stats["refused"] == 1
    assert dispatcher.verifier is not None
    assert dict(dispatcher.verifier.refusals) == {"unsigned": 1}
    assert len(settled) == 2


def test_a_failing_handler_of_a_streamed_update_fails_the_delivery() -> None:
    def boom(_: Message) -> None:
        raise RuntimeError("no room")

    dispatcher = Dispatcher()
    dispatcher.route(messages_pb2.ClientUpdate, boom)
    channel, _, _ = run(_loop([streamed(WEIGHTS)], dispatcher))
    assert dispatcher.stats["handler_errors"] == 1
    assert channel.stats["retries"] == 1  # handed out again, not committed


def test_handle_message_refuses_what_is_not_bytes() -> None:
    dispatcher = Dispatcher()
    msg = client_update("client-1", 1, {"w": np.zeros(3, np.float32)}, num_examples=1)

    class FakeDelivery:
        payload = None
        done = None

    with pytest.raises(TypeError, match=r"got None: .*dispatcher\.handle_delivery\(delivery\)"):
        run(dispatcher.handle_message(None))
    with pytest.raises(TypeError, match=r"a decoded Message goes to dispatcher\.handle\(msg\)"):
        run(dispatcher.handle_message(msg))
    with pytest.raises(TypeError, match=r"a Delivery goes to dispatcher\.handle_delivery"):
        run(dispatcher.handle_message(FakeDelivery()))
    assert dispatcher.stats["received"] == 0
    # Bytes that are not a message are skipped and counted, as before.
    assert run(dispatcher.handle_message(b"\xff\xff")) is False
    assert dispatcher.stats["decode_errors"] == 1


def test_route_takes_a_callable_and_says_when_it_replaces_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dispatcher = Dispatcher()
    bad: Any = 5
    with pytest.raises(TypeError, match=r"needs a callable handler .* got int"):
        dispatcher.route(messages_pb2.ClientUpdate, bad)
    first, second = (lambda m: None), (lambda m: None)
    dispatcher.route("client_update", first)
    with caplog.at_level(logging.WARNING, logger="flwire.messages.dispatch"):
        dispatcher.route("client_update", first)  # the same one again: no warning
        assert caplog.records == []
        dispatcher.route(messages_pb2.ClientUpdate, second)
    assert "route(client_update): replaces the handler" in caplog.text
    assert dispatcher.routes["client_update"] is second


def test_small_limit_makes_the_update_a_stream() -> None:
    """The streamed case above really is one: its weights exceed the record limit."""
    assert WEIGHTS["w"].numel() * 4 > SMALL_LIMIT
