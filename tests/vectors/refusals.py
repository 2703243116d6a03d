"""Refusal vectors: invalid TensorMaps, each breaking exactly one reader check.

docs/wire-format.md gives every check a reader makes an id (section 10, the
lossy checks of section 9.1, the protobuf rules of section 2.4 and the limits
of section 11): ``[dtype]``, ``[frames]``, ``[max_expansion]``, ... Each case
here is a ``flwire.v1.TensorMap`` that breaks the check named by its ``check``
and, as far as the bytes allow, no other, so that every conforming reader
refuses it for that reason whatever order it makes its checks in. A case may
name the limits to decode it with (``limits``, the field names of
flwire-python's ``DecodeLimits``); otherwise the defaults of section 11 apply.

Everything is built here by hand (protobuf messages, zstd frames of raw and
RLE blocks, LZ4 frames from ``lz4_reference.py``), independent of flwire's
encoder, so that the bytes are exactly what the description says.
"""

from __future__ import annotations

import importlib.util
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import crc32c as _crc32c
import zstandard

from flwire.v1 import tensor_pb2 as pb

HERE = Path(__file__).resolve().parent


def _sibling(module_name: str, filename: str) -> Any:
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, HERE / filename)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


lz4ref = _sibling("flwire_lz4_reference", "lz4_reference.py")

#: Every check id of the spec a refusal vector can name, with where the spec
#: defines it. The conformance runners map each to their own errors.
CHECKS: dict[str, str] = {
    "protobuf": "2.4",
    "dtype": "10.1",
    "shape": "10.2",
    "raw_size": "10.3",
    "limits": "10.4",
    "codec": "10.5",
    "filter": "10.5",
    "data_size": "10.6",
    "frames": "10.7",
    "empty_crc32c": "10.8",
    "unique_names": "10.9",
    "decompress": "10.10",
    "crc32c": "10.12",
    "bool": "10.13",
    "lossy_method": "9.1",
    "lossy_dtype": "9.1",
    "lossy_params": "9.1",
    "lossy_not_smaller": "9.1",
    "lossy_size": "9.1",
    "lossy_filter": "9.1",
    "topk_indices": "9.1",
    "max_tensors": "11",
    "max_rank": "11",
    "max_unknown_bytes": "11",
    "max_expansion": "11",
}


#: Enum values the schema does not define (typed Any: the generated enums refuse them).
UNKNOWN_CODEC: Any = 3
UNKNOWN_FILTER: Any = 2
UNKNOWN_METHOD: Any = 5


@dataclass(frozen=True)
class Refusal:
    name: str
    check: str
    description: str
    data: bytes
    limits: dict[str, int] = field(default_factory=dict)


# ----------------------------------------------------------------------------- building blocks


def crc(data: bytes) -> int:
    return _crc32c.crc32c(data)


def zeros_crc(size: int) -> int:
    """The CRC-32C of ``size`` zero bytes, without allocating them all."""
    chunk, value = bytes(min(size, 1 << 20)), 0
    for start in range(0, size, len(chunk) or 1):
        value = _crc32c.crc32c(chunk[: min(len(chunk), size - start)], value)
    return value


