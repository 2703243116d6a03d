"""A sending process for the fault scenarios.

    python -m tests.integration.faults.client BOOTSTRAP TOPIC --sender NAME
        [--large N] [--part-delay S] [--small N] [--small-interval S] [--small-start S]
        [--no-idempotence]

Sends N large updates (4.8 MB, 5 parts each) one after the other and, at the
same time, N small heartbeats (sender ``NAME-small``) every ``--small-interval``
seconds, through one ``Channel(KafkaTransport(...))``. ``--part-delay`` paces
the parts of a large update (one at a time, each after the delay), so that a
test can act while a transfer is under way.

stdout: ``SENDING <id> large|small``, ``PART_ACKED <transfer id> <index>/<count>``,
``SENT <id> <seconds>`` once ``send_message`` returned, ``FAILED <id> <why>`` if it
raised, ``DONE`` at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Any

from flwire.messages import Message
from flwire.transport import Channel, Headers
from flwire.transport.base import last_header
from flwire.transport.chunking import PART_HEADER, parse_part
from flwire.transport.kafka import KafkaTransport

from .common import large_update, run_process, small_message

#: How long one send may take before the client gives up on it (the producer's own
#: delivery timeout should end it sooner).
SEND_BOUND_S = 150.0


def say(*words: object) -> None:
    print(*words, flush=True)


class PacedTransport(KafkaTransport):
    """Sends the parts of a large payload one at a time, each after ``part_delay``."""

    def __init__(self, bootstrap: str, part_delay: float, **kwargs: Any) -> None:
        super().__init__(bootstrap, **kwargs)
        self.part_delay = part_delay
        self._one_part: asyncio.Lock | None = None

    async def send(
        self, topic: str, value: Any, *, key: bytes | None = None, headers: Headers | None = None
    ) -> None:
        index = last_header(headers or [], PART_HEADER)
        if index is None or self.part_delay <= 0:
            await super().send(topic, value, key=key, headers=headers)
            return
        if self._one_part is None:
            self._one_part = asyncio.Lock()
        async with self._one_part:  # FIFO: the parts go in order, one at a time
            await asyncio.sleep(self.part_delay)
            await super().send(topic, value, key=key, headers=headers)
            say("PART_ACKED", parse_part(value).transfer_id, index.decode())


async def send_one(channel: Channel, topic: str, msg: Message, kind: str) -> None:
    say("SENDING", msg.message_id, kind)
    started = time.monotonic()
    try:
        await asyncio.wait_for(channel.send_message(topic, msg), SEND_BOUND_S)
    except Exception as exc:
        say("FAILED", msg.message_id, repr(exc).replace("\n", " ")[:300])
    else:
        say("SENT", msg.message_id, f"{time.monotonic() - started:.2f}")


async def main(args: argparse.Namespace) -> None:
    producer: dict[str, Any] = {}
    if args.no_idempotence:
        producer = {"enable.idempotence": False, "acks": "all"}
    transport = PacedTransport(args.bootstrap, args.part_delay, producer_config=producer)
    await transport.start()
    channel = Channel(transport)

    async def large() -> None:
        for i in range(args.large):
            await send_one(channel, args.topic, large_update(args.sender, i), "large")

    async def small() -> None:
        await asyncio.sleep(args.small_start)
        for i in range(args.small):
            if i:
                await asyncio.sleep(args.small_interval)
            await send_one(channel, args.topic, small_message(f"{args.sender}-small"), "small")

    try:
        await asyncio.gather(large(), small())
    finally:
        await transport.stop()
    say("DONE")


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.integration.faults.client")
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("--sender", required=True)
    parser.add_argument("--large", type=int, default=0)
    parser.add_argument("--part-delay", type=float, default=0.0)
    parser.add_argument("--small", type=int, default=0)
    parser.add_argument("--small-interval", type=float, default=0.5)
    parser.add_argument("--small-start", type=float, default=0.0)
    parser.add_argument("--no-idempotence", action="store_true")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run_process(lambda: main(parse(sys.argv[1:])))
