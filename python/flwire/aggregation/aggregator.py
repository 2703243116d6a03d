"""The aggregator of scaled-out aggregation: one member of a consumer group on
the updates topic that folds its partitions' updates and commits its partials
and offsets in one Kafka transaction (see :mod:`flwire.aggregation.scaleout`)."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, cast

from flwire import _optional

_optional.require("confluent_kafka")

from confluent_kafka import (  # noqa: E402
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from flwire import messages as m  # noqa: E402
from flwire.aggregation.intake import Intake, Models, Selected  # noqa: E402
from flwire.aggregation.kafka_io import poll_batch, to_records  # noqa: E402
from flwire.aggregation.partial import to_partial  # noqa: E402
from flwire.aggregation.screening import UpdatePolicy  # noqa: E402
from flwire.exceptions import (  # noqa: E402
    CommunicationException,
)
from flwire.security.verifier import Verifier  # noqa: E402
from flwire.tensors import EncodeOptions  # noqa: E402
from flwire.transport.base import DEFAULT_MAX_RECORD_BYTES  # noqa: E402
from flwire.transport.chunking import (  # noqa: E402
    MAX_MEMORY_BYTES,
    PART_HEADER,
    split_payload,
)
from flwire.transport.headers import message_headers  # noqa: E402
from flwire.transport.kafka_logging import client_logging, reason  # noqa: E402
from flwire.transport.kafka_security import security_settings  # noqa: E402
from flwire.transport.layout import TopicLayout  # noqa: E402

logger = logging.getLogger(__name__)

#: Room in a record for its key and headers besides the value.
_RECORD_OVERHEAD = 4096
#: How often incomplete updates are checked for their part timeout.
_EXPIRE_EVERY_S = 1.0
#: Group membership: a dead aggregator's partitions move after this long.
_SESSION_TIMEOUT_MS = 6000
_HEARTBEAT_INTERVAL_MS = 1500


class Aggregator:
    """One scale-out aggregator process (see the module).

    ``config``: librdkafka settings shared by its consumer and its transactional
    producer (``bootstrap.servers``, security; ``FLWIRE_KAFKA__*`` environment
    variables as for KafkaTransport). ``before_commit`` (tests) is called inside
    each transaction, after its partials are produced and before its offsets
    are sent and it commits. ``verifier`` (a :class:`~flwire.security.Verifier`
    with the clients' keys) refuses an update that is unsigned, signed by an
    unknown key, badly signed, sent in another's name or stale, before it is
    decoded (its offsets move on; counted in ``verifier.refusals``). A streamed
    update (wire format section 14.5) is decoded as its chunks come and verified
    at its seal, before it is folded. ``max_memory_bytes`` and ``spill_dir``
    bound what incomplete updates hold in memory (see
    :class:`~flwire.transport.chunking.Reassembler`): past it, their parts wait in a
    spill file. ``selected(round_id)`` names the clients selected for a round (None
    or empty: not known): an update of another client is refused, not folded (a
    partial naming it would be refused whole by the coordinator). When not given,
    ``models.selected`` is used if ``models`` has one. An update whose records are
    not keyed by its client id is refused too.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        layout: TopicLayout,
        aggregator_id: str,
        models: Models,
        *,
        policy: UpdatePolicy | None = None,
        commit_interval_s: float = 0.5,
        transaction_timeout_s: float = 30.0,
        call_timeout_s: float = 30.0,
        poll_s: float = 0.1,
        part_timeout_s: float = 120.0,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        options: EncodeOptions | None = None,
        group_id: str | None = None,
        aggregates_topic: str | None = None,
        before_commit: Callable[[], None] | None = None,
        on_fold: Callable[[int, str], None] | None = None,
        verifier: Verifier | None = None,
        max_memory_bytes: int | None = MAX_MEMORY_BYTES,
        spill_dir: str | None = None,
        selected: Selected | None = None,
    ) -> None:
        if not aggregator_id:
            raise ValueError("aggregator_id must not be empty")
        if commit_interval_s < 0 or call_timeout_s <= 0 or transaction_timeout_s <= 0:
            raise ValueError("commit_interval_s, call_timeout_s and transaction_timeout_s")
        self.aggregator_id = aggregator_id
        self.layout = layout
        self.updates_topic = layout.updates
        self.aggregates_topic = aggregates_topic or layout.aggregates
        self.group_id = group_id or layout.aggregator_group()
        self.commit_interval_s = commit_interval_s
        self.call_timeout_s = call_timeout_s
        self.poll_s = poll_s
        self.max_record_bytes = max_record_bytes
        self.options = options
        self.before_commit = before_commit
        self.intake = Intake(
            models,
            policy or UpdatePolicy(),
            part_timeout_s,
            on_fold=on_fold or (lambda _r, _c: None),
            verifier=verifier,
            max_memory_bytes=max_memory_bytes,
            spill_dir=spill_dir,
            selected=_selected_of(models, selected),
        )
        #: Counts: folded, skipped, refused, transactions, partials, aborted, ...
        self.stats: Counter[str] = self.intake.stats
        base = {**dict(config), **security_settings(config)}
        self._consumer_config = {
            **base,
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "session.timeout.ms": _SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": _HEARTBEAT_INTERVAL_MS,
            **client_logging(),
        }
        self._producer_config = {
            **base,
            "transactional.id": layout.aggregator_transaction(aggregator_id)
            if aggregates_topic is None
            else f"{self.group_id}.{aggregator_id}",
            "enable.idempotence": True,
            "acks": "all",
            "transaction.timeout.ms": int(transaction_timeout_s * 1000),
            "message.max.bytes": max_record_bytes + _RECORD_OVERHEAD,
            "linger.ms": 5,
            **client_logging(),
        }
        #: The partitions of the updates topic this aggregator folds now.
        self.partitions: list[tuple[str, int]] = []
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._last_commit = time.monotonic()
        self._last_expire = time.monotonic()

    # -- life cycle -------------------------------------------------------------

    def start(self) -> None:
        """Join the group and set up the transactional producer (bounded by
        ``call_timeout_s``; a producer with the same id that is still around is
        fenced, and its open transaction aborted)."""
        producer = Producer(self._producer_config)
        try:
            producer.init_transactions(self.call_timeout_s)
        except KafkaException as exc:
            raise CommunicationException(
                f"aggregator {self.aggregator_id}: could not set up Kafka transactions within "
                f"{self.call_timeout_s:g} s (call_timeout_s): {reason(exc.args[0])} (is the "
                "broker up, and may this user write transactional id "
                f"{self._producer_config['transactional.id']!r}?)"
            ) from None
        self._producer = producer
        consumer = Consumer(self._consumer_config)
        consumer.subscribe(
            [self.updates_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._consumer = consumer

    def close(self) -> None:
        """Commit what is folded, then leave the group."""
        consumer = self._consumer
        if consumer is None:
            return
        try:
            if self.intake.dirty():
                self.commit()
        finally:
            self._consumer = None
            self.intake.close()
            consumer.close()
            if self._producer is not None:
                self._producer.flush(self.call_timeout_s)

    def run(
        self, stop: threading.Event | None = None, *, until: Callable[[], bool] | None = None
    ) -> None:
        """Fold and commit until ``stop`` is set (or ``until()`` is true), then close."""
        if self._consumer is None:
            self.start()
        try:
            while not (stop is not None and stop.is_set()) and not (until is not None and until()):
                self.step()
        finally:
            self.close()

    # -- the loop ---------------------------------------------------------------

    def step(self) -> None:
        """Take what arrived (waiting up to ``poll_s``), and commit when due."""
        consumer = self._require()
        for record in to_records(
            poll_batch(consumer, self.poll_s), f"aggregator {self.aggregator_id}"
        ):
            self.intake.add(record)
        now = time.monotonic()
        if now - self._last_expire >= _EXPIRE_EVERY_S:
            self._last_expire = now
            self.intake.expire()
        if self.intake.dirty() and now - self._last_commit >= self.commit_interval_s:
            self.commit()

    def commit(self) -> bool:
        """Commit one transaction: the partials of the folds and the offsets of
        what they folded. False when it must wait (commit metadata too long) or
        was aborted (everything not committed is then read again)."""
        point = self.intake.commit_point()
        if point is None:
            return False
        producer = self._producer
        consumer = self._require()
        assert producer is not None
        partials = [
            to_partial(fold, self.aggregator_id, round_id, options=self.options)
            for round_id, fold in sorted(self.intake.folds.items())
        ]
        try:
            producer.begin_transaction()
            for msg in partials:
                self._produce(producer, msg)
            if self.before_commit is not None:
                self.before_commit()
            offsets = [
                TopicPartition(t, p, offset, metadata=text)
                for (t, p), (offset, text) in sorted(point.items())
            ]
            if offsets:
                producer.send_offsets_to_transaction(
                    offsets, consumer.consumer_group_metadata(), self.call_timeout_s
                )
            producer.commit_transaction(self.call_timeout_s)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.txn_requires_abort():
                logger.warning(
                    "Aggregator %s: transaction aborted (%s); reading again from the "
                    "committed offsets",
                    self.aggregator_id,
                    reason(err),
                )
                self._abort(producer)
                return False
            raise CommunicationException(
                f"aggregator {self.aggregator_id}: Kafka transaction failed: {reason(err)} "
                f"(bound: call_timeout_s = {self.call_timeout_s:g} s)"
            ) from None
        self.intake.committed(point)
        self._last_commit = time.monotonic()
        self.stats["transactions"] += 1
        self.stats["partials"] += len(partials)
        return True

    def _produce(self, producer: Producer, msg: m.Message) -> None:
        payload = msg.to_bytes()
        headers = message_headers(msg)
        key = self.aggregator_id.encode()
        room = self.max_record_bytes - len(key) - sum(len(k) + len(v) for k, v in headers) - 64
        if len(payload) <= room:
            records = [(payload, headers)]
        else:
            records = [
                (part, [*headers, (PART_HEADER, f"{index}/{count}".encode())])
                for part, index, count in split_payload(payload, msg.message_id, room)
            ]
        deadline = time.monotonic() + self.call_timeout_s
        for value, record_headers in records:
            while True:
                try:
                    producer.produce(
                        self.aggregates_topic, value, key, headers=cast(Any, record_headers)
                    )
                    break
                except BufferError:
                    if time.monotonic() >= deadline:
                        raise CommunicationException(
                            f"aggregator {self.aggregator_id}: the producer's queue stayed "
                            f"full for {self.call_timeout_s:g} s (call_timeout_s)"
                        ) from None
                    producer.poll(0.05)

    def _abort(self, producer: Producer) -> None:
        """Abort the transaction, and read again from the committed offsets."""
        try:
            producer.abort_transaction(self.call_timeout_s)
        except KafkaException as exc:
            raise CommunicationException(
                f"aggregator {self.aggregator_id}: could not abort a Kafka transaction "
                f"within {self.call_timeout_s:g} s: {reason(exc.args[0])}"
            ) from None
        self.stats["aborted"] += 1
        consumer = self._require()
        self.intake.reset()
        assignment = consumer.assignment()
        if assignment:
            for tp in self._committed(consumer, assignment):
                self.intake.assigned((tp.topic, tp.partition), tp.metadata)
                offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                consumer.seek(TopicPartition(tp.topic, tp.partition, offset))

    def _committed(self, consumer: Consumer, partitions: list[TopicPartition]) -> list[Any]:
        """The committed offsets (and metadata) of ``partitions``; waits for open
        transactions on them to end (read_committed), up to ``call_timeout_s``."""
        try:
            found: list[Any] = consumer.committed(partitions, timeout=self.call_timeout_s)
        except KafkaException as exc:
            raise CommunicationException(
                f"aggregator {self.aggregator_id}: could not read the committed offsets of "
                f"{', '.join(f'{tp.topic}[{tp.partition}]' for tp in partitions)} within "
                f"{self.call_timeout_s:g} s (call_timeout_s): {reason(exc.args[0])}"
            ) from None
        return found

    # -- rebalances (called by librdkafka inside poll) --------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in self._committed(consumer, partitions):
            self.intake.assigned((tp.topic, tp.partition), tp.metadata)
        self.partitions = sorted((tp.topic, tp.partition) for tp in partitions)
        logger.info(
            "Aggregator %s now folds %s",
            self.aggregator_id,
            ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing",
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit what is folded while the partitions are still ours, then forget."""
        try:
            if self.intake.dirty():
                self.commit()
        except CommunicationException as exc:
            logger.warning("Aggregator %s: commit on rebalance failed: %s", self.aggregator_id, exc)
        self.partitions = []
        self.intake.reset()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The partitions are someone else's already: nothing may be committed."""
        logger.warning(
            "Aggregator %s lost its partitions; its folds are dropped", self.aggregator_id
        )
        self.partitions = []
        self.intake.reset()

    def _require(self) -> Consumer:
        if self._consumer is None:
            raise CommunicationException(
                f"aggregator {self.aggregator_id} is not started; call start() or run()"
            )
        return self._consumer


def _selected_of(models: Models, selected: Selected | None) -> Selected:
    """``selected``, else ``models.selected`` when ``models`` has a callable one,
    else a selection never known."""
    if selected is not None:
        return selected
    found = getattr(models, "selected", None)
    if callable(found):
        return cast(Selected, found)
    return lambda _r: None
