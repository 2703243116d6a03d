"""Tensors stored as several zstd frames (wire format, section 7).

Writers cut a tensor's filtered bytes into frames of FRAME_BYTES so that cores
share the work on one large tensor; readers accept any frame sizes within the
rules and refuse frame sequences that break them, before allocating.
"""

from __future__ import annotations

import itertools

import crc32c
import numpy as np
import pytest
import torch
import zstandard
from helpers import decompress_all_frames, pb_tensor, ref_shuffle
from hypothesis import given, settings
from hypothesis import strategies as st

from flwire.exceptions import SerializationException
from flwire.tensors import codecs, decode_tensor_map, dtypes, encode_tensor_map, read_tensor_map
from flwire.tensors.shuffle import shuffled_slice, unshuffle_slice_into
from flwire.v1 import tensor_pb2 as pb

UINT8 = dtypes.BY_WIRE[pb.DTYPE_UINT8]


def split_frames(data: bytes) -> list[bytes]:
    """Cut concatenated zstd frames apart with zstandard's own frame parser."""
    frames = []
    while data:
        dobj = zstandard.ZstdDecompressor().decompressobj()
        dobj.decompress(data)
        rest = dobj.unused_data
        frames.append(data[: len(data) - len(rest)])
        data = rest
    return frames


def numpy_shuffle(raw: np.ndarray, itemsize: int) -> bytes:
    return raw.reshape(-1, itemsize).T.tobytes()


@given(
    data=st.binary(max_size=600),
    itemsize=st.sampled_from([1, 2, 4, 8, 16]),
    cuts=st.lists(st.integers(0, 600), max_size=6),
)
def test_shuffled_slices_match_the_spec_and_scatter_back(data, itemsize, cuts):
    n = len(data) // itemsize * itemsize
    raw = np.frombuffer(data[:n], dtype=np.uint8)
    reference = ref_shuffle(data[:n], itemsize)
    bounds = sorted({0, n, *(c % (n + 1) for c in cuts)})
    out = np.zeros(n, dtype=np.uint8)
    for a, b in itertools.pairwise(bounds):
        piece = shuffled_slice(raw, itemsize, a, b)
        assert piece.tobytes() == reference[a:b]
        unshuffle_slice_into(piece, out, itemsize, a)
    assert out.tobytes() == data[:n]


