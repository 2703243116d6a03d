"""The element types flwire carries, and how they map to numpy (and torch).

This module needs numpy only. numpy has no bfloat16 or float8: those map to
``ml_dtypes`` types when that package is installed (imported only when such a
tensor is decoded to numpy, or handed over as an ml_dtypes array: it takes
about a second to import) and are otherwise torch-only. Each dtype's ``name``
is also its attribute name in torch (``torch.float8_e4m3fn``), which is how
:mod:`flwire.tensors.torch_support` maps them without this module importing
torch.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from flwire.exceptions import SerializationException
from flwire.v1 import tensor_pb2 as pb

_ML_DTYPES = "ml_dtypes"


@dataclass(frozen=True)
class DtypeInfo:
    """One wire dtype: its enum value, name (also torch's and numpy's) and width."""

    wire: int
    name: str
    itemsize: int
    #: Whether numpy has the dtype itself (else only through ml_dtypes, if at all).
    in_numpy: bool

    @property
    def is_float(self) -> bool:
        """Whether lossy encodings may apply (float32/64, float16, bfloat16)."""
        return self.wire in FLOAT_WIRE

    @property
    def numpy_dtype(self) -> np.dtype[Any] | None:
        """The numpy dtype (little-endian), or None when numpy cannot represent it."""
        if self.in_numpy:
            return np.dtype(self.name).newbyteorder("<")
        return _ml_dtype(self.name, load=True)


def _ml_dtype(name: str, *, load: bool) -> np.dtype[Any] | None:
    """ml_dtypes' numpy dtype called ``name``; imports ml_dtypes only if ``load``."""
    module = sys.modules.get(_ML_DTYPES)
    if module is None and load:
        try:
            module = importlib.import_module(_ML_DTYPES)
        except ImportError:
            return None
    if module is None or not hasattr(module, name):
        return None
    return np.dtype(getattr(module, name))


# (wire enum, name, itemsize, whether numpy has it itself)
_TABLE = [
    (pb.DTYPE_FLOAT32, "float32", 4, True),
    (pb.DTYPE_FLOAT64, "float64", 8, True),
    (pb.DTYPE_FLOAT16, "float16", 2, True),
    (pb.DTYPE_BFLOAT16, "bfloat16", 2, False),
    (pb.DTYPE_FLOAT8_E4M3FN, "float8_e4m3fn", 1, False),
    (pb.DTYPE_FLOAT8_E5M2, "float8_e5m2", 1, False),
    (pb.DTYPE_FLOAT8_E4M3FNUZ, "float8_e4m3fnuz", 1, False),
    (pb.DTYPE_FLOAT8_E5M2FNUZ, "float8_e5m2fnuz", 1, False),
    (pb.DTYPE_FLOAT8_E8M0FNU, "float8_e8m0fnu", 1, False),
    (pb.DTYPE_INT8, "int8", 1, True),
    (pb.DTYPE_INT16, "int16", 2, True),
    (pb.DTYPE_INT32, "int32", 4, True),
    (pb.DTYPE_INT64, "int64", 8, True),
    (pb.DTYPE_UINT8, "uint8", 1, True),
    (pb.DTYPE_UINT16, "uint16", 2, True),
    (pb.DTYPE_UINT32, "uint32", 4, True),
    (pb.DTYPE_UINT64, "uint64", 8, True),
    (pb.DTYPE_BOOL, "bool", 1, True),
    (pb.DTYPE_COMPLEX32, "complex32", 4, False),
    (pb.DTYPE_COMPLEX64, "complex64", 8, True),
    (pb.DTYPE_COMPLEX128, "complex128", 16, True),
]

#: The dtypes a lossy method may be applied to (a reader refuses the others).
FLOAT_WIRE = (pb.DTYPE_FLOAT32, pb.DTYPE_FLOAT64, pb.DTYPE_FLOAT16, pb.DTYPE_BFLOAT16)

BY_WIRE: dict[int, DtypeInfo] = {}
BY_NAME: dict[str, DtypeInfo] = {}
_BY_NUMPY: dict[np.dtype[Any], DtypeInfo] = {}
for _wire, _name, _size, _in_numpy in _TABLE:
    _info = DtypeInfo(_wire, _name, _size, _in_numpy)
    BY_WIRE[_wire] = _info
    BY_NAME[_name] = _info
    if _in_numpy:
        _BY_NUMPY[np.dtype(_name).newbyteorder("<")] = _info

FLOAT32 = BY_NAME["float32"]
FLOAT16 = BY_NAME["float16"]
BFLOAT16 = BY_NAME["bfloat16"]
UINT8 = BY_NAME["uint8"]
BOOL = BY_NAME["bool"]


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


def from_numpy(dtype: np.dtype[Any], tensor_name: str) -> DtypeInfo:
    """The wire dtype of a numpy dtype (either byte order); raise for others."""
    info = _BY_NUMPY.get(dtype.newbyteorder("<"))
    if info is None:
        # An ml_dtypes array means ml_dtypes is imported already: look it up there.
        info = next(
            (
                i
                for i in BY_WIRE.values()
                if not i.in_numpy and _ml_dtype(i.name, load=False) == dtype
            ),
            None,
        )
    if info is None:
        raise SerializationException(
            f"array {tensor_name!r} has numpy dtype {dtype}, which flwire cannot carry"
        )
    return info
