"""Comparison paths for the benchmark: each is ``encode(state_dict) -> bytes-like`` and
``decode(bytes-like) -> state_dict``.

* ``old_path``: exactly what the old ``common`` package did (pickle -> gzip level 9 ->
  base64 text inside the JSON message, UTF-8 encoded by the Kafka producer), and back.
* ``torch_save``: ``torch.save`` to a BytesIO / ``torch.load(weights_only=True)``.
* ``safetensors``: ``safetensors.torch.save`` / ``load``.
* ``flower_numpy``: Flower's way, one ``numpy.save`` blob per array (``ndarray_to_bytes``),
  joined as a protobuf ``repeated bytes`` would be (length-prefixed) with the names.
* ``memcpy``: the floor. Encode is one copy of all tensor bytes into one buffer, decode is
  ``torch.frombuffer`` views; the layout travels out of band, so this is not a format.

This is the only file of the repository that uses pickle, and it stays outside the
``python/`` package: the old-path anchor unpickles only bytes it produced itself a moment
earlier in the same process, for comparison. Never point it at bytes from anywhere else.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import pickle
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import safetensors.torch
import torch

from flwire.serialization._wire import decode_varint, encode_varint

StateDict = dict[str, torch.Tensor]


@dataclass
class Anchor:
    name: str
    encode: Callable[[StateDict], Any]
    decode: Callable[[Any], StateDict]
    note: str = ""
    supports: Callable[[StateDict], str | None] = field(default=lambda sd: None)
    """Returns None when the path can carry this state dict, else why it cannot."""


# ----------------------------------------------------------------------------- old path


def old_serialize_weights(state_dict: StateDict, compression: bool = True) -> str:
    """common.serialization.weight_serializer.WeightSerializer.serialize_weights, verbatim."""
    cpu_state_dict = {k: v.cpu().detach() for k, v in state_dict.items()}
    pickled_data = pickle.dumps(cpu_state_dict)
    if compression:
        pickled_data = gzip.compress(pickled_data)  # level 9: gzip's default
    return base64.b64encode(pickled_data).decode("utf-8")


def old_deserialize_weights(encoded_data: str, compression: bool = True) -> StateDict:
    """WeightSerializer.deserialize_weights, verbatim.

    Safe here only because the bytes come from old_serialize_weights in this very process.
    """
    pickled_data = base64.b64decode(encoded_data.encode("utf-8"))
    if compression:
        pickled_data = gzip.decompress(pickled_data)
    return pickle.loads(pickled_data)  # noqa: S301 - our own bytes, see the module docstring


def old_encode(state_dict: StateDict) -> bytes:
    """serialize_weights -> MessageSerializer.create_client_update_message -> the Kafka
    producer's ``value_serializer`` (``str.encode('utf-8')``). The size is the whole message."""
    weights = old_serialize_weights(state_dict)
    payload = {"client_id": "client_0", "round_id": 1, "weights": weights, "metrics": {}}
    message = {
        "type": "client_update",
        "payload": payload,
        "sender_id": "client_0",
        "timestamp": time.time(),
        "datetime": datetime.now().isoformat(),
        "version": "1.0",
    }
    return json.dumps(message, default=str).encode("utf-8")


def old_decode(data: bytes) -> StateDict:
    """The consumer's ``value_deserializer`` (UTF-8 decode) -> deserialize_message -> weights."""
    message = json.loads(data.decode("utf-8"))
    return old_deserialize_weights(message["payload"]["weights"])


# ----------------------------------------------------------------------------- torch / st


def torch_save_encode(state_dict: StateDict) -> bytes:
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    return buf.getvalue()


def torch_save_decode(data: bytes) -> StateDict:
    return torch.load(io.BytesIO(data), weights_only=True)


def safetensors_encode(state_dict: StateDict) -> bytes:
    return safetensors.torch.save(state_dict)


def safetensors_decode(data: bytes) -> StateDict:
    return safetensors.torch.load(data)


