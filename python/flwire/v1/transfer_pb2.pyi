# Generated from proto/flwire/v1 by codegen/generate.py. DO NOT EDIT!
# Change the .proto files and run `make gen`.
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

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
