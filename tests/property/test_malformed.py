"""Malformed input: the decoder raises SerializationException (or a subclass)
naming the problem, and nothing else: no IndexError, ValueError, struct or
zstd errors, no hang, no allocation sized by a hostile header."""

from __future__ import annotations

import functools
import time
import tracemalloc

import crc32c
import numpy as np
import pytest
import torch
import zstandard
from helpers import (
    ALL_INFOS,
    FIRST_UNKNOWN,
    T_CODEC,
    T_CRC,
    T_DATA,
    T_DTYPE,
    T_FILTER,
    T_NAME,
    T_RAW_SIZE,
    T_SHAPE,
    pb_tensor,
    summarize,
    tensor_bytes,
)
from hypothesis import given
from hypothesis import strategies as st
from strategies import torch_tensors

from flwire._protowire import I32, I64, LEN, VARINT, encode_varint, field_key
from flwire.exceptions import (
    ChecksumMismatchError,
    PayloadTooLargeError,
    SerializationException,
)
from flwire.tensors import DecodeLimits, decode_tensor_map, encode_tensor_map, read_tensor_map
from flwire.v1 import tensor_pb2 as pb

INFO = {i.name: i for i in ALL_INFOS}
U = FIRST_UNKNOWN  # a field number no message here uses


def _len(number: int, payload: bytes) -> bytes:
    return field_key(number, LEN) + encode_varint(len(payload)) + payload


def _varint(number: int, value: int) -> bytes:
    return field_key(number, VARINT) + encode_varint(value)


def _crc(value: int) -> bytes:
    return field_key(T_CRC, I32) + value.to_bytes(4, "little")


def _map(*tensors: pb.Tensor, **kw) -> bytes:
    return pb.TensorMap(tensors=list(tensors), **kw).SerializeToString()


def _tensor_map_bytes(body: bytes) -> bytes:
    return _len(1, body)


def decode_or_error(data, **kw):
    """Decode; return the SerializationException if one is raised (anything
    else propagates and fails the test)."""
    try:
        return decode_tensor_map(data, **kw)
    except SerializationException as exc:
        assert str(exc), "the message must say what went wrong"
        return exc


def expect_error(data, *words, cls=SerializationException, **kw) -> SerializationException:
    with pytest.raises(cls) as info:
        decode_tensor_map(data, **kw)
    message = str(info.value).lower()
    assert any(w.lower() in message for w in words), f"{words} not in {message!r}"
    return info.value


