"""Reference helpers shared by the tests (importable as ``helpers``: tests/ is
on the path as the rootdir of its conftest.py).

The reference helpers (shuffle, oracle decoding of a generated ``TensorMap``,
hand-built Tensor messages) are written independently of the codec so that the
tests compare it against the schema, not against itself. ``values_equal`` is
the NaN-aware equality of typed values the library used to ship.
"""

from __future__ import annotations

import asyncio
import math
import struct
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import crc32c
import lz4.frame
import torch
import zstandard

from flwire.tensors import dtypes, torch_support
from flwire.v1 import tensor_pb2 as pb

# ----------------------------------------------------------------------------- typed values


def values_equal(a: Any, b: Any) -> bool:
    """Equality of typed values (None, bool, int, float, str, bytes, lists and
    string-keyed dicts of them): types must match (``1 != 1.0``, ``True != 1``,
    ``[1] != (1,)``), NaN equals NaN, floats otherwise compare with ``==`` (so
    ``0.0`` equals ``-0.0``)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def same_float_bits(got: Any, want: Any) -> None:
    """Assert that every non-NaN float in ``want`` has the same bits in ``got``
    (the sign of zero and of infinities included)."""
    if isinstance(want, float) and not math.isnan(want):
        assert struct.pack("<d", got) == struct.pack("<d", want), (got, want)
    elif isinstance(want, dict):
        for key in want:
            same_float_bits(got[key], want[key])
    elif isinstance(want, list):
        for a, b in zip(got, want, strict=True):
            same_float_bits(a, b)


def assert_same_values(got: Any, want: Any) -> None:
    """values_equal (types kept, NaN == NaN) plus the sign of zero and inf."""
    assert values_equal(got, want), (got, want)
    same_float_bits(got, want)


# ----------------------------------------------------------------------------- tensor schema

# Field numbers, from the generated descriptors (the schema is normative for them;
# test_generated_equivalence pins the documented values).
TENSOR_FIELDS = {f.name: f.number for f in pb.Tensor.DESCRIPTOR.fields}
T_NAME = TENSOR_FIELDS["name"]
T_DTYPE = TENSOR_FIELDS["dtype"]
T_SHAPE = TENSOR_FIELDS["shape"]
T_CODEC = TENSOR_FIELDS["codec"]
T_FILTER = TENSOR_FIELDS["filter"]
T_RAW_SIZE = TENSOR_FIELDS["raw_size"]
T_CRC = TENSOR_FIELDS["crc32c"]
T_PADDING = TENSOR_FIELDS["padding"]
T_DATA = TENSOR_FIELDS["data"]
M_TENSORS = pb.TensorMap.DESCRIPTOR.fields_by_name["tensors"].number
M_METADATA = pb.TensorMap.DESCRIPTOR.fields_by_name["metadata"].number
# Field numbers no Tensor or TensorMap field uses (with a margin for growth).
FIRST_UNKNOWN = max(TENSOR_FIELDS.values()) + 16

ALL_INFOS = list(dtypes.BY_WIRE.values())
TORCH_DTYPES = [torch_support.torch_dtype(info) for info in ALL_INFOS]
INFO_BY_TORCH = dict(zip(TORCH_DTYPES, ALL_INFOS, strict=True))

# The dtypes the codec must carry, spelled out so that a dtype dropped from the
# wire table fails a test instead of silently shrinking the coverage.
EXPECTED_TORCH_DTYPES = {
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.float8_e4m3fnuz,
    torch.float8_e5m2fnuz,
    torch.float8_e8m0fnu,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.uint16,
    torch.uint32,
    torch.uint64,
    torch.bool,
    torch.complex32,
    torch.complex64,
    torch.complex128,
}

# Bit patterns of special values, per float component width: quiet and
# signalling NaNs with payloads and either sign, infinities, -0.0, the smallest
# subnormal and all-ones.
_SPECIAL_BITS = {
    torch.float16: [0x7E00, 0xFE00, 0x7C01, 0x7D55, 0x7C00, 0xFC00, 0x8000, 0x0001, 0xFFFF],
    torch.bfloat16: [0x7FC0, 0xFFC0, 0x7F81, 0x7FAB, 0x7F80, 0xFF80, 0x8000, 0x0001, 0xFFFF],
    torch.float32: [
        0x7FC00000,
        0xFFC00000,
        0x7F800001,
        0x7FC12345,
        0xFFBADBAD,
        0x7F800000,
        0xFF800000,
        0x80000000,
        0x00000001,
        0xFFFFFFFF,
    ],
    torch.float64: [
        0x7FF8000000000000,
        0xFFF8000000000000,
        0x7FF0000000000001,
        0x7FF8DEAD0000BEEF,
        0xFFF4000000000001,
        0x7FF0000000000000,
        0xFFF0000000000000,
        0x8000000000000000,
        0x0000000000000001,
        0xFFFFFFFFFFFFFFFF,
    ],
}
_COMPONENT = {
    torch.complex32: torch.float16,
    torch.complex64: torch.float32,
    torch.complex128: torch.float64,
}


def component_specials(dtype: torch.dtype) -> tuple[int, list[bytes]]:
    """(component width, special component bit patterns) for a dtype."""
    comp = _COMPONENT.get(dtype, dtype)
    info = INFO_BY_TORCH[dtype]
    width = info.itemsize // (2 if dtype in _COMPONENT else 1)
    bits = _SPECIAL_BITS.get(comp)
    if bits is None:  # 1-byte floats and integers: extremes and sign bits
        patterns = [b"\x00" * width, b"\xff" * width, b"\x00" * (width - 1) + b"\x80"]
        patterns.append(b"\xff" * (width - 1) + b"\x7f")
        patterns.append(b"\x7f" + b"\x00" * (width - 1))
        return width, patterns
    return width, [b.to_bytes(width, "little") for b in bits]


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


# ----------------------------------------------------------------------------- tensors


def tensor_from_bytes(raw: bytes, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """A fresh, writable tensor holding exactly ``raw``."""
    if not raw:
        return torch.empty(shape, dtype=dtype)
    flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    return flat.view(dtype).reshape(shape)


def tensor_bytes(t: torch.Tensor) -> bytes:
    """The raw bytes of a tensor's elements in C order (no conj/neg bit allowed)."""
    assert not t.is_conj() and not t.is_neg(), "resolve conj/neg views before comparing"
    if t.numel() == 0:
        return b""
    # A fresh dense copy: a one-element view may keep an odd stride after reshape.
    flat = t.detach().reshape(-1).clone(memory_format=torch.contiguous_format)
    return flat.view(torch.uint8).numpy().tobytes()


