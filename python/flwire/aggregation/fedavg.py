"""Streaming FedAvg: each update is folded into a running sum as it arrives.

    fold = StreamingFedAvg(global_state)                 # the model the round started from
    fold.add("client-1", tensors, num_examples=600)      # then the update can be dropped
    fold.add("client-2", tensors2, num_examples=400, delta=True)
    new_state = fold.result()                            # sum(n_i * w_i) / sum(n_i)

Memory is O(model) whatever the number of clients: a float64 running sum per
floating tensor (twice a float32 model), and for each integer tensor (a
counter such as BatchNorm's ``num_batches_tracked``) the value of the heaviest
contributor so far. No update is held after it has been folded.

Determinism: every product ``n_i * w_i`` of a float32 or narrower value and an
example count below 2^29 is exact in float64, and the sum is kept in float64,
so folding the same updates in another order changes the sum by a few float64
ulps at most, far below a float32 ulp: the result, cast back to the model's
dtype, is the same in all but rare rounding-boundary cases, where it differs by
one ulp of that dtype. Integer tensors take the heaviest contributor's value,
ties going to the smallest client id, whatever the order.

Updates may be full weights or deltas (``new - global``, per tensor, the
``WEIGHTS_KIND_DELTA`` of the schema): a delta is folded as ``global + delta``.

Partial sums merge (:meth:`StreamingFedAvg.merge`): several aggregators may
each fold some clients, and one combines their partials into the same result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from flwire.exceptions import AggregationException

#: The largest example count one update may carry: products with float32 values
#: stay exact in float64 below 2^29 (24 + 29 = 53 bits).
MAX_EXAMPLES = (1 << 29) - 1


@dataclass
class Heaviest:
    """The integer tensor of the heaviest contributor so far: its example count
    (``weight``), its id and its value (full weights, in the model's dtype)."""

    weight: int
    client: str
    value: torch.Tensor


@dataclass
class StreamingFedAvg:
    """A running FedAvg over the layout of ``reference`` (see the module)."""

    reference: Mapping[str, torch.Tensor]
    #: float64 running sums of ``n_i * w_i``, per floating tensor.
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    #: Per integer tensor, the heaviest contributor's value.
    heaviest: dict[str, Heaviest] = field(default_factory=dict)
    #: Clients folded so far, with their example counts.
    counts: dict[str, int] = field(default_factory=dict)
    #: The reference tensors' largest magnitudes, as the checks of deltas need them.
    _largest: dict[str, float] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for name, ref in self.reference.items():
            if ref.is_floating_point():
                self.sums[name] = torch.zeros(ref.shape, dtype=torch.float64)

    @property
    def total(self) -> int:
        """The examples folded so far."""
        return sum(self.counts.values())

    def add(
        self,
        client_id: str,
        tensors: Mapping[str, torch.Tensor],
        num_examples: int,
        *,
        delta: bool = False,
    ) -> None:
        """Fold one client's update (weights, or a delta from ``reference``).

        Everything is checked before any sum changes: an update that is refused
        (AggregationException) leaves the fold as it was, so a retry counts once."""
        self._check_update(client_id, tensors, num_examples, delta)
        for name, value in tensors.items():
            acc = self.sums.get(name)
            if acc is not None:
                # A copy (never the caller's tensor), on the sums' device.
                term = value.to(device=acc.device, dtype=torch.float64, copy=True)
                if delta:
                    term += self.reference[name]
                term *= num_examples
                acc += term
            else:
                self._keep_heaviest(name, client_id, value, num_examples, delta)
        self.counts[client_id] = num_examples

    def _check_update(
        self, client_id: str, tensors: Mapping[str, torch.Tensor], num_examples: int, delta: bool
    ) -> None:
        """Raise AggregationException naming the first thing wrong with an update."""
        if client_id in self.counts:
            raise AggregationException(f"{client_id!r} was folded into this round already")
        if not 0 < num_examples <= MAX_EXAMPLES:
            raise AggregationException(
                f"num_examples of {client_id!r} is {num_examples}, not in 1..{MAX_EXAMPLES}"
            )
        if set(tensors) != set(self.reference):
            missing = sorted(set(self.reference) - set(tensors))
            extra = sorted(set(tensors) - set(self.reference))
            raise AggregationException(
                f"the update of {client_id!r} does not have the model's tensors "
                f"(missing {missing}, unexpected {extra})"
            )
        for name, ref in self.reference.items():
            _check_value(f"{name!r} of {client_id!r}", tensors[name], ref)
            if ref.is_floating_point():
                base = self._reference_largest(name) if delta else 0.0
                _check_term(f"{name!r} of {client_id!r}", tensors[name], base, num_examples)

    def _reference_largest(self, name: str) -> float:
        """The largest magnitude of the reference's tensor ``name`` (computed once)."""
        found = self._largest.get(name)
        if found is None:
            found = self._largest[name] = largest_magnitude(self.reference[name])
        return found

    def _keep_heaviest(
        self, name: str, client: str, value: torch.Tensor, weight: int, delta: bool
    ) -> None:
        best = self.heaviest.get(name)
        if best is None or (weight, _neg(client)) > (best.weight, _neg(best.client)):
            full = value + self.reference[name] if delta else value.clone()
            self.heaviest[name] = Heaviest(weight, client, full)

    def merge(self, other: StreamingFedAvg) -> None:
        """Add another aggregator's partial sums (of other clients) to these.

        Everything is checked first (clients, tensor names, shapes and dtypes): a
        merge that is refused (AggregationException) changes nothing."""
        both = set(self.counts) & set(other.counts)
        if both:
            raise AggregationException(f"clients folded twice: {sorted(both)}")
        if set(other.sums) != set(self.sums) or set(other.reference) != set(self.reference):
            raise AggregationException("partial aggregates of different models")
        for name, ref in self.reference.items():
            theirs = other.reference[name]
            if theirs.shape != ref.shape or theirs.dtype != ref.dtype:
                raise AggregationException(
                    f"partial aggregates of different models: {name!r} is "
                    f"{theirs.dtype} {tuple(theirs.shape)} in one, {ref.dtype} "
                    f"{tuple(ref.shape)} in the other"
                )
        for name, acc in other.sums.items():
            _check_value(f"the partial sum {name!r}", acc, self.sums[name])
        for name, best in other.heaviest.items():
            if name not in self.reference or name in self.sums:
                raise AggregationException(f"a heaviest contributor for {name!r}: no such tensor")
            _check_value(f"the heaviest value of {name!r}", best.value, self.reference[name])
        for name, acc in other.sums.items():
            self.sums[name] += acc.to(self.sums[name].device)
        for name, best in other.heaviest.items():
            self._keep_heaviest(name, best.client, best.value, best.weight, False)
        self.counts.update(other.counts)

    def result(self) -> dict[str, torch.Tensor]:
        """The weighted average, in the reference's dtypes; AggregationException
        when it is not finite in them (sums beyond the dtype's range)."""
        total = self.total
        if total <= 0:
            raise AggregationException("no client updates to aggregate")
        out: dict[str, torch.Tensor] = {}
        for name, ref in self.reference.items():
            acc = self.sums.get(name)
            if acc is not None:
                average = (acc / total).to(ref.dtype)
                _check_finite_average(name, average, sorted(self.counts))
                out[name] = average
            else:
                out[name] = self.heaviest[name].value.to(ref.dtype)
        return out


def _check_value(what: str, value: object, ref: torch.Tensor) -> None:
    """Raise AggregationException unless ``value`` is a tensor of ``ref``'s shape
    and kind (floating for a floating ``ref``, integer for an integer one)."""
    if not isinstance(value, torch.Tensor):
        raise AggregationException(
            f"{what} is a {type(value).__name__}, not a torch.Tensor (convert it with "
            "torch.as_tensor first)"
        )
    if value.shape != ref.shape:
        raise AggregationException(f"{what} has shape {tuple(value.shape)}, not {tuple(ref.shape)}")
    if value.is_complex() or value.is_floating_point() != ref.is_floating_point():
        raise AggregationException(
            f"{what} is {value.dtype}, but the model's tensor is {ref.dtype}"
        )


def largest_magnitude(value: torch.Tensor) -> float:
    """The largest magnitude of a floating tensor's elements (0.0 when it has
    none); NaN or infinity when it holds one. One pass (``torch.aminmax``),
    nothing allocated."""
    if value.numel() == 0:
        return 0.0
    low, high = torch.aminmax(value)
    return max(abs(float(low)), abs(float(high)))


def _check_term(what: str, value: torch.Tensor, base: float, num_examples: int) -> None:
    """Raise AggregationException unless ``num_examples * (reference + value)``
    is finite in float64, ``base`` being the reference's largest magnitude (0.0
    for weights): a bound from the largest magnitudes, so nothing is allocated."""
    largest = largest_magnitude(value)
    if not math.isfinite(largest):
        bad = int((~torch.isfinite(value)).sum())
        raise AggregationException(f"{what} has {bad} non-finite value(s)")
    largest += base
    if not math.isfinite(largest * num_examples):
        raise AggregationException(
            f"{what} times its {num_examples} examples overflows float64 (largest "
            f"magnitude {largest:.4g}): refuse such updates with screen()"
        )


def _check_finite_average(name: str, average: torch.Tensor, clients: list[str]) -> None:
    if not bool(torch.isfinite(average).all()):
        bad = int((~torch.isfinite(average)).sum())
        shown = ", ".join(clients[:10]) + (", ..." if len(clients) > 10 else "")
        raise AggregationException(
            f"the average of {name!r} has {bad} non-finite value(s) in {average.dtype} "
            f"(updates or partial sums beyond the dtype's range, from {shown}); screen "
            "updates with flwire.aggregation.screen and leave out the ones it refuses"
        )


def _neg(client: str) -> tuple[int, ...]:
    """Orders client ids so that the smallest compares greatest (tie-break)."""
    return (*(-b for b in client.encode("utf-8")), 1)