def peak_bytes_of(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


# ------------------------------------------------------------------------ valid encodings


def _sample_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return {
        "conv.weight": torch.randn(3, 4, generator=g),
        "zeros": torch.zeros(40, dtype=torch.float16),
        "steps": torch.tensor(12345, dtype=torch.int64),
        "mask": torch.tensor([True, False, True, True, False]),
        "empty": torch.empty(0, 3),
        "ünïcode": torch.arange(6, dtype=torch.int32).reshape(2, 3),
        "bytes": torch.randint(0, 256, (9,), dtype=torch.uint8, generator=g),
        "cplx": torch.randn(3, dtype=torch.complex64, generator=g),
    }


STATE = _sample_state()
VALID = {
    "raw": encode_tensor_map(STATE, compression="none", metadata={"round": "3", "": "é"}),
    "zstd": encode_tensor_map(STATE, compression="zstd", metadata={"k": "v"}),
    "zstd_shuffle": encode_tensor_map(STATE, compression="zstd", shuffle=True, level=5),
    "lz4": encode_tensor_map(STATE, compression="lz4", shuffle=True),
    "single": encode_tensor_map({"w": torch.arange(8, dtype=torch.float32)}, compression="none"),
}


@functools.lru_cache(maxsize=64)
def _data_regions(data: bytes) -> list[tuple[int, int, bool]]:
    """(start, end, compressed) of each tensor's data payload inside ``data``."""
    base = np.frombuffer(data, np.uint8).ctypes.data
    regions = []
    for rec in read_tensor_map(data).records:
        if len(rec.data):
            start = np.frombuffer(rec.data, np.uint8).ctypes.data - base
            regions.append((start, start + len(rec.data), rec.codec != 0))
    return regions


def _is_subsequence(items: list, of: list) -> bool:
    it = iter(of)
    return all(any(x == y for y in it) for x in items)


@functools.lru_cache(maxsize=64)
def _original_payloads(original: bytes) -> list[bytes]:
    return [tensor_bytes(t) for t in decode_tensor_map(original).values()]


def check_mutant(original: bytes, mutant: bytes, positions: set[int]) -> None:
    """The contract for a corrupted encoding (checksums on):

    * only SerializationException may be raised;
    * a change inside an uncompressed tensor's bytes is always caught by the
      CRC-32C (it detects every burst of up to 32 bits);
    * if decoding succeeds, no tensor came back with bytes that differ from the
      original's: the decoded payloads are the original payloads, in order,
      possibly with some dropped (a flipped field number can turn a tensor into
      an unknown field) and relabelled (the CRC covers data, not names/dtypes).
    """
    result = decode_or_error(mutant)
    regions = _data_regions(original)
    in_raw_data = any(s <= p < e for p in positions for s, e, c in regions if not c)
    if in_raw_data:
        assert isinstance(result, ChecksumMismatchError), result
        assert "crc" in str(result).lower()
        return
    if isinstance(result, SerializationException):
        return
    expected = _original_payloads(original)
    got = [tensor_bytes(t) for t in result.values()]
    assert _is_subsequence(got, expected), "corruption decoded to different data"


# ------------------------------------------------------------------------ random inputs


@given(data=st.binary(max_size=400))
def test_random_bytes_raise_only_serialization_errors(data):
    result = decode_or_error(data)
    if not isinstance(result, SerializationException):
        assert isinstance(result, dict)


_keys = st.builds(
    lambda n, w: encode_varint((n << 3) | w),
    st.integers(0, 12),
    st.sampled_from([VARINT, I64, LEN, 3, 4, I32, 6, 7]),
)


@st.composite
def fuzz_fields(draw, depth=0):
    """Fields with plausible numbers and wire types and random payloads, nested
    once so that the Tensor-level checks are reached."""
    parts = []
    for _ in range(draw(st.integers(0, 8))):
        number = draw(st.integers(0, 10))
        wire = draw(st.sampled_from([VARINT, VARINT, LEN, LEN, I32, I64, 3, 4, 7]))
        key = encode_varint((number << 3) | wire)
        if wire == VARINT:
            value = draw(st.integers(0, 40) | st.integers(0, (1 << 64) - 1))
            parts.append(key + encode_varint(value))
        elif wire == LEN:
            if depth == 0 and draw(st.booleans()):
                payload = draw(fuzz_fields(depth=1))
            else:
                payload = draw(st.binary(max_size=40))
            size = len(payload) + draw(st.sampled_from([0, 0, 0, -1, 1, 1 << 40]))
            parts.append(key + encode_varint(max(size, 0)) + payload)
        elif wire == I32:
            parts.append(key + draw(st.binary(min_size=4, max_size=4)))
        elif wire == I64:
            parts.append(key + draw(st.binary(min_size=8, max_size=8)))
        else:
            parts.append(key + draw(st.binary(max_size=4)))
    return b"".join(parts)


@given(data=fuzz_fields(), verify=st.booleans(), as_numpy=st.booleans())
def test_structured_garbage_raises_only_serialization_errors(data, verify, as_numpy):
    decode_or_error(data, verify_checksum=verify, as_numpy=as_numpy)
    try:
        read_tensor_map(data)
    except SerializationException:
        pass


# --------------------------------------------------------------- truncation and corruption


@pytest.mark.parametrize("which", sorted(VALID))
def test_every_truncation_is_rejected_or_a_valid_prefix(which):
    data = VALID[which]
    full = summarize(decode_tensor_map(data))
    full_items = list(full.items())
    for cut in range(len(data)):
        result = decode_or_error(data[:cut])
        if isinstance(result, SerializationException):
            assert "truncated" in str(result), (cut, str(result))
        else:
            # Cut exactly between two top-level fields: a shorter, valid map.
            got = list(summarize(result).items())
            assert got == full_items[: len(got)], cut


@pytest.mark.parametrize("which", ["single", "raw"])
def test_every_single_bit_flip_is_caught_or_harmless(which):
    data = VALID[which]
    step = 1 if which == "single" else 3  # every byte of the small one
    for pos in range(0, len(data), step):
        for bit in range(8):
            mutant = bytearray(data)
            mutant[pos] ^= 1 << bit
            check_mutant(data, bytes(mutant), {pos})


@given(
    which=st.sampled_from(sorted(VALID)),
    pos=st.integers(min_value=0),
    bit=st.integers(0, 7),
)
def test_random_bit_flips_are_caught_or_harmless(which, pos, bit):
    data = VALID[which]
    pos %= len(data)
    mutant = bytearray(data)
    mutant[pos] ^= 1 << bit
    check_mutant(data, bytes(mutant), {pos})


@given(
    which=st.sampled_from(sorted(VALID)),
    pos=st.integers(min_value=0),
    value=st.integers(0, 255),
)
def test_random_byte_overwrites_are_caught_or_harmless(which, pos, value):
    data = VALID[which]
    pos %= len(data)
    mutant = bytearray(data)
    if mutant[pos] == value:
        value ^= 0xFF
    mutant[pos] = value
    check_mutant(data, bytes(mutant), {pos})


@given(
    tensors=st.dictionaries(st.text(max_size=4), torch_tensors(), min_size=1, max_size=3),
    compression=st.sampled_from(["zstd", "lz4", "none"]),
    shuffle=st.booleans(),
    pos=st.integers(min_value=0),
    bit=st.integers(0, 7),
)
def test_bit_flips_in_random_maps_are_caught_or_harmless(tensors, compression, shuffle, pos, bit):
    data = encode_tensor_map(tensors, compression=compression, shuffle=shuffle)
    if not data:
        return
    pos %= len(data)
    mutant = bytearray(data)
    mutant[pos] ^= 1 << bit
    check_mutant(data, bytes(mutant), {pos})


@given(
    which=st.sampled_from(sorted(VALID)),
    start=st.integers(min_value=0),
    junk=st.binary(min_size=1, max_size=16),
    verify=st.booleans(),
)
def test_overwritten_ranges_raise_only_serialization_errors(which, start, junk, verify):
    data = bytearray(VALID[which])
    start %= len(data)
    data[start : start + len(junk)] = junk
    decode_or_error(bytes(data), verify_checksum=verify)


def test_flip_in_each_tensors_data_is_a_checksum_error():
    data = VALID["raw"]
    regions = _data_regions(data)
    assert len(regions) == sum(1 for t in STATE.values() if t.numel())
    for start, end, compressed in regions:
        assert not compressed
        for pos in (start, (start + end) // 2, end - 1):
            mutant = bytearray(data)
            mutant[pos] ^= 0x10
            err = expect_error(bytes(mutant), "CRC", "checksum", cls=ChecksumMismatchError)
            assert isinstance(err, SerializationException)
            # Without verification the corruption goes through, as documented
            # (a bool tensor still refuses bytes other than 0 and 1).
            result = decode_or_error(bytes(mutant), verify_checksum=False)
            if isinstance(result, SerializationException):
                assert "bool" in str(result)


def test_flip_in_compressed_data_never_yields_wrong_values():
    data = VALID["zstd_shuffle"]
    regions = [r for r in _data_regions(data) if r[2]]
    assert regions, "the sample must hold compressed tensors"
    for start, end, _ in regions:
        for pos in range(start, end):
            mutant = bytearray(data)
            mutant[pos] ^= 0x04
            check_mutant(data, bytes(mutant), {pos})


# ------------------------------------------------------------------------- hostile sizes


@pytest.mark.parametrize(
    ("shape", "dtype", "raw_size"),
    [
        ((1 << 38,), "float32", 1 << 40),
        ((1 << 61,), "float32", 1 << 63),
        ((1 << 60,), "float64", 1 << 63),
        ((1 << 20, 1 << 20, 1 << 21), "float32", 1 << 63),
        ((1 << 20, 1 << 20, 1 << 23), "uint8", 1 << 63),  # 2**63 elements: no int64 numel
        ((1 << 62,), "complex32", (1 << 64) - 1),  # 2**64 bytes does not fit: mismatch
    ],
)
@pytest.mark.parametrize("codec", [0, 1])
def test_huge_declared_sizes_are_refused_before_allocating(shape, dtype, raw_size, codec):
    t = pb.Tensor(
        name="x",
        dtype=pb.Dtype.ValueType(INFO[dtype].wire),
        shape=shape,
        raw_size=raw_size,
        codec=codec,
    )
    t.data = b"\x28\xb5\x2f\xfd" if codec else b"tiny"
    data = _map(t)
    assert len(data) < 64

    def run():
        with pytest.raises(SerializationException) as info:
            decode_tensor_map(data)
        numel = math_prod(shape)
        if numel >= 1 << 63:  # not even representable: any clear refusal will do
            return
        if numel * INFO[dtype].itemsize == raw_size:
            assert isinstance(info.value, PayloadTooLargeError)
            assert "limit" in str(info.value)
        else:
            assert "raw_size" in str(info.value)

    assert peak_bytes_of(run) < 1 << 20


def math_prod(shape):
    out = 1
    for d in shape:
        out *= d
    return out


def _zstd_frame_declaring(content_size: int) -> bytes:
    """A zstd frame header with an 8-byte content size (single segment), then as
    many empty compressed blocks as could hold that much (a block regenerates up
    to 128 KiB, and the walker refuses a frame whose blocks cannot hold its
    declared size): only the size limits stand between it and an allocation."""
    blocks = max(1, -(-content_size // (1 << 17)))
    compressed, last = 2 << 1, 1
    header = b"\x28\xb5\x2f\xfd" + b"\xe0" + content_size.to_bytes(8, "little")
    return (
        header
        + compressed.to_bytes(3, "little") * (blocks - 1)
        + (compressed | last).to_bytes(3, "little")
    )


def test_zstd_frame_declaring_a_huge_content_size_is_refused():
    # A frame header with an 8-byte content size of 2**40 (single segment).
    frame = b"\x28\xb5\x2f\xfd" + b"\xe0" + (1 << 40).to_bytes(8, "little") + b"\x01\x00\x00"
    assert zstandard.frame_content_size(frame) == 1 << 40
    t = pb.Tensor(
        name="bomb", dtype=pb.DTYPE_UINT8, shape=[1 << 40], raw_size=1 << 40, codec=pb.CODEC_ZSTD
    )
    t.data = frame
    data = _map(t)
    assert peak_bytes_of(lambda: expect_error(data, "limit", cls=PayloadTooLargeError)) < 1 << 20
    # Even with a generous limit per tensor, the total limit still applies (to a
    # frame whose blocks could hold what it declares).
    frame = _zstd_frame_declaring(1 << 31)
    assert zstandard.frame_content_size(frame) == 1 << 31
    t = pb.Tensor(
        name="bomb", dtype=pb.DTYPE_UINT8, shape=[1 << 31], raw_size=1 << 31, codec=pb.CODEC_ZSTD
    )
    t.data = frame
    data = _map(t)
    limits = DecodeLimits(max_tensor_bytes=1 << 41, max_total_bytes=1 << 30)
    assert (
        peak_bytes_of(lambda: expect_error(data, "limit", cls=PayloadTooLargeError, limits=limits))
        < 1 << 20
    )


def test_many_tensors_whose_sum_is_too_large():
    frame = _zstd_frame_declaring(3 << 30)
    assert zstandard.frame_content_size(frame) == 3 << 30
    tensors = [
        pb.Tensor(name=str(i), dtype=pb.DTYPE_UINT8, shape=[3 << 30], raw_size=3 << 30)
        for i in range(2)
    ]
    for t in tensors:
        t.codec, t.data = pb.CODEC_ZSTD, frame
    data = _map(*tensors)
    peak = peak_bytes_of(lambda: expect_error(data, "limit", cls=PayloadTooLargeError))
    assert peak < 1 << 20


@pytest.mark.parametrize(
    ("shape", "raw_size"),
    [((2, 3), 20), ((2, 3), 28), ((), 0), ((0,), 4), ((5,), 0), ((2, 2), 1 << 62)],
)
def test_shape_and_raw_size_mismatch(shape, raw_size):
    t = pb.Tensor(name="x", dtype=pb.DTYPE_FLOAT32, shape=shape, raw_size=raw_size)
    t.data = b"\0" * min(raw_size, 32)
    expect_error(_map(t), "raw_size")


@pytest.mark.parametrize("dims", [[-1], [2, -3], [-(1 << 63)], [4, -1, -1]])
def test_negative_dimensions(dims):
    t = pb.Tensor(name="x", dtype=pb.DTYPE_FLOAT32, shape=dims, raw_size=0)
    expect_error(_map(t), "negative")


def test_raw_size_disagrees_with_stored_bytes():
    raw = bytes(16)
    t = pb.Tensor(name="x", dtype=pb.DTYPE_UINT8, shape=[16], raw_size=16)
    t.crc32c = crc32c.crc32c(raw)
    for data in (raw[:15], raw + b"\0", b""):
        t.data = data
        expect_error(_map(t), "raw_size")


@pytest.mark.parametrize(
    "shape",
    [(0, 1 << 62), (0, 1 << 62, 1 << 62), (1 << 40, 0, 1 << 40), (0, (1 << 63) - 1)],
    ids=["0xhuge", "0xhugexhuge", "hugex0xhuge", "0xmax"],
)
@pytest.mark.parametrize("as_numpy", [False, True], ids=["torch", "numpy"])
def test_empty_tensor_with_huge_dims_is_decoded_or_refused_cleanly(shape, as_numpy):
    """raw_size 0 passes the size checks; building the empty tensor must not
    leak a RuntimeError/ValueError from torch or numpy."""
    t = pb.Tensor(name="x", dtype=pb.DTYPE_FLOAT32, shape=shape, raw_size=0)
    result = decode_or_error(_map(t), as_numpy=as_numpy)
    if not isinstance(result, SerializationException):
        assert tuple(result["x"].shape) == shape


# ------------------------------------------------------------------------ unknown values


@pytest.mark.parametrize("dtype", [0, 22, 99, (1 << 31) - 1, (1 << 64) - 1])
def test_unknown_or_unspecified_dtype(dtype):
    body = _len(T_NAME, b"x") + _varint(T_DTYPE, dtype)
    err = expect_error(_tensor_map_bytes(body), "dtype")
    assert "unknown" in str(err)


def test_missing_dtype_is_refused():
    expect_error(_tensor_map_bytes(_len(T_NAME, b"x")), "dtype")


# The first Codec value the schema does not define (2 is CODEC_LZ4 since it was added).
NEXT_CODEC = max(v.number for v in pb.Codec.DESCRIPTOR.values) + 1


@pytest.mark.parametrize("codec", [NEXT_CODEC, NEXT_CODEC + 1, 1000, (1 << 64) - 1])
def test_unknown_codec(codec):
    raw = b"\x01\x02"
    body = (
        _varint(T_DTYPE, INFO["uint8"].wire)
        + _varint(T_SHAPE, 2)
        + _varint(T_CODEC, codec)
        + _varint(T_RAW_SIZE, 2)
        + _crc(crc32c.crc32c(raw))
        + _len(T_DATA, raw)
    )
    expect_error(_tensor_map_bytes(body), "codec")


@pytest.mark.parametrize("filt", [2, 9, (1 << 64) - 1])
def test_unknown_filter(filt):
    raw = b"\x01\x02"
    body = (
        _varint(T_DTYPE, INFO["uint8"].wire)
        + _varint(T_SHAPE, 2)
        + _varint(T_FILTER, filt)
        + _varint(T_RAW_SIZE, 2)
        + _crc(crc32c.crc32c(raw))
        + _len(T_DATA, raw)
    )
    expect_error(_tensor_map_bytes(body), "filter")


# --------------------------------------------------------------------------- zstd payloads


def _zstd_tensor(raw: bytes, frame: bytes, raw_size: int | None = None) -> bytes:
    size = len(raw) if raw_size is None else raw_size
    t = pb.Tensor(name="z", dtype=pb.DTYPE_UINT8, shape=[size], raw_size=size, codec=pb.CODEC_ZSTD)
    t.crc32c = crc32c.crc32c(raw)
    t.data = frame
    return _map(t)


RAW = bytes(range(50)) * 20


def test_zstd_frame_without_content_size():
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(RAW)
    assert zstandard.frame_content_size(frame) == -1
    expect_error(_zstd_tensor(RAW, frame), "content size")


@pytest.mark.parametrize("raw_size", [0, 999, 1001, 1 << 20])
def test_zstd_content_size_disagrees_with_raw_size(raw_size):
    frame = zstandard.ZstdCompressor().compress(RAW)
    expect_error(_zstd_tensor(RAW, frame, raw_size), "raw_size", "zstd")


def _with_content_size(frame: bytes, size: int) -> bytes:
    """Rewrite the 2-byte content size field of a small single-segment frame."""
    fhd = frame[4]
    assert fhd & 0xC0 == 0x40 and fhd & 0x20, "expected a 2-byte FCS, single segment"
    return frame[:5] + (size - 256).to_bytes(2, "little") + frame[7:]


@pytest.mark.parametrize("declared", [999, 1001, 1500])
def test_zstd_header_lying_about_content_size(declared):
    frame = _with_content_size(zstandard.ZstdCompressor().compress(RAW), declared)
    assert zstandard.frame_content_size(frame) == declared
    for verify in (True, False):
        expect_error(_zstd_tensor(RAW, frame, declared), "zstd", verify_checksum=verify)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda f: f[:-1],
        lambda f: f[:-5],
        lambda f: f[:9],
        lambda f: f + b"trailing",
        lambda f: f + f,
        lambda f: f[:7] + bytes(b ^ 0xFF for b in f[7:]),
        lambda f: f[:7] + b"\xff" * (len(f) - 7),
        lambda f: b"\x00" + f[1:],
        lambda f: b"",
    ],
    ids=[
        "cut1",
        "cut5",
        "header_only",
        "trailing",
        "two_frames",
        "inverted",
        "ff",
        "bad_magic",
        "empty",
    ],
)
@pytest.mark.parametrize("verify", [True, False])
def test_corrupted_zstd_payload(mangle, verify):
    frame = mangle(zstandard.ZstdCompressor(level=3).compress(RAW))
    result = decode_or_error(_zstd_tensor(RAW, frame), verify_checksum=verify)
    assert isinstance(result, SerializationException), "a corrupt frame must not decode"


@pytest.mark.parametrize("shuffle", [False, True])
def test_zstd_corruption_caught_by_crc_when_frame_is_still_valid(shuffle):
    other = bytes(reversed(RAW))
    info = INFO["uint16"]
    t = pb_tensor("z", info, (500,), other, zstd_level=3, shuffle=shuffle)
    t.crc32c = crc32c.crc32c(RAW)  # the sender's bytes were RAW
    expect_error(_map(t), "CRC", cls=ChecksumMismatchError)
    out = decode_tensor_map(_map(t), verify_checksum=False)
    assert tensor_bytes(out["z"]) == other


def _with_dictionary_id(frame: bytes, dict_id: int) -> bytes:
    """Set a 1-byte Dictionary_ID in a single-segment frame header."""
    fhd = frame[4]
    assert fhd & 0x20 and fhd & 0x03 == 0, "expected single segment, no dictionary id"
    return frame[:4] + bytes([fhd | 0x01, dict_id]) + frame[5:]


def test_zstd_frame_that_needs_a_dictionary_is_refused():
    frame = _with_dictionary_id(zstandard.ZstdCompressor(level=3).compress(RAW), 7)
    assert zstandard.get_frame_parameters(frame).dict_id == 7
    assert zstandard.frame_content_size(frame) == len(RAW)
    for verify in (True, False):
        result = decode_or_error(_zstd_tensor(RAW, frame), verify_checksum=verify)
        assert isinstance(result, SerializationException)


@pytest.mark.parametrize("crc", [1, 0xFFFFFFFF])
def test_empty_tensor_with_a_nonzero_crc_is_refused(crc):
    """docs/wire-format.md section 10, check 8: the CRC-32C of no bytes is 0."""
    t = pb.Tensor(name="e", dtype=pb.DTYPE_FLOAT32, shape=[0, 3], crc32c=crc)
    expect_error(_map(t), "crc")
    expect_error(_map(t), "crc", verify_checksum=False)


@pytest.mark.parametrize("codec", [None, 3])
@pytest.mark.parametrize("verify", [True, False])
def test_bool_tensor_holding_other_bytes(codec, verify):
    raw = b"\x00\x01\x02\x01" * 8
    t = pb_tensor("flags", INFO["bool"], (32,), raw, zstd_level=codec)
    expect_error(_map(t), "bool", verify_checksum=verify)


# ---------------------------------------------------------------------- structural errors


def _uint8_tensor(name: bytes, raw: bytes = b"\x07") -> bytes:
    return (
        _len(T_NAME, name)
        + _varint(T_DTYPE, INFO["uint8"].wire)
        + _varint(T_SHAPE, len(raw))
        + _varint(T_RAW_SIZE, len(raw))
        + _crc(crc32c.crc32c(raw))
        + _len(T_DATA, raw)
    )


def test_duplicate_tensor_names():
    data = _tensor_map_bytes(_uint8_tensor(b"a")) + _tensor_map_bytes(_uint8_tensor(b"a", b"12"))
    expect_error(data, "same name", "duplicate")
    with pytest.raises(SerializationException):
        read_tensor_map(data)


@pytest.mark.parametrize(
    "bad", [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"ok\xe2\x82", b"\xf8\x88\x80\x80\x80"]
)
def test_invalid_utf8(bad):
    expect_error(_tensor_map_bytes(_uint8_tensor(bad)), "UTF-8")
    entry_key = _len(2, _len(1, bad) + _len(2, b"v"))
    expect_error(entry_key, "UTF-8")
    entry_value = _len(2, _len(1, b"k") + _len(2, bad))
    expect_error(entry_value, "UTF-8")


KNOWN_WIRE_TYPES = {
    T_NAME: LEN,
    T_DTYPE: VARINT,
    T_CODEC: VARINT,
    T_FILTER: VARINT,
    T_RAW_SIZE: VARINT,
    T_CRC: I32,
    T_DATA: LEN,
}
_PAYLOAD = {VARINT: encode_varint(1), I64: bytes(8), LEN: b"\x01\x00", I32: bytes(4)}


@pytest.mark.parametrize(
    ("number", "wire"),
    [(n, w) for n, right in KNOWN_WIRE_TYPES.items() for w in _PAYLOAD if w != right]
    + [(T_SHAPE, I32), (T_SHAPE, I64)],
)
def test_wrong_wire_type_for_known_tensor_field(number, wire):
    body = _uint8_tensor(b"t") + field_key(number, wire) + _PAYLOAD[wire]
    expect_error(_tensor_map_bytes(body), "wire type")


@pytest.mark.parametrize(
    "data",
    [
        field_key(1, VARINT) + b"\x01",
        field_key(1, I32) + bytes(4),
        field_key(1, I64) + bytes(8),
        field_key(2, VARINT) + b"\x01",
        field_key(2, I32) + bytes(4),
        _len(2, field_key(1, VARINT) + b"\x01"),
        _len(2, field_key(2, I64) + bytes(8)),
    ],
    ids=["tensors_varint", "tensors_i32", "tensors_i64", "meta_varint", "meta_i32", "key", "val"],
)
def test_wrong_wire_type_for_known_map_field(data):
    expect_error(data, "wire type")


@pytest.mark.parametrize(
    "data",
    [
        b"\x80" * 10 + b"\x01",  # an 11-byte key
        b"\x0a" + b"\xff" * 10 + b"\x01",  # an 11-byte length
        _tensor_map_bytes(field_key(T_DTYPE, VARINT) + b"\x81" * 11 + b"\x00"),
        _tensor_map_bytes(_len(T_SHAPE, b"\x80" * 12 + b"\x01")),
    ],
    ids=["key", "length", "dtype_value", "packed_shape"],
)
def test_varints_longer_than_ten_bytes(data):
    expect_error(data, "longer than 10 bytes")


@pytest.mark.parametrize(
    "data",
    [
        b"\x0a\x05ab",  # tensor length past the end
        b"\x0a" + encode_varint(1 << 62) + b"x",
        _tensor_map_bytes(_len(T_NAME, b"abc")[:-1]),  # field past its message's end
        _tensor_map_bytes(field_key(T_DATA, LEN) + encode_varint(1 << 40)),
        _tensor_map_bytes(_crc(0)[:3]),
        _tensor_map_bytes(field_key(U, I64) + bytes(3)),
        b"\x0a",  # key without its length
        b"\x08",  # varint key without its value
        b"\x12\x03\x0a\x09ab",  # metadata key past the entry end
    ],
)
def test_lengths_past_the_end(data):
    expect_error(data, "truncated", "remain")


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\x00\x01", ("field number 0",)),
        (_tensor_map_bytes(b"\x00"), ("field number 0",)),
        (b"\x0e", ("wire type",)),  # wire type 6
        (b"\x0f", ("wire type",)),  # wire type 7
        (b"\x0c", ("wire type",)),  # end-group with no start
        (field_key(U, 3), ("unterminated", "group")),
        (field_key(U, 3) + field_key(U + 1, 4), ("mismatched", "group")),
        (field_key(U, 3) * 100_000, ("nested", "group")),
        (field_key(U, 3) + field_key(3, LEN) + b"\x7f", ("truncated", "group")),
        (field_key(U, 3) + b"\x0f", ("wire type", "group")),
    ],
)
def test_bad_keys_and_groups(data, words):
    expect_error(data, *words)


