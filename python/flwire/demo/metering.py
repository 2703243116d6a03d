"""Wire metrics for the demo's weight messages."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from flwire.compat.utils.metrics import MetricsCollector
from flwire.messages import Message


def record_weights(
    metrics: MetricsCollector,
    direction: str,
    msg: Message,
    state: Mapping[str, torch.Tensor],
    seconds: float,
) -> None:
    """Record one weights message sent or received: its size on the wire, the
    raw size of the state dict it carries, and the encode/decode time. Sizes
    come from what is at hand, so the weights are neither joined nor re-parsed."""
    raw = sum(t.numel() * t.element_size() for t in state.values())
    metrics.record_wire(direction, msg.weights_nbytes, raw, seconds)
