"""Signed envelopes (wire format section 14.3): sign, verify, and each refusal
with its own exception and reason; the digest recomputed from the spec."""

from __future__ import annotations

import itertools
import struct
import subprocess
import sys

import blake3
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flwire import messages, security
from flwire.exceptions import (
    BadSignatureError,
    SenderMismatchError,
    SignatureError,
    UndecodableMessageError,
    UnknownKeyError,
    UnsignedMessageError,
)
from flwire.security import signing as signing_module
from flwire.v1 import messages_pb2 as pb

CLIENT = "client-1"


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return security.private_key_from_seed(bytes(range(32)))


@pytest.fixture(scope="module")
def trust(key) -> security.TrustStore:
    other = security.private_key_from_seed(bytes(32))
    return security.TrustStore({CLIENT: key.public_key(), "server": other.public_key()})


def _update(client: str = CLIENT, n: int = 1000) -> messages.Message:
    weights = {"w": np.arange(n, dtype=np.float32), "b": np.ones(3, dtype=np.float32)}
    return messages.client_update(client, 2, weights, metrics={"loss": 0.5}, num_examples=10)


def _spec_digest(data: bytes) -> bytes:
    """D of section 14.3: BLAKE3 of S, 32 bytes."""
    return blake3.blake3(data).digest()


def test_a_signed_message_verifies_and_decodes(key, trust):
    msg = _update()
    signed = security.sign_message(msg, CLIENT, key)
    got = security.verify_message(signed, trust)
    assert got.sender_id == CLIENT
    assert got.envelope.signature.key_id == CLIENT
    assert got.envelope.signature.algorithm == pb.SIGNATURE_ALGORITHM_ED25519
    assert len(got.envelope.signature.signature) == 64
    np.testing.assert_array_equal(got.tensors()["w"], np.arange(1000, dtype=np.float32))


def test_the_signature_is_the_last_field_and_signs_the_bytes_before_it(key):
    msg = _update()
    unsigned = msg.to_bytes()
    signed = security.sign_message(msg, CLIENT, key)
    assert signed.startswith(unsigned)
    sig = pb.Signature.FromString(signed[len(unsigned) + 2 :])  # key 0x3a, 1-byte length
    assert signed[len(unsigned)] == 0x3A
    payload = (
        b"flwire.v1 envelope signature\x00"
        + struct.pack("<I", 1)
        + bytes([len(CLIENT)])
        + CLIENT.encode()
        + _spec_digest(unsigned)
    )
    key.public_key().verify(sig.signature, payload)  # raises if not what the spec says


def test_a_signed_message_encodes_to_its_own_bytes(key):
    msg = _update()
    signed = security.sign_message(msg, CLIENT, key)
    assert msg.to_bytes() == signed
    assert messages.decode_message(signed).to_bytes() == signed


def test_sign_envelope_appends_a_signature_to_bytes(key, trust):
    data = messages.heartbeat(CLIENT, "idle").to_bytes()
    signed = security.sign_envelope(data, CLIENT, key)
    assert security.verify_envelope(signed, trust) == CLIENT
    with pytest.raises(SignatureError, match="signed already"):
        security.sign_envelope(signed, CLIENT, key)


def test_signing_as_another_sender_is_refused(key):
    with pytest.raises(SenderMismatchError, match="key id must be the sender id"):
        security.sign_message(_update("client-2"), CLIENT, key)


def test_digest_is_blake3():
    # BLAKE3's published value for "abc" (the reference implementation's test).
    abc = "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
    assert security.envelope_digest(b"abc").hex() == abc


