"""The exception hierarchy of flwire, a superset of the old ``common.exceptions``.

Every error the SDK raises on purpose is an :class:`FLException`, so callers can
catch one type. The seven classes of the old package keep their names.
"""

from __future__ import annotations


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


class ConfigurationException(FLException):
    """A configuration file or value is invalid."""


class TrainingException(FLException):
    """Local training failed."""


class AggregationException(FLException):
    """Weights could not be aggregated."""
