"""Channel over the in-memory transport: single records and chunked payloads,
progress, at-least-once redelivery, consumer groups and bad part records."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import random

import pytest

from flwire.exceptions import CommunicationException
from flwire.transport import Channel, Delivery, InMemoryBroker, InMemoryTransport
from flwire.transport.chunking import (
    PART_COST,
    PART_HEADER,
    PART_OVERHEAD,
    TRANSFER_COST,
    Reassembler,
    parse_part,
    split_payload,
)
from flwire.v1 import transfer_pb2

TIMEOUT = 10
TOPIC = "t"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


def _payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


async def _transport(broker: InMemoryBroker, limit: int = 1_000_000) -> InMemoryTransport:
    transport = InMemoryTransport(broker, max_record_bytes=limit)
    await transport.start()
    return transport


async def take(
    channel: Channel,
    n: int,
    group: str = "g",
    topics=(TOPIC,),
    *,
    ack=lambda i, d: True,
) -> list[Delivery]:
    """The first ``n`` deliveries; ``done()`` on those ``ack`` selects; then the
    subscription is closed."""
    out: list[Delivery] = []
    if n == 0:
        return out
    await channel.transport.start()  # done() records the delivery's id on the transport
    async with contextlib.aclosing(channel.receive(list(topics), group)) as deliveries:
        async for delivery in deliveries:
            if ack(len(out), delivery):
                await delivery.done()
            out.append(delivery)
            if len(out) == n:
                break
    return out


async def nothing_more(channel: Channel, group: str = "g", topics=(TOPIC,), wait=0.3) -> list:
    """Deliveries that arrive within ``wait`` seconds (expected: none)."""
    got: list[Delivery] = []
    await channel.transport.start()

    async def consume():
        async with contextlib.aclosing(channel.receive(list(topics), group)) as deliveries:
            async for delivery in deliveries:
                got.append(delivery)

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(consume(), wait)
    return got


async def send_raw_part(transport, raw: bytes, key: bytes = b"k", topic: str = TOPIC) -> None:
    await transport.send(topic, raw, key=key, headers=[(PART_HEADER, b"?")])


async def wait_until(predicate, timeout: float = 5.0) -> None:
    async def poll():
        while not predicate():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


def committed(broker: InMemoryBroker, group: str = "g", topic: str = TOPIC) -> int:
    return broker.committed.get((group, topic), 0)


# ----------------------------------------------------------------------------- sending


def test_small_payload_is_one_record():
    async def main():
        broker = InMemoryBroker()
        sender = Channel(await _transport(broker))
        headers = [("flwire-type", b"heartbeat"), ("x", b"1")]
        await sender.send(TOPIC, b"hello", key=b"key", headers=headers)
        receiver = Channel(InMemoryTransport(broker))
        (delivery,) = await take(receiver, 1)
        return broker, sender, receiver, delivery, headers

    broker, sender, receiver, delivery, headers = run(main())
    (record,) = broker.topics[TOPIC]
    assert record.header(PART_HEADER) is None
    assert (record.value, record.key, record.headers) == (b"hello", b"key", headers)
    assert bytes(delivery.payload) == b"hello"
    assert (delivery.topic, delivery.key, delivery.headers) == (TOPIC, b"key", headers)
    assert delivery.header("x") == b"1" and delivery.header("missing") is None
    assert sender.stats["sent"] == 1 and sender.stats["sent_parts"] == 0
    assert receiver.stats["received"] == 1 and receiver.stats["received_parts"] == 0
    assert committed(broker) == 1


def test_record_limit_counts_key_and_headers():
    limit = 2000
    key, headers = b"kk", [("h", b"vvv")]
    overhead = len(key) + len("h") + len(b"vvv")

    async def main():
        broker = InMemoryBroker()
        channel = Channel(await _transport(broker, limit))
        await channel.send(TOPIC, bytes(limit - overhead), key=key, headers=headers)
        await channel.send(TOPIC, bytes(limit - overhead + 1), key=key, headers=headers)
        return broker, channel

    broker, channel = run(main())
    log = broker.topics[TOPIC]
    assert log[0].header(PART_HEADER) is None
    assert all(r.header(PART_HEADER) is not None for r in log[1:])
    assert len(log) == 1 + 2
    assert channel.stats == {**channel.stats, "sent": 2, "sent_parts": 2}


def test_empty_payload_is_one_record():
    async def main():
        broker = InMemoryBroker()
        await Channel(await _transport(broker)).send(TOPIC, b"")
        (delivery,) = await take(Channel(InMemoryTransport(broker)), 1)
        return delivery

    assert bytes(run(main()).payload) == b""


def test_limit_too_small_for_the_headers_is_refused():
    async def main():
        channel = Channel(await _transport(InMemoryBroker(), 700))
        with pytest.raises(CommunicationException):
            await channel.send(TOPIC, bytes(1000), headers=[("h", bytes(300))])

    run(main())


def test_ten_megabytes_through_a_one_megabyte_limit():
    limit = 1_000_000
    payload = _payload(10_000_000, 1)
    headers = [("flwire-type", b"global_update"), ("trace", b"abc")]
    sent_progress: list[tuple] = []
    received_progress: list[tuple] = []

    async def main():
        broker = InMemoryBroker()
        sender = Channel(
            await _transport(broker, limit), on_progress=lambda *a: sent_progress.append(a)
        )
        await sender.send(TOPIC, payload, key=b"model", headers=headers, transfer_id="xfer-1")
        receiver = Channel(
            InMemoryTransport(broker, max_record_bytes=limit),
            on_progress=lambda *a: received_progress.append(a),
        )
        (delivery,) = await take(receiver, 1)
        return broker, sender, receiver, delivery

    broker, sender, receiver, delivery = run(main())
    log = broker.topics[TOPIC]
    overhead = len(b"model") + sum(len(k) + len(v) for k, v in headers)
    count = math.ceil(len(payload) / (limit - overhead - PART_OVERHEAD))
    assert len(log) == count > 1
    for index, record in enumerate(log):
        assert len(record.value) <= limit
        assert record.key == b"model"
        assert record.header(PART_HEADER) == f"{index}/{count}".encode()
        assert record.headers[:-1] == headers
        part = parse_part(record.value)
        assert (part.transfer_id, part.index, part.count) == ("xfer-1", index, count)
    assert sender.stats["sent"] == 1 and sender.stats["sent_parts"] == count

    assert bytes(delivery.payload) == payload
    assert delivery.headers == headers
    assert delivery.key == b"model"
    assert receiver.stats["received"] == 1 and receiver.stats["received_parts"] == count
    assert committed(broker) == count

    for progress in (sent_progress, received_progress):
        assert len(progress) == count
        assert all(tid == "xfer-1" and total == len(payload) for _, tid, _, total in progress)
        done = [d for _, _, d, _ in progress]
        assert all(a < b for a, b in itertools.pairwise(done)), done
        assert done[-1] == len(payload)
    assert {d for d, *_ in sent_progress} == {"send"}
    assert {d for d, *_ in received_progress} == {"receive"}


def test_chunked_send_defaults_key_to_the_transfer_id():
    async def main():
        broker = InMemoryBroker()
        await Channel(await _transport(broker, 1000)).send(TOPIC, bytes(3000))
        return broker

    log = run(main()).topics[TOPIC]
    ids = {parse_part(r.value).transfer_id for r in log}
    assert len(ids) == 1 and len(log) > 1
    assert {r.key for r in log} == {ids.pop().encode()}


def test_concurrent_chunked_sends_interleave_and_reassemble():
    payloads = [_payload(20_000 + i, i) for i in range(4)]

    async def main():
        broker = InMemoryBroker()
        senders = [Channel(await _transport(broker, 2000)) for _ in payloads]
        await asyncio.gather(
            *(
                s.send(TOPIC, p, key=f"c{i}".encode())
                for i, (s, p) in enumerate(zip(senders, payloads, strict=True))
            )
        )
        deliveries = await take(Channel(InMemoryTransport(broker)), len(payloads))
        return broker, deliveries

    broker, deliveries = run(main())
    keys = [r.key for r in broker.topics[TOPIC]]
    assert keys != sorted(keys)  # the parts really are interleaved
    got = {d.key: bytes(d.payload) for d in deliveries}
    assert got == {f"c{i}".encode(): p for i, p in enumerate(payloads)}
    assert committed(broker) == len(keys)


# ----------------------------------------------------------------------------- at-least-once


@pytest.mark.parametrize("k", [0, 1, 3, 7])
def test_unacknowledged_messages_are_delivered_again(k):
    n = 7

    async def main():
        broker = InMemoryBroker()
        sender = Channel(await _transport(broker))
        for i in range(n):
            await sender.send(TOPIC, f"m{i}".encode())
        first = await take(Channel(InMemoryTransport(broker)), n, ack=lambda i, d: i < k)
        after_first = committed(broker)
        again = await take(Channel(InMemoryTransport(broker)), n - k)
        rest = await nothing_more(Channel(InMemoryTransport(broker)))
        return first, after_first, again, rest, broker

    first, after_first, again, rest, broker = run(main())
    assert [bytes(d.payload) for d in first] == [f"m{i}".encode() for i in range(n)]
    assert after_first == k
    assert [bytes(d.payload) for d in again] == [f"m{i}".encode() for i in range(k, n)]
    assert rest == []
    assert committed(broker) == n


def test_commit_is_the_low_water_mark_of_done_deliveries():
    async def main():
        broker = InMemoryBroker()
        sender = Channel(await _transport(broker))
        for i in range(6):
            await sender.send(TOPIC, f"m{i}".encode())
        receiver = Channel(InMemoryTransport(broker))
        marks = []
        async with contextlib.aclosing(receiver.receive([TOPIC], "g")) as deliveries:
            got = []
            async for delivery in deliveries:
                got.append(delivery)
                if len(got) == 6:
                    break
            for index in (0, 2, 3, 5):
                await got[index].done()
                marks.append(committed(broker))
            await got[3].done()  # a second done() changes nothing
            marks.append(committed(broker))
        again = await take(Channel(InMemoryTransport(broker)), 4)
        return marks, again

    marks, again = run(main())
    assert marks == [1, 1, 1, 1, 1]
    assert [bytes(d.payload) for d in again] == [b"m1", b"m2", b"m3", b"m4"]


def test_another_group_gets_everything_from_the_start():
    async def main():
        broker = InMemoryBroker()
        sender = Channel(await _transport(broker, 2000))
        await sender.send(TOPIC, b"small")
        await sender.send(TOPIC, _payload(7000, 2))
        await sender.send(TOPIC, b"last")
        first = await take(Channel(InMemoryTransport(broker)), 3, group="g1")
        second = await take(Channel(InMemoryTransport(broker)), 3, group="g2")
        return broker, first, second

    broker, first, second = run(main())
    expected = [b"small", _payload(7000, 2), b"last"]
    assert [bytes(d.payload) for d in first] == expected
    assert [bytes(d.payload) for d in second] == expected
    total = len(broker.topics[TOPIC])
    assert committed(broker, "g1") == committed(broker, "g2") == total


@pytest.mark.parametrize("same_channel", [False, True])
def test_chunked_payload_stopped_mid_transfer_is_redelivered(same_channel):
    limit = 1000
    payload = _payload(5000, 3)
    raw = [p for p, _, _ in split_payload(payload, "T", limit)]
    assert len(raw) == 11

    async def main():
        broker = InMemoryBroker()
        transport = await _transport(broker, limit)
        await Channel(transport).send(TOPIC, b"before")
        for part in raw[:4]:
            await send_raw_part(transport, part, key=b"T")
        first = Channel(InMemoryTransport(broker, max_record_bytes=limit))
        got = []

        async def consume():
            async for delivery in first.receive([TOPIC], "g"):
                got.append(bytes(delivery.payload))
                await delivery.done()

        task = asyncio.create_task(consume())
        await wait_until(lambda: first.stats["received_parts"] == 4)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        mid = committed(broker)
        for part in raw[4:]:
            await send_raw_part(transport, part, key=b"T")
        await Channel(transport).send(TOPIC, b"after")
        second = first if same_channel else Channel(InMemoryTransport(broker))
        parts_before = second.stats["received_parts"]
        again = await take(second, 2)
        return broker, got, mid, again, second.stats["received_parts"] - parts_before

    broker, got, mid, again, parts_seen = run(main())
    assert got == [b"before"]
    assert mid == 1  # nothing of the unfinished transfer was committed
    assert [bytes(d.payload) for d in again] == [payload, b"after"]
    assert parts_seen == len(raw)  # every part read again
    assert committed(broker) == 1 + len(raw) + 1


# ----------------------------------------------------------------------------- bad records


def _bad_parts() -> dict[str, bytes]:
    good = transfer_pb2.TransferPart(
        transfer_id="bad", part_index=0, part_count=2, total_size=10, data=b"abc"
    )

    def variant(**changes):
        part = transfer_pb2.TransferPart()
        part.CopyFrom(good)
        for name, value in changes.items():
            setattr(part, name, value)
        return part.SerializeToString()

    return {
        "garbage": b"\xff\xff\xff\xff",
        "empty": b"",
        "index_past_count": variant(part_index=2),
        "data_past_total": variant(offset=9),
        "declares_2_40_bytes": variant(total_size=2**40),
    }


@pytest.mark.parametrize("kind", sorted(_bad_parts()))
def test_bad_part_record_is_skipped_counted_and_committed(kind, caplog):
    bad = _bad_parts()[kind]

    async def main():
        broker = InMemoryBroker()
        transport = await _transport(broker)
        await Channel(transport).send(TOPIC, b"one")
        await send_raw_part(transport, bad)
        await Channel(transport).send(TOPIC, b"two")
        receiver = Channel(InMemoryTransport(broker))
        with caplog.at_level(logging.ERROR, logger="flwire.transport.channel"):
            got = await take(receiver, 2)
        return broker, receiver, got

    broker, receiver, got = run(main())
    assert [bytes(d.payload) for d in got] == [b"one", b"two"]
    assert receiver.stats["bad_records"] == 1
    assert committed(broker) == 3
    assert any("bad part" in r.getMessage() for r in caplog.records)


def test_inconsistent_part_is_skipped_and_the_transfer_still_completes():
    limit = 1000
    payload = _payload(2000, 4)
    raw = [p for p, _, _ in split_payload(payload, "T", limit)]
    liar = transfer_pb2.TransferPart()
    liar.ParseFromString(raw[1])
    liar.part_count += 1

    async def main():
        broker = InMemoryBroker()
        transport = await _transport(broker, limit)
        await send_raw_part(transport, raw[0])
        await send_raw_part(transport, liar.SerializeToString())
        for part in raw[1:]:
            await send_raw_part(transport, part)
        receiver = Channel(InMemoryTransport(broker))
        got = await take(receiver, 1)
        return broker, receiver, got

    broker, receiver, got = run(main())
    assert bytes(got[0].payload) == payload
    assert receiver.stats["bad_records"] == 1
    assert committed(broker) == len(raw) + 1


def test_corrupted_transfer_does_not_block_later_commits():
    """A transfer whose reassembled payload fails the CRC is kept open until its
    timeout (a good copy of the bad part may still come), then skipped as a bad
    record; its parts must still let the committed offset move past them."""
    limit = 1000
    payload = _payload(2500, 5)
    raw = [p for p, _, _ in split_payload(payload, "T", limit)]
    assert len(raw) == 6
    corrupted = bytearray(raw[1])
    corrupted[-1] ^= 0xFF
    raw[1] = bytes(corrupted)

    async def main():
        broker = InMemoryBroker()
        transport = await _transport(broker, limit)
        for part in raw:
            await send_raw_part(transport, part)
        await Channel(transport).send(TOPIC, b"next")
        receiver = Channel(InMemoryTransport(broker), reassembler=Reassembler(part_timeout=0.3))
        await receiver.transport.start()
        got = []

        async def consume():
            async for delivery in receiver.receive([TOPIC], "g"):
                await delivery.done()
                got.append(bytes(delivery.payload))

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.1)
        held = committed(broker)  # the transfer is open: the commit stays below it
        await asyncio.sleep(1.4)
        task.cancel()
        return broker, receiver, got, held

    broker, receiver, got, held = run(main())
    assert got == [b"next"] and held == 0
    assert receiver.stats["bad_records"] == 1
    assert committed(broker) == len(raw) + 1  # before: 0 (parts 0..4 never finished)


def test_a_forged_part_does_not_lose_the_real_message():
    """Issue 13: a part copied from a real transfer's visible fields, with other
    bytes, that arrives before the real part, ended the transfer as corrupted and
    the real parts were thrown away as late duplicates."""
    limit = 1000
    payload = _payload(2500, 9)
    raw = [p for p, _, _ in split_payload(payload, "T", limit)]
    forged = bytearray(raw[-1])
    forged[-8:] = bytes(8)

    async def main():
        broker = InMemoryBroker()
        transport = await _transport(broker, limit)
        for part in [bytes(forged), *raw]:
            await send_raw_part(transport, part)
        receiver = Channel(InMemoryTransport(broker))
        got = await take(receiver, 1)
        return broker, receiver, got

    broker, receiver, got = run(main())
    assert bytes(got[0].payload) == payload
    assert receiver.stats["bad_records"] == 0 and receiver.stats["dropped_transfers"] == 0
    assert committed(broker) == len(raw) + 1


def test_evicted_transfer_lets_offsets_move_on(caplog):
    limit = 1000

    async def main():
        broker = InMemoryBroker()
        transport = await _transport(broker, limit)
        stalled = [p for p, _, _ in split_payload(_payload(3000, 6), "stalled", limit)]
        for part in stalled[:2]:
            await send_raw_part(transport, part, key=b"s")
        await Channel(transport).send(TOPIC, _payload(3000, 7))
        # Room for the 3,000-byte message whole (data plus per-part costs), not beside
        # the stalled transfer.
        receiver = Channel(
            InMemoryTransport(broker), reassembler=Reassembler(max_pending_bytes=6000)
        )
        with caplog.at_level(logging.ERROR):
            got = await take(receiver, 1)
        return broker, receiver, got

    broker, receiver, got = run(main())
    assert bytes(got[0].payload) == _payload(3000, 7)
    assert receiver.stats["dropped_transfers"] == 1
    assert committed(broker) == len(broker.topics[TOPIC])
    assert any("evicted" in r.getMessage() for r in caplog.records)


def test_expired_transfer_lets_offsets_move_on():
    limit = 1000
    now = [0.0]

    async def main():
        broker = InMemoryBroker()
        transport = await _transport(broker, limit)
        stalled = [p for p, _, _ in split_payload(_payload(3000, 8), "stalled", limit)]
        for part in stalled[:2]:
            await send_raw_part(transport, part)
        receiver = Channel(
            InMemoryTransport(broker),
            reassembler=Reassembler(part_timeout=60, clock=lambda: now[0]),
        )
        got = []

        async def consume():
            async for delivery in receiver.receive([TOPIC], "g"):
                got.append(bytes(delivery.payload))
                await delivery.done()

        task = asyncio.create_task(consume())
        await wait_until(lambda: receiver.stats["received_parts"] == 2)
        now[0] += 61
        await Channel(transport).send(TOPIC, b"later")
        await wait_until(lambda: got == [b"later"])
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return broker, receiver

    broker, receiver = run(main())
    assert receiver.stats["dropped_transfers"] == 1
    assert committed(broker) == 3


def test_one_channel_receiving_two_topics_survives_a_dropped_transfer():
    """One Channel (one Reassembler) serving two receive() loops, as
    AsyncKafkaClient does for two subscribe_to_topic() calls. A transfer of topic
    "a" evicted while topic "b" is read must not break either loop."""
    limit = 1000

    async def main():
        broker = InMemoryBroker()
        transport = await _transport(broker, limit)
        stalled = [p for p, _, _ in split_payload(_payload(3000, 9), "stalled", limit)]
        await send_raw_part(transport, stalled[0], topic="a")
        channel = Channel(await _transport(broker), reassembler=Reassembler(max_pending_bytes=6000))
        got: dict[str, list] = {"a": [], "b": []}
        errors: list[BaseException] = []

        async def consume(topic):
            try:
                async for delivery in channel.receive([topic], "g"):
                    got[topic].append(bytes(delivery.payload))
                    await delivery.done()
            except Exception as exc:
                errors.append(exc)

        tasks = [asyncio.create_task(consume("a"))]
        await wait_until(lambda: channel.stats["received_parts"] == 1)
        tasks.append(asyncio.create_task(consume("b")))
        await Channel(transport).send("b", _payload(3000, 10))  # evicts "stalled"
        await Channel(transport).send("b", b"b-after")
        await Channel(transport).send("a", b"a-after")
        with contextlib.suppress(asyncio.TimeoutError):
            await wait_until(lambda: len(got["a"]) + len(got["b"]) == 3 or errors, 3)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return broker, got, errors

    broker, got, errors = run(main())
    assert errors == []  # actual: [KeyError(('a', 0))] raised in the "b" loop
    assert got == {"a": [b"a-after"], "b": [_payload(3000, 10), b"b-after"]}
    assert committed(broker, topic="a") == 2
    assert committed(broker, topic="b") == len(broker.topics["b"])


def test_redelivered_tail_of_a_handled_transfer_does_not_stall_commits():
    limit = 1000
    x = [p for p, _, _ in split_payload(b"x" * 1500, "X", limit)]
    y = [p for p, _, _ in split_payload(b"y" * 1500, "Y", limit)]
    assert len(x) == len(y) == 4

    async def main():
        broker = InMemoryBroker()
        transport = await _transport(broker, limit)
        for a, b in zip(x, y, strict=True):  # log: X0 Y0 X1 Y1 X2 Y2 X3 Y3
            await send_raw_part(transport, a, key=b"x")
            await send_raw_part(transport, b, key=b"y")
        # First run handles X only, then stops: the commit stops at Y0 (offset 1).
        await take(Channel(InMemoryTransport(broker)), 2, ack=lambda i, d: d.key == b"x")
        assert committed(broker) == 1
        restarted = Channel(InMemoryTransport(broker))
        (again,) = await take(restarted, 1)
        assert bytes(again.payload) == b"y" * 1500
        await nothing_more(restarted)
        return broker, restarted

    broker, restarted = run(main())
    assert committed(broker) == len(broker.topics[TOPIC])  # actual: 2 (X1 never finished)
    assert restarted.reassembler.pending_bytes == 0  # actual: 1500 (X's orphaned tail)


def test_parts_in_flight_are_bounded():
    """A large payload never has more than max_in_flight parts waiting for their
    ack, so the parts do not add up to a second copy of the payload in memory."""

    class SlowAcks(InMemoryTransport):
        def __init__(self, broker):
            super().__init__(broker)
            self.waiting = self.most_waiting = 0

        async def send(self, topic, value, *, key=None, headers=None):
            self.waiting += 1
            self.most_waiting = max(self.most_waiting, self.waiting)
            await asyncio.sleep(0.001)
            await super().send(topic, value, key=key, headers=headers)
            self.waiting -= 1

    async def main():
        broker = InMemoryBroker()
        sender = SlowAcks(broker)
        await sender.start()
        channel = Channel(sender, max_in_flight=3)
        payload = _payload(20_000, 9)
        sender.max_record_bytes = 1000
        await channel.send(TOPIC, payload)
        receiver = Channel(InMemoryTransport(broker))
        got = await take(receiver, 1)
        return sender, channel, payload, got

    sender, channel, payload, got = run(main())
    assert channel.stats["sent_parts"] > 20
    assert sender.most_waiting <= 3
    assert bytes(got[0].payload) == payload


def test_missing_part_times_out_without_further_records(caplog):
    """A transfer whose last part never comes is given up on after part_timeout even
    when the topic goes quiet, and its parts' offsets are committed past."""
    limit = 1000
    raw = [p for p, _, _ in split_payload(_payload(2500, 3), "lost", limit)]

    async def main():
        broker = InMemoryBroker()
        transport = await _transport(broker, limit)
        for part in raw[:-1]:  # the last part is lost
            await send_raw_part(transport, part)
        receiver = Channel(InMemoryTransport(broker), reassembler=Reassembler(part_timeout=0.3))

        async def consume():
            async for _ in receiver.receive([TOPIC], "g"):
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(1.5)
        task.cancel()
        return broker, receiver

    with caplog.at_level("ERROR"):
        broker, receiver = run(main())
    assert receiver.stats["dropped_transfers"] == 1
    assert committed(broker) == len(raw) - 1
    assert any("lost" in r.getMessage() and "missing" in r.getMessage() for r in caplog.records)


