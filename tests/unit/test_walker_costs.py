"""Issue 13, "CPU: walking the structure is cheap, limits first": counts and
lengths are checked before Python objects are built for them."""

from __future__ import annotations

import time
import tracemalloc

import crc32c
import pytest
from helpers import ALL_INFOS, FIRST_UNKNOWN, T_CRC, T_DATA, T_DTYPE, T_RAW_SIZE, T_SHAPE

from flwire._protowire import I32, LEN, VARINT, encode_varint, field_key
from flwire.exceptions import SerializationException
from flwire.tensors import DecodeLimits, decode_tensor_map, read_tensor_map
from flwire.v1 import tensor_pb2

INFO = {i.name: i for i in ALL_INFOS}


def _len(number: int, payload: bytes) -> bytes:
    return field_key(number, LEN) + encode_varint(len(payload)) + payload


def _varint(number: int, value: int) -> bytes:
    return field_key(number, VARINT) + encode_varint(value)


def _one_byte_tensor(extra: bytes = b"", dtype: int | None = None) -> bytes:
    body = _varint(T_DTYPE, INFO["uint8"].wire if dtype is None else dtype)
    body += _varint(T_RAW_SIZE, 1) + field_key(T_CRC, I32)
    body += crc32c.crc32c(b"\x07").to_bytes(4, "little") + _len(T_DATA, b"\x07") + extra
    return _len(1, body)


