"""The hand-written codec and the generated protobuf classes agree on the bytes.

Codec output is exactly what ``SerializeToString(deterministic=True)`` writes
for the same message, and the codec decodes whatever a stock protobuf writer
(or a hand-built but valid encoding) produces to the same tensors.
"""

from __future__ import annotations

import crc32c
import numpy as np
import pytest
import torch
from helpers import (
    ALL_INFOS,
    FIRST_UNKNOWN,
    INFO_BY_TORCH,
    M_METADATA,
    M_TENSORS,
    T_CODEC,
    T_CRC,
    T_DATA,
    T_DTYPE,
    T_FILTER,
    T_NAME,
    T_PADDING,
    T_RAW_SIZE,
    T_SHAPE,
    TENSOR_FIELDS,
    decompress_all_frames,
    decompress_all_lz4_frames,
    numel,
    oracle_decode,
    pb_tensor,
    summarize,
    tensor_bytes,
)
from hypothesis import given
from hypothesis import strategies as st
from strategies import (
    encode_settings,
    metadata_dicts,
    names,
    raw_tensor_bytes,
    shapes,
    torch_tensors,
)

from flwire._protowire import I32, I64, LEN, VARINT, encode_varint, field_key
from flwire.exceptions import SerializationException
from flwire.tensors import (
    LossyConfig,
    decode_tensor_map,
    encode_tensor_map,
    read_tensor_map,
    torch_support,
)
from flwire.tensors import schema as s
from flwire.v1 import tensor_pb2 as pb


def test_field_numbers_are_the_documented_ones():
    """docs/wire-format.md section 2: renumbering a field breaks every reader."""
    assert TENSOR_FIELDS == {
        "name": 1,
        "dtype": 2,
        "shape": 3,
        "codec": 4,
        "filter": 5,
        "raw_size": 6,
        "crc32c": 7,
        "padding": 8,
        "data": 9,
        "lossy": 10,
    }
    assert {f.name: f.number for f in pb.LossyEncoding.DESCRIPTOR.fields} == {
        "method": 1,
        "block_size": 2,
        "k": 3,
    }
    assert (M_TENSORS, M_METADATA) == (1, 2)
    assert s.T_DATA == T_DATA and s.T_PADDING == T_PADDING and s.T_CRC32C == T_CRC


tensor_dicts = st.dictionaries(names, torch_tensors(), max_size=4)
settings = encode_settings()


@given(tensors=tensor_dicts, metadata=metadata_dicts, cfg=settings)
def test_codec_bytes_equal_generated_bytes(tensors, metadata, cfg):
    data = encode_tensor_map(tensors, metadata=metadata, **cfg)
    msg = pb.TensorMap.FromString(data)
    assert msg.SerializeToString(deterministic=True) == data
    assert dict(msg.metadata) == metadata
    assert [t.name for t in msg.tensors] == list(tensors)
    # The generated parser sees the same tensors the codec wrote.
    expected = {k: (v.dtype, tuple(v.shape), tensor_bytes(v)) for k, v in tensors.items()}
    assert oracle_decode(msg) == expected


@given(tensors=tensor_dicts, metadata=metadata_dicts)
def test_uncompressed_codec_output_equals_a_message_built_with_generated_classes(tensors, metadata):
    data = encode_tensor_map(tensors, compression="none", metadata=metadata)
    written = pb.TensorMap.FromString(data)
    msg = pb.TensorMap()
    for (name, t), w in zip(tensors.items(), written.tensors, strict=True):
        raw = tensor_bytes(t)
        info = INFO_BY_TORCH[t.dtype]
        ref = pb_tensor(name, info, tuple(t.shape), raw)
        # The writer's alignment padding is checked by the next test.
        ref.padding = w.padding
        msg.tensors.append(ref)
    msg.metadata.update(metadata)
    assert data == msg.SerializeToString(deterministic=True)


def _data_offset_in_prefix(msg: pb.TensorMap, i: int, padding: bytes) -> int:
    """Offset of tensor i's data when the map holds tensors[: i + 1] and tensor i
    gets ``padding`` (data is the last field of the last tensor)."""
    prefix = pb.TensorMap()
    prefix.tensors.extend(msg.tensors[: i + 1])
    prefix.tensors[i].padding = padding
    return len(prefix.SerializeToString(deterministic=True)) - len(msg.tensors[i].data)


