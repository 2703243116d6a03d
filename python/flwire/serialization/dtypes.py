"""The element types flwire carries, and how they map to torch and numpy.

numpy has no bfloat16 or float8; those map to ``ml_dtypes`` types when that
package is installed and are otherwise torch-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from flwire.exceptions import SerializationException
from flwire.v1 import tensor_pb2 as pb

_ml_dtypes: Any
try:  # optional: numpy dtypes for bfloat16 / float8
    import ml_dtypes as _ml_dtypes
except ImportError:  # pragma: no cover - exercised only without ml_dtypes
    _ml_dtypes = None


@dataclass(frozen=True)
class DtypeInfo:
    """One wire dtype: its enum value, width and framework equivalents."""

    wire: int
    name: str
    itemsize: int
    torch_dtype: torch.dtype | None
    numpy_dtype: np.dtype[Any] | None


def _np(name: str) -> np.dtype[Any] | None:
    if hasattr(np, name):
        return np.dtype(name).newbyteorder("<")
    if _ml_dtypes is not None and hasattr(_ml_dtypes, name):
        return np.dtype(getattr(_ml_dtypes, name))
    return None


# (wire enum, short name, itemsize, torch attribute, numpy / ml_dtypes name)
_TABLE = [
    (pb.DTYPE_FLOAT32, "float32", 4, "float32", "float32"),
    (pb.DTYPE_FLOAT64, "float64", 8, "float64", "float64"),
    (pb.DTYPE_FLOAT16, "float16", 2, "float16", "float16"),
    (pb.DTYPE_BFLOAT16, "bfloat16", 2, "bfloat16", "bfloat16"),
    (pb.DTYPE_FLOAT8_E4M3FN, "float8_e4m3fn", 1, "float8_e4m3fn", "float8_e4m3fn"),
    (pb.DTYPE_FLOAT8_E5M2, "float8_e5m2", 1, "float8_e5m2", "float8_e5m2"),
    (pb.DTYPE_FLOAT8_E4M3FNUZ, "float8_e4m3fnuz", 1, "float8_e4m3fnuz", "float8_e4m3fnuz"),
    (pb.DTYPE_FLOAT8_E5M2FNUZ, "float8_e5m2fnuz", 1, "float8_e5m2fnuz", "float8_e5m2fnuz"),
    (pb.DTYPE_FLOAT8_E8M0FNU, "float8_e8m0fnu", 1, "float8_e8m0fnu", "float8_e8m0fnu"),
    (pb.DTYPE_INT8, "int8", 1, "int8", "int8"),
    (pb.DTYPE_INT16, "int16", 2, "int16", "int16"),
    (pb.DTYPE_INT32, "int32", 4, "int32", "int32"),
    (pb.DTYPE_INT64, "int64", 8, "int64", "int64"),
    (pb.DTYPE_UINT8, "uint8", 1, "uint8", "uint8"),
    (pb.DTYPE_UINT16, "uint16", 2, "uint16", "uint16"),
    (pb.DTYPE_UINT32, "uint32", 4, "uint32", "uint32"),
    (pb.DTYPE_UINT64, "uint64", 8, "uint64", "uint64"),
    (pb.DTYPE_BOOL, "bool", 1, "bool", "bool"),
    (pb.DTYPE_COMPLEX32, "complex32", 4, "complex32", None),
    (pb.DTYPE_COMPLEX64, "complex64", 8, "complex64", "complex64"),
    (pb.DTYPE_COMPLEX128, "complex128", 16, "complex128", "complex128"),
]

BY_WIRE: dict[int, DtypeInfo] = {}
_BY_TORCH: dict[torch.dtype, DtypeInfo] = {}
_BY_NUMPY: dict[np.dtype[Any], DtypeInfo] = {}
for _wire, _name, _size, _torch_name, _np_name in _TABLE:
    _info = DtypeInfo(
        _wire, _name, _size, getattr(torch, _torch_name, None), _np(_np_name) if _np_name else None
    )
    BY_WIRE[_wire] = _info
    if _info.torch_dtype is not None:
        _BY_TORCH[_info.torch_dtype] = _info
    if _info.numpy_dtype is not None:
        _BY_NUMPY[_info.numpy_dtype] = _info


def from_wire(value: int, tensor_name: str) -> DtypeInfo:
    """The dtype for a wire enum value; raise for an unknown one."""
    info = BY_WIRE.get(value)
    if info is None:
        known = ", ".join(i.name for i in BY_WIRE.values())
        raise SerializationException(
            f"tensor {tensor_name!r} has unknown dtype {value} (this reader knows: {known}); "
            "upgrade flwire if the sender uses a newer schema"
        )
    return info


def from_torch(dtype: torch.dtype, tensor_name: str) -> DtypeInfo:
    """The wire dtype of a torch dtype; raise for one flwire cannot carry."""
    info = _BY_TORCH.get(dtype)
    if info is None:
        raise SerializationException(
            f"tensor {tensor_name!r} has dtype {dtype}, which flwire cannot carry "
            "(quantized and bit-packed dtypes are not supported; dequantize first)"
        )
    return info


def from_numpy(dtype: np.dtype[Any], tensor_name: str) -> DtypeInfo:
    """The wire dtype of a numpy dtype (either byte order); raise for others."""
    info = _BY_NUMPY.get(dtype.newbyteorder("<"))
    if info is None:
        raise SerializationException(
            f"array {tensor_name!r} has numpy dtype {dtype}, which flwire cannot carry"
        )
    return info
