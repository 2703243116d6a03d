"""Drop-in for ``common.exceptions.custom_exceptions``: the old seven classes
(and flwire's subclasses), defined once in :mod:`flwire.exceptions`."""

from flwire.exceptions import (
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