def assert_same_tensor(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Bit-exact equality of dtype, shape and bytes."""
    assert isinstance(actual, torch.Tensor)
    assert actual.dtype == expected.dtype
    assert tuple(actual.shape) == tuple(expected.shape)
    assert tensor_bytes(actual) == tensor_bytes(expected)


def assert_same_state_dict(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    """Same names in the same order, each tensor bit-exact (dtype, shape, bytes)."""
    assert list(got) == list(want)
    for name, expected in want.items():
        actual = got[name]
        assert isinstance(actual, torch.Tensor), name
        assert actual.dtype == expected.dtype, name
        assert tuple(actual.shape) == tuple(expected.shape), name
        assert tensor_bytes(actual) == tensor_bytes(expected), name


def summarize(decoded: dict[str, torch.Tensor]) -> dict[str, tuple[torch.dtype, tuple, bytes]]:
    return {k: (v.dtype, tuple(v.shape), tensor_bytes(v)) for k, v in decoded.items()}


# ----------------------------------------------------------------------------- reference codec


def ref_shuffle(raw: bytes, itemsize: int) -> bytes:
    """Byte shuffle as the schema defines it: output byte j*n+i is byte j of element i."""
    n = len(raw) // itemsize
    return bytes(raw[i * itemsize + j] for j in range(itemsize) for i in range(n))


def ref_unshuffle(data: bytes, itemsize: int) -> bytes:
    n = len(data) // itemsize
    return bytes(data[j * n + i] for i in range(n) for j in range(itemsize))


def decompress_all_frames(data: bytes) -> bytes:
    """The concatenated contents of one or more zstd frames (a tensor's data)."""
    with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True) as reader:
        return reader.read()


def decompress_all_lz4_frames(data: bytes) -> bytes:
    """The concatenated contents of one or more LZ4 frames (a tensor's data)."""
    out = []
    rest = bytes(data)
    while rest:
        ctx = lz4.frame.create_decompression_context()
        chunk, used, done = lz4.frame.decompress_chunk(ctx, rest)
        assert done, "truncated LZ4 frame"
        out.append(chunk)
        rest = rest[used:]
    return b"".join(out)


def oracle_decode(msg: pb.TensorMap) -> dict[str, tuple[torch.dtype, tuple[int, ...], bytes]]:
    """Decode a parsed TensorMap with the generated classes, zstandard and lz4 only."""
    out = {}
    for t in msg.tensors:
        info = dtypes.BY_WIRE[t.dtype]
        data = bytes(t.data)
        if t.codec == pb.CODEC_ZSTD:
            data = decompress_all_frames(data)
        elif t.codec == pb.CODEC_LZ4:
            data = decompress_all_lz4_frames(data)
        else:
            assert t.codec == pb.CODEC_UNSPECIFIED, t.codec
        if t.filter == pb.FILTER_BYTE_SHUFFLE:
            data = ref_unshuffle(data, info.itemsize)
        assert len(data) == t.raw_size
        assert crc32c.crc32c(data) == t.crc32c
        out[t.name] = (getattr(torch, info.name), tuple(t.shape), data)
    return out


def pb_tensor(
    name: str,
    info: dtypes.DtypeInfo,
    shape: tuple[int, ...],
    raw: bytes,
    *,
    zstd_level: int | None = None,
    shuffle: bool = False,
    zstd_checksum: bool = False,
    frame_bytes: int | None = None,
) -> pb.Tensor:
    """A Tensor message built by hand with the generated class (``frame_bytes``:
    cut the filtered bytes into zstd frames of that size, else one frame)."""
    t = pb.Tensor(name=name, dtype=pb.Dtype.ValueType(info.wire), shape=list(shape))
    t.raw_size = len(raw)
    t.crc32c = crc32c.crc32c(raw)
    data = raw
    if shuffle:
        data = ref_shuffle(data, info.itemsize)
        t.filter = pb.FILTER_BYTE_SHUFFLE
    if zstd_level is not None:
        cctx = zstandard.ZstdCompressor(
            level=zstd_level, write_content_size=True, write_checksum=zstd_checksum
        )
        step = frame_bytes or max(len(data), 1)
        pieces = [data[a : a + step] for a in range(0, len(data), step)] or [b""]
        data = b"".join(cctx.compress(piece) for piece in pieces)
        t.codec = pb.CODEC_ZSTD
    t.data = data
    return t


# ----------------------------------------------------------------------------- event loops


def run_in_own_thread(
    scenario: Callable[[], Coroutine[Any, Any, Any]], timeout: float = 30.0
) -> Any:
    """``asyncio.run(scenario())`` on a thread of its own, and its result: a loop
    that hangs (a cancellation swallowed, a wait that ignores it) fails the test
    after ``timeout`` seconds instead of stalling the suite."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(scenario())
        except BaseException as exc:  # reported below
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"the event loop hung for {timeout:g} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
