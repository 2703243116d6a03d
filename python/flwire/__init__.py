"""flwire: the schema-first wire layer for federated learning.

Protobuf schemas (``flwire.v1``), a zero-copy tensor codec with per-tensor zstd,
and drop-in replacements for the old ``common`` package's serializers.
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
    WeightSerializer,
    decode_tensor_map,
    encode_tensor_map,
    read_tensor_map,
)

__version__ = "0.1.0"

__all__ = [
    "AggregationException",
    "ChecksumMismatchError",
    "CommunicationException",
    "ConfigurationException",
    "DecodeLimits",
    "DifferentialWeightSerializer",
    "FLException",
    "ModelException",
    "PayloadTooLargeError",
    "SerializationException",
    "TrainingException",
    "WeightSerializer",
    "__version__",
    "decode_tensor_map",
    "encode_tensor_map",
    "read_tensor_map",
]
