"""Streamed transfers and Channel's delivery guarantees on the in-memory
transport: offsets committed only once a delivery is done, a consumer that
dies mid-stream and its successor reading the stream again from its head,
de-duplication of a stream sent again, failed deliveries re-streamed to the
dead-letter topic, streams interleaved with each other and with transfers in
parts, what is reported when a stream is given up on, and the bound on what a
sender has unacknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
from stream_tools import (
    SMALL_LIMIT,
    TOPIC,
    FakeClock,
    Logged,
    Received,
    assert_same_weights,
    consume,
    drain,
    is_marker,
    logged,
    random_tensor,
    receiver,
    replay,
    run,
    started,
    stream_index,
    streamed,
)

from flwire.messages import client_update, decode_message
from flwire.tensors import EncodeOptions
from flwire.transport import (
    Channel,
    DeliveryFailed,
    FailurePolicy,
    Headers,
    InMemoryBroker,
    InMemoryTransport,
    Transport,
)
from flwire.transport.chunking import PART_HEADER
from flwire.transport.failures import ATTEMPTS_HEADER, ERROR_HEADER, SOURCE_HEADER
from flwire.transport.headers import MESSAGE_ID
from flwire.transport.streaming import STREAM_HEADER, StreamAssembler

WEIGHTS = {
    "w": random_tensor(torch.float32, (4000,), 1),
    "i": random_tensor(torch.int64, (700,), 2),
}


def committed(broker: InMemoryBroker, group: str = "g", topic: str = TOPIC) -> int:
    return broker.committed.get((group, topic), 0)


async def _sent(broker: InMemoryBroker, *msgs: Any, topic: str = TOPIC) -> Channel:
    channel = Channel(await started(broker))
    for msg in msgs:
        await channel.send_message(topic, msg)
    return channel


async def _stream_records(msg: Any) -> list[Logged]:
    broker = InMemoryBroker()
    await _sent(broker, msg)
    return logged(broker)


# ----------------------------------------------------------------------------- commits


def test_offsets_are_committed_only_after_done() -> None:
    async def main() -> tuple[int, int, int]:
        broker = InMemoryBroker()
        await _sent(broker, streamed(WEIGHTS))
        records = len(broker.topics[TOPIC])
        channel = Channel(InMemoryTransport(broker))
        await channel.transport.start()
        deliveries = channel.receive([TOPIC], "g", dedupe=False)
        delivery = await deliveries.__anext__()
        assert delivery.message is not None
        assert_same_weights(delivery.message.tensors(), WEIGHTS)
        before = committed(broker)
        await delivery.done()
        after = committed(broker)
        await deliveries.aclose()
        return before, after, records

    before, after, records = run(main())
    assert before == 0
    assert after == records


def test_a_stream_under_way_holds_back_the_commit_of_later_records() -> None:
    """A plain record after a stream's first parts is done, yet nothing is
    committed past the stream's head while the stream is incomplete."""

    async def main() -> tuple[int, int]:
        records = await _stream_records(streamed(WEIGHTS))
        broker = InMemoryBroker()
        await replay(broker, records[:3])
        channel, got = receiver(broker)
        await drain(channel, got, broker)  # the marker is done()
        held = committed(broker)
        await replay(broker, records[3:])
        await drain(channel, got, broker)
        return held, committed(broker)

    held, done = run(main())
    assert held == 0
    assert done > 0


def test_a_consumer_that_dies_mid_stream_is_followed_by_one_that_reads_it_whole() -> None:
    async def main() -> tuple[Received, Received, int, int]:
        records = await _stream_records(streamed(WEIGHTS))
        broker = InMemoryBroker()
        half = len(records) // 2
        await replay(broker, records[:half])
        first, got1 = receiver(broker)
        await drain(first, got1, broker)  # then it dies (its subscription closed)
        assert first.streams.holds(_transfer_id(records))
        assert committed(broker) == 0
        await replay(broker, records[half:])
        second, got2 = receiver(broker)
        await drain(second, got2, broker)
        assert committed(broker) == len(broker.topics[TOPIC])
        return got1, got2, second.stats["received_parts"], len(records)

    got1, got2, parts, stream_records = run(main())
    assert got1.messages == []
    (delivery,) = got2.messages
    assert delivery.message is not None
    assert_same_weights(delivery.message.tensors(), WEIGHTS)
    # The successor read from the head: every part of the stream.
    assert parts == stream_records
    assert got2.events == []


def _transfer_id(records: Sequence[Logged]) -> str:
    return dict(records[0].headers)[MESSAGE_ID].decode()


