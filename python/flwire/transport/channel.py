"""A Channel puts flwire payloads of any size on a transport.

Sending: a payload that fits the transport's record limit goes as one record;
a larger one is split into TransferParts (same key, so they stay in one
partition and in order). Receiving: parts are reassembled, and each payload is
handed out as a :class:`Delivery`; calling :meth:`Delivery.done` once the
payload is handled commits its records' offsets as soon as every earlier record
is done too (at-least-once).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flwire._protowire import byte_view
from flwire.exceptions import CommunicationException, SerializationException
from flwire.messages import Message
from flwire.transport.base import Headers, Record, Transport, last_header
from flwire.transport.chunking import (
    CORRUPTED,
    LATE_DUPLICATE,
    PART_HEADER,
    Reassembler,
    parse_part,
    split_payload,
)
from flwire.transport.headers import message_headers
from flwire.transport.offsets import OffsetTracker

logger = logging.getLogger(__name__)

#: progress(direction, transfer_id, bytes_done, bytes_total); direction is "send" or "receive"
ProgressCallback = Callable[[str, str, int, int], None]


@dataclass
class Delivery:
    """One received payload (reassembled if it came in parts)."""

    topic: str
    key: bytes | None
    payload: Any
    headers: Headers
    _tokens: list[Any] = field(repr=False, default_factory=list)

    def header(self, name: str) -> bytes | None:
        """The last value of a header, or None."""
        return last_header(self.headers, name)

    async def done(self) -> None:
        """The payload is handled: its offsets may be committed."""
        tokens, self._tokens = self._tokens, []
        await _finish_tokens(tokens)


class Channel:
    """Sends and receives payloads of any size over a :class:`Transport`."""

    def __init__(
        self,
        transport: Transport,
        *,
        on_progress: ProgressCallback | None = None,
        reassembler: Reassembler | None = None,
        max_in_flight: int = 64,
    ) -> None:
        self.transport = transport
        self.on_progress = on_progress
        self.max_in_flight = max(1, max_in_flight)
        self.reassembler = reassembler or Reassembler()
        self.stats: dict[str, int] = {
            "sent": 0,
            "sent_parts": 0,
            "received": 0,
            "received_parts": 0,
            "bad_records": 0,
            "dropped_transfers": 0,
            "bytes_sent": 0,
            "bytes_received": 0,
        }

    async def send(
        self,
        topic: str,
        payload: Any,
        *,
        key: bytes | None = None,
        headers: Headers | None = None,
        transfer_id: str | None = None,
    ) -> None:
        """Send a payload; return once every record of it is acknowledged."""
        view = byte_view(payload, "payload")
        limit = self.transport.max_record_bytes
        headers = list(headers or [])
        overhead = len(key or b"") + sum(len(k) + len(v) for k, v in headers)
        if len(view) + overhead <= limit:
            await self.transport.send(
                topic, payload if isinstance(payload, bytes) else view, key=key, headers=headers
            )
            self.stats["sent"] += 1
            self.stats["bytes_sent"] += len(view)
            return
        transfer_id = transfer_id or uuid.uuid4().hex
        key = key if key is not None else transfer_id.encode()
        # At most max_in_flight parts wait for their ack at a time, so the parts
        # (each a copy of its slice) never add up to a second copy of the payload.
        window: deque[tuple[asyncio.Task[None], int]] = deque()
        acked = parts = 0

        async def settle_oldest() -> None:
            nonlocal acked
            task, size = window.popleft()
            await task
            acked += size
            if self.on_progress:
                self.on_progress("send", transfer_id, min(acked, len(view)), len(view))

        try:
            for part, index, count in split_payload(view, transfer_id, limit - overhead):
                part_headers = [*headers, (PART_HEADER, f"{index}/{count}".encode())]
                task = asyncio.ensure_future(
                    self.transport.send(topic, part, key=key, headers=part_headers)
                )
                # Let the transport hand this part to its client before building the
                # next one, so parts enter the partition in order.
                await asyncio.sleep(0)
                window.append((task, len(part)))
                parts += 1
                if len(window) >= self.max_in_flight:
                    await settle_oldest()
            while window:
                await settle_oldest()
        except BaseException:
            for task, _ in window:
                task.cancel()
            raise
        self.stats["sent"] += 1
        self.stats["sent_parts"] += parts
        self.stats["bytes_sent"] += acked

    async def send_message(self, topic: str, msg: Message) -> int:
        """Send a flwire message with its routing headers, keyed by its sender
        (so a sender's messages stay in order); return its size in bytes."""
        blob = msg.to_bytes()
        await self.send(
            topic,
            blob,
            key=msg.sender_id.encode(),
            headers=message_headers(msg),
            transfer_id=msg.message_id,
        )
        return len(blob)

    async def receive(self, topics: Sequence[str], group_id: str) -> AsyncGenerator[Delivery, None]:
        """Payloads from ``topics`` for consumer group ``group_id``; call
        ``await delivery.done()`` after handling each one."""
        subscription = await self.transport.subscribe(topics, group_id)
        tracker = OffsetTracker()

        async def finish(records: list[Record]) -> None:
            commits: dict[tuple[str, int], int] = {}
            for rec in records:
                tp = (rec.topic, rec.partition)
                moved = tracker.finish(tp, rec.offset)
                if moved is not None:
                    commits[tp] = moved
            for (topic, partition), next_offset in commits.items():
                await subscription.commit(topic, partition, next_offset)

        # Missing parts must time out even when no further record arrives.
        expiry = asyncio.create_task(self._expire_periodically())
        try:
            async for record in subscription:
                tracker.seen((record.topic, record.partition), record.offset)
                delivery, abandoned = self._on_record(_Token(record, finish))
                for drop in self.reassembler.expire():
                    self.stats["dropped_transfers"] += 1
                    abandoned.extend(drop.tokens)
                # Nothing will handle these records: let their offsets move on.
                await _finish_tokens(abandoned)
                if delivery is not None:
                    yield delivery
        finally:
            expiry.cancel()
            await subscription.close()

    async def _expire_periodically(self) -> None:
        interval = max(0.2, min(5.0, self.reassembler.part_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            abandoned = []
            for drop in self.reassembler.expire():
                self.stats["dropped_transfers"] += 1
                abandoned.extend(drop.tokens)
            await _finish_tokens(abandoned)

    def _on_record(self, token: _Token) -> tuple[Delivery | None, list[_Token]]:
        """The delivery this record completes (if any), and records to give up on
        (possibly other receive loops' records, each finished by its own loop)."""
        record = token.record
        self.stats["bytes_received"] += len(record.value)
        if record.header(PART_HEADER) is None:
            self.stats["received"] += 1
            delivery = Delivery(record.topic, record.key, record.value, record.headers, [token])
            return delivery, []
        self.stats["received_parts"] += 1
        try:
            part = parse_part(record.value)
            if part.index > 0 and not self.reassembler.holds(part.transfer_id):
                # Parts of one transfer share a key, so they arrive in order: a
                # transfer first seen past its first part began before this
                # subscription's start offset (handled before a restart), or was
                # given up on. Its tail cannot complete.
                logger.info(
                    "Skipped part %d/%d of transfer %s: its first part was not received "
                    "here (handled before a restart, or dropped)",
                    part.index,
                    part.count,
                    part.transfer_id,
                )
                return None, [token]
            completed, dropped = self.reassembler.add(part, token)
        except (SerializationException, CommunicationException) as exc:
            self.stats["bad_records"] += 1
            logger.error(
                "Skipped a bad part at %s[%d]@%d: %s",
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            return None, [token]
        abandoned = [t for drop in dropped for t in drop.tokens]
        for drop in dropped:
            if drop.reason == CORRUPTED:
                self.stats["bad_records"] += 1
            elif drop.reason != LATE_DUPLICATE:
                self.stats["dropped_transfers"] += 1
        if self.on_progress:
            done, _ = self.reassembler.progress(part.transfer_id)
            self.on_progress(
                "receive",
                part.transfer_id,
                part.total_size if completed else done,
                part.total_size,
            )
        if completed is None:
            return None, abandoned
        self.stats["received"] += 1
        headers = [(k, v) for k, v in record.headers if k != PART_HEADER]
        delivery = Delivery(record.topic, record.key, completed.payload, headers, completed.tokens)
        return delivery, abandoned


@dataclass(frozen=True)
class _Token:
    """A received record and the function of its receive loop that finishes it."""

    record: Record
    finish: Callable[[list[Record]], Awaitable[None]]


async def _finish_tokens(tokens: Sequence[_Token]) -> None:
    by_loop: dict[Any, list[Record]] = {}
    for token in tokens:
        by_loop.setdefault(token.finish, []).append(token.record)
    for finish, records in by_loop.items():
        await finish(records)
