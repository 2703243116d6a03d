"""Sign envelopes and verify them (wire format section 14.3).

The signature is the envelope's last field. It signs a digest of every byte
before it (the weights included) under a domain-separation prefix, so that
verifying needs the received bytes only: nothing is re-serialized, and no
weights are decoded.

    signed = sign_message(msg, "client-1", private_key)   # also sets msg's signature
    got = verify_message(signed, trust)                    # a Message, or a SignatureError

Needs the ``cryptography`` package: ``pip install 'flwire[sign]'``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from flwire._args import require_str, type_name
from flwire._optional import require
from flwire._protowire import LEN, byte_view, iter_fields
from flwire.exceptions import (
    BadSignatureError,
    SenderMismatchError,
    SerializationException,
    SignatureError,
    UndecodableMessageError,
    UnknownKeyError,
    UnsignedMessageError,
)
from flwire.messages.envelope import signature_field
from flwire.messages.message import Message, decode_message
from flwire.messages.schema import SIGNATURE_NUMBER
from flwire.security.digest import DIGEST_BYTES, envelope_digest, stream_hasher
from flwire.security.keys import MAX_KEY_ID_BYTES
from flwire.v1 import messages_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Callable

    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

#: Domain separation of what Ed25519 signs.
SIGNATURE_DOMAIN = b"flwire.v1 envelope signature\x00"
#: Domain separation of a streamed transfer's seal signature.
STREAM_SIGNATURE_DOMAIN = b"flwire.v1 stream signature\x00"
#: The one algorithm this flwire signs and verifies with.
ED25519 = pb.SIGNATURE_ALGORITHM_ED25519
#: Length of an Ed25519 signature.
ED25519_SIGNATURE_BYTES = 64


_LOAD_KEY = "load it with flwire.security.load_private_key(Path('keys/<id>.key'))"


def require_private_key(key: Any) -> Ed25519PrivateKey:
    """``key`` when it is an Ed25519 private key, else a TypeError saying what
    to pass (a public key, a path or PEM bytes are common mistakes)."""
    ed25519 = require("cryptography.hazmat.primitives.asymmetric.ed25519", "sign")
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        hint = f"this is a public key; signing needs the private one: {_LOAD_KEY}"
    elif isinstance(key, (str, bytes, os.PathLike)):
        hint = f"a {type_name(key)} is not a key: {_LOAD_KEY}"
    else:
        hint = f"{_LOAD_KEY}, or make one with generate_private_key()"
    raise TypeError(f"key must be an Ed25519 private key, got {type_name(key)}: {hint}")


def require_trust(trust: Any) -> Mapping[str, Ed25519PublicKey]:
    """``trust`` when it is a mapping of key ids to public keys (a TrustStore),
    else a TypeError saying how to make one (a path is a common mistake)."""
    if isinstance(trust, Mapping):
        return trust
    load = "load one with flwire.security.load_trust_store(Path('keys'))"
    if isinstance(trust, (str, os.PathLike)):
        hint = f"a path is not a trust store: {load}"
    else:
        hint = f"{load} (a directory of <id>.pub files or a CSV), or pass a dict of them"
    raise TypeError(
        f"trust must be a TrustStore (public keys by key id), got {type_name(trust)}: {hint}"
    )


def require_message(msg: Any) -> Message:
    """``msg`` when it is a :class:`~flwire.messages.Message`, else a TypeError
    saying what to pass (encoded bytes are a common mistake)."""
    if isinstance(msg, Message):
        return msg
    if isinstance(msg, (bytes, bytearray, memoryview)):
        hint = (
            "these are encoded bytes: sign them with sign_envelope(data, key_id, key), "
            "or decode_message(data) first"
        )
    else:
        hint = "build one with flwire.messages (client_update(...), ...)"
    raise TypeError(f"msg must be a flwire Message, got {type_name(msg)}: {hint}")


def _signing_args(key_id: Any, key: Any) -> None:
    require_str(key_id, "key_id", "the id receivers know the key by: the sender id")
    require_private_key(key)


class Located(NamedTuple):
    """Where an envelope's signature field is: ``signed_end`` is the length of
    the signed bytes (the offset of the field's key), ``signature`` the parsed
    field (None for an unsigned envelope)."""

    signed_end: int
    signature: pb.Signature | None


def locate_signature(data: Any) -> Located:
    """Find the signature field of envelope bytes; refuse one that is not the
    envelope's last field, appears twice or is malformed (BadSignatureError),
    and bytes that are not an envelope (UndecodableMessageError)."""
    try:
        buf = byte_view(data, "message")
        found = []
        for field in iter_fields(buf, 0, len(buf), "Envelope"):
            if field.number == SIGNATURE_NUMBER:
                found.append(field)
    except SerializationException as exc:
        raise UndecodableMessageError(f"not a valid flwire message: {exc}") from None
    if not found:
        return Located(len(buf), None)
    if len(found) > 1:
        raise BadSignatureError("the envelope holds its signature field more than once")
    field = found[0]
    if field.wire_type != LEN:
        raise BadSignatureError("the envelope's signature field is not length-delimited")
    if field.end != len(buf):
        raise BadSignatureError("the signature is not the envelope's last field")
    signature = pb.Signature()
    try:
        signature.ParseFromString(buf[field.start : field.end])
    except Exception as exc:  # google.protobuf.message.DecodeError
        raise BadSignatureError(f"malformed signature field: {exc}") from None
    return Located(field.key_start, signature)


def signed_payload(signed_bytes: Any, key_id: str, algorithm: int = ED25519) -> bytes:
    """What the algorithm signs: the domain, the algorithm (uint32 LE), the key
    id (a length byte, then UTF-8) and the digest of the signed bytes (a
    bytes-like object, or a sequence of them to be taken as one)."""
    return digest_payload(envelope_digest(signed_bytes), key_id, algorithm)


def digest_payload(
    digest: bytes, key_id: str, algorithm: int = ED25519, domain: bytes = SIGNATURE_DOMAIN
) -> bytes:
    """:func:`signed_payload` of bytes whose digest is ``digest``, under ``domain``."""
    raw_id = key_id.encode("utf-8")
    if not raw_id or len(raw_id) > MAX_KEY_ID_BYTES:
        raise BadSignatureError(
            f"the key id must be 1 to {MAX_KEY_ID_BYTES} UTF-8 bytes, not {len(raw_id)}"
        )
    return domain + struct.pack("<I", algorithm) + bytes([len(raw_id)]) + raw_id + digest


def sign_envelope(data: Any, key_id: str, key: Ed25519PrivateKey) -> bytes:
    """Append a signature by ``key`` (id ``key_id``) to unsigned envelope bytes."""
    _signing_args(key_id, key)
    if locate_signature(data).signature is not None:
        raise SignatureError("the envelope is signed already")
    return b"".join((data, signature_field(_signature(data, key_id, key))))


def sign_message(msg: Message, key_id: str, key: Ed25519PrivateKey) -> bytes:
    """Sign ``msg``: set its envelope's signature and return its signed bytes
    (``msg.to_bytes()`` returns them too, as long as ``msg`` is not changed).

    ``key_id`` must be the message's sender id, as receivers check. A sender
    that hands the message to a Channel needs no bytes: :func:`sign_in_place`
    spares the join of the whole message. A streamed message
    (``EncodeOptions(stream=True)``) has no signed bytes: its seal is signed as
    it is sent (SignatureError)."""
    refuse_streamed(require_message(msg))
    sign_in_place(msg, key_id, key)  # checks the key id and the key
    return msg.to_bytes()


def refuse_streamed(msg: Message) -> None:
    """SignatureError for a streamed message, whose signature is in its seal."""
    if msg.sources is not None:
        raise SignatureError(
            "a message built with EncodeOptions(stream=True) is signed in its stream's seal, "
            "not as bytes: call sign_in_place(msg, key_id, key) (or Signer.attach) and send it "
            "with Channel.send_message; for signed bytes, build it without stream=True"
        )


def sign_in_place(msg: Message, key_id: str, key: Ed25519PrivateKey) -> None:
    """Set ``msg``'s signature, as :func:`sign_message` does, without joining
    its bytes (``Channel.send_message`` splits the message from its buffers)."""
    require_message(msg)
    _signing_args(key_id, key)
    if msg.sender_id != key_id:
        raise SenderMismatchError(
            f"signing a message of sender {msg.sender_id!r} with key {key_id!r}: "
            "receivers refuse it; the key id must be the sender id"
        )
    if msg.envelope.HasField("signature"):
        raise SignatureError("the message is signed already")
    if msg.sources is not None:
        # Streamed (EncodeOptions(stream=True)): the seal will carry the signature
        # of the records as they are written (wire format section 14.5).
        msg.sign_stream(lambda: StreamSigner(key_id, key))
        return
    # The digest is taken over the unsigned message's buffers (nothing joined);
    # the signature then goes last, so the signed bytes are joined once.
    msg.envelope.signature.CopyFrom(_signature(msg.buffers(), key_id, key))


def _signature(data: Any, key_id: str, key: Ed25519PrivateKey) -> pb.Signature:
    raw = key.sign(signed_payload(data, key_id))
    return pb.Signature(key_id=key_id, algorithm=ED25519, signature=raw)


def verify_envelope(
    data: Any, trust: Mapping[str, Ed25519PublicKey], *, required: bool = True
) -> str | None:
    """Verify the signature of envelope bytes against ``trust`` (public keys by
    key id); return the key id, or None for an unsigned envelope when not
    ``required``. Nothing is decoded but the signature field.

    Raises UnsignedMessageError, UnknownKeyError, BadSignatureError or
    UndecodableMessageError (all RefusedMessageError)."""
    require_trust(trust)
    located = locate_signature(data)
    sig = located.signature
    if sig is None:
        if required:
            raise UnsignedMessageError("the message is not signed")
        return None
    signed = byte_view(data, "message")[: located.signed_end]
    return _verify(sig, lambda: signed_payload(signed, sig.key_id), trust)


def verify_stream(
    signature: pb.Signature | None,
    digest: bytes | None,
    trust: Mapping[str, Ed25519PublicKey],
    *,
    required: bool = True,
) -> str | None:
    """Verify a streamed transfer's seal signature against the BLAKE3 ``digest``
    of its records (wire format section 14.5); return the key id, or None for
    an unsigned stream when not ``required``. Raises as :func:`verify_envelope`."""
    require_trust(trust)
    if signature is None or digest is None:
        if required:
            raise UnsignedMessageError("the streamed message is not signed")
        return None
    return _verify(
        signature,
        lambda: digest_payload(digest, signature.key_id, domain=STREAM_SIGNATURE_DOMAIN),
        trust,
    )


def _verify(
    sig: pb.Signature, payload: Callable[[], bytes], trust: Mapping[str, Ed25519PublicKey]
) -> str:
    """Check a signature field and verify it over ``payload()``; the key id."""
    if sig.algorithm != ED25519:
        raise BadSignatureError(f"unknown signature algorithm {sig.algorithm}")
    if len(sig.signature) != ED25519_SIGNATURE_BYTES:
        raise BadSignatureError(
            f"an Ed25519 signature is {ED25519_SIGNATURE_BYTES} bytes, not {len(sig.signature)}"
        )
    if len(sig.key_id.encode("utf-8")) > MAX_KEY_ID_BYTES:
        raise BadSignatureError(f"the key id is longer than {MAX_KEY_ID_BYTES} bytes")
    public = trust.get(sig.key_id)
    if public is None:
        raise UnknownKeyError(f"signed with unknown key {sig.key_id!r}")
    invalid = require("cryptography.exceptions", "sign").InvalidSignature
    try:
        public.verify(sig.signature, payload())
    except invalid:
        raise BadSignatureError(
            f"the signature of key {sig.key_id!r} does not verify: the message was changed "
            "or signed by another key"
        ) from None
    return str(sig.key_id)


def verify_message(
    data: Any,
    trust: Mapping[str, Ed25519PublicKey],
    *,
    required: bool = True,
    check: bool = True,
) -> Message:
    """Verify envelope bytes (as :func:`verify_envelope`), then decode the
    message (weights left undecoded) and check that its ``sender_id``, and its
    body's ``client_id`` where it has one, are the key's id
    (SenderMismatchError)."""
    key_id = verify_envelope(data, trust, required=required)
    msg = decode_message(data, check=check)
    if key_id is not None:
        check_sender(msg, key_id)
    return msg


def check_sender(msg: Message, key_id: str) -> None:
    """Raise SenderMismatchError unless ``msg`` says it comes from ``key_id``."""
    if msg.sender_id != key_id:
        raise SenderMismatchError(
            f"sender_id {msg.sender_id!r} is not the signing key's id {key_id!r}"
        )
    body = msg.body if msg.type else None
    if body is not None and "client_id" in body.DESCRIPTOR.fields_by_name:
        if body.client_id != key_id:
            raise SenderMismatchError(
                f"{msg.type}.client_id {body.client_id!r} is not the signing key's id {key_id!r}"
            )


class StreamSigner:
    """Signs a streamed transfer: fed every record its seal covers, in order,
    then asked for the seal's signature (wire format section 14.5)."""

    def __init__(self, key_id: str, key: Ed25519PrivateKey) -> None:
        self.key_id = key_id
        self.key = key
        self.hasher = stream_hasher()

    def update(self, data: Any) -> None:
        self.hasher.update(data)

    def finish(self) -> pb.Signature:
        digest = self.hasher.digest(length=DIGEST_BYTES)
        raw = self.key.sign(digest_payload(digest, self.key_id, domain=STREAM_SIGNATURE_DOMAIN))
        return pb.Signature(key_id=self.key_id, algorithm=ED25519, signature=raw)
