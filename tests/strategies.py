"""The hypothesis strategies shared by the tests (importable as ``strategies``:
tests/ is on the path as the rootdir of its conftest.py).

Tensors of every wire dtype with awkward bit patterns, shapes, names and
metadata for the tensor codec; nested typed values for metrics, configs and
extensions; encoder settings.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from helpers import INFO_BY_TORCH, TORCH_DTYPES, component_specials, numel, tensor_from_bytes
from hypothesis import strategies as st

from flwire.tensors import EncodeOptions

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# ----------------------------------------------------------------------------- tensors


def shapes(
    min_rank: int = 0, max_rank: int = 4, max_dim: int = 4, min_dim: int = 0
) -> st.SearchStrategy:
    return st.lists(
        st.integers(min_value=min_dim, max_value=max_dim), min_size=min_rank, max_size=max_rank
    ).map(tuple)


@st.composite
def raw_tensor_bytes(draw: Any, dtype: torch.dtype, count: int) -> bytes:
    """``count`` elements of ``dtype`` as raw little-endian bytes.

    Three modes: uniformly random bytes (so random NaN payloads appear), a mix
    of random and special values, and a small pool of values repeated (so that
    zstd actually compresses and the compressed/shuffled paths run). Bool
    elements are always 0 or 1.
    """
    info = INFO_BY_TORCH[dtype]
    size = count * info.itemsize
    if size == 0:
        return b""
    width, specials = component_specials(dtype)
    ncomp = size // width
    mode = draw(st.sampled_from(["random", "special", "pool"]))
    if mode == "random":
        out = draw(st.binary(min_size=size, max_size=size))
    elif mode == "special":
        rnd = draw(st.binary(min_size=size, max_size=size))
        picks = draw(st.binary(min_size=ncomp, max_size=ncomp))
        parts = []
        for i, b in enumerate(picks):
            if b & 1:
                parts.append(specials[(b >> 1) % len(specials)])
            else:
                parts.append(rnd[i * width : (i + 1) * width])
        out = b"".join(parts)
    else:
        component = st.binary(min_size=width, max_size=width) | st.sampled_from(specials)
        pool = draw(st.lists(component, min_size=1, max_size=3))
        picks = draw(st.binary(min_size=ncomp, max_size=ncomp))
        out = b"".join(pool[b % len(pool)] for b in picks)
    if dtype == torch.bool:
        out = bytes(b & 1 for b in out)
    assert len(out) == size
    return out


@st.composite
def torch_tensors(
    draw: Any,
    dtypes_: list[torch.dtype] | None = None,
    shape_strategy: st.SearchStrategy | None = None,
) -> torch.Tensor:
    """A tensor of any wire dtype (or one of ``dtypes_``) holding awkward bits."""
    dtype = draw(st.sampled_from(dtypes_ or TORCH_DTYPES))
    shape = draw(shape_strategy if shape_strategy is not None else shapes())
    raw = draw(raw_tensor_bytes(dtype, numel(shape)))
    return tensor_from_bytes(raw, dtype, shape)


_SMALL_ITEMSIZE = {torch.float32: 4, torch.int64: 8, torch.bfloat16: 2}


@st.composite
def small_tensors(draw: Any) -> torch.Tensor:
    """A small float32, int64 or bfloat16 tensor: cheap weights for messages."""
    dtype = draw(st.sampled_from(list(_SMALL_ITEMSIZE)))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    size = math.prod(shape) * _SMALL_ITEMSIZE[dtype]
    if size == 0:
        return torch.empty(shape, dtype=dtype)
    # Either arbitrary bit patterns (NaN payloads included) or a compressible pattern.
    raw = draw(
        st.binary(min_size=size, max_size=size)
        | st.binary(min_size=1, max_size=3).map(lambda p: (p * size)[:size])
    )
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape)


state_dicts = st.dictionaries(st.text(min_size=1, max_size=8), small_tensors(), max_size=4)

names = st.text(max_size=12)
metadata_dicts = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=5)


def encode_settings(
    compressions: tuple[str, ...] = ("zstd", "lz4", "none"),
    levels: tuple[int, ...] = (1, 3, -1),
    threads: tuple[int | None, ...] | None = None,
) -> st.SearchStrategy[dict[str, Any]]:
    """Keyword arguments of ``encode_tensor_map``: compression, shuffle, level
    (and threads when ``threads`` is given)."""
    fields: dict[str, st.SearchStrategy[Any]] = {
        "compression": st.sampled_from(compressions),
        "shuffle": st.booleans(),
        "level": st.sampled_from(levels),
    }
    if threads is not None:
        fields["threads"] = st.sampled_from(threads)
    return st.fixed_dictionaries(fields)


#: ``options=`` of the message builders that carry weights (None: the defaults).
encode_options = st.sampled_from(
    [
        None,
        EncodeOptions(compression="none"),
        EncodeOptions(compression="zstd"),
        EncodeOptions(compression="zstd", shuffle=True),
        EncodeOptions(compression="zstd", level=3),
        EncodeOptions(compression="lz4"),
        EncodeOptions(compression="lz4", shuffle=True),
    ]
)


# ----------------------------------------------------------------------------- typed values

scalar_values = (
    st.none()
    | st.booleans()
    | st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
    | st.floats()  # NaN and +-inf included
    | st.text(max_size=12)
    | st.binary(max_size=12)
)


def py_values(max_leaves: int = 16, max_size: int = 4) -> st.SearchStrategy[Any]:
    """Nested typed values: scalars, lists and string-keyed dicts of them."""
    return st.recursive(
        scalar_values,
        lambda inner: (
            st.lists(inner, max_size=max_size)
            | st.dictionaries(st.text(max_size=8), inner, max_size=max_size)
        ),
        max_leaves=max_leaves,
    )


def value_maps(
    max_size: int = 4, max_key: int = 10, max_leaves: int = 8
) -> st.SearchStrategy[dict[str, Any]]:
    """A metrics/config map: string keys to nested typed values."""
    return st.dictionaries(
        st.text(max_size=max_key), py_values(max_leaves=max_leaves), max_size=max_size
    )
