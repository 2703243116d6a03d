"""Drop-in replacement for ``common.communication.kafka_client``.

``AsyncKafkaClient`` keeps the old names and call shapes (``start``, ``stop``,
``send_message``, ``subscribe_to_topic``, ``health_check``) on top of the
flwire transport: confluent-kafka underneath, messages of any size (split and
reassembled), offsets committed only after the handler returns.

A handler that raises does not lose its message: the delivery is marked
failed, handed to the handler again (up to ``max_attempts``, 3 by default),
then written to the dead-letter topic ``<topic>.dead-letter`` and committed
(see :class:`~flwire.transport.FailurePolicy`). A consumer that stops on an
error (the broker unreachable for longer than ``connect_timeout_s``, ...) is
logged, kept in :attr:`AsyncKafkaClient.failures`, and makes
:meth:`~AsyncKafkaClient.health_check` return False.
"""

from __future__ import annotations

import asyncio
import difflib
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

from flwire._args import type_name
from flwire.exceptions import (
    CommunicationException,
    ConfigurationException,
    SerializationException,
)
from flwire.messages import Message, decode_message
from flwire.messages.envelope import split as split_envelope
from flwire.security.config import CONFIG_KEYS as SECURITY_KEYS
from flwire.security.config import signer_from_config, verifier_from_config
from flwire.transport import (
    DEFAULT_MAX_RECORD_BYTES,
    Channel,
    FailurePolicy,
    ProgressCallback,
    Transport,
    message_headers,
)
from flwire.transport.chunking import MAX_MEMORY_BYTES, Reassembler
from flwire.transport.events import EventCallback

logger = logging.getLogger(__name__)

#: The config keys AsyncKafkaClient reads (the README lists what each does):
#: its own and the signing ones (flwire.security.config).
CONFIG_KEYS = (
    "bootstrap_servers",
    "group_id",
    "producer_config",
    "consumer_config",
    "max_message_bytes",
    "delivery_timeout_s",
    "connect_timeout_s",
    "close_timeout_s",
    "max_attempts",
    "retry_backoff_s",
    "dead_letter_suffix",
    "part_timeout_s",
    "max_memory_bytes",
    "spill_dir",
    *SECURITY_KEYS,
)


def warn_misspelled_keys(config: Mapping[str, Any]) -> list[str]:
    """Log a warning for each key of ``config`` that is not one it reads but
    looks like one (``truststore`` for ``trust_store``: a misspelled security
    setting would otherwise turn verification off without a word); other keys
    are the application's own and pass. Returns the warnings."""
    found = []
    for key in config:
        if not isinstance(key, str) or key in CONFIG_KEYS:
            continue
        close = difflib.get_close_matches(
            key.lower().replace("-", "_"), CONFIG_KEYS, n=1, cutoff=0.8
        )
        if close:
            found.append(
                f"AsyncKafkaClient config key {key!r} is not one it reads: did you mean "
                f"{close[0]!r}? (it is ignored as written)"
            )
            logger.warning(found[-1])
    return found


