"""The compiled tensor codec: state dicts <-> ``flwire.v1.TensorMap`` bytes.

Encoding writes the protobuf wire format of TensorMap directly: small headers
are built per tensor and the tensor bytes (views on the source tensors, or
their compressed frames: one frame per 512 KiB of a tensor, so that threads
share even a single large tensor) are joined into one output buffer, each byte
copied once. Decoding walks the wire format and returns tensors that are views
on the input buffer when a tensor is stored uncompressed (zero-copy), and
otherwise allocates exactly one output tensor and decompresses its frames, in
parallel, straight into it.

The bytes are identical to what the generated classes produce for the same
TensorMap, and either side parses the other's output (see tests/property).
Needs numpy only; torch tensors are handled when torch is installed.

Modules: :mod:`.options` (EncodeOptions), :mod:`.records` (DecodeLimits,
TensorRecord), :mod:`.sources`, :mod:`.encode`, :mod:`.decode`,
:mod:`.codecs` (zstd, lz4), :mod:`.shuffle`, :mod:`.lossy`, :mod:`.dtypes`,
:mod:`.torch_support`.
"""

from flwire.tensors.decode import TensorMapView, decode_tensor_map, read_tensor_map
from flwire.tensors.encode import (
    encode_tensor_map,
    encode_tensor_map_segments,
    split_state_dict,
)
from flwire.tensors.lossy import LossyConfig
from flwire.tensors.options import DEFAULT_OPTIONS, EncodeOptions
from flwire.tensors.records import (
    DEFAULT_LIMITS,
    GIB,
    MAX_MESSAGE_BYTES,
    WRITER_LIMITS,
    DecodeLimits,
    TensorLike,
    TensorRecord,
)

__all__ = [
    "DEFAULT_LIMITS",
    "WRITER_LIMITS",
    "DEFAULT_OPTIONS",
    "GIB",
    "MAX_MESSAGE_BYTES",
    "DecodeLimits",
    "EncodeOptions",
    "LossyConfig",
    "TensorLike",
    "TensorMapView",
    "TensorRecord",
    "decode_tensor_map",
    "encode_tensor_map",
    "encode_tensor_map_segments",
    "read_tensor_map",
    "split_state_dict",
]
