"""Drop-in for ``common.communication``: ``AsyncKafkaClient`` (Kafka through
flwire's transport; confluent-kafka is imported when a client starts) and the
message handlers."""

from flwire.compat.communication.kafka_client import AsyncKafkaClient
from flwire.compat.communication.message_handlers import (
    ClientMessageHandler,
    MessageHandler,
    ServerMessageHandler,
)

__all__ = ["AsyncKafkaClient", "ClientMessageHandler", "MessageHandler", "ServerMessageHandler"]