def test_unknown_groups_and_fields_are_skipped():
    unknown = (
        field_key(U, 3)
        + _varint(1, 5)
        + _len(2, b"ab")
        + field_key(3, 3)
        + field_key(3, 4)
        + field_key(4, I32)
        + bytes(4)
        + field_key(5, I64)
        + bytes(8)
        + field_key(U, 4)
    )
    inner = _uint8_tensor(b"t", b"\x05\x06") + unknown
    data = unknown + _tensor_map_bytes(inner) + _varint(15, 1)
    assert pb.TensorMap.FromString(data).tensors[0].name == "t"
    out = decode_tensor_map(data)
    assert out["t"].tolist() == [5, 6]


def test_adversarial_inputs_finish_quickly():
    cases = [
        _varint(U, 1) * 100_000,  # many unknown fields
        field_key(U, 3) * 200_000,  # very deep groups
        (field_key(U, 3) + field_key(U, 4)) * 50_000,  # many empty groups
        _tensor_map_bytes(_len(T_SHAPE, b"\x01" * 50_000)),  # rank 50 000
        b"\x0a\x00" * 50_000,  # many empty tensors (unspecified dtype)
    ]
    for data in cases:
        start = time.monotonic()
        decode_or_error(data)
        assert time.monotonic() - start < 10


