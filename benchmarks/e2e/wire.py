"""What the end-to-end benchmark's server (``__main__``) and its client processes
(``client``) share: the plain confluent-kafka producer and consumer of the old path, flwire's
transport, the stand-in for training, the clock, the log line and the error for a person.

The old messages are those of ``benchmarks.legacy`` (JSON with base64(gzip-9(pickle))
weights, UTF-8 encoded as the old producer's ``value_serializer`` did), one Kafka record per
message. Unpickling happens only in ``benchmarks.legacy`` and only of bytes this benchmark
produced itself, on a private broker it started itself.

Clock: ``time.monotonic()`` is CLOCK_MONOTONIC on Linux, one clock for every process of the
machine, so a timestamp taken by a client and one taken by the server can be subtracted.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from benchmarks import models
from benchmarks.models import StateDict
from flwire.transport.kafka import KafkaTransport

logger = logging.getLogger("e2e")

#: The record limit of the benchmark's broker and of the old path's producer, raised as far as
#: the broker goes: Kafka 4.4 never answers a produce request above 256 MiB (probed on this
#: broker: a record of 256 MiB - 200 kB is stored, one of 256 MiB + 200 kB gets no reply and
#: an error in the broker's log), so larger old messages are refused by the producer, at once.
LEGACY_RECORD_LIMIT = 255 * 2**20
#: Round id of the one big-model transfer (scenario B), apart from the FL rounds.
BIG_ROUND = 1_000_000
#: What a client adds to every weight: a stand-in for local training (no training here).
PERTURBATION = 1e-3


class BenchError(Exception):
    """A failure explained for a person; printed without a traceback."""


def log(msg: str) -> None:
    """A progress line of the server on stderr (the tables go to stdout)."""
    print(f"[e2e] {msg}", file=sys.stderr, flush=True)


def clock() -> float:
    """Seconds on the machine-wide monotonic clock (comparable across processes)."""
    return time.monotonic()


def perturb(state: StateDict) -> StateDict:
    """A client's 'trained' weights: a fresh copy of the global ones, each value moved."""
    return {k: v + PERTURBATION if v.is_floating_point() else v.clone() for k, v in state.items()}


def big_model(size: str) -> StateDict:
    """Scenario B's model: ``full`` ~100M float32 parameters, ``quick`` ~10M (seeded)."""
    return models.big_model(quick=size != "full")


def flwire_transport(bootstrap: str, options: dict[str, Any] | None = None) -> KafkaTransport:
    """flwire's Kafka transport with the SDK's defaults (1 MB records, idempotent producer);
    ``options`` may add extra ``consumer`` properties (librdkafka names) to try a tuning."""
    options = options or {}
    return KafkaTransport(
        bootstrap,
        consumer_config={
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
            **options.get("consumer", {}),
        },
    )


# ----------------------------------------------------------------------------- old path


class RecordTooLarge(Exception):
    """The old path's one record is above what Kafka can take."""


class LegacyProducer:
    """A plain confluent-kafka producer, as the old path had: one record per message,
    no compression, acks=all (librdkafka's default), record limit raised."""

    def __init__(self, bootstrap: str) -> None:
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "compression.type": "none",
                "linger.ms": 2,
                "message.max.bytes": LEGACY_RECORD_LIMIT,
            }
        )
        self._errors: list[str] = []

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self._errors.append(f"{err.name()}: {err.str()}")

    def send(self, topic: str, value: bytes, key: str) -> None:
        """Send one record and wait until the broker has acknowledged it; RecordTooLarge
        when the producer refuses it for its size."""
        try:
            self._producer.produce(topic, value, key.encode(), on_delivery=self._on_delivery)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                raise RecordTooLarge(
                    f"{err.name()}: a {len(value) / 1e6:.0f} MB record, above the record "
                    f"limit of {LEGACY_RECORD_LIMIT / 2**20:.0f} MiB"
                ) from None
            raise
        remaining = self._producer.flush(300)
        if self._errors or remaining:
            errors, self._errors = self._errors, []
            raise RuntimeError(
                f"old path: a {len(value) / 1e6:.1f} MB record to {topic!r} was not delivered: "
                f"{'; '.join(errors) or 'flush timed out'} (is the broker's message.max.bytes "
                f"raised? this benchmark's broker sets it to {LEGACY_RECORD_LIMIT})"
            )


def legacy_consumer(bootstrap: str, group: str, topics: Sequence[str]) -> Consumer:
    """A plain confluent-kafka consumer able to fetch one record of up to LEGACY_RECORD_LIMIT."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
            # One fetch response carries a whole record however large (KIP-74), but
            # librdkafka refuses responses above receive.message.max.bytes (100 MB default).
            "receive.message.max.bytes": LEGACY_RECORD_LIMIT + 10_000_000,
        }
    )
    consumer.subscribe(list(topics))
    return consumer


def legacy_poll(consumer: Consumer, timeout: float) -> Any:
    """One record, or None; raises on a real consumer error."""
    msg = consumer.poll(timeout)
    if msg is None:
        return None
    err = msg.error()
    if err is not None:
        if err.fatal():
            raise RuntimeError(f"old path consumer: {err.name()}: {err.str()}")
        if err.code() != KafkaError._PARTITION_EOF:
            logger.warning("old path consumer: %s: %s", err.name(), err.str())
        return None
    return msg


def create_topics(bootstrap: str, topics: Sequence[str]) -> None:
    """Create the topics (one partition each) before anyone subscribes: librdkafka's
    consumers do not create the topics they subscribe to."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=1, replication_factor=1) for t in topics]
    )
    for topic, future in futures.items():
        try:
            future.result(60)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise RuntimeError(
                    f"could not create topic {topic!r}: {exc.args[0].str()}"
                ) from None
