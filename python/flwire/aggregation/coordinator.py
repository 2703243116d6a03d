"""The coordinator of scaled-out aggregation: reads the committed partials of a
round and combines them (see :mod:`flwire.aggregation.scaleout`).

Partials of a later round read while a round is collected are kept for it,
within bounds (whoever can write the aggregates topic, or a confused
aggregator, must not grow the server's memory): only rounds up to
``later_rounds`` (1) after the one being collected, and at most
``max_later_bytes`` (1 GiB) of their weights in all; a partial past either is
ignored, logged and counted (``stats["too_early"]``, ``stats["later_full"]``).
Kept partials of rounds at or below the one just collected (rounds skipped, or
combined without them) are dropped, logged and counted
(``stats["later_dropped"]``)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Collection, Mapping
from typing import Any

import torch

from flwire import _optional
from flwire._args import require_count

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

#: Rounds after the one being collected whose partials are kept for later.
DEFAULT_LATER_ROUNDS = 1
#: Bytes of partials' weights kept for later rounds at most.
DEFAULT_MAX_LATER_BYTES = 1 << 30


class Coordinator:
    """Reads the committed partial aggregates and combines them per round (see
    the module). One per job, in the server. ``later_rounds`` and
    ``max_later_bytes`` bound the partials kept for rounds after the one being
    collected."""

    def __init__(
        self,
        config: Mapping[str, Any],
        layout: TopicLayout,
        *,
        poll_s: float = 0.1,
        part_timeout_s: float = 120.0,
        call_timeout_s: float = 30.0,
        aggregates_topic: str | None = None,
        later_rounds: int = DEFAULT_LATER_ROUNDS,
        max_later_bytes: int = DEFAULT_MAX_LATER_BYTES,
    ) -> None:
        why = "0 keeps no partial for later"
        self.later_rounds = require_count(later_rounds, "later_rounds", why=why)
        self.max_later_bytes = require_count(max_later_bytes, "max_later_bytes", why=why)
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
        #: Partials of rounds not asked for yet (bounded: see the module).
        self._later: dict[int, list[m.Message]] = {}
        #: A round that could not be combined, with what it merged (O(model)),
        #: for another collect() of it.
        self._unfinished: dict[int, RoundCombiner] = {}
        #: Their weights' bytes.
        self._later_bytes = 0
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
        ``round_timeout_s`` (default ``2 * max_wait_s``); the partials read are
        kept, so that ``collect`` may be called again for the round (with a
        longer wait, or a lower ``min_clients``)."""
        if selected and min_clients > len(selected):
            raise ValueError(
                f"min_clients={min_clients} is more than the {len(selected)} client(s) "
                f"selected for round {round_id}: the round could never be combined; pass "
                "min_clients <= len(selected)"
            )
        if self._consumer is None:
            self.start()
        consumer = self._consumer
        assert consumer is not None
        combiner = self._resumed(round_id, selected) or RoundCombiner(round_id, reference, selected)
        counted = Counter(combiner.stats)  # a resumed round's were counted already
        self._drop_later(round_id - 1, f"round {round_id} is collected")
        for early in self._later_of(round_id):
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
                    self._keep_for_later(msg, round_id)
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
        self.stats.update(combiner.stats - counted)
        if len(combiner.clients) < max(1, min_clients):
            # Kept for another collect() of the round: its partials were read already.
            self._unfinished = {round_id: combiner}
            raise AggregationException(
                f"round {round_id} could not be combined: the partials cover "
                f"{len(combiner.clients)} of {len(selected)} clients "
                f"({', '.join(sorted(combiner.clients)) or 'none'}), fewer than "
                f"min_clients={min_clients}; they are kept: collect({round_id}, ...) "
                "again to wait longer, or with a lower min_clients"
            )
        self._done_round = max(self._done_round, round_id)
        self._drop_later(self._done_round, f"round {self._done_round} was collected")
        if combiner.missing():
            logger.warning("Round %d combined without %s", round_id, ", ".join(combiner.missing()))
        return combiner

    def _resumed(self, round_id: int, selected: Collection[str]) -> RoundCombiner | None:
        """The combiner of round ``round_id`` if an earlier collect() of it with
        the same selection could not combine it, else None (any other is dropped)."""
        combiner = self._unfinished.pop(round_id, None)
        self._unfinished.clear()
        if combiner is not None and set(combiner.selected) != set(selected):
            logger.warning(
                "Round %d is collected again with another selection: the partials merged "
                "by the earlier collect() are dropped",
                round_id,
            )
            return None
        return combiner

    def _later_of(self, round_id: int) -> list[m.Message]:
        """Take the partials kept for round ``round_id``."""
        kept = self._later.pop(round_id, [])
        self._later_bytes -= sum(msg.weights_nbytes for msg in kept)
        return kept

    def _keep_for_later(self, msg: m.Message, collecting: int) -> None:
        """Keep a partial of a round after ``collecting`` for its round, within
        ``later_rounds`` and ``max_later_bytes``; else log and count it."""
        got, size = msg.body.round_id, msg.weights_nbytes
        if got > collecting + self.later_rounds:
            self.stats["too_early"] += 1
            logger.warning(
                "Ignored a partial of round %d from %s: round %d is being combined, and "
                "partials are kept only for the next %d round(s) (later_rounds)",
                got,
                msg.body.aggregator_id,
                collecting,
                self.later_rounds,
            )
            return
        if self._later_bytes + size > self.max_later_bytes:
            self.stats["later_full"] += 1
            logger.warning(
                "Ignored a partial of round %d from %s (%d bytes): the partials kept for "
                "later rounds hold %d of max_later_bytes=%d already (raise it if the "
                "aggregators run ahead of the server)",
                got,
                msg.body.aggregator_id,
                size,
                self._later_bytes,
                self.max_later_bytes,
            )
            return
        self._later.setdefault(got, []).append(msg)
        self._later_bytes += size

    def _drop_later(self, through: int, why: str) -> None:
        """Drop the partials kept for rounds up to ``through`` (logged, counted)."""
        for round_id in sorted(r for r in self._later if r <= through):
            gone = self._later_of(round_id)
            self.stats["later_dropped"] += len(gone)
            logger.warning(
                "Dropped %d partial(s) of round %d kept for later: %s",
                len(gone),
                round_id,
                why,
            )

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
