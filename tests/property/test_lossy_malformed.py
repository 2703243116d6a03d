"""Malformed lossy tensors (docs/wire-format.md section 9.1): every one is refused
with a SerializationException that names the tensor and the problem, before
anything sized by the hostile header is allocated."""

from __future__ import annotations

import tracemalloc

import crc32c
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flwire._protowire import encode_varint
from flwire.exceptions import (
    ChecksumMismatchError,
    PayloadTooLargeError,
    SerializationException,
)
from flwire.tensors import (
    DecodeLimits,
    LossyConfig,
    decode_tensor_map,
    encode_tensor_map,
    read_tensor_map,
    torch_support,
)
from flwire.v1 import tensor_pb2 as pb

F32 = pb.DTYPE_FLOAT32


def _tensor(
    payload: bytes,
    *,
    method: int,
    shape=(16,),
    dtype=F32,
    block_size=0,
    k=0,
    raw_size=None,
    filt=0,
    crc=None,
    name="w",
) -> bytes:
    t = pb.Tensor(
        name=name,
        dtype=dtype,
        shape=list(shape),
        filter=filt,
        raw_size=len(payload) if raw_size is None else raw_size,
        crc32c=crc32c.crc32c(payload) if crc is None else crc,
        data=payload,
    )
    t.lossy.method = pb.Lossy.ValueType(method)
    t.lossy.block_size = block_size
    t.lossy.k = k
    return pb.TensorMap(tensors=[t]).SerializeToString()


def _topk_payload(values, index, width="<u4") -> bytes:
    return np.asarray(values, "<f4").tobytes() + np.asarray(index, width).tobytes()


def expect_error(data, *words, cls=SerializationException, **kw):
    with pytest.raises(cls) as info:
        decode_tensor_map(data, **kw)
    text = str(info.value)
    assert "'w'" in text, text  # names the tensor
    for word in words:
        assert word in text, (word, text)
    return info.value


def test_a_valid_hand_built_top_k_tensor_decodes():
    data = _tensor(_topk_payload([1.0, -2.0], [3, 9]), method=pb.LOSSY_TOP_K, k=2)
    out = decode_tensor_map(data)["w"]
    expected = torch.zeros(16)
    expected[3], expected[9] = 1.0, -2.0
    assert torch.equal(out, expected)


@pytest.mark.parametrize(
    ("index", "words"),
    [
        ([9, 3], ("not strictly ascending", "follows 9")),
        ([3, 3], ("not strictly ascending",)),
        ([3, 16], ("out of range", "16")),
        ([3, 2**32 - 1], ("out of range",)),
    ],
)
def test_bad_top_k_indices(index, words):
    data = _tensor(_topk_payload([1.0, 2.0], index), method=pb.LOSSY_TOP_K, k=2)
    expect_error(data, *words)


@pytest.mark.parametrize(
    ("k", "payload_k", "words"),
    [
        (65, 65, ("k=65", "64 elements")),
        (9, 9, ("k=9", "64 elements", "at most one in 8", "[lossy_params]")),
        (3, 2, ("raw_size",)),  # k says 3, payload holds 2
        (1, 2, ("raw_size",)),
        (2**60, 2, ("k=1152921504606846976",)),
        (2**64 - 1, 2, ("k=",)),
    ],
)
def test_wrong_k(k, payload_k, words):
    payload = _topk_payload(np.arange(payload_k), np.arange(payload_k))
    expect_error(_tensor(payload, method=pb.LOSSY_TOP_K, shape=(64,), k=k), *words)


def test_huge_declared_k_and_shape_allocate_nothing():
    # 2^40 elements declared, k = 2^39: refused on the limits before any allocation.
    payload = _topk_payload([1.0], [0])
    data = _tensor(payload, method=pb.LOSSY_TOP_K, shape=(2**40,), k=2**39, raw_size=2**39 * 8)
    tracemalloc.start()
    try:
        expect_error(data, "decodes to", cls=PayloadTooLargeError)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    # Within the tensor limit but not the map's total.
    data = _tensor(payload, method=pb.LOSSY_TOP_K, shape=(1 << 20,), k=1, raw_size=8)
    with pytest.raises(PayloadTooLargeError):
        decode_tensor_map(data, limits=DecodeLimits(max_total_bytes=1 << 20))


def test_int8_block_size_zero_and_sizes():
    payload = np.ones(2, "<f4").tobytes() + bytes(16)
    decode_tensor_map(_tensor(payload, method=pb.LOSSY_BLOCK_INT8, block_size=8))  # valid
    expect_error(_tensor(payload, method=pb.LOSSY_BLOCK_INT8, block_size=0), "block_size 0")
    expect_error(
        _tensor(payload, method=pb.LOSSY_BLOCK_INT8, block_size=4), "must be >= 8", "lossy_params"
    )
    expect_error(
        _tensor(payload, method=pb.LOSSY_BLOCK_INT8, block_size=16), "takes 20 bytes", "raw_size"
    )
    expect_error(_tensor(payload[:-1], method=pb.LOSSY_BLOCK_INT8, block_size=8), "raw_size")


