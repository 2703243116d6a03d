"""The in-memory transport (Kafka's semantics where they matter), Record,
TopicLayout and the flwire Kafka headers."""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np
import pytest
from helpers import run_in_own_thread

from flwire import messages
from flwire.exceptions import CommunicationException
from flwire.transport import (
    DEFAULT_MAX_RECORD_BYTES,
    InMemoryBroker,
    InMemoryTransport,
    Record,
    TopicLayout,
    message_headers,
    read_headers,
)
from flwire.transport.chunking import MIN_RECORD_BYTES
from flwire.transport.headers import MESSAGE_ID, SCHEMA_VERSION, SENDER_ID, TYPE

TIMEOUT = 10


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


async def _take(subscription, n: int) -> list[Record]:
    out = []
    async with contextlib.aclosing(subscription.__aiter__()) as records:
        async for record in records:
            out.append(record)
            if len(out) == n:
                break
    return out


async def _started(broker: InMemoryBroker, **kw) -> InMemoryTransport:
    transport = InMemoryTransport(broker, **kw)
    await transport.start()
    return transport


# ----------------------------------------------------------------------------- transport


def test_defaults():
    transport = InMemoryTransport()
    assert transport.max_record_bytes == DEFAULT_MAX_RECORD_BYTES == 1_000_000
    assert isinstance(transport.broker, InMemoryBroker)
    assert run(transport.healthy()) is True


def test_send_before_start_raises():
    async def main():
        transport = InMemoryTransport()
        with pytest.raises(CommunicationException, match="start"):
            await transport.send("t", b"x")
        await transport.start()
        await transport.send("t", b"x")
        await transport.stop()
        with pytest.raises(CommunicationException):
            await transport.send("t", b"y")
        return transport.broker

    broker = run(main())
    assert [r.value for r in broker.topics["t"]] == [b"x"]


def test_max_record_bytes_is_enforced():
    async def main():
        limit = MIN_RECORD_BYTES
        transport = await _started(InMemoryBroker(), max_record_bytes=limit)
        await transport.send("t", b"a" * limit)
        with pytest.raises(CommunicationException, match="limit"):
            await transport.send("t", b"a" * (limit + 1))
        with pytest.raises(CommunicationException):
            await transport.send("t", memoryview(bytearray(limit + 1)))
        return transport.broker

    broker = run(main())
    assert len(broker.topics["t"]) == 1


def test_records_are_copies_with_sequential_offsets_and_headers():
    async def main():
        transport = await _started(InMemoryBroker())
        payload = bytearray(b"hello")
        await transport.send("t", payload, key=b"k", headers=[("h", b"1"), ("h", b"2")])
        payload[0] = ord("J")  # the sender reuses its buffer
        await transport.send("t", memoryview(b"world"))
        await transport.send("t", b"")
        return await _take(await transport.subscribe(["t"], "g"), 3)

    first, second, third = run(main())
    assert (first.topic, first.partition, first.offset) == ("t", 0, 0)
    assert first.value == b"hello" and first.key == b"k"
    assert first.headers == [("h", b"1"), ("h", b"2")]
    assert first.header("h") == b"2" and first.header("nope") is None
    assert (second.offset, second.value, second.key, second.headers) == (1, b"world", None, [])
    assert (third.offset, third.value) == (2, b"")


def test_subscription_starts_at_the_group_committed_offset():
    async def main():
        broker = InMemoryBroker()
        transport = await _started(broker)
        for i in range(5):
            await transport.send("t", f"m{i}".encode())
        sub = await transport.subscribe(["t"], "g1")
        got = await _take(sub, 5)
        await sub.commit("t", 0, 3)
        await sub.close()
        again = await _take(await transport.subscribe(["t"], "g1"), 2)
        other = await _take(await transport.subscribe(["t"], "g2"), 5)
        return broker, got, again, other

    broker, got, again, other = run(main())
    assert [r.value for r in got] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert [r.offset for r in again] == [3, 4]
    assert [r.offset for r in other] == [0, 1, 2, 3, 4]
    assert broker.committed == {("g1", "t"): 3}


