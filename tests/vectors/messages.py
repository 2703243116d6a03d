"""Envelope and TransferPart golden vectors (docs/wire-format.md section 14).

Each envelope vector is one ``flwire.v1.Envelope`` built with flwire's message
builders from fixed inputs, with a fixed ``message_id`` and ``timestamp``;
its ``.json`` holds the envelope's fields, the Kafka headers of section 14.1,
the body (protobuf's JSON mapping, with proto field names, without the
weights) and the weights: the offset of the TensorMap in the envelope and its
tensors, as in a tensor vector's ``.json``.

The transfer vector is one of those envelopes split into TransferParts with
flwire's splitter, at a small explicit part size (1,024 bytes of data per
part, instead of the 1 MB record limit of a real transport, so that the
vector stays small); its ``.json`` lists each part with its headers.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf import json_format

from flwire import EncodeOptions, messages, security
from flwire._protowire import crc32c
from flwire.messages import Message
from flwire.transport import message_headers
from flwire.transport.chunking import PART_HEADER, PART_OVERHEAD, split_payload

#: Every envelope vector's creation time: 2024-05-01T12:00:00.5Z.
TIMESTAMP = (1714564800, 500_000_000)
#: Data bytes per part of the transfer vector.
PART_DATA_BYTES = 1024


@dataclass(frozen=True)
class Weight:
    name: str
    shape: tuple[int, ...]
    values: tuple[float, ...]  # float32-exact

    def array(self) -> np.ndarray:
        return np.array(self.values, dtype="<f4").reshape(self.shape)

    def raw(self) -> bytes:
        return struct.pack(f"<{len(self.values)}f", *self.values)


@dataclass(frozen=True)
class EnvelopeVector:
    name: str
    description: str
    message_id: str
    build: Callable[[Any], Message]
    weights: tuple[Weight, ...] = ()
    compression: str = "none"
    #: Signed with TEST_KEY_SEED under this key id (the sender id), if set.
    signed_by: str | None = None

    def message(self) -> Message:
        state = {w.name: w.array() for w in self.weights} if self.weights else None
        msg = self.build(state)
        msg.envelope.message_id = self.message_id
        msg.envelope.timestamp.seconds, msg.envelope.timestamp.nanos = TIMESTAMP
        return msg

    def encode(self) -> bytes:
        """The vector's bytes: the message, signed when ``signed_by`` is set."""
        msg = self.message()
        if self.signed_by is None:
            return msg.to_bytes()
        return security.sign_message(msg, self.signed_by, signing_key())


#: The Ed25519 secret key (seed) of RFC 8032, section 7.1, TEST 1: a PUBLIC test
#: key, printed in the RFC. Never trust it for anything but these vectors.
TEST_KEY_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")


def signing_key() -> Any:
    return security.private_key_from_seed(TEST_KEY_SEED)


def _smooth(rows: int, cols: int) -> tuple[float, ...]:
    return tuple((i * i + j * j) / 1024.0 for i in range(rows) for j in range(cols))


_FC = (
    Weight("fc.weight", (2, 3), (0.5, -1.25, 2.0, -0.0, 0.125, 3.0)),
    Weight("fc.bias", (3,), (0.25, -0.5, 1.0)),
)

ENVELOPES: list[EnvelopeVector] = [
    EnvelopeVector(
        "envelope_client_update",
        "A ClientUpdate of round 3 with metrics and two uncompressed float32 tensors: "
        "the TensorMap starts 64-aligned in the envelope (Envelope.padding), and so "
        "does each tensor's data.",
        "0f8fad5b-d9cb-469f-a165-70867728950e",
        lambda w: messages.client_update(
            "client-7",
            3,
            w,
            metrics={"loss": 0.25, "accuracy": 0.875, "steps": 40},
            num_examples=600,
            options=EncodeOptions(compression="none"),
        ),
        _FC,
    ),
    EnvelopeVector(
        "envelope_global_update",
        "A GlobalUpdate of round 4 with a config and a 64x64 float32 under zstd with "
        "the byte shuffle.",
        "7c9e6679-7425-40de-944b-e07fc1f90ae7",
        lambda w: messages.global_update(
            4,
            w,
            config={"lr": 0.01, "epochs": 2, "optimizer": "sgd"},
            options=EncodeOptions(compression="zstd", shuffle=True),
        ),
        (Weight("smooth", (64, 64), _smooth(64, 64)),),
        "zstd",
    ),
    EnvelopeVector(
        "envelope_client_registration",
        "A ClientRegistration (a control message, no weights, so no padding): codecs, "
        "filters and lossy methods as enum lists, model info.",
        "e4eaaaf2-d142-11e1-b3e4-080027620cdd",
        lambda _: messages.client_registration(
            "client-7",
            supported_codecs=["zstd", "lz4"],
            supported_lossy=["float16", "topk"],
            max_message_bytes=1_000_000,
            model_info={"name": "cnn", "version": "2", "parameter_count": 12},
        ),
    ),
    EnvelopeVector(
        "envelope_custom",
        "A CustomMessage of type 'my.app.Probe' with a payload of every Value kind and "
        "one uncompressed float32 tensor as its weights.",
        "16fd2706-8baf-433b-82eb-8c7fada847da",
        lambda w: messages.custom(
            "my.app.Probe",
            {
                "n": 3,
                "ratio": 0.5,
                "label": "ok",
                "flag": True,
                "blob": b"\x00\x01\xff",
                "items": [1, "two", 3.5],
                "nested": {"k": None},
            },
            w,
            sender_id="client-7",
            options=EncodeOptions(compression="none"),
        ),
        (Weight("w", (4,), (1.0, -2.0, 0.5, 0.0)),),
    ),
    EnvelopeVector(
        "envelope_signed",
        "A ClientUpdate of round 5 signed with Ed25519 by key 'client-7' (the public "
        "test key of RFC 8032, section 7.1, TEST 1): the Signature is the envelope's "
        "last field and signs every byte before it, the weights included "
        "(section 14.3).",
        "9a4f1c2e-6b3d-4e8f-a1c7-5d2b8e0f3a61",
        lambda w: messages.client_update(
            "client-7",
            5,
            w,
            metrics={"loss": 0.125},
            num_examples=32,
            options=EncodeOptions(compression="none"),
        ),
        _FC,
        signed_by="client-7",
    ),
]


