"""Serialization: the tensor codec, typed messages (``flwire.serialization.messages``)
and the drop-in serializers of ``common.serialization``."""

from flwire.serialization.lossy import LossyConfig, LossyParams
from flwire.serialization.tensor_codec import (
    DecodeLimits,
    TensorMapView,
    TensorRecord,
    decode_tensor_map,
    encode_tensor_map,
    encode_tensor_map_segments,
    read_tensor_map,
    split_state_dict,
)
from flwire.serialization.weight_serializer import DifferentialWeightSerializer, WeightSerializer

__all__ = [
    "DecodeLimits",
    "DifferentialWeightSerializer",
    "LossyConfig",
    "LossyParams",
    "TensorMapView",
    "TensorRecord",
    "WeightSerializer",
    "decode_tensor_map",
    "encode_tensor_map",
    "encode_tensor_map_segments",
    "read_tensor_map",
    "split_state_dict",
]
