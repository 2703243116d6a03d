"""The embedded default transport: topics in memory, in one process.

It keeps Kafka's semantics where they matter to FL code: records stay in order
per topic, each consumer group has its own committed offsets, a subscription
starts at its group's committed offset (so records not committed are delivered
again to the next subscriber), and records above ``max_record_bytes`` are
refused just as the broker refuses them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from flwire._args import require_count, type_name
from flwire.exceptions import CommunicationException
from flwire.transport.base import (
    DEFAULT_MAX_RECORD_BYTES,
    Headers,
    Record,
    Subscription,
    Transport,
)
from flwire.transport.chunking import MIN_RECORD_BYTES


@dataclass
class InMemoryBroker:
    """Shared state of in-memory transports: topics and committed offsets.

    Give the same broker to the server's and the clients' transports.
    """

    topics: dict[str, list[Record]] = field(default_factory=dict)
    committed: dict[tuple[str, str], int] = field(default_factory=dict)
    _wakeups: dict[asyncio.AbstractEventLoop, asyncio.Future[None]] = field(default_factory=dict)

    def wakeup(self) -> asyncio.Future[None]:
        """A future of the running event loop that the next append on it resolves (a
        broker may outlive one loop, e.g. across several ``asyncio.run`` calls). Take it
        before looking for records, so that an append in between is not missed."""
        loop = asyncio.get_running_loop()
        wakeup = self._wakeups.get(loop)
        if wakeup is None or wakeup.done():
            for old in [lp for lp in self._wakeups if lp.is_closed()]:
                del self._wakeups[old]
            wakeup = self._wakeups[loop] = loop.create_future()
        return wakeup

    async def append(self, topic: str, key: bytes | None, value: Any, headers: Headers) -> None:
        log = self.topics.setdefault(topic, [])
        log.append(Record(topic, 0, len(log), key, value, list(headers)))
        wakeup = self._wakeups.pop(asyncio.get_running_loop(), None)
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)


class _MemorySubscription(Subscription):
    def __init__(self, broker: InMemoryBroker, topics: Sequence[str], group_id: str) -> None:
        self._broker = broker
        self._topics = list(topics)
        self._group = group_id
        self._position = {t: broker.committed.get((group_id, t), 0) for t in topics}
        self._closed = False

    async def _next_batch(self) -> list[Record]:
        batch: list[Record] = []
        for topic in self._topics:
            log = self._broker.topics.get(topic, [])
            start = self._position[topic]
            if start < len(log):
                batch.extend(log[start:])
                self._position[topic] = len(log)
        return batch

    async def _records(self) -> AsyncIterator[Record]:
        while not self._closed:
            wakeup = self._broker.wakeup()
            batch = await self._next_batch()
            if not batch:
                # No lock is held and no task is started: asyncio.wait neither cancels
                # the shared future nor leaves anything running when this loop is
                # cancelled. (Before Python 3.12, asyncio.wait_for around Condition.wait
                # could return on a cancel before its inner task had re-acquired the lock:
                # RuntimeError('Lock is not acquired.'), then the lock held for good and
                # every other subscriber stuck; CPython gh-86766, gone with 3.12's
                # wait_for, gh-96764.)
                await asyncio.wait([wakeup], timeout=0.5)
                continue
            for record in batch:
                if self._closed:
                    return
                yield record

    def __aiter__(self) -> AsyncIterator[Record]:
        return self._records()

    async def commit(self, topic: str, partition: int, next_offset: int) -> None:
        key = (self._group, topic)
        self._broker.committed[key] = max(self._broker.committed.get(key, 0), next_offset)

    async def close(self) -> None:
        self._closed = True


class InMemoryTransport(Transport):
    """A transport whose topics live in an :class:`InMemoryBroker`."""

    def __init__(
        self,
        broker: InMemoryBroker | None = None,
        *,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
        if broker is not None and not isinstance(broker, InMemoryBroker):
            raise TypeError(
                f"broker must be an InMemoryBroker or None, got {type_name(broker)}: give "
                "the same InMemoryBroker() to every transport that shares the topics"
            )
        self.broker = broker if broker is not None else InMemoryBroker()
        self.max_record_bytes = require_count(
            max_record_bytes,
            "max_record_bytes",
            minimum=MIN_RECORD_BYTES,
            unit="bytes",
            why=(
                f"the SDK needs records of at least {MIN_RECORD_BYTES} bytes: a part of a "
                f"split message takes up to {MIN_RECORD_BYTES - 1} besides its data"
            ),
        )
        self._running = False

    async def start(self) -> None:
        self._running = True

    async def stop(self) -> None:
        self._running = False

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        for topic in topics:
            self.broker.topics.setdefault(topic, [])

    async def send(
        self, topic: str, value: Any, *, key: bytes | None = None, headers: Headers | None = None
    ) -> None:
        if not self._running:
            raise CommunicationException("in-memory transport is not started; call start() first")
        size = memoryview(value).nbytes
        if size > self.max_record_bytes:
            raise CommunicationException(
                f"record of {size} bytes for {topic!r} is above the transport's limit of "
                f"{self.max_record_bytes} bytes (send it through a Channel, which splits it)"
            )
        await self.broker.append(topic, key, bytes(value), headers or [])

    async def subscribe(self, topics: Sequence[str], group_id: str) -> Subscription:
        await self.ensure_topics(topics)
        return _MemorySubscription(self.broker, topics, group_id)

    async def ensure_compacted_topic(self, topic: str, *, retention_ms: int) -> None:
        # Nothing is compacted or expired in memory: the topic keeps every record.
        await self.ensure_topics([topic])

    async def read_topic(self, topic: str) -> list[Record]:
        return list(self.broker.topics.get(topic, []))
