"""The coordinator of scaled-out aggregation: reads the committed partials of a
round and combines them (see :mod:`flwire.aggregation.scaleout`)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Collection, Mapping
from typing import Any

import torch

from flwire import _optional

_optional.require("confluent_kafka")

from confluent_kafka import (  # noqa: E402
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    TopicPartition,
)

from flwire import messages as m  # noqa: E402
from flwire.aggregation.combine import RoundCombiner  # noqa: E402
from flwire.aggregation.kafka_io import poll_batch, to_records  # noqa: E402
from flwire.exceptions import (  # noqa: E402
    AggregationException,
    CommunicationException,
    SerializationException,
)
from flwire.transport.base import Record  # noqa: E402
from flwire.transport.chunking import PART_HEADER, Reassembler, parse_part  # noqa: E402
from flwire.transport.kafka_logging import client_logging  # noqa: E402
from flwire.transport.kafka_security import security_settings  # noqa: E402
from flwire.transport.layout import TopicLayout  # noqa: E402

logger = logging.getLogger(__name__)


class Coordinator:
    """Reads the committed partial aggregates and combines them per round (see
    the module). One per job, in the server."""

    def __init__(
        self,
        config: Mapping[str, Any],
        layout: TopicLayout,
        *,
        poll_s: float = 0.1,
        part_timeout_s: float = 120.0,
        call_timeout_s: float = 30.0,
        aggregates_topic: str | None = None,
    ) -> None:
        self.topic = aggregates_topic or layout.aggregates
        self.poll_s = poll_s
        self.call_timeout_s = call_timeout_s
        base = {**dict(config), **security_settings(config)}
        # Partitions are assigned, never subscribed, and nothing is committed: the
        # server's group id only satisfies librdkafka (and the job's ACLs).
        self._config = {
            **base,
            "group.id": layout.server_group(),
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            **client_logging(),
        }
        self._reassembler = Reassembler(part_timeout=part_timeout_s)
        #: Partials of rounds not asked for yet.
        self._later: dict[int, list[m.Message]] = {}
        #: The round last collected: partials of earlier rounds are late.
        self._done_round = -1
        self.stats: Counter[str] = Counter()
        self._consumer: Consumer | None = None

    def start(self) -> None:
        """Read the aggregates topic from its start (waits up to ``call_timeout_s``
        for it to exist)."""
        consumer = Consumer(self._config)
        deadline = time.monotonic() + self.call_timeout_s
        while True:
            try:
                meta = consumer.list_topics(
                    self.topic, timeout=max(0.5, min(5.0, deadline - time.monotonic()))
                )
                topic = meta.topics.get(self.topic)
                if topic is not None and topic.error is None and topic.partitions:
                    break
            except KafkaException:
                pass
            if time.monotonic() >= deadline:
                consumer.close()
                raise CommunicationException(
                    f"coordinator: topic {self.topic!r} was not found within "
                    f"{self.call_timeout_s:g} s (call_timeout_s): create the job's topics "
                    "first (transport.ensure_topics(layout.all))"
                )
            time.sleep(0.2)
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in topic.partitions])
        self._consumer = consumer

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def collect(
        self,
        round_id: int,
        reference: Mapping[str, torch.Tensor],
        selected: Collection[str],
        *,
        max_wait_s: float,
        min_clients: int = 1,
        round_timeout_s: float | None = None,
    ) -> RoundCombiner:
        """Merge round ``round_id``'s partials until every ``selected`` client is
        covered; past ``max_wait_s``, as soon as ``min_clients`` are. Raises
        AggregationException when fewer than ``min_clients`` are covered at
        ``round_timeout_s`` (default ``2 * max_wait_s``)."""
        if self._consumer is None:
            self.start()
        consumer = self._consumer
        assert consumer is not None
        combiner = RoundCombiner(round_id, reference, selected)
        for early in self._later.pop(round_id, []):
            combiner.add(early)
        started = time.monotonic()
        hard = started + (2 * max_wait_s if round_timeout_s is None else round_timeout_s)
        while not combiner.covered():
            now = time.monotonic()
            enough = len(combiner.clients) >= min_clients
            if (now >= started + max_wait_s and enough) or now >= hard:
                break
            for record in to_records(poll_batch(consumer, self.poll_s), "coordinator"):
                msg = self._read(record)
                if msg is None:
                    continue
                got = msg.body.round_id
                if got == round_id:
                    combiner.add(msg)
                elif got > round_id:
                    self._later.setdefault(got, []).append(msg)
                else:
                    self.stats["late"] += 1
                    logger.warning(
                        "Ignored a partial of round %d from %s: round %d is being combined",
                        got,
                        msg.body.aggregator_id,
                        round_id,
                    )
            for gone in self._reassembler.expire():
                self.stats["dropped_transfers"] += 1
                logger.error("Coordinator gave up on a partial: %s", gone.reason)
        self.stats.update(combiner.stats)
        self._done_round = max(self._done_round, round_id)
        if len(combiner.clients) < max(1, min_clients):
            raise AggregationException(
                f"round {round_id} could not be combined: the partials cover "
                f"{len(combiner.clients)} of {len(selected)} clients "
                f"({', '.join(sorted(combiner.clients)) or 'none'}), fewer than "
                f"min_clients={min_clients}"
            )
        if combiner.missing():
            logger.warning("Round %d combined without %s", round_id, ", ".join(combiner.missing()))
        return combiner

    def _read(self, record: Record) -> m.Message | None:
        payload = record.value
        if record.header(PART_HEADER) is not None:
            try:
                completed, _dropped = self._reassembler.add(parse_part(payload))
            except (SerializationException, CommunicationException) as exc:
                self.stats["bad_parts"] += 1
                logger.error("Coordinator skipped a bad part: %s", exc)
                return None
            if completed is None:
                return None
            payload = completed.payload
        try:
            msg = m.decode_message(payload)
        except SerializationException as exc:
            self.stats["undecodable"] += 1
            logger.error("Coordinator skipped an undecodable message: %s", exc)
            return None
        if msg.type != "partial_aggregate":
            self.stats["other"] += 1
            return None
        return msg