class AsyncKafkaClient:
    """Asynchronous Kafka client.

    ``config`` keys: ``bootstrap_servers`` (required), ``group_id`` (default
    group for subscriptions), ``producer_config`` / ``consumer_config``
    (librdkafka properties), ``max_message_bytes`` (record limit, default
    1,000,000: larger messages are split), and the bounds:
    ``delivery_timeout_s`` (a send fails after this, default 30),
    ``close_timeout_s`` (``stop()`` waits this long for queued records, then
    logs how many were not delivered, default 10),
    ``connect_timeout_s`` (subscribing retries this long while the broker is
    down, default 60), ``part_timeout_s`` (a transfer missing parts this long
    is dropped and reported, default 120), ``max_memory_bytes`` (data of
    incomplete transfers kept in memory, default 1 GiB; past it their parts
    wait in a spill file in ``spill_dir``, the temporary directory by default;
    None: all in memory), ``max_attempts`` (handler attempts
    per message, default 3), ``retry_backoff_s`` (wait before the second
    attempt, doubling after, default 0.5) and ``dead_letter_suffix`` (default
    ``".dead-letter"``; None skips failed messages, counted only). Security:
    ``security_protocol``, ``sasl_mechanisms``, ``sasl_username``,
    ``sasl_password`` and ``ssl_ca_location`` (or their librdkafka names,
    ``security.protocol`` ...), overridden by ``FLWIRE_KAFKA__SASL_PASSWORD``
    and the like, go to every Kafka client it creates (see
    :mod:`flwire.transport.kafka_security`). Signed messages (wire format
    section 14.3): ``signing_key`` (a private key file; ``key_id``, by default
    its name) signs every message sent; ``trust_store`` (a directory of
    ``<id>.pub`` files or a CSV) verifies every message received before the
    handler sees it, and refuses (logs, counts in :attr:`refusals` and commits)
    an unsigned one, an unknown key, a bad signature, a sender that is not the
    key's id, a replay, and a timestamp further than ``timestamp_window_s``
    (default 600) from this clock; ``require_signatures: False`` lets unsigned
    messages through. ``FLWIRE_SIGNING_KEY``, ``FLWIRE_KEY_ID`` and
    ``FLWIRE_TRUST_STORE`` override them (see :mod:`flwire.security.config`).
    Without them nothing is signed or verified, as before. Pass
    ``transport=`` to run the same code on another transport (e.g. the
    in-memory one), ``on_event=`` to be told of dropped transfers and failed
    messages.
    """

    def __init__(
        self,
        config: dict[str, Any],
        *,
        transport: Transport | None = None,
        on_progress: ProgressCallback | None = None,
        on_event: EventCallback | None = None,
    ) -> None:
        if not isinstance(config, Mapping):
            raise ConfigurationException(
                "AsyncKafkaClient needs a config dict, e.g. "
                f"{{'bootstrap_servers': 'localhost:9092'}}; got {type_name(config)}"
            )
        self.config = config
        warn_misspelled_keys(config)
        self.running = False
        self.message_handlers: dict[str, Callable[..., Any]] = {}
        self.consumers: dict[str, asyncio.Task[None]] = {}
        #: Consumers that stopped on an error, by topic.
        self.failures: dict[str, BaseException] = {}
        self._transport = transport
        self._on_progress = on_progress
        self._on_event = on_event
        self.channel: Channel | None = None
        #: Signs what is sent (``signing_key``), verifies what is received
        #: (``trust_store``): None when not configured.
        self.signer = signer_from_config(config)
        self.verifier = verifier_from_config(config, name="AsyncKafkaClient")

    @property
    def refusals(self) -> dict[str, int]:
        """Received messages refused by verification, by reason."""
        return dict(self.verifier.refusals) if self.verifier is not None else {}

    def _make_transport(self) -> Transport:
        if "bootstrap_servers" not in self.config:
            raise CommunicationException("AsyncKafkaClient config needs 'bootstrap_servers'")
        from flwire.transport import kafka  # imports confluent-kafka

        return kafka.KafkaTransport(
            self.config["bootstrap_servers"],
            producer_config=self.config.get("producer_config"),
            consumer_config=self.config.get("consumer_config"),
            max_record_bytes=self.config.get("max_message_bytes", DEFAULT_MAX_RECORD_BYTES),
            delivery_timeout_s=float(
                self.config.get("delivery_timeout_s", kafka.DEFAULT_DELIVERY_TIMEOUT_S)
            ),
            connect_timeout_s=float(
                self.config.get("connect_timeout_s", kafka.DEFAULT_CONNECT_TIMEOUT_S)
            ),
            close_timeout_s=float(
                self.config.get("close_timeout_s", kafka.DEFAULT_CLOSE_TIMEOUT_S)
            ),
            security=self.config,
        )

    async def start(self) -> None:
        """Connect the producer."""
        # Settings first: a refused one must not leave a started transport behind.
        policy = FailurePolicy(
            max_attempts=int(self.config.get("max_attempts", FailurePolicy.max_attempts)),
            retry_backoff_s=float(
                self.config.get("retry_backoff_s", FailurePolicy.retry_backoff_s)
            ),
            dead_letter_suffix=self.config.get(
                "dead_letter_suffix", FailurePolicy.dead_letter_suffix
            ),
        )
        reassembler = Reassembler(
            part_timeout=float(self.config.get("part_timeout_s", 120.0)),
            max_memory_bytes=self.config.get("max_memory_bytes", MAX_MEMORY_BYTES),
            spill_dir=self.config.get("spill_dir"),
        )
        transport = self._transport or self._make_transport()
        await transport.start()
        self._transport = transport
        self.channel = Channel(
            transport,
            on_progress=self._on_progress,
            on_event=self._on_event,
            failure_policy=policy,
            reassembler=reassembler,
        )
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
        """Send a message (a flwire Message, bytes, or str) and wait for the broker's
        ack. Without ``key``, a flwire message (or its bytes) is keyed by its
        sender id, as ``Channel.send_message`` keys it (scale-out aggregators
        refuse a client update keyed otherwise); other bytes go unkeyed."""
        if self.channel is None:
            raise CommunicationException("Producer not initialized: call start() first")
        headers = None
        transfer_id = None
        if isinstance(message, str):
            message = message.encode("utf-8")
        if self.signer is not None and not isinstance(message, Message):
            message = decode_message(message)  # to be signed below
        if isinstance(message, Message):
            msg = message
            if self.signer is not None and not msg.envelope.HasField("signature"):
                self.signer.attach(msg)  # sets an empty sender id to the key id
            if msg.sources is not None:
                # Built with EncodeOptions(stream=True): a streamed transfer, keyed by
                # its sender (its seal signed when a signer is configured).
                await self.channel.send_message(topic, msg)
                return
            message = msg.buffers()  # the Channel splits them without a join
            headers = message_headers(msg)
            transfer_id = msg.message_id
            if key is None and msg.sender_id:
                # Keyed by its sender, as Channel.send_message keys it: a client's
                # parts stay in one partition, which scale-out aggregators require.
                key = msg.sender_id
        if key is None and isinstance(message, bytes):
            key = _sender_of(message)
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
        try:
            async for delivery in self.channel.receive([topic], group, verifier=self.verifier):
                try:
                    payload = delivery.payload
                    if payload is None and delivery.message is not None:
                        # A streamed transfer: the old handlers take message bytes.
                        payload = delivery.message.to_bytes()
                    result = handler(payload)
                    if inspect.isawaitable(result):
                        await result
                except Exception as exc:
                    # Retried, then dead-lettered by the channel's FailurePolicy.
                    await delivery.fail(exc)
                    continue
                await delivery.done()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failures[topic] = exc
            logger.error(
                "Consumer of %s (group %s) stopped: %s; health_check() now reports False",
                topic,
                group,
                exc,
            )
            raise

    async def health_check(self) -> bool:
        """Whether the broker answers a metadata request and no consumer has
        stopped on an error (see :attr:`failures`)."""
        if self._transport is None or self.failures:
            return False
        return await self._transport.healthy()


def _sender_of(payload: bytes) -> str | None:
    """The sender id of a flwire message's bytes (its envelope parsed, its weights
    left as they are), the key a message is sent with; None for bytes that are no
    flwire message (sent unkeyed, as given)."""
    try:
        envelope, _weights = split_envelope(payload)
    except SerializationException:
        return None
    return envelope.sender_id or None
