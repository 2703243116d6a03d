"""Conformance of the Python codec with the golden vectors in tests/vectors.

The vectors pin the wire format (docs/wire-format.md): a change to the bytes a
writer produces, or to what a reader accepts, fails here. Each vector is a
``.bin`` (the TensorMap bytes), a ``.txtpb`` (its protobuf text form) and a
``.json`` (expectations derived from the generator's inputs, not from decoding).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, cast

import crc32c
import lz4
import numpy as np
import pytest
import torch
import zstandard
from google.protobuf import text_format

from flwire import DecodeLimits, decode_tensor_map, read_tensor_map
from flwire._protowire import LEN, Field, iter_fields
from flwire.exceptions import PayloadTooLargeError, SerializationException
from flwire.tensors import dtypes as fl_dtypes
from flwire.tensors import shuffle as fl_shuffle
from flwire.v1 import tensor_pb2

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors"
SPEC = ROOT / "docs" / "wire-format.md"


def _load(module_name: str, filename: str) -> Any:
    spec = importlib.util.spec_from_file_location(module_name, VECTORS / filename)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


gen = _load("flwire_golden_generate", "generate.py")
# A pure-Python LZ4 frame walker and decoder, written from the LZ4 frame and
# block formats, independent of liblz4 and of flwire's codec.
ref_lz4 = _load("flwire_lz4_reference", "lz4_reference.py")
MANIFEST = json.loads((VECTORS / "manifest.json").read_text("utf-8"))
NAMES = [v["name"] for v in MANIFEST["vectors"]]
BUILDERS = {v.name: v for v in gen.VECTORS}
WIRE_BY_TORCH = {getattr(torch, t): wire for wire, _, t in gen.DTYPES.values()}
_TENSOR_FIELDS = tensor_pb2.Tensor.DESCRIPTOR.fields_by_name
_MAP_FIELDS = tensor_pb2.TensorMap.DESCRIPTOR.fields_by_name
T_PADDING = _TENSOR_FIELDS["padding"].number
T_DATA = _TENSOR_FIELDS["data"].number
T_LOSSY = _TENSOR_FIELDS["lossy"].number
M_TENSORS = _MAP_FIELDS["tensors"].number
ALIGNMENT = 64  # docs/wire-format.md, section 2.3 rule 7 and section 13
# Width of the elements the filter works on in a lossy payload (section 9.1).
_PAYLOAD_WIDTH = {
    "LOSSY_CAST_FLOAT16": 2,
    "LOSSY_CAST_BFLOAT16": 2,
    "LOSSY_BLOCK_INT8": 1,
    "LOSSY_TOP_K": 1,
}
SAME_ZSTD = (
    zstandard.__version__ == MANIFEST["zstandard_version"]
    and ".".join(map(str, zstandard.ZSTD_VERSION)) == MANIFEST["libzstd_version"]
)
SAME_LZ4 = (
    lz4.__version__ == MANIFEST["lz4_version"]
    and lz4.library_version_string() == MANIFEST["liblz4_version"]
)
#: The codecs whose frames may differ between library versions, and whether
#: this machine has the versions the vectors were made with.
SAME_LIBRARY = {"CODEC_ZSTD": SAME_ZSTD, "CODEC_LZ4": SAME_LZ4}
#: docs/wire-format.md section 7: writers cut the filtered bytes every 512 KiB;
#: every frame but the last holds at least 64 KiB.
FRAME_BYTES = 524_288
MIN_FRAME_BYTES = 65_536


def _bin(name: str) -> bytes:
    return (VECTORS / f"{name}.bin").read_bytes()


def _expected(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / f"{name}.json").read_text("utf-8"))


def _codecs(name: str) -> set[str]:
    """The codecs of the compressed tensors of a vector."""
    return {t["codec"] for t in _expected(name)["tensors"]} - {"CODEC_UNSPECIFIED"}


def _same_libraries(name: str) -> bool:
    """Whether this machine's zstd / LZ4 libraries are those of the manifest, for
    every codec the vector uses (then re-encoding gives the same frames)."""
    return all(SAME_LIBRARY[c] for c in _codecs(name))


def _raw(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _decoded_signature(data: bytes) -> tuple[list[tuple[Any, ...]], dict[str, str]]:
    """What a decode produces: (name, wire dtype, shape, raw bytes) per tensor, and metadata."""
    tensors = decode_tensor_map(data)
    metadata = read_tensor_map(data).metadata
    return [
        (name, WIRE_BY_TORCH[t.dtype], tuple(t.shape), _raw(t)) for name, t in tensors.items()
    ], metadata


def _decoded_bytes(t: dict[str, Any]) -> bytes:
    """What a decoder returns for a tensor of a .json: its raw bytes, or for a
    lossy tensor (whose raw_hex is the payload) the reconstructed tensor."""
    return bytes.fromhex(t["lossy"]["decoded_hex"] if "lossy" in t else t["raw_hex"])


def _expected_signature(name: str) -> tuple[list[tuple[Any, ...]], dict[str, str]]:
    e = _expected(name)
    tensors = [(t["name"], t["dtype"], tuple(t["shape"]), _decoded_bytes(t)) for t in e["tensors"]]
    return tensors, e["metadata"]


def _wire_tensors(data: bytes) -> list[tuple[Field, list[Field]]]:
    """Each `tensors` field of the map, with the fields of that Tensor, by walking the wire."""
    buf = memoryview(data)
    out = []
    for f in iter_fields(buf, 0, len(buf), "TensorMap"):
        if f.number == M_TENSORS:
            assert f.wire_type == LEN
            out.append((f, list(iter_fields(buf, f.start, f.end, "Tensor"))))
    return out


def _padding_payloads(data: bytes) -> list[range]:
    """Byte ranges of the payloads of every Tensor.padding field."""
    return [
        range(g.start, g.end)
        for _, fields in _wire_tensors(data)
        for g in fields
        if g.number == T_PADDING
    ]


def _padding_lengths(data: bytes) -> list[range]:
    """Byte ranges of the length varints of every Tensor.padding field."""
    return [
        range(g.key_start + 1, g.start)
        for _, fields in _wire_tensors(data)
        for g in fields
        if g.number == T_PADDING
    ]


def _shuffle_reference(raw: bytes, width: int) -> bytes:
    """Byte shuffle as the spec defines it: output[j*n + i] = raw[i*width + j]."""
    n = len(raw) // width
    out = bytearray(len(raw))
    for i in range(n):
        for j in range(width):
            out[j * n + i] = raw[i * width + j]
    return bytes(out)


# ----------------------------------------------------------------------------- the files


def test_manifest_hashes_match_the_files() -> None:
    listed = set()
    for vector in MANIFEST["vectors"]:
        assert set(vector["files"]) == {"bin", "txtpb", "json"}
        for entry in vector["files"].values():
            content = (VECTORS / entry["path"]).read_bytes()
            assert len(content) == entry["size"], entry["path"]
            assert hashlib.sha256(content).hexdigest() == entry["sha256"], entry["path"]
            listed.add(entry["path"])
    for refusal in MANIFEST["refusals"]:
        entry = refusal["file"]
        content = (VECTORS / entry["path"]).read_bytes()
        assert len(content) == entry["size"], entry["path"]
        assert hashlib.sha256(content).hexdigest() == entry["sha256"], entry["path"]
        listed.add(entry["path"])
    on_disk = {p.name for p in VECTORS.iterdir() if p.suffix in (".bin", ".txtpb", ".json")}
    on_disk |= {f"refusals/{p.name}" for p in (VECTORS / "refusals").iterdir()}
    assert on_disk - {"manifest.json"} == listed, "files not in the manifest (or missing)"


def test_vectors_cover_every_dtype() -> None:
    covered = {t["dtype"] for name in NAMES for t in _expected(name)["tensors"]}
    every = {v.name for v in tensor_pb2.Dtype.DESCRIPTOR.values} - {"DTYPE_UNSPECIFIED"}
    assert covered == every, f"dtypes without a golden vector: {sorted(every - covered)}"


def test_vectors_cover_codecs_and_filters() -> None:
    seen = {(t["codec"], t["filter"]) for name in NAMES for t in _expected(name)["tensors"]}
    assert ("CODEC_UNSPECIFIED", "FILTER_UNSPECIFIED") in seen
    assert ("CODEC_ZSTD", "FILTER_UNSPECIFIED") in seen
    assert ("CODEC_ZSTD", "FILTER_BYTE_SHUFFLE") in seen
    assert ("CODEC_LZ4", "FILTER_UNSPECIFIED") in seen
    assert ("CODEC_LZ4", "FILTER_BYTE_SHUFFLE") in seen
    # Every codec of the schema has a vector.
    every = {v.name for v in tensor_pb2.Codec.DESCRIPTOR.values}
    assert {codec for codec, _ in seen} == every


def test_vectors_cover_several_frames() -> None:
    """A tensor above 512 KiB is cut into frames (section 7); one vector has one."""
    several = [
        (name, t["name"])
        for name in NAMES
        for t in _expected(name)["tensors"]
        if t["codec"] != "CODEC_UNSPECIFIED" and t["raw_size"] > FRAME_BYTES
    ]
    assert several, "no golden vector has a tensor of several frames"


def test_generator_lists_the_manifest_vectors() -> None:
    assert [v.name for v in gen.VECTORS] == NAMES


@pytest.mark.skipif(
    not (SAME_ZSTD and SAME_LZ4), reason="zstd or LZ4 version differs from the manifest's"
)
def test_generator_reproduces_every_file() -> None:
    for filename, content in gen.render().items():
        assert (VECTORS / filename).read_bytes() == content, f"{filename} would change"


# ----------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("name", NAMES)
def test_decode_matches_expectations(name: str) -> None:
    assert _decoded_signature(_bin(name)) == _expected_signature(name)


@pytest.mark.parametrize("name", NAMES)
def test_decode_to_numpy_matches_expectations(name: str) -> None:
    e = _expected(name)
    wire = [tensor_pb2.Dtype.Value(t["dtype"]) for t in e["tensors"]]
    missing = [fl_dtypes.BY_WIRE[w].name for w in wire if fl_dtypes.BY_WIRE[w].numpy_dtype is None]
    if missing:
        # e.g. complex32: numpy (even with ml_dtypes) has no such type, so decoding to
        # numpy must refuse clearly, naming the dtype.
        with pytest.raises(SerializationException, match=missing[0]):
            decode_tensor_map(_bin(name), as_numpy=True)
        return
    arrays = decode_tensor_map(_bin(name), as_numpy=True)
    assert list(arrays) == [t["name"] for t in e["tensors"]]
    for t in e["tensors"]:
        a = arrays[t["name"]]
        assert a.shape == tuple(t["shape"])
        assert a.tobytes() == _decoded_bytes(t)


@pytest.mark.parametrize("name", NAMES)
def test_records_match_expectations(name: str) -> None:
    e = _expected(name)
    view = read_tensor_map(_bin(name))
    assert view.metadata == e["metadata"]
    assert [r.name for r in view.records] == [t["name"] for t in e["tensors"]]
    for rec, t in zip(view.records, e["tensors"], strict=True):
        raw = bytes.fromhex(t["raw_hex"])
        assert tensor_pb2.Dtype.Name(rec.dtype.wire) == t["dtype"]
        assert rec.shape == tuple(t["shape"])
        assert rec.codec_name == t["codec"]
        assert rec.filter_name == t["filter"]
        assert rec.raw_size == t["raw_size"] == len(raw)
        assert rec.crc32c == int(t["crc32c"], 16) == crc32c.crc32c(raw)
        data = bytes(rec.data)
        if t["codec"] == "CODEC_UNSPECIFIED":
            assert data == raw  # stored raw: the data field is the raw bytes
            continue
        if t["codec"] == "CODEC_ZSTD":
            # Exactly one frame that records its content size, holding the filtered bytes.
            params = zstandard.get_frame_parameters(data)
            assert params.content_size == t["raw_size"]
            assert params.dict_id == 0
            filtered = zstandard.ZstdDecompressor().decompress(data)
        else:
            filtered = _check_lz4_frames(data, t["raw_size"], rec.frames)
        width = rec.dtype.itemsize if rec.lossy is None else _PAYLOAD_WIDTH[t["lossy"]["method"]]
        if t["filter"] == "FILTER_BYTE_SHUFFLE":
            assert filtered == _shuffle_reference(raw, width)
        else:
            assert filtered == raw


def _writer_cuts(raw_size: int) -> list[int]:
    """Content sizes of the frames a flwire writer makes (section 7): 524,288
    bytes each, the last one holding the rest."""
    sizes = [FRAME_BYTES] * (raw_size // FRAME_BYTES)
    return sizes + ([raw_size % FRAME_BYTES] if raw_size % FRAME_BYTES else [])


def _check_lz4_frames(data: bytes, raw_size: int, found: Any) -> bytes:
    """Walk a tensor's LZ4 data with the reference walker, check it against the
    rules of section 7 and against the frames flwire's reader found, and
    return the decompressed (filtered) bytes, decoded by the reference."""
    frames = ref_lz4.split_frames(data)  # magic, versions, reserved bits, blocks, end marks
    assert frames[-1].end == len(data)
    for f in frames:
        assert f.content_size is not None, "every frame records its content size"
        assert f.dict_id is None, "no dictionary id"
        assert f.header_checksum_ok
        # What flwire writers write (other writers MAY differ): a block maximum
        # of at most 1 MiB (liblz4 lowers the 1 MiB asked for to the smallest
        # size that holds the frame), so a frame of 512 KiB is one block; no
        # block or content checksums.
        assert f.block_max == min(m for m in ref_lz4.BLOCK_MAX.values() if m >= f.content_size)
        assert f.block_max <= 1 << 20 and len(f.blocks) == 1
        assert not f.has_block_checksum and not f.has_content_checksum
    sizes = [f.content_size for f in frames]
    assert sizes == _writer_cuts(raw_size)
    assert all(size >= MIN_FRAME_BYTES for size in sizes[:-1])
    offsets = [sum(sizes[:k]) for k in range(len(sizes))]
    assert [(g.start, g.end, g.offset, g.size) for g in found] == [
        (f.start, f.end, offset, f.content_size) for f, offset in zip(frames, offsets, strict=True)
    ]
    return b"".join(ref_lz4.decompress_frame(f) for f in frames)


def _varint_len(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def _shortest_padding(tensor: Field, header_len: int, data_key_len: int, data_len: int) -> int:
    """Length on the wire of the shortest padding field that puts the data of
    `tensor` at a multiple of ALIGNMENT (0: no field), computed from the spec:
    field lengths 0, then 1 + len(varint(n)) + n for n = 1, 2, 3, ... (a
    padding field has at least one byte of payload: an empty one is a proto3
    default that protobuf runtimes drop); the Tensor's own length prefix
    changes with the padding."""
    candidates = [0] + [1 + _varint_len(n) + n for n in range(1, 2 * ALIGNMENT + 2)]
    for pad_len in candidates:
        body_len = header_len + pad_len + data_key_len + data_len
        offset = tensor.key_start + 1 + _varint_len(body_len) + header_len + pad_len + data_key_len
        if offset % ALIGNMENT == 0:
            return pad_len
    raise AssertionError("no padding length aligns the data")


@pytest.mark.parametrize("name", NAMES)
def test_uncompressed_data_is_aligned_and_compressed_data_is_not_padded(name: str) -> None:
    """Section 2.3, rule 7: the shortest zero-filled padding before the data of
    every non-empty uncompressed tensor puts it at a multiple of 64 in the file;
    compressed and empty tensors have no padding field."""
    data = _bin(name)
    wire = _wire_tensors(data)
    records = read_tensor_map(data).records
    assert len(wire) == len(records)
    for (tensor, fields), rec in zip(wire, records, strict=True):
        where = f"{name}: tensor {rec.name!r}"
        pads = [g for g in fields if g.number == T_PADDING]
        datas = [g for g in fields if g.number == T_DATA]
        if rec.codec_name != "CODEC_UNSPECIFIED" or rec.raw_size == 0:
            assert pads == [], f"{where} is compressed or empty but has a padding field"
            assert len(datas) == (1 if rec.raw_size else 0), where
            continue
        assert len(datas) == 1 and len(pads) <= 1, where
        (field,) = datas
        assert field.start % ALIGNMENT == 0, f"{where}: data starts at byte {field.start}"
        # Only the lossy field (number 10) may follow data (section 2.3 rule 2).
        after = [g for g in fields if g.key_start >= field.end]
        assert [g.number for g in after] == ([T_LOSSY] if rec.lossy else []), where
        assert (after[-1].end if after else field.end) == tensor.end, where
        assert data[tensor.key_start] == 0x0A, where
        pad_len = 0
        header_end = field.key_start
        if pads:
            (pad,) = pads
            assert pad.end == field.key_start, f"{where}: padding is not right before data"
            assert data[pad.start : pad.end] == bytes(pad.end - pad.start), f"{where}: not zeros"
            pad_len = pad.end - pad.key_start
            header_end = pad.key_start
        shortest = _shortest_padding(
            tensor,
            header_end - tensor.start,
            field.start - field.key_start,
            tensor.end - field.start,  # the data, and the lossy field after it, if any
        )
        assert pad_len == shortest, f"{where}: padding field of {pad_len} bytes, not {shortest}"


@pytest.mark.parametrize("name", NAMES)
def test_generated_class_matches_text_form(name: str) -> None:
    parsed = tensor_pb2.TensorMap.FromString(_bin(name))
    text = text_format.Parse((VECTORS / f"{name}.txtpb").read_text("utf-8"), tensor_pb2.TensorMap())
    assert parsed == text
    # The canonical encoding is protobuf's deterministic serialization of the same message.
    assert parsed.SerializeToString(deterministic=True) == _bin(name)


# ----------------------------------------------------------------------------- encoding


def _header(t: Any) -> tuple[Any, ...]:
    return (t.name, t.dtype, list(t.shape), t.raw_size, t.crc32c)


def _assert_equivalent(fresh: bytes, golden: bytes, name: str) -> None:
    """Same message up to the zstd and LZ4 frames: every field but `data` equal, and `data`
    equal once decompressed (and unshuffled, which the decode comparison covers)."""
    got, want = tensor_pb2.TensorMap.FromString(fresh), tensor_pb2.TensorMap.FromString(golden)
    assert dict(got.metadata) == dict(want.metadata)
    assert [_header(t) for t in got.tensors] == [_header(t) for t in want.tensors]
    dctx = zstandard.ZstdDecompressor()
    for a, b in zip(got.tensors, want.tensors, strict=True):
        assert (a.codec, a.filter) == (b.codec, b.filter)
        if a.codec == tensor_pb2.CODEC_ZSTD:
            assert dctx.decompress(a.data) == dctx.decompress(b.data)
        elif a.codec == tensor_pb2.CODEC_LZ4:
            sizes = [f.content_size for f in ref_lz4.split_frames(a.data)]
            assert sizes == _writer_cuts(a.raw_size)
            assert ref_lz4.decompress_all(a.data) == ref_lz4.decompress_all(b.data)
        else:
            assert a.data == b.data
    assert _decoded_signature(fresh) == _expected_signature(name)


@pytest.mark.parametrize("name", NAMES)
def test_reencoding_gives_the_same_bytes(name: str) -> None:
    """Byte-identical output, except for frames made by another zstd or LZ4 library.

    zstd and LZ4 output is deterministic for one level and library version, but
    other versions may pick different, equally valid frames: the wire stays
    valid, so then only the decompressed contents must match (next test).
    """
    if not _same_libraries(name):
        pytest.skip(
            f"zstandard {zstandard.__version__} / lz4 {lz4.__version__} "
            f"(liblz4 {lz4.library_version_string()}) differ from the manifest's"
        )
    assert BUILDERS[name].encode() == _bin(name)


@pytest.mark.parametrize("name", [n for n in NAMES if _codecs(n)])
def test_reencoding_compressed_vectors_decompresses_the_same(name: str) -> None:
    _assert_equivalent(BUILDERS[name].encode(), _bin(name), name)


# ----------------------------------------------------------------------------- corruption


def _frame_spans(data: bytes) -> list[range]:
    """Byte ranges of the zstd and LZ4 frames (the `data` payloads of compressed tensors)."""
    spans = []
    for (_, fields), rec in zip(_wire_tensors(data), read_tensor_map(data).records, strict=True):
        if rec.codec_name != "CODEC_UNSPECIFIED":
            spans += [range(g.start, g.end) for g in fields if g.number == T_DATA]
    return spans


def _without_padding(data: bytes) -> tensor_pb2.TensorMap:
    msg = tensor_pb2.TensorMap.FromString(data)
    for t in msg.tensors:
        t.ClearField("padding")
    return msg


FLIP_ALL_BYTES = 16384
FLIP_STRIDE = 13


def _flip_positions(size: int, spans: list[range]) -> list[int]:
    """The byte positions to flip: all of them, but in a frame of more than
    FLIP_ALL_BYTES bytes only its first and last 512 and a stride between."""
    skip: set[int] = set()
    for span in spans:
        if len(span) > FLIP_ALL_BYTES:
            inner = range(span.start + 512, span.stop - 512)
            skip.update(p for p in inner if (p - inner.start) % FLIP_STRIDE)
    return [p for p in range(size) if p not in skip]


@pytest.mark.parametrize("name", [n for n in NAMES if _bin(n)])
def test_a_flipped_byte_is_detected(name: str) -> None:
    """Flipping bits of any byte makes decoding raise or give a different result.

    Two exceptions. Inside a zstd or LZ4 frame some bits (padding, unused table
    entries, a match offset that points at equal bytes) do not change the
    output: there the decoded bytes are checked against the CRC-32C, so the
    result is either refused or exact. Inside the payload of a `padding` field
    the bytes carry no meaning and readers ignore them: there the bytes must
    still be a valid TensorMap that decodes to the identical result.

    Every byte is flipped, except in frames longer than FLIP_ALL_BYTES: there
    the first and last bytes (frame headers, end marks) and every
    FLIP_STRIDE-th byte between them, so that the 500 KiB vector stays quick.
    """
    data = _bin(name)
    expected = _expected_signature(name)
    spans = _frame_spans(data)
    padding = _padding_payloads(data)
    # A flipped length of 64 (0x40 ^ 0xff = 0xbf) reads as the 2-byte varint
    # bf 00 = 63, one byte longer: the same field, written non-minimally.
    lengths = _padding_lengths(data)
    original = _without_padding(data)
    for pos in _flip_positions(len(data), spans):
        in_padding = any(pos in r for r in padding)
        for mask in (0x01, 0xFF):
            flipped = bytearray(data)
            flipped[pos] ^= mask
            if in_padding:
                where = f"{name}: byte {pos} ^ {mask:#04x} inside a padding field"
                assert _decoded_signature(bytes(flipped)) == expected, where
                # A stock parser reads the same message, only the padding's content differs.
                assert tensor_pb2.TensorMap.FromString(bytes(flipped)) != (
                    tensor_pb2.TensorMap.FromString(data)
                ), where
                assert _without_padding(bytes(flipped)) == original, where
                continue
            try:
                result = _decoded_signature(bytes(flipped))
            except SerializationException:
                continue
            if result == expected:
                assert any(pos in s for s in spans + lengths), (
                    f"{name}: byte {pos} ^ {mask:#04x} went unnoticed outside a compressed frame "
                    "and outside a padding field"
                )


@pytest.mark.parametrize("name", [n for n in NAMES if _bin(n)])
def test_truncation_is_refused(name: str) -> None:
    data = _bin(name)
    for cut in range(1, min(len(data), 64) + 1):
        try:
            result = _decoded_signature(data[:-cut])
        except SerializationException:
            continue
        # Cutting whole trailing fields (metadata entries) parses, but not as the same map.
        assert result != _expected_signature(name), f"{name}: cut {cut} bytes unnoticed"


# ----------------------------------------------------------------------------- the spec


def test_crc32c_check_value() -> None:
    assert crc32c.crc32c(b"123456789") == 0xE3069283
    assert gen.crc32c_reference(b"123456789") == 0xE3069283
    assert crc32c.crc32c(b"") == 0


def test_spec_shuffle_example() -> None:
    # docs/wire-format.md: three float16 values 1.0, -2.0, 0.5.
    raw = bytes.fromhex("003c00c00038")
    shuffled = fl_shuffle.shuffled_slice(np.frombuffer(raw, np.uint8), 2, 0, len(raw)).tobytes()
    assert shuffled == bytes.fromhex("0000003cc038")
    assert shuffled == _shuffle_reference(raw, 2)


def _spec_dump(label: str) -> bytes:
    text = SPEC.read_text("utf-8")
    match = re.search(rf"<!-- golden: {re.escape(label)} -->\s*```[a-z]*\n(.*?)```", text, re.S)
    assert match, f"no annotated dump of {label} in {SPEC}"
    hex_bytes: list[str] = []
    for line in match.group(1).splitlines():
        hex_bytes += line.split("#", 1)[0].split()
    return bytes.fromhex("".join(hex_bytes))


@pytest.mark.parametrize("name", ["float32_small", "metadata"])
def test_spec_annotated_dump_is_the_golden_vector(name: str) -> None:
    assert _spec_dump(f"{name}.bin") == _bin(name)


def _spec_prefix(label: str) -> bytes:
    """The bytes of a partial dump: every line up to the first `...`."""
    text = SPEC.read_text("utf-8")
    match = re.search(
        rf"<!-- golden prefix: {re.escape(label)} -->\s*```[a-z]*\n(.*?)```", text, re.S
    )
    assert match, f"no partial dump of {label} in {SPEC}"
    hex_bytes: list[str] = []
    for line in match.group(1).splitlines():
        code = line.split("#", 1)[0].split()
        if code == ["..."]:
            break
        hex_bytes += code
    return bytes.fromhex("".join(hex_bytes))


@pytest.mark.parametrize("name", ["zstd_shuffle", "lz4_shuffle"])
def test_spec_partial_dump_is_the_start_of_the_golden_vector(name: str) -> None:
    prefix = _spec_prefix(f"{name}.bin")
    assert len(prefix) > 30
    assert _bin(name).startswith(prefix)


def test_spec_lz4_example_header_checksum() -> None:
    """Section 17: the HC byte of lz4_shuffle.bin is what the frame format says."""
    data = _bin("lz4_shuffle")
    at = data.index(ref_lz4.MAGIC.to_bytes(4, "little"))
    descriptor = data[at + 4 : at + 14]
    assert descriptor == bytes.fromhex("68 40 00 40 00 00 00 00 00 00")
    assert data[at + 14] == ref_lz4.header_checksum(descriptor) == 0x25


# ----------------------------------------------------------------------------- lossy (9.1)

# The .json of a lossy tensor describes the wire as it is: raw_size, crc32c and
# raw_hex are the payload's; "lossy" holds the method, block_size, k, and the
# reconstructed (decoded_hex) and original (original_hex) logical tensors.
LOSSY_NAMES = [n for n in NAMES if any("lossy" in t for t in _expected(n)["tensors"])]
LOSSY_TENSORS = [
    pytest.param(n, t, id=f"{n}-{t['name']}")
    for n in LOSSY_NAMES
    for t in _expected(n)["tensors"]
    if "lossy" in t
]
_TORCH_BY_WIRE = {wire: getattr(torch, t) for wire, _, t in gen.DTYPES.values()}
_WIDTH_BY_WIRE = {wire: width for wire, width, _ in gen.DTYPES.values()}


def _numel(t: dict[str, Any]) -> int:
    count = 1
    for d in t["shape"]:
        count *= d
    return count


def _floats(dtype: str, raw: bytes) -> torch.Tensor:
    """Elements of little-endian bytes of a floating wire dtype, as float64 (exact)."""
    if not raw:
        return torch.empty(0, dtype=torch.float64)
    return torch.frombuffer(bytearray(raw), dtype=_TORCH_BY_WIRE[dtype]).to(torch.float64)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values, NaN where the other has NaN."""
    nan = a.isnan()
    return torch.equal(nan, b.isnan()) and torch.equal(a[~nan], b[~nan])


