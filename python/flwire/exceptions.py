"""The exception hierarchy of flwire, a superset of the old ``common.exceptions``
(which ``flwire.compat.exceptions`` re-exports).

Every error the SDK raises on purpose is an :class:`FLException`, so callers can
catch one type. The seven classes of the old package keep their names.
"""

from __future__ import annotations

from dataclasses import dataclass


class FLException(Exception):
    """Base exception for the federated learning system."""


class ModelException(FLException):
    """A model could not be built, compared or described."""


class SerializationException(FLException):
    """Bytes could not be encoded or decoded; the message says what and where."""


class ChecksumMismatchError(SerializationException):
    """A tensor's bytes do not match the CRC-32C recorded beside them."""


class PayloadTooLargeError(SerializationException):
    """A declared size is above the configured limit; nothing was allocated."""


class CommunicationException(FLException):
    """A transport (Kafka or in-memory) failed to send or receive."""


class HandlerError(FLException):
    """A message handler raised; the original exception is its ``__cause__``.

    Raised by ``Dispatcher.handle_message`` so that the receive loop can mark
    the delivery failed (``await delivery.fail(exc)``): it is then retried and
    finally dead-lettered, never silently committed.
    """

    def __init__(self, message: str, *, message_type: str, message_id: str) -> None:
        super().__init__(message)
        self.message_type = message_type
        self.message_id = message_id


class ConfigurationException(FLException):
    """A configuration file or value is invalid."""


class TrainingException(FLException):
    """Local training failed."""


class AggregationException(FLException):
    """Weights could not be aggregated."""


class MissingDependencyError(FLException, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


@dataclass(frozen=True)
class Violation:
    """One broken rule of a message: ``field`` is its path (``client_update.round_id``),
    ``rule`` the rule's name from the schema (``required``, ``non_negative``, ...)."""

    field: str
    rule: str
    description: str

    def __str__(self) -> str:
        return f"{self.field}: {self.description} [{self.rule}]"


class MessageValidationError(SerializationException, ValueError):
    """A message breaks the rules its schema declares; ``violations`` lists each one.

    Raised when building a message. Also a ValueError.
    """

    def __init__(self, message: str, violations: tuple[Violation, ...] = ()) -> None:
        super().__init__(message)
        self.violations = violations


class MessageDecodeError(SerializationException, ValueError):
    """Bytes are not a valid flwire message. Also a ValueError, which is what the
    old ``MessageSerializer.deserialize_message`` raised."""


class InvalidMessageError(MessageDecodeError, MessageValidationError):
    """Received bytes parse as a message that breaks its schema's rules: both a
    :class:`MessageDecodeError` and a :class:`MessageValidationError`."""


class RefusedMessageError(FLException):
    """A receiver refused a message before handling it (see
    :class:`flwire.security.Verifier`). ``reason`` names why, one word per
    subclass, for logs and stats."""

    reason = "refused"


class SignatureError(RefusedMessageError):
    """A message was refused by signature verification (wire format section
    14.3)."""

    reason = "signature"


class UnsignedMessageError(SignatureError):
    """A message carries no signature where one is required."""

    reason = "unsigned"


class UnknownKeyError(SignatureError):
    """A message is signed with a key id the trust store does not hold."""

    reason = "unknown_key"


class BadSignatureError(SignatureError):
    """A signature does not verify (the bytes were changed, or were signed by
    another key), or the signature field itself is malformed."""

    reason = "bad_signature"


class SenderMismatchError(SignatureError):
    """A message's ``sender_id`` (or its body's ``client_id``) is not the id of
    the key that signed it."""

    reason = "sender_mismatch"


class UndecodableMessageError(RefusedMessageError):
    """A received message is not a valid flwire message (the cause is chained)."""

    reason = "undecodable"


class ReplayedMessageError(RefusedMessageError):
    """A message id was seen before: a replay, or a copy sent twice."""

    reason = "replay"


class StaleMessageError(RefusedMessageError):
    """A message's timestamp is outside the receiver's window around its clock."""

    reason = "timestamp"


class WrongRoundError(RefusedMessageError):
    """A client update is for another round than the one in progress."""

    reason = "round"
