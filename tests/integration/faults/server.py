"""A receiving process for the fault scenarios.

    python -m tests.integration.faults.server BOOTSTRAP TOPIC GROUP EFFECTS_FILE
        [--part-timeout S] [--max-memory-bytes N] [--compat] [--fail SENDER:TIMES ...]

Receives TOPIC as member of GROUP with ``Channel(KafkaTransport(...)).receive``
(or, with ``--compat``, with ``flwire.compat``'s ``AsyncKafkaClient.subscribe_to_topic``),
decodes each payload, appends its message id to EFFECTS_FILE (flushed and
fsynced: that line is "the effect", the message is handled), then marks the
delivery done. On the new flwire the Channel de-duplicates; on the old one this
process keeps an in-memory ``messages.SeenIds``, the old recommended practice.

``--max-memory-bytes N``: the reassembler keeps this much of incomplete transfers in
memory, and spills the rest to disk (0: every part is spilled).

``--fail SENDER:TIMES``: the handler raises for a message from SENDER on its
first TIMES attempts (new code: ``delivery.fail(exc)``; compat: the handler
raises).

stdout, one line each, for the test to follow:

- ``READY <old|new> <channel|memory>`` (which flwire, who de-duplicates), ``SUBSCRIBED``;
- ``PROGRESS <transfer id> <bytes done> <total>`` (a few per transfer);
- ``HANDLED <id>`` (the effect is on disk), ``DUPLICATE <id>`` (skipped by the in-memory
  SeenIds), ``SETTLED <id>`` (Channel mode: ``delivery.done()`` returned, and
  ``delivery.settled()`` where the Channel has it: the id is recorded);
- ``ATTEMPT <id> <n>``, ``FAILED_HANDLING <id> <n>`` (only for ``--fail`` senders);
- ``DROPPED <transfer id> <event>`` (an on_event TransferDropped), ``EVENT <type> <repr>``,
  ``STAT dropped_transfers <n>``, ``STAT spilled_bytes <n>`` (bytes written to the spill
  file so far);
- ``CONSUMER_ENDED <why>``, ``SERVER_ERROR <why>``, ``STOPPED``.

SIGTERM stops it cleanly (the last offsets are committed).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import sys
from collections.abc import Sequence
from typing import IO, Any

from flwire import messages
from flwire.transport import Channel, Subscription
from flwire.transport.chunking import Reassembler
from flwire.transport.kafka import KafkaTransport

from .common import FAST_GROUP, Features, features, run_process

#: At most this many PROGRESS lines per transfer.
_PROGRESS_LINES = 8


def say(*words: object) -> None:
    print(*words, flush=True)


class _Transport(KafkaTransport):
    """Says SUBSCRIBED once a subscription is open."""

    async def subscribe(self, topics: Sequence[str], group_id: str) -> Subscription:
        sub = await super().subscribe(topics, group_id)
        say("SUBSCRIBED")
        return sub


class Effects:
    """The handled message ids, one per line, each fsynced before the delivery is done."""

    def __init__(self, path: str) -> None:
        self._file: IO[str] = open(path, "a")

    def record(self, message_id: str) -> None:
        self._file.write(message_id + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


class Handler:
    """Decodes, fails on purpose where asked, records the effect."""

    def __init__(self, effects: Effects, feats: Features, fail: dict[str, int]) -> None:
        self.effects = effects
        self.seen = None if feats.channel_dedupes else messages.SeenIds()
        self.fail = fail
        self.attempts: collections.Counter[str] = collections.Counter()
        self.current = ""  # the id of the message being handled

    def handle(self, payload: Any) -> None:
        """Handle one payload; raises RuntimeError where --fail says so."""
        msg = messages.decode_message(payload)
        mid = self.current = msg.message_id
        self.attempts[mid] += 1
        times = self.fail.get(msg.sender_id, 0)
        if times:
            say("ATTEMPT", mid, self.attempts[mid])
            if self.attempts[mid] <= times:
                say("FAILED_HANDLING", mid, self.attempts[mid])
                raise RuntimeError(f"handler fails on purpose ({msg.sender_id}, {mid})")
        if self.seen is not None and not self.seen.first_time(mid):
            say("DUPLICATE", mid)
            return
        self.effects.record(mid)
        say("HANDLED", mid)


class Progress:
    def __init__(self) -> None:
        self.lines: collections.Counter[str] = collections.Counter()

    def __call__(self, direction: str, transfer_id: str, done: int, total: int) -> None:
        if direction != "receive" or self.lines[transfer_id] >= _PROGRESS_LINES:
            return
        self.lines[transfer_id] += 1
        say("PROGRESS", transfer_id, done, total)


def on_event(event: Any) -> None:
    name = type(event).__name__
    if name == "TransferDropped":
        say("DROPPED", getattr(event, "transfer_id", "?"), repr(event)[:200].replace("\n", " "))
    else:
        say("EVENT", name, repr(event)[:200].replace("\n", " "))


async def watch_stats(channel: Channel) -> None:
    last = spilled = 0
    while True:
        now = channel.stats.get("dropped_transfers", 0)
        if now != last:
            say("STAT dropped_transfers", now)
            last = now
        if channel.reassembler.spilled_total != spilled:
            spilled = channel.reassembler.spilled_total
            say("STAT spilled_bytes", spilled)
        await asyncio.sleep(0.2)


async def serve_channel(args: argparse.Namespace, handler: Handler, feats: Features) -> None:
    transport = _Transport(args.bootstrap, consumer_config=dict(FAST_GROUP))
    await transport.start()
    kwargs: dict[str, Any] = {"on_progress": Progress()}
    given = {"part_timeout": args.part_timeout, "max_memory_bytes": args.max_memory_bytes}
    settings = {name: value for name, value in given.items() if value is not None}
    if settings:
        kwargs["reassembler"] = Reassembler(**settings)
    if feats.on_event:
        kwargs["on_event"] = on_event
    channel = Channel(transport, **kwargs)
    stats = asyncio.create_task(watch_stats(channel))
    try:
        async for delivery in channel.receive([args.topic], args.group):
            try:
                handler.handle(delivery.payload)
            except RuntimeError as exc:
                fail = getattr(delivery, "fail", None)
                if fail is not None:
                    await fail(exc)
                    continue
                # The old Channel has no way to say so: the message is skipped.
            await delivery.done()
            settled = getattr(delivery, "settled", None)
            if settled is not None:  # the id's record is written in the background
                await settled()
            say("SETTLED", handler.current)
        say("CONSUMER_ENDED receive loop ended")
    finally:
        stats.cancel()
        await transport.stop()


async def serve_compat(args: argparse.Namespace, handler: Handler) -> None:
    from flwire.compat.communication.kafka_client import AsyncKafkaClient

    transport = _Transport(args.bootstrap, consumer_config=dict(FAST_GROUP))
    client = AsyncKafkaClient({"bootstrap_servers": args.bootstrap}, transport=transport)
    await client.start()
    try:
        await client.subscribe_to_topic(args.topic, handler.handle, args.group)
        task = client.consumers[args.topic]
        await asyncio.wait([task])
        exc = None if task.cancelled() else task.exception()
        say("CONSUMER_ENDED", repr(exc).replace("\n", " ") if exc else "without an error")
        await asyncio.Event().wait()  # a dead consumer task does not end the process
    finally:
        await client.stop()


async def main(args: argparse.Namespace) -> None:
    feats = features()
    fail = {}
    for rule in args.fail:
        sender, _, times = rule.rpartition(":")
        fail[sender] = int(times)
    effects = Effects(args.effects)
    handler = Handler(effects, feats, fail)
    dedupe = "channel" if handler.seen is None else "memory"
    say("READY", feats.code, dedupe)
    serving = asyncio.create_task(
        serve_compat(args, handler) if args.compat else serve_channel(args, handler, feats)
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            serving.result()  # an error ends the process with it
        else:
            serving.cancel()
            try:
                await serving
            except asyncio.CancelledError:
                pass
            say("STOPPED")
    except Exception as exc:
        say("SERVER_ERROR", repr(exc).replace("\n", " ")[:300])
        raise
    finally:
        stopping.cancel()
        effects.close()


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.integration.faults.server")
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("group")
    parser.add_argument("effects")
    parser.add_argument("--part-timeout", type=float, default=None)
    parser.add_argument("--max-memory-bytes", type=int, default=None)
    parser.add_argument("--compat", action="store_true")
    parser.add_argument("--fail", action="append", default=[], metavar="SENDER:TIMES")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run_process(lambda: main(parse(sys.argv[1:])))
