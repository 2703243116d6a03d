"""Delivery.done() returns without waiting for the broker: the delivery's id is
written to the group's log in the background, and its offsets are let go only
once that write is acknowledged. A write that fails is reported (stats, an
event, settled() raising) and leaves the offsets uncommitted; done() again
retries it; a receive loop that ends waits a bounded time for writes under way."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import weakref
from typing import Any

import pytest

from flwire import messages
from flwire.exceptions import CommunicationException
from flwire.transport import (
    Channel,
    DeliveryUnsettled,
    InMemoryBroker,
    InMemoryTransport,
)
from flwire.transport import channel as channel_module

TOPIC = "t"
GROUP = "g"
SEEN = f"{GROUP}.seen"


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


class GatedTransport(InMemoryTransport):
    """Writes to the ids' topic wait for ``gate``; ``refuse`` makes them fail."""

    def __init__(self, broker: InMemoryBroker) -> None:
        super().__init__(broker)
        self.gate = asyncio.Event()
        self.gate.set()
        self.refuse = False
        self.id_writes = 0

    async def send(self, topic: str, value: Any, **kw: Any) -> None:
        if topic == SEEN:
            self.id_writes += 1
            await self.gate.wait()
            if self.refuse:
                raise CommunicationException("the broker is unreachable (test)")
        await super().send(topic, value, **kw)


async def _setup(*ids: str) -> tuple[InMemoryBroker, GatedTransport, Channel, list[Any]]:
    broker = InMemoryBroker()
    transport = GatedTransport(broker)
    await transport.start()
    events: list[Any] = []
    channel = Channel(transport, on_event=events.append)
    for client in ids:
        await channel.send_message(TOPIC, messages.heartbeat(client))
    return broker, transport, channel, events


def _ids(broker: InMemoryBroker) -> list[bytes | None]:
    return [r.key for r in broker.topics.get(SEEN, [])]


def test_done_returns_before_the_ids_write_is_acknowledged_and_commits_after_it():
    async def main() -> tuple[Any, ...]:
        broker, transport, channel, _ = await _setup("c1")
        async with contextlib.aclosing(channel.receive([TOPIC], GROUP)) as deliveries:
            delivery = await deliveries.__anext__()
            transport.gate.clear()  # the id's write is held at the broker
            await asyncio.wait_for(delivery.done(), 1.0)  # returns all the same
            await asyncio.sleep(0.05)
            held = (transport.id_writes, broker.committed.get((GROUP, TOPIC)), _ids(broker))
            transport.gate.set()
            await delivery.settled()
            after = (broker.committed.get((GROUP, TOPIC)), _ids(broker))
        return held, after

    held, after = run(main())
    assert held == (1, None, [])  # written in the background, nothing committed yet
    assert after[0] == 1 and len(after[1]) == 1  # committed once the id is written


