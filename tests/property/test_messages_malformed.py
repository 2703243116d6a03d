"""Hostile or damaged input to ``decode_message``: only MessageDecodeError comes out.

Whatever the bytes, decoding either succeeds or raises MessageDecodeError
(a SerializationException); using a message that did decode (its tensors, its
re-encoding) raises at most SerializationException. No IndexError, KeyError,
UnicodeDecodeError, protobuf DecodeError or the like ever escapes.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flwire import messages
from flwire.exceptions import SerializationException
from flwire.tensors import EncodeOptions


def _weights() -> dict[str, torch.Tensor]:
    return {
        "conv.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3) / 7,
        "conv.bias": torch.tensor([1, -2], dtype=torch.int64),
        "bn.h": torch.tensor([0.5, 1.5, -3.0], dtype=torch.bfloat16),
    }


def sample_messages() -> dict[str, bytes]:
    sd = _weights()
    metrics = {"loss": 0.25, "epochs": 2, "ok": True, "tags": ["a", None], "m": {"x": b"\x00"}}
    msgs = {
        "client_update_none": messages.client_update(
            "client-1", 3, sd, metrics, 600, options=EncodeOptions(compression="none")
        ),
        "client_update_zstd": messages.client_update(
            "client-1", 3, {"z": torch.zeros(64)}, metrics, 600, options=EncodeOptions(shuffle=True)
        ),
        "client_update_lz4": messages.client_update(
            "client-1", 3, {"z": torch.zeros(64)}, metrics, 600, options=EncodeOptions("lz4")
        ),
        "global_update": messages.global_update(4, sd, {"lr": 0.01, "local_epochs": 1}),
        "client_registration": messages.client_registration(
            "client-1", model_info={"name": "CNN", "parameter_count": 10, "depth": 3}
        ),
        "heartbeat": messages.heartbeat("client-1", "training", {"cpu": 12.5}),
        "training_start": messages.training_start(5, {"epochs": 1}, ["client-1"]),
        "evaluation_request": messages.evaluation_request(
            6, sd, {"batch_size": 64}, options=EncodeOptions(compression="none")
        ),
        "evaluation_result": messages.evaluation_result("client-1", 6, {"accuracy": 0.9}, 100),
        "shutdown": messages.shutdown("done", extensions={"why": "finished"}),
    }
    return {name: msg.to_bytes() for name, msg in msgs.items()}


SAMPLES = sample_messages()
# Bit flips: one message per shape of body (weights raw / compressed, maps, enums).
BIT_FLIP = ["client_update_none", "client_update_zstd", "client_registration", "heartbeat"]
SMALL = {k: SAMPLES[k] for k in BIT_FLIP}


def use_fully(data: object) -> None:
    """Decode, then touch everything a receiver would touch. Only flwire errors may escape."""
    try:
        msg = messages.decode_message(data)
    except messages.MessageDecodeError:
        return
    try:
        _ = (msg.type, msg.body, msg.sender_id, msg.message_id, msg.timestamp)
        _ = msg.schema_version
        if msg.has_weights:
            msg.weights_info()
            msg.tensors()
        msg.to_bytes()
    except SerializationException:
        pass


def test_samples_are_valid():
    for name, blob in SAMPLES.items():
        got = messages.decode_message(blob)
        assert got.message_id, name


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_truncation_is_refused(name):
    blob = SAMPLES[name]
    for end in range(len(blob)):
        with pytest.raises(messages.MessageDecodeError):
            messages.decode_message(blob[:end])


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_single_bit_flip_raises_only_flwire_errors(name):
    blob = SMALL[name]
    for i in range(len(blob)):
        for bit in range(8):
            damaged = bytearray(blob)
            damaged[i] ^= 1 << bit
            use_fully(bytes(damaged))


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_message_decode_error(data):
    use_fully(data)


@settings(max_examples=100)
@given(
    name=st.sampled_from(sorted(SAMPLES)),
    where=st.floats(0, 1),
    cut=st.integers(0, 8),
    junk=st.binary(max_size=12),
)
def test_spliced_junk_raises_only_flwire_errors(name, where, cut, junk):
    blob = SAMPLES[name]
    at = int(where * len(blob))
    use_fully(blob[:at] + junk + blob[at + cut :])


@given(st.binary(min_size=1, max_size=40))
def test_trailing_junk_raises_only_flwire_errors(junk):
    use_fully(SAMPLES["client_update_none"] + junk)
