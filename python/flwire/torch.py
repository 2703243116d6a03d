"""torch tensors <-> flwire TensorMap bytes, with safetensors' verbs.

    from flwire.torch import save, load, save_file, load_file
    blob = save(model.state_dict())
    model.load_state_dict(load(blob))

Needs PyTorch (``pip install 'flwire[torch]'``). ``options`` (an
:class:`~flwire.EncodeOptions`) says how to encode (default: zstd per tensor,
exact). Tensors on another device are copied to the CPU; ``load_file(...,
device=...)`` moves the decoded tensors there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flwire.exceptions import SerializationException
from flwire.tensors import (
    DecodeLimits,
    EncodeOptions,
    decode_tensor_map,
    encode_tensor_map,
    torch_support,
)
from flwire.tensors.files import read_file, refuse_foreign, write_file
from flwire.tensors.sources import require_state_dict

if TYPE_CHECKING:
    import torch

__all__ = ["load", "load_file", "save", "save_file"]


def _check(tensors: Mapping[str, Any]) -> Mapping[str, Any]:
    torch_support.import_torch()
    for name, value in require_state_dict(tensors, "flwire.torch.save").items():
        if not torch_support.is_tensor(value):
            raise SerializationException(
                f"flwire.torch.save takes torch tensors; {name!r} is a {type(value).__name__} "
                "(use flwire.numpy.save for numpy arrays, or flwire.encode_tensor_map for both)"
            )
    return tensors


def save(
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
    options: EncodeOptions | None = None,
) -> bytes:
    """Encode torch tensors as TensorMap bytes."""
    return encode_tensor_map(_check(tensors), options, metadata=metadata)


def save_file(
    tensors: Mapping[str, torch.Tensor],
    filename: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
    options: EncodeOptions | None = None,
) -> None:
    """Encode torch tensors into a file (written atomically)."""
    write_file(save(tensors, metadata, options), filename)


def load(data: Any, *, limits: DecodeLimits | None = None) -> dict[str, torch.Tensor]:
    """Decode TensorMap bytes to torch tensors."""
    refuse_foreign(data)
    return decode_tensor_map(data, limits=limits)


def load_file(
    filename: str | os.PathLike[str],
    device: str = "cpu",
    *,
    limits: DecodeLimits | None = None,
) -> dict[str, torch.Tensor]:
    """Decode a TensorMap file to torch tensors on ``device``."""
    tensors = load(read_file(filename), limits=limits)
    if device != "cpu":
        tensors = {name: t.to(device) for name, t in tensors.items()}
    return tensors
