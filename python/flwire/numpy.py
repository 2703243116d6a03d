"""numpy arrays <-> flwire TensorMap bytes, with safetensors' verbs.

    from flwire.numpy import save, load, save_file, load_file
    blob = save({"w": np.ones((2, 3), np.float32)})
    arrays = load(blob)

Needs numpy only. ``options`` (an :class:`~flwire.EncodeOptions`) says how to
encode (default: zstd per tensor, exact). Arrays decoded from uncompressed
tensors are read-only views on ``data`` when it is immutable ``bytes``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from flwire.exceptions import SerializationException
from flwire.tensors import DecodeLimits, EncodeOptions, decode_tensor_map, encode_tensor_map
from flwire.tensors.files import read_file, refuse_foreign, write_file
from flwire.tensors.sources import require_state_dict

__all__ = ["load", "load_file", "save", "save_file"]


def _check(tensors: Mapping[str, Any]) -> Mapping[str, Any]:
    for name, value in require_state_dict(tensors, "flwire.numpy.save").items():
        if not isinstance(value, np.ndarray):
            raise SerializationException(
                f"flwire.numpy.save takes numpy arrays; {name!r} is a {type(value).__name__} "
                "(use flwire.torch.save for torch tensors, or flwire.encode_tensor_map for both)"
            )
    return tensors


def save(
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
    options: EncodeOptions | None = None,
) -> bytes:
    """Encode numpy arrays as TensorMap bytes."""
    return encode_tensor_map(_check(tensors), options, metadata=metadata)


def save_file(
    tensors: Mapping[str, np.ndarray],
    filename: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
    options: EncodeOptions | None = None,
) -> None:
    """Encode numpy arrays into a file (written atomically)."""
    write_file(save(tensors, metadata, options), filename)


def load(data: Any, *, limits: DecodeLimits | None = None) -> dict[str, np.ndarray]:
    """Decode TensorMap bytes to numpy arrays."""
    refuse_foreign(data)
    return decode_tensor_map(data, as_numpy=True, limits=limits)


def load_file(
    filename: str | os.PathLike[str], *, limits: DecodeLimits | None = None
) -> dict[str, np.ndarray]:
    """Decode a TensorMap file to numpy arrays."""
    return load(read_file(filename), limits=limits)
