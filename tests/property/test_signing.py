"""Signed messages, for any message: what is signed verifies, and one changed
byte anywhere is refused (by the verifier or the decoder), as is the message
signed by another key or under another id (spec section 14.3)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from flwire import EncodeOptions, messages, security
from flwire.exceptions import (
    MessageDecodeError,
    RefusedMessageError,
    SenderMismatchError,
    SignatureError,
)

KEYS = [security.private_key_from_seed(bytes([i]) * 32) for i in range(3)]
IDS = ["client-1", "client-2", "server"]
TRUST = security.TrustStore({i: k.public_key() for i, k in zip(IDS, KEYS, strict=True)})

floats = st.floats(allow_nan=False, width=32)


@st.composite
def updates(draw: st.DrawFn) -> tuple[messages.Message, int]:
    signer = draw(st.integers(0, 1))
    n = draw(st.integers(0, 64))
    weights = {"w": np.array(draw(st.lists(floats, min_size=n, max_size=n)), dtype=np.float32)}
    msg = messages.client_update(
        IDS[signer],
        draw(st.integers(0, 2**40)),
        weights,
        metrics={"loss": draw(floats)},
        num_examples=draw(st.integers(0, 1000)),
        options=EncodeOptions(compression=draw(st.sampled_from(["none", "zstd", "lz4"]))),
    )
    return msg, signer


@settings(max_examples=60, deadline=None)
@given(updates(), st.data())
def test_signed_updates_verify_and_any_changed_byte_is_refused(case, data):
    msg, signer = case
    signed = security.sign_message(msg, IDS[signer], KEYS[signer])
    got = security.verify_message(signed, TRUST)
    assert got.body.client_id == IDS[signer]
    np.testing.assert_array_equal(got.tensors()["w"], msg.tensors()["w"])
    at = data.draw(st.integers(0, len(signed) - 1), label="at")
    mask = data.draw(st.integers(1, 255), label="mask")
    changed = bytearray(signed)
    changed[at] ^= mask
    try:
        security.verify_message(bytes(changed), TRUST)
    except (RefusedMessageError, MessageDecodeError):
        pass
    else:
        raise AssertionError(f"byte {at} ^ {mask:#x} was accepted")


@settings(max_examples=30, deadline=None)
@given(updates())
def test_another_key_or_another_id_is_refused(case):
    msg, signer = case
    other = 1 - signer
    forged = security.sign_envelope(msg.to_bytes(), IDS[signer], KEYS[other])
    try:
        security.verify_message(forged, TRUST)
    except SignatureError as exc:
        assert exc.reason == "bad_signature"
    else:
        raise AssertionError("signed by another key, accepted")
    as_other = security.sign_envelope(msg.to_bytes(), IDS[other], KEYS[other])
    try:
        security.verify_message(as_other, TRUST)
    except SenderMismatchError:
        pass
    else:
        raise AssertionError("a message of one client signed by another, accepted")
