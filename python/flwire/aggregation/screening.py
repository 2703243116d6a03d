"""What the FedAvg server checks of a client update before it may reach the average.

In order, cheapest first, so that a refused update costs as little as possible:

1. ``num_examples`` is positive and at most :attr:`UpdatePolicy.max_num_examples`
   (FedAvg weighs each update by it: one inflated count would set the model);
2. the weights have the global model's layout (names, dtypes, shapes), checked
   from the tensor headers before anything is decompressed;
3. every floating value is finite, and so is the model it makes in the model's
   dtype: for a delta, ``global + delta`` (a float16 weight of 100 plus a
   finite delta of 65504 is inf in float16);
4. the update's L2 distance from the global model (for a delta, its norm) is
   at most :attr:`UpdatePolicy.max_distance`, when one is set.

A refusal raises :class:`UpdateRefused`, whose message is the reason the round
summary shows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from flwire import messages as m
from flwire.aggregation.fedavg import largest_magnitude
from flwire.exceptions import AggregationException, SerializationException
from flwire.v1 import messages_pb2 as pb


class UpdateRefused(AggregationException):
    """A client update that must not reach the average; the message says why."""


@dataclass(frozen=True)
class UpdatePolicy:
    """Bounds on a client update (see the module's docstring)."""

    #: The most training examples one update may claim.
    max_num_examples: int = 1_000_000
    #: The largest L2 distance (over every floating parameter) of an update from
    #: the global model it was trained from; None: not checked.
    max_distance: float | None = None

    def __post_init__(self) -> None:
        if self.max_num_examples < 1:
            raise ValueError(f"max_num_examples must be >= 1, got {self.max_num_examples}")
        if self.max_distance is not None and not self.max_distance > 0:
            raise ValueError(f"max_distance must be > 0 or None, got {self.max_distance}")


def screen(
    msg: m.Message, global_state: Mapping[str, torch.Tensor], policy: UpdatePolicy
) -> dict[str, torch.Tensor]:
    """The decoded weights of a client update that passes every check; raise
    :class:`UpdateRefused` naming the first check it fails."""
    count = msg.body.num_examples
    if count < 1:
        raise UpdateRefused(f"num_examples is {count}, not positive")
    if count > policy.max_num_examples:
        raise UpdateRefused(
            f"num_examples {count} is above the cap {policy.max_num_examples} "
            "(UpdatePolicy.max_num_examples; flwire aggregator --max-num-examples)"
        )
    try:
        tensors = msg.tensors(expect=global_state)
    except SerializationException as exc:
        raise UpdateRefused(f"weights refused: {exc}") from None
    delta = is_delta(msg)
    squares = 0.0
    for name, value in tensors.items():
        if not value.is_floating_point():
            continue
        largest = largest_magnitude(value)  # NaN or infinity: one is in there
        if not math.isfinite(largest):
            bad = int((~torch.isfinite(value)).sum())
            raise UpdateRefused(f"{bad} non-finite value(s) in {name!r}")
        if delta:
            base = global_state[name]
            # |base + delta| is at most this; only near the dtype's range is the
            # sum itself computed.
            largest += largest_magnitude(base)
            if largest > torch.finfo(base.dtype).max:
                _check_applied(name, value, base)
        _check_weighted(name, largest, count)
        if policy.max_distance is not None:
            change = value.double() if delta else value.double() - global_state[name].double()
            squares += float(change.square().sum())
    if policy.max_distance is not None:
        distance = math.sqrt(squares)
        if distance > policy.max_distance:
            raise UpdateRefused(
                f"L2 distance {distance:.4g} from the global model is above the bound "
                f"{policy.max_distance:g} (UpdatePolicy.max_distance)"
            )
    return tensors


def _check_applied(name: str, delta: torch.Tensor, base: torch.Tensor) -> None:
    """Refuse ``delta`` when ``base + delta`` in ``base``'s dtype (computed as the
    fold does: in float64, then cast) is not finite there."""
    applied = (base.to(torch.float64) + delta.to(torch.float64)).to(base.dtype)
    if not bool(torch.isfinite(applied).all()):
        bad = int((~torch.isfinite(applied)).sum())
        raise UpdateRefused(
            f"{bad} value(s) of {name!r} leave the range of {base.dtype} once the delta is "
            f"added to the global model (largest finite: {torch.finfo(base.dtype).max:.4g})"
        )


def _check_weighted(name: str, largest: float, count: int) -> None:
    """Refuse weights (of at most ``largest`` magnitude) whose product with
    ``count`` overflows the fold's float64 sums (only a float64 model comes near)."""
    if not math.isfinite(largest * count):
        raise UpdateRefused(
            f"{name!r} times num_examples {count} overflows float64 (largest magnitude "
            f"{largest:.4g})"
        )


def is_delta(msg: m.Message) -> bool:
    """Whether an update's weights are a delta from the global model."""
    return bool(msg.body.weights_kind == pb.WEIGHTS_KIND_DELTA)
