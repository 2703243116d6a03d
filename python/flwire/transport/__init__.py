"""Transports: send bytes with a key and headers, receive records, commit.

- :class:`Transport` (the interface), :class:`InMemoryTransport` (embedded,
  one process: the default) and :class:`KafkaTransport` (confluent-kafka,
  imported on first use: ``pip install 'flwire[kafka]'``);
- :class:`Channel`: payloads of any size, split into TransferParts above a
  transport's record limit and reassembled (by a :class:`Reassembler`, which
  holds what it may in memory and spills the rest to disk), offsets committed
  once handled;
  messages built with ``EncodeOptions(stream=True)`` sent as streamed
  transfers (:mod:`flwire.transport.streaming`: weights of any size, encoded
  and decoded as they travel);
- :class:`TopicLayout`: a job's topics, and which one each message type
  travels on (declared in the schema);
- Kafka headers (:func:`message_headers`) and confluent-kafka serializers
  (:class:`FlwireSerializer`, :class:`FlwireDeserializer`).
"""

from typing import TYPE_CHECKING, Any

from flwire.transport.base import DEFAULT_MAX_RECORD_BYTES, Headers, Record, Subscription, Transport
from flwire.transport.channel import Channel, Delivery, ProgressCallback
from flwire.transport.chunking import Reassembler
from flwire.transport.events import (
    ChannelEvent,
    DeliveryFailed,
    DeliveryUnsettled,
    TransferDropped,
)
from flwire.transport.failures import FailurePolicy
from flwire.transport.headers import message_headers, read_headers
from flwire.transport.layout import TopicLayout
from flwire.transport.memory import InMemoryBroker, InMemoryTransport
from flwire.transport.seen import SeenLog
from flwire.transport.serdes import FlwireDeserializer, FlwireSerializer

if TYPE_CHECKING:
    from flwire.transport.kafka import KafkaTransport

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "Channel",
    "ChannelEvent",
    "Delivery",
    "DeliveryFailed",
    "DeliveryUnsettled",
    "FailurePolicy",
    "FlwireDeserializer",
    "FlwireSerializer",
    "Headers",
    "InMemoryBroker",
    "InMemoryTransport",
    "KafkaTransport",
    "ProgressCallback",
    "Reassembler",
    "Record",
    "SeenLog",
    "Subscription",
    "TopicLayout",
    "TransferDropped",
    "Transport",
    "message_headers",
    "read_headers",
]


def __getattr__(name: str) -> Any:
    # KafkaTransport imports confluent-kafka: only when asked for.
    if name == "KafkaTransport":
        from flwire.transport.kafka import KafkaTransport

        return KafkaTransport
    raise AttributeError(f"module 'flwire.transport' has no attribute {name!r}")
