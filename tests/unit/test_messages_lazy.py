"""``decode_message`` parses ids and metrics only: the weights stay a view on the
received buffer (no copy) and no tensor is decoded until ``.tensors()``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flwire import messages
from flwire.messages import message as message_module
from flwire.tensors import EncodeOptions, codecs, encode_tensor_map
from flwire.tensors import decode as tensor_decode

WEIGHTS = {
    "layer.weight": torch.arange(64, dtype=torch.float32).reshape(8, 8) / 3,
    "layer.bias": torch.arange(8, dtype=torch.int64) - 4,
    "norm": torch.linspace(-1, 1, 16).to(torch.bfloat16),
}


class Boom(Exception):
    pass


def boom(*args, **kwargs):
    raise Boom("the tensor decoder was called")


def address(buf) -> int:
    return np.frombuffer(buf, dtype=np.uint8).ctypes.data


def inside(ptr: int, size: int, buf) -> bool:
    start = address(buf)
    return start <= ptr and ptr + size <= start + len(buf)


def uncompressed(kind: str = "client_update") -> bytes:
    raw = EncodeOptions(compression="none")
    if kind == "client_update":
        msg = messages.client_update("c1", 1, WEIGHTS, {"loss": 1.0}, 5, options=raw)
    elif kind == "global_update":
        msg = messages.global_update(1, WEIGHTS, {"lr": 0.5}, options=raw)
    else:
        msg = messages.evaluation_request(1, WEIGHTS, options=raw)
    return msg.to_bytes()


def assert_same_weights(got, want=WEIGHTS):
    assert list(got) == list(want)
    for name, t in want.items():
        assert got[name].dtype == t.dtype
        assert torch.equal(got[name], t)


@pytest.mark.parametrize("kind", ["client_update", "global_update", "evaluation_request"])
@pytest.mark.parametrize("container", [bytes, bytearray])
def test_weights_are_a_view_inside_the_input_buffer(kind, container):
    buf = container(uncompressed(kind))
    got = messages.decode_message(buf)
    view = got.weights
    assert isinstance(view, memoryview)
    assert inside(address(view), len(view), buf)
    # ... and they are the TensorMap bytes, unchanged.
    assert bytes(view) == encode_tensor_map(WEIGHTS, compression="none")
    # The uncompressed tensors are views on the same memory when the buffer was
    # handed over (writable); from immutable bytes they are the decoder's own copies.
    for name, t in got.tensors().items():
        view_of_buf = inside(t.data_ptr(), t.numel() * t.element_size(), buf)
        assert view_of_buf == (container is bytearray), name


def test_weights_view_sees_changes_to_the_buffer():
    buf = bytearray(uncompressed())
    got = messages.decode_message(buf)
    view = got.weights
    assert view is not None
    offset = address(view) - address(buf)
    before = view[10]
    buf[offset + 10] ^= 0xFF
    assert view[10] == before ^ 0xFF  # no private copy was made


def test_decode_message_does_not_decode_tensors(monkeypatch):
    blob = uncompressed()
    zstd_blob = messages.client_update("c1", 1, WEIGHTS, {"loss": 1.0}).to_bytes()
    lz4_blob = messages.client_update(
        "c1", 1, WEIGHTS, {"loss": 1.0}, options=EncodeOptions(compression="lz4")
    ).to_bytes()
    for module, name in [
        (tensor_decode, "_decode_all"),
        (tensor_decode, "decode_tensor_map"),
        (tensor_decode, "read_tensor_map"),
        (tensor_decode, "_walk_tensor"),
        (tensor_decode, "_validate"),
        (tensor_decode, "crc32c"),
        (message_module, "decode_tensor_map"),
        (message_module, "read_tensor_map"),
        (codecs.ZSTD, "decompress_into"),
        (codecs.LZ4, "decompress_into"),
    ]:
        monkeypatch.setattr(module, name, boom)
    for data in (blob, zstd_blob, lz4_blob):
        got = messages.decode_message(data)
        assert got.type == "client_update"
        assert got.body.client_id == "c1"
        assert got.body.metrics["loss"].double_value == 1.0
        assert got.has_weights
        assert got.weights is not None and len(got.weights) > 0
        assert got.to_bytes() == data  # re-encoding does not decode either
        with pytest.raises(Boom):
            got.tensors()
        with pytest.raises(Boom):
            got.weights_info()
    monkeypatch.undo()
    assert_same_weights(messages.decode_message(blob).tensors())
    assert_same_weights(messages.decode_message(zstd_blob).tensors())
    assert_same_weights(messages.decode_message(lz4_blob).tensors())


def test_tensors_decodes_once_per_call(monkeypatch):
    calls = []
    real = tensor_decode._decode_all

    def counting(records, *args, **kwargs):
        calls.append([r.name for r in records])
        return real(records, *args, **kwargs)

    monkeypatch.setattr(tensor_decode, "_decode_all", counting)
    got = messages.decode_message(uncompressed())
    assert calls == []
    info = got.weights_info()
    assert [r.name for r in info.records] == list(WEIGHTS)
    assert calls == []  # structure only
    assert_same_weights(got.tensors())
    assert calls == [list(WEIGHTS)]


def test_weights_info_describes_without_decoding():
    got = messages.decode_message(uncompressed())
    info = got.weights_info()
    assert {r.name: (r.dtype.name, r.shape) for r in info.records} == {
        "layer.weight": ("float32", (8, 8)),
        "layer.bias": ("int64", (8,)),
        "norm": ("bfloat16", (16,)),
    }
    assert info.raw_bytes == 64 * 4 + 8 * 8 + 16 * 2
    for rec in info.records:
        assert inside(address(rec.data), len(rec.data), got.weights)


def test_compressed_weights_decode_to_fresh_tensors():
    blob = messages.client_update("c1", 1, WEIGHTS, options=EncodeOptions(shuffle=True)).to_bytes()
    got = messages.decode_message(blob)
    assert isinstance(got.weights, memoryview)
    assert inside(address(got.weights), len(got.weights), blob)
    assert_same_weights(got.tensors())


def test_numpy_decode_options_pass_through():
    got = messages.decode_message(uncompressed())
    arrays = got.tensors(as_numpy=True)
    assert isinstance(arrays["layer.bias"], np.ndarray)
    np.testing.assert_array_equal(arrays["layer.bias"], WEIGHTS["layer.bias"].numpy())


def test_built_message_weights_round_trip_without_decode():
    msg = messages.client_update("c1", 1, WEIGHTS, options=EncodeOptions(compression="none"))
    assert msg.weights is not None
    assert bytes(msg.weights) == encode_tensor_map(WEIGHTS, compression="none")
    assert_same_weights(msg.tensors())
    # TensorMap bytes are carried as given.
    tm = encode_tensor_map(WEIGHTS)
    msg2 = messages.client_update("c1", 1, tm)
    assert msg2.weights is not None
    assert bytes(msg2.weights) == tm
    assert tm in msg2.to_bytes()
