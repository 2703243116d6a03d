"""librdkafka's log lines and errors, routed to Python logging; which errors
mean the broker is unreachable (:class:`BrokerUnreachable`, retried).

Every confluent-kafka client flwire creates gets :func:`client_logging`'s
settings: its log lines go to the ``flwire.transport.kafka.librdkafka``
logger and its errors to :func:`on_client_error`, never straight to stderr.
A client whose broker is down repeats the same line about 20 times a second,
so each line (digits ignored) passes at most once per ``REPEAT_S`` seconds, and
at INFO at most (:class:`Demote`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

from flwire import _optional

_optional.require("confluent_kafka")  # a clear error naming the extra when it is missing

from confluent_kafka import KafkaError  # noqa: E402

from flwire.exceptions import CommunicationException  # noqa: E402
from flwire.transport import kafka_security  # noqa: E402

logger = logging.getLogger("flwire.transport.kafka")
librdkafka_logger = logging.getLogger("flwire.transport.kafka.librdkafka")

#: The same line is logged at most once per this many seconds.
REPEAT_S = 30.0

#: Error codes meaning the broker cannot be reached (librdkafka retries them).
UNREACHABLE = (
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._TIMED_OUT,
    KafkaError.REQUEST_TIMED_OUT,
)

#: Error codes meaning the broker refused who the client is: wrong SASL credentials,
#: or a TLS handshake that failed (e.g. a CA that did not sign the broker's certificate).
REFUSED = (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._SSL)

#: Error codes meaning the broker's ACLs do not allow what was asked.
DENIED = (
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
)


class BrokerUnreachable(CommunicationException):
    """The broker did not answer in time; the transport retries it within its bound."""


class Repeats(logging.Filter):
    """Lets each line through once per REPEAT_S seconds, digits ignored."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_in_a_while(self, text: str) -> bool:
        key = re.sub(r"\d+", "#", text)
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, now - REPEAT_S) < REPEAT_S:
                return False
            if len(self._last) > 1000:
                self._last.clear()
            self._last[key] = now
        return True

    def filter(self, record: logging.LogRecord) -> bool:
        return self.first_in_a_while(record.getMessage())


class Demote(logging.Filter):
    """librdkafka's own lines go out at INFO at most: what a user must know (the
    broker unreachable, a fatal error) reaches them through :func:`on_client_error`
    as one WARNING line, and an application without logging configured (Python's
    last-resort handler prints WARNING and above to stderr) sees no raw
    librdkafka lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_repeats = Repeats()
librdkafka_logger.addFilter(_repeats)
librdkafka_logger.addFilter(Demote())


def reason(err: Any) -> str:
    """A KafkaError as ``NAME: text``."""
    if isinstance(err, KafkaError):
        return f"{err.name()}: {err.str()}"
    return str(err)


def on_client_error(err: Any) -> None:
    """librdkafka's error callback: client-level errors (broker down, ...), which
    it retries on its own; fatal ones also fail the calls that follow."""
    text = reason(err)
    if not _repeats.first_in_a_while(text):
        return
    if err.code() in UNREACHABLE:
        logger.warning("Kafka broker unreachable: %s (librdkafka keeps retrying)", text)
    else:
        logger.warning("Kafka client error: %s", text)


def client_logging(*, errors: bool = True) -> dict[str, Any]:
    """Client settings that route librdkafka's log lines and (with ``errors``) its
    error callback to Python logging. An admin client takes ``errors=False``: its
    failures reach the caller as exceptions of its calls, and its error callback
    would only fire when the client is garbage-collected, long after the call."""
    config: dict[str, Any] = {"logger": librdkafka_logger}
    if errors:
        config["error_cb"] = on_client_error
    return config


def refused_message(err: Any, servers: str, config: dict[str, Any]) -> str:
    """Why the broker at ``servers`` refused this client, and what to fix."""
    who = kafka_security.describe(config)
    if isinstance(err, KafkaError) and err.code() == KafkaError._SSL:
        return (
            f"TLS with the Kafka broker at {servers} failed for {who}: {reason(err)}. Check "
            "ssl.ca.location (the CA that signed the broker's certificate; "
            f"{kafka_security.env_name('ssl.ca.location')}) and that the address matches the "
            "certificate"
        )
    user = config.get("sasl.username")
    return (
        f"authentication failed: the Kafka broker at {servers} refused {who}: wrong user "
        f"name or password ({reason(err)}). Check sasl.username and sasl.password "
        f"({kafka_security.env_name('sasl.username')}, "
        f"{kafka_security.env_name('sasl.password')}) and sasl.mechanisms; the user "
        f"{user!r} must have a SCRAM credential on the broker (kafka/broker.sh --secure: "
        "$FLWIRE_KAFKA_HOME/secure/users.properties)"
    )


def denied_message(err: Any, action: str, resource: str, config: dict[str, Any]) -> str:
    """An ACL denial: ``action`` (e.g. ``write topic``) on ``resource`` by this client."""
    principal = kafka_security.principal(config)
    return (
        f"not authorized to {action} {resource!r}: the broker's ACLs do not allow it to "
        f"{principal} ({reason(err)}). Use a {action.split()[-1]} this user is granted, or "
        f"grant it (kafka/broker.sh acl-job <job> --secure for a flwire job; else kafka-acls "
        f"--add --allow-principal {principal} ...)"
    )


def denied_reading(err: Any, topics: str, config: dict[str, Any]) -> str:
    """An ACL denial met by a consumer of ``topics``: on its group (``group.id``
    in ``config``) or on the topics."""
    if isinstance(err, KafkaError) and err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
        return denied_message(err, "use consumer group", str(config.get("group.id")), config)
    return denied_message(err, "read topic", topics, config)


def is_refused(err: Any) -> bool:
    return isinstance(err, KafkaError) and err.code() in REFUSED


def is_denied(err: Any) -> bool:
    return isinstance(err, KafkaError) and err.code() in DENIED