def test_a_delivery_never_done_is_handed_out_again_after_a_restart() -> None:
    async def main() -> tuple[Received, Received, int]:
        broker = InMemoryBroker()
        await _sent(broker, streamed(WEIGHTS))
        first, got1 = receiver(broker)
        await consume(first, got1, lambda: bool(got1.messages), ack=lambda d: False)
        assert committed(broker) == 0
        second, got2 = receiver(broker)
        await consume(second, got2, lambda: bool(got2.messages))
        return got1, got2, committed(broker) == len(broker.topics[TOPIC])

    got1, got2, all_committed = run(main())
    assert all_committed
    assert len(got1.messages) == len(got2.messages) == 1
    message = got2.messages[0].message
    assert message is not None
    assert_same_weights(message.tensors(), WEIGHTS)


# ----------------------------------------------------------------------------- de-duplication


def test_dedupe_skips_a_stream_sent_again_after_it_was_handled() -> None:
    async def main() -> tuple[Received, Received, Channel, int, int]:
        broker = InMemoryBroker()
        msg = streamed(WEIGHTS, compression="zstd")
        sender = await _sent(broker, msg)
        parts = sender.stats["sent_parts"]
        first, got1 = receiver(broker)
        await drain(first, got1, broker, dedupe=True)
        # The sender sends the same message again (a retry); a restarted receiver
        # of the same group reads the ids it handled back from the transport.
        await sender.send_message(TOPIC, msg)
        second, got2 = receiver(broker)
        await drain(second, got2, broker, dedupe=True)
        return got1, got2, second, parts, committed(broker) == len(broker.topics[TOPIC])

    got1, got2, second, parts, all_committed = run(main())
    assert all_committed
    assert len(got1.messages) == 1
    assert got2.messages == []
    assert second.stats["duplicates"] == parts
    assert second.stats["received_streams"] == 0  # nothing decoded
    assert got2.events == []


def test_dedupe_skips_a_copy_sent_while_the_first_is_handled() -> None:
    async def main() -> tuple[Received, Channel]:
        broker = InMemoryBroker()
        msg = streamed(WEIGHTS)
        await _sent(broker, msg, msg)
        channel, got = receiver(broker)
        await drain(channel, got, broker, dedupe=True)
        return got, channel

    got, channel = run(main())
    assert len(got.messages) == 1
    assert channel.stats["received_streams"] == 1
    assert channel.stats["duplicates"] > 0


def test_without_dedupe_a_copy_in_the_same_receiver_is_still_skipped() -> None:
    """The assembler remembers the streams it ended: a copy's parts are
    skipped as parts of an ended stream."""

    async def main() -> tuple[Received, Channel, int]:
        broker = InMemoryBroker()
        msg = streamed(WEIGHTS)
        sender = await _sent(broker, msg, msg)
        channel, got = receiver(broker)
        await drain(channel, got, broker, dedupe=False)
        return got, channel, sender.stats["sent_parts"] // 2

    got, channel, parts = run(main())
    assert len(got.messages) == 1
    assert channel.stats["duplicates"] == parts


# ----------------------------------------------------------------------------- failures


def test_a_failed_stream_is_re_streamed_to_the_dead_letter_topic() -> None:
    events: list[Any] = []

    async def main() -> tuple[Received, Received, Channel, list[Logged]]:
        broker = InMemoryBroker()
        msg = streamed(WEIGHTS, compression="lz4", shuffle=True)
        await _sent(broker, msg)
        policy = FailurePolicy(max_attempts=2, retry_backoff_s=0)
        channel = Channel(await started(broker), failure_policy=policy, on_event=events.append)
        got = Received()

        async def fail(delivery: Any) -> None:
            if not is_marker(delivery):
                await delivery.fail(RuntimeError("handler broke"))

        await consume(
            channel,
            got,
            lambda: channel.stats["dead_lettered"] == 1,
            ack=is_marker,
            on_delivery=fail,
        )
        dead = logged(broker, TOPIC + ".dead-letter")
        reader, back = receiver(broker)
        await drain(reader, back, broker, topic=TOPIC + ".dead-letter")
        return got, back, channel, dead

    got, back, channel, dead = run(main())
    assert [d.attempt for d in got.messages] == [1, 2]
    assert channel.stats["retries"] == 1 and channel.stats["dead_lettered"] == 1
    (event,) = [e for e in events if isinstance(e, DeliveryFailed)]
    assert event.attempts == 2 and event.dead_letter_topic == TOPIC + ".dead-letter"
    assert event.error == "RuntimeError: handler broke"
    # Streamed again: every record a part of a stream, with the dead letter's headers.
    assert all(dict(r.headers).get(STREAM_HEADER) is not None for r in dead)
    assert [stream_index(r) for r in dead] == list(range(len(dead)))
    headers = dict(dead[0].headers)
    assert headers[ERROR_HEADER] == b"RuntimeError: handler broke"
    assert headers[ATTEMPTS_HEADER] == b"2"
    assert headers[SOURCE_HEADER] == f"{TOPIC}[0]@0".encode()
    (letter,) = back.messages
    assert letter.message is not None
    assert letter.message.message_id == got.messages[0].message.message_id  # type: ignore[union-attr]
    assert_same_weights(letter.message.tensors(), WEIGHTS)
    assert letter.header(ERROR_HEADER) == b"RuntimeError: handler broke"


