"""Typed dispatch: decode a message and hand it to the handler of its type.

A receive loop hands each delivery over with ``handle_delivery(delivery)``:
its payload bytes are decoded, and a streamed transfer's message (its weights
decoded as they came, no payload bytes) is taken as it is. A message that
cannot be decoded, or has no handler, is logged with its type and sender,
counted in :attr:`Dispatcher.stats` and skipped (``handle_delivery`` and
``handle_message`` return False): trying again cannot help. A handler that
raises is counted and logged too, then reported to the caller as
:class:`HandlerError`, so the receive loop can mark the delivery failed
(``await delivery.fail(exc)``): it is retried, then dead-lettered, never
committed as if it had been handled.

With a :class:`~flwire.security.Verifier` (``Dispatcher(verifier=...)``), every
message is verified before it is decoded or handled: a refused one (unsigned,
unknown key, bad signature, sender mismatch, replay, stale timestamp, wrong
round) is logged with its reason, counted in the verifier's ``refusals`` and in
``stats["refused"]`` (an undecodable one in ``stats["decode_errors"]``), and
skipped.
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from flwire.exceptions import (
    HandlerError,
    RefusedMessageError,
    SerializationException,
    UndecodableMessageError,
)
from flwire.messages.dedupe import SeenIds
from flwire.messages.message import Message, decode_message
from flwire.messages.schema import body_type, body_type_of

if TYPE_CHECKING:
    from flwire.security.verifier import Verifier
    from flwire.transport.channel import Delivery

logger = logging.getLogger(__name__)

TypedHandler = Callable[[Message], Awaitable[Any] | Any]


async def settle(result: Any) -> None:
    """Await a handler's result if it is awaitable (handlers may be sync or async)."""
    if inspect.isawaitable(result):
        await result


def _check_raw(raw: Any) -> None:
    """TypeError for what handle_message is often handed by mistake: nothing a
    sender put on the wire is refused here (str is, later, with its reason)."""
    if raw is None:
        raise TypeError(
            "handle_message() got None: a streamed transfer's Delivery has no payload "
            "bytes (its message is delivery.message); pass the delivery to "
            "dispatcher.handle_delivery(delivery)"
        )
    if isinstance(raw, Message):
        raise TypeError(
            "handle_message() takes a message's bytes; a decoded Message goes to "
            "dispatcher.handle(msg)"
        )
    if hasattr(raw, "payload") and hasattr(raw, "done"):
        raise TypeError(
            "handle_message() takes a message's bytes; a Delivery goes to "
            "dispatcher.handle_delivery(delivery)"
        )


def _size(raw: Any) -> int:
    try:
        return len(raw)
    except TypeError:
        return -1


