"""AsyncKafkaClient (the old API) running on the in-memory transport."""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np
import pytest

from flwire import messages
from flwire.compat.communication.kafka_client import AsyncKafkaClient
from flwire.exceptions import CommunicationException
from flwire.tensors import EncodeOptions
from flwire.transport import (
    ChannelEvent,
    DeliveryFailed,
    InMemoryBroker,
    InMemoryTransport,
    read_headers,
)
from flwire.transport.chunking import PART_HEADER, Reassembler, parse_part, split_payload

TIMEOUT = 10


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


async def wait_until(predicate, timeout: float = 5.0) -> None:
    async def poll():
        while not predicate():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


def _client(broker: InMemoryBroker, group: str = "g", **config) -> AsyncKafkaClient:
    return AsyncKafkaClient({"group_id": group, **config}, transport=InMemoryTransport(broker))


def _big_update() -> messages.Message:
    rng = np.random.default_rng(0)
    weights = {"w": rng.standard_normal(400_000).astype(np.float32)}  # ~1.6 MB, incompressible
    return messages.global_update(5, weights, {"lr": 0.01})


def test_send_and_subscribe_before_start_raise():
    async def main():
        client = _client(InMemoryBroker())
        with pytest.raises(CommunicationException, match="start"):
            await client.send_message("t", b"x")
        with pytest.raises(CommunicationException):
            await client.subscribe_to_topic("t", lambda v: None)
        assert client.running is False

    run(main())


def test_start_health_check_and_stop():
    async def main():
        client = _client(InMemoryBroker())
        await client.start()
        assert client.running is True
        assert await client.health_check() is True
        await client.stop()
        assert client.running is False
        with pytest.raises(CommunicationException):  # the transport is stopped
            await client.send_message("t", b"x")

    run(main())


def test_subscribe_needs_a_group():
    async def main():
        client = AsyncKafkaClient({}, transport=InMemoryTransport())
        await client.start()
        with pytest.raises(CommunicationException, match="group"):
            await client.subscribe_to_topic("t", lambda v: None)
        await client.subscribe_to_topic("t", lambda v: None, group_id="explicit")
        await client.stop()

    run(main())


def test_without_a_transport_bootstrap_servers_are_required():
    async def main():
        with pytest.raises(CommunicationException, match="bootstrap_servers"):
            await AsyncKafkaClient({"group_id": "g"}).start()

    run(main())


def test_bytes_str_and_messages_arrive_in_order():
    small = messages.heartbeat("client-1", "training")
    big = _big_update()
    big_bytes = big.to_bytes()
    assert len(big_bytes) > 1_000_000

    async def main():
        broker = InMemoryBroker()
        producer = _client(broker)
        consumer = _client(broker)
        await producer.start()
        await consumer.start()
        got: list[bytes] = []

        async def handler(value):
            await asyncio.sleep(0)
            got.append(bytes(value))

        await consumer.subscribe_to_topic("t", handler)
        assert consumer.message_handlers["t"] is handler
        await producer.send_message("t", b"raw bytes")
        await producer.send_message("t", "text \u00e9", key="k1")
        await producer.send_message("t", small)
        await producer.send_message("t", big, key=b"model")
        await producer.send_message("t", b"after")
        await producer.send_message("t", small.to_bytes())
        await wait_until(lambda: len(got) == 6)
        await consumer.stop()
        await producer.stop()
        return broker, got

    broker, got = run(main())
    assert got[:3] == [b"raw bytes", "text \u00e9".encode(), small.to_bytes()]
    assert got[3] == big_bytes and got[4] == b"after"
    assert messages.decode_message(got[2]).message_id == small.message_id
    decoded = messages.decode_message(got[3])
    assert decoded.message_id == big.message_id
    assert np.array_equal(np.asarray(decoded.tensors()["w"]), np.asarray(big.tensors()["w"]))

    log = broker.topics["t"]
    assert log[0].key is None  # bytes: as given
    assert log[1].key == b"k1"
    # A flwire message sent without a key is keyed by its sender, as
    # Channel.send_message keys it (one partition per sender).
    assert log[2].key == b"client-1"
    assert log[-1].key == b"client-1"  # its bytes too: the envelope says its sender
    assert read_headers(log[2].headers)["flwire-type"] == "heartbeat"
    parts = [r for r in log if r.header(PART_HEADER) is not None]
    assert len(parts) >= 2 and all(len(r.value) <= 1_000_000 for r in parts)
    assert {parse_part(r.value).transfer_id for r in parts} == {big.message_id}
    assert {r.key for r in parts} == {b"model"}
    assert all(read_headers(r.headers)["flwire-message-id"] == big.message_id for r in parts)
    assert broker.committed[("g", "t")] == len(log)


