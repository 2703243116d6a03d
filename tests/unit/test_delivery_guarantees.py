"""Delivery guarantees that need no broker: parts in any order, de-duplication
across a restart, dropped transfers reported, and a record reported delivered
without an offset never counted as sent (KafkaTransport with a stand-in producer)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from confluent_kafka import KafkaError
from hypothesis import given, settings
from hypothesis import strategies as st

from flwire import messages
from flwire.exceptions import CommunicationException
from flwire.transport import (
    Channel,
    InMemoryBroker,
    InMemoryTransport,
    Subscription,
    TransferDropped,
)
from flwire.transport import kafka as kafka_module
from flwire.transport.chunking import PART_HEADER, Reassembler, split_payload

TOPIC = "t"
TIMEOUT = 20


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


async def _started(broker: InMemoryBroker, limit: int = 1_000_000) -> InMemoryTransport:
    transport = InMemoryTransport(broker, max_record_bytes=limit)
    await transport.start()
    return transport


async def _receive(channel: Channel, n: int, group: str = "g") -> list[bytes]:
    out: list[bytes] = []
    async with contextlib.aclosing(channel.receive([TOPIC], group)) as deliveries:
        async for delivery in deliveries:
            out.append(bytes(delivery.payload))
            await delivery.done()
            if len(out) == n:
                break
    return out


@settings(max_examples=30, deadline=None)
@given(order_seed=st.integers(0, 2**32 - 1), size=st.integers(1200, 9000))
def test_parts_in_any_order_reassemble_and_commit(order_seed, size):
    payload = random.Random(size).randbytes(size)
    parts = [p for p, _, _ in split_payload(payload, "X", 1000)]
    random.Random(order_seed).shuffle(parts)

    async def main():
        broker = InMemoryBroker()
        transport = await _started(broker, 1000)
        for raw in parts:
            await transport.send(TOPIC, raw, key=b"k", headers=[(PART_HEADER, b"?")])
        got = await _receive(Channel(transport), 1)
        return broker, got

    broker, got = run(main())
    assert got == [payload]
    assert broker.committed[("g", TOPIC)] == len(parts)


def test_part_zero_last_after_a_resend_still_reassembles():
    payload = random.Random(1).randbytes(4000)
    parts = [p for p, _, _ in split_payload(payload, "X", 1000)]

    async def main():
        broker = InMemoryBroker()
        transport = await _started(broker, 1000)
        # Part 0 was "implicitly acked" but not written, then resent: it lands last.
        for raw in [*parts[1:], parts[0]]:
            await transport.send(TOPIC, raw, key=b"k", headers=[(PART_HEADER, b"?")])
        return await _receive(Channel(transport), 1)

    assert run(main()) == [payload]


def test_a_restarted_receiver_skips_what_its_group_handled():
    update = messages.heartbeat("c1")

    async def main():
        broker = InMemoryBroker()
        transport = await _started(broker)
        channel = Channel(transport)
        await channel.send_message(TOPIC, update)
        await channel.send_message(TOPIC, update)  # sent twice (a client's retry)
        await channel.send_message(TOPIC, messages.heartbeat("c2"))
        first = await _receive(Channel(transport), 1)
        # A crash before the commit: the next receiver starts from offset 0 again.
        broker.committed.clear()
        restarted = Channel(await _started(broker))
        again = await _receive(restarted, 1)
        return first, again, restarted.stats["duplicates"], broker

    first, again, duplicates, broker = run(main())
    assert [messages.decode_message(b).message_id for b in first] == [update.message_id]
    assert messages.decode_message(again[0]).body.client_id == "c2"
    assert duplicates == 2
    assert broker.committed[("g", TOPIC)] == 3


def test_a_transfer_missing_parts_is_reported_as_an_event():
    parts = [p for p, _, _ in split_payload(b"z" * 3000, "lost", 1000)]
    events: list[Any] = []

    async def main():
        broker = InMemoryBroker()
        transport = await _started(broker, 1000)
        for raw in parts[:2]:  # the sender died after two parts
            await transport.send(TOPIC, raw, key=b"k", headers=[(PART_HEADER, b"?")])
        await transport.send(TOPIC, b"after", key=b"other")
        channel = Channel(
            transport, reassembler=Reassembler(part_timeout=0.2), on_event=events.append
        )
        got: list[bytes] = []

        async def consume():
            async for delivery in channel.receive([TOPIC], "g"):
                got.append(bytes(delivery.payload))
                await delivery.done()

        task = asyncio.create_task(consume())
        try:
            # "after" is handled at once, but its offset is committed only once the
            # incomplete transfer before it is given up on (then everything is).
            while broker.committed.get(("g", TOPIC)) != 3:
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return got, channel.stats

    got, stats = run(main())
    assert got == [b"after"]
    assert stats["dropped_transfers"] == 1
    (event,) = events
    assert isinstance(event, TransferDropped)
    assert (event.transfer_id, event.parts_received, event.parts_total) == ("lost", 2, len(parts))
    assert event.total_bytes == 3000 and event.topic == TOPIC


# ------------------------------------------------------- KafkaTransport, stand-in producer


class _Msg:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def offset(self) -> int:
        return self._offset


class _Producer:
    """Reports the first ``unwritten`` records as delivered with offset -1 (what
    librdkafka does for "implicitly acked" records), then real offsets."""

    unwritten: ClassVar[int] = 0
    produced: ClassVar[list[bytes]] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def produce(self, topic, value, key=None, headers=None, on_delivery=None) -> None:
        type(self).produced.append(value)
        if type(self).unwritten > 0:
            type(self).unwritten -= 1
            on_delivery(None, _Msg(-1))
        else:
            on_delivery(None, _Msg(len(type(self).produced)))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


class _AllTopics(dict[str, Any]):
    """Metadata in which every topic is present."""

    def __init__(self, meta: Any) -> None:
        super().__init__()
        self.meta = meta

    def __contains__(self, topic: object) -> bool:
        return True

    def get(self, topic: str, default: Any = None) -> Any:
        return self.meta


class _Admin:
    """Every topic exists, with one partition whose leader answers."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        partition = SimpleNamespace(id=0, leader=1, error=None)
        meta = SimpleNamespace(topic=topic, partitions={0: partition}, error=None)
        return SimpleNamespace(topics=_AllTopics(meta))

    def list_offsets(self, specs: dict[Any, Any], **_: Any) -> dict[Any, Future[Any]]:
        out: dict[Any, Future[Any]] = {}
        for tp in specs:
            done: Future[Any] = Future()
            done.set_result(SimpleNamespace(offset=0))
            out[tp] = done
        return out


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setattr(kafka_module, "Producer", _Producer)
    monkeypatch.setattr(kafka_module, "AdminClient", _Admin)
    _Producer.produced = []
    return _Producer


