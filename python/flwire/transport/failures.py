"""What happens to a delivery whose handler fails.

The application marks a delivery failed with ``await delivery.fail(error)``
(the compat ``AsyncKafkaClient`` does so when its handler raises). The
Channel then hands the same delivery out again, up to ``max_attempts`` in all,
waiting ``retry_backoff_s`` (doubling, at most ``MAX_BACKOFF_S``) before each
new attempt. Later deliveries wait behind it, so per-key order holds.

After the last attempt the payload is written to the dead-letter topic
(``<topic><dead_letter_suffix>``, default ``.dead-letter``) with headers naming
the error, the attempts and where it came from, and its offsets are committed:
the consumer moves on, and nothing is lost. With ``dead_letter_suffix=None``
the delivery is skipped instead, counted in ``Channel.stats["failed_deliveries"]``
and reported as a :class:`~flwire.transport.events.DeliveryFailed` event.

Retries happen inside one process. A handler that kills the process is met
again after the restart (the offset was not committed), with its attempts
counted from 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from flwire.transport.base import Headers

#: Longest wait before a retry.
MAX_BACKOFF_S = 5.0

#: Headers added to a dead-lettered payload.
ERROR_HEADER = "flwire-error"
ATTEMPTS_HEADER = "flwire-attempts"
SOURCE_HEADER = "flwire-source"


@dataclass(frozen=True)
class FailurePolicy:
    """Redeliver a failed delivery up to ``max_attempts`` times in all, then
    dead-letter it (or skip it, with ``dead_letter_suffix=None``)."""

    max_attempts: int = 3
    retry_backoff_s: float = 0.5
    dead_letter_suffix: str | None = ".dead-letter"

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.retry_backoff_s < 0:
            raise ValueError(f"retry_backoff_s must be >= 0, got {self.retry_backoff_s}")
        if self.dead_letter_suffix == "":
            raise ValueError("dead_letter_suffix must not be empty (None skips instead)")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1``."""
        return float(min(MAX_BACKOFF_S, self.retry_backoff_s * 2 ** max(0, attempt - 1)))

    def dead_letter_topic(self, topic: str) -> str | None:
        return None if self.dead_letter_suffix is None else topic + self.dead_letter_suffix


def dead_letter_headers(headers: Headers, *, error: str, attempts: int, source: str) -> Headers:
    """The original headers plus what a dead-letter reader needs to know."""
    return [
        *headers,
        (ERROR_HEADER, error.encode("utf-8", "replace")[:4096]),
        (ATTEMPTS_HEADER, str(attempts).encode()),
        (SOURCE_HEADER, source.encode()),
    ]
