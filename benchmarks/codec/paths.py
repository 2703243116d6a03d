"""The benchmarked paths, one row each: flwire's lossless encodings, its lossy ones, and the
anchors (the old path and the other formats), each an ``encode(state_dict)`` /
``decode(blob)`` pair under one name, with the check its decoded output must pass (bit-exact,
or within the lossy codec's error bound)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from benchmarks import legacy, models
from benchmarks.codec import anchors, fidelity
from benchmarks.codec.fidelity import Check
from benchmarks.models import StateDict
from flwire import EncodeOptions, LossyConfig, decode_tensor_map, encode_tensor_map
from flwire.tensors.lossy import LossyMethod
from flwire.tensors.torch_support import dtype_info


def _always(sd: StateDict) -> str | None:
    return None


def _as_received(blob: Any) -> Any:
    """The encoded bytes as a receiver gets them (immutable ``bytes``)."""
    return blob


@dataclass
class BenchPath:
    name: str
    label: str
    encode: Callable[[StateDict], Any]
    decode: Callable[[Any], StateDict]
    note: str = ""
    supports: Callable[[StateDict], str | None] = _always
    """None when the path can carry this state dict, else why it cannot."""
    check: Callable[[StateDict, StateDict], Check] = fidelity.bit_exact
    lossy: bool = False
    deltas_only: bool = False
    subject: bool = False
    """flwire's own paths: always timed warm here, never from their cold first call alone."""
    handover: Callable[[Any], Any] = _as_received
    """What the decoder is given, made from the encoded blob outside the timings: the
    blob itself, or a ``bytearray`` (writable memory the receiver hands over)."""


def skip_reason(path: BenchPath, model: str, sd: StateDict) -> str | None:
    """Why ``path`` is not run on ``model`` (None: it is)."""
    if path.deltas_only and not models.is_delta(model):
        return "top-k sparsification is meant for update deltas, not whole weights"
    return path.supports(sd)


def failure(exc: BaseException) -> str:
    """A path that raised, in its row's note."""
    return f"{type(exc).__name__}: {exc}"


def _flwire(name: str, label: str, note: str, options: EncodeOptions, **fields: Any) -> BenchPath:
    def encode(sd: StateDict) -> bytes:
        return encode_tensor_map(sd, options)

    return BenchPath(name, label, encode, decode_tensor_map, note, subject=True, **fields)


def _lossy_supports(config: LossyConfig) -> Callable[[StateDict], str | None]:
    """Why ``config`` cannot run on a state dict: it would leave every tensor lossless (then
    the row would only repeat flwire zstd)."""

    def supports(sd: StateDict) -> str | None:
        for name, t in sd.items():
            if config.applies_to(name, dtype_info(t.dtype, name), t.numel()):
                return None
        method = config.method
        sources = "float32/float64" if method in ("float16", "bfloat16") else "floating"
        return (
            f"{method} takes {sources} tensors of >= {config.min_elements} elements; "
            "this model has none, so it would be sent losslessly"
        )

    return supports


def _lossy(
    name: str,
    method: LossyMethod,
    note: str,
    check: Callable[[StateDict, StateDict], Check],
    deltas_only: bool = False,
) -> BenchPath:
    config = LossyConfig(method=method)
    return _flwire(
        name,
        f"flwire {method}",
        note,
        EncodeOptions(lossy=config),
        supports=_lossy_supports(config),
        check=check,
        lossy=True,
        deltas_only=deltas_only,
    )


def _anchors() -> list[BenchPath]:
    floor = anchors.MemcpyFloor()
    return [
        BenchPath(
            "legacy_path",
            "legacy_path",
            legacy.encode_update,
            legacy.decode_update,
            "pickle+gzip-9+base64 in the JSON message (size = whole message)",
        ),
        BenchPath(
            "torch_save",
            "torch_save",
            anchors.torch_save_encode,
            anchors.torch_save_decode,
            "torch.save/load",
        ),
        BenchPath(
            "safetensors",
            "safetensors",
            anchors.safetensors_encode,
            anchors.safetensors_decode,
            "safetensors.torch save/load",
        ),
        BenchPath(
            "flower_numpy",
            "flower_numpy",
            anchors.flower_encode,
            anchors.flower_decode,
            "np.save per array, length-prefixed",
            supports=anchors.numpy_can_carry,
        ),
        BenchPath("memcpy", "memcpy", floor.encode, floor.decode, "floor: 1 copy / views"),
    ]


def all_paths() -> dict[str, BenchPath]:
    paths = [
        _flwire("flwire_zstd", "flwire zstd", "default: zstd level 1 per tensor", EncodeOptions()),
        _flwire(
            "flwire_shuffle",
            "flwire zstd+shuffle",
            "byte shuffle, then zstd level 1",
            EncodeOptions(shuffle=True),
        ),
        _flwire(
            "flwire_lz4",
            "flwire lz4",
            "LZ4 frames (fast mode) per tensor",
            EncodeOptions(compression="lz4"),
        ),
        _flwire(
            "flwire_lz4_shuffle",
            "flwire lz4+shuffle",
            "byte shuffle, then LZ4 frames",
            EncodeOptions(compression="lz4", shuffle=True),
        ),
        _flwire(
            "flwire_none",
            "flwire none",
            "raw bytes, decoded from a bytearray (handed over): zero-copy views",
            EncodeOptions(compression="none"),
            handover=bytearray,
        ),
        _flwire(
            "flwire_none_bytes",
            "flwire none (bytes)",
            "raw bytes, decoded from immutable bytes: one memcpy per tensor",
            EncodeOptions(compression="none"),
        ),
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
        *_anchors(),
    ]
    return {p.name: p for p in paths}


PATH_NAMES = tuple(all_paths())
