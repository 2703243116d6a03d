"""The signed envelope vector (tests/vectors/messages/envelope_signed; spec
section 14.3): its digest and signed payload recomputed from the spec's text,
verified with the RFC 8032 public test key, and every changed byte refused."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import blake3
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from flwire import security
from flwire.exceptions import (
    FLException,
    MessageDecodeError,
    RefusedMessageError,
    SignatureError,
)

VECTORS = Path(__file__).resolve().parents[2] / "tests" / "vectors"
NAME = "envelope_signed"
#: RFC 8032, section 7.1, TEST 1: the public key of the public test seed.
RFC8032_TEST1_PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"


def _vector() -> tuple[bytes, dict[str, Any]]:
    manifest = json.loads((VECTORS / "manifest.json").read_text("utf-8"))
    entry = next(m for m in manifest["messages"] if m["name"] == NAME)
    data = (VECTORS / entry["files"]["bin"]["path"]).read_bytes()
    return data, json.loads((VECTORS / entry["files"]["json"]["path"]).read_text("utf-8"))


DATA, EXPECTED = _vector()
SIG = EXPECTED["signature"]
PUBLIC = Ed25519PublicKey.from_public_bytes(bytes.fromhex(SIG["public_key_hex"]))
TRUST = security.TrustStore({SIG["key_id"]: PUBLIC})


def _spec_digest(signed: bytes) -> bytes:
    return blake3.blake3(signed).digest()  # BLAKE3, 32 bytes


def test_the_vector_is_signed_by_the_rfc_test_key():
    assert SIG["public_key_hex"] == RFC8032_TEST1_PUBLIC
    key = security.private_key_from_seed(bytes.fromhex(SIG["test_key_seed_hex"]))
    assert security.public_key_base64(key.public_key()) == security.public_key_base64(PUBLIC)


def test_digest_payload_and_signature_follow_the_spec():
    signed = DATA[: SIG["signed_length"]]
    # The signature field follows: key 0x3a, a one-byte length, a Signature to the end.
    assert DATA[len(signed)] == 0x3A and DATA[len(signed) + 1] == len(DATA) - len(signed) - 2
    digest = _spec_digest(signed)
    assert digest.hex() == SIG["digest_hex"]
    key_id = SIG["key_id"].encode()
    payload = (
        b"flwire.v1 envelope signature\x00"
        + struct.pack("<I", 1)
        + bytes([len(key_id)])
        + key_id
        + digest
    )
    assert payload.hex() == SIG["signed_payload_hex"]
    PUBLIC.verify(bytes.fromhex(SIG["signature_hex"]), payload)  # raises if it does not verify


def test_the_vector_verifies_and_names_its_sender():
    msg = security.verify_message(DATA, TRUST)
    assert msg.sender_id == msg.body.client_id == SIG["key_id"] == EXPECTED["sender_id"]
    assert msg.envelope.signature.signature.hex() == SIG["signature_hex"]
    assert msg.to_bytes() == DATA  # re-encoding a flwire-written signed envelope keeps its bytes


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_every_changed_byte_is_refused(mask):
    """Every byte, changed three ways: the decoder or the verifier refuses each."""
    let_through = []
    for at in range(len(DATA)):
        changed = bytearray(DATA)
        changed[at] ^= mask
        try:
            security.verify_message(bytes(changed), TRUST)
        except (RefusedMessageError, MessageDecodeError):
            continue
        except FLException as exc:  # any other refusal must still be flwire's own
            pytest.fail(f"byte {at}: {type(exc).__name__}: {exc}")
        let_through.append(at)
    assert let_through == []


def test_every_truncation_is_refused():
    for end in range(len(DATA)):
        with pytest.raises((RefusedMessageError, MessageDecodeError)):
            security.verify_message(DATA[:end], TRUST)


def test_another_key_under_the_same_id_is_refused():
    other = security.private_key_from_seed(bytes(32)).public_key()
    with pytest.raises(SignatureError, match="does not verify"):
        security.verify_message(DATA, security.TrustStore({SIG["key_id"]: other}))