@given(tensors=tensor_dicts, metadata=metadata_dicts, cfg=settings)
def test_uncompressed_data_is_64_aligned_with_the_shortest_zero_padding(tensors, metadata, cfg):
    """docs/wire-format.md section 2.3 rule 7 and section 13."""
    data = encode_tensor_map(tensors, metadata=metadata, **cfg)
    msg = pb.TensorMap.FromString(data)
    base = np.frombuffer(data, np.uint8).ctypes.data
    for i, (rec, t) in enumerate(zip(read_tensor_map(data).records, msg.tensors, strict=True)):
        if rec.codec != pb.CODEC_UNSPECIFIED or rec.raw_size == 0:
            assert t.padding == b"", "compressed and empty tensors get no padding"
            continue
        offset = np.frombuffer(rec.data, np.uint8).ctypes.data - base
        assert offset % 64 == 0
        assert set(t.padding) <= {0}
        assert _data_offset_in_prefix(msg, i, t.padding) == offset
        for shorter in range(len(t.padding)):
            assert _data_offset_in_prefix(msg, i, bytes(shorter)) % 64 != 0, shorter


@st.composite
def generated_maps(draw):
    msg = pb.TensorMap()
    for name in draw(st.lists(names, unique=True, max_size=4)):
        info = draw(st.sampled_from(ALL_INFOS))
        shape = draw(shapes())
        raw = draw(raw_tensor_bytes(torch_support.torch_dtype(info), numel(shape)))
        codec = draw(st.sampled_from([None, 1, 5, -3]))
        msg.tensors.append(
            pb_tensor(
                name,
                info,
                shape,
                raw,
                zstd_level=codec,
                shuffle=draw(st.booleans()),
                zstd_checksum=draw(st.booleans()),
            )
        )
    msg.metadata.update(draw(metadata_dicts))
    return msg


@given(msg=generated_maps(), deterministic=st.booleans(), verify=st.booleans())
def test_codec_decodes_generated_bytes(msg, deterministic, verify):
    data = msg.SerializeToString(deterministic=deterministic)
    expected = oracle_decode(msg)
    out = decode_tensor_map(data, verify_checksum=verify)
    assert summarize(out) == expected
    assert list(out) == [t.name for t in msg.tensors]
    view = read_tensor_map(data)
    assert view.metadata == dict(msg.metadata)
    for rec, t in zip(view.records, msg.tensors, strict=True):
        assert (rec.codec, rec.filter, rec.raw_size, rec.crc32c) == (
            t.codec,
            t.filter,
            t.raw_size,
            t.crc32c,
        )
        assert bytes(rec.data) == t.data


@given(msg=generated_maps())
def test_codec_numpy_output_of_generated_bytes(msg):
    numpy_ok = [t for t in msg.tensors if _numpy_dtype(t.dtype) is not None]
    del msg.tensors[:]
    msg.tensors.extend(numpy_ok)
    out = decode_tensor_map(msg.SerializeToString(), as_numpy=True)
    for name, (_, shape, raw) in oracle_decode(msg).items():
        assert out[name].shape == shape
        assert np.ascontiguousarray(out[name]).tobytes() == raw


def _numpy_dtype(wire):
    return next(i.numpy_dtype for i in ALL_INFOS if i.wire == wire)


# --------------------------------------------------------------- hand-built valid encodings


def _len(number: int, payload: bytes) -> bytes:
    return field_key(number, LEN) + encode_varint(len(payload)) + payload


def _varint(number: int, value: int) -> bytes:
    return field_key(number, VARINT) + encode_varint(value)


def _overlong_varint(value: int, extra: int) -> bytes:
    """A valid but non-minimal varint: ``extra`` redundant continuation bytes."""
    out = bytearray(encode_varint(value))
    out[-1] |= 0x80
    out += b"\x80" * (extra - 1) + b"\x00"
    assert len(out) <= 10
    return bytes(out)