def test_a_failing_handler_is_retried_then_dead_lettered_and_later_messages_go_on():
    """The chosen semantics: a message whose handler raises is handed to it again
    (max_attempts in all), then written to <topic>.dead-letter and committed;
    nothing is lost and the messages after it are handled."""
    events: list[ChannelEvent] = []

    async def main():
        broker = InMemoryBroker()
        client = AsyncKafkaClient(
            {"group_id": "g", "retry_backoff_s": 0.01},
            transport=InMemoryTransport(broker),
            on_event=events.append,
        )
        await client.start()
        got: list[bytes] = []
        attempts: dict[bytes, int] = {}

        def handler(value):
            value = bytes(value)
            attempts[value] = attempts.get(value, 0) + 1
            if value.startswith(b"boom"):
                raise RuntimeError(f"handler failed on {value!r}")
            if value == b"flaky" and attempts[value] < 2:
                raise OSError("transient")
            got.append(value)

        await client.subscribe_to_topic("t", handler)
        for value in (b"one", b"boom-1", b"two", b"flaky", b"boom-2", b"three"):
            await client.send_message("t", value)
        await wait_until(lambda: len(got) == 4)
        await wait_until(lambda: broker.committed.get(("g", "t")) == 6)
        assert client.channel is not None
        stats = dict(client.channel.stats)
        healthy = await client.health_check()
        await client.stop()
        return broker, got, attempts, stats, healthy

    broker, got, attempts, stats, healthy = run(main())
    assert got == [b"one", b"two", b"flaky", b"three"]
    assert attempts == {b"one": 1, b"boom-1": 3, b"two": 1, b"flaky": 2, b"boom-2": 3, b"three": 1}
    dead = broker.topics["t.dead-letter"]
    assert [bytes(r.value) for r in dead] == [b"boom-1", b"boom-2"]
    assert dead[0].header("flwire-attempts") == b"3"
    assert b"handler failed on b'boom-1'" in dead[0].header("flwire-error")
    assert dead[0].header("flwire-source") == b"t[0]@1"
    assert stats["retries"] == 5 and stats["dead_lettered"] == 2
    assert all(isinstance(e, DeliveryFailed) for e in events)
    failed = [e for e in events if isinstance(e, DeliveryFailed)]
    assert [(e.attempts, e.dead_letter_topic) for e in failed] == [(3, "t.dead-letter")] * 2
    assert healthy is True


def test_failing_handler_skip_mode_counts_and_commits():
    async def main():
        broker = InMemoryBroker()
        client = _client(broker, max_attempts=1, dead_letter_suffix=None)
        await client.start()
        got: list[bytes] = []

        def handler(value):
            if bytes(value) == b"bad":
                raise ValueError("no")
            got.append(bytes(value))

        await client.subscribe_to_topic("t", handler)
        for value in (b"bad", b"good"):
            await client.send_message("t", value)
        await wait_until(lambda: broker.committed.get(("g", "t")) == 2)
        assert client.channel is not None
        stats = dict(client.channel.stats)
        await client.stop()
        return broker, got, stats

    broker, got, stats = run(main())
    assert got == [b"good"]
    assert stats["failed_deliveries"] == 1 and stats["dead_lettered"] == 0
    assert "t.dead-letter" not in broker.topics


def test_stop_cancels_consumers_and_unhandled_messages_come_back():
    async def main():
        broker = InMemoryBroker()
        client = _client(broker)
        await client.start()
        handled: list[bytes] = []
        blocked = asyncio.Event()

        async def handler(value):
            if value == b"slow":
                blocked.set()
                await asyncio.Event().wait()  # never returns
            handled.append(bytes(value))

        await client.subscribe_to_topic("t", handler)
        await client.subscribe_to_topic("u", handler)
        tasks = list(client.consumers.values())
        for value in (b"a", b"b", b"slow", b"c"):
            await client.send_message("t", value)
        await asyncio.wait_for(blocked.wait(), 5)
        await asyncio.wait_for(client.stop(), 5)
        assert client.consumers == {}
        assert all(t.done() for t in tasks)
        committed = broker.committed.get(("g", "t"))

        again: list[bytes] = []
        restarted = _client(broker)
        await restarted.start()
        await restarted.subscribe_to_topic("t", lambda v: again.append(bytes(v)))
        await wait_until(lambda: len(again) == 2)
        await restarted.stop()
        return handled, committed, again

    handled, committed, again = run(main())
    assert handled == [b"a", b"b"]
    assert committed == 2
    assert again == [b"slow", b"c"]