def _weights_offset(data: bytes, msg: Message) -> int:
    """Where the TensorMap bytes start in the envelope (located by its bytes)."""
    weights = msg.weights
    assert weights is not None
    at = data.find(bytes(weights))
    assert at > 0 and data.find(bytes(weights), at + 1) < 0
    return at


def expectations(vector: EnvelopeVector, data: bytes, tensor_entry: Any) -> dict[str, Any]:
    """The ``.json`` document of an envelope vector."""
    msg = vector.message()
    env = msg.envelope
    body = json_format.MessageToDict(
        msg.body, preserving_proto_field_name=True, always_print_fields_with_no_presence=False
    )
    out: dict[str, Any] = {
        "name": vector.name,
        "description": vector.description,
        "message": "flwire.v1.Envelope",
        "type": msg.type,
        "message_id": vector.message_id,
        "sender_id": env.sender_id,
        "timestamp": {"seconds": TIMESTAMP[0], "nanos": TIMESTAMP[1]},
        "schema_version": {"major": env.schema_version.major, "minor": env.schema_version.minor},
        "headers": {k: v.decode() for k, v in message_headers(msg)},
        "body": json.loads(json.dumps(body, sort_keys=True)),  # map order carries no meaning
    }
    if vector.signed_by is not None:
        out["signature"] = signature_expectations(vector, data)
    if vector.weights:
        out["weights"] = {
            "offset": _weights_offset(data, msg),
            "compression": vector.compression,
            "tensors": [tensor_entry(w) for w in vector.weights],
        }
    return out


def signature_expectations(vector: EnvelopeVector, data: bytes) -> dict[str, Any]:
    """The signature of a signed vector: the test key, S's length, D, M (section 14.3)."""
    located = security.locate_signature(data)
    sig = located.signature
    assert sig is not None and vector.signed_by is not None
    signed = data[: located.signed_end]
    public = security.public_key_base64(signing_key().public_key())
    return {
        "key_id": sig.key_id,
        "algorithm": "SIGNATURE_ALGORITHM_ED25519",
        "test_key_seed_hex": TEST_KEY_SEED.hex(),
        "public_key_hex": base64.b64decode(public).hex(),
        "signed_length": len(signed),
        "digest_hex": security.envelope_digest(signed).hex(),
        "signed_payload_hex": security.signed_payload(signed, sig.key_id).hex(),
        "signature_hex": sig.signature.hex(),
    }


TRANSFER_OF = "envelope_global_update"
TRANSFER_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


def transfer(whole: bytes, headers: list[tuple[str, bytes]]) -> tuple[list[bytes], dict[str, Any]]:
    """The parts of ``whole`` and the transfer vector's ``.json`` (without file names)."""
    limit = PART_DATA_BYTES + PART_OVERHEAD + len(TRANSFER_ID.encode())
    parts = list(split_payload(whole, TRANSFER_ID, limit))
    entries = []
    offset = 0
    for _part, index, count in parts:
        size = min(PART_DATA_BYTES, len(whole) - offset)
        entries.append(
            {
                "index": index,
                "offset": offset,
                "data_size": size,
                "headers": {
                    **{k: v.decode() for k, v in headers},
                    PART_HEADER: f"{index}/{count}",
                },
            }
        )
        offset += size
    assert offset == len(whole)
    doc = {
        "name": "transfer_parts",
        "description": f"{TRANSFER_OF}.bin split into TransferParts of {PART_DATA_BYTES} "
        "bytes of data each (the last shorter), part_index from 0.",
        "message": "flwire.v1.TransferPart",
        "whole": f"{TRANSFER_OF}.bin",
        "transfer_id": TRANSFER_ID,
        "part_count": len(parts),
        "total_size": len(whole),
        "payload_crc32c": f"{crc32c(whole):08x}",
        "part_data_bytes": PART_DATA_BYTES,
        "parts": entries,
    }
    return [p for p, _, _ in parts], doc
