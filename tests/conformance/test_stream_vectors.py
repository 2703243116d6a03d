"""The streamed-transfer golden vectors (tests/vectors/messages/stream*.json,
listed under ``messages`` in the manifest) and the stream refusals
(tests/vectors/stream_refusals, listed under ``stream_refusals``): spec
section 14.5. flwire-python's StreamAssembler must decode each stream to the
tensors of its ``.json`` and refuse each refusal for its check (the ids of
section 14.5; for the cases only a verifying reader refuses, the reasons of
section 14.3)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import struct
from pathlib import Path
from typing import Any

import blake3
import crc32c
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf import json_format

from flwire.exceptions import RefusedMessageError
from flwire.security.signing import check_sender, verify_stream
from flwire.tensors.decode import read_chunk
from flwire.transport import message_headers
from flwire.transport.streaming import STREAM_HEADER, Failed, Finished, StreamAssembler
from flwire.transport.streaming.format import parse_part
from flwire.v1 import tensor_pb2

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors"
SPEC = ROOT / "docs" / "wire-format.md"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text("utf-8"))
STREAMS = {m["name"]: m for m in MANIFEST["messages"] if m["message"] == "flwire.v1.StreamPart"}
REFUSALS = {r["name"]: r for r in MANIFEST["stream_refusals"]}
#: The streams with lossy chunks (section 14.5), one per method family.
LOSSY_STREAMS = {"stream_lossy_float16", "stream_lossy_int8", "stream_lossy_topk"}
#: Streams with packed chunks (a chunk holding several tensors).
PACKED_STREAMS = {"stream_packed"}
#: The reasons of section 14.3 that only signature verification gives.
VERIFY_REASONS = {"unsigned", "bad_signature", "unknown_key", "sender_mismatch"}

#: How flwire-python words each check's refusal (the reason of the first Failed
#: that is not a skipped copy). Each refusal must match its own check and no other.
SIGNATURES: dict[str, str] = {
    "stream_part": r"^not a valid stream part",
    "stream_gap": r"arrived where part \d+ was expected \(parts lost\)",
    "stream_no_head": r"of a stream whose head was not received",
    "stream_head": r"^refused its head",
    "chunk_tensor_index": r"tensor_index \d+ of \d+ tensors",
    "chunk_offset": r"starts at element \d+, where \d+ was expected",
    "chunk_elements": r"a chunk holds|a chunk's tensor|from element \d+: lossy method",
    "chunk_overrun": r"which has room for \d+ more",
    "chunk_packed": r"every tensor of a chunk but its last must end its tensor",
    "chunk_decode": r"^a chunk did not decode",
    "stream_part_count": r"^the seal counts \d+ parts; \d+ arrived",
    "stream_crc32c": r"^CRC-32C of the parts is",
    "stream_incomplete": r"got \d+ of its \d+ elements",
    "stream_signed": r"signature the head did not announce|the head announced a signature",
}
#: What each case of a check with several cases is refused for, in particular.
DETAILS: dict[str, str] = {
    "part_two_items": r"holds 2 items",
    "chunk_elements_twice": r"elements given twice",
    "head_with_weights": r"carries weights of its own",
    "head_message_id": r"not the transfer_id",
    "head_signed_envelope": r"envelope is signed",
    "head_heartbeat": r"heartbeat message carries no weights",
    "head_duplicate_names": r"two tensors named",
    "head_shape_overflow": r"strides overflow 64 bits",
    "chunk_lossy_integer": r"lossy method int8 applies to floating tensors only, not int64",
    "chunk_lossy_topk_indices": r"ascending",
    "chunk_dtype": r"holds float64 elements, but its tensor is float32",
    "chunk_bad_crc32c": r"CRC-32C",
    "chunk_packed_dtype": r"holds float32 elements, but its tensor is float16",
    "chunk_packed_past_end": r"tensor_index 6 of 6 tensors \(the chunk's tensor 2 of 2, packed\)",
    "chunk_packed_started": r"tensor 'enc.bias' starts at element 0, where 2 was expected",
    "seal_signature_unannounced": r"did not announce",
    "seal_signature_missing": r"does not carry",
}


def _read(path: str) -> bytes:
    return (VECTORS / path).read_bytes()


def _doc(name: str) -> dict[str, Any]:
    return json.loads(_read(STREAMS[name]["files"]["json"]["path"]))


def _assemble(values: list[bytes]) -> tuple[list[Finished], list[Failed], StreamAssembler]:
    """Feed ``values`` in order; what finished and what failed (skipped copies included)."""

    async def go() -> tuple[list[Finished], list[Failed], StreamAssembler]:
        assembler = StreamAssembler()
        finished, failed = [], []
        for k, value in enumerate(values):
            done, bad = await assembler.add(value, k)
            if done is not None:
                finished.append(done)
            failed.extend(bad)
        return finished, failed, assembler

    return asyncio.run(go())


def _trust(entry: dict[str, Any]) -> dict[str, Ed25519PublicKey]:
    return {
        key_id: Ed25519PublicKey.from_public_bytes(bytes.fromhex(public))
        for key_id, public in entry.get("trust", {}).items()
    }


def test_stream_files_match_the_manifest() -> None:
    assert set(STREAMS) == {"stream", "stream_signed", *LOSSY_STREAMS, *PACKED_STREAMS}
    listed = set()
    for r in MANIFEST["stream_refusals"]:
        for f in r["parts"]:
            data = _read(f["path"])
            assert (len(data), hashlib.sha256(data).hexdigest()) == (f["size"], f["sha256"])
            listed.add(f["path"])
    own = {p for p in listed if p.startswith("stream_refusals/")}
    assert {f"stream_refusals/{p.name}" for p in (VECTORS / "stream_refusals").iterdir()} == own
    assert listed - own <= {f["path"] for m in STREAMS.values() for f in m["files"].values()}, (
        "a refusal reuses only the valid streams' parts"
    )


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_stream_decodes_to_its_expectations(name: str) -> None:
    doc = _doc(name)
    values = [_read(p["path"]) for p in doc["parts"]]
    assert len(values) == doc["part_count"] >= 3
    # Section 14.5: what the seal's CRC-32C covers, from the spec's text.
    assert int(doc["stream_crc32c"], 16) == crc32c.crc32c(b"".join(values[:-1]))
    finished, failed, assembler = _assemble(values)
    assert failed == [] and len(finished) == 1 and assembler.pending_streams == 0
    done = finished[0]
    msg = done.message
    assert done.transfer_id == doc["transfer_id"] == msg.message_id
    assert done.tokens == list(range(len(values)))
    env, e = msg.envelope, doc["envelope"]
    assert (msg.type, msg.message_id, msg.sender_id) == (e["type"], e["message_id"], e["sender_id"])
    assert (env.timestamp.seconds, env.timestamp.nanos) == (
        e["timestamp"]["seconds"],
        e["timestamp"]["nanos"],
    )
    assert (env.schema_version.major, env.schema_version.minor) == (
        e["schema_version"]["major"],
        e["schema_version"]["minor"],
    )
    body = type(msg.body)()
    json_format.ParseDict(e["body"], body)
    assert msg.body == body
    headers = {k: v.decode() for k, v in message_headers(msg)}
    assert headers == e["headers"]
    for k, p in enumerate(doc["parts"]):
        assert p["headers"] == {**headers, STREAM_HEADER: str(k)}
    tensors = msg.tensors(as_numpy=True)
    assert list(tensors) == [t["name"] for t in doc["tensors"]]
    for t in doc["tensors"]:
        got = tensors[t["name"]]
        assert list(got.shape) == t["shape"] and got.nbytes == t["raw_size"]
        assert got.tobytes() == bytes.fromhex(t["raw_hex"])
        assert crc32c.crc32c(got.tobytes()) == int(t["crc32c"], 16)
    if doc["signed"]:
        _check_signature(doc, values, done)
    else:
        assert done.signature is None and done.digest is None


def _check_signature(doc: dict[str, Any], values: list[bytes], done: Finished) -> None:
    sig = doc["signature"]
    signed = b"".join(values[:-1])
    assert len(signed) == sig["signed_length"]
    digest = blake3.blake3(signed).digest()
    assert digest.hex() == sig["digest_hex"] and done.digest == digest
    key_id = sig["key_id"].encode()
    payload = (
        b"flwire.v1 stream signature\x00"
        + struct.pack("<I", 1)
        + bytes([len(key_id)])
        + key_id
        + digest
    )
    assert payload.hex() == sig["signed_payload_hex"]
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(sig["public_key_hex"]))
    public.verify(bytes.fromhex(sig["signature_hex"]), payload)  # raises if it does not verify
    assert done.signature is not None and done.signature.signature.hex() == sig["signature_hex"]
    got = verify_stream(done.signature, done.digest, {sig["key_id"]: public})
    assert got == sig["key_id"] == done.message.sender_id
    check_sender(done.message, sig["key_id"])


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_stream_parts_are_as_listed(name: str) -> None:
    doc = _doc(name)
    filled = [0] * len(doc["tensors"])
    for k, p in enumerate(doc["parts"]):
        part = parse_part(_read(p["path"]))
        assert (part.transfer_id, part.index) == (doc["transfer_id"], k)
        assert p["kind"] == (
            "head" if k == 0 else "seal" if k == len(doc["parts"]) - 1 else "chunk"
        )
        if part.head is not None:
            assert part.head.signed == doc["signed"]
            assert [i.name for i in part.head.tensors] == [t["name"] for t in doc["tensors"]]
        if part.seal is not None:
            assert part.seal.part_count == doc["part_count"]
        if part.chunk is None:
            continue
        c = part.chunk
        assert (c.tensor_index, c.element_offset) == (p["tensor_index"], p["element_offset"])
        recs = read_chunk(c.elements)
        listed = [p, *p.get("packed", [])]
        assert len(recs) == len(listed)
        for j, (rec, q) in enumerate(zip(recs, listed, strict=True)):
            assert (q["tensor_index"], q["element_offset"]) == (
                c.tensor_index + j,
                c.element_offset if j == 0 else 0,
            )
            _check_listed(rec, q, filled)
            if j < len(recs) - 1:  # packed: it ends its tensor
                index = q["tensor_index"]
                assert filled[index] == _numel(doc["tensors"][index]["shape"])
    assert filled == [_numel(t["shape"]) for t in doc["tensors"]]
    # The vector is what it says: one tensor in several chunks; several codecs, or
    # lossy chunks beside exact ones; packed chunks in the packed vectors only.
    chunks = [p for p in doc["parts"] if p["kind"] == "chunk"]
    assert max(sum(1 for p in chunks if p["tensor_index"] == i) for i in range(len(filled))) >= 2
    if name in LOSSY_STREAMS:
        assert {"lossy" in p for p in chunks} == {True, False}
    else:
        assert len({p["codec"] for p in chunks}) >= 2
    assert any("packed" in p for p in chunks) == (name in PACKED_STREAMS)


def _check_listed(rec: Any, p: dict[str, Any], filled: list[int]) -> None:
    """One tensor of a chunk against its listing in the vector's .json; counts
    its elements in ``filled``."""
    assert p["element_offset"] == filled[p["tensor_index"]]
    assert (rec.codec_name, rec.filter_name) == (p["codec"], p["filter"])
    lossy = p.get("lossy")
    assert (rec.lossy is None) == (lossy is None)
    if rec.lossy is not None and lossy is not None:
        method = tensor_pb2.Lossy.Name(rec.lossy.method)
        assert (method, rec.lossy.block_size, rec.lossy.k) == (
            lossy["method"],
            lossy["block_size"],
            lossy["k"],
        )
        assert rec.decoded_size == p["decoded_size"]
    assert (list(rec.shape), rec.raw_size, rec.crc32c) == (
        [p["element_count"]],
        p["raw_size"],
        int(p["crc32c"], 16),
    )
    filled[p["tensor_index"]] += p["element_count"]


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_redelivered_parts_are_skipped(name: str) -> None:
    """Every part twice in a row: the copies are skipped, the message comes once."""
    values = [_read(p["path"]) for p in _doc(name)["parts"]]
    finished, failed, _ = _assemble([v for v in values for _ in (0, 1)])
    assert len(finished) == 1
    assert len(failed) == len(values) and all(f.duplicate for f in failed)


def _spec_stream_check_ids() -> set[str]:
    """The check ids section 14.5 defines: ``[id]`` in backticks."""
    text = SPEC.read_text("utf-8")
    start = text.index("\n### 14.5 ")
    end = text.index("\n## 15. ", start)
    return set(re.findall(r"`\[([a-z0-9_]+)\]`", text[start:end]))


def test_every_stream_check_of_the_spec_has_a_refusal() -> None:
    ids = _spec_stream_check_ids()
    assert ids == set(SIGNATURES), "check ids in section 14.5 and this runner differ"
    covered = {r["check"] for r in REFUSALS.values()}
    assert covered == ids | VERIFY_REASONS, f"without a refusal: {sorted(ids - covered)}"
    for r in REFUSALS.values():
        assert r["section"] == ("14.3" if r["check"] in VERIFY_REASONS else "14.5")


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_stream_refusal_is_refused_for_its_check(name: str) -> None:
    refusal = REFUSALS[name]
    check = refusal["check"]
    values = [_read(f["path"]) for f in refusal["parts"]]
    finished, failed, assembler = _assemble(values)
    assert assembler.pending_streams == 0, "nothing of a refused stream is left under way"
    if check in VERIFY_REASONS:
        assert not failed and len(finished) == 1, "the stream itself checks out"
        done = finished[0]
        with pytest.raises(RefusedMessageError) as info:
            key_id = verify_stream(done.signature, done.digest, _trust(refusal))
            assert key_id is not None
            check_sender(done.message, key_id)
        assert info.value.reason == check
        return
    assert finished == [], "a refused stream hands nothing out"
    first = next(f for f in failed if not f.duplicate)
    matched = {c for c, pattern in SIGNATURES.items() if re.search(pattern, first.reason)}
    assert matched == {check}, first.reason
    if name in DETAILS:
        assert re.search(DETAILS[name], first.reason), first.reason
    # Every record of the refused stream is handed back, to be settled.
    assert sorted(t for f in failed for t in f.tokens) == list(range(len(values)))
