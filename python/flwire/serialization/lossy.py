"""Opt-in lossy tensor encodings: float16/bfloat16 casts, blockwise int8, top-k.

This module does the transforms only: it turns a floating tensor's raw bytes
into a *payload* and back. The tensor codec puts the payload where the raw
bytes would be (CRC, filter and codec then apply to the payload) and records
the method in ``Tensor.lossy`` (docs/wire-format.md section 9.1, which also
states the error bounds the property tests check).

Everything is vectorized with torch on the CPU (bfloat16 included, which numpy
lacks); nothing loops over elements in Python.
"""

from __future__ import annotations

import fnmatch
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from flwire.exceptions import SerializationException
from flwire.serialization import _schema as s
from flwire.serialization import dtypes
from flwire.v1 import tensor_pb2 as pb

LossyMethod = Literal["float16", "bfloat16", "int8", "topk"]

#: Method short names (as in :class:`LossyConfig`) and their wire enum values.
METHODS: dict[str, int] = {
    "float16": s.LOSSY_CAST_FLOAT16,
    "bfloat16": s.LOSSY_CAST_BFLOAT16,
    "int8": s.LOSSY_BLOCK_INT8,
    "topk": s.LOSSY_TOP_K,
}
METHOD_NAMES: dict[int, str] = {v: k for k, v in METHODS.items()}

#: The dtypes a lossy method may be applied to (a reader refuses the others).
FLOAT_WIRE = (pb.DTYPE_FLOAT32, pb.DTYPE_FLOAT64, pb.DTYPE_FLOAT16, pb.DTYPE_BFLOAT16)
#: Casts are only worth it for dtypes wider than their 2-byte target.
_CAST_SOURCES = (pb.DTYPE_FLOAT32, pb.DTYPE_FLOAT64)
_CAST_TARGET: dict[int, dtypes.DtypeInfo] = {
    s.LOSSY_CAST_FLOAT16: dtypes.BY_WIRE[pb.DTYPE_FLOAT16],
    s.LOSSY_CAST_BFLOAT16: dtypes.BY_WIRE[pb.DTYPE_BFLOAT16],
}
_BYTES = dtypes.BY_WIRE[pb.DTYPE_UINT8]
_F32_MAX = float(np.finfo(np.float32).max)
_F32_TINY = 2.0**-149  # the smallest positive float32 (subnormal)
_F32_NORMAL = 2.0**-126
_UINT32_INDEX_LIMIT = 1 << 32

NamePredicate = Callable[[str], bool]


def _matcher(spec: Any, what: str) -> NamePredicate | None:
    """A predicate on tensor names: a callable, a glob pattern, or several."""
    if spec is None or callable(spec):
        return spec
    patterns = (spec,) if isinstance(spec, str) else tuple(spec)
    if not all(isinstance(p, str) for p in patterns):
        raise ValueError(f"LossyConfig.{what} must be a callable, a glob pattern or patterns")
    return lambda name: any(fnmatch.fnmatchcase(name, p) for p in patterns)