def _unknown_fields(draw) -> bytes:
    """Unknown fields of every wire type (numbers 9..2**29-1 are unused)."""
    number = draw(st.integers(min_value=FIRST_UNKNOWN, max_value=(1 << 29) - 1))
    kind = draw(st.sampled_from(["varint", "i64", "len", "i32", "group"]))
    if kind == "varint":
        return _varint(number, draw(st.integers(0, (1 << 64) - 1)))
    if kind == "i64":
        return field_key(number, I64) + draw(st.binary(min_size=8, max_size=8))
    if kind == "i32":
        return field_key(number, I32) + draw(st.binary(min_size=4, max_size=4))
    if kind == "len":
        return _len(number, draw(st.binary(max_size=10)))
    inner = _varint(1, 7) + _len(2, b"xy") + field_key(3, 3) + field_key(3, 4)
    return field_key(number, 3) + inner + field_key(number, 4)


@st.composite
def hand_built_tensor(draw, name: str):
    """The fields of one Tensor in a shuffled, non-canonical but valid encoding."""
    info = draw(st.sampled_from(ALL_INFOS))
    shape = draw(shapes())
    raw = draw(raw_tensor_bytes(torch_support.torch_dtype(info), numel(shape)))
    reference = pb_tensor(
        name,
        info,
        shape,
        raw,
        zstd_level=draw(st.sampled_from([None, 3])),
        shuffle=draw(st.booleans()),
    )
    # Each kind of field holds its occurrences in order; for scalar fields the
    # last occurrence wins, so decoys go first.
    queues: dict[str, list[bytes]] = {}
    queues["name"] = [_len(T_NAME, name.encode())]
    if draw(st.booleans()):
        queues["name"].insert(0, _len(T_NAME, draw(names).encode()))
    if draw(st.booleans()):
        queues["dtype"] = [field_key(T_DTYPE, VARINT) + _overlong_varint(info.wire, 3)]
    else:
        queues["dtype"] = [_varint(T_DTYPE, info.wire)]
    if draw(st.booleans()):
        queues["dtype"].insert(0, _varint(T_DTYPE, draw(st.sampled_from(ALL_INFOS)).wire))
    # Shape: packed, unpacked, or packed chunks mixed with unpacked values.
    style = draw(st.sampled_from(["packed", "unpacked", "mixed"]))
    if style == "packed":
        queues["shape"] = (
            [_len(T_SHAPE, b"".join(encode_varint(d) for d in shape))] if shape else []
        )
    elif style == "unpacked":
        queues["shape"] = [_varint(T_SHAPE, d) for d in shape]
    else:
        queues["shape"] = [
            _varint(T_SHAPE, d) if i % 2 else _len(T_SHAPE, encode_varint(d))
            for i, d in enumerate(shape)
        ]
    if reference.codec:
        queues["codec"] = [_varint(T_CODEC, reference.codec)]
    if reference.filter:
        queues["filter"] = [_varint(T_FILTER, reference.filter)]
    queues["raw_size"] = [_varint(T_RAW_SIZE, reference.raw_size)]
    if draw(st.booleans()):
        queues["raw_size"].insert(0, _varint(T_RAW_SIZE, 12345))
    queues["crc"] = [field_key(T_CRC, I32) + reference.crc32c.to_bytes(4, "little")]
    if draw(st.booleans()):
        queues["crc"].insert(0, field_key(T_CRC, I32) + b"\xde\xad\xbe\xef")
    # Padding: absent, or any length and content, possibly repeated; ignored.
    queues["padding"] = [
        _len(T_PADDING, p) for p in draw(st.lists(st.binary(max_size=70), max_size=2))
    ]
    queues["data"] = [_len(T_DATA, reference.data)]
    if draw(st.booleans()):
        queues["data"].insert(0, _len(T_DATA, b"decoy"))
    for i in range(draw(st.integers(0, 3))):
        queues[f"unknown{i}"] = [_unknown_fields(draw)]
    # Any interleaving that keeps each kind's occurrences in order.
    body = []
    while any(queues.values()):
        kind = draw(st.sampled_from(sorted(k for k, q in queues.items() if q)))
        body.append(queues[kind].pop(0))
    return b"".join(body)


