"""Floating-point conversions the lossy encodings need.

numpy has no bfloat16, so bfloat16 is handled as its bit pattern (uint16, the
upper half of a binary32). Every conversion rounds to nearest, ties to even;
float64 goes to 16 bits through float32 rounded to odd, so that it is rounded
once (no double rounding). A cast writes every NaN as the canonical quiet NaN
of its sign (wire format, section 9.1): binary16 0x7e00 / 0xfe00, bfloat16
0x7fc0 / 0xffc0, whatever its payload.

The numpy code below is the reference and the only path without torch. When
the process has imported torch already (the caller's tensors are torch
tensors), the plain IEEE conversions between float32 and the 16-bit formats
run on torch's kernels instead, which are vectorised where numpy's are not
(about 10x faster here); the results are the same bits, NaN aside
(tests/property/test_lossy_kernels.py compares the two paths).
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import numpy as np

from flwire.tensors import dtypes

#: The quiet bit of a bfloat16 NaN, and half a bfloat16 unit in the last place
#: of a float32 (the rounding increment, before the tie-to-even bit).
_BF16_QUIET = 0x0040
_HALF_ULP = 0x7FFF
#: 16-bit float bits: the sign, and per cast target its infinity and the
#: canonical quiet NaN a cast writes for every NaN (with the input's sign).
_SIGN_16 = 0x8000
_INF_16 = {dtypes.FLOAT16.wire: 0x7C00, dtypes.BFLOAT16.wire: 0x7F80}
_QUIET_NAN_16 = {dtypes.FLOAT16.wire: 0x7E00, dtypes.BFLOAT16.wire: 0x7FC0}


def _torch() -> Any:
    """The torch module if this process has imported it, else None (never imports it)."""
    return sys.modules.get("torch")


def _tensor(torch: Any, x: np.ndarray) -> Any:
    """A torch view of ``x``; read-only input (a view on the caller's bytes) is
    only read here, so torch's warning about it does not apply."""
    if x.flags.writeable:
        return torch.from_numpy(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(x)


def aligned(raw: np.ndarray, width: int) -> np.ndarray:
    """``raw`` (uint8), copied when its address is not a multiple of ``width``."""
    return raw.copy() if raw.ctypes.data % width else raw


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), nearest-even; NaN stays a (quiet) NaN."""
    torch = _torch()
    if torch is not None:
        bits: np.ndarray = _tensor(torch, x).to(torch.bfloat16).view(torch.int16).numpy()
        return bits.view(np.uint16)
    raw = x.view(np.uint32)
    out = ((raw + (_HALF_ULP + ((raw >> 16) & 1))) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        out[nan] = ((raw[nan] >> 16) | _BF16_QUIET).astype(np.uint16)
    return out


def f32_to_f16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> float16 bits (uint16), nearest-even; overflow gives infinity."""
    torch = _torch()
    if torch is not None:
        bits: np.ndarray = _tensor(torch, x).to(torch.float16).view(torch.int16).numpy()
        return bits.view(np.uint16)
    with np.errstate(over="ignore"):
        return x.astype("<f2").view(np.uint16)


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) -> float32, exactly."""
    torch = _torch()
    if torch is not None:
        wide: np.ndarray = _tensor(torch, bits.view(np.int16)).view(torch.bfloat16).float().numpy()
        return wide
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    """float16 bits (uint16) -> float32, exactly."""
    torch = _torch()
    if torch is not None:
        wide: np.ndarray = _tensor(torch, bits.view(np.int16)).view(torch.float16).float().numpy()
        return wide
    return bits.view("<f2").astype(np.float32)


def f64_to_f32_round_to_odd(x: np.ndarray) -> np.ndarray:
    """float64 -> float32 rounding to odd, so that a second rounding (to 16
    bits, nearest-even) gives the correctly rounded result. Values beyond
    float32's range become its largest finite value (odd), which then rounds
    to infinity."""
    with np.errstate(over="ignore", invalid="ignore"):  # NaN stays NaN
        y = x.astype(np.float32)
    back = y.astype(np.float64)
    inexact = (back != x) & ~np.isnan(x)
    bits = y.view(np.uint32)
    # One step toward zero in magnitude where nearest-even rounded away from it.
    truncated = bits - (np.abs(back) > np.abs(x)).astype(np.uint32)
    return np.where(inexact, truncated | 1, bits).astype(np.uint32).view(np.float32)


def to_float(raw: np.ndarray, info: dtypes.DtypeInfo) -> np.ndarray:
    """The values of a float tensor's raw bytes as a flat float32 array (float64
    for float64), exact; a view when no conversion is needed."""
    raw = aligned(raw, info.itemsize)
    if info.wire == dtypes.BFLOAT16.wire:
        return bf16_bits_to_f32(raw.view("<u2"))
    if info.wire == dtypes.FLOAT16.wire:
        return f16_bits_to_f32(raw.view("<u2"))
    return raw.view("<f8" if info.itemsize == 8 else "<f4")


def from_float32(x: np.ndarray, info: dtypes.DtypeInfo) -> Any:
    """float32 values as the raw bytes (uint8) of dtype ``info``, nearest-even."""
    if info.wire == dtypes.BFLOAT16.wire:
        return f32_to_bf16_bits(x).view(np.uint8)
    if info.wire == dtypes.FLOAT16.wire:
        return f32_to_f16_bits(x).view(np.uint8)
    if info.wire == dtypes.FLOAT32.wire:
        return x.view(np.uint8)
    return x.astype("<f8").view(np.uint8)


def cast_bits(x: np.ndarray, target: dtypes.DtypeInfo) -> np.ndarray:
    """float32 or float64 values cast to float16 / bfloat16 (raw uint16 bits),
    correctly rounded; overflow gives infinity (the caller checks); every NaN
    becomes the canonical quiet NaN of its sign."""
    narrow = f64_to_f32_round_to_odd(x) if x.dtype == np.float64 else x
    if target.wire == dtypes.FLOAT16.wire:
        bits = f32_to_f16_bits(narrow)
    else:
        bits = f32_to_bf16_bits(narrow)
    return _canonical_nans(x, bits, target.wire)


def _canonical_nans(x: np.ndarray, bits: np.ndarray, wire: int) -> np.ndarray:
    """``bits`` with each NaN replaced by the quiet NaN of the sign of the same
    element of ``x`` (the conversions keep payload bits, or drop the sign).
    The maximum propagates NaN: the cheapest test for one (8 ms for 64 MiB of
    float32 here, against about 100 ms for the whole cast; a full check of the
    bits cost 15-25 %), so that tensors without NaN pay nothing else."""
    with np.errstate(invalid="ignore"):
        if not x.size or not np.isnan(np.max(x)):
            return bits
    nan = np.flatnonzero((bits & ~np.uint16(_SIGN_16)) > _INF_16[wire])
    if nan.size:
        sign = np.signbit(x[nan]).astype(np.uint16) << np.uint16(15)
        bits[nan] = sign | np.uint16(_QUIET_NAN_16[wire])
    return bits


def whole_tensor_kernels() -> bool:
    """Whether the conversions run on torch's kernels, which spread one call over
    the cores themselves (callers then need not cut the work into chunks)."""
    return _torch() is not None


def widen_into(bits: np.ndarray, source: dtypes.DtypeInfo, out: np.ndarray) -> None:
    """float16 / bfloat16 bits widened, exactly, into ``out`` (float32 or float64
    values, same length), without a temporary where the formats allow."""
    torch = _torch()
    if torch is not None:
        narrow = torch.float16 if source.wire == dtypes.FLOAT16.wire else torch.bfloat16
        _tensor(torch, out).copy_(_tensor(torch, bits.view(np.int16)).view(narrow))
    elif source.wire == dtypes.BFLOAT16.wire and out.dtype == np.float32:
        np.left_shift(bits, 16, out=out.view(np.uint32), dtype=np.uint32)
    else:
        with np.errstate(invalid="ignore"):  # NaN stays NaN
            if source.wire == dtypes.BFLOAT16.wire:
                out[:] = bf16_bits_to_f32(bits)
            else:
                out[:] = bits.view("<f2")  # numpy widens float16 exactly
