"""Decoded tensors never write through to memory the caller did not hand over
(issue 12.1): in-place maths on every decoded tensor leaves immutable input
unchanged, for every codec and for the compat API; writable input is handed
over and decodes zero-copy."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from flwire import EncodeOptions, LossyConfig, decode_tensor_map, encode_tensor_map
from flwire.compat.serialization.weight_serializer import WeightSerializer


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "bias": torch.randn(10, generator=g),  # small: stored raw even with zstd
        "weight": torch.randn(256, 128, generator=g),
        "steps": torch.tensor([7], dtype=torch.int64),
        "mask": torch.rand(64, generator=g) > 0.5,
        "half": torch.randn(300, generator=g).to(torch.bfloat16),
    }


OPTIONS = {
    "none": EncodeOptions(compression="none"),
    "zstd": EncodeOptions(compression="zstd"),
    "zstd+shuffle": EncodeOptions(compression="zstd", shuffle=True),
    "lz4": EncodeOptions(compression="lz4"),
    "lz4+shuffle": EncodeOptions(compression="lz4", shuffle=True),
    "lossy fp16": EncodeOptions(lossy=LossyConfig(method="float16", min_elements=1)),
    "lossy int8": EncodeOptions(lossy=LossyConfig(method="int8", min_elements=1)),
}


def _mutate_all(decoded: dict) -> None:
    for t in decoded.values():
        if t.dtype == torch.bool:
            t.logical_not_()
        else:
            t.mul_(600).add_(1)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_in_place_maths_on_torch_results_leaves_bytes_unchanged(name):
    blob = encode_tensor_map(_state(), OPTIONS[name])
    assert isinstance(blob, bytes)
    digest = hashlib.sha256(blob).hexdigest()
    first = decode_tensor_map(blob)
    expected = {k: v.clone() for k, v in first.items()}
    _mutate_all(first)
    assert hashlib.sha256(blob).hexdigest() == digest
    again = decode_tensor_map(blob)  # no ChecksumMismatchError, the original values
    for key, value in expected.items():
        assert torch.equal(again[key], value), key


def test_compat_weight_serializer_results_are_independent():
    serializer = WeightSerializer()
    blob = serializer.serialize_weights(_state())
    digest = hashlib.sha256(blob if isinstance(blob, bytes) else blob.encode()).hexdigest()
    decoded = serializer.deserialize_weights(blob)
    expected = {k: v.clone() for k, v in decoded.items()}
    _mutate_all(decoded)
    after = hashlib.sha256(blob if isinstance(blob, bytes) else blob.encode()).hexdigest()
    assert after == digest
    again = serializer.deserialize_weights(blob)
    for key, value in expected.items():
        assert torch.equal(again[key], value), key


def test_numpy_results_from_bytes_are_read_only_views():
    blob = encode_tensor_map({"w": np.arange(64, dtype=np.float32)}, compression="none")
    decoded = decode_tensor_map(blob, as_numpy=True)
    assert not decoded["w"].flags.writeable
    with pytest.raises(ValueError):
        decoded["w"] *= 2


def test_writable_input_is_handed_over_and_decodes_zero_copy():
    blob = bytearray(
        encode_tensor_map({"w": torch.arange(64, dtype=torch.float32)}, compression="none")
    )
    decoded = decode_tensor_map(blob)
    start = np.frombuffer(blob, dtype=np.uint8).ctypes.data
    assert start <= decoded["w"].data_ptr() < start + len(blob)  # a view: no copy
    decoded["w"].add_(1)  # writes into the buffer the caller handed over
    assert decode_tensor_map(blob, verify_checksum=False)["w"][0].item() == 1.0
