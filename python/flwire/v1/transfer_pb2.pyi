# Generated from proto/flwire/v1 by codegen/generate.py. DO NOT EDIT!
# Change the .proto files and run `make gen`.
from flwire.v1 import messages_pb2 as _messages_pb2
from flwire.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TransferPart(_message.Message):
    __slots__ = ("transfer_id", "part_index", "part_count", "total_size", "offset", "payload_crc32c", "data")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    PART_INDEX_FIELD_NUMBER: _ClassVar[int]
    PART_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_CRC32C_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    part_index: int
    part_count: int
    total_size: int
    offset: int
    payload_crc32c: int
    data: bytes
    def __init__(self, transfer_id: _Optional[str] = ..., part_index: _Optional[int] = ..., part_count: _Optional[int] = ..., total_size: _Optional[int] = ..., offset: _Optional[int] = ..., payload_crc32c: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class StreamPart(_message.Message):
    __slots__ = ("transfer_id", "part_index", "head", "chunk", "seal")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    PART_INDEX_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    SEAL_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    part_index: int
    head: StreamHead
    chunk: TensorChunk
    seal: StreamSeal
    def __init__(self, transfer_id: _Optional[str] = ..., part_index: _Optional[int] = ..., head: _Optional[_Union[StreamHead, _Mapping]] = ..., chunk: _Optional[_Union[TensorChunk, _Mapping]] = ..., seal: _Optional[_Union[StreamSeal, _Mapping]] = ...) -> None: ...

class StreamHead(_message.Message):
    __slots__ = ("envelope", "tensors", "signed")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    SIGNED_FIELD_NUMBER: _ClassVar[int]
    envelope: _messages_pb2.Envelope
    tensors: _containers.RepeatedCompositeFieldContainer[TensorInfo]
    signed: bool
    def __init__(self, envelope: _Optional[_Union[_messages_pb2.Envelope, _Mapping]] = ..., tensors: _Optional[_Iterable[_Union[TensorInfo, _Mapping]]] = ..., signed: _Optional[bool] = ...) -> None: ...

class TensorInfo(_message.Message):
    __slots__ = ("name", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: _tensor_pb2.Dtype
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[_tensor_pb2.Dtype, str]] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class TensorChunk(_message.Message):
    __slots__ = ("tensor_index", "element_offset", "elements")
    TENSOR_INDEX_FIELD_NUMBER: _ClassVar[int]
    ELEMENT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    tensor_index: int
    element_offset: int
    elements: _tensor_pb2.TensorMap
    def __init__(self, tensor_index: _Optional[int] = ..., element_offset: _Optional[int] = ..., elements: _Optional[_Union[_tensor_pb2.TensorMap, _Mapping]] = ...) -> None: ...

class StreamSeal(_message.Message):
    __slots__ = ("part_count", "stream_crc32c", "signature")
    PART_COUNT_FIELD_NUMBER: _ClassVar[int]
    STREAM_CRC32C_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    part_count: int
    stream_crc32c: int
    signature: _messages_pb2.Signature
    def __init__(self, part_count: _Optional[int] = ..., stream_crc32c: _Optional[int] = ..., signature: _Optional[_Union[_messages_pb2.Signature, _Mapping]] = ...) -> None: ...
