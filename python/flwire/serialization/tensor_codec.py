"""The compiled tensor codec: state dicts <-> TensorMap protobuf bytes.

Encoding writes the protobuf wire format of ``flwire.v1.TensorMap`` directly:
small headers are built per tensor and the tensor bytes (views on the source
tensors, or their compressed frames: one zstd frame per 512 KiB of a tensor, so
that threads share even a single large tensor) are joined into one output
buffer, each byte copied once. Decoding walks the wire format and returns
tensors that are views on the input buffer when a tensor is stored uncompressed
(zero-copy), and otherwise allocates exactly one output tensor and decompresses
its frames, in parallel, straight into it.

The bytes are identical to what the generated classes produce for the same
TensorMap, and either side parses the other's output (see tests/property).

This module is the public facade; the work is done in ``tensor_types`` (shared
constants, ``DecodeLimits``, ``TensorRecord``), ``tensor_sources`` (torch and
numpy values to raw bytes, lossy hook included), ``tensor_encode`` (the
encoder) and ``tensor_decode`` (parsing and decoding).
"""

from __future__ import annotations

from flwire.serialization.tensor_decode import TensorMapView, decode_tensor_map, read_tensor_map
from flwire.serialization.tensor_encode import (
    encode_tensor_map,
    encode_tensor_map_segments,
    split_state_dict,
)
from flwire.serialization.tensor_types import (
    DEFAULT_LIMITS,
    GIB,
    MAX_MESSAGE_BYTES,
    Compression,
    DecodeLimits,
    TensorLike,
    TensorRecord,
)

__all__ = [
    "DEFAULT_LIMITS",
    "GIB",
    "MAX_MESSAGE_BYTES",
    "Compression",
    "DecodeLimits",
    "TensorLike",
    "TensorMapView",
    "TensorRecord",
    "decode_tensor_map",
    "encode_tensor_map",
    "encode_tensor_map_segments",
    "read_tensor_map",
    "split_state_dict",
]
