"""Drop-in for ``common.exceptions``."""

from flwire.compat.exceptions.custom_exceptions import (
    AggregationException,
    ChecksumMismatchError,
    CommunicationException,
    ConfigurationException,
    FLException,
    ModelException,
    PayloadTooLargeError,
    SerializationException,
    TrainingException,
)

__all__ = [
    "AggregationException",
    "ChecksumMismatchError",
    "CommunicationException",
    "ConfigurationException",
    "FLException",
    "ModelException",
    "PayloadTooLargeError",
    "SerializationException",
    "TrainingException",
]
