"""The benchmarked paths: flwire's three encodings and the comparison anchors, each an
``encode(state_dict)`` / ``decode(blob)`` pair under one name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anchors
import torch

from flwire.serialization import decode_tensor_map, encode_tensor_map

StateDict = dict[str, torch.Tensor]


@dataclass
class BenchPath:
    name: str
    label: str
    encode: Callable[[StateDict], Any]
    decode: Callable[[Any], StateDict]
    note: str = ""
    supports: Callable[[StateDict], str | None] = lambda sd: None


def all_paths() -> dict[str, BenchPath]:
    paths = {
        "flwire_zstd": BenchPath(
            "flwire_zstd",
            "flwire zstd",
            lambda sd: encode_tensor_map(sd),
            decode_tensor_map,
            "default: zstd level 1 per tensor",
        ),
        "flwire_shuffle": BenchPath(
            "flwire_shuffle",
            "flwire zstd+shuffle",
            lambda sd: encode_tensor_map(sd, shuffle=True),
            decode_tensor_map,
            "byte shuffle, then zstd level 1",
        ),
        "flwire_none": BenchPath(
            "flwire_none",
            "flwire none",
            lambda sd: encode_tensor_map(sd, compression="none"),
            decode_tensor_map,
            "raw bytes, zero-copy decode",
        ),
    }
    for a in anchors.all_anchors().values():
        paths[a.name] = BenchPath(a.name, a.name, a.encode, a.decode, a.note, a.supports)
    return paths


PATH_NAMES = tuple(all_paths())
