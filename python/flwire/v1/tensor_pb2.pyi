# Generated from proto/flwire/v1 by codegen/generate.py. DO NOT EDIT!
# Change the .proto files and run `make gen`.
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Dtype(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[Dtype]
    DTYPE_FLOAT32: _ClassVar[Dtype]
    DTYPE_FLOAT64: _ClassVar[Dtype]
    DTYPE_FLOAT16: _ClassVar[Dtype]
    DTYPE_BFLOAT16: _ClassVar[Dtype]
    DTYPE_FLOAT8_E4M3FN: _ClassVar[Dtype]
    DTYPE_FLOAT8_E5M2: _ClassVar[Dtype]
    DTYPE_INT8: _ClassVar[Dtype]
    DTYPE_INT16: _ClassVar[Dtype]
    DTYPE_INT32: _ClassVar[Dtype]
    DTYPE_INT64: _ClassVar[Dtype]
    DTYPE_UINT8: _ClassVar[Dtype]
    DTYPE_UINT16: _ClassVar[Dtype]
    DTYPE_UINT32: _ClassVar[Dtype]
    DTYPE_UINT64: _ClassVar[Dtype]
    DTYPE_BOOL: _ClassVar[Dtype]
    DTYPE_COMPLEX64: _ClassVar[Dtype]
    DTYPE_COMPLEX128: _ClassVar[Dtype]
    DTYPE_COMPLEX32: _ClassVar[Dtype]
    DTYPE_FLOAT8_E4M3FNUZ: _ClassVar[Dtype]
    DTYPE_FLOAT8_E5M2FNUZ: _ClassVar[Dtype]
    DTYPE_FLOAT8_E8M0FNU: _ClassVar[Dtype]

class Codec(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CODEC_UNSPECIFIED: _ClassVar[Codec]
    CODEC_ZSTD: _ClassVar[Codec]
    CODEC_LZ4: _ClassVar[Codec]

class Filter(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FILTER_UNSPECIFIED: _ClassVar[Filter]
    FILTER_BYTE_SHUFFLE: _ClassVar[Filter]

class Lossy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOSSY_UNSPECIFIED: _ClassVar[Lossy]
    LOSSY_CAST_FLOAT16: _ClassVar[Lossy]
    LOSSY_CAST_BFLOAT16: _ClassVar[Lossy]
    LOSSY_BLOCK_INT8: _ClassVar[Lossy]
    LOSSY_TOP_K: _ClassVar[Lossy]
DTYPE_UNSPECIFIED: Dtype
DTYPE_FLOAT32: Dtype
DTYPE_FLOAT64: Dtype
DTYPE_FLOAT16: Dtype
DTYPE_BFLOAT16: Dtype
DTYPE_FLOAT8_E4M3FN: Dtype
DTYPE_FLOAT8_E5M2: Dtype
DTYPE_INT8: Dtype
DTYPE_INT16: Dtype
DTYPE_INT32: Dtype
DTYPE_INT64: Dtype
DTYPE_UINT8: Dtype
DTYPE_UINT16: Dtype
DTYPE_UINT32: Dtype
DTYPE_UINT64: Dtype
DTYPE_BOOL: Dtype
DTYPE_COMPLEX64: Dtype
DTYPE_COMPLEX128: Dtype
DTYPE_COMPLEX32: Dtype
DTYPE_FLOAT8_E4M3FNUZ: Dtype
DTYPE_FLOAT8_E5M2FNUZ: Dtype
DTYPE_FLOAT8_E8M0FNU: Dtype
CODEC_UNSPECIFIED: Codec
CODEC_ZSTD: Codec
CODEC_LZ4: Codec
FILTER_UNSPECIFIED: Filter
FILTER_BYTE_SHUFFLE: Filter
LOSSY_UNSPECIFIED: Lossy
LOSSY_CAST_FLOAT16: Lossy
LOSSY_CAST_BFLOAT16: Lossy
LOSSY_BLOCK_INT8: Lossy
LOSSY_TOP_K: Lossy

class LossyEncoding(_message.Message):
    __slots__ = ("method", "block_size", "k")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    BLOCK_SIZE_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    method: Lossy
    block_size: int
    k: int
    def __init__(self, method: _Optional[_Union[Lossy, str]] = ..., block_size: _Optional[int] = ..., k: _Optional[int] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("name", "dtype", "shape", "codec", "filter", "raw_size", "crc32c", "padding", "data", "lossy")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    RAW_SIZE_FIELD_NUMBER: _ClassVar[int]
    CRC32C_FIELD_NUMBER: _ClassVar[int]
    PADDING_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LOSSY_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: Dtype
    shape: _containers.RepeatedScalarFieldContainer[int]
    codec: Codec
    filter: Filter
    raw_size: int
    crc32c: int
    padding: bytes
    data: bytes
    lossy: LossyEncoding
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[Dtype, str]] = ..., shape: _Optional[_Iterable[int]] = ..., codec: _Optional[_Union[Codec, str]] = ..., filter: _Optional[_Union[Filter, str]] = ..., raw_size: _Optional[int] = ..., crc32c: _Optional[int] = ..., padding: _Optional[bytes] = ..., data: _Optional[bytes] = ..., lossy: _Optional[_Union[LossyEncoding, _Mapping]] = ...) -> None: ...

class TensorMap(_message.Message):
    __slots__ = ("tensors", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    tensors: _containers.RepeatedCompositeFieldContainer[Tensor]
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, tensors: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...
