# Generated from proto/flwire/v1 by codegen/generate.py. DO NOT EDIT!
# Change the .proto files and run `make gen`.
import datetime

from flwire.v1 import options_pb2 as _options_pb2
from flwire.v1 import tensor_pb2 as _tensor_pb2
from flwire.v1 import values_pb2 as _values_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SignatureAlgorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIGNATURE_ALGORITHM_UNSPECIFIED: _ClassVar[SignatureAlgorithm]
    SIGNATURE_ALGORITHM_ED25519: _ClassVar[SignatureAlgorithm]

class WeightsKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WEIGHTS_KIND_UNSPECIFIED: _ClassVar[WeightsKind]
    WEIGHTS_KIND_DELTA: _ClassVar[WeightsKind]

class ClientStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLIENT_STATUS_UNSPECIFIED: _ClassVar[ClientStatus]
    CLIENT_STATUS_IDLE: _ClassVar[ClientStatus]
    CLIENT_STATUS_TRAINING: _ClassVar[ClientStatus]
    CLIENT_STATUS_EVALUATING: _ClassVar[ClientStatus]
    CLIENT_STATUS_STOPPING: _ClassVar[ClientStatus]
    CLIENT_STATUS_ERROR: _ClassVar[ClientStatus]
SIGNATURE_ALGORITHM_UNSPECIFIED: SignatureAlgorithm
SIGNATURE_ALGORITHM_ED25519: SignatureAlgorithm
WEIGHTS_KIND_UNSPECIFIED: WeightsKind
WEIGHTS_KIND_DELTA: WeightsKind
CLIENT_STATUS_UNSPECIFIED: ClientStatus
CLIENT_STATUS_IDLE: ClientStatus
CLIENT_STATUS_TRAINING: ClientStatus
CLIENT_STATUS_EVALUATING: ClientStatus
CLIENT_STATUS_STOPPING: ClientStatus
CLIENT_STATUS_ERROR: ClientStatus

class SchemaVersion(_message.Message):
    __slots__ = ("major", "minor")
    MAJOR_FIELD_NUMBER: _ClassVar[int]
    MINOR_FIELD_NUMBER: _ClassVar[int]
    major: int
    minor: int
    def __init__(self, major: _Optional[int] = ..., minor: _Optional[int] = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("message_id", "sender_id", "timestamp", "schema_version", "extensions", "padding", "signature", "client_update", "global_update", "client_registration", "heartbeat", "training_start", "evaluation_request", "evaluation_result", "shutdown", "custom", "partial_aggregate")
    class ExtensionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _values_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_values_pb2.Value, _Mapping]] = ...) -> None: ...
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    PADDING_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_UPDATE_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_UPDATE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REGISTRATION_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    TRAINING_START_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_REQUEST_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_RESULT_FIELD_NUMBER: _ClassVar[int]
    SHUTDOWN_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    sender_id: str
    timestamp: _timestamp_pb2.Timestamp
    schema_version: SchemaVersion
    extensions: _containers.MessageMap[str, _values_pb2.Value]
    padding: bytes
    signature: Signature
    client_update: ClientUpdate
    global_update: GlobalUpdate
    client_registration: ClientRegistration
    heartbeat: Heartbeat
    training_start: TrainingStart
    evaluation_request: EvaluationRequest
    evaluation_result: EvaluationResult
    shutdown: Shutdown
    custom: CustomMessage
    partial_aggregate: PartialAggregate
    def __init__(self, message_id: _Optional[str] = ..., sender_id: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., schema_version: _Optional[_Union[SchemaVersion, _Mapping]] = ..., extensions: _Optional[_Mapping[str, _values_pb2.Value]] = ..., padding: _Optional[bytes] = ..., signature: _Optional[_Union[Signature, _Mapping]] = ..., client_update: _Optional[_Union[ClientUpdate, _Mapping]] = ..., global_update: _Optional[_Union[GlobalUpdate, _Mapping]] = ..., client_registration: _Optional[_Union[ClientRegistration, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., training_start: _Optional[_Union[TrainingStart, _Mapping]] = ..., evaluation_request: _Optional[_Union[EvaluationRequest, _Mapping]] = ..., evaluation_result: _Optional[_Union[EvaluationResult, _Mapping]] = ..., shutdown: _Optional[_Union[Shutdown, _Mapping]] = ..., custom: _Optional[_Union[CustomMessage, _Mapping]] = ..., partial_aggregate: _Optional[_Union[PartialAggregate, _Mapping]] = ...) -> None: ...

class Signature(_message.Message):
    __slots__ = ("key_id", "algorithm", "signature")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    algorithm: SignatureAlgorithm
    signature: bytes
    def __init__(self, key_id: _Optional[str] = ..., algorithm: _Optional[_Union[SignatureAlgorithm, str]] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ClientUpdate(_message.Message):
    __slots__ = ("client_id", "round_id", "weights", "weights_kind", "metrics", "num_examples")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _values_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_values_pb2.Value, _Mapping]] = ...) -> None: ...
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_KIND_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    round_id: int
    weights: _tensor_pb2.TensorMap
    weights_kind: WeightsKind
    metrics: _containers.MessageMap[str, _values_pb2.Value]
    num_examples: int
    def __init__(self, client_id: _Optional[str] = ..., round_id: _Optional[int] = ..., weights: _Optional[_Union[_tensor_pb2.TensorMap, _Mapping]] = ..., weights_kind: _Optional[_Union[WeightsKind, str]] = ..., metrics: _Optional[_Mapping[str, _values_pb2.Value]] = ..., num_examples: _Optional[int] = ...) -> None: ...