def f32(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def tensor(name: str, dtype: Any, shape: list[int], raw: bytes, **fields: Any) -> pb.Tensor:
    """An uncompressed tensor of ``raw`` with a matching raw_size and crc32c;
    ``fields`` then override any field."""
    t = pb.Tensor(name=name, dtype=dtype, shape=shape, raw_size=len(raw), crc32c=crc(raw))
    t.data = raw
    for key, value in fields.items():
        if key == "lossy":
            t.lossy.CopyFrom(value)
        else:
            setattr(t, key, value)
    return t


def tmap(*tensors: pb.Tensor) -> bytes:
    return pb.TensorMap(tensors=list(tensors)).SerializeToString(deterministic=True)


def small() -> pb.Tensor:
    """A 2x3 float32 (24 bytes)."""
    return tensor("w", pb.DTYPE_FLOAT32, [2, 3], f32(1.5, -0.0, 2.0, -4.0, 0.25, 8.0))


def zstd_frame(
    blocks: list[tuple[str, bytes | tuple[int, int]]], content_size: int | None
) -> bytes:
    """A zstd frame (RFC 8878) written field by field: single segment with an
    8-byte Frame_Content_Size (or, for ``content_size`` None, a window
    descriptor and none), then the blocks: ("raw", bytes) or ("rle", (byte,
    count)); the last one flagged as last."""
    out = bytearray((0xFD2FB528).to_bytes(4, "little"))
    if content_size is None:
        out += bytes([0x00, 0x58])  # no FCS, window 2^21
    else:
        out += bytes([0xE0]) + content_size.to_bytes(8, "little")
    for k, (kind, content) in enumerate(blocks):
        last = 1 if k == len(blocks) - 1 else 0
        if kind == "raw":
            assert isinstance(content, bytes)
            out += (len(content) << 3 | 0 << 1 | last).to_bytes(3, "little") + content
        else:
            assert isinstance(content, tuple)
            byte, count = content
            out += (count << 3 | 1 << 1 | last).to_bytes(3, "little") + bytes([byte])
    return bytes(out)


def compressed(name: str, raw: bytes, data: bytes, codec: int = pb.CODEC_ZSTD) -> pb.Tensor:
    """A uint8 tensor of ``raw`` whose data is ``data`` under ``codec``."""
    return tensor(name, pb.DTYPE_UINT8, [len(raw)], raw, codec=codec, data=data)


def _pattern(n: int) -> bytes:
    return bytes((i * 7 + 3) % 251 for i in range(n))


def _replace_varint_field(data: bytes, key: int, new: bytes) -> bytes:
    """``data`` with the first field of the one-byte ``key`` (a varint field)
    rewritten as ``key`` + ``new`` (the caller's varint bytes)."""
    at = data.index(bytes([key]))
    end = at + 1
    while data[end] & 0x80:
        end += 1
    return data[:at] + bytes([key]) + new + data[end + 1 :]


def _relength(tensor_bytes: bytes) -> bytes:
    """A map holding one tensor's (hand-edited) bytes."""
    return bytes([0x0A]) + _varint(len(tensor_bytes)) + tensor_bytes


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _lossy(method: Any, block_size: int = 0, k: int = 0) -> pb.LossyEncoding:
    return pb.LossyEncoding(method=method, block_size=block_size, k=k)


def _topk(n: int, kept: dict[int, float], k: int | None = None) -> pb.Tensor:
    """A float32 top-k tensor of ``n`` elements keeping ``kept`` (index ->
    value, in the payload's order as given)."""
    values = f32(*kept.values())
    index = struct.pack(f"<{len(kept)}I", *kept)
    return tensor(
        "delta",
        pb.DTYPE_FLOAT32,
        [n],
        values + index,
        lossy=_lossy(pb.LOSSY_TOP_K, k=len(kept) if k is None else k),
    )


def _cast16(n: int) -> pb.Tensor:
    """A float32 tensor of ``n`` elements cast to float16 (payload: 1.0 each)."""
    return tensor(
        "cast",
        pb.DTYPE_FLOAT32,
        [n],
        b"\x00\x3c" * n,
        lossy=_lossy(pb.LOSSY_CAST_FLOAT16),
    )


def _int8(n: int, block: int) -> pb.Tensor:
    """A float32 tensor of ``n`` elements in int8 blocks of ``block``."""
    blocks = -(-n // block)
    payload = f32(*([0.5] * blocks)) + bytes((i % 5) for i in range(n))
    return tensor(
        "q", pb.DTYPE_FLOAT32, [n], payload, lossy=_lossy(pb.LOSSY_BLOCK_INT8, block_size=block)
    )


# ----------------------------------------------------------------------------- the cases

_CASES: list[tuple[str, str, str, Callable[[], bytes], dict[str, int]]] = []


def case(
    name: str, check: str, description: str, limits: dict[str, int] | None = None
) -> Callable[[Callable[[], bytes]], Callable[[], bytes]]:
    assert check in CHECKS, check

    def register(build: Callable[[], bytes]) -> Callable[[], bytes]:
        _CASES.append((name, check, description, build, limits or {}))
        return build

    return register


# Section 2.4: what a protobuf parser refuses.


@case(
    "truncated_tensor",
    "protobuf",
    "The last byte of a one-tensor map cut off: the Tensor's length runs past the end of the map.",
)
def _truncated_tensor() -> bytes:
    return tmap(small())[:-1]


@case(
    "truncated_varint",
    "protobuf",
    "A valid map, then the key of an unknown varint field (field 15) whose varint never ends.",
)
def _truncated_varint() -> bytes:
    return tmap(small()) + bytes([15 << 3, 0x80, 0x80])


@case("field_number_0", "protobuf", "A valid map, then a field with number 0 (key 0x00).")
def _field_number_0() -> bytes:
    return tmap(small()) + b"\x00\x00"


@case(
    "varint_of_11_bytes",
    "protobuf",
    "raw_size written as a varint of 11 bytes (at most 10 are allowed), its value still 24.",
)
def _varint_of_11_bytes() -> bytes:
    t = small().SerializeToString(deterministic=True)
    return _relength(_replace_varint_field(t, 0x30, b"\x98" + b"\x80" * 9 + b"\x00"))


@case("name_not_utf8", "protobuf", "A tensor name holding the byte 0xff, which is not UTF-8.")
def _name_not_utf8() -> bytes:
    data = bytearray(tmap(small()))
    at = data.index(b"\x0a\x01w")
    data[at + 2] = 0xFF
    return bytes(data)


# Section 10, checks 1 to 9: before anything is allocated.


@case(
    "dtype_unspecified",
    "dtype",
    "A tensor without a dtype field (DTYPE_UNSPECIFIED), one byte of data.",
)
def _dtype_unspecified() -> bytes:
    return tmap(tensor("u", pb.DTYPE_UNSPECIFIED, [1], b"\x01"))


@case(
    "dtype_unknown",
    "dtype",
    "dtype 22, a value section 4 does not define; one element of one byte.",
)
def _dtype_unknown() -> bytes:
    return tmap(tensor("u", 22, [1], b"\x01"))


@case(
    "negative_dimension",
    "shape",
    "shape [-2, -3] (int64 varints of 10 bytes) for 24 "
    "bytes of float32: the product is 6, as raw_size says.",
)
def _negative_dimension() -> bytes:
    t = small()
    t.shape[:] = [-2, -3]
    return tmap(t)


@case(
    "strides_overflow",
    "shape",
    "An empty float32 of shape [0, 2^31, 2^31]: product(max(d, 1)) x 4 = 2^64, not below 2^63.",
)
def _strides_overflow() -> bytes:
    return tmap(tensor("e", pb.DTYPE_FLOAT32, [0, 1 << 31, 1 << 31], b""))


@case(
    "shape_not_raw_size",
    "raw_size",
    "shape [3, 3] of float32 (36 bytes), but raw_size and data hold 24.",
)
def _shape_not_raw_size() -> bytes:
    t = small()
    t.shape[:] = [3, 3]
    return tmap(t)


@case(
    "tensor_above_limit",
    "limits",
    "A 24-byte float32, decoded with a per-tensor limit of 16 bytes.",
    {"max_tensor_bytes": 16},
)
def _tensor_above_limit() -> bytes:
    return tmap(small())


@case(
    "map_above_limit",
    "limits",
    "Two 24-byte float32 tensors, decoded with a per-map limit of 40 bytes.",
    {"max_total_bytes": 40},
)
def _map_above_limit() -> bytes:
    second = small()
    second.name = "v"
    return tmap(small(), second)


@case(
    "lossy_logical_size_above_limit",
    "limits",
    "A top-2 float32 tensor of 256 elements: "
    "its payload is 16 bytes, its logical size 1024, above the per-tensor limit of 512 "
    "bytes (the logical size counts, section 9.1).",
    {"max_tensor_bytes": 512},
)
def _lossy_logical_size_above_limit() -> bytes:
    return tmap(_topk(256, {3: 2.0, 200: -1.0}))


@case(
    "codec_unknown",
    "codec",
    "codec 3, a value section 7 does not define; the data is the raw bytes.",
)
def _codec_unknown() -> bytes:
    t = small()
    t.codec = UNKNOWN_CODEC
    return tmap(t)


@case("filter_unknown", "filter", "filter 2, a value section 6 does not define.")
def _filter_unknown() -> bytes:
    t = small()
    t.filter = UNKNOWN_FILTER
    return tmap(t)


@case(
    "data_too_short",
    "data_size",
    "An uncompressed float32 with raw_size 24 and 20 "
    "bytes of data (the CRC-32C is that of the 24 raw bytes).",
)
def _data_too_short() -> bytes:
    t = small()
    t.data = t.data[:20]
    return tmap(t)


@case("data_missing", "data_size", "An uncompressed float32 with raw_size 24 and no data field.")
def _data_missing() -> bytes:
    t = small()
    t.ClearField("data")
    return tmap(t)


@case(
    "empty_tensor_with_crc32c",
    "empty_crc32c",
    "An empty float32 of shape [0, 3] whose crc32c is 1 (the CRC-32C of no bytes is 0).",
)
def _empty_tensor_with_crc32c() -> bytes:
    return tmap(tensor("e", pb.DTYPE_FLOAT32, [0, 3], b"", crc32c=1))


@case("duplicate_names", "unique_names", "Two valid tensors both named 'w'.")
def _duplicate_names() -> bytes:
    return tmap(small(), small())


# Check 7: the frames, walked without decompressing.

_RAW = _pattern(1024)


@case("zstd_not_a_frame", "frames", "codec zstd, but the data is the raw bytes (no magic number).")
def _zstd_not_a_frame() -> bytes:
    return tmap(compressed("z", _RAW, _RAW))


@case(
    "zstd_skippable_frame",
    "frames",
    "A zstd skippable frame (magic 0x184D2A50, 4 bytes) before a valid frame of raw blocks.",
)
def _zstd_skippable_frame() -> bytes:
    skip = (0x184D2A50).to_bytes(4, "little") + (4).to_bytes(4, "little") + b"skip"
    return tmap(compressed("z", _RAW, skip + zstd_frame([("raw", _RAW)], len(_RAW))))


@case(
    "zstd_no_content_size",
    "frames",
    "A zstd frame of one raw block with no Frame_Content_Size (a window descriptor instead).",
)
def _zstd_no_content_size() -> bytes:
    return tmap(compressed("z", _RAW, zstd_frame([("raw", _RAW)], None)))


@case("zstd_dictionary", "frames", "A zstd frame of one raw block that names dictionary 7.")
def _zstd_dictionary() -> bytes:
    frame = bytearray(zstd_frame([("raw", _RAW)], len(_RAW)))
    frame[4] |= 0x01  # Dictionary_ID_Flag: 1 byte
    return tmap(compressed("z", _RAW, bytes(frame[:5]) + b"\x07" + bytes(frame[5:])))


@case(
    "zstd_content_size_not_raw_size",
    "frames",
    "A valid zstd frame of raw blocks holding "
    "1024 bytes, as its Frame_Content_Size says; raw_size and shape say 1025.",
)
def _zstd_content_size_not_raw_size() -> bytes:
    raw = _pattern(1025)
    return tmap(compressed("z", raw, zstd_frame([("raw", raw[:1024])], 1024)))


@case(
    "zstd_raw_blocks_short_of_content_size",
    "frames",
    "Frame_Content_Size 1024 "
    "(= raw_size), but the frame's only block is a raw block of 1023 bytes: more than its "
    "blocks can hold.",
)
def _zstd_raw_blocks_short() -> bytes:
    return tmap(compressed("z", _RAW, zstd_frame([("raw", _RAW[:1023])], 1024)))


@case(
    "zstd_rle_blocks_short_of_content_size",
    "frames",
    "1 GiB declared (shape, raw_size "
    "and Frame_Content_Size agree) in a frame of two RLE blocks of 128 KiB: 256 KiB is all "
    "they can hold. Refused before 1 GiB is allocated.",
)
def _zstd_rle_blocks_short() -> bytes:
    size = 1 << 30
    frame = zstd_frame([("rle", (0, 1 << 17)), ("rle", (0, 1 << 17))], size)
    t = pb.Tensor(name="z", dtype=pb.DTYPE_UINT8, shape=[size], raw_size=size)
    t.crc32c, t.codec, t.data = zeros_crc(size), pb.CODEC_ZSTD, frame
    return tmap(t)


@case(
    "zstd_block_above_128k",
    "frames",
    "A zstd frame whose one block is an RLE block of "
    "Block_Size 131,073 (Block_Maximum_Size is 131,072).",
)
def _zstd_block_above_128k() -> bytes:
    raw = bytes(131_073)
    return tmap(compressed("z", raw, zstd_frame([("rle", (0, 131_073))], len(raw))))


@case(
    "zstd_reserved_block_type", "frames", "A zstd frame whose block has the reserved block type 3."
)
def _zstd_reserved_block_type() -> bytes:
    frame = bytearray(zstd_frame([("raw", _RAW)], len(_RAW)))
    frame[13] |= 0x06  # Block_Type bits of the first block header (after 4 + 1 + 8 bytes)
    return tmap(compressed("z", _RAW, bytes(frame)))


@case(
    "zstd_truncated",
    "frames",
    "A zstd frame of one raw block of 1024 bytes whose last "
    "byte is missing (the block runs past the data).",
)
def _zstd_truncated() -> bytes:
    return tmap(compressed("z", _RAW, zstd_frame([("raw", _RAW)], len(_RAW))[:-1]))


@case("zstd_trailing_byte", "frames", "A valid zstd frame, then one byte 0x00 after it.")
def _zstd_trailing_byte() -> bytes:
    return tmap(compressed("z", _RAW, zstd_frame([("raw", _RAW)], len(_RAW)) + b"\x00"))


@case(
    "zstd_short_frame_before_last",
    "frames",
    "Two valid zstd frames of 512 bytes each: "
    "a frame before the last holds less than 65,536 bytes.",
)
def _zstd_short_frame_before_last() -> bytes:
    frames = zstd_frame([("raw", _RAW[:512])], 512) + zstd_frame([("raw", _RAW[512:])], 512)
    return tmap(compressed("z", _RAW, frames))


@case("lz4_not_a_frame", "frames", "codec LZ4, but the data is the raw bytes (no magic number).")
def _lz4_not_a_frame() -> bytes:
    return tmap(compressed("l", _RAW, _RAW, pb.CODEC_LZ4))


@case("lz4_no_content_size", "frames", "An LZ4 frame of one stored block without a Content Size.")
def _lz4_no_content_size() -> bytes:
    frame = lz4ref.build_frame(_RAW, block_max_id=4, content_size=None)
    return tmap(compressed("l", _RAW, frame, pb.CODEC_LZ4))


@case(
    "lz4_block_max_id_3",
    "frames",
    "An LZ4 frame whose BD byte has block maximum size id 3 (ids 4 to 7 are defined).",
)
def _lz4_block_max_id_3() -> bytes:
    frame = lz4ref.build_frame(_RAW, block_max_id=3, block_sizes=[1024])
    return tmap(compressed("l", _RAW, frame, pb.CODEC_LZ4))


@case(
    "lz4_content_size_beyond_blocks",
    "frames",
    "An LZ4 frame declaring 1 MiB (as shape "
    "and raw_size do) with one stored block of 16 bytes: more than its blocks can hold.",
)
def _lz4_content_size_beyond_blocks() -> bytes:
    size = 1 << 20
    frame = lz4ref.build_frame(bytes(16), block_max_id=4, content_size=size)
    t = pb.Tensor(name="l", dtype=pb.DTYPE_UINT8, shape=[size], raw_size=size)
    t.crc32c, t.codec, t.data = zeros_crc(size), pb.CODEC_LZ4, frame
    return tmap(t)


# Checks 10 to 13: while decoding the data.


@case(
    "zstd_rle_blocks_beyond_content_size",
    "decompress",
    "Frame_Content_Size 1024 "
    "(= raw_size), but the frame's RLE blocks regenerate 2048 bytes: the frame's content "
    "is longer than it declares.",
)
def _zstd_rle_beyond() -> bytes:
    frame = zstd_frame([("rle", (0, 1024)), ("rle", (0, 1024))], 1024)
    return tmap(compressed("z", bytes(1024), frame))


@case(
    "zstd_raw_blocks_beyond_content_size",
    "decompress",
    "Frame_Content_Size 1024 (= raw_size), but the frame's raw blocks hold 1025 bytes.",
)
def _zstd_raw_beyond() -> bytes:
    raw = _pattern(1025)
    frame = zstd_frame([("raw", raw[:1000]), ("raw", raw[1000:])], 1024)
    return tmap(compressed("z", raw[:1024], frame))


@case(
    "zstd_compressed_block_short_of_content_size",
    "decompress",
    "Frame_Content_Size "
    "1024 (= raw_size), but the frame's compressed block decodes to 1000 bytes (a "
    "compressed block may hold up to 128 KiB, so only decompressing finds it).",
)
def _zstd_compressed_short() -> bytes:
    content = b"flwire, " * 125
    cctx = zstandard.ZstdCompressor(level=1, write_content_size=True, write_checksum=False)
    frame = bytearray(cctx.compress(content))
    # Single segment, a 2-byte Frame_Content_Size (value - 256), then one compressed block.
    assert frame[4] == 0x60 and (frame[7] >> 1) & 3 == 2 and frame[7] & 1, frame[:8].hex()
    frame[5:7] = (1024 - 256).to_bytes(2, "little")
    return tmap(compressed("z", content + bytes(24), bytes(frame)))


@case(
    "lz4_blocks_beyond_content_size",
    "decompress",
    "An LZ4 frame declaring 16 bytes of content (= raw_size) whose one stored block holds 32.",
)
def _lz4_blocks_beyond() -> bytes:
    frame = lz4ref.build_frame(_RAW[:32], block_max_id=4, content_size=16)
    return tmap(compressed("l", _RAW[:16], frame, pb.CODEC_LZ4))


@case(
    "lz4_header_checksum",
    "decompress",
    "A valid LZ4 frame of one stored block whose header checksum (HC) is wrong.",
)
def _lz4_header_checksum() -> bytes:
    frame = lz4ref.build_frame(_RAW, block_max_id=4, header_checksum_xor=0x01)
    return tmap(compressed("l", _RAW, frame, pb.CODEC_LZ4))


@case(
    "crc32c_mismatch", "crc32c", "An uncompressed float32 whose crc32c has its lowest bit flipped."
)
def _crc32c_mismatch() -> bytes:
    t = small()
    t.crc32c ^= 1
    return tmap(t)


@case(
    "crc32c_absent",
    "crc32c",
    "An uncompressed, non-empty float32 without a crc32c "
    "field (absent means 0, which is not the CRC-32C of its bytes).",
)
def _crc32c_absent() -> bytes:
    t = small()
    t.ClearField("crc32c")
    return tmap(t)


@case(
    "crc32c_of_compressed",
    "crc32c",
    "A valid zstd frame of raw blocks whose content is "
    "not the bytes the crc32c was computed on (one byte differs).",
)
def _crc32c_of_compressed() -> bytes:
    other = bytearray(_RAW)
    other[100] ^= 0xFF
    return tmap(compressed("z", _RAW, zstd_frame([("raw", bytes(other))], len(_RAW))))


@case("bool_byte_2", "bool", "A bool tensor holding the byte 0x02, with a matching crc32c.")
def _bool_byte_2() -> bytes:
    return tmap(tensor("b", pb.DTYPE_BOOL, [4], b"\x01\x00\x02\x01"))


# Section 9.1: lossy tensors.


@case(
    "lossy_unknown_method",
    "lossy_method",
    "A float32 tensor whose lossy method is 5, which section 9.1 does not define.",
)
def _lossy_unknown_method() -> bytes:
    t = _cast16(8)
    t.lossy.method = UNKNOWN_METHOD
    return tmap(t)


@case(
    "lossy_cast_of_float16",
    "lossy_dtype",
    "A float16 tensor carrying LOSSY_CAST_FLOAT16 "
    "(casts apply to float32 and float64 only), payload of the right size.",
)
def _lossy_cast_of_float16() -> bytes:
    t = _cast16(8)
    t.dtype = pb.DTYPE_FLOAT16
    return tmap(t)


@case("lossy_cast_of_bfloat16", "lossy_dtype", "A bfloat16 tensor carrying LOSSY_CAST_BFLOAT16.")
def _lossy_cast_of_bfloat16() -> bytes:
    t = _cast16(8)
    t.dtype, t.lossy.method = pb.DTYPE_BFLOAT16, pb.LOSSY_CAST_BFLOAT16
    return tmap(t)


@case(
    "lossy_topk_of_int32",
    "lossy_dtype",
    "An int32 tensor carrying LOSSY_TOP_K (lossy methods apply to floating tensors only).",
)
def _lossy_topk_of_int32() -> bytes:
    t = _topk(256, {3: 2.0, 200: -1.0})
    t.dtype = pb.DTYPE_INT32
    return tmap(t)


@case("lossy_int8_block_size_0", "lossy_params", "LOSSY_BLOCK_INT8 with block_size 0.")
def _lossy_int8_block_size_0() -> bytes:
    t = _int8(64, 64)
    t.lossy.ClearField("block_size")
    return tmap(t)


@case("lossy_int8_block_size_7", "lossy_params", "LOSSY_BLOCK_INT8 with block_size 7 (below 8).")
def _lossy_int8_block_size_7() -> bytes:
    return tmap(_int8(64, 7))


@case(
    "lossy_topk_denser_than_one_in_8",
    "lossy_params",
    "LOSSY_TOP_K keeping 9 of 64 elements (more than one in 8).",
)
def _lossy_topk_denser_than_one_in_8() -> bytes:
    return tmap(_topk(64, {i: float(i + 1) for i in range(9)}))


@case(
    "lossy_int8_not_smaller",
    "lossy_not_smaller",
    "LOSSY_BLOCK_INT8 of a float16 tensor of 3 elements: one scale and 3 values, 7 "
    "bytes, for 6 raw bytes.",
)
def _lossy_int8_not_smaller() -> bytes:
    payload = f32(0.5) + bytes([1, 2, 3])
    return tmap(
        tensor("q", pb.DTYPE_FLOAT16, [3], payload, lossy=_lossy(pb.LOSSY_BLOCK_INT8, block_size=8))
    )


@case("lossy_topk_k_above_n", "lossy_params", "LOSSY_TOP_K with k = 9 on a tensor of 8 elements.")
def _lossy_topk_k_above_n() -> bytes:
    # A payload of the size k = 9 implies: 9 values, 9 indices.
    return tmap(_topk(8, {i: float(i + 1) for i in range(9)}))


@case(
    "lossy_cast_payload_short",
    "lossy_size",
    "A float32 tensor of 8 elements cast to "
    "float16 whose payload (raw_size and data) holds 7 values, 14 bytes instead of 16.",
)
def _lossy_cast_payload_short() -> bytes:
    t = _cast16(7)
    t.shape[:] = [8]
    return tmap(t)


@case(
    "lossy_topk_payload_of_other_k",
    "lossy_size",
    "LOSSY_TOP_K with k = 3, but a payload of 2 values and 2 indices (16 bytes; k = 3 needs 24).",
)
def _lossy_topk_payload_of_other_k() -> bytes:
    return tmap(_topk(256, {3: 2.0, 200: -1.0}, k=3))


@case(
    "lossy_int8_payload_of_other_block_size",
    "lossy_size",
    "LOSSY_BLOCK_INT8 with "
    "block_size 32 on 64 elements, but the payload has the one scale of block_size 64.",
)
def _lossy_int8_other_block_size() -> bytes:
    t = _int8(64, 64)
    t.lossy.block_size = 32
    return tmap(t)


@case(
    "lossy_int8_shuffled",
    "lossy_filter",
    "LOSSY_BLOCK_INT8 with filter = byte shuffle (methods 3 and 4 take no filter).",
)
def _lossy_int8_shuffled() -> bytes:
    t = _int8(64, 64)
    t.filter = pb.FILTER_BYTE_SHUFFLE
    return tmap(t)


@case("topk_indices_not_ascending", "topk_indices", "A top-2 payload with indices 200, 3.")
def _topk_not_ascending() -> bytes:
    return tmap(_topk(256, {200: -1.0, 3: 2.0}))


@case("topk_duplicate_index", "topk_indices", "A top-2 payload with indices 3, 3.")
def _topk_duplicate() -> bytes:
    t = _topk(256, {3: 2.0, 4: -1.0})
    payload = t.data[:8] + struct.pack("<2I", 3, 3)
    t.data, t.crc32c = payload, crc(payload)
    return tmap(t)


@case(
    "topk_index_out_of_range",
    "topk_indices",
    "A top-2 payload of a 256-element tensor with indices 3, 256.",
)
def _topk_out_of_range() -> bytes:
    return tmap(_topk(256, {3: 2.0, 256: -1.0}))


# Section 11: limits that need no huge input.


@case(
    "too_many_tensors",
    "max_tensors",
    "Three valid tensors, decoded with max_tensors 2.",
    {"max_tensors": 2},
)
def _too_many_tensors() -> bytes:
    ts = [small() for _ in range(3)]
    for k, t in enumerate(ts):
        t.name = f"w{k}"
    return tmap(*ts)


@case(
    "too_many_tensors_for_the_size",
    "max_tensors",
    "1,025 empty float32 tensors in 13 KB, above the default 1,024 tensors and metadata "
    "entries per MiB (and at least 1,024 in any map).",
)
def _too_many_tensors_for_the_size() -> bytes:
    return tmap(*(tensor(f"{k:x}", pb.DTYPE_FLOAT32, [0], b"") for k in range(1025)))


@case(
    "rank_65",
    "max_rank",
    "A float32 of rank 65 (shape [6, 1, 1, ...]), above the default max_rank of 64.",
)
def _rank_65() -> bytes:
    t = small()
    t.shape[:] = [6] + [1] * 64
    return tmap(t)


@case(
    "zstd_rle_bomb",
    "max_expansion",
    "A map of about 1.1 KB declaring 32 MiB: one "
    "consistent zstd frame of 256 RLE blocks of 128 KiB each (every size agrees). Refused "
    "for its ratio of decoded bytes to input bytes, above max(16 MiB, 100 x its size).",
)
def _zstd_rle_bomb() -> bytes:
    size = 256 << 17
    frame = zstd_frame([("rle", (0, 1 << 17))] * 256, size)
    t = pb.Tensor(name="z", dtype=pb.DTYPE_UINT8, shape=[size], raw_size=size)
    t.crc32c, t.codec, t.data = zeros_crc(size), pb.CODEC_ZSTD, frame
    return tmap(t)


@case(
    "unknown_fields_above_limit",
    "max_unknown_bytes",
    "A valid float32 with an unknown field (number 20, 32 bytes of payload) in its Tensor, "
    "decoded with max_unknown_bytes 16.",
    {"max_unknown_bytes": 16},
)
def _unknown_fields_above_limit() -> bytes:
    t = small().SerializeToString(deterministic=True)
    return _relength(t + _varint(20 << 3 | 2) + bytes([32]) + bytes(32))


def build() -> list[Refusal]:
    """Every refusal case, in a fixed order."""
    return [
        Refusal(name, check, desc, make(), limits) for name, check, desc, make, limits in _CASES
    ]
