"""The Envelope and TransferPart golden vectors (tests/vectors/messages, listed
under ``messages`` in the manifest; docs/wire-format.md sections 14 and 14.1)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import crc32c
import numpy as np
import pytest
from google.protobuf import json_format, text_format

from flwire import decode_tensor_map, read_tensor_map
from flwire.messages import decode_message
from flwire.transport import message_headers
from flwire.transport.chunking import parse_part
from flwire.v1 import messages_pb2, transfer_pb2

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text("utf-8"))
ENTRIES = {m["name"]: m for m in MANIFEST["messages"]}
ENVELOPES = sorted(n for n, m in ENTRIES.items() if m["message"] == "flwire.v1.Envelope")
ALIGNMENT = 64


def _file(entry: dict[str, Any], kind: str) -> bytes:
    return (VECTORS / entry["files"][kind]["path"]).read_bytes()


def _expected(name: str) -> dict[str, Any]:
    return json.loads(_file(ENTRIES[name], "json"))


def test_message_files_match_the_manifest() -> None:
    listed = set()
    for entry in MANIFEST["messages"]:
        for kind, f in entry["files"].items():
            data = (VECTORS / f["path"]).read_bytes()
            assert (len(data), hashlib.sha256(data).hexdigest()) == (f["size"], f["sha256"]), kind
            listed.add(f["path"])
    assert {f"messages/{p.name}" for p in (VECTORS / "messages").iterdir()} == listed
    types = {_expected(n)["type"] for n in ENVELOPES}
    assert {"client_update", "global_update", "client_registration", "custom"} <= types


@pytest.mark.parametrize("name", ENVELOPES)
def test_envelope_decodes_to_its_expectations(name: str) -> None:
    e = _expected(name)
    data = _file(ENTRIES[name], "bin")
    msg = decode_message(data)
    env = msg.envelope
    assert msg.type == e["type"]
    assert (env.message_id, env.sender_id) == (e["message_id"], e["sender_id"])
    assert (env.timestamp.seconds, env.timestamp.nanos) == (
        e["timestamp"]["seconds"],
        e["timestamp"]["nanos"],
    )
    assert (env.schema_version.major, env.schema_version.minor) == (
        e["schema_version"]["major"],
        e["schema_version"]["minor"],
    )
    assert {k: v.decode() for k, v in message_headers(msg)} == e["headers"]
    assert e["headers"]["flwire-schema-version"] == "{major}.{minor}".format(**e["schema_version"])
    body = type(msg.body)()
    json_format.ParseDict(e["body"], body)
    assert msg.body == body
    # The text form parses to the same envelope as the bytes.
    text = text_format.Parse(_file(ENTRIES[name], "txtpb").decode(), messages_pb2.Envelope())
    assert text == messages_pb2.Envelope.FromString(data)
    if "weights" not in e:
        assert not msg.has_weights and not env.padding
        return
    weights = e["weights"]
    start = weights["offset"]
    assert start % ALIGNMENT == 0, "the TensorMap starts 64-aligned in the envelope"
    assert bytes(msg.weights or b"") == data[start : start + msg.weights_nbytes]
    tensors = decode_tensor_map(data[start : start + msg.weights_nbytes], as_numpy=True)
    assert list(tensors) == [t["name"] for t in weights["tensors"]]
    for rec, t in zip(read_tensor_map(msg.weights).records, weights["tensors"], strict=True):
        assert (rec.codec_name, rec.filter_name) == (t["codec"], t["filter"])
        assert rec.crc32c == int(t["crc32c"], 16)
        assert list(rec.shape) == t["shape"]
        assert tensors[t["name"]].tobytes() == bytes.fromhex(t["raw_hex"])
    # Every uncompressed tensor's data is 64-aligned from the start of the envelope.
    view = read_tensor_map(memoryview(data)[start : start + msg.weights_nbytes])
    base = memoryview(data)
    for rec in view.records:
        if rec.codec_name == "CODEC_UNSPECIFIED" and rec.raw_size:
            offset = _offset_in(base, rec.data)
            assert offset % ALIGNMENT == 0, (rec.name, offset)


def _offset_in(whole: memoryview, part: memoryview) -> int:
    return int(
        np.frombuffer(part, np.uint8).ctypes.data - np.frombuffer(whole, np.uint8).ctypes.data
    )


def test_transfer_parts_reassemble_the_envelope() -> None:
    entry = ENTRIES["transfer_parts"]
    doc = json.loads(_file(entry, "json"))
    whole = (VECTORS / doc["whole"]).read_bytes()
    assert doc["total_size"] == len(whole)
    assert int(doc["payload_crc32c"], 16) == crc32c.crc32c(whole)
    rebuilt = bytearray(doc["total_size"])
    seen = []
    for k, p in enumerate(doc["parts"]):
        raw = (VECTORS / p["path"]).read_bytes()
        generated = transfer_pb2.TransferPart.FromString(raw)
        part = parse_part(raw)
        # Section 14.1: part_index is 0-based, and the header says "<index>/<count>".
        assert part.index == generated.part_index == p["index"] == k
        assert p["headers"]["flwire-part"] == f"{k}/{doc['part_count']}"
        assert part.count == doc["part_count"] and part.transfer_id == doc["transfer_id"]
        assert part.total_size == doc["total_size"]
        assert part.crc == int(doc["payload_crc32c"], 16)
        assert (part.offset, len(part.data)) == (p["offset"], p["data_size"])
        assert len(part.data) == doc["part_data_bytes"] or k == doc["part_count"] - 1
        rebuilt[part.offset : part.offset + len(part.data)] = part.data
        seen.append(part.offset)
    assert len(seen) == doc["part_count"] >= 2
    assert bytes(rebuilt) == whole
    # The message headers of every part are those of the message itself.
    msg = decode_message(whole)
    headers = {k: v.decode() for k, v in message_headers(msg)}
    for p in doc["parts"]:
        assert {k: v for k, v in p["headers"].items() if k != "flwire-part"} == headers
