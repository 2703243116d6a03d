"""The coordinator's side of scale-out, without Kafka: partial aggregates of one
round in, the round's FedAvg out (wire format section 14.4).

    combiner = RoundCombiner(round_id, reference, selected=["c1", "c2", "c3"])
    combiner.add(msg)             # each PartialAggregate, as it is read
    if combiner.covered():
        new_state = combiner.result()

A partial is refused, logged and counted in :attr:`RoundCombiner.stats` (its
sums left out) when it is for another round, fails the checks of
:func:`~flwire.aggregation.partial.from_partial` (its sender, its tensors, sums
beyond the model dtype's range), names a client not in a non-empty
``selected``, or names a client merged already: one client's share cannot be
taken back out of a sum, so a partial that overlaps is never half merged.
Scale-out's transactions keep this from happening; this is defence in depth.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import torch

from flwire import messages as m
from flwire.aggregation.fedavg import StreamingFedAvg
from flwire.aggregation.partial import from_partial
from flwire.exceptions import AggregationException

logger = logging.getLogger(__name__)


@dataclass
class RoundCombiner:
    """Merges the partial aggregates of round ``round_id`` (see the module)."""

    round_id: int
    reference: Mapping[str, torch.Tensor]
    #: The clients the round waits for.
    selected: Collection[str] = ()
    stats: Counter[str] = field(default_factory=Counter)
    #: Each refused partial's reason, in order.
    refusals: list[str] = field(default_factory=list)
    #: The aggregators whose partials were merged, with how many each.
    aggregators: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.total = StreamingFedAvg(self.reference)

    def add(self, msg: m.Message) -> bool:
        """Merge one partial aggregate; False (logged, counted) when refused."""
        try:
            if msg.type != "partial_aggregate":
                raise AggregationException(f"a {msg.type} message is no partial aggregate")
            if msg.body.round_id != self.round_id:
                raise AggregationException(
                    f"partial of {msg.body.aggregator_id!r} is for round {msg.body.round_id}, "
                    f"not {self.round_id}"
                )
            part = from_partial(msg, self.reference)
        except AggregationException as exc:
            return self._refuse("refused", str(exc))
        unselected = sorted(set(part.counts) - set(self.selected)) if self.selected else []
        if unselected:
            return self._refuse(
                "unselected",
                f"partial of {msg.body.aggregator_id!r} (round {self.round_id}) names clients "
                f"not selected for the round: {unselected[:10]}",
            )
        both = sorted(set(part.counts) & set(self.total.counts))
        if both:
            return self._refuse(
                "overlapping",
                f"partial of {msg.body.aggregator_id!r} (round {self.round_id}) names clients "
                f"merged already: {both}",
            )
        self.total.merge(part)
        self.stats["merged"] += 1
        self.aggregators[msg.body.aggregator_id] += 1
        return True

    def _refuse(self, kind: str, reason: str) -> bool:
        self.stats[kind] += 1
        self.refusals.append(reason)
        logger.error("Refused a partial aggregate of round %d: %s", self.round_id, reason)
        return False

    @property
    def clients(self) -> dict[str, int]:
        """The clients merged so far, with their example counts."""
        return dict(self.total.counts)

    def missing(self) -> list[str]:
        """The selected clients not merged yet."""
        return sorted(set(self.selected) - set(self.total.counts))

    def covered(self) -> bool:
        """Whether every selected client is merged (and at least one client)."""
        return bool(self.total.counts) and not self.missing()

    def result(self) -> dict[str, torch.Tensor]:
        """The round's weighted average, in the model's dtypes; AggregationException
        when it is not finite in them."""
        return self.total.result()