def test_a_failed_stream_is_skipped_without_a_dead_letter_topic() -> None:
    async def main() -> tuple[Channel, InMemoryBroker, int]:
        broker = InMemoryBroker()
        await _sent(broker, streamed(WEIGHTS))
        total = len(broker.topics[TOPIC])
        policy = FailurePolicy(max_attempts=1, dead_letter_suffix=None)
        channel = Channel(await started(broker), failure_policy=policy)
        got = Received()

        async def fail(delivery: Any) -> None:
            await delivery.fail("no")

        await consume(
            channel,
            got,
            lambda: channel.stats["failed_deliveries"] == 1,
            ack=lambda d: False,
            on_delivery=fail,
        )
        return channel, broker, total

    channel, broker, total = run(main())
    assert channel.stats["dead_lettered"] == 0
    assert committed(broker) == total
    assert list(broker.topics) == [TOPIC]


# ----------------------------------------------------------------------------- interleaving


def _interleave(*streams: Sequence[Logged]) -> list[Logged]:
    out: list[Logged] = []
    longest = max(len(s) for s in streams)
    for i in range(longest):
        for s in streams:
            if i < len(s):
                out.append(s[i])
    return out


def _receive_interleaved(
    msgs: Sequence[Any], *, quiet: bool = False, **channel_args: Any
) -> tuple[Received, Channel]:
    """Stream ``msgs`` with their records interleaved (as senders writing at once
    to one partition), and receive them all; ``quiet``: no ``on_event``."""

    async def main() -> tuple[Received, Channel]:
        records = _interleave(*[await _stream_records(m) for m in msgs])
        broker = InMemoryBroker()
        await replay(broker, records)
        channel, got = receiver(broker, **channel_args)
        if quiet:
            channel.on_event = None
        await drain(channel, got, broker)
        return got, channel

    return run(main())


def test_two_interleaved_streams_both_arrive() -> None:
    a = {"w": random_tensor(torch.float16, (9000,), 3)}
    b = {"w": random_tensor(torch.uint8, (7000,), 4), "s": torch.tensor(1.5)}
    msg_a, msg_b = streamed(a, sender="client-1"), streamed(b, sender="client-2")
    got, channel = _receive_interleaved([msg_a, msg_b])
    by_id = {d.message.message_id: d.message for d in got.messages if d.message}
    assert_same_weights(by_id[msg_a.message_id].tensors(), a)
    assert_same_weights(by_id[msg_b.message_id].tensors(), b)
    assert channel.stats["received_streams"] == 2 and got.events == []


def test_a_stream_interleaved_with_a_message_in_parts() -> None:
    streamed_weights = {"w": random_tensor(torch.float64, (3000,), 5)}
    parts_weights = {"w": random_tensor(torch.int32, (6000,), 6)}
    stream_msg = streamed(streamed_weights, sender="client-1")
    parts_msg = client_update(
        "client-2", 1, parts_weights, options=EncodeOptions(compression="none")
    )

    async def main() -> tuple[Received, Channel]:
        stream_records = await _stream_records(stream_msg)
        parts_records = await _stream_records(parts_msg)
        assert all(dict(r.headers).get(PART_HEADER) for r in parts_records)
        broker = InMemoryBroker()
        await replay(broker, _interleave(stream_records, parts_records))
        channel, got = receiver(broker)
        await drain(channel, got, broker)
        return got, channel

    got, channel = run(main())
    streamed_d = [d for d in got.messages if d.payload is None]
    parts_d = [d for d in got.messages if d.payload is not None]
    assert len(streamed_d) == len(parts_d) == 1
    assert streamed_d[0].message is not None
    assert_same_weights(streamed_d[0].message.tensors(), streamed_weights)
    assert_same_weights(decode_message(parts_d[0].payload).tensors(), parts_weights)
    assert channel.stats["received_streams"] == 1 and channel.stats["received"] == 3


# ----------------------------------------------------------------------------- reported drops


