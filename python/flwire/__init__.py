"""flwire: the schema-first wire layer for federated learning.

Protobuf schemas (``flwire.v1``), a zero-copy tensor codec with per-tensor zstd,
typed FL messages, a Kafka transport, and drop-in replacements for the old
``common`` package (``flwire.serialization``, ``flwire.communication``,
``flwire.models``, ``flwire.utils``, ``flwire.exceptions``).
"""

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
from flwire.serialization import (
    DecodeLimits,
    DifferentialWeightSerializer,
    LossyConfig,
    WeightSerializer,
    decode_tensor_map,
    encode_tensor_map,
    read_tensor_map,
)
from flwire.serialization.message_serializer import MessageSerializer
from flwire.serialization.messages import Message, MessageDecodeError, decode_message

__version__ = "0.1.0"

__all__ = [
    "AggregationException",
    "ChecksumMismatchError",
    "CommunicationException",
    "ConfigurationException",
    "DecodeLimits",
    "DifferentialWeightSerializer",
    "FLException",
    "LossyConfig",
    "Message",
    "MessageDecodeError",
    "MessageSerializer",
    "ModelException",
    "PayloadTooLargeError",
    "SerializationException",
    "TrainingException",
    "WeightSerializer",
    "__version__",
    "decode_message",
    "decode_tensor_map",
    "encode_tensor_map",
    "read_tensor_map",
]