# ------------------------------------------------------------------------- input types


@pytest.mark.parametrize("func", [decode_tensor_map, read_tensor_map])
def test_str_input_is_refused_with_a_hint(func):
    with pytest.raises(SerializationException) as info:
        func(VALID["single"].decode("latin-1"))
    assert "bytes" in str(info.value)
    with pytest.raises(SerializationException, match="bytes"):
        func("")


@pytest.mark.parametrize(
    "obj",
    [None, 5, 3.5, [1, 2], {"a": 1}, object(), torch.zeros(3), (b"\x0a\x00",), {b"x"}],
    ids=["None", "int", "float", "list", "dict", "object", "tensor", "tuple", "set"],
)
def test_non_bytes_objects_are_refused(obj):
    with pytest.raises(SerializationException, match="bytes"):
        decode_tensor_map(obj)


# ------------------------------------------------------------------------------ limits


def _map_of(n: int, size: int, rank: int = 1) -> bytes:
    shape = (size,) + (1,) * (rank - 1)
    return encode_tensor_map(
        {f"t{i}": torch.ones(shape, dtype=torch.uint8) for i in range(n)}, compression="none"
    )


def test_max_tensor_bytes():
    data = _map_of(2, 100)
    assert len(decode_tensor_map(data, limits=DecodeLimits(max_tensor_bytes=100))) == 2
    for func in (
        lambda d, lim: decode_tensor_map(d, limits=lim),
        lambda d, lim: read_tensor_map(d, limits=lim),
    ):
        with pytest.raises(PayloadTooLargeError, match="limit"):
            func(data, DecodeLimits(max_tensor_bytes=99))


