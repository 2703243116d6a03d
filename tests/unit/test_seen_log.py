"""SeenLog on the in-memory transport: ids handled by a consumer group, persisted on
the transport so that a restarted consumer still recognizes them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from flwire.exceptions import CommunicationException
from flwire.transport import InMemoryBroker, InMemoryTransport, SeenLog, Subscription, Transport
from flwire.transport.base import Headers

TIMEOUT = 10


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


async def _started(broker: InMemoryBroker) -> InMemoryTransport:
    transport = InMemoryTransport(broker)
    await transport.start()
    return transport


def test_add_then_contains():
    async def main() -> None:
        log = SeenLog(await _started(InMemoryBroker()), "flwire.job1.server")
        assert log.topic == "flwire.job1.server.seen"
        assert await log.load() == 0
        assert "m1" not in log
        await log.add("m1")
        await log.add("m2")
        assert "m1" in log and "m2" in log and "m3" not in log
        assert len(log) == 2

    run(main())


def test_each_id_is_one_record_keyed_by_the_id():
    async def main() -> None:
        broker = InMemoryBroker()
        log = SeenLog(await _started(broker), "g")
        await log.load()
        await log.add("é-1")
        [record] = broker.topics["g.seen"]
        assert record.key == "é-1".encode()
        assert len(record.value) == 8  # the time it was added, in ms, big-endian
        assert int.from_bytes(record.value, "big") > 1_600_000_000_000

    run(main())


def test_a_restarted_log_loads_the_earlier_ids():
    async def main() -> None:
        broker = InMemoryBroker()
        first = await _started(broker)
        log = SeenLog(first, "flwire.job1.server")
        await log.load()
        for i in range(5):
            await log.add(f"m{i}")
        await first.stop()

        # "Restart": a new transport and log over the same broker.
        again = SeenLog(await _started(broker), "flwire.job1.server")
        assert "m0" not in again  # nothing before load()
        assert await again.load() == 5
        assert all(f"m{i}" in again for i in range(5))
        assert len(again) == 5
        # Another group's log is separate.
        other = SeenLog(await _started(broker), "flwire.job1.client-a")
        assert await other.load() == 0
        assert "m0" not in other

    run(main())


def test_capacity_keeps_the_newest_ids():
    async def main() -> None:
        broker = InMemoryBroker()
        log = SeenLog(await _started(broker), "g", capacity=3)
        await log.load()
        for i in range(5):
            await log.add(f"m{i}")
        assert [f"m{i}" in log for i in range(5)] == [False, False, True, True, True]
        assert len(log) == 3

        again = SeenLog(await _started(broker), "g", capacity=3)
        assert await again.load() == 3
        assert [f"m{i}" in again for i in range(5)] == [False, False, True, True, True]

    run(main())


def test_an_id_added_again_counts_as_new():
    async def main() -> None:
        broker = InMemoryBroker()
        log = SeenLog(await _started(broker), "g")
        await log.load()
        for message_id in ["a", "b", "c", "a"]:
            await log.add(message_id)
        # Loading keeps the order of the newest record of each id: "b" is the oldest.
        again = SeenLog(await _started(broker), "g", capacity=2)
        assert await again.load() == 2
        assert "a" in again and "c" in again and "b" not in again

    run(main())


def test_a_tombstone_forgets_an_id():
    async def main() -> None:
        broker = InMemoryBroker()
        log = SeenLog(await _started(broker), "g")
        await log.load()
        await log.add("a")
        await log.add("b")
        await broker.append("g.seen", b"a", None, [])  # a null value: deleted
        again = SeenLog(await _started(broker), "g")
        assert await again.load() == 1
        assert "a" not in again and "b" in again

    run(main())


def test_ids_added_before_load_are_kept():
    async def main() -> None:
        broker = InMemoryBroker()
        earlier = SeenLog(await _started(broker), "g")
        await earlier.add("old")
        log = SeenLog(await _started(broker), "g")
        await log.add("new")
        assert await log.load() == 2  # both records are in the topic
        assert "old" in log and "new" in log

    run(main())


class _FailingSend(InMemoryTransport):
    async def send(
        self, topic: str, value: Any, *, key: bytes | None = None, headers: Headers | None = None
    ) -> None:
        raise CommunicationException(f"delivery to {topic!r} failed: broker gone")


def test_a_failed_send_remembers_nothing():
    async def main() -> None:
        broker = InMemoryBroker()
        transport = _FailingSend(broker)
        await transport.start()
        log = SeenLog(transport, "g")
        await log.load()
        with pytest.raises(CommunicationException, match="broker gone"):
            await log.add("m1")
        assert "m1" not in log
        assert len(log) == 0
        assert broker.topics["g.seen"] == []

    run(main())


def test_a_send_on_a_stopped_transport_remembers_nothing():
    async def main() -> None:
        log = SeenLog(InMemoryTransport(), "g")  # never started
        with pytest.raises(CommunicationException, match="not started"):
            await log.add("m1")
        assert "m1" not in log

    run(main())


class _Bare(Transport):
    """A transport that implements only the abstract methods."""

    def __init__(self) -> None:
        self.ensured: list[str] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        self.ensured.extend(topics)

    async def send(
        self, topic: str, value: Any, *, key: bytes | None = None, headers: Headers | None = None
    ) -> None:
        pass

    async def subscribe(self, topics: Sequence[str], group_id: str) -> Subscription:
        raise NotImplementedError


def test_the_default_read_topic_says_it_cannot_read_back():
    async def main() -> None:
        transport = _Bare()
        await transport.ensure_compacted_topic("g.seen", retention_ms=1000)
        assert transport.ensured == ["g.seen"]  # the default: a plain topic
        with pytest.raises(CommunicationException) as info:
            await transport.read_topic("g.seen")
        message = str(info.value)
        assert "_Bare" in message and "'g.seen'" in message
        assert "cannot read" in message and "de-duplication across restarts" in message
        # And so SeenLog.load() fails the same way on it.
        with pytest.raises(CommunicationException, match="de-duplication across restarts"):
            await SeenLog(transport, "g").load()

    run(main())


def test_in_memory_read_topic_is_a_copy():
    async def main() -> None:
        broker = InMemoryBroker()
        transport = await _started(broker)
        assert await transport.read_topic("nothing") == []
        await transport.ensure_compacted_topic("t", retention_ms=1000)
        assert broker.topics["t"] == []
        await transport.send("t", b"x", key=b"k")
        records = await transport.read_topic("t")
        assert [(r.key, r.value, r.offset) for r in records] == [(b"k", b"x", 0)]
        records.clear()
        assert len(broker.topics["t"]) == 1

    run(main())


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="capacity"):
        SeenLog(InMemoryTransport(), "g", capacity=0)