def test_a_gap_is_reported_and_its_records_committed() -> None:
    async def main() -> tuple[Received, Channel, InMemoryBroker, list[Logged]]:
        records = await _stream_records(streamed(WEIGHTS))
        broker = InMemoryBroker()
        await replay(broker, records[:2] + records[3:])
        channel, got = receiver(broker)
        await drain(channel, got, broker)
        return got, channel, broker, records

    got, channel, broker, records = run(main())
    assert got.messages == []
    (event,) = got.dropped
    assert event.transfer_id == _transfer_id(records)
    assert event.reason == "part 3 arrived where part 2 was expected (parts lost)"
    assert event.topic == TOPIC and event.partition == 0
    assert event.parts_received == 2 and event.parts_total == 0
    assert event.total_bytes == sum(t.numel() * t.element_size() for t in WEIGHTS.values())
    assert channel.stats["dropped_transfers"] == 1
    # The parts after the gap: skipped as parts of an ended stream.
    assert channel.stats["duplicates"] == len(records) - 4
    assert committed(broker) == len(records)  # everything settled, the marker too


def test_a_chunk_without_its_head_is_reported_once() -> None:
    async def main() -> tuple[Received, Channel, list[Logged]]:
        records = await _stream_records(streamed(WEIGHTS))
        broker = InMemoryBroker()
        await replay(broker, records[1:])
        channel, got = receiver(broker)
        await drain(channel, got, broker)
        return got, channel, records

    got, channel, records = run(main())
    (event,) = got.dropped
    assert event.reason == "part 1 of a stream whose head was not received"
    assert channel.stats["dropped_transfers"] == 1
    assert channel.stats["duplicates"] == len(records) - 2


def test_records_that_are_not_stream_parts_are_bad_records() -> None:
    async def main() -> tuple[Received, Channel]:
        broker = InMemoryBroker()
        transport = await started(broker)
        for value in (b"", b"\x00\x01\x02", b"\x0a\x01x\x10\x01"):
            await transport.send(TOPIC, value, headers=[(STREAM_HEADER, b"1")])
        await _sent(broker, streamed(WEIGHTS))
        channel, got = receiver(broker)
        await drain(channel, got, broker)
        return got, channel

    got, channel = run(main())
    assert channel.stats["bad_records"] == 3
    assert len(got.messages) == 1 and got.events == []


def test_a_stalled_stream_is_given_up_after_part_timeout() -> None:
    async def main() -> tuple[Received, Channel, InMemoryBroker, int]:
        records = await _stream_records(streamed(WEIGHTS))
        broker = InMemoryBroker()
        await replay(broker, records[:-3])
        clock = FakeClock()
        channel, got = receiver(broker, streams=StreamAssembler(clock=clock, part_timeout=30))
        await drain(channel, got, broker, expire_with=clock)
        return got, channel, broker, len(records)

    got, channel, broker, total = run(main())
    (event,) = got.dropped
    assert event.reason == "no new part for 30 s"
    assert event.parts_received == total - 3
    assert channel.streams.pending_streams == 0 and channel.streams.pending_bytes == 0
    assert committed(broker) == total - 3 + 2  # the stream's records and both markers


def test_max_streams_over_a_channel_refuses_one_and_delivers_the_others() -> None:
    msgs = [streamed(WEIGHTS, sender=f"client-{i}") for i in range(3)]
    got, channel = _receive_interleaved(msgs, streams=StreamAssembler(max_streams=2))
    assert sorted(d.message.sender_id for d in got.messages if d.message) == [
        "client-0",
        "client-1",
    ]
    (event,) = got.dropped
    assert event.transfer_id == msgs[2].message_id
    assert event.reason.startswith("refused: 2 streams holding")
    assert channel.stats["dropped_transfers"] == 1


def test_without_on_event_a_dropped_stream_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    msgs = [streamed(WEIGHTS, sender=f"client-{i}") for i in range(2)]
    with caplog.at_level(logging.WARNING, "flwire.transport.channel"):
        _, channel = _receive_interleaved(msgs, quiet=True, streams=StreamAssembler(max_streams=1))
    assert channel.stats["dropped_transfers"] == 1
    assert f"Gave up on transfer {msgs[1].message_id} on t[0]" in caplog.text
    assert "refused: 1 streams holding" in caplog.text


def test_the_default_bound_takes_128_streams_at_once() -> None:
    """An FL server's clients upload at once: 128 interleaved streams are all
    delivered with the assembler's defaults (max_streams 1,024)."""
    msgs = [streamed({"w": WEIGHTS["w"][:64]}, sender=f"client-{i}") for i in range(128)]
    got, channel = _receive_interleaved(msgs)
    assert len(got.messages) == 128 and not got.dropped
    assert channel.stats["dropped_transfers"] == 0


