"""Drop-in replacement for ``common.communication.kafka_client``.

``AsyncKafkaClient`` keeps the old names and call shapes (``start``, ``stop``,
``send_message``, ``subscribe_to_topic``, ``health_check``) on top of the
flwire transport: confluent-kafka underneath, messages of any size (split and
reassembled), offsets committed only after the handler returns.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

from flwire.exceptions import CommunicationException
from flwire.messages import Message
from flwire.transport import (
    DEFAULT_MAX_RECORD_BYTES,
    Channel,
    ProgressCallback,
    Transport,
    message_headers,
)

logger = logging.getLogger(__name__)


class AsyncKafkaClient:
    """Asynchronous Kafka client.

    ``config`` keys: ``bootstrap_servers`` (required), ``group_id`` (default
    group for subscriptions), ``producer_config`` / ``consumer_config``
    (librdkafka properties), ``max_message_bytes`` (record limit, default
    1,000,000: larger messages are split). Pass ``transport=`` to run the same
    code on another transport (e.g. the in-memory one).
    """

    def __init__(
        self,
        config: dict[str, Any],
        *,
        transport: Transport | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.config = config
        self.running = False
        self.message_handlers: dict[str, Callable[..., Any]] = {}
        self.consumers: dict[str, asyncio.Task[None]] = {}
        self._transport = transport
        self._on_progress = on_progress
        self.channel: Channel | None = None

    def _make_transport(self) -> Transport:
        if "bootstrap_servers" not in self.config:
            raise CommunicationException("AsyncKafkaClient config needs 'bootstrap_servers'")
        from flwire.transport.kafka import KafkaTransport  # imports confluent-kafka

        return KafkaTransport(
            self.config["bootstrap_servers"],
            producer_config=self.config.get("producer_config"),
            consumer_config=self.config.get("consumer_config"),
            max_record_bytes=self.config.get("max_message_bytes", DEFAULT_MAX_RECORD_BYTES),
        )

    async def start(self) -> None:
        """Connect the producer."""
        transport = self._transport or self._make_transport()
        await transport.start()
        self._transport = transport
        self.channel = Channel(transport, on_progress=self._on_progress)
        self.running = True
        logger.info("Kafka client started")

    async def stop(self) -> None:
        """Stop consuming, deliver what is queued, and close."""
        self.running = False
        for task in self.consumers.values():
            task.cancel()
        await asyncio.gather(*self.consumers.values(), return_exceptions=True)
        self.consumers.clear()
        if self._transport is not None:
            await self._transport.stop()
        logger.info("Kafka client stopped")

    async def send_message(self, topic: str, message: Any, key: str | bytes | None = None) -> None:
        """Send a message (a flwire Message, bytes, or str) and wait for the broker's ack."""
        if self.channel is None:
            raise CommunicationException("Producer not initialized: call start() first")
        headers = None
        transfer_id = None
        if isinstance(message, Message):
            headers = message_headers(message)
            transfer_id = message.message_id
            message = message.to_bytes()
        elif isinstance(message, str):
            message = message.encode("utf-8")
        raw_key = key.encode("utf-8") if isinstance(key, str) else key
        await self.channel.send(
            topic, message, key=raw_key, headers=headers, transfer_id=transfer_id
        )

    async def subscribe_to_topic(
        self, topic: str, handler: Callable[[Any], Any], group_id: str | None = None
    ) -> None:
        """Consume ``topic`` in the background, calling ``handler(value)`` for each
        message; its offset is committed once the handler returns."""
        if self.channel is None:
            raise CommunicationException("Client not started: call start() first")
        group = group_id or self.config.get("group_id")
        if not group:
            raise CommunicationException(f"no group_id for {topic!r}: pass one or set config")
        self.message_handlers[topic] = handler
        self.consumers[topic] = asyncio.create_task(self._consume(topic, group, handler))
        logger.info("Subscribed to topic: %s (group %s)", topic, group)

    async def _consume(self, topic: str, group: str, handler: Callable[[Any], Any]) -> None:
        assert self.channel is not None
        async for delivery in self.channel.receive([topic], group):
            try:
                result = handler(delivery.payload)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("Handler for %s failed; the message is skipped", topic)
            await delivery.done()

    async def health_check(self) -> bool:
        """Whether the broker answers a metadata request."""
        return self._transport is not None and await self._transport.healthy()
