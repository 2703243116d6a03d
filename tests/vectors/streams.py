"""Streamed-transfer golden vectors (docs/wire-format.md section 14.5).

``stream`` and ``stream_signed`` are client updates written by flwire's
``StreamWriter`` with a small record limit (``RECORD_VALUE_BYTES``: 128 raw
bytes per chunk instead of a real transport's ~1 MB), so that one tensor
takes several chunks; ``stream_signed`` is signed in its seal with the public
test key of the signed envelope vector. Each part is ``messages/<name>.<i>.bin``
and ``messages/<name>.json`` describes the parts and the tensors a reader
must decode. Everything the ``.json`` states is derived here from the inputs
(raw bytes packed with :mod:`struct`, the CRC-32C by the generator's bitwise
reference) and checked against what the writer wrote, parsed with the
generated classes and decompressed with ``zstandard`` and ``lz4`` directly.

The **stream refusals** (``stream_refusals/``) are sequences of parts a
reader must refuse, each for one check of section 14.5 (or, for a signed
stream, for a reason of section 14.3). They are built here by hand with the
generated classes from the parts of the valid vectors: a case lists its parts
in the order they arrive, reusing the valid vectors' files where a part is
unchanged; the parts after a changed one are renumbered and the seal is made
again (count, CRC-32C) wherever the case is not about them, so that each
case breaks one check.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3
import lz4.frame
import numpy as np
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import json_format

from flwire import EncodeOptions, messages, security
from flwire.messages import Message
from flwire.tensors.lossy import LossyConfig
from flwire.transport import message_headers
from flwire.transport.streaming import STREAM_HEADER, StreamWriter
from flwire.v1 import messages_pb2, tensor_pb2, transfer_pb2

HERE = Path(__file__).resolve().parent


def _messages_module() -> Any:
    """messages.py beside this file (TIMESTAMP, the test key), loaded once."""
    name = "flwire_golden_messages"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "messages.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


golden = _messages_module()

#: What the writer may put in a record's value: 1,024 bytes of room for a
#: chunk's fields, the 36-byte transfer id, and 128 bytes of raw tensor data.
RUN_BYTES = 128
TRANSFER_ID_BYTES = 36
RECORD_VALUE_BYTES = 1024 + TRANSFER_ID_BYTES + RUN_BYTES
#: The run size of the packed vector: room for whole tensors after a short run
#: (flwire-python counts 192 bytes per packed tensor besides its data).
RUN_BYTES_PACKED = 512
#: The domain of a seal's signature (section 14.5), written out from the spec.
STREAM_DOMAIN = b"flwire.v1 stream signature\x00"
ED25519 = messages_pb2.SIGNATURE_ALGORITHM_ED25519
#: The directory of the refusal cases' own parts.
REFUSALS_DIR = "stream_refusals"

_DTYPES = {  # wire name -> (struct format, numpy dtype, width)
    "DTYPE_FLOAT32": ("f", "<f4", 4),
    "DTYPE_FLOAT16": ("e", "<f2", 2),
    "DTYPE_FLOAT64": ("d", "<f8", 8),
    "DTYPE_INT64": ("q", "<i8", 8),
    "DTYPE_UINT8": ("B", "u1", 1),
}


@dataclass(frozen=True)
class StreamTensor:
    name: str
    dtype: str  # Dtype enum name
    shape: tuple[int, ...]
    values: tuple[float | int, ...]  # exact in the dtype

    @property
    def width(self) -> int:
        return _DTYPES[self.dtype][2]

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def raw(self) -> bytes:
        assert len(self.values) == self.numel, self.name
        return struct.pack(f"<{len(self.values)}{_DTYPES[self.dtype][0]}", *self.values)

    def array(self) -> np.ndarray:
        out = np.array(self.values, dtype=_DTYPES[self.dtype][1]).reshape(self.shape)
        assert out.tobytes() == self.raw(), self.name  # numpy and struct agree
        return out


@dataclass(frozen=True)
class StreamVector:
    name: str
    description: str
    message_id: str
    round_id: int
    tensors: tuple[StreamTensor, ...]
    compression: str
    shuffle: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    #: Signed with the test key under this key id (the sender id), if set.
    signed_by: str | None = None
    #: Lossy chunks (section 14.5) for the tensors this config applies to.
    lossy: LossyConfig | None = None
    #: Raw bytes per chunk (the writer's run size): at most RUN_BYTES_PACKED.
    run_bytes: int = RUN_BYTES

    @property
    def record_value_bytes(self) -> int:
        return 1024 + TRANSFER_ID_BYTES + self.run_bytes

    def message(self) -> Message:
        msg = messages.client_update(
            "client-7",
            self.round_id,
            {t.name: t.array() for t in self.tensors},
            metrics=self.metrics,
            num_examples=48,
            options=EncodeOptions(
                stream=True, compression=self.compression, shuffle=self.shuffle, lossy=self.lossy
            ),
        )
        msg.envelope.message_id = self.message_id
        msg.envelope.timestamp.seconds, msg.envelope.timestamp.nanos = golden.TIMESTAMP
        if self.signed_by is not None:
            security.sign_in_place(msg, self.signed_by, golden.signing_key())
        return msg

    def parts(self) -> list[bytes]:
        """The record values flwire's writer sends, in order."""

        async def collect() -> list[bytes]:
            writer = StreamWriter(self.message(), self.record_value_bytes, threads=1)
            return [bytes(v) async for v in writer.parts()]

        return asyncio.run(collect())