def test_commit_never_moves_backwards():
    async def main():
        broker = InMemoryBroker()
        transport = await _started(broker)
        sub = await transport.subscribe(["t"], "g")
        await sub.commit("t", 0, 7)
        await sub.commit("t", 0, 4)
        return broker

    assert run(main()).committed == {("g", "t"): 7}


def test_subscription_sees_records_sent_after_it_started_waiting():
    async def main():
        broker = InMemoryBroker()
        transport = await _started(broker)
        sub = await transport.subscribe(["a", "b"], "g")
        reader = asyncio.create_task(_take(sub, 3))
        await asyncio.sleep(0.05)  # the reader is waiting on an empty log
        await transport.send("a", b"1")
        await transport.send("b", b"2")
        await transport.send("a", b"3")
        return await reader

    records = run(main())
    assert sorted((r.topic, r.value) for r in records) == [("a", b"1"), ("a", b"3"), ("b", b"2")]
    a_records = [r for r in records if r.topic == "a"]
    assert [r.offset for r in a_records] == [0, 1]


def test_closed_subscription_stops_iterating():
    async def main():
        transport = await _started(InMemoryBroker())
        sub = await transport.subscribe(["t"], "g")

        async def consume():
            return [r async for r in sub]

        reader = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        await sub.close()
        return await asyncio.wait_for(reader, 2)

    assert run(main()) == []


def test_ensure_topics_and_subscribe_create_topics():
    async def main():
        transport = InMemoryTransport()
        await transport.ensure_topics(["a", "b"])
        await transport.subscribe(["c"], "g")
        await transport.ensure_topics(["a"])
        return transport.broker

    broker = run(main())
    assert sorted(broker.topics) == ["a", "b", "c"]
    assert all(log == [] for log in broker.topics.values())


def test_two_transports_share_one_broker():
    async def main():
        broker = InMemoryBroker()
        sender = await _started(broker)
        receiver = InMemoryTransport(broker)  # receiving does not need start()
        await sender.send("t", b"x")
        return await _take(await receiver.subscribe(["t"], "g"), 1)

    assert [r.value for r in run(main())] == [b"x"]


def test_a_broker_outlives_an_event_loop():
    broker = InMemoryBroker()

    async def round_trip(value: bytes) -> list[bytes]:
        transport = await _started(broker)
        sub = await transport.subscribe(["t"], "g")
        reader = asyncio.create_task(_take(sub, 1))
        await asyncio.sleep(0.05)  # wait on the empty log: binds the condition
        await transport.send("t", value)
        records = await reader
        await sub.commit("t", 0, records[-1].offset + 1)
        return [r.value for r in records]

    assert run(round_trip(b"first")) == [b"first"]
    assert run(round_trip(b"second")) == [b"second"]


# ----------------------------------------------------------------------------- TopicLayout

ROUTES = {
    "client_update": "updates",
    "evaluation_result": "updates",
    "client_registration": "control",
    "heartbeat": "control",
    "global_update": "broadcast",
    "training_start": "broadcast",
    "evaluation_request": "broadcast",
    "shutdown": "broadcast",
    "partial_aggregate": "aggregates",
}


def test_topic_names_from_job_id():
    layout = TopicLayout("job-7")
    assert layout.broadcast == "flwire.job-7.broadcast"
    assert layout.updates == "flwire.job-7.updates"
    assert layout.control == "flwire.job-7.control"
    assert layout.all == (layout.broadcast, layout.updates, layout.control, layout.aggregates)
    custom = TopicLayout("j", prefix="acme")
    assert custom.all == (
        "acme.j.broadcast",
        "acme.j.updates",
        "acme.j.control",
        "acme.j.aggregates",
    )
    assert len(set(TopicLayout("a").all) & set(TopicLayout("b").all)) == 0


