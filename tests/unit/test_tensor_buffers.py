"""flwire.tensors.buffers: decoded tensors of MAPPED_BYTES or more live in a
private mapping of their own (plain pages, page-aligned), smaller ones in
numpy's memory; either way the bytes are the caller's, writable and exact,
whichever path made them (whole-message decode, every codec and lossy method,
and streamed transfers)."""

from __future__ import annotations

import gc
import mmap

import numpy as np
import pytest
import torch
from stream_tools import TOPIC, drain, receiver, run, started, streamed

from flwire import EncodeOptions, LossyConfig, decode_tensor_map, encode_tensor_map
from flwire.tensors import buffers
from flwire.transport import Channel, InMemoryBroker

BIG = buffers.MAPPED_BYTES // 4 + 1001  # float32 elements: just over the threshold


def _mapped(address: int) -> bool:
    """Whether a decoded tensor starts on a page: a mapping of its own does;
    numpy's memory for an array this size starts 16 bytes into a malloc'd block."""
    return address % mmap.PAGESIZE == 0


def test_a_small_buffer_is_numpy_memory() -> None:
    buf = buffers.empty(1000)
    assert buf.dtype == np.uint8 and buf.shape == (1000,)
    assert buf.flags.writeable and buf.flags.owndata


def test_a_large_buffer_is_a_writable_page_aligned_mapping_that_outlives_its_names() -> None:
    buf = buffers.empty(buffers.MAPPED_BYTES + 3)
    assert buf.dtype == np.uint8 and buf.shape == (buffers.MAPPED_BYTES + 3,)
    assert buf.flags.writeable and not buf.flags.owndata
    assert _mapped(buf.ctypes.data)
    copy = buffers.copy_of(buf[:100])
    assert copy.nbytes == 100 and copy.flags.owndata
    view = buf[1:].view(np.uint8)
    del buf
    gc.collect()
    view[:] = 7  # the mapping is held by the array's base, not by a name
    assert int(view.sum()) == 7 * view.nbytes
    tensor = torch.from_numpy(view)
    tensor += 1
    assert int(view[-1]) == 8


def test_memory_the_system_refuses_is_a_memory_error() -> None:
    with pytest.raises(MemoryError, match="cannot map"):
        buffers.empty(1 << 62)


DECODE_OPTIONS = {
    "zstd": EncodeOptions(compression="zstd", min_saving=0.0),
    "zstd+shuffle": EncodeOptions(compression="zstd", shuffle=True, min_saving=0.0),
    # Uncompressed from bytes: the torch tensor is a copy (bytes are read-only).
    "none": EncodeOptions(compression="none"),
    "lz4": EncodeOptions(compression="lz4", min_saving=0.0),
    "lossy fp16": EncodeOptions(lossy=LossyConfig(method="float16")),
    "lossy int8": EncodeOptions(lossy=LossyConfig(method="int8")),
}


@pytest.mark.parametrize("name", sorted(DECODE_OPTIONS))
def test_large_decoded_tensors_are_mapped_and_exact(name: str) -> None:
    g = torch.Generator().manual_seed(3)
    weights = {
        "big": (torch.randn(BIG, generator=g) * 100).round() / 100,
        "small": torch.randn(10, generator=g),
    }
    blob = encode_tensor_map(weights, DECODE_OPTIONS[name])
    out = decode_tensor_map(blob)
    assert _mapped(out["big"].data_ptr()), "the large tensor was not decoded into a mapping"
    tolerance = {"lossy fp16": 1e-3, "lossy int8": 0.05}.get(name, 0.0)
    for key, tensor in weights.items():
        assert torch.allclose(out[key], tensor, rtol=0, atol=tolerance * 100), key
    out["big"].add_(1)  # writable, and the caller's
    again = decode_tensor_map(blob)
    assert not torch.equal(out["big"], again["big"])


def test_a_large_streamed_tensor_is_decoded_into_a_mapping() -> None:
    g = torch.Generator().manual_seed(4)
    weights = {"big": torch.randn(BIG, generator=g), "bias": torch.randn(7, generator=g)}

    async def go() -> dict[str, torch.Tensor]:
        broker = InMemoryBroker()
        sender = Channel(await started(broker, 1 << 20))
        await sender.send_message(TOPIC, streamed(weights, compression="zstd"))
        channel, got = receiver(broker)
        await drain(channel, got, broker)
        (delivery,) = got.messages
        assert delivery.message is not None
        return delivery.message.tensors()

    out = run(go())
    assert _mapped(out["big"].data_ptr())
    for key, tensor in weights.items():
        assert torch.equal(out[key], tensor), key