@st.composite
def hand_built_maps(draw):
    parts = []
    for name in draw(st.lists(names, unique=True, max_size=3)):
        parts.append(_len(M_TENSORS, draw(hand_built_tensor(name))))
    for key, value in draw(metadata_dicts).items():
        entry = [_len(1, key.encode()), _len(2, value.encode())]
        if draw(st.booleans()):
            entry.reverse()  # value before key
        if not key and draw(st.booleans()):
            entry = [e for e in entry if e != _len(1, b"")]  # empty key omitted
        elif draw(st.booleans()):
            entry.insert(0, _len(1, b"decoy-key"))  # a repeated key: last wins
        parts.append(_len(M_METADATA, b"".join(entry)))
    if draw(st.booleans()):
        parts.insert(draw(st.integers(0, len(parts))), _unknown_fields(draw))
    # Metadata and tensors interleaved: tensor order must stay, metadata order
    # matters only for duplicate keys, which dictionaries() never produces.
    tensors = [p for p in parts if p[:1] == field_key(M_TENSORS, LEN)]
    others = [p for p in parts if p[:1] != field_key(M_TENSORS, LEN)]
    merged = list(tensors)
    for p in others:
        merged.insert(draw(st.integers(0, len(merged))), p)
    return b"".join(merged)


@given(data=hand_built_maps())
def test_codec_agrees_with_generated_parser_on_non_canonical_encodings(data):
    msg = pb.TensorMap.FromString(data)  # the stock parser accepts it
    out = decode_tensor_map(data)
    assert summarize(out) == oracle_decode(msg)
    assert list(out) == [t.name for t in msg.tensors]
    assert read_tensor_map(data).metadata == dict(msg.metadata)


def test_last_occurrence_wins_for_repeated_scalars():
    raw = np.arange(3, dtype="<i4").tobytes()
    body = (
        _len(T_DATA, b"zz")
        + _varint(T_DTYPE, pb.DTYPE_FLOAT64)
        + _len(T_NAME, b"first")
        + _varint(T_SHAPE, 3)
        + _varint(T_RAW_SIZE, 999)
        + field_key(T_CRC, I32)
        + b"\x00\x00\x00\x00"
        + _len(T_NAME, b"second")
        + _varint(T_DTYPE, pb.DTYPE_INT32)
        + _varint(T_RAW_SIZE, 12)
        + field_key(T_CRC, I32)
        + crc32c.crc32c(raw).to_bytes(4, "little")
        + _len(T_DATA, raw)
    )
    data = _len(M_TENSORS, body)
    msg = pb.TensorMap.FromString(data)
    assert msg.tensors[0].name == "second"
    out = decode_tensor_map(data)
    assert list(out) == ["second"]
    assert out["second"].dtype == torch.int32
    assert out["second"].tolist() == [0, 1, 2]


def test_unpacked_and_split_packed_shape_concatenate():
    raw = bytes(range(24))
    shape_fields = _varint(T_SHAPE, 2) + _len(T_SHAPE, encode_varint(3)) + _varint(T_SHAPE, 4)
    body = (
        shape_fields
        + _varint(T_DTYPE, pb.DTYPE_UINT8)
        + _varint(T_RAW_SIZE, 24)
        + field_key(T_CRC, I32)
        + crc32c.crc32c(raw).to_bytes(4, "little")
        + _len(T_DATA, raw)
    )
    data = _len(M_TENSORS, body)
    assert list(pb.TensorMap.FromString(data).tensors[0].shape) == [2, 3, 4]
    out = decode_tensor_map(data)
    assert list(out) == [""]
    assert out[""].shape == (2, 3, 4)
    assert out[""].flatten().tolist() == list(range(24))


@pytest.mark.parametrize("level", [1, 19])
def test_zstd_frames_with_checksums_from_other_writers_decode(level):
    raw = np.linspace(-1, 1, 500, dtype="<f8").tobytes()
    info = INFO_BY_TORCH[torch.float64]
    t = pb_tensor("x", info, (500,), raw, zstd_level=level, shuffle=True, zstd_checksum=True)
    out = decode_tensor_map(pb.TensorMap(tensors=[t]).SerializeToString())
    assert tensor_bytes(out["x"]) == raw


