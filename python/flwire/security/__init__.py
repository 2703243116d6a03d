"""Signed messages (wire format section 14.3): Ed25519 keys, trust stores,
signing and verifying envelopes.

    from flwire import security
    key = security.generate_private_key()
    signed = security.sign_message(msg, "client-1", key)
    trust = security.load_trust_store(Path("keys"))      # <id>.pub files, or a CSV
    got = security.verify_message(signed, trust)         # or a SignatureError subclass
    verifier = security.Verifier(trust)                  # + replays, timestamps, rounds

Keys and signatures need the ``cryptography`` package (``pip install
'flwire[sign]'``); importing this package does not.
"""

from flwire.exceptions import (
    BadSignatureError,
    SenderMismatchError,
    SignatureError,
    UnknownKeyError,
    UnsignedMessageError,
)
from flwire.security.config import Signer, signer_from_config, verifier_from_config
from flwire.security.digest import envelope_digest
from flwire.security.keys import (
    MAX_KEY_ID_BYTES,
    check_key_id,
    generate_private_key,
    load_private_key,
    load_public_key,
    private_key_from_seed,
    private_key_pem,
    public_key_base64,
    public_key_from_base64,
    public_key_pem,
    write_key_pair,
)
from flwire.security.signing import (
    SIGNATURE_DOMAIN,
    check_sender,
    locate_signature,
    sign_envelope,
    sign_in_place,
    sign_message,
    signed_payload,
    verify_envelope,
    verify_message,
)
from flwire.security.trust import TrustStore, load_trust_store
from flwire.security.verifier import DEFAULT_TIMESTAMP_WINDOW_S, SenderNotAllowedError, Verifier

__all__ = [
    "DEFAULT_TIMESTAMP_WINDOW_S",
    "MAX_KEY_ID_BYTES",
    "SIGNATURE_DOMAIN",
    "BadSignatureError",
    "SenderMismatchError",
    "SenderNotAllowedError",
    "SignatureError",
    "Signer",
    "TrustStore",
    "UnknownKeyError",
    "UnsignedMessageError",
    "Verifier",
    "check_key_id",
    "check_sender",
    "envelope_digest",
    "generate_private_key",
    "load_private_key",
    "load_public_key",
    "load_trust_store",
    "locate_signature",
    "private_key_from_seed",
    "private_key_pem",
    "public_key_base64",
    "public_key_from_base64",
    "public_key_pem",
    "sign_envelope",
    "sign_in_place",
    "sign_message",
    "signed_payload",
    "signer_from_config",
    "verify_envelope",
    "verifier_from_config",
    "verify_message",
    "write_key_pair",
]
