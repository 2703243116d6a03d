"""The Kafka transport, on confluent-kafka (librdkafka).

- Producer: idempotent (``enable.idempotence``, which implies ``acks=all``),
  no Kafka-level compression (flwire compresses tensors itself), delivery
  reports surfaced as awaitables; a failed delivery raises
  CommunicationException with the broker's reason.
- Consumer: auto-commit off, offsets committed only when the Channel says a
  record is handled (at-least-once); those commits are asynchronous, and the
  latest ones are committed synchronously on close. Each consumer polls on
  its own thread, so the blocking librdkafka calls never run on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flwire import _optional

_optional.require("confluent_kafka")  # a clear error naming the extra when it is missing

from confluent_kafka import (  # noqa: E402
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from flwire.exceptions import CommunicationException  # noqa: E402
from flwire.transport.base import (  # noqa: E402
    DEFAULT_MAX_RECORD_BYTES,
    Headers,
    Record,
    Subscription,
    Transport,
)

logger = logging.getLogger(__name__)


#: Longest single poll() on a consumer; see _KafkaSubscription._fetch.
_POLL_SLICE_S = 0.02
#: Most records one fetch hands to the event loop.
_FETCH_BATCH = 500
#: How often the producer thread serves delivery reports.
_PRODUCER_POLL_S = 0.05
#: How long stop() waits for queued records to be delivered.
_FLUSH_TIMEOUT_S = 30
#: How long stop() waits for the producer thread to end.
_POLLER_JOIN_S = 5
#: Bounds of metadata requests: listing topics, and the health check.
_METADATA_TIMEOUT_S = 10
_HEALTH_TIMEOUT_S = 3
#: Pause before producing again when librdkafka's local queue is full.
_QUEUE_FULL_BACKOFF_S = 0.05
#: Room in the producer's ``message.max.bytes`` for a record's key, headers and framing.
_RECORD_OVERHEAD = 4096
#: Records a fetch may bring per partition, in units of ``max_record_bytes``.
_FETCH_RECORDS = 16


def _reason(err: Any) -> str:
    if isinstance(err, KafkaError):
        return f"{err.name()}: {err.str()}"
    return str(err)


def _log_failed_commit(err: Any, partitions: Any) -> None:
    """librdkafka's commit callback (served by the consumer's poll)."""
    failed = [tp for tp in partitions or [] if tp.error is not None]
    if err is not None or failed:
        logger.warning(
            "Kafka offset commit failed: %s (a later commit covers it, or the records are "
            "delivered again after a restart)",
            _reason(err)
            if err is not None
            else "; ".join(
                f"{tp.topic}[{tp.partition}]@{tp.offset}: {_reason(tp.error)}" for tp in failed
            ),
        )


class _KafkaSubscription(Subscription):
    def __init__(self, config: dict[str, Any], topics: Sequence[str], poll_timeout: float) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flwire-consumer")
        self._config = {**config, "on_commit": _log_failed_commit}
        # The latest offset asked to be committed, per partition: committed
        # synchronously on close (the commits before it are asynchronous).
        self._latest: dict[tuple[str, int], int] = {}
        self._topics = list(topics)
        self._poll_timeout = poll_timeout
        self._consumer: Consumer | None = None
        self._closed = False

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def _fetch(self) -> list[Any]:
        """The records available now (up to _FETCH_BATCH), else wait up to the poll timeout
        for the first one and take what arrived with it.

        The wait is cut into short poll() slices: a batch consume() with a
        timeout waits out the whole timeout to fill its batch, and a long poll()
        delays records that arrive during it (and commit callbacks).
        """
        consumer = self._consumer
        assert consumer is not None
        batch: list[Any] = consumer.consume(_FETCH_BATCH, 0)
        if batch:
            return batch
        deadline = time.monotonic() + self._poll_timeout
        while True:
            first = consumer.poll(min(_POLL_SLICE_S, self._poll_timeout))
            if first is not None:
                return [first, *consumer.consume(_FETCH_BATCH - 1, 0)]
            if self._closed or time.monotonic() >= deadline:
                return []

    async def open(self) -> None:
        def create() -> Consumer:
            consumer = Consumer(self._config)
            consumer.subscribe(self._topics)
            return consumer

        self._consumer = await self._run(create)

    async def _records(self) -> AsyncIterator[Record]:
        assert self._consumer is not None
        while not self._closed:
            batch = await self._run(self._fetch)
            for msg in batch:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    if err.fatal():
                        raise CommunicationException(f"Kafka consumer failed: {_reason(err)}")
                    logger.warning("Kafka consumer: %s", _reason(err))
                    continue
                yield Record(
                    msg.topic(),
                    msg.partition(),
                    msg.offset(),
                    msg.key(),
                    msg.value(),
                    list(msg.headers() or []),
                )
                if self._closed:
                    return

    def __aiter__(self) -> AsyncIterator[Record]:
        return self._records()

    async def commit(self, topic: str, partition: int, next_offset: int) -> None:
        """Commit asynchronously: the request is queued and this returns at once.

        A synchronous commit waits for the group coordinator, which on a busy
        broker took over a second per message (measured by the e2e benchmark).
        At-least-once still holds: an offset whose commit fails (logged by
        _log_failed_commit) is covered by the next commit, or its records are
        delivered again after a restart and de-duplicated by message id.
        """
        assert self._consumer is not None
        self._latest[(topic, partition)] = next_offset
        try:
            self._consumer.commit(
                offsets=[TopicPartition(topic, partition, next_offset)], asynchronous=True
            )
        except KafkaException as exc:
            raise CommunicationException(
                f"could not commit {topic}[{partition}]@{next_offset}: {_reason(exc.args[0])}"
            ) from None

    def _close_consumer(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        if self._latest:
            offsets = [TopicPartition(t, p, o) for (t, p), o in self._latest.items()]
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                logger.warning(
                    "Final commit of %s failed: %s (those records will be delivered again)",
                    ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in offsets),
                    _reason(exc.args[0]),
                )
        consumer.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._consumer is not None:
            await self._run(self._close_consumer)
        self._executor.shutdown(wait=False)


class KafkaTransport(Transport):
    """Records on an Apache Kafka cluster.

    ``producer_config`` / ``consumer_config`` are merged over flwire's defaults
    (librdkafka property names).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        producer_config: dict[str, Any] | None = None,
        consumer_config: dict[str, Any] | None = None,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        num_partitions: int = 1,
        poll_timeout: float = 0.2,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.max_record_bytes = max_record_bytes
        self.num_partitions = num_partitions
        self.poll_timeout = poll_timeout
        self.producer_config = {
            "bootstrap.servers": bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "none",
            "linger.ms": 2,
            "message.max.bytes": max_record_bytes + _RECORD_OVERHEAD,
            **(producer_config or {}),
        }
        self.consumer_config = {
            "bootstrap.servers": bootstrap_servers,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            # Records are up to max_record_bytes (1 MB) each: let one fetch bring
            # many of them, not one per round trip to the broker.
            "max.partition.fetch.bytes": _FETCH_RECORDS * max_record_bytes,
            **(consumer_config or {}),
        }
        self._producer: Producer | None = None
        self._admin: AdminClient | None = None
        self._poller: threading.Thread | None = None
        self._running = False
        self._subscriptions: list[_KafkaSubscription] = []

    async def start(self) -> None:
        if self._running:
            return
        try:
            self._producer = Producer(self.producer_config)
            self._admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        except KafkaException as exc:
            raise CommunicationException(f"invalid Kafka configuration: {exc}") from None
        self._running = True
        self._poller = threading.Thread(target=self._poll, name="flwire-producer", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while self._running and self._producer is not None:
            self._producer.poll(_PRODUCER_POLL_S)

    async def stop(self) -> None:
        if not self._running:
            return
        for sub in list(self._subscriptions):
            await sub.close()
        self._subscriptions.clear()
        producer = self._producer
        if producer is not None:
            loop = asyncio.get_running_loop()
            remaining = await loop.run_in_executor(None, producer.flush, _FLUSH_TIMEOUT_S)
            if remaining:
                logger.error("%d Kafka record(s) were not delivered before stop", remaining)
        self._running = False
        if self._poller is not None:
            self._poller.join(timeout=_POLLER_JOIN_S)

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        admin = self._require(self._admin)
        loop = asyncio.get_running_loop()
        existing = await loop.run_in_executor(
            None, lambda: admin.list_topics(timeout=_METADATA_TIMEOUT_S).topics
        )
        missing = [t for t in topics if t not in existing]
        if not missing:
            return
        futures = admin.create_topics(
            [NewTopic(t, num_partitions=self.num_partitions, replication_factor=1) for t in missing]
        )
        for topic, future in futures.items():
            try:
                await asyncio.wrap_future(future)
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise CommunicationException(
                        f"could not create topic {topic!r}: {_reason(err)}"
                    ) from None

    async def send(
        self, topic: str, value: Any, *, key: bytes | None = None, headers: Headers | None = None
    ) -> None:
        producer = self._require(self._producer)
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[None] = loop.create_future()

        def on_delivery(err: Any, _msg: Any) -> None:
            def settle() -> None:
                if delivered.done():
                    return
                if err is not None:
                    delivered.set_exception(
                        CommunicationException(f"delivery to {topic!r} failed: {_reason(err)}")
                    )
                else:
                    delivered.set_result(None)

            loop.call_soon_threadsafe(settle)

        data = value if isinstance(value, bytes) else bytes(value)
        while True:
            try:
                producer.produce(topic, data, key, headers=headers or None, on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain
                await asyncio.sleep(_QUEUE_FULL_BACKOFF_S)
            except KafkaException as exc:
                raise CommunicationException(
                    f"could not send to {topic!r}: {_reason(exc.args[0])}"
                ) from None
        await delivered

    async def subscribe(self, topics: Sequence[str], group_id: str) -> Subscription:
        await self.ensure_topics(topics)
        sub = _KafkaSubscription(
            {**self.consumer_config, "group.id": group_id}, topics, self.poll_timeout
        )
        await sub.open()
        self._subscriptions.append(sub)
        return sub

    async def healthy(self) -> bool:
        admin = self._admin
        if admin is None:
            return False
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, lambda: admin.list_topics(timeout=_HEALTH_TIMEOUT_S))
        except KafkaException:
            return False
        return True

    @staticmethod
    def _require(obj: Any) -> Any:
        if obj is None:
            raise CommunicationException("Kafka transport is not started; call start() first")
        return obj