def test_every_message_type_has_a_route():
    # Custom messages (an application's own types) go where their sender says.
    assert set(messages.MESSAGE_TYPES) == {*ROUTES, "custom"}
    assert len(messages.MESSAGE_TYPES) == 10
    layout = TopicLayout("job")
    for message_type, topic in ROUTES.items():
        assert layout.for_message(message_type) == getattr(layout, topic), message_type


def test_routes_of_built_messages():
    weights = {"w": np.zeros(3, dtype=np.float32)}
    built = [
        messages.client_update("c1", 1, weights),
        messages.global_update(1, weights),
        messages.client_registration("c1"),
        messages.heartbeat("c1"),
        messages.training_start(1),
        messages.evaluation_request(1),
        messages.evaluation_result("c1", 1),
        messages.shutdown("done"),
        messages.partial_aggregate("agg-1", 1, {"w": np.zeros(3)}, {"c1": 5}),
    ]
    layout = TopicLayout("job")
    assert sorted(msg.type for msg in built) == sorted(ROUTES)
    for msg in built:
        assert layout.for_message(msg.type) == getattr(layout, ROUTES[msg.type])


def test_group_names():
    layout = TopicLayout("job", prefix="p")
    assert layout.server_group() == "p.job.server"
    assert layout.client_group("c-1") == "p.job.client.c-1"
    assert layout.client_group("a") != layout.client_group("b") != layout.server_group()


def test_layout_is_frozen():
    layout = TopicLayout("job")
    with pytest.raises(AttributeError):
        layout.job_id = "other"  # type: ignore[misc]


# ----------------------------------------------------------------------------- headers


def test_message_headers_round_trip():
    msg = messages.heartbeat("client-9", "training")
    headers = message_headers(msg)
    assert [name for name, _ in headers] == [TYPE, SCHEMA_VERSION, SENDER_ID, MESSAGE_ID]
    assert all(isinstance(v, bytes) for _, v in headers)
    assert read_headers(headers) == {
        TYPE: "heartbeat",
        SCHEMA_VERSION: "1.2",
        SENDER_ID: "client-9",
        MESSAGE_ID: msg.message_id,
    }


def test_read_headers_ignores_others_and_keeps_the_last():
    headers: list[tuple[str, bytes | str | None]] = [
        ("other", b"x"),
        (TYPE, b"a"),
        (TYPE, "b"),
        (SENDER_ID, None),
        (MESSAGE_ID, b"\xff"),
    ]
    assert read_headers(headers) == {TYPE: "b", MESSAGE_ID: "\ufffd"}
    assert read_headers(None) == {}


async def _consume_forever(subscription) -> None:
    async for _record in subscription:
        pass


@pytest.mark.parametrize("attempt", range(5))
def test_subscribers_cancelled_twice_leave_the_transport_usable(attempt):
    """Cancelling waiting subscribers (twice, as a failed job and then
    asyncio.run do) ends them cleanly and leaves nothing stuck: a later
    subscriber still receives. (A Condition waited on through asyncio.wait_for
    broke here before Python 3.12: a RuntimeError and a lock held for good.)"""

    async def scenario() -> list[Record]:
        broker = InMemoryBroker()
        transport = await _started(broker)
        tasks = [
            asyncio.create_task(_consume_forever(await transport.subscribe(["t"], f"g{i}")))
            for i in range(4)
        ]
        await asyncio.sleep(0.01 * attempt)  # they are waiting for records now
        await transport.send("t", b"x")
        for task in tasks:
            task.cancel()
        await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results), results
        late = await transport.subscribe(["t"], "late")
        await transport.send("t", b"y")
        return await asyncio.wait_for(_take(late, 2), 5)

    # The broken version hung in a wait that ignores cancellation: run it in a
    # thread of its own, so that a regression fails here instead of stalling.
    records = run_in_own_thread(scenario)
    assert [r.value for r in records] == [b"x", b"y"]