def _refused(data: bytes, match: str) -> float:
    """Seconds the refusal took; its peak allocation is held under 1 MiB."""
    started = time.perf_counter()
    with pytest.raises(SerializationException, match=match):
        read_tensor_map(data)
    seconds = time.perf_counter() - started
    tracemalloc.start()
    try:
        with pytest.raises(SerializationException, match=match):
            read_tensor_map(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak
    return seconds


def test_a_packed_shape_is_counted_before_it_is_built():
    """Before: 64 MiB of packed shape was built into a list (47 s, 1.1 GB) before the
    rank-64 check refused it."""
    shape = _len(T_SHAPE, b"\x01" * (64 << 20))
    data = _len(1, _varint(T_DTYPE, INFO["uint8"].wire) + shape)
    seconds = _refused(data, "rank above the limit 64")
    print(f"\n64 MiB packed shape refused in {seconds * 1e3:.2f} ms")
    assert seconds < 1  # a bound on not walking 64 MiB (that took 47 s), not a speed test


def test_unknown_fields_are_counted():
    """Before: 1 MiB of tiny unknown fields took 1.07 s to walk (64 MiB: 35 s)."""
    tiny = field_key(FIRST_UNKNOWN, VARINT) + b"\x00"
    for where in ("tensor", "map"):
        junk = tiny * ((1 << 20) // len(tiny))
        data = _one_byte_tensor(junk) if where == "tensor" else _one_byte_tensor() + junk
        seconds = _refused(data, "unknown fields")
        print(f"\n1 MiB of unknown fields in the {where} refused in {seconds * 1e3:.1f} ms")
        assert seconds < 1  # 64 KiB of them are walked, not 1 MiB (1.07 s before)
    # A newer minor version's few extra fields still read.
    few = tiny * 100
    assert decode_tensor_map(_one_byte_tensor(few), as_numpy=True)[""].item() == 7
    with pytest.raises(SerializationException, match="unknown fields"):
        read_tensor_map(_one_byte_tensor(few), limits=DecodeLimits(max_unknown_bytes=100))


def test_enum_varints_are_read_as_32_bits_like_protobuf():
    """A dtype varint of 2**32 + uint8 was unknown to flwire and uint8 to protobuf
    runtimes, which keep the low 32 bits: now both read uint8."""
    wide = (1 << 32) | INFO["uint8"].wire
    data = _one_byte_tensor(dtype=wide)
    parsed = tensor_pb2.TensorMap.FromString(data)
    assert parsed.tensors[0].dtype == INFO["uint8"].wire
    assert decode_tensor_map(data, as_numpy=True)[""].item() == 7


def test_the_number_of_tensors_is_capped():
    data = _one_byte_tensor() * 3
    with pytest.raises(SerializationException, match="more than 2 tensors"):
        read_tensor_map(data, limits=DecodeLimits(max_tensors=2))
    assert DecodeLimits().max_tensors == 100_000


@pytest.mark.parametrize(
    ("method", "k", "shape", "block_size"),
    [
        (tensor_pb2.LOSSY_TOP_K, 0, [8], 0),
        (tensor_pb2.LOSSY_TOP_K, 0, [0], 0),
        (tensor_pb2.LOSSY_BLOCK_INT8, 0, [0], 64),
        (tensor_pb2.LOSSY_CAST_FLOAT16, 0, [0], 0),
        (tensor_pb2.LOSSY_CAST_BFLOAT16, 0, [0, 3], 0),
    ],
)
@pytest.mark.parametrize("as_numpy", [False, True])
def test_empty_lossy_payloads_decode_as_the_spec_says(method, k, shape, block_size, as_numpy):
    """Section 9.1: a 0-element lossy tensor decodes to an empty tensor of its
    shape, top-k with k = 0 to zeros (before, the issue saw a raw torch
    RuntimeError for these)."""
    t = tensor_pb2.Tensor(name="w", dtype=tensor_pb2.DTYPE_FLOAT32, shape=shape, raw_size=0)
    t.lossy.method = method
    t.lossy.k = k
    t.lossy.block_size = block_size
    got = decode_tensor_map(
        tensor_pb2.TensorMap(tensors=[t]).SerializeToString(), as_numpy=as_numpy
    )
    assert tuple(got["w"].shape) == tuple(shape)
    assert not got["w"].any()


def _empty_tensors(count: int) -> bytes:
    dtype = _varint(T_DTYPE, INFO["float32"].wire)
    return b"".join(
        _len(1, _len(1, b"%x" % i) + dtype + _len(T_SHAPE, b"\x00")) for i in range(count)
    )


def test_a_megabyte_of_empty_tensors_is_refused_before_it_is_walked():
    """Before: 1 MB of empty tensors (about 90,000; nothing to allocate) took 2.4 s
    to decode, at about 16-30 microseconds of Python per tensor. Now a map holds at
    most DecodeLimits.max_tensors_per_mib (1,024) tensors and metadata entries per
    MiB it takes, counted over its top-level fields before any is walked."""
    data = _empty_tensors(75_000)
    assert 900_000 < len(data) < 1 << 20
    started = time.perf_counter()
    with pytest.raises(SerializationException, match=r"more than 1024 tensors .*\[max_tensors\]"):
        decode_tensor_map(data)
    seconds = time.perf_counter() - started
    print(f"\n{len(data)} bytes of empty tensors refused in {seconds * 1e3:.1f} ms")
    assert seconds < 0.5  # 1,025 top-level fields counted, not 75,000 tensors decoded
    entries = b"".join(_len(2, _len(1, b"%x" % i) + _len(2, b"")) for i in range(100_000))
    with pytest.raises(SerializationException, match="metadata entries"):
        read_tensor_map(entries)


def test_the_tensor_cap_grows_with_the_map():
    """A map may hold 1,024 tensors whatever its size, and 1,024 more per MiB."""
    assert len(read_tensor_map(_empty_tensors(1024)).records) == 1024
    with pytest.raises(SerializationException, match="more than 1024 tensors"):
        read_tensor_map(_empty_tensors(1025))
    unlimited = DecodeLimits(max_tensors_per_mib=None)
    assert len(read_tensor_map(_empty_tensors(1025), limits=unlimited).records) == 1025
    data = bytes(2048)
    tensor = _varint(T_DTYPE, INFO["uint8"].wire) + _len(T_SHAPE, encode_varint(len(data)))
    tensor += _varint(T_RAW_SIZE, len(data))
    tensor += field_key(T_CRC, I32) + crc32c.crc32c(data).to_bytes(4, "little")
    big = b"".join(_len(1, _len(1, b"t%d" % i) + tensor + _len(T_DATA, data)) for i in range(2500))
    assert len(big) > 4 << 20 and len(read_tensor_map(big).records) == 2500
    assert DecodeLimits().tensor_cap(len(big)) == len(big) * 1024 >> 20
