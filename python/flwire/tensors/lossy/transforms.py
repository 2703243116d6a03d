"""The lossy transforms: a floating tensor's raw bytes to its payload and back.

The tensor codec puts the payload where the raw bytes would be (CRC, filter
and codec then apply to the payload) and records the method in
``Tensor.lossy`` (docs/wire-format.md section 9.1, which also states the error
bounds the property tests check). Everything is vectorized numpy, in chunks of
CHUNK_ELEMENTS so that temporaries stay small; nothing loops over elements in
Python and nothing needs torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flwire.exceptions import SerializationException
from flwire.tensors import dtypes
from flwire.tensors.lossy import floats
from flwire.tensors.lossy.config import LossyConfig
from flwire.tensors.lossy.params import (
    CAST_TARGET,
    SCALE_BYTES,
    LossyParams,
    index_width,
    payload_size,
)
from flwire.v1 import tensor_pb2 as pb

#: Elements converted per step: bounds the temporaries of a large tensor.
CHUNK_ELEMENTS = 1 << 20
#: int8 levels are -127..127 (-128 is never written), so a scale is max|x| / 127.
INT8_LEVELS = 127
_F32_TINY = np.float32(2.0**-149)  # the smallest positive float32 (subnormal)
_F32_NORMAL = np.float32(2.0**-126)
#: The sign-less bits of a 16-bit float, and those of infinity per cast target.
_ABS_BITS = 0x7FFF
_INF_BITS = {dtypes.FLOAT16.wire: 0x7C00, dtypes.BFLOAT16.wire: 0x7F80}


def _chunks(n: int, step: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + step, n)) for lo in range(0, n, step)]


def _block_steps(n: int, block: int) -> list[tuple[int, int, int]]:
    """(first element, end element, blocks) of each step over ``n`` elements in
    blocks of ``block``: whole blocks, about CHUNK_ELEMENTS at a time, then the
    last, shorter block if there is one."""
    full = n // block
    per_step = max(1, CHUNK_ELEMENTS // block)
    steps = [
        (r * block, min(r + per_step, full) * block, min(per_step, full - r))
        for r in range(0, full, per_step)
    ]
    if n % block:
        steps.append((full * block, n, 1))
    return steps


def _index_dtype(numel: int) -> np.dtype[Any]:
    return np.dtype("<u4") if index_width(numel) == 4 else np.dtype("<u8")


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
    method = config.wire_method
    if method in CAST_TARGET:
        params, payload = LossyParams(method), _cast(name, dtype, raw, method)
    elif method == pb.LOSSY_BLOCK_INT8:
        params = LossyParams(method, block_size=config.block_size)
        payload = _quantize_int8(name, dtype, raw, config.block_size)
    else:
        k = config.k_for(numel)
        params, payload = LossyParams(method, k=k), _top_k(dtype, raw, k)
    if payload.nbytes >= raw.nbytes:
        return None  # lossy and not even smaller: send it exactly
    return params, payload


def _cast(name: str, dtype: dtypes.DtypeInfo, raw: np.ndarray, method: int) -> np.ndarray:
    target = CAST_TARGET[method]
    x = floats.to_float(raw, dtype)
    out = np.empty(x.size, dtype=np.uint16)
    for lo, hi in _chunks(x.size, CHUNK_ELEMENTS):
        y = floats.cast_bits(x[lo:hi], target)
        overflow = ((y & _ABS_BITS) == _INF_BITS[target.wire]) & np.isfinite(x[lo:hi])
        if overflow.any():
            first = lo + int(np.flatnonzero(overflow)[0])
            hint = (
                "; use bfloat16 (float32's range) or int8 for it"
                if method == pb.LOSSY_CAST_FLOAT16
                else "; exclude the tensor from lossy encoding"
            )
            raise SerializationException(
                f"tensor {name!r}: value {float(x[first])!r} at flat index {first} overflows "
                f"{target.name} (lossy cast would turn it into infinity){hint}"
            )
        out[lo:hi] = y
    return out.view(np.uint8)


def _int8_scales(name: str, dtype: dtypes.DtypeInfo, part: np.ndarray) -> np.ndarray:
    """The float32 scale of each row (block) of ``part`` (float32)."""
    amax = np.max(np.abs(part), axis=1)
    if not np.isfinite(amax).all():
        raise SerializationException(
            f"tensor {name!r} holds NaN or infinity"
            + (" (or values beyond float32's range)" if dtype.itemsize == 8 else "")
            + ": int8 quantization needs finite values; exclude the tensor or use a cast"
        )
    # +0 for an all-zero block; the smallest float32 where max/127 underflows.
    scale = np.where(amax > 0, np.maximum(amax / np.float32(INT8_LEVELS), _F32_TINY), 0)
    scale = scale.astype(np.float32)
    # Near float32's maximum, 127 * scale must not overflow on decoding.
    with np.errstate(over="ignore"):
        top = np.isinf(scale * np.float32(INT8_LEVELS))
    if top.any():
        scale = np.where(top, np.nextafter(scale, np.float32(0)), scale).astype(np.float32)
    return scale


def _quantize_int8(name: str, dtype: dtypes.DtypeInfo, raw: np.ndarray, block: int) -> np.ndarray:
    x = floats.to_float(raw, dtype)
    n = x.size
    blocks = -(-n // block)
    payload = np.empty(SCALE_BYTES * blocks + n, dtype=np.uint8)
    scales = payload[: SCALE_BYTES * blocks].view("<f4")
    q = payload[SCALE_BYTES * blocks :].view(np.int8)
    for lo, hi, rows in _block_steps(n, block):
        with np.errstate(over="ignore"):
            part = x[lo:hi].astype(np.float32, copy=False)  # exact for 16-bit; RNE for float64
        scale = _int8_scales(name, dtype, part.reshape(rows, -1))
        scales[lo // block : lo // block + len(scale)] = scale
        divisor = np.where(scale == 0, np.float32(1), scale)
        y = part.reshape(rows, -1) / divisor[:, None]
        np.rint(y, out=y)  # half to even
        if (scale < _F32_NORMAL).any():  # imprecise subnormal scales can exceed 127
            np.clip(y, -INT8_LEVELS, INT8_LEVELS, out=y)
        q[lo:hi] = y.reshape(-1)
    return payload


def _magnitudes(dtype: dtypes.DtypeInfo, raw: np.ndarray) -> np.ndarray:
    return np.abs(floats.to_float(raw, dtype))


def _top_k(dtype: dtypes.DtypeInfo, raw: np.ndarray, k: int) -> np.ndarray:
    n = raw.nbytes // dtype.itemsize
    mag = _magnitudes(dtype, raw)
    # numpy sorts NaN above every number, so NaNs are kept (exactly).
    idx = np.sort(np.argpartition(mag, n - k)[n - k :]) if k < n else np.arange(n)
    width = dtype.itemsize
    payload = np.empty(k * (width + index_width(n)), dtype=np.uint8)
    elements = floats.aligned(raw, width).view(f"<u{width}")
    payload[: k * width].view(f"<u{width}")[:] = elements[idx]
    payload[k * width :].view(_index_dtype(n))[:] = idx
    return payload


# ----------------------------------------------------------------------------- decoding


def decode(
    name: str, dtype: dtypes.DtypeInfo, numel: int, params: LossyParams, payload: np.ndarray
) -> np.ndarray:
    """The logical tensor's raw bytes (a fresh uint8 array of numel x width)
    from a payload whose size :func:`payload_size` already checked."""
    what = f"tensor {name!r}"
    if payload.nbytes != payload_size(dtype, numel, params, what):
        raise SerializationException(f"{what}: lossy payload has {payload.nbytes} bytes")
    method = params.method
    if method in CAST_TARGET:
        bits = floats.aligned(payload, 2).view("<u2")
        return np.ascontiguousarray(floats.bits_to_float(bits, CAST_TARGET[method], dtype))
    if method == pb.LOSSY_BLOCK_INT8:
        return _dequantize_int8(dtype, numel, params.block_size, payload)
    return _scatter_top_k(what, dtype, numel, params.k, payload)


def _dequantize_int8(
    dtype: dtypes.DtypeInfo, n: int, block: int, payload: np.ndarray
) -> np.ndarray:
    blocks = -(-n // block)
    scales = floats.aligned(payload[: SCALE_BYTES * blocks], SCALE_BYTES).view("<f4")
    q = payload[SCALE_BYTES * blocks :].view(np.int8)
    out = np.empty(n * dtype.itemsize, dtype=np.uint8)
    for lo, hi, rows in _block_steps(n, block):
        first = lo // block
        wide = q[lo:hi].reshape(rows, -1) * scales[first : first + rows, None]  # float32
        width = dtype.itemsize
        out[lo * width : hi * width] = floats.from_float32(wide.reshape(-1), dtype)
    return out


def _scatter_top_k(
    what: str, dtype: dtypes.DtypeInfo, n: int, k: int, payload: np.ndarray
) -> np.ndarray:
    width = dtype.itemsize
    index_dtype = _index_dtype(n)
    index = floats.aligned(payload[k * width :], index_dtype.itemsize).view(index_dtype)
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
    values = floats.aligned(payload[: k * width], width).view(f"<u{width}")
    out = np.zeros(n * width, dtype=np.uint8)
    if k:
        out.view(f"<u{width}")[index] = values
    return out