def test_unknown_fields_inside_a_metadata_entry_do_not_break_decoding():
    """upb moves such an entry to the unknown fields, C++ and Java keep it;
    either way the tensors must decode (readers never need metadata)."""
    info = INFO_BY_TORCH[torch.int16]
    raw = np.arange(4, dtype="<i2").tobytes()
    tensor = pb_tensor("t", info, (4,), raw).SerializeToString()
    entry = _len(1, b"k") + _len(2, b"v") + _varint(3, 1) + field_key(4, I32) + b"abcd"
    data = _len(M_METADATA, entry) + _len(M_TENSORS, tensor)
    out = decode_tensor_map(data)
    assert list(out) == ["t"]
    assert out["t"].tolist() == [0, 1, 2, 3]
    assert read_tensor_map(data).metadata in ({}, {"k": "v"})


# ----------------------------------------------------------------------------- lossy tensors

lossy_configs = st.builds(
    LossyConfig,
    method=st.sampled_from(["float16", "bfloat16", "int8", "topk"]),
    block_size=st.sampled_from([8, 13, 64]),
    topk_k=st.one_of(st.none(), st.integers(1, 50)),
    min_elements=st.sampled_from([0, 8]),
)
lossy_dicts = st.dictionaries(
    names,
    torch_tensors(
        dtypes_=[torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32],
        shape_strategy=st.sampled_from([(0,), (3,), (17,), (4, 33), (2, 3, 5)]),
    ).map(lambda t: torch.where(torch.isfinite(t), t, 0) if t.is_floating_point() else t),
    max_size=4,
)


@given(tensors=lossy_dicts, metadata=metadata_dicts, cfg=settings, lossy=lossy_configs)
def test_lossy_codec_bytes_equal_generated_bytes(tensors, metadata, cfg, lossy):
    """Tensor.lossy (field 10) is written after data, as the generated classes
    write it, and the uncompressed payload is still 64-aligned."""
    try:
        data = encode_tensor_map(tensors, metadata=metadata, lossy=lossy, **cfg)
    except SerializationException as exc:  # a value beyond float16 / float32's range
        assert "overflows" in str(exc) or "float32's range" in str(exc)
        return
    msg = pb.TensorMap.FromString(data)
    assert msg.SerializeToString(deterministic=True) == data
    base = np.frombuffer(data, np.uint8).ctypes.data
    records = read_tensor_map(data).records
    for rec, t in zip(records, msg.tensors, strict=True):
        assert t.HasField("lossy") == (rec.lossy is not None)
        if rec.lossy is not None:
            assert (t.lossy.method, t.lossy.block_size, t.lossy.k) == (
                rec.lossy.method,
                rec.lossy.block_size,
                rec.lossy.k,
            )
            assert t.raw_size == len(rec.data) if t.codec == 0 else True
            assert t.crc32c == crc32c.crc32c(oracle_payload(t))
        if rec.codec == pb.CODEC_UNSPECIFIED and rec.raw_size:
            assert (np.frombuffer(rec.data, np.uint8).ctypes.data - base) % 64 == 0
    # A stock writer's encoding of the same message (no padding, fields
    # reordered by a round trip through the generated classes) decodes the same.
    for t in msg.tensors:
        t.ClearField("padding")
    other = msg.SerializeToString()
    ours, theirs = decode_tensor_map(data), decode_tensor_map(other)
    assert list(ours) == list(theirs) == list(tensors)
    for name in ours:
        assert tensor_bytes(ours[name]) == tensor_bytes(theirs[name])
        assert ours[name].dtype == tensors[name].dtype
        assert ours[name].shape == tensors[name].shape


def oracle_payload(t: pb.Tensor) -> bytes:
    """The payload bytes of a tensor, decoded with the zstd and lz4 libraries directly."""
    raw = t.data
    if t.codec == pb.CODEC_ZSTD:
        raw = decompress_all_frames(raw)
    elif t.codec == pb.CODEC_LZ4:
        raw = decompress_all_lz4_frames(raw)
    if t.filter == pb.FILTER_BYTE_SHUFFLE:
        width = 2  # cast payloads: the only ones a filter may apply to
        n = len(raw) // width
        raw = bytes(np.frombuffer(raw, np.uint8).reshape(width, n).T.reshape(-1))
    return raw
