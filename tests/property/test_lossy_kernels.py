"""The lossy conversions have two paths: numpy (the reference, and the only one
without torch) and torch's kernels (used when torch is imported already). They
must give the same bits; NaN only needs to stay NaN (the spec leaves its payload
open). The 16-bit -> float32 direction is checked exhaustively."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flwire.tensors.lossy import floats

ALL_16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)


def _both(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> tuple:
    assert floats._torch() is torch  # the accelerated path is live in this process
    with_torch = fn(x.copy())
    with pytest.MonkeyPatch.context() as m:
        m.setattr(floats, "_torch", lambda: None)
        numpy_only = fn(x.copy())
    return numpy_only, with_torch


#: Per format: (unsigned view, sign-less bits of infinity); NaN is anything above.
F32, F16, BF16 = ("<u4", 0x7F800000), ("<u2", 0x7C00), ("<u2", 0x7F80)
F64 = ("<u8", 0x7FF0000000000000)


def _same_bits(a: np.ndarray, b: np.ndarray, fmt: tuple[str, int]) -> None:
    view, inf = fmt
    ua, ub = a.view(view), b.view(view)
    assert ua.shape == ub.shape
    nan_a = (ua & ~np.array(1 << (8 * ua.dtype.itemsize - 1), dtype=view)) > inf
    nan_b = (ub & ~np.array(1 << (8 * ub.dtype.itemsize - 1), dtype=view)) > inf
    assert np.array_equal(nan_a, nan_b)
    assert np.array_equal(ua[~nan_a], ub[~nan_b])


@pytest.mark.parametrize("fn", [floats.f16_bits_to_f32, floats.bf16_bits_to_f32])
def test_widening_every_16_bit_pattern_agrees(fn):
    a, b = _both(fn, ALL_16)
    _same_bits(a, b, F32)


# float32 bit patterns around the places where rounding to 16 bits is delicate:
# ties, the overflow threshold, the subnormal ranges, signed zeros, inf and NaN.
def _edges() -> np.ndarray:
    out = []
    for base in (
        0x3F800000,
        0x477FE000,
        0x477FF000,
        0x7F7F0000,
        0x7F7F8000,
        0x38800000,
        0x33800000,
        0x33000000,
        0x00000001,
        0x00800000,
        0x7F800000,
        0x7FC00000,
    ):
        for delta in range(-4, 5):
            for low in (0, 0x1000, 0x7FFF, 0x8000, 0x8001, 0xFFFF):
                v = (base + delta * 0x10000 + low) & 0x7FFFFFFF
                out += [v, v | 0x80000000]
    return np.array(out, dtype=np.uint32)


@pytest.mark.parametrize("fn", [floats.f32_to_f16_bits, floats.f32_to_bf16_bits])
@given(seed=st.integers(0, 2**32 - 1))
def test_narrowing_float32_agrees(fn, seed):
    rng = np.random.default_rng(seed)
    bits = np.concatenate(
        [_edges(), rng.integers(0, 2**32, 50_000, dtype=np.uint64).astype(np.uint32)]
    )
    a, b = _both(lambda x: fn(x.view(np.float32)), bits)
    _same_bits(a, b, F16 if fn is floats.f32_to_f16_bits else BF16)


@given(seed=st.integers(0, 2**32 - 1), scale=st.integers(-140, 140))
def test_casting_float64_agrees(seed, scale):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(20_000) * 2.0**scale
    x[:4] = [np.nan, np.inf, -0.0, 1 + 2.0**-8 + 2.0**-30]
    for target in (floats.dtypes.FLOAT16, floats.dtypes.BFLOAT16):
        with np.errstate(over="ignore"):
            a, b = _both(functools.partial(floats.cast_bits, target=target), x)
        _same_bits(a, b, F16 if target is floats.dtypes.FLOAT16 else BF16)


@pytest.mark.parametrize("source", [floats.dtypes.FLOAT16, floats.dtypes.BFLOAT16])
@pytest.mark.parametrize("wide", ["<f4", "<f8"])
def test_widening_into_a_buffer_agrees_for_every_pattern(source, wide):
    def widen(bits: np.ndarray) -> np.ndarray:
        out = np.empty(bits.size, dtype=wide)
        floats.widen_into(bits, source, out)
        return out

    a, b = _both(widen, ALL_16)
    _same_bits(a, b, F32 if wide == "<f4" else F64)
    # And exactly the values: float32 (or float64) of every 16-bit pattern.
    narrow = np.dtype("<f2") if source is floats.dtypes.FLOAT16 else None
    with np.errstate(invalid="ignore"):  # signalling NaNs stay NaN
        want = (
            ALL_16.view(narrow).astype(wide)
            if narrow is not None
            else (ALL_16.astype(np.uint32) << 16).view(np.float32).astype(wide)
        )
    _same_bits(a, want, F32 if wide == "<f4" else F64)