_CONV = tuple((i // 10) * 0.25 - 1.0 for i in range(100))  # also exact in float16
_FC = tuple(((i % 6) - 2) * 0.5 for i in range(48))
# Not exact in float16 (the casts round), distinct magnitudes (top-k has no ties).
_DENSE = tuple(((i * 37) % 101 - 50) / 7 for i in range(100))
_WIDE = tuple(((i * 13) % 29 - 14) / 3 for i in range(20))
# 128 values of distinct magnitudes (r / 7 - 9.3 = -(s / 7 - 9.3) has no integer r, s).
_DENSE128 = tuple((i * 37) % 131 / 7 - 9.3 for i in range(128))
# Compressible under zstd with the shuffle (few distinct values), exact in float32.
_PACKED = tuple((i // 15) * 0.5 - 2.0 for i in range(150))

VECTORS: list[StreamVector] = [
    StreamVector(
        "stream",
        "A ClientUpdate of round 6 as a streamed transfer under zstd with the byte "
        "shuffle, at 128 raw bytes per chunk: a 4x5x5 float32 in four chunks (three "
        "zstd, the last, of 4 elements, stored raw as zstd would not shrink it), a "
        "float16 and a 0-d int64 (one chunk each, raw).",
        "3b1e6f0a-5c2d-4e7b-9a8f-1d2c3b4a5e6f",
        6,
        (
            StreamTensor("conv.weight", "DTYPE_FLOAT32", (4, 5, 5), _CONV),
            StreamTensor("conv.bias", "DTYPE_FLOAT16", (4,), (0.5, -1.0, 2.0, 0.0)),
            StreamTensor("num_batches_tracked", "DTYPE_INT64", (), (42,)),
        ),
        "zstd",
        shuffle=True,
        metrics={"loss": 0.5},
    ),
    StreamVector(
        "stream_signed",
        "A ClientUpdate of round 7 as a streamed transfer under LZ4, signed in its "
        "seal with Ed25519 by key 'client-7' (the public test key of RFC 8032, "
        "section 7.1, TEST 1): a 3x16 float32 in two LZ4 chunks, a float32 of 3 "
        "(raw) and an empty 0x4 uint8, which has no chunk.",
        "c4d5e6f7-0819-4a2b-8c3d-4e5f60718293",
        7,
        (
            StreamTensor("fc.weight", "DTYPE_FLOAT32", (3, 16), _FC),
            StreamTensor("fc.bias", "DTYPE_FLOAT32", (3,), (0.25, -0.5, 1.0)),
            StreamTensor("mask", "DTYPE_UINT8", (0, 4), ()),
        ),
        "lz4",
        signed_by="client-7",
    ),
    StreamVector(
        "stream_lossy_float16",
        "A ClientUpdate of round 8 as a streamed transfer with lossy chunks cast to "
        "float16, under zstd with the byte shuffle: a 4x25 float32 in two chunks of "
        "64 and 36 elements (128 bytes of payload at most: R / 2 elements), a float64 "
        "of 20 in one chunk, both rounded to nearest even; an int64 of 3 (exact, "
        "below min_elements and not a float).",
        "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d",
        8,
        (
            StreamTensor("dense.weight", "DTYPE_FLOAT32", (4, 25), _DENSE),
            StreamTensor("dense.scale", "DTYPE_FLOAT64", (20,), _WIDE),
            StreamTensor("steps", "DTYPE_INT64", (3,), (1, 2, 3)),
        ),
        "zstd",
        shuffle=True,
        lossy=LossyConfig("float16", min_elements=16),
    ),
    StreamVector(
        "stream_lossy_int8",
        "A ClientUpdate of round 9 as a streamed transfer with block int8 chunks "
        "(8 elements per float32 scale), uncompressed: a 4x25 float32 in chunks of "
        "80 and 20 elements (whole blocks: floor(128 / 12) x 8 per chunk; the last "
        "block of 4), decoding to what the message sent whole decodes to; a "
        "float32 of 4 (exact, below min_elements).",
        "6b7c8d9e-0f1a-4b2c-9d3e-4f5a6b7c8d9e",
        9,
        (
            StreamTensor("dense.weight", "DTYPE_FLOAT32", (4, 25), _DENSE),
            StreamTensor("dense.bias", "DTYPE_FLOAT32", (4,), (0.5, -1.0, 2.0, 0.0)),
        ),
        "none",
        lossy=LossyConfig("int8", block_size=8, min_elements=16),
    ),
    StreamVector(
        "stream_lossy_topk",
        "A ClientUpdate of round 10 as a streamed transfer with top-k "
        "chunks, uncompressed: a 4x32 float32 in four chunks of 32 elements "
        "(raw-sized); of the tensor's K = ceil(0.125 x 128) = 16, each keeps its "
        "share, floor(16 x end / 128) - floor(16 x start / 128) = 4, of largest "
        "magnitudes (16 values and 16 uint32 indices); a float32 of 4 (exact, "
        "below min_elements).",
        "7c8d9e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0f",
        10,
        (
            StreamTensor("dense.weight", "DTYPE_FLOAT32", (4, 32), _DENSE128),
            StreamTensor("dense.bias", "DTYPE_FLOAT32", (4,), (0.5, -1.0, 2.0, 0.0)),
        ),
        "none",
        lossy=LossyConfig("topk", topk_fraction=0.125, min_elements=16),
    ),
    StreamVector(
        "stream_packed",
        "A ClientUpdate of round 11 as a streamed transfer with packed chunks, under "
        "zstd with the byte shuffle, at 512 raw bytes per chunk: a float32 of 150 in "
        "a chunk of 128 elements (zstd), then a packed chunk of its last 22 elements, "
        "a float16 of 4 and a 0-d int64, whole (each raw: zstd would not shrink it); "
        "a float32 of 10 in a chunk of its own (what was left of the record has no room "
        "for it and its 192 bytes of header room); an empty uint8, which has no chunk "
        "and ends the packing; a float32 of 2 in a chunk of its own.",
        "8d9e0f1a-2b3c-4d4e-9f5a-6b7c8d9e0f1a",
        11,
        (
            StreamTensor("enc.weight", "DTYPE_FLOAT32", (150,), _PACKED),
            StreamTensor("enc.bias", "DTYPE_FLOAT16", (4,), (0.5, -1.0, 2.0, 0.0)),
            StreamTensor("step", "DTYPE_INT64", (), (42,)),
            StreamTensor("dec.weight", "DTYPE_FLOAT32", (10,), _PACKED[:10]),
            StreamTensor("mask", "DTYPE_UINT8", (0,), ()),
            StreamTensor("dec.bias", "DTYPE_FLOAT32", (2,), (0.25, -0.5)),
        ),
        "zstd",
        shuffle=True,
        run_bytes=RUN_BYTES_PACKED,
    ),
]


# --- expectations ------------------------------------------------------------


def _unshuffle(data: bytes, width: int) -> bytes:
    """Section 6's byte shuffle undone: byte j of element i is at j * n + i."""
    planes = np.frombuffer(data, np.uint8).reshape(width, len(data) // width)
    return planes.T.tobytes()


def _chunk_raw(t: tensor_pb2.Tensor, width: int | None = None) -> bytes:
    """A chunk tensor's raw bytes (a lossy one's payload, whose elements are
    ``width`` bytes wide), decoded with zstandard / lz4 directly."""
    if t.codec == tensor_pb2.CODEC_UNSPECIFIED:
        filtered = t.data
    elif t.codec == tensor_pb2.CODEC_ZSTD:
        filtered = zstandard.ZstdDecompressor().decompress(t.data)
    else:
        assert t.codec == tensor_pb2.CODEC_LZ4
        filtered = lz4.frame.decompress(t.data)
    if width is None:
        width = _DTYPES[tensor_pb2.Dtype.Name(t.dtype)][2]
    if t.filter == tensor_pb2.FILTER_BYTE_SHUFFLE:
        return _unshuffle(filtered, width)
    return filtered


def _signature_doc(key_id: str, signed: bytes, signature: bytes) -> dict[str, Any]:
    digest = blake3.blake3(signed).digest()
    payload = STREAM_DOMAIN + struct.pack("<I", ED25519) + bytes([len(key_id)])
    payload += key_id.encode() + digest
    public = golden.signing_key().public_key()
    public.verify(signature, payload)  # raises if the writer signed anything else
    raw_public = Ed25519PrivateKey.from_private_bytes(golden.TEST_KEY_SEED).public_key()
    return {
        "key_id": key_id,
        "algorithm": "SIGNATURE_ALGORITHM_ED25519",
        "test_key_seed_hex": golden.TEST_KEY_SEED.hex(),
        "public_key_hex": raw_public.public_bytes_raw().hex(),
        "signed_length": len(signed),
        "digest_hex": digest.hex(),
        "signed_payload_hex": payload.hex(),
        "signature_hex": signature.hex(),
    }


#: Lossy methods by wire name: (LossyConfig's short name, payload element width).
_LOSSY = {
    "LOSSY_CAST_FLOAT16": ("float16", 2),
    "LOSSY_CAST_BFLOAT16": ("bfloat16", 2),
    "LOSSY_BLOCK_INT8": ("int8", 1),
    "LOSSY_TOP_K": ("topk", 1),
}
#: (method, dtype, raw bytes, block_size, k) -> (payload, decoded raw bytes): the
#: generator's reference lossy encodings of section 9.1 (dtype as "float32").
LossyReference = Callable[[str, str, bytes, int, int], tuple[bytes, bytes]]


def _lossy_chunk(
    vector: StreamVector, t: StreamTensor, offset: int, count: int
) -> tuple[int, int] | None:
    """(block_size, k) of the lossy encoding flwire-python's writer gives a chunk
    of ``count`` elements of ``t`` (section 14.5), or None when it goes exact:
    the config does not apply to the tensor, or the payload would not be smaller
    (section 9.1's bounds)."""
    config = vector.lossy
    if config is None or t.numel < config.min_elements or t.dtype not in _FLOATS:
        return None
    if config.method in ("float16", "bfloat16"):
        return (0, 0) if t.width > 2 else None
    if config.method == "int8":
        blocks = -(-count // config.block_size)
        return (config.block_size, 0) if 4 * blocks + count < count * t.width else None
    # The chunk's share of the tensor's K (section 14.5), at most one in 8.
    assert config.topk_k is None and t.numel == len(t.values)
    total = math.ceil(config.topk_fraction * t.numel)
    if 8 * total > t.numel or count < 8:  # too dense for top-k, whole or in this chunk
        return None
    share = total * (offset + count) // t.numel - total * offset // t.numel
    return (0, min(max(1, share), count // 8))


_FLOATS = ("DTYPE_FLOAT32", "DTYPE_FLOAT64", "DTYPE_FLOAT16")


def _chunk_entry(
    vector: StreamVector,
    elements: Any,
    index: int,
    offset: int,
    filled: list[int],
    decoded: list[bytes],
    crc: Callable[[bytes], int],
    lossy_reference: LossyReference | None = None,
) -> dict[str, Any]:
    """Check one tensor of a chunk (of tensor ``index`` from element ``offset``)
    against the inputs, count it in ``filled`` and ``decoded``, and describe it."""
    t = vector.tensors[index]
    count = elements.shape[0]
    assert elements.name == ""
    assert tensor_pb2.Dtype.Name(elements.dtype) == t.dtype and len(elements.shape) == 1
    assert offset == filled[index] and count >= 1
    start = offset * t.width
    want = t.raw()[start : start + count * t.width]
    params = _lossy_chunk(vector, t, offset, count)
    assert elements.HasField("lossy") == (params is not None), (vector.name, index, offset)
    stored = want
    entry: dict[str, Any] = {}
    if params is not None:
        assert vector.lossy is not None and lossy_reference is not None
        method = tensor_pb2.Lossy.Name(elements.lossy.method)
        short, width = _LOSSY[method]
        assert short == vector.lossy.method
        assert (elements.lossy.block_size, elements.lossy.k) == params
        dtype = t.dtype.removeprefix("DTYPE_").lower()
        stored, want = lossy_reference(short, dtype, want, *params)
        assert _chunk_raw(elements, width) == stored
        entry["lossy"] = {"method": method, "block_size": params[0], "k": params[1]}
    else:
        assert _chunk_raw(elements) == want
    assert elements.raw_size == len(stored) and elements.crc32c == crc(stored)
    assert len(stored) <= vector.run_bytes
    filled[index] += count
    decoded[index] += want
    entry.update(
        tensor_index=index,
        element_offset=offset,
        element_count=count,
        codec=tensor_pb2.Codec.Name(elements.codec),
        filter=tensor_pb2.Filter.Name(elements.filter),
        raw_size=len(stored),
        crc32c=f"{crc(stored):08x}",
    )
    if params is not None:
        entry["decoded_size"] = len(want)
    return entry


def expectations(
    vector: StreamVector,
    parts: list[bytes],
    crc: Callable[[bytes], int],
    lossy_reference: LossyReference,
) -> dict[str, Any]:
    """The ``.json`` of a stream vector (part paths left to the caller), after
    checking every part against the inputs (a lossy chunk's payload against the
    generator's reference encoding, ``lossy_reference``)."""
    msg = vector.message()
    env = msg.envelope
    headers = {k: v.decode() for k, v in message_headers(msg)}
    parsed = [transfer_pb2.StreamPart.FromString(p) for p in parts]
    n = len(parts)
    entries: list[dict[str, Any]] = []
    filled = [0] * len(vector.tensors)
    decoded: list[bytes] = [b""] * len(vector.tensors)
    for k, (raw_part, part) in enumerate(zip(parts, parsed, strict=True)):
        # The writer's bytes are the generated classes' deterministic form.
        assert part.SerializeToString(deterministic=True) == raw_part, (vector.name, k)
        assert part.transfer_id == vector.message_id and part.part_index == k
        kind = part.WhichOneof("item")
        entry: dict[str, Any] = {
            "index": k,
            "kind": kind,
            "size": len(raw_part),
            "headers": {**headers, STREAM_HEADER: str(k)},
        }
        if k == 0:
            assert kind == "head" and part.head.signed == (vector.signed_by is not None)
            assert part.head.envelope == env and not env.HasField("signature")
            assert [
                (i.name, tensor_pb2.Dtype.Name(i.dtype), tuple(i.shape)) for i in part.head.tensors
            ] == [(t.name, t.dtype, t.shape) for t in vector.tensors]
        elif k < n - 1:
            assert kind == "chunk"
            c = part.chunk
            assert len(c.elements.tensors) >= 1
            for j, elements in enumerate(c.elements.tensors):
                index = c.tensor_index + j
                offset = c.element_offset if j == 0 else 0
                described = _chunk_entry(
                    vector, elements, index, offset, filled, decoded, crc, lossy_reference
                )
                t = vector.tensors[index]
                if j < len(c.elements.tensors) - 1:  # packed: it ends its tensor
                    assert filled[index] == t.numel, (vector.name, k, j)
                    assert "lossy" not in described
                if j == 0:
                    entry.update(described)
                else:
                    entry.setdefault("packed", []).append(described)
        else:
            assert kind == "seal" and part.seal.part_count == n
            assert part.seal.stream_crc32c == crc(b"".join(parts[:-1]))
            assert part.seal.HasField("signature") == (vector.signed_by is not None)
        entries.append(entry)
    assert filled == [t.numel for t in vector.tensors], vector.name
    for t, got in zip(vector.tensors, decoded, strict=True):
        assert len(got) == len(t.raw()) and (vector.lossy is not None or got == t.raw())
    body = json_format.MessageToDict(msg.body, preserving_proto_field_name=True)
    doc: dict[str, Any] = {
        "name": vector.name,
        "description": vector.description,
        "message": "flwire.v1.StreamPart",
        "transfer_id": vector.message_id,
        "record_value_bytes": vector.record_value_bytes,
        "run_bytes": vector.run_bytes,
        "part_count": n,
        "stream_crc32c": f"{crc(b''.join(parts[:-1])):08x}",
        "signed": vector.signed_by is not None,
        "envelope": {
            "type": msg.type,
            "message_id": vector.message_id,
            "sender_id": env.sender_id,
            "timestamp": {"seconds": golden.TIMESTAMP[0], "nanos": golden.TIMESTAMP[1]},
            "schema_version": {
                "major": env.schema_version.major,
                "minor": env.schema_version.minor,
            },
            "headers": headers,
            "body": json.loads(json.dumps(body, sort_keys=True)),
        },
        "tensors": [
            {
                "name": t.name,
                "dtype": t.dtype,
                "shape": list(t.shape),
                "raw_size": len(got),
                "crc32c": f"{crc(got):08x}",
                "raw_hex": got.hex(),
            }
            for t, got in zip(vector.tensors, decoded, strict=True)
        ],
        "parts": entries,
    }
    if vector.signed_by is not None:
        sig = parsed[-1].seal.signature
        assert sig.key_id == vector.signed_by and sig.algorithm == ED25519
        doc["signature"] = _signature_doc(sig.key_id, b"".join(parts[:-1]), sig.signature)
    return doc


# --- refusals ----------------------------------------------------------------


@dataclass
class Refusal:
    name: str
    #: A check id of section 14.5, or a reason of section 14.3 for the cases that
    #: only signature verification refuses.
    check: str
    description: str
    #: Each part: a path of a valid vector's part, or new bytes.
    parts: list[str | bytes]
    #: Key ids -> the test key, for the cases a verifying reader refuses.
    trust: tuple[str, ...] = ()


VERIFY_REASONS = ("unsigned", "bad_signature", "unknown_key", "sender_mismatch")


def _parse(value: bytes) -> transfer_pb2.StreamPart:
    return transfer_pb2.StreamPart.FromString(value)


def _ser(part: transfer_pb2.StreamPart) -> bytes:
    return part.SerializeToString(deterministic=True)


def _renumber(value: bytes, index: int) -> bytes:
    part = _parse(value)
    part.part_index = index
    return _ser(part)


def _raw_elements(dtype: str, raw: bytes, crc: int) -> tensor_pb2.TensorMap:
    """A chunk's TensorMap: one unnamed, uncompressed 1-D tensor (no padding)."""
    width = _DTYPES[dtype][2]
    tensor = tensor_pb2.Tensor(
        dtype=tensor_pb2.Dtype.Value(dtype),
        shape=[len(raw) // width],
        raw_size=len(raw),
        crc32c=crc,
        data=raw,
    )
    return tensor_pb2.TensorMap(tensors=[tensor])


def _chunk(
    transfer_id: str, index: int, tensor_index: int, offset: int, elements: tensor_pb2.TensorMap
) -> bytes:
    chunk = transfer_pb2.TensorChunk(
        tensor_index=tensor_index, element_offset=offset, elements=elements
    )
    return _ser(transfer_pb2.StreamPart(transfer_id=transfer_id, part_index=index, chunk=chunk))


def _sign(key_id: str, records: Sequence[bytes]) -> messages_pb2.Signature:
    digest = blake3.blake3(b"".join(records)).digest()
    payload = STREAM_DOMAIN + struct.pack("<I", ED25519) + bytes([len(key_id)])
    payload += key_id.encode() + digest
    raw = golden.signing_key().sign(payload)
    return messages_pb2.Signature(key_id=key_id, algorithm=ED25519, signature=raw)


def build_refusals(
    valid: dict[str, list[bytes]], paths: dict[str, list[str]], crc: Callable[[bytes], int]
) -> list[Refusal]:
    """The refusal cases, from the valid vectors' parts (``valid``) and the paths
    of their files (``paths``)."""
    s, ss = valid["stream"], valid["stream_signed"]
    sp, ssp = paths["stream"], paths["stream_signed"]
    sid = _parse(s[0]).transfer_id
    conv = VECTORS[0].tensors[0]
    n = len(s)

    def value(item: str | bytes) -> bytes:
        if isinstance(item, bytes):
            return item
        for name, names in paths.items():
            if item in names:
                return valid[name][names.index(item)]
        raise AssertionError(item)

    def sealed(
        items: Sequence[str | bytes],
        *,
        count: int | None = None,
        signature: messages_pb2.Signature | None = None,
    ) -> list[str | bytes]:
        """``items`` (from part 0 on) and a seal that counts them and has their
        CRC-32C (the valid vector's seal file where it is the same)."""
        values = [value(v) for v in items]
        seal = transfer_pb2.StreamSeal(
            part_count=len(items) + 1 if count is None else count,
            stream_crc32c=crc(b"".join(values)),
        )
        if signature is not None:
            seal.signature.CopyFrom(signature)
        made = _ser(
            transfer_pb2.StreamPart(
                transfer_id=_parse(values[0]).transfer_id, part_index=len(items), seal=seal
            )
        )
        for name, names in paths.items():
            if made == valid[name][-1]:
                return [*items, names[-1]]
        return [*items, made]

    def renumbered(items: Sequence[bytes], first: int) -> list[str | bytes]:
        return [_renumber(v, first + i) for i, v in enumerate(items)]

    def head_with(change: Callable[[transfer_pb2.StreamPart], None]) -> bytes:
        head = _parse(s[0])
        change(head)
        return _ser(head)

    def conv_chunk(
        index: int, offset: int, values: Sequence[float], crc32c: int | None = None
    ) -> bytes:
        """A chunk of conv.weight, uncompressed (its CRC-32C right unless given)."""
        raw = struct.pack(f"<{len(values)}f", *values)
        elements = _raw_elements("DTYPE_FLOAT32", raw, crc(raw) if crc32c is None else crc32c)
        return _chunk(sid, index, 0, offset, elements)

    first = conv.values[:32]
    other = [-(v + 0.5) for v in conv.values[32:64]]  # exact in float32

    def lossy_elements(
        dtype: tensor_pb2.Dtype, count: int, payload: bytes, encoding: tensor_pb2.LossyEncoding
    ) -> tensor_pb2.TensorMap:
        tensor = tensor_pb2.Tensor(
            dtype=dtype, shape=[count], raw_size=len(payload), crc32c=crc(payload), data=payload
        )
        tensor.lossy.CopyFrom(encoding)
        return tensor_pb2.TensorMap(tensors=[tensor])

    # num_batches_tracked (int64, one element) as a block int8 payload: a scale
    # and one int8 value (4 + 1 bytes, smaller than its 8 raw bytes).
    int_lossy = lossy_elements(
        tensor_pb2.DTYPE_INT64,
        1,
        struct.pack("<fb", 1.0, 42),
        tensor_pb2.LossyEncoding(method=tensor_pb2.LOSSY_BLOCK_INT8, block_size=8),
    )
    # conv.weight's first 32 elements as top-k with k = 4 whose indices are not
    # ascending (the values are the elements at those indices).
    picks = [31, 2, 17, 30]
    topk_bad = lossy_elements(
        tensor_pb2.DTYPE_FLOAT32,
        32,
        struct.pack("<4f", *(first[i] for i in picks)) + struct.pack("<4I", *picks),
        tensor_pb2.LossyEncoding(method=tensor_pb2.LOSSY_TOP_K, k=4),
    )
    wide = struct.pack("<32d", *first)
    # Part 1 with its elements field given twice (protobuf would merge the maps).
    part1 = _parse(s[1])
    elements = part1.chunk.elements.SerializeToString(deterministic=True)
    body = part1.chunk.SerializeToString(deterministic=True)
    body += _key(3) + _varint(len(elements)) + elements
    twice = _ser(transfer_pb2.StreamPart(transfer_id=sid, part_index=1))
    twice += _key(4) + _varint(len(body)) + body
    # Part 1 with a seal field too.
    seal_field = transfer_pb2.StreamSeal(part_count=2).SerializeToString()
    two_items = s[1] + _key(5) + _varint(len(seal_field)) + seal_field
    # The signed stream with a chunk of other values: CRC-32C right, signature not.
    signed_chunk = _parse(ss[1])
    fc_other = [v + 1.0 for v in VECTORS[1].tensors[0].values[:32]]
    fc_raw = struct.pack("<32f", *fc_other)
    forged = _chunk(
        signed_chunk.transfer_id, 1, 0, 0, _raw_elements("DTYPE_FLOAT32", fc_raw, crc(fc_raw))
    )

    def add_weights(h: transfer_pb2.StreamPart) -> None:
        h.head.envelope.client_update.weights.SetInParent()

    def other_id(h: transfer_pb2.StreamPart) -> None:
        h.head.envelope.message_id = "3b1e6f0a-5c2d-4e7b-9a8f-1d2c3b4a5e70"

    def sign_envelope(h: transfer_pb2.StreamPart) -> None:
        h.head.envelope.signature.CopyFrom(
            messages_pb2.Signature(key_id="client-7", algorithm=ED25519, signature=bytes(64))
        )

    def heartbeat(h: transfer_pb2.StreamPart) -> None:
        h.head.envelope.heartbeat.CopyFrom(messages_pb2.Heartbeat(client_id="client-7"))

    def same_names(h: transfer_pb2.StreamPart) -> None:
        h.head.tensors[1].name = h.head.tensors[0].name

    def huge_empty(h: transfer_pb2.StreamPart) -> None:
        h.head.tensors.add(name="empty", dtype=tensor_pb2.DTYPE_UINT8, shape=[0, 1 << 62, 4])

    # The packed vector: enc.weight (float32 x150), enc.bias (float16 x4), step
    # (int64, 0-d), dec.weight (float32 x10), mask (uint8, empty), dec.bias
    # (float32 x2); part 2 packs enc.weight's last 22 elements, enc.bias and step.
    pk, pkp = valid["stream_packed"], paths["stream_packed"]
    pid = _parse(pk[0]).transfer_id
    enc, bias, step, _, _, dec_bias = next(v for v in VECTORS if v.name == "stream_packed").tensors

    def raw_tensor(dtype: str, raw: bytes) -> tensor_pb2.Tensor:
        (tensor,) = _raw_elements(dtype, raw, crc(raw)).tensors
        return tensor

    def packed(index: int, tensor_index: int, offset: int, *tensors: tensor_pb2.Tensor) -> bytes:
        return _chunk(pid, index, tensor_index, offset, tensor_pb2.TensorMap(tensors=tensors))

    enc_tail = enc.raw()[128 * 4 :]

    def part2_packing(*tensors: tensor_pb2.Tensor) -> list[str | bytes]:
        """stream_packed with part 2 (enc.weight from element 128, packed) made
        of ``tensors`` (resealed)."""
        return sealed([*pkp[:2], packed(2, 0, 128, *tensors), *pkp[3:-1]])

    return [
        Refusal(
            "gap",
            "stream_gap",
            "stream without part 2: part 3 arrives where part 2 is expected.",
            [sp[0], sp[1], *sp[3:]],
        ),
        Refusal(
            "no_head",
            "stream_no_head",
            "stream without its head: every part is of a transfer whose head the "
            "reader did not see; nothing is decoded or handed out.",
            [*sp[1:]],
        ),
        Refusal(
            "part_two_items",
            "stream_part",
            "stream whose part 1 holds a chunk and a seal field.",
            [sp[0], two_items, *sp[2:]],
        ),
        Refusal(
            "chunk_elements_twice",
            "stream_part",
            "stream whose part 1 gives its chunk's elements field twice (protobuf "
            "would merge the two maps into one of two tensors).",
            [sp[0], twice, *sp[2:]],
        ),
        Refusal(
            "head_with_weights",
            "stream_head",
            "stream whose head's ClientUpdate has a weights field (an empty TensorMap).",
            sealed([head_with(add_weights), *sp[1:-1]]),
        ),
        Refusal(
            "head_message_id",
            "stream_head",
            "stream whose head's envelope has a message_id other than the transfer_id.",
            sealed([head_with(other_id), *sp[1:-1]]),
        ),
        Refusal(
            "head_signed_envelope",
            "stream_head",
            "stream whose head's envelope carries a signature field (a stream is signed "
            "in its seal).",
            sealed([head_with(sign_envelope), *sp[1:-1]]),
        ),
        Refusal(
            "head_heartbeat",
            "stream_head",
            "stream whose head's body is a Heartbeat, a message that carries no weights.",
            sealed([head_with(heartbeat), *sp[1:-1]]),
        ),
        Refusal(
            "head_duplicate_names",
            "stream_head",
            "stream whose head names two tensors 'conv.weight'.",
            sealed([head_with(same_names), *sp[1:-1]]),
        ),
        Refusal(
            "head_shape_overflow",
            "stream_head",
            "stream whose head declares a fourth tensor, uint8 of shape [0, 2^62, 4]: "
            "no elements, but strides of 2^64 bytes.",
            sealed([head_with(huge_empty), *sp[1:-1]]),
        ),
        Refusal(
            "unknown_tensor_index",
            "chunk_tensor_index",
            "stream with one more chunk after the last (resealed), of tensor_index 3: "
            "the head declares 3 tensors.",
            sealed(
                [
                    *sp[:-1],
                    _chunk(sid, n - 1, 3, 0, _raw_elements("DTYPE_INT64", bytes(8), crc(bytes(8)))),
                ]
            ),
        ),
        Refusal(
            "chunk_out_of_order",
            "chunk_offset",
            "stream with the first two chunks of conv.weight swapped (renumbered, "
            "resealed): part 1 starts at element 32, where 0 is expected.",
            sealed([sp[0], *renumbered([s[2], s[1]], 1), *sp[3:-1]]),
        ),
        Refusal(
            "chunk_past_tensor_end",
            "chunk_overrun",
            "stream with one more chunk of conv.weight after its last (1 element at "
            "element_offset 100; renumbered, resealed): the tensor has 100 elements.",
            sealed([*sp[:5], conv_chunk(5, 100, [1.0]), *renumbered(s[5:-1], 6)]),
        ),
        Refusal(
            "chunk_lossy_integer",
            "chunk_elements",
            "stream whose chunk of num_batches_tracked (int64) is block int8 (a scale "
            "and one int8 value; resealed): lossy encodings apply to float tensors "
            "only (section 9.1, [lossy_dtype]).",
            sealed([*sp[:6], _chunk(sid, 6, 2, 0, int_lossy)]),
        ),
        Refusal(
            "chunk_lossy_topk_indices",
            "chunk_decode",
            "stream whose first chunk holds conv.weight's first 32 elements as top-k "
            "with k = 4 and indices 31, 2, 17, 30, not strictly ascending (resealed).",
            sealed([sp[0], _chunk(sid, 1, 0, 0, topk_bad), *sp[2:-1]]),
        ),
        Refusal(
            "chunk_dtype",
            "chunk_elements",
            "stream whose first chunk holds conv.weight's first 32 elements as float64 "
            "(the tensor is float32; resealed).",
            sealed(
                [
                    sp[0],
                    _chunk(sid, 1, 0, 0, _raw_elements("DTYPE_FLOAT64", wide, crc(wide))),
                    *sp[2:-1],
                ]
            ),
        ),
        Refusal(
            "chunk_bad_crc32c",
            "chunk_decode",
            "stream whose first chunk (uncompressed) records a CRC-32C one off its raw "
            "bytes' (resealed: the stream's CRC-32C is right).",
            sealed(
                [
                    sp[0],
                    conv_chunk(1, 0, first, crc32c=crc(struct.pack("<32f", *first)) ^ 1),
                    *sp[2:-1],
                ]
            ),
        ),
        Refusal(
            "stream_crc_mismatch",
            "stream_crc32c",
            "stream with part 2 replaced by a valid chunk of other values (its own "
            "CRC-32C right); the seal's stream_crc32c is the original parts'.",
            [sp[0], sp[1], conv_chunk(2, 32, other), *sp[3:]],
        ),
        Refusal(
            "part_count_mismatch",
            "stream_part_count",
            f"stream whose seal counts {n + 1} parts; {n} arrive (its CRC-32C is right).",
            sealed(sp[:-1], count=n + 1),
        ),
        Refusal(
            "incomplete",
            "stream_incomplete",
            "stream without the last chunk of conv.weight (renumbered, resealed): the "
            "seal arrives with 96 of its 100 elements.",
            sealed([*sp[:4], *renumbered(s[5:-1], 4)]),
        ),
        Refusal(
            "seal_signature_unannounced",
            "stream_signed",
            "stream (its head not signed) whose seal carries a signature of its parts "
            "by the test key 'client-7'.",
            sealed(sp[:-1], signature=_sign("client-7", s[:-1])),
        ),
        Refusal(
            "seal_signature_missing",
            "stream_signed",
            "stream_signed whose seal carries no signature (its head says signed).",
            sealed(ssp[:-1]),
        ),
        Refusal(
            "bad_signature",
            "bad_signature",
            "stream_signed with its first chunk replaced by a valid chunk of other "
            "values and the seal's CRC-32C made again, its signature kept: the stream "
            "checks out, its signature does not verify.",
            sealed(
                [ssp[0], forged, *ssp[2:-1]],
                signature=_parse(ss[-1]).seal.signature,
            ),
            trust=("client-7",),
        ),
        Refusal(
            "unsigned",
            "unsigned",
            "stream (unsigned) read by a reader that requires signatures.",
            list(sp),
            trust=("client-7",),
        ),
        Refusal(
            "unknown_key",
            "unknown_key",
            "stream_signed read by a reader that trusts the test key under the id 'client-8' only.",
            list(ssp),
            trust=("client-8",),
        ),
        Refusal(
            "sender_mismatch",
            "sender_mismatch",
            "stream_signed with its seal signed by the test key under the id "
            "'client-9' (trusted): the envelope's sender_id and client_id are "
            "'client-7'.",
            sealed(ssp[:-1], signature=_sign("client-9", ss[:-1])),
            trust=("client-9",),
        ),
        Refusal(
            "chunk_packed_incomplete",
            "chunk_packed",
            "stream_packed whose part 2 holds enc.weight's elements 128 to 148 (one "
            "short of its end), then enc.bias and step whole: a tensor followed by "
            "another in a chunk must end its tensor (resealed).",
            part2_packing(
                raw_tensor("DTYPE_FLOAT32", enc_tail[:-4]),
                raw_tensor("DTYPE_FLOAT16", bias.raw()),
                raw_tensor("DTYPE_INT64", step.raw()),
            ),
        ),
        Refusal(
            "chunk_packed_dtype",
            "chunk_elements",
            "stream_packed whose part 2 packs enc.bias as float32 (the tensor is "
            "float16; resealed).",
            part2_packing(
                raw_tensor("DTYPE_FLOAT32", enc_tail),
                raw_tensor("DTYPE_FLOAT32", struct.pack("<4f", *bias.values)),
                raw_tensor("DTYPE_INT64", step.raw()),
            ),
        ),
        Refusal(
            "chunk_packed_past_end",
            "chunk_tensor_index",
            "stream_packed whose last chunk packs, after dec.bias (the last tensor), a "
            "second float32 tensor, which would be tensor 6 of 6 (resealed).",
            sealed(
                [
                    *pkp[:-2],
                    packed(
                        len(pk) - 2,
                        5,
                        0,
                        raw_tensor("DTYPE_FLOAT32", dec_bias.raw()),
                        raw_tensor("DTYPE_FLOAT32", dec_bias.raw()),
                    ),
                ]
            ),
        ),
        Refusal(
            "chunk_packed_started",
            "chunk_offset",
            "stream_packed whose part 2 holds enc.bias's first 2 elements alone (chunks "
            "of different tensors may interleave), and part 3 the original part 2, "
            "which packs enc.bias from element 0 again where 2 is expected (renumbered, "
            "resealed).",
            sealed(
                [
                    *pkp[:2],
                    packed(2, 1, 0, raw_tensor("DTYPE_FLOAT16", bias.raw()[:4])),
                    *renumbered(pk[2:-1], 3),
                ]
            ),
        ),
    ]


def _key(number: int) -> bytes:
    """The key of a length-delimited field (numbers below 16)."""
    return bytes([(number << 3) | 2])


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)