def test_max_total_bytes():
    data = _map_of(3, 100)
    assert len(decode_tensor_map(data, limits=DecodeLimits(max_total_bytes=300))) == 3
    with pytest.raises(PayloadTooLargeError, match="299"):
        decode_tensor_map(data, limits=DecodeLimits(max_total_bytes=299))
    with pytest.raises(PayloadTooLargeError):
        read_tensor_map(data, limits=DecodeLimits(max_total_bytes=299))


def test_max_tensors():
    data = _map_of(5, 1)
    assert len(decode_tensor_map(data, limits=DecodeLimits(max_tensors=5))) == 5
    with pytest.raises(PayloadTooLargeError, match="tensors"):
        decode_tensor_map(data, limits=DecodeLimits(max_tensors=4))
    with pytest.raises(PayloadTooLargeError):
        read_tensor_map(data, limits=DecodeLimits(max_tensors=0))
    # An empty map is fine under any limit.
    assert decode_tensor_map(b"", limits=DecodeLimits(max_tensors=0)) == {}


def test_max_rank():
    data = _map_of(1, 2, rank=6)
    assert decode_tensor_map(data, limits=DecodeLimits(max_rank=6))["t0"].dim() == 6
    with pytest.raises(SerializationException, match="rank"):
        decode_tensor_map(data, limits=DecodeLimits(max_rank=5))
    # The default caps rank at 64: a rank-65 shape of ones is refused.
    body = _varint(T_DTYPE, INFO["uint8"].wire) + _len(T_SHAPE, b"\x01" * 65)
    body += _varint(T_RAW_SIZE, 1) + _crc(crc32c.crc32c(b"\x00")) + _len(T_DATA, b"\x00")
    expect_error(_tensor_map_bytes(body), "rank")


def test_default_limits_are_generous_but_finite():
    limits = DecodeLimits()
    assert limits.max_tensor_bytes == 4 << 30
    assert limits.max_total_bytes == 4 << 30
    assert limits.max_tensors >= 1000
    assert limits.max_rank >= 8
