"""The formats flwire is compared with, other than the old path (``benchmarks.legacy``):
each an ``encode(state_dict) -> bytes-like`` and a ``decode(bytes-like) -> state_dict``.

* ``torch_save``: ``torch.save`` to a BytesIO / ``torch.load(weights_only=True)``.
* ``safetensors``: ``safetensors.torch.save`` / ``load``.
* ``flower_numpy``: Flower's way, one ``numpy.save`` blob per array (``ndarray_to_bytes``),
  joined as a protobuf ``repeated bytes`` would be (length-prefixed) with the names.
* ``memcpy``: the floor. Encode is one copy of all tensor bytes into one buffer, decode is
  ``torch.frombuffer`` views; the layout travels out of band, so this is not a format.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import safetensors.torch
import torch

from benchmarks.models import StateDict

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


def _varint(value: int) -> bytes:
    """A protobuf varint (the length prefix of a ``repeated bytes`` element)."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """(value, position after it) of the varint at ``pos`` (our own bytes: unchecked)."""
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def flower_encode(state_dict: StateDict) -> bytes:
    """``flwr.common.ndarray_to_bytes`` per tensor (np.save, allow_pickle=False), then a
    length-prefixed concatenation of (name, npy bytes) as protobuf ``repeated bytes``."""
    parts: list[bytes] = []
    for name, tensor in state_dict.items():
        bio = io.BytesIO()
        np.save(bio, tensor.cpu().detach().numpy(), allow_pickle=False)
        npy = bio.getvalue()
        key = name.encode("utf-8")
        parts += [_varint(len(key)), key, _varint(len(npy)), npy]
    return b"".join(parts)


def flower_decode(data: bytes) -> StateDict:
    """``flwr.common.bytes_to_ndarray`` (np.load, allow_pickle=False) per tensor, then
    ``torch.from_numpy`` (Flower examples use torch.tensor, one more copy)."""
    buf = memoryview(data)
    out: StateDict = {}
    pos = 0
    while pos < len(buf):
        n, pos = _read_varint(buf, pos)
        name = bytes(buf[pos : pos + n]).decode("utf-8")
        pos += n
        n, pos = _read_varint(buf, pos)
        array = np.load(io.BytesIO(buf[pos : pos + n]), allow_pickle=False)
        pos += n
        out[name] = torch.from_numpy(array)
    return out


def numpy_can_carry(state_dict: StateDict) -> str | None:
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
            view[start : start + n] = raw.data  # one memcpy per tensor
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
