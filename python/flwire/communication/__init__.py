"""Communication: message handlers and Kafka header helpers (transports follow)."""

from flwire.communication.headers import message_headers, read_headers
from flwire.communication.message_handlers import (
    ClientMessageHandler,
    MessageHandler,
    ServerMessageHandler,
)

__all__ = [
    "ClientMessageHandler",
    "MessageHandler",
    "ServerMessageHandler",
    "message_headers",
    "read_headers",
]
