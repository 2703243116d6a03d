"""The transport interface: send bytes with a key and headers; receive records
as an async iterator; commit what has been handled.

Two implementations share it: :class:`~flwire.transport.memory.InMemoryTransport`
(the embedded default, one process) and
:class:`~flwire.transport.kafka.KafkaTransport` (confluent-kafka).
Both give at-least-once delivery: a record whose offset was not committed is
delivered again to the next consumer of the same group.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flwire.exceptions import CommunicationException

Headers = list[tuple[str, bytes]]

#: Kafka's default limit is 1,000,000 bytes per record on the producer side and
#: 1,048,588 per batch on the broker; a record carries this much payload plus
#: key, headers and framing.
DEFAULT_MAX_RECORD_BYTES = 1_000_000


@dataclass(frozen=True)
class Record:
    """One received record. ``value`` may be a view on the transport's buffer."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: Any
    headers: Headers = field(default_factory=list)

    def header(self, name: str) -> bytes | None:
        """The last value of a header, or None."""
        return last_header(self.headers, name)

    @classmethod
    def from_kafka(cls, msg: Any) -> Record:
        """The record of a confluent-kafka ``Message`` without an error."""
        return cls(
            msg.topic(),
            msg.partition(),
            msg.offset(),
            msg.key(),
            msg.value(),
            list(msg.headers() or []),
        )


def last_header(headers: Headers, name: str) -> bytes | None:
    """The last value of header ``name`` (Kafka allows repeats), or None."""
    found = None
    for key, value in headers:
        if key == name:
            found = value
    return found


class Subscription(abc.ABC):
    """Records of some topics for one consumer group, in partition order."""

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[Record]: ...

    @abc.abstractmethod
    async def commit(self, topic: str, partition: int, next_offset: int) -> None:
        """Record that every offset below ``next_offset`` has been handled."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop receiving; uncommitted records will be delivered again."""

    def on_revoke(self, callback: Callable[[list[tuple[str, int]]], None]) -> None:
        """Have ``callback(partitions)`` called, on the event loop, when the consumer
        group takes ``(topic, partition)``s away from this consumer (a rebalance).
        Records of those partitions that are still being handled must then not
        move their commit point. The default never calls it: a transport whose
        consumers always keep their partitions."""
        del callback


class Transport(abc.ABC):
    """Moves records between the server and the clients."""

    #: Largest record value the transport accepts (bytes).
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create the topics that do not exist yet."""

    @abc.abstractmethod
    async def send(
        self, topic: str, value: Any, *, key: bytes | None = None, headers: Headers | None = None
    ) -> None:
        """Send one record; return once the transport has acknowledged it."""

    @abc.abstractmethod
    async def subscribe(self, topics: Sequence[str], group_id: str) -> Subscription:
        """Start consuming ``topics`` as member of ``group_id`` (from its committed offsets)."""

    async def healthy(self) -> bool:
        """Whether the transport can reach its backend now."""
        return True

    async def ensure_compacted_topic(self, topic: str, *, retention_ms: int) -> None:
        """Create a log-compacted topic if it does not exist yet.

        On Kafka: one partition, ``cleanup.policy=compact,delete`` and
        ``retention.ms=retention_ms`` (only the newest record per key is kept, and
        records older than the retention go too). This default creates a plain
        topic, for transports without compaction.
        """
        await self.ensure_topics([topic])

    async def read_topic(self, topic: str) -> list[Record]:
        """Every record now in ``topic`` (all partitions), from its start to its end
        at the time of the call, read without a consumer group and without commits."""
        raise CommunicationException(
            f"{type(self).__name__} cannot read topic {topic!r} back, so de-duplication "
            "across restarts (flwire.transport.SeenLog) is not available on this transport"
        )
