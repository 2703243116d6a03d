"""Strategies and reference helpers shared by the tensor codec property tests.

The reference helpers (shuffle, oracle decoding of a generated ``TensorMap``)
are written independently of ``flwire.serialization`` so that the tests compare
the codec against the schema, not against itself.
"""

from __future__ import annotations

import math
from typing import Any

import crc32c
import torch
import zstandard
from hypothesis import strategies as st

from flwire.serialization import dtypes
from flwire.v1 import tensor_pb2 as pb

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
TORCH_DTYPES = [info.torch_dtype for info in ALL_INFOS]
INFO_BY_TORCH = {info.torch_dtype: info for info in ALL_INFOS}

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


def shapes(
    min_rank: int = 0, max_rank: int = 4, max_dim: int = 4, min_dim: int = 0
) -> st.SearchStrategy:
    return st.lists(
        st.integers(min_value=min_dim, max_value=max_dim), min_size=min_rank, max_size=max_rank
    ).map(tuple)


@st.composite
def raw_tensor_bytes(draw: Any, dtype: torch.dtype, count: int) -> bytes:
    """``count`` elements of ``dtype`` as raw little-endian bytes.

    Three modes: uniformly random bytes (so random NaN payloads appear), a mix
    of random and special values, and a small pool of values repeated (so that
    zstd actually compresses and the compressed/shuffled paths run). Bool
    elements are always 0 or 1.
    """
    info = INFO_BY_TORCH[dtype]
    size = count * info.itemsize
    if size == 0:
        return b""
    width, specials = component_specials(dtype)
    ncomp = size // width
    mode = draw(st.sampled_from(["random", "special", "pool"]))
    if mode == "random":
        out = draw(st.binary(min_size=size, max_size=size))
    elif mode == "special":
        rnd = draw(st.binary(min_size=size, max_size=size))
        picks = draw(st.binary(min_size=ncomp, max_size=ncomp))
        parts = []
        for i, b in enumerate(picks):
            if b & 1:
                parts.append(specials[(b >> 1) % len(specials)])
            else:
                parts.append(rnd[i * width : (i + 1) * width])
        out = b"".join(parts)
    else:
        component = st.binary(min_size=width, max_size=width) | st.sampled_from(specials)
        pool = draw(st.lists(component, min_size=1, max_size=3))
        picks = draw(st.binary(min_size=ncomp, max_size=ncomp))
        out = b"".join(pool[b % len(pool)] for b in picks)
    if dtype == torch.bool:
        out = bytes(b & 1 for b in out)
    assert len(out) == size
    return out


def tensor_from_bytes(raw: bytes, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """A fresh, writable tensor holding exactly ``raw``."""
    if not raw:
        return torch.empty(shape, dtype=dtype)
    flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    return flat.view(dtype).reshape(shape)


@st.composite
def torch_tensors(
    draw: Any,
    dtypes_: list[torch.dtype] | None = None,
    shape_strategy: st.SearchStrategy | None = None,
) -> torch.Tensor:
    dtype = draw(st.sampled_from(dtypes_ or TORCH_DTYPES))
    shape = draw(shape_strategy if shape_strategy is not None else shapes())
    raw = draw(raw_tensor_bytes(dtype, numel(shape)))
    return tensor_from_bytes(raw, dtype, shape)


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


# ---------------------------------------------------------------- reference implementation


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


def oracle_decode(msg: pb.TensorMap) -> dict[str, tuple[torch.dtype, tuple[int, ...], bytes]]:
    """Decode a parsed TensorMap with the generated classes and zstandard only."""
    out = {}
    for t in msg.tensors:
        info = dtypes.BY_WIRE[t.dtype]
        data = bytes(t.data)
        if t.codec == pb.CODEC_ZSTD:
            data = decompress_all_frames(data)
        if t.filter == pb.FILTER_BYTE_SHUFFLE:
            data = ref_unshuffle(data, info.itemsize)
        assert len(data) == t.raw_size
        assert crc32c.crc32c(data) == t.crc32c
        out[t.name] = (info.torch_dtype, tuple(t.shape), data)
    return out


def summarize(decoded: dict[str, torch.Tensor]) -> dict[str, tuple[torch.dtype, tuple, bytes]]:
    return {k: (v.dtype, tuple(v.shape), tensor_bytes(v)) for k, v in decoded.items()}


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
    t = pb.Tensor(name=name, dtype=info.wire, shape=list(shape), raw_size=len(raw))
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


names = st.text(max_size=12)
metadata_dicts = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=5)
