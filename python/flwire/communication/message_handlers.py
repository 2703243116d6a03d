"""Drop-in replacement for ``common.communication.message_handlers``.

``MessageHandler`` dispatches decoded messages by type name (the old API) or by
body class (the typed route). A message that cannot be decoded, has no
handler, or whose handler raises is logged with its type and sender and
counted in :attr:`MessageHandler.stats`; it never stops the caller's loop.
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from flwire.communication.channel import SeenIds
from flwire.exceptions import SerializationException
from flwire.serialization.envelope import BODY_NAME_BY_CLASS_NAME
from flwire.serialization.message_serializer import message_to_dict, old_type_name
from flwire.serialization.messages import Message, decode_message

logger = logging.getLogger(__name__)

OldHandler = Callable[[dict[str, Any]], Awaitable[Any] | Any]
TypedHandler = Callable[[Message], Awaitable[Any] | Any]


async def _settle(result: Any) -> None:
    """Await a handler's result if it is awaitable (handlers may be sync or async)."""
    if inspect.isawaitable(result):
        await result


class MessageHandler:
    """Base class for handling flwire messages.

    ``register_handler("client_update", fn)`` calls ``fn(message_dict)`` with the
    old dict form; ``route(ClientUpdate, fn)`` calls ``fn(message)`` with the
    decoded :class:`Message`. Handlers may be sync or async.
    """

    def __init__(self, *, dedupe: bool = False) -> None:
        self.handlers: dict[str, OldHandler] = {}
        self.routes: dict[str, TypedHandler] = {}
        self.stats: Counter[str] = Counter()
        # Message ids handled successfully: a redelivery (Kafka is at-least-once)
        # of one of them is counted in stats["duplicates"] and not handled again.
        self.seen: SeenIds | None = SeenIds() if dedupe else None

    def register_handler(self, message_type: str, handler: OldHandler) -> None:
        """Register a handler (receiving the old-style dict) for a type name."""
        self.handlers[message_type] = handler
        logger.info("Registered handler for message type: %s", message_type)

    def route(self, body_class: type, handler: TypedHandler) -> None:
        """Register a typed handler for a body class, e.g. ``messages_pb2.ClientUpdate``."""
        descriptor = getattr(body_class, "DESCRIPTOR", None)
        name = BODY_NAME_BY_CLASS_NAME.get(getattr(descriptor, "full_name", ""))
        if name is None:
            raise TypeError(f"{body_class!r} is not a flwire message body class")
        self.routes[name] = handler

    async def handle_message(self, raw_message: Any) -> bool:
        """Decode and dispatch one message; return True if a handler ran to completion."""
        self.stats["received"] += 1
        try:
            msg = decode_message(raw_message)
        except SerializationException as exc:
            self.stats["decode_errors"] += 1
            logger.error("Dropped an undecodable message (%d bytes): %s", _size(raw_message), exc)
            return False
        if self.seen is not None and msg.message_id in self.seen:
            self.stats["duplicates"] += 1
            logger.info("Skipped a redelivered %s message %s", msg.type, msg.message_id)
            return False
        typed = self.routes.get(msg.type)
        old_name = old_type_name(msg.type)
        old = self.handlers.get(old_name)
        if typed is None and old is None:
            self.stats["unhandled"] += 1
            logger.warning(
                "No handler registered for message type: %s (from %r)", old_name, msg.sender_id
            )
            return False
        try:
            if typed is not None:
                await _settle(typed(msg))
            if old is not None:
                await _settle(old(message_to_dict(msg)))
        except Exception:
            self.stats["handler_errors"] += 1
            logger.exception(
                "Handler for %s message %s from %r failed",
                old_name,
                msg.message_id,
                msg.sender_id,
            )
            return False
        self.stats["handled"] += 1
        if self.seen is not None:
            self.seen.first_time(msg.message_id)
        return True


def _size(raw: Any) -> int:
    try:
        return len(raw)
    except TypeError:
        return -1


class ClientMessageHandler(MessageHandler):
    """Dispatches server messages to an FL client object."""

    def __init__(self, client: Any) -> None:
        super().__init__()
        self.client = client
        self.register_handler("global_update", self._handle_global_update)
        self.register_handler("training_start", self._handle_training_start)
        self.register_handler("evaluation_request", self._handle_evaluation_request)
        self.register_handler("shutdown", self._handle_shutdown)

    async def _handle_global_update(self, message: dict[str, Any]) -> None:
        payload = message["payload"]
        logger.info("Received global update for round %s", payload["round_id"])
        await _settle(self.client.process_global_update(payload["round_id"], payload["weights"]))

    async def _handle_training_start(self, message: dict[str, Any]) -> None:
        logger.info("Received training start command")
        await _settle(self.client.start_training_round(message["payload"]))

    async def _handle_evaluation_request(self, message: dict[str, Any]) -> None:
        logger.info("Received evaluation request")
        await _settle(self.client.perform_evaluation(message["payload"]))

    async def _handle_shutdown(self, message: dict[str, Any]) -> None:
        logger.info("Received shutdown command")
        await _settle(self.client.shutdown())


class ServerMessageHandler(MessageHandler):
    """Dispatches client messages to an FL server object, each message once:
    an update redelivered after a crash is not counted twice."""

    def __init__(self, server: Any, *, dedupe: bool = True) -> None:
        super().__init__(dedupe=dedupe)
        self.server = server
        self.register_handler("client_update", self._handle_client_update)
        self.register_handler("client_registration", self._handle_client_registration)
        self.register_handler("client_heartbeat", self._handle_client_heartbeat)

    async def _handle_client_update(self, message: dict[str, Any]) -> None:
        p = message["payload"]
        logger.info("Received update from client %s for round %s", p["client_id"], p["round_id"])
        await _settle(
            self.server.process_client_update(
                p["client_id"], p["round_id"], p["weights"], p["metrics"]
            )
        )

    async def _handle_client_registration(self, message: dict[str, Any]) -> None:
        payload = message["payload"]
        logger.info("Client %s requesting registration", payload["client_id"])
        await _settle(self.server.register_client(payload["client_id"], payload))

    async def _handle_client_heartbeat(self, message: dict[str, Any]) -> None:
        await _settle(self.server.update_client_heartbeat(message["payload"]["client_id"]))
