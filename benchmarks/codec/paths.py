"""The benchmarked paths: flwire's lossless encodings, its lossy ones and the comparison
anchors, each an ``encode(state_dict)`` / ``decode(blob)`` pair under one name, with the
check its decoded output must pass (bit-exact, or within the lossy codec's error bound)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anchors
import fidelity
import models
import torch
from fidelity import Check

from flwire.serialization import decode_tensor_map, dtypes, encode_tensor_map

StateDict = dict[str, torch.Tensor]

try:  # lossy codecs land separately; until then their rows say why they are absent
    from flwire.serialization.lossy import LossyConfig
except ImportError:
    LossyConfig = None  # type: ignore[assignment,misc]


@dataclass
class BenchPath:
    name: str
    label: str
    encode: Callable[[StateDict], Any]
    decode: Callable[[Any], StateDict]
    note: str = ""
    supports: Callable[[StateDict], str | None] = lambda sd: None
    """None when the path can carry this state dict, else why it cannot."""
    check: Callable[[StateDict, StateDict], Check] = fidelity.bit_exact
    lossy: bool = False
    deltas_only: bool = False
    subject: bool = False
    """flwire's own paths: always timed warm here, never from their cold first call alone."""


def skip_reason(path: BenchPath, model: str, sd: StateDict) -> str | None:
    """Why ``path`` is not run on ``model`` (None: it is)."""
    if path.deltas_only and not models.is_delta(model):
        return "top-k sparsification is meant for update deltas, not whole weights"
    return path.supports(sd)


def _lossless(name: str, label: str, note: str, **options: Any) -> BenchPath:
    def encode(sd: StateDict) -> bytes:
        return encode_tensor_map(sd, **options)

    return BenchPath(name, label, encode, decode_tensor_map, note, subject=True)


def _lossy_supports(config: Any, method: str) -> Callable[[StateDict], str | None]:
    """Why ``config`` cannot run on a state dict: the lossy module is missing, or it would
    leave every tensor lossless (then the row would only repeat flwire zstd)."""

    def supports(sd: StateDict) -> str | None:
        if config is None:
            return "flwire.serialization.lossy is not available in this checkout"
        for name, t in sd.items():
            if config.applies_to(name, dtypes.from_torch(t.dtype, name), t.numel()):
                return None
        sources = "float32/float64" if method in ("float16", "bfloat16") else "floating"
        return (
            f"{method} takes {sources} tensors of >= {config.min_elements} elements; "
            "this model has none, so it would be sent losslessly"
        )

    return supports


def _lossy(
    name: str,
    method: str,
    note: str,
    check: Callable[[StateDict, StateDict], Check],
    deltas_only: bool = False,
) -> BenchPath:
    config = LossyConfig(method=method) if LossyConfig is not None else None

    def encode(sd: StateDict) -> bytes:
        return encode_tensor_map(sd, lossy=config)

    return BenchPath(
        name,
        f"flwire {method}",
        encode,
        decode_tensor_map,
        note,
        _lossy_supports(config, method),
        check,
        lossy=True,
        deltas_only=deltas_only,
        subject=True,
    )


def all_paths() -> dict[str, BenchPath]:
    paths = [
        _lossless("flwire_zstd", "flwire zstd", "default: zstd level 1 per tensor"),
        _lossless(
            "flwire_shuffle", "flwire zstd+shuffle", "byte shuffle, then zstd level 1", shuffle=True
        ),
        _lossless("flwire_none", "flwire none", "raw bytes, zero-copy decode", compression="none"),
        _lossy(
            "flwire_fp16",
            "float16",
            "lossy: float32 tensors cast to float16, then zstd level 1",
            fidelity.cast_check(torch.float16),
        ),
        _lossy(
            "flwire_bf16",
            "bfloat16",
            "lossy: float32 tensors cast to bfloat16, then zstd level 1",
            fidelity.cast_check(torch.bfloat16),
        ),
        _lossy(
            "flwire_int8",
            "int8",
            "lossy: int8 per block of 64 (absmax scale), then zstd level 1",
            fidelity.within(
                fidelity.block_int8_bound(64),
                "bound: half a quantization step of its block (+ rounding to the dtype)",
            ),
        ),
        _lossy(
            "flwire_topk",
            "topk",
            "lossy: top 1 % magnitudes per tensor (deltas only), then zstd",
            fidelity.within(fidelity.topk_bound(0.01), "bound: the k-th largest |x| of its tensor"),
            deltas_only=True,
        ),
    ]
    out = {p.name: p for p in paths}
    for a in anchors.all_anchors().values():
        out[a.name] = BenchPath(a.name, a.name, a.encode, a.decode, a.note, a.supports)
    return out


PATH_NAMES = tuple(all_paths())