def test_two_subscriptions_survive_an_expired_transfer():
    """AsyncKafkaClient shares one Channel (one Reassembler) among its
    subscriptions. A partial transfer on topic "a" that times out while topic "b"
    is read must not kill the "b" consumer."""
    now = [0.0]

    async def main():
        broker = InMemoryBroker()
        raw = InMemoryTransport(broker, max_record_bytes=1000)
        await raw.start()
        stalled = [p for p, _, _ in split_payload(bytes(3000), "stalled", 1000)]
        await raw.send("a", stalled[0], key=b"s", headers=[(PART_HEADER, b"0/7")])

        client = _client(broker)
        await client.start()
        channel = client.channel
        assert channel is not None
        channel.reassembler = Reassembler(part_timeout=60, clock=lambda: now[0])
        got: dict[str, list[bytes]] = {"a": [], "b": []}
        await client.subscribe_to_topic("a", lambda v: got["a"].append(bytes(v)))
        await client.subscribe_to_topic("b", lambda v: got["b"].append(bytes(v)))
        await wait_until(lambda: channel.stats["received_parts"] == 1)
        now[0] += 61  # the client that sent "stalled" is gone
        await client.send_message("b", b"b1")
        await asyncio.sleep(0.1)
        await client.send_message("b", b"b2")
        with contextlib.suppress(asyncio.TimeoutError):
            await wait_until(lambda: len(got["b"]) == 2, 2)
        consumer_b = client.consumers["b"]
        failure = consumer_b.exception() if consumer_b.done() else None
        await client.stop()
        return got, failure

    got, failure = run(main())
    assert failure is None  # actual: KeyError(('a', 0)) in the "b" consumer
    assert got["b"] == [b"b1", b"b2"]


def test_a_streamed_message_reaches_the_old_handler_as_message_bytes():
    rng = np.random.default_rng(4)
    w, n = rng.standard_normal(600_000).astype(np.float32), np.arange(3)
    weights = {"w": w, "n": n}
    msg = messages.global_update(2, weights, {"lr": 0.1}, options=EncodeOptions(stream=True))

    async def main():
        broker = InMemoryBroker()
        producer, consumer = _client(broker), _client(broker)
        await producer.start()
        await consumer.start()
        got: list[bytes] = []
        await consumer.subscribe_to_topic("t", lambda value: got.append(bytes(value)))
        await producer.send_message("t", msg)
        await wait_until(lambda: len(got) == 1)
        await consumer.stop()
        await producer.stop()
        return broker, got

    broker, got = run(main())
    # It travelled as a stream (head, runs, seal), not as one message or transfer parts.
    assert all(r.header("flwire-stream") is not None for r in broker.topics["t"])
    assert len(broker.topics["t"]) > 3
    decoded = messages.decode_message(got[0])
    assert decoded.message_id == msg.message_id and decoded.body.round_id == 2
    out = decoded.tensors(as_numpy=True)
    assert np.array_equal(out["w"], w) and np.array_equal(out["n"], n)


def test_max_memory_bytes_and_spill_dir_config_keys_spill_a_split_message(tmp_path):
    big = _big_update()

    async def main():
        broker = InMemoryBroker()
        producer = _client(broker)
        consumer = _client(broker, max_memory_bytes=0, spill_dir=str(tmp_path))
        await producer.start()
        await consumer.start()
        got: list[bytes] = []

        async def handler(value):
            got.append(bytes(value))

        await consumer.subscribe_to_topic("t", handler)
        await producer.send_message("t", big)
        await wait_until(lambda: len(got) == 1)
        assert consumer.channel is not None
        reassembler = consumer.channel.reassembler
        await consumer.stop()
        await producer.stop()
        return got, reassembler

    got, reassembler = run(main())
    assert got == [big.to_bytes()]
    assert reassembler.spilled_total > 0  # the first part went through the disk


def test_a_spill_dir_that_is_not_a_directory_is_refused_before_anything_starts(tmp_path):
    async def main():
        client = _client(InMemoryBroker(), spill_dir=str(tmp_path / "nope"))
        with pytest.raises(ValueError, match="is not a directory"):
            await client.start()
        assert client.running is False and client.channel is None

    run(main())