class GlobalUpdate(_message.Message):
    __slots__ = ("round_id", "weights", "weights_kind", "config")
    class ConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _values_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_values_pb2.Value, _Mapping]] = ...) -> None: ...
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_KIND_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    round_id: int
    weights: _tensor_pb2.TensorMap
    weights_kind: WeightsKind
    config: _containers.MessageMap[str, _values_pb2.Value]
    def __init__(self, round_id: _Optional[int] = ..., weights: _Optional[_Union[_tensor_pb2.TensorMap, _Mapping]] = ..., weights_kind: _Optional[_Union[WeightsKind, str]] = ..., config: _Optional[_Mapping[str, _values_pb2.Value]] = ...) -> None: ...

class Capabilities(_message.Message):
    __slots__ = ("supported_codecs", "supported_filters", "max_message_bytes", "extra", "supported_lossy")
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _values_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_values_pb2.Value, _Mapping]] = ...) -> None: ...
    SUPPORTED_CODECS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_FILTERS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_LOSSY_FIELD_NUMBER: _ClassVar[int]
    supported_codecs: _containers.RepeatedScalarFieldContainer[_tensor_pb2.Codec]
    supported_filters: _containers.RepeatedScalarFieldContainer[_tensor_pb2.Filter]
    max_message_bytes: int
    extra: _containers.MessageMap[str, _values_pb2.Value]
    supported_lossy: _containers.RepeatedScalarFieldContainer[_tensor_pb2.Lossy]
    def __init__(self, supported_codecs: _Optional[_Iterable[_Union[_tensor_pb2.Codec, str]]] = ..., supported_filters: _Optional[_Iterable[_Union[_tensor_pb2.Filter, str]]] = ..., max_message_bytes: _Optional[int] = ..., extra: _Optional[_Mapping[str, _values_pb2.Value]] = ..., supported_lossy: _Optional[_Iterable[_Union[_tensor_pb2.Lossy, str]]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "parameter_count", "architecture_hash", "extra")
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _values_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_values_pb2.Value, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_COUNT_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_HASH_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    parameter_count: int
    architecture_hash: str
    extra: _containers.MessageMap[str, _values_pb2.Value]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., parameter_count: _Optional[int] = ..., architecture_hash: _Optional[str] = ..., extra: _Optional[_Mapping[str, _values_pb2.Value]] = ...) -> None: ...

class ClientRegistration(_message.Message):
    __slots__ = ("client_id", "capabilities", "model_info", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _values_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_values_pb2.Value, _Mapping]] = ...) -> None: ...
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    MODEL_INFO_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    capabilities: Capabilities
    model_info: ModelInfo
    attributes: _containers.MessageMap[str, _values_pb2.Value]
    def __init__(self, client_id: _Optional[str] = ..., capabilities: _Optional[_Union[Capabilities, _Mapping]] = ..., model_info: _Optional[_Union[ModelInfo, _Mapping]] = ..., attributes: _Optional[_Mapping[str, _values_pb2.Value]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("client_id", "status", "system_metrics")
    class SystemMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _values_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_values_pb2.Value, _Mapping]] = ...) -> None: ...
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_METRICS_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    status: ClientStatus
    system_metrics: _containers.MessageMap[str, _values_pb2.Value]
    def __init__(self, client_id: _Optional[str] = ..., status: _Optional[_Union[ClientStatus, str]] = ..., system_metrics: _Optional[_Mapping[str, _values_pb2.Value]] = ...) -> None: ...