def _tensor(dtype: torch.dtype, nbytes: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    count = nbytes // torch.empty(0, dtype=dtype).element_size()
    if dtype.is_floating_point:
        return (torch.randn(count, generator=g) * 0.02).to(dtype)
    return torch.randint(-4, 4, (count,), generator=g).to(dtype)


@pytest.mark.parametrize("nbytes", [1, 401_408, (1 << 19) + 1, 4_718_592, 98_304_000])
def test_writers_cut_frames_of_512_kib(nbytes):
    # docs/wire-format.md section 7: frames of 524,288 bytes, the last one shorter.
    bounds = codecs.frame_bounds(nbytes)
    assert bounds[0][0] == 0 and bounds[-1][1] == nbytes
    assert all(b - a == 524_288 for a, b in bounds[:-1])
    assert 0 < bounds[-1][1] - bounds[-1][0] <= 524_288
    assert all(b1 == a2 for (_, b1), (a2, _) in itertools.pairwise(bounds))


@settings(max_examples=12, deadline=None)
@given(
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float64, torch.int8]),
    frames=st.integers(1, 3),
    extra=st.integers(-2, 2),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_large_tensors_are_cut_into_frames_of_frame_bytes(dtype, frames, extra, shuffle, seed):
    itemsize = torch.empty(0, dtype=dtype).element_size()
    t = _tensor(dtype, frames * codecs.FRAME_BYTES + extra * itemsize, seed)
    raw = t.view(torch.uint8).numpy()
    blob = encode_tensor_map({"w": t}, shuffle=shuffle, min_saving=0.0)
    stored = pb.TensorMap.FromString(blob).tensors[0]
    assert stored.codec == pb.CODEC_ZSTD
    pieces = split_frames(stored.data)
    sizes = [zstandard.frame_content_size(p) for p in pieces]
    step = codecs.FRAME_BYTES
    expected = [step] * (raw.nbytes // step)
    if raw.nbytes % step:
        expected.append(raw.nbytes % step)
    assert sizes == expected
    shuffled = shuffle and itemsize > 1
    filtered = numpy_shuffle(raw, itemsize) if shuffled else raw.tobytes()
    assert decompress_all_frames(stored.data) == filtered
    assert [(f.offset, f.size) for f in read_tensor_map(blob).records[0].frames] == [
        (sum(expected[:i]), size) for i, size in enumerate(expected)
    ]
    assert torch.equal(decode_tensor_map(blob)["w"].view(torch.uint8), t.view(torch.uint8))


def test_the_encoding_does_not_depend_on_the_number_of_threads():
    state = {
        "a": _tensor(torch.float32, 3 * codecs.FRAME_BYTES + 12, 1),
        "b": _tensor(torch.int8, 99, 2),
    }
    for shuffle in (False, True):
        one = encode_tensor_map(state, shuffle=shuffle, threads=1)
        assert encode_tensor_map(state, shuffle=shuffle, threads=2) == one
        assert encode_tensor_map(state, shuffle=shuffle, threads=5) == one


@settings(max_examples=15, deadline=None)
@given(
    frame_bytes=st.sampled_from([codecs.MIN_FRAME_BYTES, 100_003, 300_000]),
    nbytes=st.integers(1, 700_000),
    itemsize=st.sampled_from([1, 2, 4, 8]),
    shuffle=st.booleans(),
    checksum=st.booleans(),
)
def test_readers_accept_frames_of_any_allowed_size(
    frame_bytes, nbytes, itemsize, shuffle, checksum
):
    info = {1: UINT8, 2: dtypes.BY_WIRE[pb.DTYPE_INT16], 4: dtypes.BY_WIRE[pb.DTYPE_FLOAT32]}.get(
        itemsize, dtypes.BY_WIRE[pb.DTYPE_FLOAT64]
    )
    count = max(1, nbytes // itemsize)
    raw = (np.arange(count * itemsize, dtype=np.uint32) % 251).astype(np.uint8).tobytes()
    t = pb_tensor(
        "w",
        info,
        (count,),
        raw,
        zstd_level=3,
        shuffle=shuffle,
        zstd_checksum=checksum,
        frame_bytes=frame_bytes,
    )
    out = decode_tensor_map(pb.TensorMap(tensors=[t]).SerializeToString(), as_numpy=True)
    assert out["w"].tobytes() == raw


RAW = (np.arange(300_000, dtype=np.uint32) % 7).astype(np.uint8).tobytes()


def _map_with(data: bytes, raw: bytes = RAW) -> bytes:
    t = pb.Tensor(
        name="z", dtype=pb.DTYPE_UINT8, shape=[len(raw)], raw_size=len(raw), codec=pb.CODEC_ZSTD
    )
    t.crc32c = crc32c.crc32c(raw)
    t.data = data
    return pb.TensorMap(tensors=[t]).SerializeToString()


def _frames(step: int, raw: bytes = RAW) -> list[bytes]:
    cctx = zstandard.ZstdCompressor(write_content_size=True)
    return [cctx.compress(raw[a : a + step]) for a in range(0, len(raw), step)]


def _refused(data: bytes, *words: str) -> None:
    with pytest.raises(SerializationException) as info:
        decode_tensor_map(data)
    message = str(info.value).lower()
    assert any(w in message for w in words), message


def test_a_short_frame_before_the_last_is_refused():
    frames = _frames(codecs.MIN_FRAME_BYTES - 1)
    _refused(_map_with(b"".join(frames)), "at least")


def test_a_missing_last_frame_is_refused():
    frames = _frames(100_000)
    _refused(_map_with(b"".join(frames[:-1])), "raw_size")


def test_an_extra_frame_is_refused():
    frames = _frames(100_000)
    _refused(_map_with(b"".join(frames + frames[-1:])), "raw_size")


def test_a_skippable_frame_between_frames_is_refused():
    frames = _frames(100_000)
    skippable = (0x184D2A50).to_bytes(4, "little") + (4).to_bytes(4, "little") + b"skip"
    _refused(_map_with(frames[0] + skippable + b"".join(frames[1:])), "magic")


def test_garbage_between_frames_is_refused():
    frames = _frames(100_000)
    _refused(_map_with(frames[0] + b"\x00" + b"".join(frames[1:])), "magic")


def test_a_later_frame_without_content_size_is_refused():
    frames = _frames(200_000)
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(RAW[200_000:])
    _refused(_map_with(frames[0] + unsized), "content size")


def test_a_truncated_later_frame_is_refused():
    frames = _frames(100_000)
    _refused(_map_with(b"".join(frames)[:-3]), "truncated")


def test_many_tiny_frames_are_refused_before_any_allocation():
    # 20,000 frames of one byte each would be a 1-byte-per-frame bomb of bookkeeping.
    raw = bytes(20_000)
    cctx = zstandard.ZstdCompressor(write_content_size=True)
    data = b"".join(cctx.compress(raw[i : i + 1]) for i in range(len(raw)))
    _refused(_map_with(data, raw), "at least")
