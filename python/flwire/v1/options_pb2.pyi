# Generated from proto/flwire/v1 by codegen/generate.py. DO NOT EDIT!
# Change the .proto files and run `make gen`.
from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Topic(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOPIC_UNSPECIFIED: _ClassVar[Topic]
    TOPIC_BROADCAST: _ClassVar[Topic]
    TOPIC_UPDATES: _ClassVar[Topic]
    TOPIC_CONTROL: _ClassVar[Topic]
    TOPIC_ANY: _ClassVar[Topic]
    TOPIC_AGGREGATES: _ClassVar[Topic]

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_SERVER: _ClassVar[Role]
    ROLE_CLIENT: _ClassVar[Role]
    ROLE_ANY: _ClassVar[Role]
    ROLE_AGGREGATOR: _ClassVar[Role]
TOPIC_UNSPECIFIED: Topic
TOPIC_BROADCAST: Topic
TOPIC_UPDATES: Topic
TOPIC_CONTROL: Topic
TOPIC_ANY: Topic
TOPIC_AGGREGATES: Topic
ROLE_UNSPECIFIED: Role
ROLE_SERVER: Role
ROLE_CLIENT: Role
ROLE_ANY: Role
ROLE_AGGREGATOR: Role
MESSAGE_FIELD_NUMBER: _ClassVar[int]
message: _descriptor.FieldDescriptor
FIELD_FIELD_NUMBER: _ClassVar[int]
field: _descriptor.FieldDescriptor

class MessageRules(_message.Message):
    __slots__ = ("topic", "sender")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    topic: Topic
    sender: Role
    def __init__(self, topic: _Optional[_Union[Topic, str]] = ..., sender: _Optional[_Union[Role, str]] = ...) -> None: ...

class FieldRules(_message.Message):
    __slots__ = ("required", "non_negative")
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    NON_NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    required: bool
    non_negative: bool
    def __init__(self, required: _Optional[bool] = ..., non_negative: _Optional[bool] = ...) -> None: ...
