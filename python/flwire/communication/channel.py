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
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flwire.communication.chunking import PART_HEADER, Reassembler, parse_part, split_payload
from flwire.communication.offsets import OffsetTracker
from flwire.communication.transport import Headers, Record, Subscription, Transport
from flwire.exceptions import CommunicationException, SerializationException

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
    _records: list[Record] = field(repr=False, default_factory=list)
    _finish: Callable[[list[Record]], Any] | None = field(repr=False, default=None)

    def header(self, name: str) -> bytes | None:
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found

    async def done(self) -> None:
        """The payload is handled: its offsets may be committed."""
        if self._finish is not None:
            finish, self._finish = self._finish, None
            await finish(self._records)


class Channel:
    """Sends and receives payloads of any size over a :class:`Transport`."""

    def __init__(
        self,
        transport: Transport,
        *,
        on_progress: ProgressCallback | None = None,
        reassembler: Reassembler | None = None,
    ) -> None:
        self.transport = transport
        self.on_progress = on_progress
        self.reassembler = reassembler or Reassembler()
        self.stats: dict[str, int] = {
            "sent": 0,
            "sent_parts": 0,
            "received": 0,
            "received_parts": 0,
            "bad_records": 0,
            "dropped_transfers": 0,
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
        view = memoryview(payload).cast("B")
        limit = self.transport.max_record_bytes
        headers = list(headers or [])
        overhead = len(key or b"") + sum(len(k) + len(v) for k, v in headers)
        if len(view) + overhead <= limit:
            await self.transport.send(topic, view, key=key, headers=headers)
            self.stats["sent"] += 1
            return
        transfer_id = transfer_id or uuid.uuid4().hex
        key = key if key is not None else transfer_id.encode()
        sent = 0
        pending: list[asyncio.Task[None]] = []
        for part, index, count in split_payload(view, transfer_id, limit - overhead):
            part_headers = [*headers, (PART_HEADER, f"{index}/{count}".encode())]
            pending.append(
                asyncio.ensure_future(
                    self.transport.send(topic, part, key=key, headers=part_headers)
                )
            )
            # Let the transport hand this part to its client before building the
            # next one, so parts enter the partition in order.
            await asyncio.sleep(0)
            sent += len(part)
            if self.on_progress:
                self.on_progress("send", transfer_id, min(sent, len(view)), len(view))
        try:
            await asyncio.gather(*pending)
        except BaseException:
            for task in pending:
                task.cancel()
            raise
        self.stats["sent"] += 1
        self.stats["sent_parts"] += len(pending)

    async def receive(self, topics: Sequence[str], group_id: str) -> AsyncIterator[Delivery]:
        """Payloads from ``topics`` for consumer group ``group_id``; call
        ``await delivery.done()`` after handling each one."""
        subscription = await self.transport.subscribe(topics, group_id)
        tracker = OffsetTracker()

        async def finish(records: list[Record]) -> None:
            await self._finish(records, tracker, subscription)

        try:
            async for record in subscription:
                tracker.seen((record.topic, record.partition), record.offset)
                delivery, abandoned = self._on_record(record, finish)
                for dropped in self.reassembler.expire():
                    self.stats["dropped_transfers"] += 1
                    abandoned.extend(dropped.tokens)
                if abandoned:  # nothing will handle these records: let the offsets move on
                    await finish(abandoned)
                if delivery is not None:
                    yield delivery
        finally:
            await subscription.close()

    def _on_record(
        self, record: Record, finish: Callable[[list[Record]], Any]
    ) -> tuple[Delivery | None, list[Record]]:
        """The delivery this record completes (if any) and records to give up on."""
        if record.header(PART_HEADER) is None:
            self.stats["received"] += 1
            delivery = Delivery(
                record.topic, record.key, record.value, record.headers, [record], finish
            )
            return delivery, []
        self.stats["received_parts"] += 1
        try:
            part = parse_part(record.value)
            completed, dropped = self.reassembler.add(part, record)
        except (SerializationException, CommunicationException) as exc:
            self.stats["bad_records"] += 1
            logger.error(
                "Skipped a bad part at %s[%d]@%d: %s",
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            return None, [record]
        abandoned = [token for drop in dropped for token in drop.tokens]
        self.stats["dropped_transfers"] += len(dropped)
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
        delivery = Delivery(
            record.topic, record.key, completed.payload, headers, list(completed.tokens), finish
        )
        return delivery, abandoned

    async def _finish(
        self, records: list[Record], tracker: OffsetTracker, subscription: Subscription
    ) -> None:
        commits: dict[tuple[str, int], int] = {}
        for rec in records:
            tp = (rec.topic, rec.partition)
            moved = tracker.finish(tp, rec.offset)
            if moved is not None:
                commits[tp] = moved
        for (topic, partition), next_offset in commits.items():
            await subscription.commit(topic, partition, next_offset)


class SeenIds:
    """Remembers the last ``capacity`` message ids, to count redeliveries once."""

    def __init__(self, capacity: int = 100_000) -> None:
        from collections import OrderedDict

        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def first_time(self, message_id: str) -> bool:
        """True the first time an id is seen, False for a repeat."""
        if message_id in self._ids:
            self._ids.move_to_end(message_id)
            return False
        self._ids[message_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True