async def _send_one(transport: kafka_module.KafkaTransport, value: bytes) -> None:
    """Start ``transport``, send ``value`` and stop it, whatever the send did."""
    await transport.start()
    try:
        await transport.send(TOPIC, value)
    finally:
        await transport.stop()


@pytest.mark.parametrize("unwritten", [1, 3])
def test_a_record_delivered_without_an_offset_is_sent_again(stand_in, unwritten, caplog):
    stand_in.unwritten = unwritten
    run(_send_one(kafka_module.KafkaTransport("127.0.0.1:1", unwritten_retries=3), b"payload"))
    assert stand_in.produced == [b"payload"] * (unwritten + 1)
    assert sum("without an offset" in r.getMessage() for r in caplog.records) == unwritten


def test_a_record_never_confirmed_written_fails_the_send(stand_in):
    stand_in.unwritten = 10
    transport = kafka_module.KafkaTransport("127.0.0.1:1", unwritten_retries=2)
    with pytest.raises(CommunicationException, match="never confirmed written"):
        run(_send_one(transport, b"payload"))
    assert len(stand_in.produced) == 3


class _PolledProducer:
    """Holds each record's delivery report until poll() serves it, on the
    transport's poll thread, as librdkafka does; ``answer`` False: never."""

    answer: ClassVar[bool] = True
    served_on: ClassVar[set[int]] = set()
    #: The poll that serves the next reports then reports a refusal (librdkafka
    #: serves both kinds of event from one queue, in one poll).
    refuse_after_reports: ClassVar[bool] = False
    #: Seconds flush() takes (stop() waits for it).
    flush_s: ClassVar[float] = 0.0

    def __init__(self, config: dict[str, Any]) -> None:
        self.queued: list[Callable[[], None]] = []
        self.lock = threading.Lock()
        self.error_cb = config["error_cb"]

    def produce(self, topic, value, key=None, headers=None, on_delivery=None) -> None:
        with self.lock:
            offset = len(self.queued)
            self.queued.append(lambda: on_delivery(None, _Msg(offset)))

    def poll(self, timeout: float) -> int:
        time.sleep(0.002)  # reports pile up between polls
        if not type(self).answer:
            return 0
        with self.lock:
            served, self.queued = self.queued, []
        for report in served:
            type(self).served_on.add(threading.get_ident())
            report()
        if served and type(self).refuse_after_reports:
            type(self).refuse_after_reports = False
            self.error_cb(KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error"))
        return len(served)

    def flush(self, timeout: float) -> int:
        time.sleep(type(self).flush_s)
        return 0

    def __len__(self) -> int:
        return len(self.queued)

    def purge(self) -> None:
        self.queued = []


@pytest.fixture
def polled(monkeypatch):
    monkeypatch.setattr(kafka_module, "Producer", _PolledProducer)
    monkeypatch.setattr(kafka_module, "AdminClient", _Admin)
    _PolledProducer.answer = True
    _PolledProducer.served_on = set()
    _PolledProducer.refuse_after_reports = False
    _PolledProducer.flush_s = 0.0
    return _PolledProducer


def test_reports_served_together_on_the_poll_thread_each_settle_their_send(polled):
    """A poll serves many reports at once; each send gets its own record's."""

    async def main():
        transport = kafka_module.KafkaTransport("127.0.0.1:1")
        await transport.start()
        try:
            sends = [asyncio.ensure_future(transport.send(TOPIC, b"v%d" % i)) for i in range(300)]
            await asyncio.gather(*sends)
            return transport._poller_ident
        finally:
            await transport.stop()

    poller = run(main())
    assert polled.served_on == {poller}


def test_a_refusal_fails_the_sends_waiting_for_their_reports(polled):
    polled.answer = False

    async def main():
        transport = kafka_module.KafkaTransport("127.0.0.1:1", delivery_timeout_s=60)
        await transport.start()
        try:
            sends = [asyncio.ensure_future(transport.send(TOPIC, b"v")) for _ in range(3)]
            await asyncio.sleep(0.05)
            assert not any(s.done() for s in sends)
            # librdkafka's error callback, on one of its threads.
            err = KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error")
            threading.Thread(target=transport._on_error, args=(err,)).start()
            return await asyncio.gather(*sends, return_exceptions=True)
        finally:
            await transport.stop()

    outcomes = run(main())
    assert len(outcomes) == 3
    for outcome in outcomes:
        assert isinstance(outcome, CommunicationException)
        assert "authentication" in str(outcome).lower()


def test_a_record_reported_written_in_the_poll_that_reports_a_refusal_counts_as_sent(polled):
    """The refusal is handed over after that poll's reports: the written record
    is not reported refused (and sent again by its caller, a duplicate)."""
    polled.refuse_after_reports = True

    async def main():
        transport = kafka_module.KafkaTransport("127.0.0.1:1")
        await transport.start()
        try:
            await transport.send(TOPIC, b"written")
            with pytest.raises(CommunicationException, match="authentication"):
                await transport.send(TOPIC, b"after the refusal")
        finally:
            await transport.stop()

    run(main())


def test_a_send_made_while_stop_delivers_the_queue_fails_at_once(polled):
    polled.flush_s = 0.3

    async def main():
        transport = kafka_module.KafkaTransport("127.0.0.1:1")
        await transport.start()
        await transport.send(TOPIC, b"before")
        stopping = asyncio.ensure_future(transport.stop())
        await asyncio.sleep(0.05)  # stop() is in flush()
        t0 = time.monotonic()
        with pytest.raises(CommunicationException, match="the transport is stopping"):
            await transport.send(TOPIC, b"during stop")
        waited = time.monotonic() - t0
        await stopping
        return waited

    assert run(main()) < 5  # not the report's bound (delivery_timeout_s + 10 s)


def test_a_report_that_never_comes_fails_the_send_after_its_bound(polled, monkeypatch):
    polled.answer = False
    monkeypatch.setattr(kafka_module, "_REPORT_GRACE_S", 0.2)

    transport = kafka_module.KafkaTransport(
        "127.0.0.1:1", delivery_timeout_s=0.1, close_timeout_s=0.1
    )
    with pytest.raises(CommunicationException, match="no delivery report for a record"):
        run(_send_one(transport, b"v"))


def test_records_of_a_revoked_partition_do_not_move_its_commit():
    """After a rebalance takes a partition away, finishing records received before
    it must not commit for that partition (its new owner's commit point)."""
    revoke_callbacks: list[Callable[[list[tuple[str, int]]], None]] = []

    class Revocable(Subscription):
        """An in-memory subscription whose group can take its partition away."""

        def __init__(self, inner: Subscription) -> None:
            self.inner = inner

        def __aiter__(self):
            return self.inner.__aiter__()

        async def commit(self, topic: str, partition: int, next_offset: int) -> None:
            await self.inner.commit(topic, partition, next_offset)

        async def close(self) -> None:
            await self.inner.close()

        def on_revoke(self, callback: Callable[[list[tuple[str, int]]], None]) -> None:
            revoke_callbacks.append(callback)

    class Revoking(InMemoryTransport):
        async def subscribe(self, topics, group_id):
            return Revocable(await super().subscribe(topics, group_id))

    async def main():
        broker = InMemoryBroker()
        transport = Revoking(broker)
        await transport.start()
        for value in (b"a", b"b"):
            await transport.send(TOPIC, value)
        held = []
        async with contextlib.aclosing(Channel(transport).receive([TOPIC], "g")) as deliveries:
            async for delivery in deliveries:
                held.append(delivery)
                if len(held) == 2:
                    break
            (revoked,) = revoke_callbacks
            revoked([(TOPIC, 0)])  # the group took partition 0 away
            for delivery in held:
                await delivery.done()
        return broker

    broker = run(main())
    assert ("g", TOPIC) not in broker.committed


def test_a_copy_arriving_while_the_first_is_handled_is_not_handed_out():
    """A redelivered copy (a rebalance, or a client's resend) of a delivery still being
    handled is not handed out a second time; its offset is committed with the first."""
    msg = messages.heartbeat("c1")

    async def main():
        broker = InMemoryBroker()
        transport = await _started(broker)
        channel = Channel(transport)
        await channel.send_message(TOPIC, msg)
        await channel.send_message(TOPIC, msg)
        await channel.send_message(TOPIC, messages.heartbeat("c2"))
        handed = []
        async with contextlib.aclosing(channel.receive([TOPIC], "g")) as deliveries:
            first = await deliveries.__anext__()
            handed.append(first)
            second = await deliveries.__anext__()  # c2: the copy of c1 was skipped
            handed.append(second)
            await second.done()
            await second.settled()  # its id written, its offset let go
            before = broker.committed.get(("g", TOPIC))
            await first.done()
            await first.settled()
            after = broker.committed.get(("g", TOPIC))
        return handed, before, after, channel.stats["duplicates"]

    handed, before, after, duplicates = run(main())
    assert [messages.decode_message(d.payload).body.client_id for d in handed] == ["c1", "c2"]
    assert before is None  # nothing committed while c1 (offset 0) is being handled
    assert after == 3 and duplicates == 1
