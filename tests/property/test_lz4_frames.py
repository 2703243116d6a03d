"""Tensors stored as LZ4 frames (wire format, section 7, ``CODEC_LZ4``).

Writers cut a tensor's filtered bytes into frames of 512 KiB, each recording
its content size; readers accept any frames within the rules, from any writer
(other block sizes, linked blocks, checksums, stored blocks), and refuse frame
sequences that break them before allocating anything.

The frames are checked against ``tests/vectors/lz4_reference.py``, a
pure-Python walker, decoder and builder of LZ4 frames written from the frame
and block format descriptions, independent of liblz4 and of flwire's codec.
Needs numpy only (no torch).
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import crc32c
import lz4.frame
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flwire import EncodeOptions, decode_tensor_map, encode_tensor_map, read_tensor_map
from flwire.exceptions import SerializationException
from flwire.tensors.codecs import FRAME_BYTES, LZ4, MIN_FRAME_BYTES
from flwire.v1 import tensor_pb2 as pb

_REFERENCE = Path(__file__).resolve().parents[1] / "vectors" / "lz4_reference.py"


def _load_reference() -> Any:
    spec = importlib.util.spec_from_file_location("flwire_lz4_reference", _REFERENCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


ref = _load_reference()


DTYPES = [np.float32, np.float16, np.float64, np.int8, np.int32]


def _values(dtype: Any, count: int, seed: int) -> np.ndarray:
    """Values LZ4 can shrink (runs of 16 equal values), so the tensor is compressed."""
    rng = np.random.default_rng(seed)
    runs = np.repeat(rng.integers(-8, 8, count // 16 + 1), 16)[:count]
    return (runs * (0.125 if np.dtype(dtype).kind == "f" else 1)).astype(dtype)


def _shuffled(raw: bytes, itemsize: int) -> bytes:
    """Byte shuffle as section 6 defines it (numpy, not flwire's implementation)."""
    return np.frombuffer(raw, np.uint8).reshape(-1, itemsize).T.tobytes()


def _cuts(nbytes: int, step: int) -> list[int]:
    sizes = [step] * (nbytes // step)
    return sizes + ([nbytes % step] if nbytes % step else [])


def _stored(blob: bytes) -> pb.Tensor:
    (t,) = pb.TensorMap.FromString(blob).tensors
    return t


# ----------------------------------------------------------------------------- writers


def test_the_frame_sizes_are_the_specs():
    # docs/wire-format.md section 7, restated so that a change to the library's shows.
    assert (FRAME_BYTES, MIN_FRAME_BYTES) == (524_288, 65_536)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dtype=st.sampled_from(DTYPES),
    frames=st.integers(1, 3),
    extra=st.integers(-2, 2),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_writers_cut_lz4_frames_of_512_kib(dtype, frames, extra, shuffle, seed):
    itemsize = np.dtype(dtype).itemsize
    count = (frames * FRAME_BYTES) // itemsize + extra
    a = _values(dtype, count, seed)
    raw = a.tobytes()
    blob = encode_tensor_map({"w": a}, compression="lz4", shuffle=shuffle)
    t = _stored(blob)
    assert t.codec == pb.CODEC_LZ4
    assert t.filter == (pb.FILTER_BYTE_SHUFFLE if shuffle and itemsize > 1 else 0)
    walked = ref.split_frames(t.data)  # every frame well formed, nothing after the last
    assert [f.content_size for f in walked] == _cuts(len(raw), FRAME_BYTES)
    for f in walked:
        assert f.dict_id is None and f.header_checksum_ok
        assert not f.has_block_checksum and not f.has_content_checksum  # flwire writes none
        assert f.block_max <= 1 << 20 and len(f.blocks) == 1  # one block per 512 KiB frame
    filtered = _shuffled(raw, itemsize) if shuffle and itemsize > 1 else raw
    assert b"".join(ref.decompress_frame(f) for f in walked) == filtered
    # flwire's reader finds the same frames.
    offsets = list(itertools.accumulate([0] + [f.content_size for f in walked]))
    assert [
        (g.start, g.end, g.offset, g.size) for g in read_tensor_map(blob).records[0].frames
    ] == [(f.start, f.end, off, f.content_size) for f, off in zip(walked, offsets, strict=False)]
    assert decode_tensor_map(blob, as_numpy=True)["w"].tobytes() == raw


def test_the_lz4_encoding_does_not_depend_on_the_number_of_threads():
    state = {"a": _values(np.float32, 3 * FRAME_BYTES // 4 + 3, 1), "b": _values(np.int8, 99, 2)}
    for shuffle in (False, True):
        one = encode_tensor_map(state, EncodeOptions(compression="lz4", shuffle=shuffle, threads=1))
        for threads in (2, 5):
            options = EncodeOptions(compression="lz4", shuffle=shuffle, threads=threads)
            assert encode_tensor_map(state, options) == one


def test_lz4_is_kept_raw_when_it_does_not_shrink_the_tensor():
    noise = np.random.default_rng(3).integers(0, 256, 4096).astype(np.uint8)
    t = _stored(encode_tensor_map({"n": noise}, compression="lz4"))
    assert (t.codec, t.filter, t.data) == (0, 0, noise.tobytes())


def test_lz4_levels_all_give_valid_frames():
    a = _values(np.float32, 40_000, 4)
    for level in (-8, 0, 3, 9, 12):
        blob = encode_tensor_map({"w": a}, compression="lz4", level=level)
        t = _stored(blob)
        assert t.codec == pb.CODEC_LZ4
        assert ref.decompress_all(t.data) == a.tobytes()
        assert decode_tensor_map(blob, as_numpy=True)["w"].tobytes() == a.tobytes()


# ----------------------------------------------------------------------------- readers


def _map_with(data: bytes, raw: bytes) -> bytes:
    t = pb.Tensor(name="z", dtype=pb.DTYPE_UINT8, shape=[len(raw)], raw_size=len(raw))
    t.codec = pb.CODEC_LZ4
    t.crc32c = crc32c.crc32c(raw)
    t.data = data
    return pb.TensorMap(tensors=[t]).SerializeToString()


def _decoded(blob: bytes) -> bytes:
    return bytes(decode_tensor_map(blob, as_numpy=True)["z"].tobytes())


RAW = (np.arange(300_000, dtype=np.uint32) % 7).astype(np.uint8).tobytes()


def _lz4(content: bytes, **options: Any) -> bytes:
    """A frame of ``content`` as liblz4 writes it, with its content size."""
    return bytes(lz4.frame.compress(content, store_size=True, **options))


WRITER_OPTIONS = st.fixed_dictionaries(
    {
        "block_size": st.sampled_from(
            [
                lz4.frame.BLOCKSIZE_MAX64KB,
                lz4.frame.BLOCKSIZE_MAX256KB,
                lz4.frame.BLOCKSIZE_MAX1MB,
                lz4.frame.BLOCKSIZE_MAX4MB,
            ]
        ),
        "block_linked": st.booleans(),
        "content_checksum": st.booleans(),
        "block_checksum": st.booleans(),
        "compression_level": st.sampled_from([-4, 0, 3, 9]),
    }
)


@settings(max_examples=15, deadline=None)
@given(
    frame_bytes=st.sampled_from([MIN_FRAME_BYTES, 100_003, 300_000, 1 << 20]),
    nbytes=st.integers(1, 700_000),
    options=WRITER_OPTIONS,
)
def test_readers_accept_liblz4_frames_of_any_allowed_size(frame_bytes, nbytes, options):
    raw = (np.arange(nbytes, dtype=np.uint32) % 251).astype(np.uint8).tobytes()
    data = b"".join(
        _lz4(raw[a : a + frame_bytes], **options) for a in range(0, nbytes, frame_bytes)
    )
    assert [f.content_size for f in ref.split_frames(data)] == _cuts(nbytes, frame_bytes)
    assert _decoded(_map_with(data, raw)) == raw


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(MIN_FRAME_BYTES, 90_000), min_size=0, max_size=3),
    last=st.integers(1, 90_000),
    block_max_id=st.sampled_from([4, 5, 6, 7]),
    compressed=st.booleans(),
    split=st.integers(1, 70_000),
    checksums=st.booleans(),
)
def test_readers_accept_hand_made_frames(sizes, last, block_max_id, compressed, split, checksums):
    """Frames as other writers may lay them out: stored or literal-only blocks
    of any size within the block maximum, checksums or not."""
    sizes = [*sizes, last]
    raw = (np.arange(sum(sizes), dtype=np.uint32) % 13).astype(np.uint8).tobytes()
    step = min(split, ref.BLOCK_MAX[block_max_id] // 2)
    frames, at = [], 0
    for size in sizes:
        content = raw[at : at + size]
        at += size
        frames.append(
            ref.build_frame(
                content,
                block_max_id=block_max_id,
                block_sizes=_cuts(size, step),
                compressed=compressed,
                block_checksum=checksums,
                content_checksum=checksums,
            )
        )
    assert _decoded(_map_with(b"".join(frames), raw)) == raw


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(1, 299_999), max_size=6, unique=True))
def test_readers_accept_exactly_the_frame_sequences_the_rules_allow(cuts):
    """Any cut points: the sequence is accepted if and only if every frame but
    the last holds at least 64 KiB, and decodes to the tensor then."""
    bounds = [0, *sorted(cuts), len(RAW)]
    sizes = [b - a for a, b in itertools.pairwise(bounds)]
    data = b"".join(_lz4(RAW[a:b]) for a, b in itertools.pairwise(bounds))
    blob = _map_with(data, RAW)
    if all(size >= MIN_FRAME_BYTES for size in sizes[:-1]):
        assert _decoded(blob) == RAW
        assert [f.size for f in read_tensor_map(blob).records[0].frames] == sizes
    else:
        with pytest.raises(SerializationException, match="at least 65536"):
            read_tensor_map(blob)


def test_flwire_walks_frames_as_the_reference_does():
    options = [
        {},
        {"block_checksum": True, "content_checksum": True},
        {"block_size": lz4.frame.BLOCKSIZE_MAX64KB, "block_linked": False},
    ]
    data = b"".join(
        _lz4(RAW[a : a + 100_000], **o)
        for a, o in zip(range(0, 300_000, 100_000), options, strict=True)
    )
    walked = ref.split_frames(data)
    found = LZ4.frames(memoryview(data), len(RAW), "z")
    assert [(f.start, f.end, f.size) for f in found] == [
        (f.start, f.end, f.content_size) for f in walked
    ]


# ----------------------------------------------------------------------------- hostile frames


def _frames(step: int, raw: bytes = RAW) -> list[bytes]:
    return [_lz4(raw[a : a + step]) for a in range(0, len(raw), step)]


def _with_header(frame: bytes, **fields: int) -> bytes:
    """``frame`` (written with a content size) with FLG, BD or the content size
    replaced and the header checksum recomputed, so only that field is wrong."""
    b = bytearray(frame)
    if "flg" in fields:
        b[4] = fields["flg"]
    if "bd" in fields:
        b[5] = fields["bd"]
    if "content_size" in fields:
        b[6:14] = fields["content_size"].to_bytes(8, "little")
    b[14] = ref.header_checksum(bytes(b[4:14]))
    return bytes(b)


def _refused(blob: bytes, *words: str, walk: bool = True) -> None:
    """Decoding refuses ``blob`` naming one of ``words``; with ``walk``, so does
    read_tensor_map (the frames are refused before anything is decompressed)."""
    calls: list[Callable[[bytes], object]] = [read_tensor_map] if walk else []
    calls.append(decode_tensor_map)
    for call in calls:
        with pytest.raises(SerializationException) as info:
            call(blob)
        message = str(info.value).lower()
        assert any(w.lower() in message for w in words), message


def test_a_short_frame_before_the_last_is_refused():
    _refused(_map_with(b"".join(_frames(MIN_FRAME_BYTES - 1)), RAW), "at least")


def test_an_empty_frame_before_the_last_is_refused():
    # liblz4 writes no content size for an empty frame (0 means "unknown" to it).
    empty = ref.build_frame(b"", content_size=0)
    _refused(_map_with(empty + b"".join(_frames(100_000)), RAW), "holds 0 bytes")


def test_many_tiny_frames_are_refused_before_any_allocation():
    # 20,000 frames of one byte each: a bomb of bookkeeping, refused at the first.
    raw = bytes(20_000)
    data = b"".join(_lz4(raw[i : i + 1]) for i in range(len(raw)))
    _refused(_map_with(data, raw), "at least")


def test_a_missing_last_frame_is_refused():
    _refused(_map_with(b"".join(_frames(100_000)[:-1]), RAW), "raw_size")


def test_an_extra_frame_is_refused():
    frames = _frames(100_000)
    _refused(_map_with(b"".join(frames + frames[-1:]), RAW), "raw_size")


@pytest.mark.parametrize("delta", [1, -1])
def test_content_sizes_off_by_one_are_refused(delta):
    frames = _frames(100_000)
    frames[-1] = _with_header(frames[-1], content_size=100_000 + delta)
    _refused(_map_with(b"".join(frames), RAW), f"{len(RAW) + delta}", "raw_size")


@pytest.mark.parametrize("magic", [0x184D2A50, 0x184D2A5F])
def test_a_skippable_frame_between_frames_is_refused(magic):
    frames = _frames(100_000)
    skippable = magic.to_bytes(4, "little") + (4).to_bytes(4, "little") + b"skip"
    _refused(_map_with(frames[0] + skippable + b"".join(frames[1:]), RAW), "not an lz4 frame")


def test_a_legacy_frame_is_refused():
    legacy = (0x184C2102).to_bytes(4, "little") + _frames(300_000)[0][4:]
    _refused(_map_with(legacy, RAW), "not an lz4 frame")


@pytest.mark.parametrize("junk", [b"\x00", b"\x04\x22\x4d", bytes(4)])
def test_bytes_between_or_after_frames_are_refused(junk):
    frames = _frames(100_000)
    _refused(_map_with(frames[0] + junk + b"".join(frames[1:]), RAW), "not an lz4 frame")
    _refused(_map_with(b"".join(frames) + junk, RAW), "not an lz4 frame", "truncated")


def test_a_later_frame_without_content_size_is_refused():
    frames = _frames(200_000)
    unsized = bytes(lz4.frame.compress(RAW[200_000:], store_size=False))
    _refused(_map_with(frames[0] + unsized, RAW), "content size")


def test_a_frame_with_a_dictionary_id_is_refused():
    frames = _frames(200_000)
    with_dict = ref.build_frame(RAW[200_000:], dict_id=1)
    _refused(_map_with(frames[0] + with_dict, RAW), "dictionary")


@pytest.mark.parametrize(
    ("field", "change", "words"),
    [
        pytest.param("flg", lambda b: b & 0x3F, ("version",), id="version 00"),
        pytest.param("flg", lambda b: b & 0x3F | 0x80, ("version",), id="version 10"),
        pytest.param("flg", lambda b: b | 0x02, ("version or flags",), id="reserved FLG bit"),
        pytest.param("bd", lambda b: b | 0x08, ("version or flags",), id="reserved BD bit 3"),
        pytest.param("bd", lambda b: b | 0x80, ("version or flags",), id="reserved BD bit 7"),
        pytest.param("bd", lambda b: 0x00, ("block size id 0",), id="block size id 0"),
        pytest.param("bd", lambda b: 0x30, ("block size id 3",), id="block size id 3"),
    ],
)
def test_frame_headers_the_format_does_not_define_are_refused(field, change, words):
    frame = _frames(300_000)[0]
    assert frame[4] & 0xC0 == 0x40 and frame[4] & 0x08  # version 01, content size
    value = change(frame[4] if field == "flg" else frame[5])
    _refused(_map_with(_with_header(frame, **{field: value}), RAW), *words)


@pytest.mark.parametrize("cut", [1, 3, 4, 5, 9, 20])
def test_a_truncated_later_frame_is_refused(cut):
    frames = _frames(100_000)
    _refused(_map_with(b"".join(frames)[:-cut], RAW), "truncated")


@pytest.mark.parametrize("keep", [4, 5, 6, 10, 14])
def test_a_truncated_frame_header_is_refused(keep):
    frames = _frames(100_000)
    data = frames[0] + frames[1] + frames[2][:keep]
    _refused(_map_with(data, RAW), "truncated")


def test_a_block_above_the_frame_block_maximum_is_refused():
    # Block maximum 64 KiB (id 4), one stored block of 100,000 bytes.
    frame = ref.build_frame(RAW[:100_000], block_max_id=4, block_sizes=[100_000])
    _refused(_map_with(frame, RAW[:100_000]), "above the frame's block size 65536")


def test_content_size_beyond_what_the_blocks_hold_is_refused_before_allocating():
    """A frame of 40 bytes that declares 1 GiB (within the default limits) is
    refused by walking it: decoding it allocates nothing near that."""
    size = 1 << 30
    frame = ref.build_frame(bytes(16), compressed=True, content_size=size)
    t = pb.Tensor(name="z", dtype=pb.DTYPE_UINT8, shape=[size], raw_size=size, codec=pb.CODEC_LZ4)
    t.data = frame
    blob = pb.TensorMap(tensors=[t]).SerializeToString()
    tracemalloc.start()
    try:
        _refused(blob, "more than its blocks can hold")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


@pytest.mark.parametrize("stored", [True, False])
def test_content_size_at_what_the_blocks_hold_passes_the_walk(stored):
    """The walk's bound is never below what blocks can hold: a stored block
    holds its size, a literal-only block a little less than its size."""
    content = RAW[:70_000]
    frame = ref.build_frame(content, compressed=not stored)
    assert len(read_tensor_map(_map_with(frame, content)).records[0].frames) == 1
    if stored:  # one byte more than a stored block holds
        _refused(_map_with(_with_header(frame, content_size=70_001), content + b"x"), "can hold")


def test_blocks_that_decode_to_less_than_the_content_size_are_refused():
    # Literal-only blocks of 99,999 bytes in a frame that declares 100,000.
    short = ref.build_frame(RAW[200_000:299_999], compressed=True, content_size=100_000)
    data = b"".join(_frames(100_000)[:2]) + short
    _refused(_map_with(data, RAW), "lz4", walk=False)
    assert len(read_tensor_map(_map_with(data, RAW)).records[0].frames) == 3


def test_blocks_that_decode_to_more_than_the_content_size_are_refused():
    frames = _frames(100_000)
    frames[-1] = _with_header(frames[-1], content_size=99_999)
    raw = RAW[:-1]
    _refused(_map_with(b"".join(frames), raw), "lz4", walk=False)


def test_a_last_frame_holding_more_than_its_content_size_of_0_is_refused():
    # The sizes add up (300,000 + 0); liblz4 does not check a Content Size of 0.
    zero = ref.build_frame(b"x", content_size=0)
    blob = _map_with(b"".join(_frames(100_000)) + zero, RAW)
    _refused(blob, "decompresses to more than", walk=False)
    assert [f.size for f in read_tensor_map(blob).records[0].frames] == [100_000] * 3 + [0]


def test_a_wrong_header_checksum_is_refused():
    frames = _frames(100_000)
    bad = bytearray(frames[1])
    bad[14] ^= 0x01
    _refused(_map_with(frames[0] + bytes(bad) + frames[2], RAW), "corrupt lz4", walk=False)


@pytest.mark.parametrize("which", ["block", "content"])
def test_wrong_frame_checksums_are_refused(which):
    options = {f"{which}_checksum": True}
    frame = bytearray(_lz4(RAW, **options))
    frame[-1 if which == "content" else -5] ^= 0x01  # the content checksum; a block's
    _refused(_map_with(bytes(frame), RAW), "corrupt lz4", walk=False)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_damage_to_lz4_frames_is_refused_or_harmless(data):
    """Flip bytes or cut the data of a three-frame tensor anywhere: decoding
    raises SerializationException or returns the exact tensor (the CRC-32C
    stands behind the bits that do not matter), never anything else."""
    raw = _values(np.int8, 300_000, 7).tobytes()  # runs of 16: thousands of LZ4 sequences
    damaged = bytearray(b"".join(_frames(100_000, raw)))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(damaged) - 1))
        damaged[pos] ^= data.draw(st.integers(1, 255))
    if data.draw(st.booleans()):
        damaged = damaged[: data.draw(st.integers(0, len(damaged)))]
    try:
        out = _decoded(_map_with(bytes(damaged), raw))
    except SerializationException:
        return
    assert out == raw