def test_block_size_beyond_32_bits_is_truncated_as_protobuf_does():
    # uint32 fields keep the low 32 bits of a longer varint: 2^32 + 8 reads as 8.
    t = pb.Tensor(name="w", dtype=F32, shape=[16])
    payload = np.ones(2, "<f4").tobytes() + bytes(16)
    t.raw_size, t.crc32c, t.data = len(payload), crc32c.crc32c(payload), payload
    lossy = bytes([0x08, 3, 0x10]) + encode_varint(2**32 + 8)
    body = t.SerializeToString() + bytes([0x52, len(lossy)]) + lossy
    data = b"\x0a" + bytes([len(body)]) + body
    assert pb.TensorMap.FromString(data).tensors[0].lossy.block_size == 8
    assert torch.equal(decode_tensor_map(data)["w"], torch.zeros(16))


@pytest.mark.parametrize("method", [pb.LOSSY_BLOCK_INT8, pb.LOSSY_TOP_K])
def test_filter_is_refused_on_int8_and_top_k(method):
    data = encode_tensor_map(
        {"w": torch.randn(4096)}, lossy=LossyConfig("int8" if method == 3 else "topk")
    )
    msg = pb.TensorMap.FromString(data)
    msg.tensors[0].filter = pb.FILTER_BYTE_SHUFFLE
    expect_error(msg.SerializeToString(), "must not be filtered")


def test_raw_size_of_the_logical_tensor_is_refused():
    # A writer that put raw_size = shape x dtype with a cast payload.
    payload = np.ones(16, "<f2").tobytes()
    expect_error(
        _tensor(payload, method=pb.LOSSY_CAST_FLOAT16, raw_size=64), "takes 32 bytes", "says 64"
    )


@pytest.mark.parametrize(
    ("dtype", "method", "words"),
    [
        (pb.DTYPE_INT32, pb.LOSSY_BLOCK_INT8, ("floating tensors only", "int32")),
        (pb.DTYPE_COMPLEX64, pb.LOSSY_TOP_K, ("floating tensors only",)),
        (pb.DTYPE_FLOAT8_E4M3FN, pb.LOSSY_BLOCK_INT8, ("floating tensors only",)),
        (pb.DTYPE_FLOAT16, pb.LOSSY_CAST_FLOAT16, ("not allowed",)),
        (pb.DTYPE_BFLOAT16, pb.LOSSY_CAST_FLOAT16, ("not allowed",)),
        (F32, 9, ("unknown lossy method 9",)),
    ],
)
def test_methods_on_the_wrong_dtype_or_unknown(dtype, method, words):
    expect_error(_tensor(bytes(32), method=method, dtype=dtype, block_size=4, k=1), *words)


def test_lossy_unspecified_means_lossless():
    raw = np.arange(16, dtype="<f4").tobytes()
    data = _tensor(raw, method=pb.LOSSY_UNSPECIFIED, block_size=7, k=3)
    assert torch.equal(decode_tensor_map(data)["w"], torch.arange(16, dtype=torch.float32))


def test_checksum_covers_the_payload():
    payload = np.ones(16, "<f2").tobytes()
    data = _tensor(payload, method=pb.LOSSY_CAST_FLOAT16, crc=crc32c.crc32c(payload) ^ 1)
    expect_error(data, "CRC-32C", cls=ChecksumMismatchError)
    decode_tensor_map(data, verify_checksum=False)


def test_wrong_wire_type_in_the_lossy_message():
    t = pb.Tensor(name="w", dtype=F32, shape=[1], raw_size=4, data=bytes(4))
    body = t.SerializeToString() + bytes([0x52, 2, 0x0A, 0])  # method as LEN
    data = b"\x0a" + bytes([len(body)]) + body
    with pytest.raises(SerializationException, match="'w'"):
        decode_tensor_map(data)


def _valid_lossy_maps():
    t = torch.randn(8, 40)
    return [
        encode_tensor_map(
            {"w": t}, lossy=LossyConfig(m, min_elements=0, block_size=16), compression=c
        )
        for m in ("float16", "bfloat16", "int8", "topk")
        for c in ("none", "zstd", "lz4")
    ]


VALID = _valid_lossy_maps()


@given(
    which=st.integers(0, len(VALID) - 1),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 10_000)),
)
def test_mutated_lossy_maps_raise_only_serialization_exceptions(which, edits, cut):
    data = bytearray(VALID[which])
    for pos, value in edits:
        data[pos % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    try:
        out = decode_tensor_map(bytes(data))
    except SerializationException as exc:
        assert str(exc)
        return
    # Whatever still decodes is what its (possibly mutated) header declares.
    for rec in read_tensor_map(bytes(data)).records:
        assert tuple(out[rec.name].shape) == rec.shape
        assert out[rec.name].dtype == torch_support.torch_dtype(rec.dtype)
