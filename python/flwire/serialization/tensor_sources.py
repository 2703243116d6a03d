"""The encoder's input side: turning a state dict's torch tensors and numpy
arrays into ``_Source``s (the C-contiguous little-endian raw bytes of each
tensor, a view on it where possible, with its dtype and shape), refusing what
flwire cannot carry, and applying the lossy hook that replaces a selected
tensor's bytes by its lossy payload and records the ``Tensor.lossy`` field the
encoder writes after the data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from flwire.exceptions import SerializationException
from flwire.serialization import _schema as s
from flwire.serialization import dtypes
from flwire.serialization import lossy as _lossy
from flwire.serialization._wire import VARINT, encode_varint, field_key, len_field
from flwire.serialization.tensor_types import Compression, TensorLike


@dataclass
class _Source:
    name: str
    dtype: dtypes.DtypeInfo  # of the elements of ``raw`` (the lossy payload's when lossy)
    shape: tuple[int, ...]
    raw: np.ndarray  # uint8, C-contiguous, a view on the source tensor where possible
    lossy: _LossySource | None = None


@dataclass(frozen=True)
class _LossySource:
    """A lossy tensor's logical dtype and the bytes of its ``Tensor.lossy`` field."""

    dtype: dtypes.DtypeInfo
    params: _lossy.LossyParams
    field: bytes  # key, length and the LossyEncoding message, written after ``data``


def _lossy_field(params: _lossy.LossyParams) -> bytes:
    body = field_key(s.L_METHOD, VARINT) + encode_varint(params.method)
    if params.block_size:
        body += field_key(s.L_BLOCK_SIZE, VARINT) + encode_varint(params.block_size)
    if params.k:
        body += field_key(s.L_K, VARINT) + encode_varint(params.k)
    return len_field(s.T_LOSSY, len(body)) + body


def _lossy_source(src: _Source, config: _lossy.LossyConfig | None) -> _Source:
    """The source whose raw bytes are its lossy payload, when ``config`` applies
    to it (the transform happens here, before CRC, filter and codec)."""
    if config is None:
        return src
    encoded = _lossy.encode(src.name, src.dtype, src.raw, config)
    if encoded is None:
        return src
    params, payload = encoded
    element = _lossy.element_dtype(params.method)
    info = _LossySource(src.dtype, params, _lossy_field(params))
    return _Source(src.name, element, src.shape, payload, info)


def _trailer(src: _Source) -> bytes:
    """The Tensor fields after ``data`` (field-number order): ``lossy``."""
    return src.lossy.field if src.lossy else b""


def _source_from_torch(name: str, tensor: torch.Tensor) -> _Source:
    if tensor.layout != torch.strided:
        raise SerializationException(
            f"tensor {name!r} has layout {tensor.layout}; flwire carries dense tensors "
            "(call .to_dense() first)"
        )
    if tensor.is_quantized:
        raise SerializationException(
            f"tensor {name!r} is quantized ({tensor.dtype}); call .dequantize() first"
        )
    if tensor.device.type == "meta":
        raise SerializationException(f"tensor {name!r} is on the meta device and has no data")
    info = dtypes.from_torch(tensor.dtype, name)
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.resolve_conj().resolve_neg().contiguous()
    flat = t.reshape(-1)
    if flat.numel() and flat.stride(0) != 1:  # a one-element view can keep an odd stride
        flat = flat.clone(memory_format=torch.contiguous_format)
    raw = flat.view(torch.uint8).numpy()
    return _Source(name, info, tuple(t.shape), raw)


def _source_from_numpy(name: str, array: np.ndarray) -> _Source:
    info = dtypes.from_numpy(array.dtype, name)
    if info.itemsize > 1 and array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    shape = tuple(array.shape)  # ascontiguousarray turns a 0-d array into 1-d
    raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    return _Source(name, info, shape, raw)


def _source(name: Any, value: Any) -> _Source:
    if not isinstance(name, str):
        raise SerializationException(f"state dict keys must be str, got {type(name).__name__}")
    if isinstance(value, torch.Tensor):
        return _source_from_torch(name, value)
    if isinstance(value, (np.ndarray, np.generic)):
        return _source_from_numpy(name, np.asarray(value))
    raise SerializationException(
        f"value of {name!r} is a {type(value).__name__}; flwire encodes torch tensors and "
        "numpy arrays only (wrap scalars with torch.tensor(...))"
    )


def _prepare(
    tensors: Mapping[str, TensorLike] | Iterable[tuple[str, TensorLike]],
    compression: Compression,
    lossy: _lossy.LossyConfig | None,
) -> list[_Source]:
    if compression not in ("zstd", "none"):
        raise SerializationException(f"unknown compression {compression!r}; use 'zstd' or 'none'")
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    sources = [_lossy_source(_source(k, v), lossy) for k, v in items]
    names = [src.name for src in sources]
    if len(set(names)) != len(names):
        raise SerializationException("duplicate tensor names in the state dict")
    return sources
