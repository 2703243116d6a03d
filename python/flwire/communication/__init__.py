"""Communication: transports (in-memory, Kafka), channels for payloads of any
size, message handlers, Kafka headers (mirrors ``common.communication``).

``AsyncKafkaClient`` lives in ``flwire.communication.kafka_client`` and
``KafkaTransport`` in ``flwire.communication.kafka_transport`` (they import
confluent-kafka)."""

from flwire.communication.channel import Channel, Delivery, SeenIds
from flwire.communication.headers import message_headers, read_headers
from flwire.communication.memory import InMemoryBroker, InMemoryTransport
from flwire.communication.message_handlers import (
    ClientMessageHandler,
    MessageHandler,
    ServerMessageHandler,
)
from flwire.communication.transport import Record, TopicLayout, Transport

__all__ = [
    "Channel",
    "ClientMessageHandler",
    "Delivery",
    "InMemoryBroker",
    "InMemoryTransport",
    "MessageHandler",
    "Record",
    "SeenIds",
    "ServerMessageHandler",
    "TopicLayout",
    "Transport",
    "message_headers",
    "read_headers",
]