def test_parts_held_for_reassembly_keep_no_record_bytes():
    """A part waiting for the rest of its transfer holds its data and where it came
    from, not its record: before, the token kept the whole record (padding and all)
    alive, so duplicates and padded parts held gigabytes that were not counted.
    Duplicates are settled at once and do not hold the transfer."""
    limit = 1000
    payload = _payload(2500, 11)

    async def main():
        broker = InMemoryBroker()
        transport = await _transport(broker, limit)
        raw = [p for p, _, _ in split_payload(payload, "t1", limit)]
        for _ in range(20):  # the first part, 20 times
            await send_raw_part(transport, raw[0])
        receiver = Channel(InMemoryTransport(broker))
        waiting = asyncio.create_task(take(receiver, 1))
        await wait_until(lambda: receiver.stats["duplicates"] == 19)
        held = receiver.reassembler._pending["t1"]  # what the reassembler keeps
        assert [t.record.value for t in held.tokens] == [b""]
        costs = PART_COST + TRANSFER_COST
        assert receiver.reassembler.pending_bytes == len(parse_part(raw[0]).data) + costs
        for part in raw[1:]:
            await send_raw_part(transport, part)
        return broker, await waiting

    broker, got = run(main())
    assert bytes(got[0].payload) == payload
    assert committed(broker) == len(broker.topics[TOPIC])  # duplicates settled too