class Dispatcher:
    """Routes decoded messages to handlers by type.

    ``route(ClientUpdate, fn)`` (or ``route("client_update", fn)``) calls
    ``fn(message)`` with the decoded :class:`Message`; handlers may be sync or
    async. With ``dedupe=True``, a message id handled successfully is not
    handled again (Kafka delivers at least once), nor while it is being handled
    (two concurrent deliveries of one message run its handlers once): the
    repeat is counted in ``stats["duplicates"]``. A message whose handler
    failed is not marked, so its redelivery is handled. With ``verifier``,
    messages are verified first (see the module).
    """

    #: Whether :meth:`handle_message` raises TypeError for what is not a
    #: message's bytes by its type (None, a Message, a Delivery): a mistake in the
    #: receive loop, not a sender's. The compat handlers count those as
    #: undecodable instead, as the old API did.
    refuse_non_bytes: bool = True

    def __init__(self, *, dedupe: bool = False, verifier: Verifier | None = None) -> None:
        self.routes: dict[str, TypedHandler] = {}
        self.verifier = verifier
        self.stats: Counter[str] = Counter()
        self.seen: SeenIds | None = SeenIds() if dedupe else None
        #: Ids whose handlers are running (dedupe only).
        self._in_flight: set[str] = set()

    def route(self, body: type | str, handler: TypedHandler) -> None:
        """Register the handler of a message type, given as its body class
        (``messages_pb2.ClientUpdate``) or its type name (``"client_update"``)."""
        if not callable(handler):
            raise TypeError(
                f"route() needs a callable handler (a function taking the Message), "
                f"got {type(handler).__name__}"
            )
        name = body_type(body).name if isinstance(body, str) else body_type_of(body).name
        if name in self.routes and self.routes[name] is not handler:
            logger.warning(
                "route(%s): replaces the handler registered before (%r); one handler per type",
                name,
                self.routes[name],
            )
        self.routes[name] = handler

    def type_name(self, msg: Message) -> str:
        """The name the logs give ``msg``'s type (a subclass may use its own names)."""
        return msg.type

    def handlers_for(self, msg: Message) -> list[Callable[[Message], Any]]:
        """The handlers to call for ``msg``, in order (subclasses may add some)."""
        typed = self.routes.get(msg.type)
        return [typed] if typed is not None else []

    async def handle_delivery(self, delivery: Delivery) -> bool:
        """Dispatch what a :class:`~flwire.transport.Channel` delivered, as
        :meth:`handle_message` does: its payload's bytes, or for a streamed
        transfer its message (weights decoded as they came; verified by the
        verifier as :meth:`Delivery.verify` does). The receive loop's call::

            async for delivery in channel.receive(...):
                try:
                    await dispatcher.handle_delivery(delivery)
                except HandlerError as exc:
                    await delivery.fail(exc)
                    continue
                await delivery.done()
        """
        if not delivery.streamed:
            return await self.handle_message(delivery.payload)
        self.stats["received"] += 1
        assert delivery.message is not None
        msg = delivery.message
        if self.verifier is not None:
            try:
                msg = await delivery.verify(self.verifier)
            except RefusedMessageError as exc:
                self.stats["refused"] += 1
                self.verifier.refuse(exc)
                return False
        return await self.handle(msg)

    async def handle_message(self, raw_message: Any) -> bool:
        """Decode (and verify) and dispatch one message's bytes; return True if
        its handlers ran to completion, False if it was skipped (undecodable,
        refused, unhandled, or a duplicate). Raises :class:`HandlerError` if a
        handler raised, and TypeError when handed something that is not bytes
        (a streamed delivery's None payload, a Message, a Delivery): see
        :meth:`handle_delivery` and :meth:`handle`."""
        if self.refuse_non_bytes:
            _check_raw(raw_message)
        self.stats["received"] += 1
        try:
            msg = await self.admit(raw_message)
        except RefusedMessageError as exc:
            undecodable = isinstance(exc, UndecodableMessageError)
            self.stats["decode_errors" if undecodable else "refused"] += 1
            if self.verifier is not None:
                self.verifier.refuse(exc)
            else:
                logger.error(
                    "Dropped an undecodable message (%d bytes): %s", _size(raw_message), exc
                )
            return False
        return await self.handle(msg)

    async def admit(self, raw_message: Any) -> Message:
        """The decoded message, verified by the verifier if there is one; raises
        :class:`RefusedMessageError` (:class:`UndecodableMessageError` for bytes
        that are not a valid message)."""
        if self.verifier is not None:
            return await self.verifier.averify(raw_message)
        try:
            return decode_message(raw_message)
        except SerializationException as exc:
            raise UndecodableMessageError(str(exc)) from exc

    def seen_before(self, message_id: str) -> bool:
        """Whether a message id was handled, or is being handled (dedupe only)."""
        return self.seen is not None and (message_id in self.seen or message_id in self._in_flight)

    async def handle(self, msg: Message) -> bool:
        """Dispatch one decoded message, as :meth:`handle_message` does after
        decoding (for a caller that decoded it already, e.g. to verify it)."""
        if self.seen_before(msg.message_id):
            self.stats["duplicates"] += 1
            logger.info("Skipped a redelivered %s message %s", self.type_name(msg), msg.message_id)
            return False
        handlers = self.handlers_for(msg)
        if not handlers:
            self.stats["unhandled"] += 1
            logger.warning(
                "No handler registered for message type: %s (from %r)",
                self.type_name(msg),
                msg.sender_id,
            )
            return False
        if self.seen is not None:
            # Checked and marked with no await between: a concurrent copy is a duplicate.
            self._in_flight.add(msg.message_id)
        try:
            for handler in handlers:
                await settle(handler(msg))
        except Exception as exc:
            self.stats["handler_errors"] += 1
            if self.verifier is not None:
                self.verifier.forget(msg.message_id)  # its redelivery is no replay
            logger.exception(
                "Handler for %s message %s from %r failed",
                self.type_name(msg),
                msg.message_id,
                msg.sender_id,
            )
            raise HandlerError(
                f"handler for {self.type_name(msg)} message {msg.message_id} from "
                f"{msg.sender_id!r} failed: {type(exc).__name__}: {exc}",
                message_type=msg.type,
                message_id=msg.message_id,
            ) from exc
        finally:
            self._in_flight.discard(msg.message_id)
        self.stats["handled"] += 1
        if self.seen is not None:
            self.seen.first_time(msg.message_id)
        return True