def _spec_payload_size(t: dict[str, Any]) -> int:
    """The payload size of section 9.1's table."""
    n, w, lossy = _numel(t), _WIDTH_BY_WIRE[t["dtype"]], t["lossy"]
    if lossy["method"] in ("LOSSY_CAST_FLOAT16", "LOSSY_CAST_BFLOAT16"):
        return 2 * n
    if lossy["method"] == "LOSSY_BLOCK_INT8":
        return 4 * -(-n // lossy["block_size"]) + n
    return lossy["k"] * (w + (4 if n < 2**32 else 8))


def test_vectors_cover_every_lossy_method() -> None:
    tensors = [cast(dict[str, Any], p.values[1]) for p in LOSSY_TENSORS]
    methods = {t["lossy"]["method"] for t in tensors}
    every = {v.name for v in tensor_pb2.Lossy.DESCRIPTOR.values} - {"LOSSY_UNSPECIFIED"}
    assert methods == every
    kinds = {(t["lossy"]["method"], t["codec"], t["filter"]) for t in tensors}
    # A shuffled cast payload (2-byte elements), an int8 payload in zstd, uncompressed ones.
    assert ("LOSSY_CAST_BFLOAT16", "CODEC_ZSTD", "FILTER_BYTE_SHUFFLE") in kinds
    assert ("LOSSY_BLOCK_INT8", "CODEC_ZSTD", "FILTER_UNSPECIFIED") in kinds
    assert ("LOSSY_TOP_K", "CODEC_UNSPECIFIED", "FILTER_UNSPECIFIED") in kinds
    assert {t["dtype"] for t in tensors} >= {
        "DTYPE_FLOAT32",
        "DTYPE_FLOAT64",
        "DTYPE_FLOAT16",
        "DTYPE_BFLOAT16",
    }


@pytest.mark.parametrize("name", LOSSY_NAMES)
def test_lossy_payload_facts_match_expectations(name: str) -> None:
    """The parsed Tensor.lossy fields (flwire's reader and the generated class)
    match the .json, and raw_size is the payload size of section 9.1's table."""
    e = _expected(name)
    records = read_tensor_map(_bin(name)).records
    parsed = tensor_pb2.TensorMap.FromString(_bin(name)).tensors
    for rec, pb_t, t in zip(records, parsed, e["tensors"], strict=True):
        if "lossy" not in t:
            assert rec.lossy is None and not pb_t.HasField("lossy"), t["name"]
            continue
        want = (t["lossy"]["method"], t["lossy"]["block_size"], t["lossy"]["k"])
        assert rec.lossy is not None
        got = (tensor_pb2.Lossy.Name(rec.lossy.method), rec.lossy.block_size, rec.lossy.k)
        assert got == want, t["name"]
        assert (tensor_pb2.Lossy.Name(pb_t.lossy.method), pb_t.lossy.block_size, pb_t.lossy.k) == (
            want
        )
        assert rec.raw_size == t["raw_size"] == _spec_payload_size(t), t["name"]
        assert rec.decoded_size == len(_decoded_bytes(t)) == _numel(t) * rec.dtype.itemsize


@pytest.mark.parametrize("name", LOSSY_NAMES)
def test_lossy_reconstruction_is_bit_exact(name: str) -> None:
    e = _expected(name)
    for target in ("torch", "numpy"):
        out = decode_tensor_map(_bin(name), as_numpy=target == "numpy")
        for t in e["tensors"]:
            value = out[t["name"]]
            got = _raw(value) if target == "torch" else value.tobytes()
            assert tuple(value.shape) == tuple(t["shape"]), (target, t["name"])
            assert got == _decoded_bytes(t), (target, t["name"])
            if target == "torch":
                assert WIRE_BY_TORCH[value.dtype] == t["dtype"]


@pytest.mark.parametrize(("name", "t"), LOSSY_TENSORS)
def test_lossy_expectations_follow_the_spec(name: str, t: dict[str, Any]) -> None:
    """The .json's payload and reconstruction are what section 9.1 says for the
    original tensor: layout, reconstruction from the payload, and error bound."""
    lossy, dtype, n = t["lossy"], t["dtype"], _numel(t)
    payload = bytes.fromhex(t["raw_hex"])
    x = _floats(dtype, bytes.fromhex(lossy["original_hex"]))
    xhat = _floats(dtype, bytes.fromhex(lossy["decoded_hex"]))
    assert len(payload) == _spec_payload_size(t) and len(x) == len(xhat) == n
    finite = torch.isfinite(x)
    if lossy["method"] in ("LOSSY_CAST_FLOAT16", "LOSSY_CAST_BFLOAT16"):
        to16 = "DTYPE_FLOAT16" if lossy["method"] == "LOSSY_CAST_FLOAT16" else "DTYPE_BFLOAT16"
        assert _same(_floats(to16, payload), xhat)  # the reader converts exactly
        assert torch.equal(xhat.isnan(), x.isnan())
        assert torch.equal(xhat[x.isinf()], x[x.isinf()])
        # Every NaN is written as the quiet NaN of its sign (section 9.1).
        original, width = bytes.fromhex(lossy["original_hex"]), _WIDTH_BY_WIRE[dtype]
        quiet = 0x7E00 if to16 == "DTYPE_FLOAT16" else 0x7FC0
        for i in torch.nonzero(x.isnan()).flatten().tolist():
            sign = original[(i + 1) * width - 1] & 0x80
            assert payload[2 * i : 2 * i + 2] == (quiet | sign << 8).to_bytes(2, "little"), i
        rel, tiny, absolute = (
            (2.0**-11, 2.0**-14, 2.0**-25)
            if to16 == "DTYPE_FLOAT16"
            else (2.0**-8, 2.0**-126, 2.0**-134)
        )
        err, mag = (x - xhat).abs()[finite], x.abs()[finite]
        assert bool(
            (err <= torch.where(mag >= tiny, rel * mag, torch.full_like(mag, absolute))).all()
        )
    elif lossy["method"] == "LOSSY_BLOCK_INT8":
        block = lossy["block_size"]
        blocks = -(-n // block)
        scales = torch.frombuffer(bytearray(payload[: 4 * blocks]), dtype=torch.float32)
        q = torch.frombuffer(bytearray(payload[4 * blocks :]), dtype=torch.int8)
        s = scales.repeat_interleave(block)[:n].to(torch.float64)
        # x^ = float32(q * scale), then the tensor's dtype (one float32 multiplication).
        wide = (q.to(torch.float32) * scales.repeat_interleave(block)[:n]).to(torch.float64)
        assert torch.equal(_floats(dtype, _raw(wide.to(_TORCH_BY_WIRE[dtype]))), xhat)
        u, a0 = {
            "DTYPE_FLOAT16": (2.0**-11, 2.0**-24),
            "DTYPE_BFLOAT16": (2.0**-8, 2.0**-133),
        }.get(dtype, (0.0, 2.0**-142))
        bound = (0.5 + 2.0**-15) * s + u * xhat.abs() + a0
        assert bool(((x - xhat).abs() <= bound).all())
        assert torch.equal(xhat[x == 0], torch.zeros_like(xhat[x == 0]))
    else:
        k, width = lossy["k"], _WIDTH_BY_WIRE[dtype]
        index = torch.frombuffer(bytearray(payload[k * width :]), dtype=torch.int32).to(torch.int64)
        assert bool((index[1:] > index[:-1]).all()) and bool((index >= 0).all() & (index < n).all())
        original = bytes.fromhex(lossy["original_hex"])
        decoded = bytes.fromhex(lossy["decoded_hex"])
        for j, i in enumerate(index.tolist()):  # kept bit for bit
            assert payload[j * width : (j + 1) * width] == original[i * width : (i + 1) * width]
            assert decoded[i * width : (i + 1) * width] == original[i * width : (i + 1) * width]
        dropped = torch.ones(n, dtype=torch.bool)
        dropped[index] = False
        assert _raw(xhat[dropped]) == bytes(int(dropped.sum()) * 8)  # +0.0 (as float64)
        # Section 9.1's ranking: NaN first, then by magnitude, ties to the lower index.
        values = x.tolist()
        rank = sorted(
            range(n),
            key=lambda i: (0, 0.0, i) if math.isnan(values[i]) else (1, -abs(values[i]), i),
        )
        assert index.tolist() == sorted(rank[:k])


def _lossy_map(name: str) -> tensor_pb2.TensorMap:
    return tensor_pb2.TensorMap.FromString(_bin(name))


def _with_payload(t: Any, payload: bytes) -> None:
    t.data, t.raw_size, t.crc32c = payload, len(payload), crc32c.crc32c(payload)


def _swap_top_k_indices(t: Any) -> None:
    k, payload = t.lossy.k, bytearray(t.data)
    at = k * _WIDTH_BY_WIRE[tensor_pb2.Dtype.Name(t.dtype)]
    payload[at : at + 8] = payload[at + 4 : at + 8] + payload[at : at + 4]
    _with_payload(t, bytes(payload))


def _last_top_k_index(t: Any, value: int) -> None:
    _with_payload(t, t.data[:-4] + value.to_bytes(4, "little"))


# (vector, tensor index, mutation, words the error names). Each mirrors a case of
# TestLossyRefusals in tests/crosslang/go/conformance_test.go.
_LOSSY_REFUSALS: list[tuple[str, str, int, Any, tuple[str, ...]]] = [
    ("unknown method", "lossy_topk", 0, lambda t: setattr(t.lossy, "method", 5), ("method 5",)),
    ("k above n", "lossy_topk", 0, lambda t: setattr(t.lossy, "k", 257), ("k=257",)),
    ("k not the payload's", "lossy_topk", 0, lambda t: setattr(t.lossy, "k", 7), ("raw_size",)),
    (
        "block_size 0",
        "lossy_int8",
        3,
        lambda t: t.lossy.ClearField("block_size"),
        ("block_size 0",),
    ),
    (
        "block_size not the payload's",
        "lossy_int8",
        3,
        lambda t: setattr(t.lossy, "block_size", 16),
        ("raw_size",),
    ),
    (
        "shuffle on int8",
        "lossy_int8",
        3,
        lambda t: setattr(t, "filter", 1),
        ("must not be filtered",),
    ),
    (
        "shuffle on top-k",
        "lossy_topk",
        0,
        lambda t: setattr(t, "filter", 1),
        ("must not be filtered",),
    ),
    (
        "cast of a float16 tensor",
        "lossy_float16",
        0,
        lambda t: setattr(t, "dtype", tensor_pb2.DTYPE_FLOAT16),
        ("not allowed",),
    ),
    (
        "top-k of an int32 tensor",
        "lossy_topk",
        0,
        lambda t: setattr(t, "dtype", tensor_pb2.DTYPE_INT32),
        ("floating tensors only",),
    ),
    (
        "cast payload too short",
        "lossy_float16",
        0,
        lambda t: _with_payload(t, t.data[:-2]),
        ("raw_size",),
    ),
    (
        "top-k indices not ascending",
        "lossy_topk",
        0,
        _swap_top_k_indices,
        ("not strictly ascending",),
    ),
    (
        "top-k index out of range",
        "lossy_topk",
        0,
        lambda t: _last_top_k_index(t, 256),
        ("out of range",),
    ),
]


@pytest.mark.parametrize(
    ("vector", "index", "mutate", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in _LOSSY_REFUSALS],
)
def test_malformed_lossy_tensors_are_refused(
    vector: str, index: int, mutate: Any, words: tuple[str, ...]
) -> None:
    msg = _lossy_map(vector)
    mutate(msg.tensors[index])
    with pytest.raises(SerializationException) as info:
        decode_tensor_map(msg.SerializeToString())
    for word in (repr(msg.tensors[index].name), *words):
        assert word in str(info.value), (word, str(info.value))


def test_lossy_limits_count_the_logical_size() -> None:
    """Section 9.1: the per-tensor and per-map limits apply to n x width, not to
    the (smaller) payload."""
    data = _bin("lossy_topk")  # delta: 1024 bytes as float32, a payload of 64
    e = _expected("lossy_topk")
    payload_total = sum(t["raw_size"] for t in e["tensors"])
    logical_total = sum(len(_decoded_bytes(t)) for t in e["tensors"])
    decode_tensor_map(
        data, limits=DecodeLimits(max_tensor_bytes=1024, max_total_bytes=logical_total)
    )
    with pytest.raises(PayloadTooLargeError):
        decode_tensor_map(data, limits=DecodeLimits(max_tensor_bytes=1023))
    with pytest.raises(PayloadTooLargeError):
        decode_tensor_map(data, limits=DecodeLimits(max_total_bytes=logical_total - 1))
    assert payload_total < logical_total - 1


# ----------------------------------------------------------------------------- LZ4 (section 7)

# One case per reader check of an LZ4 tensor's data, on the golden vectors.
# lz4: tensor 0 is a 64x64 float32 (16,384 bytes) in one frame of one
# compressed block; lz4_frames: tensor 0 a 513x256 float32 in two frames
# (524,288 and 1,024 bytes). Each mirrors a case of TestLZ4Refusals in
# tests/crosslang/go/conformance_test.go.

_LZ4_HEADER = slice(4, 14)  # FLG, BD and the 8-byte content size of a flwire frame
_HC = 14


def _lz4_header(
    frame: bytes,
    *,
    flg: int | None = None,
    bd: int | None = None,
    content_size: int | None = None,
    hc_xor: int = 0,
) -> bytes:
    """``frame`` (a frame with a content size) with header fields replaced and
    the header checksum recomputed (then spoiled by ``hc_xor``), so that only
    the changed field is wrong."""
    b = bytearray(frame)
    if flg is not None:
        b[4] = flg
    if bd is not None:
        b[5] = bd
    if content_size is not None:
        b[6:14] = content_size.to_bytes(8, "little")
    b[_HC] = ref_lz4.header_checksum(bytes(b[_LZ4_HEADER])) ^ hc_xor
    return bytes(b)


def _raw_of(t: Any) -> bytes:
    """The filtered bytes of an unshuffled LZ4 tensor (the content of its frames)."""
    return ref_lz4.decompress_all(bytes(t.data))


def _set_data(t: Any, data: bytes) -> None:
    t.data = data


def _resize(t: Any, size: int, data: bytes) -> None:
    """Make ``t`` a uint8 tensor of ``size`` bytes whose data is ``data``."""
    t.dtype, t.filter = tensor_pb2.DTYPE_UINT8, tensor_pb2.FILTER_UNSPECIFIED
    t.ClearField("shape")
    t.shape.append(size)
    t.raw_size, t.data = size, data


def _with_frame(build: Any) -> Any:
    return lambda t: _set_data(t, build(t))


def _skippable(payload: bytes) -> bytes:
    return (0x184D2A50).to_bytes(4, "little") + len(payload).to_bytes(4, "little") + payload


# (id, vector, tensor index, mutation, words the error names)
_LZ4_REFUSALS: list[tuple[str, str, int, Any, tuple[str, ...]]] = [
    ("not a frame", "lz4", 0, _with_frame(_raw_of), ("not an LZ4 frame",)),
    (
        "skippable frame first",
        "lz4",
        0,
        _with_frame(lambda t: _skippable(b"skip") + t.data),
        ("not an LZ4 frame",),
    ),
    (
        "legacy frame",
        "lz4",
        0,
        _with_frame(lambda t: ref_lz4.LEGACY_MAGIC.to_bytes(4, "little") + t.data[4:]),
        ("not an LZ4 frame",),
    ),
    (
        "version 00",
        "lz4",
        0,
        _with_frame(lambda t: _lz4_header(t.data, flg=t.data[4] & 0x3F)),
        ("unknown version or flags",),
    ),
    (
        "reserved FLG bit",
        "lz4",
        0,
        _with_frame(lambda t: _lz4_header(t.data, flg=t.data[4] | 0x02)),
        ("unknown version or flags",),
    ),
    (
        "reserved BD bit",
        "lz4",
        0,
        _with_frame(lambda t: _lz4_header(t.data, bd=t.data[5] | 0x01)),
        ("unknown version or flags",),
    ),
    (
        "block maximum size id 3",
        "lz4",
        0,
        _with_frame(lambda t: _lz4_header(t.data, bd=3 << 4)),
        ("block size id 3",),
    ),
    (
        "dictionary id",
        "lz4",
        0,
        _with_frame(lambda t: ref_lz4.build_frame(_raw_of(t), block_max_id=4, dict_id=7)),
        ("dictionary",),
    ),
    (
        "no content size",
        "lz4",
        0,
        _with_frame(lambda t: ref_lz4.build_frame(_raw_of(t), block_max_id=4, content_size=None)),
        ("content size",),
    ),
    (
        "content size one more than raw_size",
        "lz4",
        0,
        _with_frame(lambda t: _lz4_header(t.data, content_size=16_385)),
        ("16385", "raw_size says 16384"),
    ),
    (
        "content size one less than raw_size",
        "lz4",
        0,
        _with_frame(lambda t: _lz4_header(t.data, content_size=16_383)),
        ("16383", "raw_size says 16384"),
    ),
    (
        "a frame after the last",
        "lz4_frames",
        0,
        _with_frame(lambda t: t.data + ref_lz4.build_frame(b"x")),
        ("frame #1 holds 1024 bytes and is not the last",),
    ),
    (
        "frames add up to one more than raw_size",
        "lz4_frames",
        0,
        _with_frame(
            lambda t: (
                t.data[: ref_lz4.split_frames(t.data)[0].end]
                + ref_lz4.build_frame(_raw_of(t)[524_288:] + b"x", block_max_id=4)
            )
        ),
        ("525313", "raw_size says 525312"),
    ),
    (
        "a missing last frame",
        "lz4_frames",
        0,
        _with_frame(lambda t: t.data[: ref_lz4.split_frames(t.data)[0].end]),
        ("524288", "raw_size says 525312"),
    ),
    (
        "a short frame before the last",
        "lz4",
        0,
        _with_frame(
            lambda t: (
                ref_lz4.build_frame(_raw_of(t)[:16], block_max_id=4)
                + ref_lz4.build_frame(_raw_of(t)[16:], block_max_id=4)
            )
        ),
        ("holds 16 bytes and is not the last",),
    ),
    (
        "a trailing byte",
        "lz4",
        0,
        _with_frame(lambda t: t.data + b"\x00"),
        ("not an LZ4 frame",),
    ),
    (
        "truncated header",
        "lz4",
        0,
        _with_frame(lambda t: t.data[:10]),
        ("truncated",),
    ),
    (
        "no end mark",
        "lz4",
        0,
        _with_frame(lambda t: t.data[:-4]),
        ("truncated",),
    ),
    (
        "block runs past the data",
        "lz4",
        0,
        _with_frame(lambda t: t.data[:100]),
        ("truncated",),
    ),
    (
        "block above the block maximum size",
        "lz4",
        0,
        # A block maximum of 64 KiB, and one stored block of 80 KiB.
        _with_frame(
            lambda t: ref_lz4.build_frame(_raw_of(t) * 5, block_max_id=4, block_sizes=[81_920])
        ),
        ("above the frame's block size 65536",),
    ),
    (
        "content size beyond what the blocks hold",
        "lz4",
        0,
        # 1 GiB declared (within the default limits) for one block of 30 bytes:
        # refused before 1 GiB is allocated.
        lambda t: _resize(t, 1 << 30, ref_lz4.build_frame(b"\x00" * 16, content_size=1 << 30)),
        ("more than its blocks can hold",),
    ),
    (
        "content size 0 with content",
        "lz4",
        0,
        # A 64 KiB frame, then a last frame that declares 0 bytes and holds one:
        # the sizes add up, and liblz4 does not check a Content Size of 0.
        lambda t: _resize(
            t,
            65_536,
            ref_lz4.build_frame(bytes(65_536), block_max_id=5)
            + ref_lz4.build_frame(b"x", content_size=0),
        ),
        ("decompresses to more than",),
    ),
    (
        "header checksum",
        "lz4",
        0,
        _with_frame(lambda t: _lz4_header(t.data, hc_xor=0x01)),
        ("corrupt LZ4 data",),
    ),
    (
        "blocks shorter than the content size",
        "lz4",
        0,
        # One literal-only block of 16,383 bytes in a frame that declares 16,384:
        # the block could hold more, so only decompressing finds it.
        _with_frame(
            lambda t: ref_lz4.build_frame(
                _raw_of(t)[:-1], block_max_id=4, compressed=True, content_size=16_384
            )
        ),
        ("LZ4",),
    ),
]


@pytest.mark.parametrize(
    ("vector", "index", "mutate", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in _LZ4_REFUSALS],
)
def test_malformed_lz4_data_is_refused(
    vector: str, index: int, mutate: Any, words: tuple[str, ...]
) -> None:
    msg = tensor_pb2.TensorMap.FromString(_bin(vector))
    t = msg.tensors[index]
    assert t.codec == tensor_pb2.CODEC_LZ4
    mutate(t)
    data = msg.SerializeToString()
    with pytest.raises(SerializationException) as info:
        decode_tensor_map(data, as_numpy=True)
    for word in (repr(t.name), *words):
        assert word in str(info.value), (word, str(info.value))


# The refusals that need no decompression come from walking the frames, before
# anything is allocated for the tensor: read_tensor_map refuses them already.
_LZ4_REFUSED_BY_DECOMPRESSING = {
    "content size 0 with content",
    "header checksum",
    "blocks shorter than the content size",
}


@pytest.mark.parametrize(
    ("vector", "index", "mutate"),
    [
        pytest.param(*case[1:4], id=case[0])
        for case in _LZ4_REFUSALS
        if case[0] not in _LZ4_REFUSED_BY_DECOMPRESSING
    ],
)
def test_malformed_lz4_frames_are_refused_before_decompressing(
    vector: str, index: int, mutate: Any
) -> None:
    msg = tensor_pb2.TensorMap.FromString(_bin(vector))
    mutate(msg.tensors[index])
    with pytest.raises(SerializationException):
        read_tensor_map(msg.SerializeToString())


@pytest.mark.parametrize("case", sorted(_LZ4_REFUSED_BY_DECOMPRESSING))
def test_lz4_frames_refused_by_decompressing_pass_the_walk(case: str) -> None:
    (vector, index, mutate) = next(c[1:4] for c in _LZ4_REFUSALS if c[0] == case)
    msg = tensor_pb2.TensorMap.FromString(_bin(vector))
    mutate(msg.tensors[index])
    assert read_tensor_map(msg.SerializeToString()).records[index].frames


def test_lz4_frames_of_other_writers_are_accepted() -> None:
    """Section 7: what flwire writers do not write but readers accept: content
    and block checksums, linked blocks, uncompressed blocks, 4 MiB and 64 KiB
    block maxima, an uncompressed block of 0 bytes; decoded to the .json bytes."""
    msg = tensor_pb2.TensorMap.FromString(_bin("lz4"))
    t = msg.tensors[0]
    raw = _raw_of(t)
    want = bytes.fromhex(_expected("lz4")["tensors"][0]["raw_hex"])
    assert raw == want  # the tensor is unshuffled
    frames = [
        lz4.frame.compress(raw, content_checksum=True, block_checksum=True, store_size=True),
        lz4.frame.compress(raw, block_size=lz4.frame.BLOCKSIZE_MAX4MB, store_size=True),
        lz4.frame.compress(
            raw, block_size=lz4.frame.BLOCKSIZE_MAX64KB, block_linked=True, store_size=True
        ),
        ref_lz4.build_frame(raw, block_max_id=7, block_sizes=[100, 0, 16_284]),
        ref_lz4.build_frame(raw, block_max_id=4, compressed=True, content_checksum=True),
        ref_lz4.build_frame(raw, block_max_id=4, block_checksum=True),
    ]
    for k, frame in enumerate(frames):
        t.data = frame
        out = decode_tensor_map(msg.SerializeToString(), as_numpy=True)
        assert out["smooth"].tobytes() == want, k


def test_lz4_frame_of_zero_bytes_for_an_empty_tensor_is_accepted() -> None:
    """Section 7: a reader MAY accept a frame of content size 0 for an empty
    tensor; flwire-python does (and never writes one)."""
    t = tensor_pb2.Tensor(name="e", dtype=tensor_pb2.DTYPE_FLOAT32, shape=[0, 3])
    t.codec = tensor_pb2.CODEC_LZ4
    t.data = ref_lz4.build_frame(b"")
    out = decode_tensor_map(tensor_pb2.TensorMap(tensors=[t]).SerializeToString(), as_numpy=True)
    assert out["e"].shape == (0, 3)


# ----------------------------------------------------------------------------- merging


def _lossy_field(**fields: int) -> bytes:
    """A Tensor.lossy field (key 0x52) holding the given LossyEncoding fields."""
    body = tensor_pb2.LossyEncoding(**fields).SerializeToString()  # type: ignore[arg-type]
    return bytes([0x52, len(body)]) + body


@pytest.mark.parametrize(
    "parts",
    [
        [{"method": 4}, {"k": 8}],  # one field per occurrence
        [{"method": 4, "k": 7}, {"k": 8}],  # the later value wins, the absent one stays
        [{"k": 8}, {"method": 1}, {"method": 4}],
    ],
)
def test_a_repeated_lossy_field_merges_as_protobuf_does(parts: list[dict[str, int]]) -> None:
    """Section 2.4: an embedded message that appears more than once is merged."""
    msg = tensor_pb2.TensorMap.FromString(_bin("lossy_topk"))
    t = msg.tensors[0]
    assert (t.lossy.method, t.lossy.k) == (tensor_pb2.LOSSY_TOP_K, 8)
    t.ClearField("lossy")
    body = t.SerializeToString(deterministic=True) + b"".join(_lossy_field(**p) for p in parts)
    merged = tensor_pb2.Tensor.FromString(body)
    assert (merged.lossy.method, merged.lossy.k) == (tensor_pb2.LOSSY_TOP_K, 8)  # protobuf
    rest = b"".join(
        bytes([0x0A]) + gen._varint_bytes(len(b)) + b
        for b in [u.SerializeToString(deterministic=True) for u in msg.tensors[1:]]
    )
    data = bytes([0x0A]) + gen._varint_bytes(len(body)) + body + rest
    got = decode_tensor_map(data, as_numpy=True)
    want = decode_tensor_map(_bin("lossy_topk"), as_numpy=True)
    assert list(got) == list(want)
    assert all(got[n].tobytes() == want[n].tobytes() for n in want)
