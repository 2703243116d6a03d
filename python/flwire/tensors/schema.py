"""Field numbers of the tensor schema, read from the generated descriptors.

The fast codec never retypes a field number as a literal: a schema change shows
up here (and in the equivalence tests) instead of silently desynchronising.
"""

from __future__ import annotations

from flwire.v1 import tensor_pb2

_TENSOR = tensor_pb2.Tensor.DESCRIPTOR.fields_by_name
_MAP = tensor_pb2.TensorMap.DESCRIPTOR.fields_by_name
_ENTRY = tensor_pb2.TensorMap.DESCRIPTOR.nested_types_by_name["MetadataEntry"].fields_by_name

T_NAME = _TENSOR["name"].number
T_DTYPE = _TENSOR["dtype"].number
T_SHAPE = _TENSOR["shape"].number
T_CODEC = _TENSOR["codec"].number
T_FILTER = _TENSOR["filter"].number
T_RAW_SIZE = _TENSOR["raw_size"].number
T_CRC32C = _TENSOR["crc32c"].number
T_PADDING = _TENSOR["padding"].number
T_DATA = _TENSOR["data"].number

M_TENSORS = _MAP["tensors"].number
M_METADATA = _MAP["metadata"].number
E_KEY = _ENTRY["key"].number
E_VALUE = _ENTRY["value"].number

CODEC_NONE = tensor_pb2.CODEC_UNSPECIFIED
FILTER_NONE = tensor_pb2.FILTER_UNSPECIFIED
FILTER_BYTE_SHUFFLE = tensor_pb2.FILTER_BYTE_SHUFFLE

CODEC_NAMES = {v.number: v.name for v in tensor_pb2.Codec.DESCRIPTOR.values}
FILTER_NAMES = {v.number: v.name for v in tensor_pb2.Filter.DESCRIPTOR.values}
DTYPE_NAMES = {v.number: v.name for v in tensor_pb2.Dtype.DESCRIPTOR.values}

# Tensor.lossy (a LossyEncoding message) and its fields.
T_LOSSY = _TENSOR["lossy"].number
_LOSSY = tensor_pb2.LossyEncoding.DESCRIPTOR.fields_by_name
L_METHOD = _LOSSY["method"].number
L_BLOCK_SIZE = _LOSSY["block_size"].number
L_K = _LOSSY["k"].number

LOSSY_NONE = tensor_pb2.LOSSY_UNSPECIFIED
LOSSY_NAMES = {v.number: v.name for v in tensor_pb2.Lossy.DESCRIPTOR.values}