# ----------------------------------------------------------------------------- sender bound


class SlowTransport(Transport):
    """An in-memory transport whose sends are acknowledged after a delay, and
    which records how many bytes and sends were outstanding at most."""

    def __init__(self, broker: InMemoryBroker, limit: int, delay: float = 0.002) -> None:
        self.inner = InMemoryTransport(broker, max_record_bytes=limit)
        self.max_record_bytes = limit
        self.delay = delay
        self.outstanding = self.outstanding_bytes = 0
        self.peak = self.peak_bytes = 0

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def send(
        self, topic: str, value: Any, *, key: bytes | None = None, headers: Headers | None = None
    ) -> None:
        size = memoryview(value).nbytes
        self.outstanding += 1
        self.outstanding_bytes += size
        self.peak = max(self.peak, self.outstanding)
        self.peak_bytes = max(self.peak_bytes, self.outstanding_bytes)
        try:
            await self.inner.send(topic, value, key=key, headers=headers)
            await asyncio.sleep(self.delay)
        finally:
            self.outstanding -= 1
            self.outstanding_bytes -= size

    async def subscribe(self, topics: Sequence[str], group_id: str) -> Any:
        return await self.inner.subscribe(topics, group_id)

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        await self.inner.ensure_topics(topics)


def test_max_in_flight_bytes_bounds_what_a_sender_has_unacknowledged() -> None:
    bound = 3 * SMALL_LIMIT
    weights = {"w": random_tensor(torch.float32, (60_000,), 7)}

    async def main() -> tuple[SlowTransport, SlowTransport, int]:
        broker = InMemoryBroker()
        bounded = SlowTransport(broker, SMALL_LIMIT)
        await bounded.start()
        await Channel(bounded, max_in_flight_bytes=bound).send_message(TOPIC, streamed(weights))
        free = SlowTransport(InMemoryBroker(), SMALL_LIMIT)
        await free.start()
        await Channel(free).send_message(TOPIC, streamed(weights))
        return bounded, free, len(broker.topics[TOPIC])

    bounded, free, records = run(main())
    assert records > 50
    # The window closes once `bound` bytes wait: at most one record more.
    assert bounded.peak_bytes < bound + SMALL_LIMIT
    # Without a tight bound, the same stream had many more records waiting.
    assert free.peak > bounded.peak
    assert bounded.outstanding == free.outstanding == 0


def test_max_in_flight_records_bounds_sends_too() -> None:
    async def main() -> SlowTransport:
        slow = SlowTransport(InMemoryBroker(), SMALL_LIMIT)
        await slow.start()
        channel = Channel(slow, max_in_flight=2, max_in_flight_bytes=1 << 30)
        await channel.send_message(TOPIC, streamed(WEIGHTS))
        return slow

    slow = run(main())
    assert 1 <= slow.peak <= 2


def test_a_receive_loop_stops_cleanly_in_the_middle_of_a_stream() -> None:
    """Closing the receive generator while a stream is under way leaves no
    task behind and commits nothing."""

    async def main() -> tuple[int, set[asyncio.Task[Any]]]:
        records = await _stream_records(streamed(WEIGHTS))
        broker = InMemoryBroker()
        await replay(broker, records[:-1])
        channel = Channel(InMemoryTransport(broker))
        await channel.transport.start()
        before = asyncio.all_tasks()
        gen = channel.receive([TOPIC], "g", dedupe=False)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(gen.__anext__(), 0.3)
        await gen.aclose()
        await asyncio.sleep(0)
        return committed(broker), asyncio.all_tasks() - before

    done, left = run(main())
    assert done == 0
    assert not left


def test_numpy_weights_stream_through_dead_letters_intact() -> None:
    """A received stream's message (its tensors handed over) streams again
    unchanged: what a dead letter carries."""
    weights = {"a": np.arange(5000, dtype=np.float64)}

    async def main() -> Received:
        broker = InMemoryBroker()
        await _sent(broker, streamed(weights))
        channel, got = receiver(broker)
        await drain(channel, got, broker)
        message = got.messages[0].message
        assert message is not None
        await Channel(await started(broker)).send_stream_as("again", message, [("x", b"1")])
        reader, back = receiver(broker)
        return await drain(reader, back, broker, topic="again")

    back = run(main())
    (delivery,) = back.messages
    assert delivery.header("x") == b"1" and delivery.message is not None
    assert delivery.message.tensors(as_numpy=True)["a"].tobytes() == weights["a"].tobytes()
