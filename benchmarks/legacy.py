"""The old path, the baseline both benchmarks measure flwire against: exactly what the old
``common`` package did. Weights go as pickle -> gzip level 9 -> base64 text inside a JSON
message (type, payload, sender_id, timestamp, datetime, version), which the Kafka producer's
``value_serializer`` UTF-8 encoded, one record per message; and back.

This is the only module of the repository that uses pickle, and it stays outside the
``python/`` package: it unpickles only bytes that the benchmark itself produced a moment
earlier (in the same process, or on the private broker the end-to-end benchmark started),
for comparison. Never point it at bytes from anywhere else.
"""

from __future__ import annotations

import base64
import gzip
import json
import pickle
import time
from datetime import datetime
from typing import Any

from benchmarks.models import StateDict


def serialize_weights(state_dict: StateDict, compression: bool = True) -> str:
    """common.serialization.weight_serializer.WeightSerializer.serialize_weights, verbatim."""
    cpu_state_dict = {k: v.cpu().detach() for k, v in state_dict.items()}
    pickled_data = pickle.dumps(cpu_state_dict)
    if compression:
        pickled_data = gzip.compress(pickled_data)  # level 9: gzip's default
    return base64.b64encode(pickled_data).decode("utf-8")


def deserialize_weights(encoded_data: str, compression: bool = True) -> StateDict:
    """WeightSerializer.deserialize_weights, verbatim.

    Safe here only because the bytes come from serialize_weights in this benchmark.
    """
    pickled_data = base64.b64decode(encoded_data.encode("utf-8"))
    if compression:
        pickled_data = gzip.decompress(pickled_data)
    state: StateDict = pickle.loads(pickled_data)  # noqa: S301 - our own bytes, see above
    return state


def message(kind: str, sender_id: str, payload: dict[str, Any]) -> bytes:
    """An old JSON message (MessageSerializer), UTF-8 encoded (the producer's serializer)."""
    body = {
        "type": kind,
        "payload": payload,
        "sender_id": sender_id,
        "timestamp": time.time(),
        "datetime": datetime.now().isoformat(),
        "version": "1.0",
    }
    return json.dumps(body, default=str).encode("utf-8")


def parse(value: bytes) -> dict[str, Any]:
    """The consumer's ``value_deserializer`` (UTF-8) + deserialize_message (JSON only)."""
    parsed: dict[str, Any] = json.loads(value.decode("utf-8"))
    return parsed


def weights_of(parsed: dict[str, Any]) -> StateDict:
    """The weights of a parsed message (bytes this benchmark produced itself)."""
    return deserialize_weights(parsed["payload"]["weights"])


def encode_update(state_dict: StateDict) -> bytes:
    """serialize_weights -> MessageSerializer.create_client_update_message -> the producer's
    serializer: the whole client update message, whose size is what the old path sent."""
    weights = serialize_weights(state_dict)
    payload = {"client_id": "client_0", "round_id": 1, "weights": weights, "metrics": {}}
    return message("client_update", "client_0", payload)


def decode_update(data: bytes) -> StateDict:
    """The consumer's deserializer -> deserialize_message -> deserialize_weights."""
    return weights_of(parse(data))
