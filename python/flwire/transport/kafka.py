"""The Kafka transport, on confluent-kafka (librdkafka).

- Producer: idempotent (``enable.idempotence``, which implies ``acks=all``),
  no Kafka-level compression (flwire compresses tensors itself), delivery
  reports surfaced as awaitables. A record counts as sent only when its
  delivery report carries an offset: librdkafka may report a record that was
  never written as delivered ("implicitly acked by subsequent batch success",
  offset -1) after a leader change; such a record is sent again, up to
  ``unwritten_retries`` times, then the send fails. A failed delivery raises
  CommunicationException with the broker's reason; every send ends within
  ``delivery_timeout_s`` (librdkafka's ``delivery.timeout.ms``).
- Topics: a topic is written to only once its partitions answer a
  ListOffsets request from their leader (created first if missing); a new
  topic's leader is advertised a few milliseconds before it accepts writes.
- Consumer: auto-commit off, offsets committed only when the Channel says a
  record is handled (at-least-once); those commits are asynchronous, issued
  from the consumer's own thread (a commit never waits on the event loop for
  the poll in progress), and the latest ones are committed synchronously on
  close. Each consumer polls on its own thread, so the blocking librdkafka
  calls never run on the event loop.
  ``session.timeout.ms`` is 6 s (the broker's minimum), so a member that died
  is replaced within seconds. Subscribing while the broker is down retries
  with backoff for up to ``connect_timeout_s``.
- librdkafka's own log lines and errors go to Python logging
  (``flwire.transport.kafka``), never straight to stderr.
- Security: the TLS/SASL settings (``security.protocol``, ``sasl.*``,
  ``ssl.ca.location``; see :mod:`flwire.transport.kafka_security`) come from
  ``security=``, the client configs and ``FLWIRE_KAFKA__*`` environment
  variables, and go to every client. Refused credentials fail the calls waiting
  on the broker at once (librdkafka reports them within a second, and would
  otherwise retry until the calls' timeouts), and an ACL denial fails the call
  that met it, each as a CommunicationException that says which.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from flwire import _optional

_optional.require("confluent_kafka")  # a clear error naming the extra when it is missing

from confluent_kafka import (  # noqa: E402
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec  # noqa: E402

from flwire._aio import wait_for  # noqa: E402
from flwire.exceptions import CommunicationException  # noqa: E402
from flwire.transport import kafka_admin, kafka_security  # noqa: E402
from flwire.transport.base import (  # noqa: E402
    DEFAULT_MAX_RECORD_BYTES,
    Headers,
    Record,
    Subscription,
    Transport,
)
from flwire.transport.kafka_logging import (  # noqa: E402
    UNREACHABLE,
    BrokerUnreachable,
    client_logging,
    denied_message,
    denied_reading,
    is_denied,
    is_refused,
    on_client_error,
    reason,
    refused_message,
)

logger = logging.getLogger(__name__)


#: Longest single poll() on a consumer; see _KafkaSubscription._fetch.
_POLL_SLICE_S = 0.02
#: Most records one fetch hands to the event loop.
_FETCH_BATCH = 500
#: How often the producer thread serves delivery reports.
_PRODUCER_POLL_S = 0.05
#: The producer's ``linger.ms``: 0, so that no record waits for others to join it.
DEFAULT_LINGER_MS = 0
#: How long stop() waits for queued records to be delivered.
DEFAULT_CLOSE_TIMEOUT_S = 10.0
#: How long stop() waits for the producer thread to end.
_POLLER_JOIN_S = 5
#: Bounds of metadata requests: listing topics, and the health check.
_METADATA_TIMEOUT_S = 10
_HEALTH_TIMEOUT_S = 3
#: Longest single wait of a metadata request before the transport checks whether the
#: broker refused this client (see KafkaTransport._list_topics).
_METADATA_SLICE_S = 1.0
#: Pause before producing again when librdkafka's local queue is full.
_QUEUE_FULL_BACKOFF_S = 0.05
#: Delivery report errors of records purged from the producer (by stop()).
_PURGED = (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)


def _run_each(loop: asyncio.AbstractEventLoop, calls: list[Callable[[], None]]) -> None:
    """Run one poll's delivery reports on the event loop; one that raises is
    reported as a callback of its own would be, and the others still run."""
    for call in calls:
        try:
            call()
        except Exception as exc:
            loop.call_exception_handler(
                {"message": "a Kafka delivery report's callback failed", "exception": exc}
            )


def _purge_and_report(producer: Producer) -> None:
    """Drop what the producer still holds (queued and in flight), and serve
    the delivery reports that the purge gives each record."""
    producer.purge()
    producer.poll(0)


#: Room in the producer's ``message.max.bytes`` for a record's key, headers and framing.
_RECORD_OVERHEAD = 4096
#: Records a fetch may bring per partition, in units of ``max_record_bytes``.
_FETCH_RECORDS = 16
#: librdkafka's prefetch queue per consumer, in KB (its default is 65536: 64 MiB of
#: records fetched ahead of the application). A receiver that falls behind a
#: stream holds the queue full, on top of the model it decodes: 16 MiB, one fetch
#: (16 records of 1 MB), keeps fetching ahead with room to spare. Measured with
#: the 410 MB model (benchmarks.e2e.stream trials, old and new alternating, one
#: core kept busy, 6 pairs): receiver peak memory 1.24 -> 1.17x the model, last
#: record received 0.17 -> 0.08 s after the last ack, encode start -> decoded
#: 0.91 -> 0.86 s; quiet (5 pairs), 1.24 -> 1.16x and 0.81 s both.
_QUEUED_KB = 16384
#: librdkafka's pause before the next fetch when its prefetch queue is full (see
#: the consumer config; librdkafka's default is 1000 ms).
_FETCH_QUEUE_BACKOFF_MS = 10
#: Defaults of the bounds a user may set (see KafkaTransport).
DEFAULT_DELIVERY_TIMEOUT_S = 30.0
DEFAULT_CONNECT_TIMEOUT_S = 60.0
DEFAULT_TOPIC_READY_TIMEOUT_S = 30.0
#: How often a record reported delivered without an offset is sent again.
DEFAULT_UNWRITTEN_RETRIES = 3
#: Backoff between attempts to reach the broker (doubles up to the cap).
_RETRY_BACKOFF_S = 0.5
_RETRY_BACKOFF_MAX_S = 5.0
#: Pause between readiness probes of a new topic.
_READY_PROBE_S = 0.05
#: Extra wait for a delivery report past delivery.timeout.ms (librdkafka
#: reports every record within it; this only guards against a lost report).
_REPORT_GRACE_S = 10.0
#: Settings that every client of a transport shares (see connection_config).
_SHARED_PREFIXES = ("security.", "sasl.", "ssl.", "socket.", "reconnect.", "client.")
_SHARED_KEYS = ("broker.address.family", "connections.max.idle.ms", "metadata.max.age.ms")
#: Group membership: a dead member is replaced after this long.
_SESSION_TIMEOUT_MS = 6000
_HEARTBEAT_INTERVAL_MS = 1500


_T = TypeVar("_T")


def _log_failed_commit(err: Any, partitions: Any) -> None:
    """librdkafka's commit callback (served by the consumer's poll)."""
    failed = [tp for tp in partitions or [] if tp.error is not None]
    if err is not None or failed:
        logger.warning(
            "Kafka offset commit failed: %s (a later commit covers it, or the records are "
            "delivered again after a restart)",
            reason(err)
            if err is not None
            else "; ".join(
                f"{tp.topic}[{tp.partition}]@{tp.offset}: {reason(tp.error)}" for tp in failed
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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._revoke_callbacks: list[Callable[[list[tuple[str, int]]], None]] = []

    def on_revoke(self, callback: Callable[[list[tuple[str, int]]], None]) -> None:
        self._revoke_callbacks.append(callback)

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """librdkafka's revoke callback (in the consumer's thread, inside poll):
        commit what is handled of those partitions while they are still ours,
        then tell the receive loops."""
        lost = [(tp.topic, tp.partition) for tp in partitions]
        offsets = [
            TopicPartition(t, p, self._latest.pop((t, p)))
            for t, p in lost
            if (t, p) in self._latest
        ]
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                logger.warning("Commit on rebalance failed: %s", reason(exc.args[0]))
        self._tell_revoked(lost)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """librdkafka's lost callback: the partitions are already someone else's
        (this member's session expired), so nothing may be committed for them."""
        lost = [(tp.topic, tp.partition) for tp in partitions]
        for tp in lost:
            self._latest.pop(tp, None)
        self._tell_revoked(lost)

    def _tell_revoked(self, lost: list[tuple[str, int]]) -> None:
        if not lost:
            return
        names = ", ".join(f"{t}[{p}]" for t, p in lost)
        logger.info("The Kafka group took %s from this consumer", names)
        if self._loop is not None:
            for callback in self._revoke_callbacks:
                self._loop.call_soon_threadsafe(callback, lost)

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
        self._loop = asyncio.get_running_loop()

        def create() -> Consumer:
            consumer = Consumer(self._config)
            consumer.subscribe(self._topics, on_revoke=self._revoked, on_lost=self._lost)
            return consumer

        self._consumer = await self._run(create)

    async def _records(self) -> AsyncIterator[Record]:
        assert self._consumer is not None
        while not self._closed:
            batch = await self._run(self._fetch)
            # Taken from the end of a reversed list, so that a record handled is no
            # longer held by the batch: a batch can be tens of MB of 1 MB records.
            batch.reverse()
            while batch:
                msg = batch.pop()
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    if is_denied(err):
                        raise CommunicationException(
                            denied_reading(err, ", ".join(self._topics), self._config)
                        )
                    if is_refused(err):
                        raise CommunicationException(
                            refused_message(err, self._servers, self._config)
                        )
                    if err.fatal():
                        raise CommunicationException(f"Kafka consumer failed: {reason(err)}")
                    logger.warning("Kafka consumer: %s", reason(err))
                    continue
                yield Record.from_kafka(msg)
                if self._closed:
                    return

    def __aiter__(self) -> AsyncIterator[Record]:
        return self._records()

    @property
    def _servers(self) -> str:
        return str(self._config.get("bootstrap.servers", "?"))

    async def commit(self, topic: str, partition: int, next_offset: int) -> None:
        """Queue the commit on the consumer's own thread and return at once.

        confluent-kafka serialises the calls on one Consumer, so a commit made on
        the event loop's thread waited for the poll in progress (up to the poll
        timeout: 200 ms per ``Delivery.done()``, a whole FL round's steps). The
        consumer's thread issues it between polls, asynchronously: a synchronous
        commit waits for the group coordinator, over a second per message on a
        busy broker. At-least-once still holds: an offset whose commit fails
        (logged by _log_failed_commit) is covered by the next commit, the latest
        offsets are committed synchronously on close, and otherwise the records
        are delivered again after a restart and de-duplicated by message id.
        """
        assert self._consumer is not None
        self._latest[(topic, partition)] = next_offset
        self._executor.submit(self._commit_queued, topic, partition, next_offset)

    def _commit_queued(self, topic: str, partition: int, next_offset: int) -> None:
        """In the consumer's thread: hand one commit to librdkafka."""
        consumer = self._consumer
        if consumer is None or self._closed:
            return  # the final commit on close covers it
        try:
            consumer.commit(
                offsets=[TopicPartition(topic, partition, next_offset)], asynchronous=True
            )
        except KafkaException as exc:
            logger.warning(
                "Could not commit %s[%d]@%d: %s (a later commit covers it, or the records "
                "are delivered again)",
                topic,
                partition,
                next_offset,
                reason(exc.args[0]),
            )

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
                    reason(exc.args[0]),
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
    (librdkafka property names); a setting given there wins over the keyword
    arguments below.

    Bounds (seconds):

    - ``delivery_timeout_s``: a send fails with CommunicationException when its
      record is not acknowledged within this time (librdkafka's
      ``delivery.timeout.ms``; default 30 s).
    - ``connect_timeout_s``: how long creating topics and subscribing retry
      while the broker does not answer (default 60 s).
    - ``topic_ready_timeout_s``: how long a new topic may take to accept
      writes (default 30 s).
    - ``unwritten_retries``: how often a record reported delivered without an
      offset (so not written) is sent again before the send fails (default 3).
    - ``close_timeout_s``: how long ``stop()`` waits for queued records to be
      delivered and for consumers to commit and leave their group (default
      10 s); records still queued then are counted in an ERROR log line.

    Security (TLS, SASL): ``security`` holds librdkafka's ``security.protocol``,
    ``sasl.mechanisms``, ``sasl.username``, ``sasl.password`` and
    ``ssl.ca.location`` (underscored names are accepted too); the same keys in
    ``producer_config``/``consumer_config`` win over it, and the environment
    (``FLWIRE_KAFKA__SASL_PASSWORD`` ...; ``environ``, default ``os.environ``)
    wins over both. Every client gets the result (:meth:`connection_config`).
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
        delivery_timeout_s: float = DEFAULT_DELIVERY_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        topic_ready_timeout_s: float = DEFAULT_TOPIC_READY_TIMEOUT_S,
        unwritten_retries: int = DEFAULT_UNWRITTEN_RETRIES,
        close_timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S,
        security: dict[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.max_record_bytes = max_record_bytes
        self.num_partitions = num_partitions
        self.poll_timeout = poll_timeout
        self.connect_timeout_s = connect_timeout_s
        self.topic_ready_timeout_s = topic_ready_timeout_s
        self.unwritten_retries = max(0, unwritten_retries)
        self.close_timeout_s = close_timeout_s
        secured = {
            **kafka_security.security_settings(security, {}),
            **(producer_config or {}),
            **(consumer_config or {}),
        }
        overrides = kafka_security.security_settings(secured, environ)
        kafka_security.check(overrides)
        self.producer_config = {
            "bootstrap.servers": bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "none",
            # A record is sent as soon as it is queued. Parts of 1 MB fill a batch
            # each, so lingering only delays the last part, a small message and the
            # handled id's record that a done delivery's commit waits for (measured:
            # a send awaited 2.8 ms with 2 ms against 0.5 ms with 0; see
            # DEFAULT_LINGER_MS).
            "linger.ms": DEFAULT_LINGER_MS,
            "message.max.bytes": max_record_bytes + _RECORD_OVERHEAD,
            "delivery.timeout.ms": int(delivery_timeout_s * 1000),
            **(producer_config or {}),
            **overrides,
        }
        timeout_ms = self.producer_config.get(
            "message.timeout.ms", self.producer_config["delivery.timeout.ms"]
        )
        self.delivery_timeout_s = float(timeout_ms) / 1000
        self.consumer_config = {
            "bootstrap.servers": bootstrap_servers,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            # Records are up to max_record_bytes (1 MB) each: let one fetch bring
            # many of them, not one per round trip to the broker.
            "max.partition.fetch.bytes": _FETCH_RECORDS * max_record_bytes,
            # When the prefetch queue is over its threshold, librdkafka postpones the
            # next fetch by this much (default 1000 ms): with 1 MB parts the queue
            # passes the threshold while a transfer is still coming, and the receiver
            # then waits out a second. Measured (python -m benchmarks.e2e --no-big
            # --rounds 5 --clients 8, four pairs, 2 cores, load 5-8): medians of the
            # 8-client round 460, 426, 623, 376 ms with 10 ms against 526, 571, 497,
            # 545 ms with 1000 ms; paired ratio 0.81 (0.69-1.25).
            "fetch.queue.backoff.ms": _FETCH_QUEUE_BACKOFF_MS,
            # librdkafka's default prefetch (64 MiB) is memory beside the model
            # for a receiver that falls behind; see _QUEUED_KB.
            "queued.max.messages.kbytes": _QUEUED_KB,
            "session.timeout.ms": _SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": _HEARTBEAT_INTERVAL_MS,
            **(consumer_config or {}),
            **overrides,
        }
        self._producer: Producer | None = None
        self._admin: AdminClient | None = None
        self._poller: threading.Thread | None = None
        self._running = False
        self._stopping = False
        self._subscriptions: list[_KafkaSubscription] = []
        # Topics known to accept writes (created if needed and probed).
        self._ready_topics: set[str] = set()
        self._produce_order = asyncio.Lock()
        # The broker's refusal of this client's credentials (or TLS), reported by a
        # client's error callback; once set, calls waiting on the broker fail.
        self._refusal: KafkaError | None = None
        self._refused = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Delivery reports awaited by sends (failed at once on a refusal).
        self._awaiting_reports: set[asyncio.Future[int]] = set()
        # The poll thread's reports of its current poll, and the thread.
        self._reports: list[Callable[[], None]] = []
        self._poller_ident: int | None = None

    def __repr__(self) -> str:
        who = kafka_security.describe(self.connection_config())
        return f"KafkaTransport({self.bootstrap_servers!r}, {who})"

    def _on_error(self, err: KafkaError) -> None:
        """The error callback of the producer and the consumers (librdkafka's threads)."""
        on_client_error(err)
        if is_refused(err) and self._refusal is None:
            self._refusal = err
            if threading.get_ident() == self._poller_ident:
                # Served by the poll thread's poll(): handed over after that poll's
                # delivery reports, so that a record reported written counts as sent.
                self._reports.append(self._on_refused)
            elif self._loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop was closed
                    self._loop.call_soon_threadsafe(self._on_refused)

    def _on_refused(self) -> None:
        """On the event loop: the broker refused this client; calls waiting on
        the broker fail, delivery reports awaited included."""
        self._refused.set()
        for delivered in self._awaiting_reports:
            if not delivered.done():
                delivered.set_exception(self._refused_error())

    def _protocol(self) -> str:
        return str(self.connection_config().get("security.protocol", "PLAINTEXT")).upper()

    def _refused_error(self) -> CommunicationException:
        return CommunicationException(
            refused_message(self._refusal, self.bootstrap_servers, self.connection_config())
        )

    async def _unless_refused(self, awaitable: Awaitable[_T]) -> _T:
        """``await awaitable``, unless the broker refuses this client first: then
        it is cancelled and CommunicationException says why."""
        if self._refusal is not None:
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            raise self._refused_error()
        task = asyncio.ensure_future(awaitable)
        refused = asyncio.ensure_future(self._refused.wait())
        try:
            await asyncio.wait({task, refused}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            refused.cancel()
            if not task.done():
                task.cancel()
        if task.done() and not task.cancelled():
            return task.result()
        raise self._refused_error()

    async def start(self) -> None:
        if self._running:
            return
        self._loop = asyncio.get_running_loop()
        self._produce_order = asyncio.Lock()
        self._refused = asyncio.Event()
        if self._refusal is not None:
            self._refused.set()
        try:
            self._producer = Producer(
                {**self.producer_config, **client_logging(), "error_cb": self._on_error}
            )
            self._admin = AdminClient({**self.connection_config(), **client_logging(errors=False)})
        except KafkaException as exc:
            raise CommunicationException(f"invalid Kafka configuration: {exc}") from None
        self._running = True
        self._stopping = False
        self._poller = threading.Thread(target=self._poll, name="flwire-producer", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        """The producer's poll thread: serves delivery reports, and hands each
        poll's reports to the event loop in one call. With a wake-up of the loop
        per report and three tasks per send, a record cost 91 us of CPU; 47 us
        now (3,000 records of 100 bytes, 64 in flight)."""
        self._poller_ident = threading.get_ident()
        loop = self._loop
        assert loop is not None
        try:
            while self._running and self._producer is not None:
                self._producer.poll(_PRODUCER_POLL_S)
                if self._reports:
                    reports, self._reports = self._reports, []
                    try:
                        loop.call_soon_threadsafe(_run_each, loop, reports)
                    except RuntimeError:  # the loop was closed without stop(): no one waits
                        return
        finally:
            # Thread idents are reused: a later flush() thread must not pass for this one.
            self._poller_ident = None

    def connection_config(self) -> dict[str, Any]:
        """The settings every client of this transport shares (the admin client
        gets these too): bootstrap servers, security (``security.protocol``,
        ``sasl.*``, ``ssl.*``), ``client.id``, sockets and reconnects, taken from
        ``producer_config`` and ``consumer_config``."""
        shared: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        for config in (self.consumer_config, self.producer_config):
            for key, value in config.items():
                if key.startswith(_SHARED_PREFIXES) or key in _SHARED_KEYS:
                    shared[key] = value
        return shared

    async def stop(self) -> None:
        """Close the consumers (a final commit each) and deliver what is queued,
        for at most ``close_timeout_s`` in all."""
        if not self._running:
            return
        deadline = time.monotonic() + self.close_timeout_s
        for sub in list(self._subscriptions):
            try:
                await wait_for(sub.close(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                logger.error(
                    "A Kafka consumer did not close within close_timeout_s (%.0f s); its "
                    "latest handled offsets may not be committed (they are delivered again)",
                    self.close_timeout_s,
                )
        self._subscriptions.clear()
        producer = self._producer
        # From here on a send fails at once: what is queued is delivered below, and
        # the poll thread that serves delivery reports ends after.
        self._stopping = True
        if producer is not None:
            loop = asyncio.get_running_loop()
            left = max(0.0, deadline - time.monotonic())
            if self._refusal is not None:
                # The broker refused this client: nothing queued can be delivered,
                # and the sends already failed; do not wait out close_timeout_s.
                queued = len(producer)
                producer.purge()
                left = 0.0
                if queued:
                    logger.warning(
                        "%d Kafka record(s) dropped on stop(): the broker refused this client",
                        queued,
                    )
            remaining = await loop.run_in_executor(None, producer.flush, left)
            if remaining:
                logger.error(
                    "%d Kafka record(s) were not delivered within close_timeout_s (%.0f s) "
                    "of stop(); their sends fail",
                    remaining,
                    self.close_timeout_s,
                )
                # Their sends fail now, each with the cause, rather than when their
                # own delivery_timeout_s runs out: purged records get a report each.
                await loop.run_in_executor(None, _purge_and_report, producer)
        self._running = False
        if self._poller is not None:
            self._poller.join(timeout=_POLLER_JOIN_S)

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create the topics that do not exist, and return once every partition of
        each accepts writes. Retries while the broker does not answer, for up to
        ``connect_timeout_s``; then raises CommunicationException."""
        await self._ensure(topics, self.connect_timeout_s, "connect_timeout_s")

    async def _ensure(self, topics: Sequence[str], bound_s: float, bound_name: str) -> None:
        wanted = [t for t in dict.fromkeys(topics) if t not in self._ready_topics]
        if not wanted:
            return
        await self._retrying(
            f"preparing topic(s) {', '.join(wanted)}",
            bound_s,
            bound_name,
            lambda deadline: self._create_and_probe(wanted, deadline),
        )
        self._ready_topics.update(wanted)

    async def _retrying(
        self,
        what: str,
        bound_s: float,
        bound_name: str,
        attempt: Callable[[float], Awaitable[_T]],
    ) -> _T:
        """``await attempt(deadline)``, again with backoff (0.5 s doubling to 5 s, each
        retry logged) while it raises BrokerUnreachable, for up to ``bound_s``."""
        deadline = time.monotonic() + bound_s
        backoff = _RETRY_BACKOFF_S
        tries = 1
        while True:
            try:
                return await self._unless_refused(attempt(deadline))
            except BrokerUnreachable as exc:
                if self._refusal is not None:
                    raise self._refused_error() from None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CommunicationException(
                        f"{what}: Kafka at {self.bootstrap_servers} did not answer for "
                        f"{bound_s:.0f} s ({exc}); start the broker or check "
                        f"bootstrap_servers, and that the listener speaks this client's "
                        f"security.protocol ({self._protocol()}), or raise {bound_name}"
                    ) from None
                logger.warning(
                    "%s: Kafka at %s is unreachable (%s); attempt %d, retrying in %.1f s "
                    "(%.0f s left)",
                    what,
                    self.bootstrap_servers,
                    exc,
                    tries,
                    min(backoff, left),
                    left,
                )
                await self._unless_refused(asyncio.sleep(min(backoff, left)))
                backoff = min(backoff * 2, _RETRY_BACKOFF_MAX_S)
                tries += 1

    async def _create_and_probe(self, topics: list[str], deadline: float) -> None:
        admin = self._require(self._admin)
        loop = asyncio.get_running_loop()
        timeout = max(0.5, min(_METADATA_TIMEOUT_S, deadline - time.monotonic()))
        try:
            existing = await loop.run_in_executor(None, self._list_topics, admin, timeout)
        except KafkaException as exc:
            raise BrokerUnreachable(reason(exc.args[0])) from None
        missing = [t for t in topics if t not in existing]
        if missing:
            futures = admin.create_topics(
                [
                    NewTopic(t, num_partitions=self.num_partitions, replication_factor=1)
                    for t in missing
                ],
                request_timeout=timeout,
            )
            for topic, future in futures.items():
                try:
                    await asyncio.wrap_future(future)
                except KafkaException as exc:
                    err = exc.args[0]
                    if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                        continue
                    if err.retriable() or err.code() in UNREACHABLE:
                        raise BrokerUnreachable(reason(err)) from None
                    if is_denied(err):
                        raise CommunicationException(
                            denied_message(err, "create topic", topic, self.connection_config())
                            + " (it does not exist, or this user may not see it)"
                        ) from None
                    raise CommunicationException(
                        f"could not create topic {topic!r}: {reason(err)}"
                    ) from None
        await self._wait_writable(topics)

    def _list_topics(self, admin: AdminClient, timeout: float) -> dict[str, Any]:
        """The cluster's topics, asked for ``timeout`` in all but in slices of at most
        _METADATA_SLICE_S while the broker does not answer: a refusal of this
        client ends the wait after the current slice (the call that waits on it
        has failed already; this thread would otherwise hold up the executor's
        shutdown, e.g. the end of ``asyncio.run``, for the rest of ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                topics: dict[str, Any] = admin.list_topics(
                    timeout=max(0.1, min(_METADATA_SLICE_S, left))
                ).topics
                return topics
            except KafkaException as exc:
                err = exc.args[0]
                unanswered = isinstance(err, KafkaError) and err.code() in UNREACHABLE
                if not unanswered or self._refusal is not None or left <= _METADATA_SLICE_S:
                    raise

    async def _wait_writable(self, topics: list[str]) -> None:
        """Wait until every partition of ``topics`` answers ListOffsets from its
        leader: the broker advertises a new partition's leader a few milliseconds
        before that leader has created it, and records produced in between are
        refused (and may be reported as delivered; see send)."""
        admin = self._require(self._admin)
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.topic_ready_timeout_s
        pending = set(topics)
        last_error = ""
        while pending:
            for topic in sorted(pending):
                try:
                    await loop.run_in_executor(None, self._probe_topic, admin, topic)
                    pending.discard(topic)
                except KafkaException as exc:
                    err = exc.args[0]
                    if isinstance(err, KafkaError) and err.code() in UNREACHABLE:
                        raise BrokerUnreachable(reason(err)) from None
                    if is_denied(err):
                        raise CommunicationException(
                            denied_message(err, "describe topic", topic, self.connection_config())
                        ) from None
                    last_error = reason(err)
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise CommunicationException(
                    f"topic(s) {', '.join(sorted(pending))} did not accept writes within "
                    f"{self.topic_ready_timeout_s:.0f} s (last error: {last_error}); check the "
                    "broker's log, or raise topic_ready_timeout_s"
                )
            await asyncio.sleep(_READY_PROBE_S)

    def _probe_topic(self, admin: AdminClient, topic: str) -> None:
        metadata = admin.list_topics(topic, timeout=_METADATA_TIMEOUT_S).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise KafkaException(
                metadata.error
                if metadata is not None and metadata.error is not None
                else KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
            )
        specs = {TopicPartition(topic, p): OffsetSpec.latest() for p in metadata.partitions}
        for future in admin.list_offsets(specs, request_timeout=_METADATA_TIMEOUT_S).values():
            future.result()

    async def send(
        self, topic: str, value: Any, *, key: bytes | None = None, headers: Headers | None = None
    ) -> None:
        """Send one record; return once the broker has written it (its delivery
        report carries an offset). Raises CommunicationException when it is not
        written within ``delivery_timeout_s`` (per attempt)."""
        producer = self._require(self._producer if self._running else None)
        data = value if isinstance(value, bytes) else bytes(value)
        for attempt in range(self.unwritten_retries + 1):
            # Records enter the producer in the order their sends were called: a
            # send waiting for its topic's check, or for room in a full queue,
            # holds back the sends made after it (asyncio.Lock is FIFO). A streamed
            # transfer's parts must reach their partition in order.
            async with self._produce_order:
                if topic not in self._ready_topics:
                    # Held to the send's own bound: a send ends within
                    # delivery_timeout_s of its topic being known writable, and a
                    # topic check within it too.
                    await self._ensure([topic], self.delivery_timeout_s, "delivery_timeout_s")
                if self._stopping:
                    # stop() is delivering what is queued, and the poll thread ends
                    # after: a record produced now would wait out its report's bound.
                    raise CommunicationException(
                        f"a record to {topic!r} was not sent: the transport is stopping "
                        "(stop() was called); send it again after start()"
                    )
                delivered, deadline = await self._enqueue(producer, topic, data, key, headers)
            offset = await self._delivered(topic, delivered, deadline)
            if offset >= 0:
                return
            logger.warning(
                "Kafka reported a record to %r as delivered without an offset (not written, "
                "e.g. after a leader change); sending it again (attempt %d of %d)",
                topic,
                attempt + 2,
                self.unwritten_retries + 1,
            )
        raise CommunicationException(
            f"a record to {topic!r} was reported delivered without an offset "
            f"{self.unwritten_retries + 1} times, so it was never confirmed written; check the "
            "broker's health (leader changes, restarts), then send again"
        )

    async def _enqueue(
        self, producer: Producer, topic: str, data: bytes, key: bytes | None, headers: Any
    ) -> tuple[asyncio.Future[int], float]:
        """Hand one record to the producer (waiting while its queue is full); the
        future of its delivery report's offset (negative: not written), and the
        deadline of the wait."""
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[int] = loop.create_future()

        def on_delivery(err: Any, msg: Any) -> None:
            offset = msg.offset() if err is None else None

            def settle() -> None:
                if delivered.done():
                    return
                if err is not None and err.code() in _PURGED:
                    delivered.set_exception(
                        CommunicationException(
                            f"a record to {topic!r} was not written: the transport was stopped "
                            f"first (stop() waits close_timeout_s = {self.close_timeout_s:g} s "
                            "for queued records; send it again after start())"
                        )
                    )
                elif err is not None and is_denied(err):
                    delivered.set_exception(
                        CommunicationException(
                            denied_message(err, "write topic", topic, self.connection_config())
                        )
                    )
                elif err is not None:
                    delivered.set_exception(
                        CommunicationException(
                            f"delivery to {topic!r} at {self.bootstrap_servers} failed: "
                            f"{reason(err)} (bound: delivery_timeout_s = "
                            f"{self.delivery_timeout_s:g} s; is the broker up?)"
                        )
                    )
                else:
                    delivered.set_result(-1 if offset is None else int(offset))

            if threading.get_ident() == self._poller_ident:
                # Inside the poll thread's poll(): handed to the loop with the other
                # reports of that poll, in one wake-up (see _poll).
                self._reports.append(settle)
            else:  # flush() on stop(), on an executor thread
                loop.call_soon_threadsafe(settle)

        deadline = time.monotonic() + self.delivery_timeout_s
        while True:
            try:
                producer.produce(topic, data, key, headers=headers or None, on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain
                if time.monotonic() >= deadline:
                    raise CommunicationException(
                        f"could not send to {topic!r}: the producer's queue stayed full for "
                        f"{self.delivery_timeout_s:.0f} s (is the broker reachable?)"
                    ) from None
                await asyncio.sleep(_QUEUE_FULL_BACKOFF_S)
            except KafkaException as exc:
                raise CommunicationException(
                    f"could not send to {topic!r}: {reason(exc.args[0])}"
                ) from None
        return delivered, deadline

    async def _delivered(self, topic: str, delivered: asyncio.Future[int], deadline: float) -> int:
        """The offset of a record's delivery report, within its deadline; fails
        at once when the broker refuses this client meanwhile (``_on_refused``).
        The report's future is awaited itself, with one timer: no task per record."""
        if self._refusal is not None:
            raise self._refused_error()
        left = deadline - time.monotonic() + _REPORT_GRACE_S

        def time_out() -> None:
            if not delivered.done():
                delivered.set_exception(
                    CommunicationException(
                        f"no delivery report for a record to {topic!r} within "
                        f"{self.delivery_timeout_s + _REPORT_GRACE_S:.0f} s"
                    )
                )

        timer = asyncio.get_running_loop().call_later(max(left, _REPORT_GRACE_S), time_out)
        self._awaiting_reports.add(delivered)
        try:
            return await delivered
        finally:
            timer.cancel()
            self._awaiting_reports.discard(delivered)

    async def subscribe(self, topics: Sequence[str], group_id: str) -> Subscription:
        self._require(self._producer if self._running else None)
        await self.ensure_topics(topics)
        sub = _KafkaSubscription(
            {
                **self.consumer_config,
                "group.id": group_id,
                **client_logging(),
                "error_cb": self._on_error,
            },
            topics,
            self.poll_timeout,
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

    async def ensure_compacted_topic(self, topic: str, *, retention_ms: int) -> None:
        """Create ``topic`` with ``cleanup.policy=compact,delete``, ``retention.ms`` and
        one partition, unless it exists (see :mod:`flwire.transport.kafka_admin`).
        Retries while the broker does not answer, for up to ``connect_timeout_s``."""
        admin = self._require(self._admin)
        loop = asyncio.get_running_loop()

        async def attempt(deadline: float) -> None:
            timeout = max(0.5, min(_METADATA_TIMEOUT_S, deadline - time.monotonic()))
            await loop.run_in_executor(
                None, kafka_admin.create_compacted_topic, admin, topic, retention_ms, timeout
            )

        await self._retrying(
            f"creating topic {topic!r}", self.connect_timeout_s, "connect_timeout_s", attempt
        )

    async def read_topic(self, topic: str) -> list[Record]:
        """Every record now in ``topic``, read without a consumer group or commits
        (see :mod:`flwire.transport.kafka_admin`). Retries while the broker does not
        answer, for up to ``connect_timeout_s``."""
        loop = asyncio.get_running_loop()
        config = dict(self.consumer_config)

        async def attempt(deadline: float) -> list[Record]:
            timeout = max(0.5, min(_METADATA_TIMEOUT_S * 3, deadline - time.monotonic()))
            records: list[Record] = await loop.run_in_executor(
                None, kafka_admin.read_topic, config, topic, timeout
            )
            return records

        return await self._retrying(
            f"reading topic {topic!r} back", self.connect_timeout_s, "connect_timeout_s", attempt
        )

    @staticmethod
    def _require(obj: Any) -> Any:
        if obj is None:
            raise CommunicationException(
                "Kafka transport is not started (or was stopped); call start() first"
            )
        return obj
