"""flwire.tensors.buffers: a streamed transfer's tensors of MAPPED_BYTES or
more are decoded into a private mapping of their own (plain pages,
page-aligned), smaller ones into numpy's memory; either way the bytes are the
caller's, writable and exact. Whole-message decoding keeps numpy's memory."""

from __future__ import annotations

import gc
import mmap

import numpy as np
import pytest
import torch
from stream_tools import TOPIC, drain, receiver, run, started, streamed

from flwire import EncodeOptions, decode_tensor_map, encode_tensor_map
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
    out["big"].add_(1)  # writable, and the caller's
    assert not torch.equal(out["big"], weights["big"])


def test_whole_message_decoding_keeps_numpy_memory() -> None:
    weights = {"big": torch.randn(BIG, generator=torch.Generator().manual_seed(5))}
    out = decode_tensor_map(encode_tensor_map(weights, EncodeOptions(compression="zstd")))
    assert torch.equal(out["big"], weights["big"])
    assert not _mapped(out["big"].data_ptr())
