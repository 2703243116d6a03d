"""Issue 13, "Exceptions: one contract on every path": envelopes that a newer or a
hostile writer sends. Each decodes to valid data or raises flwire's own exception."""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any

import numpy as np
import pytest

from flwire import messages
from flwire.compat.communication.message_handlers import MessageHandler
from flwire.compat.serialization.message_serializer import MessageSerializer
from flwire.exceptions import InvalidMessageError, MessageValidationError
from flwire.inspect_cmd import inspect_bytes
from flwire.v1 import messages_pb2 as pb

WEIGHTS = {"w": np.ones(2, np.float32)}


def test_unknown_enum_values_survive_as_numbers():
    """A v1.1 client advertising a codec, filter, lossy method or status this flwire
    does not know still registers (section 16 calls that change compatible): the
    values come back as numbers, and serializing the payload again keeps them."""
    reg = messages.client_registration("c1")
    caps = reg.envelope.client_registration.capabilities
    caps.supported_codecs.append(9)
    caps.supported_filters.append(7)
    caps.supported_lossy.append(99)
    payload = MessageSerializer.deserialize_message(reg.to_bytes())["payload"]
    assert payload["supported_codecs"][-1] == 9
    assert payload["supported_filters"][-1] == 7
    assert payload["supported_lossy"][-1] == 99
    again = MessageSerializer.serialize_message("client_registration", payload)
    assert MessageSerializer.deserialize_message(again)["payload"] == payload

    beat = messages.heartbeat("c1", "training")
    beat.envelope.heartbeat.status = pb.ClientStatus.ValueType(77)  # a newer minor version's
    got: list[dict[str, Any]] = []
    handler = MessageHandler()
    handler.register_handler("client_heartbeat", got.append)
    assert asyncio.run(handler.handle_message(beat.to_bytes()))
    assert got[0]["payload"]["status"] == 77


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(2**62, 0), (-(2**62), 0), (253_402_300_800, 0), (-62_135_596_801, 0), (0, -1), (0, 10**9)],
)
def test_timestamps_outside_the_protobuf_range_are_refused(seconds, nanos):
    """Before: +-2**62 raised OSError and a year past 9999 a plain ValueError, from
    deserialize_message, and flwire inspect printed a traceback."""
    msg = messages.shutdown("x")
    msg.envelope.timestamp.seconds = seconds
    msg.envelope.timestamp.nanos = nanos
    blob = msg.envelope.SerializeToString()
    with pytest.raises(InvalidMessageError, match=r"envelope\.timestamp: .*outside"):
        messages.decode_message(blob)
    with pytest.raises(InvalidMessageError, match="timestamp_range"):
        MessageSerializer.deserialize_message(blob)
    out, err = io.StringIO(), io.StringIO()
    assert inspect_bytes(blob, out, err) == 1
    assert "Traceback" not in err.getvalue() and "timestamp" in err.getvalue()


def test_the_ends_of_the_timestamp_range_decode():
    for seconds in (253_402_300_799, -62_135_596_800):
        msg = messages.shutdown("x")
        msg.envelope.timestamp.seconds = seconds
        out = MessageSerializer.deserialize_message(msg.envelope.SerializeToString())
        assert out["datetime"][:4] in ("9999", "0001")


def test_extensions_may_not_shadow_a_field():
    """Before: extensions {'client_id': 'alice', 'round_id': -3, 'weights': b'junk'} on
    an update from mallory reached the old-style handler as alice's, round -3."""
    shadow = {"client_id": "alice", "round_id": -3, "weights": b"junk"}
    with pytest.raises(MessageValidationError) as refused:  # the writer
        messages.client_update("mallory", 1, WEIGHTS, extensions=shadow)
    assert {v.rule for v in refused.value.violations} == {"shadows_field"}
    assert len(refused.value.violations) == 3
    msg = messages.client_update("mallory", 1, WEIGHTS)
    for key, value in shadow.items():
        messages.to_value(value, msg.envelope.extensions[key])
    with pytest.raises(InvalidMessageError, match="shadows_field"):  # the reader
        MessageSerializer.deserialize_message(msg.to_bytes())


def test_an_extension_named_like_a_derived_payload_key_is_ignored(caplog):
    """Keys the compat payload derives from the body (delta, from weights_kind) are
    not fields, so the reader cannot refuse them; the body's word wins."""
    msg = messages.client_update("c1", 1, WEIGHTS)
    msg.envelope.extensions["delta"].bool_value = True
    msg.envelope.extensions["note"].string_value = "kept"
    with caplog.at_level(logging.WARNING):
        payload = MessageSerializer.deserialize_message(msg.to_bytes())["payload"]
    assert "delta" not in payload and payload["note"] == "kept"
    assert "ignored extension 'delta'" in caplog.text


def test_a_big_frame_leaves_no_scratch_buffer_behind():
    """Before: each thread kept the largest scratch buffer it ever used (1 GiB stayed
    allocated after one big decode of another writer's large frames)."""
    import weakref

    from flwire.tensors import parallel

    big = parallel.scratch(64 << 20)
    assert big.nbytes == 64 << 20
    gone = weakref.ref(big)
    del big
    assert gone() is None  # not kept by the thread
    small = parallel.scratch(1000)
    assert small.nbytes == 1000 and small.base is not None
    assert small.base.nbytes <= parallel.SCRATCH_KEEP_BYTES


def test_ids_are_bounded_so_remembering_them_is():
    """Before: 2,000 message ids of 1 MB each held 1.9 GB in SeenIds."""
    msg = messages.shutdown("x")
    msg.envelope.message_id = "m" * 129
    with pytest.raises(InvalidMessageError, match=r"envelope\.message_id: is 129 bytes"):
        messages.decode_message(msg.envelope.SerializeToString())
    msg.envelope.message_id = "é" * 64  # 128 bytes: fine
    msg.envelope.sender_id = "s" * 1_000_000
    with pytest.raises(InvalidMessageError, match=r"envelope\.sender_id: is 1000000 bytes"):
        messages.decode_message(msg.envelope.SerializeToString())