# ----------------------------------------------------------------------------- Flower


def flower_encode(state_dict: StateDict) -> bytes:
    """``flwr.common.ndarray_to_bytes`` per tensor (np.save, allow_pickle=False), then a
    length-prefixed concatenation of (name, npy bytes) as protobuf ``repeated bytes``."""
    parts: list[bytes] = []
    for name, tensor in state_dict.items():
        bio = io.BytesIO()
        np.save(bio, tensor.cpu().detach().numpy(), allow_pickle=False)
        npy = bio.getvalue()
        key = name.encode("utf-8")
        parts += [encode_varint(len(key)), key, encode_varint(len(npy)), npy]
    return b"".join(parts)


def flower_decode(data: bytes) -> StateDict:
    """``flwr.common.bytes_to_ndarray`` (np.load, allow_pickle=False) per tensor, then
    ``torch.from_numpy`` (Flower examples use torch.tensor, one more copy)."""
    buf = memoryview(data)
    out: StateDict = {}
    pos = 0
    while pos < len(buf):
        n, pos = decode_varint(buf, pos, len(buf), "flower name")
        name = bytes(buf[pos : pos + n]).decode("utf-8")
        pos += n
        n, pos = decode_varint(buf, pos, len(buf), "flower array")
        array = np.load(io.BytesIO(buf[pos : pos + n]), allow_pickle=False)
        pos += n
        out[name] = torch.from_numpy(array)
    return out


def _numpy_can_carry(state_dict: StateDict) -> str | None:
    for name, tensor in state_dict.items():
        if tensor.dtype in (torch.bfloat16,) or "float8" in str(tensor.dtype):
            return f"numpy has no {str(tensor.dtype).removeprefix('torch.')} ({name})"
    return None


# ----------------------------------------------------------------------------- memcpy floor


class MemcpyFloor:
    """One copy of every tensor's bytes into one buffer; decode returns views on it.

    The names, dtypes, shapes and offsets are kept on the object (out of band), so the
    size is the raw tensor bytes exactly.
    """

    def __init__(self) -> None:
        self.layout: list[tuple[str, torch.dtype, tuple[int, ...], int, int]] = []

    def encode(self, state_dict: StateDict) -> bytearray:
        layout = []
        sources = []
        offset = 0
        for name, t in state_dict.items():
            raw = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
            layout.append((name, t.dtype, tuple(t.shape), offset, raw.nbytes))
            sources.append(raw)
            offset += raw.nbytes
        buf = bytearray(offset)  # fresh zeroed pages from the kernel: no memset pass
        view = memoryview(buf)
        for (_, _, _, start, n), raw in zip(layout, sources, strict=True):
            view[start : start + n] = raw  # one memcpy per tensor
        self.layout = layout
        return buf

    def decode(self, data: Any) -> StateDict:
        out: StateDict = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only buffers
            for name, dtype, shape, offset, n in self.layout:
                if n == 0:
                    out[name] = torch.empty(shape, dtype=dtype)
                    continue
                flat = torch.frombuffer(data, dtype=torch.uint8, count=n, offset=offset)
                out[name] = flat.view(dtype).reshape(shape)
        return out


def all_anchors() -> dict[str, Anchor]:
    floor = MemcpyFloor()
    return {
        "old_path": Anchor(
            "old_path",
            old_encode,
            old_decode,
            "pickle+gzip-9+base64 in the JSON message (size = whole message)",
        ),
        "torch_save": Anchor("torch_save", torch_save_encode, torch_save_decode, "torch.save/load"),
        "safetensors": Anchor(
            "safetensors", safetensors_encode, safetensors_decode, "safetensors.torch save/load"
        ),
        "flower_numpy": Anchor(
            "flower_numpy",
            flower_encode,
            flower_decode,
            "np.save per array, length-prefixed",
            supports=_numpy_can_carry,
        ),
        "memcpy": Anchor("memcpy", floor.encode, floor.decode, "floor: 1 copy / views"),
    }
