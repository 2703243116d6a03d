"""Aggregation that scales out on Kafka: several aggregator processes fold a
round's client updates, one server process (the coordinator) adds their
partial sums (wire format section 14.4). Kafka is the engine: a consumer group
shares the updates topic's partitions among the aggregators, and transactions
make each update count exactly once, even when an aggregator dies mid-round.

Aggregator (run as many as the updates topic has partitions, or fewer)::

    agg = Aggregator({"bootstrap.servers": "127.0.0.1:9092"}, layout, "agg-1", models)
    agg.run(stop)          # until the threading.Event ``stop`` is set

``models(round_id)`` returns the global model the round's updates were trained
from (what the server broadcast; None: not known, the update is refused). Each
aggregator screens every update of its partitions
(:func:`~flwire.aggregation.screening.screen`, with ``policy``) and folds it
into a :class:`~flwire.aggregation.StreamingFedAvg` per round. Every
``commit_interval_s`` it commits one Kafka transaction holding the partials of
what it folded since the last one (``PartialAggregate`` messages on
``layout.aggregates``, split into TransferParts above the record limit) and
the consumer offsets of the update records it folded
(``send_offsets_to_transaction``): both or neither. The offsets never pass an
update not folded yet (one whose parts are still coming); an update folded
above them is named in the offsets' commit metadata and skipped by whoever
reads it again (:mod:`flwire.aggregation.intake`).

If an aggregator dies, its transaction is aborted (by the broker, after
``transaction_timeout_s``), the group gives its partitions to the other
aggregators (after the 6 s session timeout), and they read its updates again
from the committed offsets. A zombie (an aggregator that lost its partitions
but still runs) is fenced: its commit fails and it starts over from the
committed offsets.

Coordinator (in the server)::

    coordinator = Coordinator({"bootstrap.servers": ...}, layout)
    combiner = coordinator.collect(round_id, global_state, selected, max_wait_s=60)
    model.load_state_dict(combiner.result())

It reads ``layout.aggregates`` with ``isolation.level=read_committed`` (only
committed partials) and merges the round's partials until every selected client
is covered, or ``max_wait_s`` has passed with at least ``min_clients``
(:class:`~flwire.aggregation.combine.RoundCombiner`; a partial naming a
client merged already is refused, logged and counted).

The job's topics must exist first (the server's ``transport.ensure_topics(
layout.all)``), the updates topic with as many partitions as aggregators may
run. Every call that waits on the broker is bounded (``call_timeout_s``, default
30 s) and fails with a CommunicationException that names what it waited for.
"""

from flwire.aggregation.aggregator import Aggregator
from flwire.aggregation.coordinator import Coordinator

__all__ = ["Aggregator", "Coordinator"]
