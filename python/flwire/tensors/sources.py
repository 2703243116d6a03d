"""The encoder's input side: a state dict's numpy arrays and torch tensors as
``Source``s (the C-contiguous little-endian raw bytes of each tensor, a view on
it where possible, with its dtype and shape), refusing what flwire cannot
carry, and the lossy hook that replaces a selected tensor's bytes by its
lossy payload and records the ``Tensor.lossy`` field the encoder writes after
the data. Torch tensors go through :mod:`flwire.tensors.torch_support`, which
is imported only when the caller hands one over.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from flwire._protowire import VARINT, encode_varint, field_key, len_field
from flwire.exceptions import SerializationException
from flwire.tensors import dtypes, lossy, torch_support
from flwire.tensors import schema as s
from flwire.tensors.records import TensorLike


@dataclass(frozen=True)
class LossySource:
    """A lossy tensor's logical dtype and the bytes of its ``Tensor.lossy`` field."""

    dtype: dtypes.DtypeInfo
    params: lossy.LossyParams
    field: bytes  # key, length and the LossyEncoding message, written after ``data``


@dataclass(frozen=True)
class Source:
    """One tensor to encode."""

    name: str
    dtype: dtypes.DtypeInfo  # of the elements of ``raw`` (the lossy payload's when lossy)
    shape: tuple[int, ...]
    raw: np.ndarray  # uint8, C-contiguous, a view on the source tensor where possible
    lossy: LossySource | None = None

    @property
    def wire_dtype(self) -> dtypes.DtypeInfo:
        """The dtype the tensor is declared with: the logical one when lossy."""
        return self.lossy.dtype if self.lossy else self.dtype

    @property
    def trailer(self) -> bytes:
        """The Tensor fields written after ``data`` (field-number order): ``lossy``."""
        return self.lossy.field if self.lossy else b""


def _lossy_field(params: lossy.LossyParams) -> bytes:
    body = field_key(s.L_METHOD, VARINT) + encode_varint(params.method)
    if params.block_size:
        body += field_key(s.L_BLOCK_SIZE, VARINT) + encode_varint(params.block_size)
    if params.k:
        body += field_key(s.L_K, VARINT) + encode_varint(params.k)
    return len_field(s.T_LOSSY, len(body)) + body


def apply_lossy(src: Source, config: lossy.LossyConfig | None, threads: int | None) -> Source:
    """The source whose raw bytes are its lossy payload, when ``config`` applies
    to it (the transform happens here, before CRC, filter and codec)."""
    if config is None:
        return src
    encoded = lossy.encode(src.name, src.dtype, src.raw, config, threads)
    if encoded is None:
        return src
    params, payload = encoded
    element = lossy.element_dtype(params.method)
    info = LossySource(src.dtype, params, _lossy_field(params))
    return Source(src.name, element, src.shape, payload, info)


def _from_numpy(name: str, array: np.ndarray) -> Source:
    info = dtypes.from_numpy(array.dtype, name)
    if info.itemsize > 1 and array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    shape = tuple(array.shape)  # ascontiguousarray turns a 0-d array into 1-d
    raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    return Source(name, info, shape, raw)


def _normalized_bool(src: Source) -> Source:
    """A bool tensor whose bytes are not all 0 or 1 (made with ``.view(bool)`` from
    other bytes: torch and numpy read any nonzero byte as True) is sent as 0/1, in a
    copy; the caller's tensor is left as it is. The wire holds only 0 and 1, and
    decoders refuse anything else."""
    if src.dtype.wire != dtypes.BOOL.wire or not src.raw.nbytes or int(src.raw.max()) <= 1:
        return src
    return Source(src.name, src.dtype, src.shape, (src.raw != 0).view(np.uint8))


def _source(name: Any, value: Any) -> Source:
    if not isinstance(name, str):
        raise SerializationException(f"state dict keys must be str, got {type(name).__name__}")
    if isinstance(value, (np.ndarray, np.generic)):
        return _normalized_bool(_from_numpy(name, np.asarray(value)))
    if torch_support.is_tensor(value):
        return _normalized_bool(Source(name, *torch_support.raw_bytes(name, value)))
    raise SerializationException(
        f"value of {name!r} is a {type(value).__name__}; flwire encodes numpy arrays and "
        "torch tensors only (wrap scalars with numpy.asarray(...) or torch.tensor(...))"
    )


def _is_tensor(value: Any) -> bool:
    return isinstance(value, (np.ndarray, np.generic)) or torch_support.is_tensor(value)


def not_a_state_dict(value: Any, what: str = "tensors") -> str:
    """The message for ``value`` handed over where a state dict (a mapping of
    names to tensors) belongs: what it got, and what to pass instead."""
    kind = type(value).__name__
    message = f"{what}: expected a mapping of names to tensors (a state dict); got {kind}"
    if callable(getattr(value, "state_dict", None)):
        return f"{message}: pass model.state_dict()"
    if _is_tensor(value):
        return f"{message}: wrap a single tensor in a dict, e.g. {{'weight': tensor}}"
    if isinstance(value, str):
        return f"{message}: the old base64 text is not a state dict; decode it first"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"{message}: these are encoded bytes already (decode them with decode_tensor_map)"
    if isinstance(value, (list, tuple)) and value and all(_is_tensor(v) for v in value):
        return f"{message} of tensors: name each one, e.g. dict(zip(names, tensors))"
    return message


def require_state_dict(value: Any, what: str = "tensors") -> Mapping[str, Any]:
    """``value`` when it is a mapping (a state dict), else SerializationException
    saying what to pass instead (see :func:`not_a_state_dict`)."""
    if not isinstance(value, Mapping):
        raise SerializationException(not_a_state_dict(value, what))
    return value


def state_dict_items(
    tensors: Mapping[str, TensorLike] | Iterable[tuple[str, TensorLike]],
) -> Iterable[tuple[Any, Any]]:
    """The (name, tensor) items of a state dict, or of an iterable of such
    pairs; SerializationException saying what to pass for anything else (a
    model, a single tensor, a list of tensors, bytes)."""
    if isinstance(tensors, Mapping):
        return tensors.items()
    refused = (
        callable(getattr(tensors, "state_dict", None))
        or _is_tensor(tensors)
        or isinstance(tensors, (str, bytes, bytearray, memoryview))
        or not isinstance(tensors, Iterable)
    )
    items = [] if refused else list(tensors)
    if refused or not all(isinstance(i, (tuple, list)) and len(i) == 2 for i in items):
        raise SerializationException(not_a_state_dict(tensors))
    return items


def prepare(
    tensors: Mapping[str, TensorLike] | Iterable[tuple[str, TensorLike]],
    lossy_config: lossy.LossyConfig | None,
    threads: int | None = None,
) -> list[Source]:
    """The sources of a state dict (a mapping or (name, tensor) pairs), in order;
    lossy transforms use up to ``threads`` cores (None: all)."""
    items = state_dict_items(tensors)
    sources = [apply_lossy(_source(k, v), lossy_config, threads) for k, v in items]
    names = [src.name for src in sources]
    if len(set(names)) != len(names):
        raise SerializationException("duplicate tensor names in the state dict")
    return sources
