"""Is the decoded state dict the one that was encoded? Lossless paths must give it back bit
for bit; lossy ones must stay within the error bound their codec documents. And how many of
the decoded tensors are views on the encoded bytes (zero-copy)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchmarks.models import StateDict

BoundFn = Callable[[torch.Tensor, torch.dtype], torch.Tensor]
"""(Flat float32 values, the tensor's own dtype) -> the largest error allowed on each value
(same shape, all > 0)."""


@dataclass
class Check:
    ok: bool  # lossless: bit-exact; lossy: every tensor within its bound
    detail: str = ""  # why not, or (lossy) the measured error in words
    error_ratio: float | None = None  # lossy: the largest measured error / its bound


def same_layout(expected: StateDict, got: StateDict) -> str | None:
    """Why the two dicts differ in names, types, dtypes or shapes; None when they agree
    (order is not compared: safetensors returns names sorted, load_state_dict goes by name)."""
    if set(expected) != set(got):
        return f"names differ: {sorted(set(expected) ^ set(got))[:3]}"
    for name, a in expected.items():
        b = got[name]
        if not isinstance(b, torch.Tensor):
            return f"{name}: got {type(b).__name__}"
        if a.dtype != b.dtype or tuple(a.shape) != tuple(b.shape):
            return f"{name}: {a.dtype}{tuple(a.shape)} -> {b.dtype}{tuple(b.shape)}"
    return None


def raw_bytes(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def bit_exact(expected: StateDict, got: StateDict) -> Check:
    """Same names, dtypes, shapes and raw bytes for every tensor."""
    why = same_layout(expected, got)
    if why:
        return Check(False, why)
    for name, a in expected.items():
        if not torch.equal(raw_bytes(a), raw_bytes(got[name])):
            return Check(False, f"{name}: bytes differ")
    return Check(True)


def zero_copy_count(blob: Any, out: StateDict) -> int:
    """How many decoded tensors (with data) point inside the encoded buffer."""
    view = np.frombuffer(blob, dtype=np.uint8)
    lo = view.ctypes.data
    hi = lo + view.nbytes
    n = 0
    for t in out.values():
        if t.numel() and lo <= t.data_ptr() and t.data_ptr() + t.numel() * t.element_size() <= hi:
            n += 1
    return n


# ----------------------------------------------------------------------------- lossy


@dataclass
class _Worst:
    ratio: float = 0.0  # largest |x - x_hat| / bound
    name: str = ""
    abs_err: float = 0.0  # largest |x - x_hat| of that tensor
    rel_err: float = 0.0  # largest |x - x_hat| / |x| where |x| >= the relative floor


def _tensor_error(
    a: torch.Tensor, b: torch.Tensor, bound_of: BoundFn, rel_floor: float | None
) -> tuple[float, float, float]:
    """(max error / bound, max |x - x_hat|, max relative error) of one float tensor."""
    x = a.detach().reshape(-1).float()
    err = (b.detach().reshape(-1).float() - x).abs_()
    ratio = float(err.div(bound_of(x, a.dtype)).max())
    rel = 0.0
    if rel_floor is not None:
        mag = x.abs()  # not abs_(): for float32, x is the caller's tensor itself
        rel = float(torch.where(mag >= rel_floor, err / mag, 0.0).max())
    return ratio, float(err.max()), rel


def _error_check(
    expected: StateDict, got: StateDict, bound_of: BoundFn, what: str, rel_floor: float | None
) -> Check:
    """Largest |x - x_hat| / bound over every element of every tensor; tensors that are not
    floating point must come back bit-exact."""
    why = same_layout(expected, got)
    if why:
        return Check(False, why)
    worst = _Worst()
    for name, a in expected.items():
        b = got[name]
        if not a.is_floating_point():
            if not torch.equal(raw_bytes(a), raw_bytes(b)):
                return Check(False, f"{name}: non-float tensor changed")
            continue
        if not a.numel():
            continue
        ratio, abs_err, rel_err = _tensor_error(a, b, bound_of, rel_floor)
        if math.isnan(ratio):
            return Check(False, f"{name}: NaN after decoding", math.inf)
        worst.rel_err = max(worst.rel_err, rel_err)
        if ratio > worst.ratio:
            worst.ratio, worst.name, worst.abs_err = ratio, name, abs_err
    detail = f"max |x-x^| / bound = {worst.ratio:.3f}, {what}"
    if rel_floor is not None:
        detail += f"; max relative error {worst.rel_err:.3g} (where |x| >= {rel_floor:.3g})"
    if worst.name:
        detail += f"; worst tensor {worst.name}, |x-x^| {worst.abs_err:.3g}"
    return Check(worst.ratio <= 1.0, detail, worst.ratio)


def cast_bound(dtype: torch.dtype) -> BoundFn:
    """Round to nearest in ``dtype``: relative error <= eps/2 in its normal range, absolute
    error <= half its smallest subnormal below that."""
    fi = torch.finfo(dtype)
    return lambda x, _: x.abs().mul_(fi.eps / 2).clamp_(min=fi.tiny * fi.eps / 2)


def block_int8_bound(block_size: int) -> BoundFn:
    """Symmetric int8 per block of ``block_size`` consecutive elements (flattened), scale =
    max|x| of the block / 127, round to nearest: |x - x_hat| <= scale / 2, plus float32
    rounding (of the scale and of q * scale) and the rounding of x_hat to the tensor's own
    dtype (relative eps/2 of it: 2^-8 for bfloat16)."""
    f32 = torch.finfo(torch.float32)

    def bound(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        pad = -x.numel() % block_size
        blocks = torch.nn.functional.pad(x.abs(), (0, pad)).view(-1, block_size)
        half_step = blocks.amax(dim=1).div_(254.0).mul_(1 + 4 * f32.eps)
        per_element = half_step.repeat_interleave(block_size)[: x.numel()]
        rounding = max(torch.finfo(dtype).eps / 2, f32.eps)
        magnitude = x.abs().add_(per_element)  # >= |x_hat|
        return per_element.add_(magnitude, alpha=rounding).clamp_(min=f32.tiny)

    return bound


def topk_bound(fraction: float) -> BoundFn:
    """Keep the k = ceil(fraction * n) largest |x| of each tensor, zero the rest: a dropped
    entry errs by at most the k-th largest |x|."""

    def bound(x: torch.Tensor, _: torch.dtype) -> torch.Tensor:
        k = max(1, math.ceil(fraction * x.numel()))
        kth = float(x.abs().kthvalue(x.numel() - k + 1).values)
        return torch.full_like(x, max(kth, torch.finfo(torch.float32).tiny))

    return bound


def within(
    bound_of: BoundFn, what: str, rel_floor: float | None = None
) -> Callable[[StateDict, StateDict], Check]:
    """A lossy path's check: every element within ``bound_of``, described as ``what``; with
    ``rel_floor`` (casts: the target's smallest normal) it also reports the largest relative
    error over the values of at least that magnitude."""
    return lambda expected, got: _error_check(expected, got, bound_of, what, rel_floor)


def cast_check(dtype: torch.dtype) -> Callable[[StateDict, StateDict], Check]:
    """The check of a round-to-nearest cast to ``dtype`` (see cast_bound)."""
    fi = torch.finfo(dtype)
    name = str(dtype).removeprefix("torch.")
    what = (
        f"bound: relative 2^{round(math.log2(fi.eps / 2))} (eps/2), absolute "
        f"{fi.tiny * fi.eps / 2:.3g} below {name}'s normal range"
    )
    return within(cast_bound(dtype), what, fi.tiny)