def test_a_failed_ids_write_is_reported_keeps_the_offsets_and_is_made_again(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(channel_module, "SETTLE_RETRY_S", (0.05, 0.1))

    async def main() -> tuple[Any, ...]:
        broker, transport, channel, events = await _setup("c1")
        async with contextlib.aclosing(channel.receive([TOPIC], GROUP)) as deliveries:
            delivery = await deliveries.__anext__()
            transport.refuse = True
            await delivery.done()
            with pytest.raises(CommunicationException, match=r"not recorded yet.*unreachable"):
                await delivery.settled()
            await asyncio.sleep(0.3)  # failed again meanwhile: reported once
            failed = (broker.committed.get((GROUP, TOPIC)), dict(channel.stats), list(events))
            await delivery.fail("too late")  # done already: ignored, not retried
            transport.refuse = False
            await delivery.settled()  # the channel's next write gets through
            after = (broker.committed.get((GROUP, TOPIC)), len(_ids(broker)))
        return failed, after, delivery.id, transport.id_writes

    (committed, stats, events), after, ident, writes = run(main())
    assert committed is None and stats["unsettled"] == 1 and stats["retries"] == 0
    assert events == [DeliveryUnsettled(TOPIC, ident, "the broker is unreachable (test)")]
    assert after == (1, 1) and writes >= 3


def test_done_on_a_delivery_that_fail_handed_out_again_records_nothing():
    """fail() hands the delivery out again (a new Delivery takes its records): a
    stray done() on the old one must not record the id, or a crash before the retry
    is handled would skip the message after the restart."""

    async def main() -> tuple[Any, ...]:
        broker, transport, channel, _ = await _setup("c1")
        async with contextlib.aclosing(channel.receive([TOPIC], GROUP)) as deliveries:
            first = await deliveries.__anext__()
            await first.fail("not yet")
            await first.done()
            stray = (transport.id_writes, broker.committed.get((GROUP, TOPIC)))
            retry = await deliveries.__anext__()
            await retry.done()
            await retry.settled()
        return stray, retry.attempt, transport.id_writes, broker.committed.get((GROUP, TOPIC))

    stray, attempt, writes, committed = run(main())
    assert stray == (0, None)
    assert attempt == 2 and writes == 1 and committed == 1


def test_at_most_max_settling_writes_are_under_way(monkeypatch: pytest.MonkeyPatch):
    """Past MAX_SETTLING ids being written, the loop hands out nothing more until
    one is acknowledged: a broker that stopped acknowledging stops the loop, and a
    crash re-handles at most that many deliveries."""
    monkeypatch.setattr(channel_module, "MAX_SETTLING", 2)

    async def main() -> tuple[Any, ...]:
        broker, transport, channel, _ = await _setup("c1", "c2", "c3")
        async with contextlib.aclosing(channel.receive([TOPIC], GROUP)) as deliveries:
            transport.gate.clear()
            for _ in range(2):
                await (await deliveries.__anext__()).done()
            third = asyncio.ensure_future(deliveries.__anext__())
            await asyncio.sleep(0.1)
            held = third.done()
            transport.gate.set()
            last = await asyncio.wait_for(third, 5)
            await last.done()
            await last.settled()
        return held, broker.committed.get((GROUP, TOPIC))

    held, committed = run(main())
    assert held is False and committed == 3


def test_done_after_the_receive_loop_ended_is_refused():
    async def main() -> Any:
        _, _, channel, _ = await _setup("c1")
        async with contextlib.aclosing(channel.receive([TOPIC], GROUP)) as deliveries:
            delivery = await deliveries.__anext__()
        await delivery.done()

    with pytest.raises(CommunicationException, match="receive loop has ended"):
        run(main())


def test_settled_before_done_is_refused_and_a_second_done_writes_nothing_more():
    async def main() -> int:
        _, transport, channel, _ = await _setup("c1")
        async with contextlib.aclosing(channel.receive([TOPIC], GROUP)) as deliveries:
            delivery = await deliveries.__anext__()
            with pytest.raises(CommunicationException, match="call done"):
                await delivery.settled()
            await delivery.done()
            await delivery.done()
            await delivery.settled()
            await delivery.done()
        return transport.id_writes

    assert run(main()) == 1


def test_a_copy_arriving_while_the_id_is_being_written_settles_with_the_first():
    async def main() -> tuple[Any, ...]:
        broker, transport, channel, _ = await _setup("c1")
        async with contextlib.aclosing(channel.receive([TOPIC], GROUP)) as deliveries:
            first = await deliveries.__anext__()
            transport.gate.clear()
            await first.done()
            # A copy of c1 (same message id), then c2: the copy is not handed out.
            raw = first.payload
            await transport.send(TOPIC, raw, key=first.key, headers=first.headers)
            await channel.send_message(TOPIC, messages.heartbeat("c2"))
            second = await deliveries.__anext__()
            transport.gate.set()
            await first.settled()
            committed = broker.committed.get((GROUP, TOPIC))
            await second.done()
            await second.settled()
        return second, committed, broker.committed.get((GROUP, TOPIC)), channel.stats

    second, committed, after, stats = run(main())
    assert messages.decode_message(second.payload).body.client_id == "c2"
    assert stats["duplicates"] == 1
    assert committed == 2  # the first and its copy (offsets 0 and 1)
    assert after == 3


def test_a_receive_loop_that_ends_waits_for_the_writes_under_way_within_a_bound(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    monkeypatch.setattr(channel_module, "SETTLE_DRAIN_S", 0.2)

    async def main(release_after: float | None) -> Any:
        broker, transport, channel, _ = await _setup("c1")
        transport.gate.clear()
        if release_after is not None:
            asyncio.get_running_loop().call_later(release_after, transport.gate.set)
        async with contextlib.aclosing(channel.receive([TOPIC], GROUP)) as deliveries:
            delivery = await deliveries.__anext__()
            await delivery.done()
        error = None
        try:
            await delivery.settled()
        except CommunicationException as exc:
            error = str(exc)
        return broker.committed.get((GROUP, TOPIC)), _ids(broker), error

    # Acknowledged within the bound: committed before the loop closed.
    committed, ids, error = run(main(0.05))
    assert committed == 1 and len(ids) == 1 and error is None
    # Never acknowledged: the loop ends after the bound, with nothing committed.
    with caplog.at_level(logging.WARNING, logger="flwire.transport.channel"):
        committed, ids, error = run(main(None))
    assert committed is None and ids == []
    assert "still being recorded after 0.2 s" in caplog.text
    assert error is not None and "still being recorded when its receive loop ended" in error


def test_a_delivery_being_recorded_is_not_held_by_the_channel():
    """While its id is written, the channel holds the delivery's record positions,
    not the delivery (its payload and message are the application's to free): many
    writes under way at once must not hold as many payloads."""

    async def main() -> tuple[Any, ...]:
        broker, transport, channel, _ = await _setup("c1", "c2")
        async with contextlib.aclosing(channel.receive([TOPIC], GROUP)) as deliveries:
            delivery = await deliveries.__anext__()
            transport.gate.clear()
            await delivery.done()
            ref = weakref.ref(delivery)
            del delivery
            second = await deliveries.__anext__()  # the loop has moved on from the first
            gc.collect()
            held = ref() is not None
            transport.gate.set()
            await second.done()
            await second.settled()
        return held, broker.committed.get((GROUP, TOPIC)), _ids(broker)

    held, committed, ids = run(main())
    assert not held
    assert committed == 2 and len(ids) == 2  # and it is settled all the same