@dataclass(frozen=True)
class LossyConfig:
    """Which lossy encoding an encoder applies, and to which tensors.

    ``method``: ``"float16"`` / ``"bfloat16"`` (cast; for float32/float64
    tensors), ``"int8"`` (blockwise, ``block_size`` elements per float32 scale)
    or ``"topk"`` (the ``topk_k`` elements of largest magnitude, or
    ``ceil(topk_fraction * n)`` when ``topk_k`` is None; meant for deltas).

    A tensor is encoded lossily only if it is float32, float64, float16 or
    bfloat16 (and, for the casts, wider than 2 bytes), has at least
    ``min_elements`` elements (biases and norms stay exact), passes ``include``
    (when given) and not ``exclude``, and its payload is smaller than its raw
    bytes. ``include`` / ``exclude`` are a callable on the tensor name, a glob
    pattern (``"*.bias"``) or a list of patterns. Every other tensor is sent
    losslessly, bit for bit.
    """

    method: LossyMethod
    block_size: int = 64
    topk_fraction: float = 0.01
    topk_k: int | None = None
    min_elements: int = 1024
    include: NamePredicate | str | Iterable[str] | None = None
    exclude: NamePredicate | str | Iterable[str] | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(
                f"unknown lossy method {self.method!r}; use one of {', '.join(METHODS)}"
            )
        if not isinstance(self.block_size, int) or not 1 <= self.block_size < 1 << 32:
            raise ValueError(f"block_size must be an int in [1, 2^32), got {self.block_size!r}")
        if not (isinstance(self.topk_fraction, (int, float)) and 0 < self.topk_fraction <= 1):
            raise ValueError(f"topk_fraction must be in (0, 1], got {self.topk_fraction!r}")
        if self.topk_k is not None and (not isinstance(self.topk_k, int) or self.topk_k < 1):
            raise ValueError(f"topk_k must be a positive int or None, got {self.topk_k!r}")
        if not isinstance(self.min_elements, int) or self.min_elements < 0:
            raise ValueError(f"min_elements must be an int >= 0, got {self.min_elements!r}")
        object.__setattr__(self, "_include", _matcher(self.include, "include"))
        object.__setattr__(self, "_exclude", _matcher(self.exclude, "exclude"))

    @property
    def wire_method(self) -> int:
        """The ``flwire.v1.Lossy`` enum value of ``method``."""
        return METHODS[self.method]

    def k_for(self, n: int) -> int:
        """Number of elements top-k keeps of a tensor of ``n`` elements."""
        k = self.topk_k if self.topk_k is not None else math.ceil(self.topk_fraction * n)
        return max(1, min(n, k))

    def applies_to(self, name: str, dtype: dtypes.DtypeInfo, numel: int) -> bool:
        """Whether a tensor is a candidate (the payload size is checked later)."""
        if dtype.wire not in FLOAT_WIRE or numel == 0 or numel < self.min_elements:
            return False
        if self.wire_method in _CAST_TARGET and dtype.wire not in _CAST_SOURCES:
            return False  # a cast to the same width gains nothing
        include: NamePredicate | None = self.__dict__["_include"]
        exclude: NamePredicate | None = self.__dict__["_exclude"]
        if include is not None and not include(name):
            return False
        return exclude is None or not exclude(name)


@dataclass(frozen=True)
class LossyParams:
    """The ``Tensor.lossy`` fields of one tensor."""

    method: int
    block_size: int = 0
    k: int = 0

    @property
    def name(self) -> str:
        """Short method name: ``float16``, ``bfloat16``, ``int8`` or ``topk``."""
        return METHOD_NAMES.get(self.method, str(self.method))

    @property
    def enum_name(self) -> str:
        return s.LOSSY_NAMES.get(self.method, str(self.method))

    def describe(self) -> str:
        if self.method == s.LOSSY_BLOCK_INT8:
            return f"int8/{self.block_size}"
        if self.method == s.LOSSY_TOP_K:
            return f"topk/{self.k}"
        return self.name


def element_dtype(method: int) -> dtypes.DtypeInfo:
    """The element type the filter works on for a payload of ``method``: the
    2-byte float of a cast, bytes (width 1: no shuffle) otherwise."""
    return _CAST_TARGET.get(method, _BYTES)


def filter_allowed(method: int) -> bool:
    """Byte shuffle is defined for cast payloads only."""
    return method in _CAST_TARGET


