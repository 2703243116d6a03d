"""What Channel and the transports are handed by mistake fails at the call, with
a message naming the mistake and the fix, instead of hanging or failing later
deep inside: a topic given as a str (each character became a topic), a missing
group id, a stopped Kafka transport, bytes given to send_message, a bootstrap
string given to Channel."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import pytest
from stream_tools import run

from flwire.exceptions import CommunicationException
from flwire.messages import client_update
from flwire.transport import Channel, InMemoryBroker, InMemoryTransport
from flwire.transport.streaming import StreamAssembler

BAD_TIMEOUT: Any = "10"
BAD_LIMITS: Any = {"max_tensors": 3}
MSG = client_update("client-1", 1, {"w": np.zeros(3, np.float32)}, num_examples=1)


async def _first(channel: Channel, topics: Any, group: Any) -> None:
    async for _ in channel.receive(topics, group, dedupe=False):
        break


def _channel() -> tuple[Channel, InMemoryTransport]:
    transport = InMemoryTransport(InMemoryBroker())
    return Channel(transport), transport


def test_channel_takes_a_transport() -> None:
    bootstrap: Any = "localhost:9092"
    with pytest.raises(TypeError, match=r"takes a Transport \(KafkaTransport\(bootstrap\)"):
        Channel(bootstrap)


@pytest.mark.parametrize(
    ("topics", "group", "match"),
    [
        ("flwire.job.updates", "g", r"got 'flwire\.job\.updates': pass \['flwire\.job\.updates'\]"),
        ([], "g", r"a non-empty list of topic names, got \[\]"),
        (["t", ""], "g", r"a topic name must be a non-empty str, got ''"),
        (["t", None], "g", r"a topic name must be a non-empty str, got None"),
        (["t"], None, r"needs a consumer group id \(a non-empty str\), got None"),
        (["t"], "", r"needs a consumer group id"),
    ],
    ids=["str", "empty", "empty_name", "none_name", "no_group", "empty_group"],
)
def test_receive_refuses_bad_topics_and_groups(topics: Any, group: Any, match: str) -> None:
    channel, transport = _channel()

    async def main() -> None:
        await transport.start()
        with pytest.raises(TypeError, match=match):
            await _first(channel, topics, group)

    run(main())
    # Nothing was subscribed to, and no topic was made of a name's characters.
    assert set(transport.broker.topics) == set()


def test_send_message_takes_a_message_and_a_topic() -> None:
    channel, transport = _channel()

    async def main() -> None:
        await transport.start()
        payload: Any = MSG.to_bytes()
        with pytest.raises(TypeError, match=r"takes a flwire Message .* got bytes; bytes go to"):
            await channel.send_message("t", payload)
        for topic in (None, ""):
            with pytest.raises(TypeError, match="a topic name must be a non-empty str"):
                await channel.send_message(topic, MSG)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="a topic name must be a non-empty str"):
                await channel.send(topic, b"x")  # type: ignore[arg-type]
        assert await channel.send_message("t", MSG) > 0

    run(main())
    assert list(transport.broker.topics) == ["t"]


def test_a_stopped_kafka_transport_says_so_at_once() -> None:
    """No broker is needed: after stop(), send and subscribe fail at once with
    the cause (they waited out delivery_timeout_s, or blamed the broker)."""
    from flwire.transport.kafka import KafkaTransport  # the dev install has the kafka extra

    async def main() -> None:
        transport = KafkaTransport("127.0.0.1:1", delivery_timeout_s=30, close_timeout_s=1)
        with pytest.raises(CommunicationException, match=r"not started \(or was stopped\)"):
            await transport.send("t", b"x")
        await transport.start()
        await transport.stop()
        for call in (transport.send("t", b"x"), transport.subscribe(["t"], "g")):
            with pytest.raises(CommunicationException, match=r"not started \(or was stopped\)"):
                await asyncio.wait_for(call, 5)

    run(main())


def test_a_fail_after_done_is_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    channel, transport = _channel()

    async def main() -> None:
        await transport.start()
        await channel.send_message("t", MSG)
        async for delivery in channel.receive(["t"], "g", dedupe=False):
            await delivery.done()
            await delivery.done()  # idempotent, silent
            assert caplog.records == []
            await delivery.fail(RuntimeError("too late"))
            break

    with caplog.at_level(logging.WARNING, logger="flwire.transport.channel"):
        run(main())
    assert "was settled already (done() or fail()); this fail() is ignored" in caplog.text
    assert "RuntimeError: too late" in caplog.text
    assert channel.stats["retries"] == 0 and channel.stats["failed_deliveries"] == 0


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: StreamAssembler(max_stream_bytes=-1), ValueError, r"max_stream_bytes must be"),
        (lambda: StreamAssembler(max_streams=0), ValueError, r"max_streams must be an int >= 1"),
        (lambda: StreamAssembler(part_timeout=0), ValueError, r"part_timeout must be a number > 0"),
        (
            lambda: StreamAssembler(part_timeout=BAD_TIMEOUT),
            TypeError,
            r"part_timeout must be a number",
        ),
        (
            lambda: StreamAssembler(limits=BAD_LIMITS),
            TypeError,
            r"DecodeLimits\(\*\*limits\)",
        ),
        (lambda: StreamAssembler(threads=-2), ValueError, r"threads must be an int >= 1"),
        (lambda: Channel(InMemoryTransport(), max_in_flight=0), ValueError, r"max_in_flight must"),
        (
            lambda: Channel(InMemoryTransport(), max_in_flight_bytes=-1),
            ValueError,
            r"max_in_flight_bytes must be an int >= 1 bytes, got -1",
        ),
    ],
    ids=[
        "stream_bytes",
        "streams",
        "timeout",
        "timeout_str",
        "limits_dict",
        "threads",
        "in_flight",
        "in_flight_bytes",
    ],
)
def test_bounds_that_would_refuse_everything_are_refused(
    make: Any, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        make()
