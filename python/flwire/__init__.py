"""flwire: the schema-first wire layer for federated learning.

The core verbs are here, framework-neutral (numpy arrays and torch tensors
alike; ``flwire.numpy`` and ``flwire.torch`` add safetensors-style ``save`` /
``load`` per framework)::

    blob = flwire.encode_tensor_map(state_dict)              # zstd per tensor, exact
    state = flwire.decode_tensor_map(blob, as_numpy=True)

Packages: :mod:`flwire.messages` (typed FL messages), :mod:`flwire.transport`
(in-memory and Kafka transports, channels), :mod:`flwire.v1` (the generated
Protobuf classes), :mod:`flwire.compat` (the old ``common`` API, path by path).
``import flwire`` loads none of torch, confluent-kafka, scikit-learn or matplotlib.
"""

from flwire.exceptions import (
    ChecksumMismatchError,
    FLException,
    MissingDependencyError,
    PayloadTooLargeError,
    SerializationException,
)
from flwire.tensors import (
    DecodeLimits,
    EncodeOptions,
    LossyConfig,
    TensorMapView,
    decode_tensor_map,
    encode_tensor_map,
    read_tensor_map,
)

__all__ = [
    "ChecksumMismatchError",
    "DecodeLimits",
    "EncodeOptions",
    "FLException",
    "LossyConfig",
    "MissingDependencyError",
    "PayloadTooLargeError",
    "SerializationException",
    "TensorMapView",
    "__version__",
    "decode_tensor_map",
    "encode_tensor_map",
    "read_tensor_map",
]


def __getattr__(name: str) -> str:
    # The version comes from the installed metadata, read on first use:
    # importlib.metadata alone would add a fifth to the import time.
    if name == "__version__":
        from flwire._version import __version__

        return __version__
    raise AttributeError(f"module 'flwire' has no attribute {name!r}")
