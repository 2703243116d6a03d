"""Lossy payloads decompressed into the end of their output and reconstructed
there (issue 13: peak memory at most 1.5x the tensor) give exactly what the same
payload gives when it is decoded from its own buffer. Steps are made tiny so that
a small tensor goes through many phases, with steps that overlap what they read."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from unittest import mock

import numpy as np
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from flwire import LossyConfig, decode_tensor_map, encode_tensor_map
from flwire.tensors import decode, read_tensor_map
from flwire.tensors.lossy import LossyMethod, transforms

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


@st.composite
def cases(draw: st.DrawFn) -> tuple[torch.Tensor, LossyConfig]:
    dtype = draw(st.sampled_from(DTYPES))
    method: LossyMethod = draw(st.sampled_from(["int8", "float16", "bfloat16"]))
    if method != "int8" and dtype.itemsize == 2:
        dtype = torch.float32  # the casts apply to wider dtypes
    n = draw(st.integers(1, 3000))
    seed = draw(st.integers(0, 2**32 - 1))
    # Repeated values compress, so the payload is zstd (the in-place path).
    levels = np.random.default_rng(seed).integers(-4, 5, size=n).astype(np.float64)
    x = torch.from_numpy(levels * draw(st.sampled_from([0.5, 1e-3, 3.0]))).to(dtype)
    block = draw(st.integers(8, 400))
    return x, LossyConfig(method, block_size=block, min_elements=0)


def _backwards(fn: Callable[[int], Any], sizes: Sequence[int], threads: int | None) -> list[Any]:
    """run_parallel's contract (any order, results in order), worst order: the
    jobs of a phase run last first, as if the first were still running."""
    results = {i: fn(i) for i in reversed(range(len(sizes)))}
    return [results[i] for i in range(len(sizes))]


@settings(max_examples=150, deadline=None)
@given(cases(), st.sampled_from([1, 3, 16, 64]))
def test_in_place_reconstruction_is_exact(case, chunk):
    x, config = case
    packed = encode_tensor_map({"w": x}, lossy=config)
    plain = encode_tensor_map({"w": x}, lossy=config, compression="none")
    record = read_tensor_map(packed).records[0]
    with (
        mock.patch.object(transforms, "CHUNK_ELEMENTS", chunk),
        mock.patch.object(decode.parallel, "run_parallel", _backwards),
    ):
        got = decode_tensor_map(packed)["w"]
        want = decode_tensor_map(plain)["w"]
    if record.lossy is not None:
        event(f"payload codec {record.codec}")  # 1 (zstd) goes through the in-place path
        assert read_tensor_map(plain).records[0].codec == 0
    assert got.dtype == x.dtype and got.shape == x.shape
    assert torch.equal(got.view(torch.uint8), want.view(torch.uint8))
