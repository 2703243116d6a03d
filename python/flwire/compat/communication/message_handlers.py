"""Drop-in replacement for ``common.communication.message_handlers``.

``MessageHandler`` is the core :class:`~flwire.messages.Dispatcher` (typed
routes, stats, de-duplication) plus the old API: handlers registered by type
name receive the old dict form of the message. ``ClientMessageHandler`` and
``ServerMessageHandler`` map the messages a client or a server receives onto
the old methods of an FL client or server object.

Signed messages: give a handler a :class:`~flwire.security.Verifier` (with the
server's public key on a client, the clients' keys on the server) and it
refuses, before decoding any weights, what is unsigned, signed by an unknown
key, badly signed, sent in another's name, replayed, stale, or (on the
server, against ``server.current_round`` when the server object has one) an
update for another round: each refusal is logged with its reason and counted
in ``verifier.refusals`` and ``stats["refused"]``, and never reaches the FL
object. Without a verifier, nothing is verified (the old behaviour).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

from flwire.compat.serialization.message_serializer import (
    legacy_type,
    legacy_type_name,
    message_to_dict,
)
from flwire.messages import Dispatcher, Message
from flwire.messages.dispatch import settle

if TYPE_CHECKING:
    from flwire.security.verifier import Verifier

logger = logging.getLogger(__name__)

LegacyHandler = Callable[[dict[str, Any]], Awaitable[Any] | Any]


class MessageHandler(Dispatcher):
    """Base class for handling flwire messages.

    ``register_handler("client_update", fn)`` calls ``fn(message_dict)`` with the
    old dict form; ``route(ClientUpdate, fn)`` calls ``fn(message)`` with the
    decoded :class:`Message`. Handlers may be sync or async. A message that
    cannot be decoded, has no handler, or whose handler raises is logged and
    counted in :attr:`stats`; it never stops the caller's loop.
    """

    #: Anything handed to handle_message that is not a message (None included)
    #: is counted as undecodable and skipped, as the old API did.
    refuse_non_bytes = False

    def __init__(self, *, dedupe: bool = False, verifier: Verifier | None = None) -> None:
        super().__init__(dedupe=dedupe, verifier=verifier)
        self.handlers: dict[str, LegacyHandler] = {}

    def register_handler(self, message_type: str, handler: LegacyHandler) -> None:
        """Register a handler (receiving the old-style dict) for a type name."""
        self.handlers[message_type] = handler
        logger.info("Registered handler for message type: %s", message_type)

    def type_name(self, msg: Message) -> str:
        # Logs name types as the old API registers them (heartbeat -> client_heartbeat).
        return legacy_type(msg)

    def handlers_for(self, msg: Message) -> list[Callable[[Message], Any]]:
        found = super().handlers_for(msg)
        legacy = self.handlers.get(legacy_type(msg))
        if legacy is not None:
            found.append(lambda message: legacy(message_to_dict(message)))
        return found


class ClientMessageHandler(MessageHandler):
    """Dispatches server messages to an FL client object."""

    #: Message type -> the method it calls: every type the schema says the server
    #: sends (a test holds this to ``flwire.messages.schema.types_from("server")``).
    METHODS: ClassVar[dict[str, str]] = {
        "global_update": "_handle_global_update",
        "training_start": "_handle_training_start",
        "evaluation_request": "_handle_evaluation_request",
        "shutdown": "_handle_shutdown",
    }

    def __init__(self, client: Any, *, verifier: Verifier | None = None) -> None:
        super().__init__(verifier=verifier)
        self.client = client
        for name, method in self.METHODS.items():
            self.register_handler(legacy_type_name(name), getattr(self, method))

    async def _handle_global_update(self, message: dict[str, Any]) -> None:
        payload = message["payload"]
        logger.info("Received global update for round %s", payload["round_id"])
        await settle(self.client.process_global_update(payload["round_id"], payload["weights"]))

    async def _handle_training_start(self, message: dict[str, Any]) -> None:
        logger.info("Received training start command")
        await settle(self.client.start_training_round(message["payload"]))

    async def _handle_evaluation_request(self, message: dict[str, Any]) -> None:
        logger.info("Received evaluation request")
        await settle(self.client.perform_evaluation(message["payload"]))

    async def _handle_shutdown(self, message: dict[str, Any]) -> None:
        logger.info("Received shutdown command")
        await settle(self.client.shutdown())


class ServerMessageHandler(MessageHandler):
    """Dispatches client messages to an FL server object, each message once:
    an update redelivered after a crash is not counted twice."""

    #: Message type -> the server method it calls (the old API handles these
    #: three of the types clients send; evaluation results go to a typed route).
    METHODS: ClassVar[dict[str, str]] = {
        "client_update": "_handle_client_update",
        "client_registration": "_handle_client_registration",
        "heartbeat": "_handle_client_heartbeat",
    }

    def __init__(
        self, server: Any, *, dedupe: bool = True, verifier: Verifier | None = None
    ) -> None:
        if verifier is not None and verifier.current_round is None:
            verifier.current_round = lambda: getattr(server, "current_round", None)
        super().__init__(dedupe=dedupe, verifier=verifier)
        self.server = server
        for name, method in self.METHODS.items():
            self.register_handler(legacy_type_name(name), getattr(self, method))

    async def _handle_client_update(self, message: dict[str, Any]) -> None:
        p = message["payload"]
        logger.info("Received update from client %s for round %s", p["client_id"], p["round_id"])
        await settle(
            self.server.process_client_update(
                p["client_id"], p["round_id"], p["weights"], p["metrics"]
            )
        )

    async def _handle_client_registration(self, message: dict[str, Any]) -> None:
        payload = message["payload"]
        logger.info("Client %s requesting registration", payload["client_id"])
        await settle(self.server.register_client(payload["client_id"], payload))

    async def _handle_client_heartbeat(self, message: dict[str, Any]) -> None:
        await settle(self.server.update_client_heartbeat(message["payload"]["client_id"]))