class TrainingStart(_message.Message):
    __slots__ = ("round_id", "config", "client_ids")
    class ConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _values_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_values_pb2.Value, _Mapping]] = ...) -> None: ...
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IDS_FIELD_NUMBER: _ClassVar[int]
    round_id: int
    config: _containers.MessageMap[str, _values_pb2.Value]
    client_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, round_id: _Optional[int] = ..., config: _Optional[_Mapping[str, _values_pb2.Value]] = ..., client_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class EvaluationRequest(_message.Message):
    __slots__ = ("round_id", "weights", "config", "client_ids")
    class ConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _values_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_values_pb2.Value, _Mapping]] = ...) -> None: ...
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IDS_FIELD_NUMBER: _ClassVar[int]
    round_id: int
    weights: _tensor_pb2.TensorMap
    config: _containers.MessageMap[str, _values_pb2.Value]
    client_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, round_id: _Optional[int] = ..., weights: _Optional[_Union[_tensor_pb2.TensorMap, _Mapping]] = ..., config: _Optional[_Mapping[str, _values_pb2.Value]] = ..., client_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class EvaluationResult(_message.Message):
    __slots__ = ("client_id", "round_id", "metrics", "num_examples")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _values_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_values_pb2.Value, _Mapping]] = ...) -> None: ...
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    round_id: int
    metrics: _containers.MessageMap[str, _values_pb2.Value]
    num_examples: int
    def __init__(self, client_id: _Optional[str] = ..., round_id: _Optional[int] = ..., metrics: _Optional[_Mapping[str, _values_pb2.Value]] = ..., num_examples: _Optional[int] = ...) -> None: ...

class Shutdown(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class CustomMessage(_message.Message):
    __slots__ = ("type", "payload", "weights")
    class PayloadEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _values_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_values_pb2.Value, _Mapping]] = ...) -> None: ...
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    type: str
    payload: _containers.MessageMap[str, _values_pb2.Value]
    weights: _tensor_pb2.TensorMap
    def __init__(self, type: _Optional[str] = ..., payload: _Optional[_Mapping[str, _values_pb2.Value]] = ..., weights: _Optional[_Union[_tensor_pb2.TensorMap, _Mapping]] = ...) -> None: ...

class FoldedClient(_message.Message):
    __slots__ = ("client_id", "num_examples")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    num_examples: int
    def __init__(self, client_id: _Optional[str] = ..., num_examples: _Optional[int] = ...) -> None: ...

class HeaviestContributor(_message.Message):
    __slots__ = ("tensor", "client_id", "num_examples")
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    tensor: str
    client_id: str
    num_examples: int
    def __init__(self, tensor: _Optional[str] = ..., client_id: _Optional[str] = ..., num_examples: _Optional[int] = ...) -> None: ...

class PartialAggregate(_message.Message):
    __slots__ = ("round_id", "aggregator_id", "clients", "sums", "weights_kind", "heaviest")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    SUMS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_KIND_FIELD_NUMBER: _ClassVar[int]
    HEAVIEST_FIELD_NUMBER: _ClassVar[int]
    round_id: int
    aggregator_id: str
    clients: _containers.RepeatedCompositeFieldContainer[FoldedClient]
    sums: _tensor_pb2.TensorMap
    weights_kind: WeightsKind
    heaviest: _containers.RepeatedCompositeFieldContainer[HeaviestContributor]
    def __init__(self, round_id: _Optional[int] = ..., aggregator_id: _Optional[str] = ..., clients: _Optional[_Iterable[_Union[FoldedClient, _Mapping]]] = ..., sums: _Optional[_Union[_tensor_pb2.TensorMap, _Mapping]] = ..., weights_kind: _Optional[_Union[WeightsKind, str]] = ..., heaviest: _Optional[_Iterable[_Union[HeaviestContributor, _Mapping]]] = ...) -> None: ...
