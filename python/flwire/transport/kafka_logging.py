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
