"""What a Channel reports to the application besides deliveries.

A :class:`~flwire.transport.channel.Channel` calls its ``on_event`` callback
with one of these, and counts each in ``Channel.stats``, whenever data could
not be handed to the application: a transfer given up on, a delivery whose
handler kept failing, or a handled one whose id could not be recorded.
Logging alone is not reporting: these are values the application can count,
alert on, or act on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class TransferDropped:
    """A payload sent in parts that will not be delivered: parts missing for
    longer than the part timeout (the sender died mid-transfer?), evicted to
    stay under the memory cap, or failing its size/CRC-32C check."""

    topic: str
    partition: int
    transfer_id: str
    reason: str
    parts_received: int
    parts_total: int
    total_bytes: int


@dataclass(frozen=True)
class DeliveryFailed:
    """A delivery whose handler failed ``attempts`` times (the failure policy's
    ``max_attempts``). ``dead_letter_topic`` names where its payload was written,
    or is None when the policy skips failed deliveries (counted only)."""

    topic: str
    message_id: str | None
    attempts: int
    error: str
    dead_letter_topic: str | None


@dataclass(frozen=True)
class DeliveryUnsettled:
    """A delivery the application marked done whose id the channel could not
    record on the transport (de-duplication's log; ``error`` says why, e.g. the
    broker unreachable past the send's bound). Its offsets stay uncommitted, so
    it is delivered again after a restart (or to the consumer that takes its
    partition over) and handled again there; ``Delivery.done()`` again retries
    the write."""

    topic: str
    message_id: str
    error: str


ChannelEvent = TransferDropped | DeliveryFailed | DeliveryUnsettled
EventCallback = Callable[[ChannelEvent], None]
