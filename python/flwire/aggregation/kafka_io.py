"""Reading a batch of Kafka records with confluent-kafka's Consumer, for the
aggregators and the coordinator (:mod:`flwire.aggregation.scaleout`)."""

from __future__ import annotations

import logging
from typing import Any

from flwire import _optional

_optional.require("confluent_kafka")

from confluent_kafka import (  # noqa: E402
    Consumer,
    KafkaError,
)

from flwire.exceptions import (  # noqa: E402
    CommunicationException,
)
from flwire.transport.base import Record  # noqa: E402
from flwire.transport.kafka_logging import reason  # noqa: E402

logger = logging.getLogger(__name__)

#: Records one poll hands over at most.
_BATCH = 500


def poll_batch(consumer: Consumer, timeout_s: float) -> list[Any]:
    """The records available now, else the first to come within ``timeout_s``
    and what came with it (a consume() with a timeout waits it out to fill its
    batch)."""
    batch: list[Any] = consumer.consume(_BATCH, 0)
    if batch:
        return batch
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    return [first, *consumer.consume(_BATCH - 1, 0)]


def to_records(batch: list[Any], what: str) -> list[Record]:
    out = []
    for msg in batch:
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                continue
            if err.fatal():
                raise CommunicationException(f"{what}: Kafka consumer failed: {reason(err)}")
            logger.warning("%s: Kafka consumer: %s", what, reason(err))
            continue
        out.append(Record.from_kafka(msg))
    return out
