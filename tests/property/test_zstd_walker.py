"""The zstd frame walker refuses, before anything is allocated, frames that use
a dictionary and frames that declare more content than their blocks can hold
(RFC 8878: no block regenerates more than 128 KiB)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flwire import read_tensor_map
from flwire.exceptions import SerializationException
from flwire.tensors import codecs
from flwire.tensors.codecs.zstd import BLOCK_MAX_BYTES, ZSTD_MAGIC
from flwire.v1 import tensor_pb2

RAW, RLE = 0, 1


def _frame(content_size: int, blocks: list[tuple[int, int, bytes]], dict_id: int = 0) -> bytes:
    """A single-segment zstd frame with a 4-byte content size, an optional
    1-byte dictionary id, and blocks given as (type, size, payload)."""
    descriptor = 0x20 | 0x80 | (1 if dict_id else 0)  # single segment, FCS 4 bytes
    out = struct.pack("<IB", ZSTD_MAGIC, descriptor)
    out += bytes([dict_id]) if dict_id else b""
    out += struct.pack("<I", content_size)
    for i, (kind, size, payload) in enumerate(blocks):
        last = i == len(blocks) - 1
        out += (int(last) | kind << 1 | size << 3).to_bytes(3, "little") + payload
    return out


def _map(data: bytes, raw_size: int) -> bytes:
    tensor = tensor_pb2.Tensor(
        name="t",
        dtype=tensor_pb2.DTYPE_UINT8,
        shape=[raw_size],
        codec=tensor_pb2.CODEC_ZSTD,
        raw_size=raw_size,
        data=data,
    )
    return tensor_pb2.TensorMap(tensors=[tensor]).SerializeToString()


def test_a_well_formed_hand_made_frame_is_walked():
    frame = _frame(12, [(RAW, 5, b"abcde"), (RLE, 7, b"z")])
    assert codecs.ZSTD.frame_end(memoryview(frame), 0, "t") == (len(frame), 12)


def test_a_dictionary_frame_is_refused_before_decompression():
    frame = _frame(5, [(RAW, 5, b"abcde")], dict_id=7)
    with pytest.raises(SerializationException, match="uses dictionary 7"):
        read_tensor_map(_map(frame, 5))


@given(blocks=st.lists(st.integers(1, 1000), min_size=1, max_size=8), extra=st.integers(1, 1 << 31))
def test_content_beyond_what_the_blocks_hold_is_refused(blocks, extra):
    frame = _frame(0, [(RLE, n, b"\x00") for n in blocks])
    declared = sum(blocks) + extra
    bad = frame[:5] + struct.pack("<I", declared) + frame[9:]
    with pytest.raises(SerializationException, match="more than its blocks can hold"):
        read_tensor_map(_map(bad, declared))


def test_a_block_above_the_maximum_size_is_refused():
    frame = _frame(BLOCK_MAX_BYTES + 1, [(RLE, BLOCK_MAX_BYTES + 1, b"\x00")])
    with pytest.raises(SerializationException, match="corrupt zstd block header"):
        codecs.ZSTD.frame_end(memoryview(frame), 0, "t")


def test_a_small_frame_cannot_declare_a_gigabyte():
    frame = _frame(1 << 30, [(RLE, 10, b"\x00")])
    assert len(frame) < 20
    with pytest.raises(SerializationException, match="more than its blocks can hold"):
        read_tensor_map(_map(frame, 1 << 30))
