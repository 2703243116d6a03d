"""Blocking Kafka helpers behind :class:`~flwire.transport.kafka.KafkaTransport`'s
``ensure_compacted_topic`` and ``read_topic`` (the transport runs them in an executor).

- :func:`create_compacted_topic`: a one-partition topic with
  ``cleanup.policy=compact,delete`` and a retention, if it is missing;
- :func:`read_topic`: every record of a topic from its start to its end at the
  time of the call, without joining a consumer group and without committing.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from flwire import _optional

_optional.require("confluent_kafka")  # a clear error naming the extra when it is missing

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition  # noqa: E402
from confluent_kafka.admin import (  # noqa: E402
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from flwire.exceptions import CommunicationException  # noqa: E402
from flwire.transport.base import Record  # noqa: E402
from flwire.transport.kafka_logging import (  # noqa: E402
    UNREACHABLE,
    BrokerUnreachable,
    client_logging,
    denied_reading,
    is_denied,
    reason,
)

logger = logging.getLogger(__name__)
#: Most records one consume() call returns while reading a topic back.
_READ_BATCH = 1000
#: Longest single poll() wait while reading a topic back. (A consume() with a
#: timeout waits out the whole timeout to fill its batch: 0.5 s for 200 records.)
_READ_SLICE_S = 0.05
#: Pauses before retrying a metadata request that failed with a retriable error
#: (doubling from the first to the last).
_RETRY_BACKOFF_S = 0.1
_MAX_RETRY_BACKOFF_S = 1.0


def create_compacted_topic(
    admin: AdminClient, topic: str, retention_ms: int, timeout_s: float
) -> None:
    """Create ``topic`` (one partition, ``cleanup.policy=compact,delete``,
    ``retention.ms=retention_ms``, the cluster's default replication factor) unless
    it exists. An existing topic is left as it is; a warning says so when it is not
    compacted. Raises CommunicationException when the broker refuses or does not
    answer within ``timeout_s``."""
    config = {"cleanup.policy": "compact,delete", "retention.ms": str(retention_ms)}
    fix = (
        f"create it yourself: kafka-topics.sh --create --topic {topic} --partitions 1 "
        f"--config cleanup.policy=compact,delete --config retention.ms={retention_ms}"
    )
    # replication_factor=-1: the broker's default.replication.factor (KIP-464).
    new = NewTopic(topic, num_partitions=1, replication_factor=-1, config=config)
    futures = admin.create_topics(
        [new], operation_timeout=timeout_s, request_timeout=timeout_s, validate_only=False
    )
    try:
        futures[topic].result(timeout=timeout_s + 1)
    except KafkaException as exc:
        err = exc.args[0]
        if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            _warn_unless_compacted(admin, topic, timeout_s)
            return
        if isinstance(err, KafkaError) and (err.code() in UNREACHABLE or err.retriable()):
            raise BrokerUnreachable(
                f"could not create the compacted topic {topic!r}: {reason(err)}. Check that "
                f"the broker is reachable, or {fix}"
            ) from None
        denied = isinstance(err, KafkaError) and err.code() in (
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
            KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        )
        hint = (
            "Let this client create topics (Kafka ACL: Create on the topic or the cluster), or"
            if denied
            else "Check the broker's log, or"
        )
        raise CommunicationException(
            f"could not create the compacted topic {topic!r}: {reason(err)}. {hint} {fix}"
        ) from None
    except concurrent.futures.TimeoutError:
        raise BrokerUnreachable(
            f"could not create the compacted topic {topic!r}: the broker did not answer "
            f"within {timeout_s:g} s. Check that it is reachable, or {fix}"
        ) from None
    logger.info("Created compacted topic %r (retention %d ms, 1 partition)", topic, retention_ms)


def _warn_unless_compacted(admin: AdminClient, topic: str, timeout_s: float) -> None:
    """Warn when an existing topic is not compacted (e.g. auto-created by a producer
    before the compacted one): it then keeps every record until its retention."""
    resource = ConfigResource(ResourceType.TOPIC, topic)
    try:
        entries = admin.describe_configs([resource], request_timeout=timeout_s)[resource].result(
            timeout=timeout_s + 1
        )
        policy = entries["cleanup.policy"].value
    except (KafkaException, KeyError, concurrent.futures.TimeoutError) as exc:
        logger.debug("Could not read the configuration of topic %r: %s", topic, exc)
        return
    if "compact" not in (policy or ""):
        logger.warning(
            "Topic %r exists with cleanup.policy=%s, not compacted: it keeps every record "
            "until its retention. Fix: kafka-configs.sh --alter --entity-type topics "
            "--entity-name %s --add-config cleanup.policy=[compact,delete]",
            topic,
            policy,
            topic,
        )


def read_topic(consumer_config: dict[str, Any], topic: str, timeout_s: float) -> list[Record]:
    """Every record now in ``topic``: for each partition, from its low watermark up to
    the high watermark read at the start (records written after that are left out), in
    offset order, partition after partition as they arrive. A missing topic reads as [].

    No consumer group is joined and nothing is committed: the partitions are assigned,
    not subscribed, and auto-commit is off. (confluent-kafka refuses a consumer without
    ``group.id``, so a unique throwaway one is set; it never joins nor commits.)
    librdkafka's log lines go to Python logging (``flwire.transport.kafka_admin.librdkafka``).
    Bounded by ``timeout_s`` overall: past it, raises CommunicationException naming the
    topic, the broker and the bound.
    """
    deadline = time.monotonic() + timeout_s
    servers = str(consumer_config.get("bootstrap.servers", "?"))
    config = {
        **consumer_config,
        "group.id": f"flwire.read-topic.{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        **client_logging(),
    }

    def timed_out(what: str, last: str | None) -> CommunicationException:
        return BrokerUnreachable(
            f"could not read topic {topic!r} back from the Kafka broker at {servers}: "
            f"{what} within {timeout_s:g} s" + (f" (last error: {last})" if last else "")
        )

    try:
        consumer = Consumer(config)
    except (KafkaException, ValueError) as exc:
        raise CommunicationException(f"invalid Kafka consumer configuration: {exc}") from None
    try:
        ends = _watermarks(consumer, topic, config, deadline, timed_out)
        pending = {p for p, (low, high) in ends.items() if high > low}
        if not pending:
            return []
        consumer.assign([TopicPartition(topic, p, ends[p][0]) for p in sorted(pending)])
        records: list[Record] = []
        last_error: str | None = None
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise timed_out(
                    f"read {len(records)} record(s), not up to the end of partition(s) "
                    f"{sorted(pending)}",
                    last_error,
                )
            for msg in _fetch(consumer, min(_READ_SLICE_S, remaining)):
                partition = msg.partition()
                assert partition is not None
                high = ends[partition][1]
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        offset = msg.offset()
                        if offset is not None and offset >= high:
                            pending.discard(partition)
                        continue
                    if is_denied(err):
                        raise CommunicationException(denied_reading(err, topic, config))
                    if err.fatal():
                        raise CommunicationException(
                            f"could not read topic {topic!r} back from {servers}: {reason(err)}"
                        )
                    last_error = reason(err)
                    logger.debug("Reading topic %r: %s", topic, last_error)
                    continue
                offset = msg.offset()
                assert offset is not None
                if offset < high:
                    records.append(Record.from_kafka(msg))
                if offset + 1 >= high:
                    pending.discard(partition)
        return records
    finally:
        consumer.close()


def _fetch(consumer: Consumer, timeout_s: float) -> list[Any]:
    """The records available now (up to _READ_BATCH), else the first to arrive within
    ``timeout_s`` and those that came with it."""
    batch: list[Any] = consumer.consume(_READ_BATCH, 0)
    if batch:
        return batch
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    return [first, *consumer.consume(_READ_BATCH - 1, 0)]


def _watermarks(
    consumer: Consumer,
    topic: str,
    config: dict[str, Any],
    deadline: float,
    timed_out: Callable[[str, str | None], CommunicationException],
) -> dict[int, tuple[int, int]]:
    """(low, high) watermark of each partition of ``topic``; {} when it does not exist.
    Retriable errors are retried until ``deadline``."""
    last: str | None = None
    backoff = _RETRY_BACKOFF_S
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise timed_out("no metadata", last)
        try:
            metadata = consumer.list_topics(topic, timeout=remaining).topics.get(topic)
            if metadata is None or (
                metadata.error is not None
                and metadata.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            ):
                return {}
            if metadata.error is not None:
                raise KafkaException(metadata.error)
            ends: dict[int, tuple[int, int]] = {}
            for partition in sorted(metadata.partitions):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise timed_out("no watermark offsets", last)
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=remaining
                )
                ends[partition] = (low, high)
            return ends
        except KafkaException as exc:
            err = exc.args[0]
            last = reason(err)
            retriable = isinstance(err, KafkaError) and (
                err.retriable()
                or err.code()
                in (
                    KafkaError._TRANSPORT,
                    KafkaError._TIMED_OUT,
                    KafkaError.LEADER_NOT_AVAILABLE,
                    KafkaError.NOT_LEADER_FOR_PARTITION,
                )
            )
            if is_denied(err):
                raise CommunicationException(denied_reading(err, topic, config)) from None
            if not retriable:
                raise CommunicationException(
                    f"could not read topic {topic!r} back from the Kafka broker at "
                    f"{config.get('bootstrap.servers', '?')}: {last}"
                ) from None
            time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
            backoff = min(backoff * 2, _MAX_RETRY_BACKOFF_S)