def payload_size(dtype: dtypes.DtypeInfo, numel: int, params: LossyParams, what: str) -> int:
    """The exact payload size for a lossy tensor; raise SerializationException
    (naming ``what``) for any combination a reader must refuse."""
    method = params.method
    if method not in METHOD_NAMES:
        raise SerializationException(f"{what} uses unknown lossy method {method}; upgrade flwire")
    name = METHOD_NAMES[method]
    if dtype.wire not in FLOAT_WIRE:
        raise SerializationException(
            f"{what}: lossy method {name} applies to floating tensors only, not {dtype.name}"
        )
    if method in _CAST_TARGET:
        if dtype.wire not in _CAST_SOURCES:
            raise SerializationException(
                f"{what}: lossy cast to {name} of a {dtype.name} tensor is not allowed "
                "(casts apply to float32 and float64 tensors)"
            )
        return numel * 2
    if method == s.LOSSY_BLOCK_INT8:
        if params.block_size < 1:
            raise SerializationException(
                f"{what}: int8 quantization with block_size {params.block_size} (must be >= 1)"
            )
        blocks = -(-numel // params.block_size)
        return 4 * blocks + numel
    if params.k > numel:
        raise SerializationException(
            f"{what}: top-k keeps k={params.k} elements of a tensor of {numel} elements"
        )
    return params.k * (dtype.itemsize + _index_width(numel))


def _index_width(numel: int) -> int:
    return 4 if numel < _UINT32_INDEX_LIMIT else 8


def _torch_view(raw: np.ndarray, torch_dtype: torch.dtype) -> torch.Tensor:
    """A flat torch view of uint8 bytes (copied when misaligned for the dtype)."""
    width = torch.empty((), dtype=torch_dtype).element_size()
    if raw.ctypes.data % width:
        raw = raw.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only input: we never write it
        return torch.from_numpy(raw).view(torch_dtype)


def _bytes_of(t: torch.Tensor) -> np.ndarray:
    return t.reshape(-1).view(torch.uint8).numpy()


# ----------------------------------------------------------------------------- encoding


def encode(
    name: str, dtype: dtypes.DtypeInfo, raw: np.ndarray, config: LossyConfig
) -> tuple[LossyParams, np.ndarray] | None:
    """``(params, payload bytes)`` of a tensor's raw bytes (uint8), or None when
    ``config`` leaves the tensor lossless. Raises SerializationException for a
    value the method cannot carry (a float16 overflow, a non-finite int8 input)."""
    numel = raw.nbytes // dtype.itemsize
    if not config.applies_to(name, dtype, numel):
        return None
    assert dtype.torch_dtype is not None
    x = _torch_view(raw, dtype.torch_dtype)
    method = config.wire_method
    if method in _CAST_TARGET:
        params, payload = LossyParams(method), _cast(name, x, method)
    elif method == s.LOSSY_BLOCK_INT8:
        params = LossyParams(method, block_size=config.block_size)
        payload = _quantize_int8(name, x, config.block_size)
    else:
        k = config.k_for(numel)
        params, payload = LossyParams(method, k=k), _top_k(x, k)
    if payload.nbytes >= raw.nbytes:
        return None  # lossy and not even smaller: send it exactly
    return params, payload


def _f64_to_f32_round_to_odd(x: torch.Tensor) -> torch.Tensor:
    """float64 -> float32 rounding to odd, so that a second rounding (to 16
    bits, nearest-even) gives the correctly rounded result (no double rounding)."""
    y = x.to(torch.float32)
    back = y.to(torch.float64)
    inexact = (back != x) & (x == x)  # NaN stays as it is
    bits = y.view(torch.int32)
    # Truncation toward zero: one step down in magnitude where RNE rounded up.
    truncated = bits - (back.abs() > x.abs()).to(torch.int32)
    return torch.where(inexact, truncated | 1, bits).view(torch.float32)


def _cast(name: str, x: torch.Tensor, method: int) -> np.ndarray:
    target = _CAST_TARGET[method]
    assert target.torch_dtype is not None
    src = _f64_to_f32_round_to_odd(x) if x.dtype == torch.float64 else x
    y = src.to(target.torch_dtype)
    inf = torch.isinf(y)
    if bool(inf.any()):
        overflow = inf & torch.isfinite(x)
        if bool(overflow.any()):
            first = int(torch.nonzero(overflow)[0, 0])
            hint = (
                "; use bfloat16 (float32's range) or int8 for it"
                if method == s.LOSSY_CAST_FLOAT16
                else "; exclude the tensor from lossy encoding"
            )
            raise SerializationException(
                f"tensor {name!r}: value {float(x[first])!r} at flat index {first} overflows "
                f"{target.name} (lossy cast would turn it into infinity){hint}"
            )
    return _bytes_of(y)


def _quantize_int8(name: str, x: torch.Tensor, block: int) -> np.ndarray:
    n = x.numel()
    blocks = -(-n // block)
    payload = np.empty(4 * blocks + n, dtype=np.uint8)
    scales = torch.from_numpy(payload[: 4 * blocks].view(np.float32))
    q = torch.from_numpy(payload[4 * blocks :].view(np.int8))
    full = n // block
    for lo, hi, rows in ((0, full * block, full), (full * block, n, 1 if n % block else 0)):
        if rows == 0:
            continue
        part = x[lo:hi]
        if part.dtype != torch.float32:
            part = part.to(torch.float32)  # exact for 16-bit floats; RNE for float64
        part = part.view(rows, -1)
        lo_v, hi_v = torch.aminmax(part, dim=1)
        amax = torch.maximum(-lo_v, hi_v)
        if not bool(torch.isfinite(amax).all()):
            raise SerializationException(
                f"tensor {name!r} holds NaN or infinity"
                + (" (or values beyond float32's range)" if x.dtype == torch.float64 else "")
                + ": int8 quantization needs finite values; exclude the tensor or use a cast"
            )
        # +0 for an all-zero block; the smallest float32 where max/127 underflows.
        scale = torch.where(amax > 0, torch.clamp_min(amax / 127.0, _F32_TINY), 0.0)
        # Near float32's maximum, 127 * scale must not overflow on decoding.
        top = torch.isinf(scale * 127.0)
        if bool(top.any()):
            scale = torch.where(top, torch.nextafter(scale, torch.zeros_like(scale)), scale)
        row0 = lo // block
        scales[row0 : row0 + rows] = scale
        divisor = torch.where(scale == 0, 1.0, scale)
        y = part / divisor[:, None]
        y.round_()  # half to even
        if bool((scale < _F32_NORMAL).any()):  # imprecise subnormal scales can exceed 127
            y.clamp_(-127.0, 127.0)
        q[lo:hi].copy_(y.view(-1))
    return payload


def _top_k(x: torch.Tensor, k: int) -> np.ndarray:
    n = x.numel()
    mag = x.abs()
    if mag.dtype in (torch.float16, torch.bfloat16):
        mag = mag.to(torch.float32)
    # NaN ranks above every number in torch.topk, so NaNs are kept (exactly).
    idx = torch.topk(mag, k, sorted=False).indices.sort().values
    width = x.element_size()
    payload = np.empty(k * (width + _index_width(n)), dtype=np.uint8)
    payload[: k * width] = _bytes_of(x[idx])
    index_dtype = np.dtype("<u4") if n < _UINT32_INDEX_LIMIT else np.dtype("<u8")
    payload[k * width :].view(index_dtype)[:] = idx.numpy()
    return payload


# ----------------------------------------------------------------------------- decoding


def decode(
    name: str, dtype: dtypes.DtypeInfo, numel: int, params: LossyParams, payload: np.ndarray
) -> np.ndarray:
    """The logical tensor's raw bytes (a fresh uint8 array of numel x width)
    from a payload whose size :func:`payload_size` already checked."""
    assert dtype.torch_dtype is not None
    what = f"tensor {name!r}"
    if payload.nbytes != payload_size(dtype, numel, params, what):
        raise SerializationException(f"{what}: lossy payload has {payload.nbytes} bytes")
    method = params.method
    if method in _CAST_TARGET:
        target = _CAST_TARGET[method]
        assert target.torch_dtype is not None
        return _bytes_of(_torch_view(payload, target.torch_dtype).to(dtype.torch_dtype))
    if method == s.LOSSY_BLOCK_INT8:
        return _dequantize_int8(dtype.torch_dtype, numel, params.block_size, payload)
    return _scatter_top_k(what, dtype, numel, params.k, payload)


def _dequantize_int8(
    torch_dtype: torch.dtype, n: int, block: int, payload: np.ndarray
) -> np.ndarray:
    blocks = -(-n // block)
    scales = _torch_view(payload[: 4 * blocks], torch.float32)
    q = _torch_view(payload[4 * blocks :], torch.int8)
    out = torch.empty(n, dtype=torch_dtype)
    wide = out if torch_dtype == torch.float32 else torch.empty(n, dtype=torch.float32)
    full = n // block
    if full:
        torch.mul(
            q[: full * block].view(full, block),
            scales[:full, None],
            out=wide[: full * block].view(full, block),
        )
    if n % block:
        torch.mul(q[full * block :], scales[full], out=wide[full * block :])
    if wide is not out:
        out.copy_(wide)  # float32 -> the tensor's dtype, nearest-even
    return _bytes_of(out)


def _scatter_top_k(
    what: str, dtype: dtypes.DtypeInfo, n: int, k: int, payload: np.ndarray
) -> np.ndarray:
    assert dtype.torch_dtype is not None
    width = dtype.itemsize
    index_dtype = np.dtype("<u4") if n < _UINT32_INDEX_LIMIT else np.dtype("<u8")
    raw_index = payload[k * width :]
    if raw_index.ctypes.data % index_dtype.itemsize:
        raw_index = raw_index.copy()
    index = raw_index.view(index_dtype)
    # Checked before the output is allocated: ascending, in range, no duplicates.
    if k > 1 and not bool(np.all(index[1:] > index[:-1])):
        bad = int(np.argmin(index[1:] > index[:-1]))
        raise SerializationException(
            f"{what}: top-k indices are not strictly ascending "
            f"(index {int(index[bad + 1])} at position {bad + 1} follows {int(index[bad])})"
        )
    if k and int(index[-1]) >= n:
        raise SerializationException(
            f"{what}: top-k index {int(index[-1])} is out of range for {n} elements"
        )
    values = _torch_view(payload[: k * width], dtype.torch_dtype)
    out = torch.zeros(n, dtype=dtype.torch_dtype)
    if k:
        out[torch.from_numpy(index.astype(np.int64))] = values
    return _bytes_of(out)
