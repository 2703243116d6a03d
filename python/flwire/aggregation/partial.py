"""Partial aggregates: a :class:`StreamingFedAvg`'s sums as a ``PartialAggregate``
message, and back (wire format section 14.4).

    msg = to_partial(fold, "aggregator-1", round_id=3)     # what an aggregator publishes
    part = from_partial(decode_message(blob), reference)   # what the coordinator merges
    total.merge(part)

The float sums travel as float64 tensors (``DTYPE_FLOAT64``), so nothing is
rounded on the way: the coordinator adds exactly the sums the aggregator had.
:func:`from_partial` checks everything a merge relies on, and raises
:class:`~flwire.exceptions.AggregationException` naming what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from flwire import messages as m
from flwire.aggregation.fedavg import MAX_EXAMPLES, Heaviest, StreamingFedAvg
from flwire.exceptions import AggregationException, SerializationException
from flwire.tensors import EncodeOptions
from flwire.v1 import messages_pb2 as pb


def to_partial(
    fold: StreamingFedAvg,
    aggregator_id: str,
    round_id: int,
    *,
    options: EncodeOptions | None = None,
) -> m.Message:
    """The ``PartialAggregate`` of what ``fold`` holds (its clients, sums and
    heaviest contributors)."""
    if not fold.counts:
        raise AggregationException("an empty fold has no partial aggregate to send")
    tensors: dict[str, torch.Tensor] = dict(fold.sums)
    heaviest = []
    for name, best in sorted(fold.heaviest.items()):
        tensors[name] = best.value
        heaviest.append((name, best.client, best.weight))
    return m.partial_aggregate(
        aggregator_id,
        round_id,
        tensors,
        dict(fold.counts),
        heaviest,
        options=options,
    )


def from_partial(msg: m.Message, reference: Mapping[str, torch.Tensor]) -> StreamingFedAvg:
    """A :class:`StreamingFedAvg` holding the partial sums of ``msg`` over the
    model ``reference`` (the round's global model), ready to
    :meth:`~StreamingFedAvg.merge`."""
    if msg.type != "partial_aggregate":
        raise AggregationException(f"expected a partial_aggregate message, got {msg.type}")
    body = msg.body
    who = f"partial aggregate of {body.aggregator_id!r} (round {body.round_id})"
    if msg.sender_id != body.aggregator_id:
        raise AggregationException(
            f"{who}: its envelope's sender_id is {msg.sender_id!r}, not its aggregator_id "
            "(an aggregator sends its partials in its own name)"
        )
    if body.weights_kind != pb.WEIGHTS_KIND_UNSPECIFIED:
        raise AggregationException(f"{who}: sums of deltas are not supported")
    fold = StreamingFedAvg(reference)
    for client in body.clients:
        if not client.client_id:
            raise AggregationException(f"{who}: a folded client without an id")
        if client.client_id in fold.counts:
            raise AggregationException(f"{who}: client {client.client_id!r} listed twice")
        if not 0 < client.num_examples <= MAX_EXAMPLES:
            raise AggregationException(
                f"{who}: num_examples of {client.client_id!r} is {client.num_examples}, "
                f"not in 1..{MAX_EXAMPLES}"
            )
        fold.counts[client.client_id] = client.num_examples
    if not fold.counts:
        raise AggregationException(f"{who}: no clients folded")
    total = sum(fold.counts.values())
    try:
        tensors = msg.tensors()
    except SerializationException as exc:
        raise AggregationException(f"{who}: sums refused: {exc}") from None
    if set(tensors) != set(reference):
        raise AggregationException(
            f"{who}: tensors do not match the model (missing "
            f"{sorted(set(reference) - set(tensors))}, unexpected "
            f"{sorted(set(tensors) - set(reference))})"
        )
    contributors = {h.tensor: h for h in body.heaviest}
    if len(contributors) != len(body.heaviest):
        raise AggregationException(f"{who}: a tensor has two heaviest contributors")
    for name, ref in reference.items():
        value = tensors[name]
        if value.shape != ref.shape:
            raise AggregationException(
                f"{who}: {name!r} has shape {tuple(value.shape)}, not {tuple(ref.shape)}"
            )
        if ref.is_floating_point():
            if value.dtype != torch.float64:
                raise AggregationException(f"{who}: sum {name!r} is {value.dtype}, not float64")
            if not bool(torch.isfinite(value).all()):
                raise AggregationException(f"{who}: sum {name!r} has non-finite values")
            _check_sum_bound(who, name, value, ref.dtype, total)
            if name in contributors:
                raise AggregationException(f"{who}: {name!r} is a sum: it has no contributor")
            fold.sums[name] = value
            continue
        if value.dtype != ref.dtype:
            raise AggregationException(f"{who}: {name!r} is {value.dtype}, not {ref.dtype}")
        best = contributors.get(name)
        if best is None:
            raise AggregationException(f"{who}: integer tensor {name!r} names no contributor")
        if fold.counts.get(best.client_id) != best.num_examples:
            raise AggregationException(
                f"{who}: the contributor of {name!r}, {best.client_id!r} with "
                f"{best.num_examples} examples, is not among the folded clients"
            )
        fold.heaviest[name] = Heaviest(best.num_examples, best.client_id, value)
    unknown = sorted(set(contributors) - set(reference))
    if unknown:
        raise AggregationException(f"{who}: contributors of unknown tensors {unknown}")
    return fold


#: Room for the float64 rounding of honest sums near the bound (relative).
_BOUND_SLACK = 1e-9


def _check_sum_bound(
    who: str, name: str, value: torch.Tensor, dtype: torch.dtype, total: int
) -> None:
    """Refuse a sum that no honest fold makes: each folded client's weights are
    finite in the model's ``dtype``, so ``|sum| <= max(dtype) * total examples``."""
    if value.numel() == 0:
        return
    bound = torch.finfo(dtype).max * float(total) * (1 + _BOUND_SLACK)
    largest = float(value.abs().max())
    if largest > bound:
        raise AggregationException(
            f"{who}: sum {name!r} reaches {largest:.4g}, beyond what {total} examples of "
            f"{dtype} weights can sum to ({bound:.4g}); the aggregator's sums are corrupt"
        )
