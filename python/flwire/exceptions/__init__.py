"""Exceptions raised by flwire (mirrors ``common.exceptions``)."""

from flwire.exceptions.custom_exceptions import (
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