@pytest.mark.parametrize("size", [0, 1, 1023, 1025, (1 << 20) - 1, 1 << 20, (3 << 20) + 7])
def test_digest_of_pieces_is_the_digest_of_their_concatenation(size):
    data = bytes(np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8))
    expected = _spec_digest(data)
    assert security.envelope_digest(data) == expected
    assert security.envelope_digest(data, threads=False) == expected
    cuts = sorted({0, size // 3, size // 2, size})
    pieces = [memoryview(data)[a:b] for a, b in itertools.pairwise(cuts)]
    assert security.envelope_digest(pieces) == expected
    assert security.envelope_digest(iter([bytearray(p) for p in pieces])) == expected


def test_sign_message_hashes_the_buffers_without_joining_them(key, trust, monkeypatch):
    msg = _update(n=300_000)  # 1.2 MB of weights, compressed to about 0.8 MB
    seen = []
    real = signing_module.envelope_digest

    def spy(data, **kw):
        seen.append([memoryview(p).nbytes for p in data] if isinstance(data, list) else None)
        return real(data, **kw)

    monkeypatch.setattr(signing_module, "envelope_digest", spy)
    signed = security.sign_message(msg, CLIENT, key)
    assert len(seen) == 1 and seen[0] is not None and len(seen[0]) > 1  # pieces, not joined
    assert sum(seen[0]) == security.locate_signature(signed).signed_end > 500_000
    assert security.verify_envelope(signed, trust) == CLIENT


def test_unsigned_is_refused_when_required_and_passes_when_not(trust):
    data = _update().to_bytes()
    with pytest.raises(UnsignedMessageError) as info:
        security.verify_message(data, trust)
    assert info.value.reason == "unsigned"
    assert security.verify_envelope(data, trust, required=False) is None
    assert security.verify_message(data, trust, required=False).type == "client_update"


def test_unknown_key_is_refused(key):
    signed = security.sign_message(_update(), CLIENT, key)
    with pytest.raises(UnknownKeyError, match="client-1") as info:
        security.verify_message(signed, security.TrustStore({}))
    assert info.value.reason == "unknown_key"


def test_a_key_registered_under_another_id_does_not_verify(key):
    signed = security.sign_message(_update(), CLIENT, key)
    wrong = security.private_key_from_seed(bytes([7]) * 32).public_key()
    with pytest.raises(BadSignatureError, match="does not verify") as info:
        security.verify_message(signed, security.TrustStore({CLIENT: wrong}))
    assert info.value.reason == "bad_signature"


def test_changed_weights_are_refused(key, trust):
    msg = _update()
    signed = bytearray(security.sign_message(msg, CLIENT, key))
    weights = bytes(msg.weights or b"")
    at = bytes(signed).find(weights) + len(weights) // 2
    signed[at] ^= 0x40
    with pytest.raises(BadSignatureError):
        security.verify_message(bytes(signed), trust)


def test_sender_id_not_the_keys_id_is_refused(key, trust):
    msg = _update()
    msg.envelope.sender_id = "client-9"  # still the body's client_id "client-1"
    signed = security.sign_envelope(msg.to_bytes(), CLIENT, key)
    with pytest.raises(SenderMismatchError, match="sender_id 'client-9'") as info:
        security.verify_message(signed, trust)
    assert info.value.reason == "sender_mismatch"


def test_client_id_not_the_keys_id_is_refused(key, trust):
    msg = _update("client-9")
    msg.envelope.sender_id = CLIENT
    signed = security.sign_message(msg, CLIENT, key)
    with pytest.raises(SenderMismatchError, match=r"client_update.client_id 'client-9'"):
        security.verify_message(signed, trust)


def test_a_server_message_signed_by_the_server_key_verifies(trust):
    server_key = security.private_key_from_seed(bytes(32))
    msg = messages.shutdown("done")
    signed = security.sign_message(msg, msg.sender_id, server_key)
    assert security.verify_message(signed, trust).type == "shutdown"


def _resign(signed: bytes, **changes) -> bytes:
    located = security.locate_signature(signed)
    assert located.signature is not None
    sig = pb.Signature()
    sig.CopyFrom(located.signature)
    for name, value in changes.items():
        setattr(sig, name, value)
    payload = sig.SerializeToString()
    field = pb.Envelope(signature=sig).SerializeToString()  # key 0x3a, varint length
    assert field.endswith(payload)
    return signed[: located.signed_end] + field


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"algorithm": 0}, "unknown signature algorithm 0"),
        ({"algorithm": 2}, "unknown signature algorithm 2"),
        ({"signature": bytes(63)}, "64 bytes, not 63"),
        ({"key_id": "k" * 129}, "longer than 128"),
    ],
)
def test_malformed_signature_fields_are_refused(key, trust, changes, match):
    signed = security.sign_message(_update(), CLIENT, key)
    with pytest.raises(BadSignatureError, match=match):
        security.verify_envelope(_resign(signed, **changes), trust)


def test_a_signature_that_is_not_last_or_twice_is_refused(key, trust):
    signed = security.sign_message(_update(), CLIENT, key)
    with pytest.raises(BadSignatureError, match="not the envelope's last field"):
        security.verify_envelope(signed + b"\x08\x01", trust)  # a varint field after it
    located = security.locate_signature(signed)
    field = signed[located.signed_end :]
    with pytest.raises(BadSignatureError, match="more than once"):
        security.verify_envelope(signed + field, trust)


def test_a_reencoded_envelope_does_not_verify(key, trust):
    """Relays forward bytes: the generated serializer moves field 7 before the body."""
    signed = security.sign_message(_update(), CLIENT, key)
    reencoded = pb.Envelope.FromString(signed).SerializeToString()
    with pytest.raises(BadSignatureError):
        security.verify_envelope(reencoded, trust)


def test_not_an_envelope_is_refused_as_undecodable(trust):
    with pytest.raises(UndecodableMessageError, match="not a valid flwire message"):
        security.verify_envelope(b"\x0a\x05ab", trust)


def test_without_cryptography_the_extra_is_named():
    code = (
        "import sys; sys.modules['cryptography'] = None\n"
        "from flwire import security\n"
        "from flwire.exceptions import MissingDependencyError\n"
        "try:\n    security.generate_private_key()\n"
        "except MissingDependencyError as exc:\n    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install 'flwire[sign]'" in out.stdout
