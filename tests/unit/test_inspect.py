"""flwire.inspect_cmd.inspect_bytes: describing Envelopes and TensorMaps, checking CRCs."""

from __future__ import annotations

import io
import re

import pytest
import torch
import zstandard

from flwire import messages
from flwire.inspect_cmd import inspect_bytes
from flwire.tensors import EncodeOptions, encode_tensor_map, read_tensor_map

CLIENT_ID = "client-7"


def _weights() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "fc.weight": (torch.arange(1024) % 13).float().reshape(32, 32),  # compresses: ZSTD
        "fc.bias": torch.randn(10, generator=gen),  # too small/random: stored raw
        "steps": torch.tensor([1, 2, 3], dtype=torch.int64),
    }


def _inspect(data: bytes | bytearray | memoryview) -> tuple[int, str]:
    """Exit status and everything printed (summary on out, reason for a refusal on err)."""
    out, err = io.StringIO(), io.StringIO()
    rc = inspect_bytes(data, out, err)
    return rc, out.getvalue() + err.getvalue()


def _tensor_lines(text: str) -> dict[str, str]:
    lines = {}
    for line in text.splitlines():
        for name in _weights():
            if line.strip().startswith(name + " "):
                lines[name] = line
    return lines


def _record(data: bytes, name: str):
    view = read_tensor_map(data)
    return next(r for r in view.records if r.name == name)


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x5A
    return bytes(out)


def _payload_offset(container: bytes, tensor_bytes: bytes) -> int:
    offset = container.find(tensor_bytes)
    assert offset >= 0 and container.find(tensor_bytes, offset + 1) < 0
    return offset


def _zstd_body_index(frame: bytes) -> int:
    """An index inside the compressed blocks of a frame (past frame and block headers)."""
    return max(zstandard.frame_header_size(frame) + 4, len(frame) // 2)


@pytest.fixture
def update_bytes() -> bytes:
    msg = messages.client_update(
        CLIENT_ID,
        round_id=3,
        weights=_weights(),
        metrics={"loss": 0.25, "epochs": 2},
        num_examples=600,
    )
    return msg.to_bytes()


@pytest.fixture
def map_bytes() -> bytes:
    return encode_tensor_map(_weights(), metadata={"round": "3"})


# ----------------------------------------------------------------------------- envelopes


def test_client_update_description(update_bytes):
    msg = messages.decode_message(update_bytes)
    rc, text = _inspect(update_bytes)
    assert rc == 0
    first = text.splitlines()[0]
    assert first.startswith("flwire.v1.Envelope")
    assert first.endswith("client_update")
    assert f"message id  {msg.message_id}" in text
    assert f"sender      {CLIENT_ID}" in text
    assert "schema      1.2" in text
    assert f'client_id: "{CLIENT_ID}"' in text
    assert "round_id: 3" in text
    assert "num_examples: 600" in text
    assert "loss" in text
    assert "weights:" in text
    assert "3 tensors" in text
    lines = _tensor_lines(text)
    assert set(lines) == set(_weights())
    assert re.search(r"float32\s+\[32, 32\]\s+zstd", lines["fc.weight"])
    assert re.search(r"float32\s+\[10\]\s+\S+", lines["fc.bias"])
    assert re.search(r"int64\s+\[3\]", lines["steps"])
    assert msg.weights is not None
    for name, line in lines.items():
        record = _record(bytes(msg.weights), name)
        assert line.rstrip().endswith("crc ok"), line
        assert f"crc32c={record.crc32c:08x}" in line
    assert "BAD" not in text


def test_client_update_time_is_iso_utc(update_bytes):
    _, text = _inspect(update_bytes)
    match = re.search(r"time\s+(\S+)", text)
    assert match and match[1].endswith("+00:00")


def test_tensor_sizes_are_reported(update_bytes):
    _, text = _inspect(update_bytes)
    lines = _tensor_lines(text)
    assert "4.1 KB" in lines["fc.weight"]  # 32*32*4 = 4096 raw bytes
    assert "40 B" in lines["fc.bias"]
    assert "24 B" in lines["steps"]


def test_message_without_weights():
    data = messages.heartbeat(CLIENT_ID, status="training").to_bytes()
    rc, text = _inspect(data)
    assert rc == 0
    assert text.splitlines()[0].endswith("heartbeat")
    assert CLIENT_ID in text
    assert "weights:" not in text
    assert "crc" not in text


def test_global_update_with_extensions():
    msg = messages.global_update(
        round_id=4, weights=_weights(), config={"lr": 0.1}, extensions={"trace": "abc"}
    )
    rc, text = _inspect(msg.to_bytes())
    assert rc == 0
    assert text.splitlines()[0].endswith("global_update")
    assert "sender      server" in text
    assert "extensions" in text and "abc" in text
    assert text.count("crc ok") == 3


def test_message_with_shuffled_weights():
    msg = messages.client_update(CLIENT_ID, 1, _weights(), options=EncodeOptions(shuffle=True))
    rc, text = _inspect(msg.to_bytes())
    assert rc == 0
    assert "byte_shuffle" in _tensor_lines(text)["fc.weight"]
    assert text.count("crc ok") == 3


def test_message_with_uncompressed_weights():
    msg = messages.client_update(
        CLIENT_ID, 1, _weights(), options=EncodeOptions(compression="none")
    )
    rc, text = _inspect(msg.to_bytes())
    assert rc == 0
    assert "zstd" not in text and "UNSPECIFIED" not in text
    assert all(re.search(r"\]\s+none\s+none", line) for line in _tensor_lines(text).values())
    assert text.count("crc ok") == 3


# ----------------------------------------------------------------------------- tensor maps


def test_tensor_map_description(map_bytes):
    rc, text = _inspect(map_bytes)
    assert rc == 0
    assert text.splitlines()[0].startswith("flwire.v1.TensorMap")
    assert "3 tensors" in text
    assert text.count("crc ok") == 3
    assert "metadata" in text and "round" in text
    assert re.search(r"float32\s+\[32, 32\]\s+zstd", _tensor_lines(text)["fc.weight"])


def test_tensor_map_without_metadata():
    data = encode_tensor_map({"x": torch.zeros(2)})
    rc, text = _inspect(data)
    assert rc == 0
    assert "metadata" not in text


def test_tensor_map_with_empty_tensor():
    rc, text = _inspect(encode_tensor_map({"empty": torch.zeros(0, 3)}))
    assert rc == 0
    assert "[0, 3]" in text
    assert "crc ok" in text


def test_bytearray_and_memoryview_inputs(map_bytes):
    assert _inspect(bytearray(map_bytes))[0] == 0
    assert _inspect(memoryview(map_bytes))[0] == 0


# ----------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    "garbage",
    [
        b"garbage bytes, definitely not protobuf \xff\xfe",
        b"\xff" * 32,
        b'{"type": "client_update", "weights": "AAAA"}',
    ],
)
def test_garbage_returns_one_with_one_line_reason(garbage):
    rc, text = _inspect(garbage)
    assert rc == 1
    lines = text.strip().splitlines()
    assert len(lines) == 1
    assert "not a flwire message" in lines[0]


def test_corrupted_raw_tensor_in_message(update_bytes):
    msg = messages.decode_message(update_bytes)
    assert msg.weights is not None
    record = _record(bytes(msg.weights), "fc.bias")
    assert record.codec_name == "CODEC_UNSPECIFIED"
    offset = _payload_offset(update_bytes, bytes(record.data))
    rc, text = _inspect(_flip(update_bytes, offset + 5))
    assert rc == 1
    lines = _tensor_lines(text)
    assert "BAD" in lines["fc.bias"]
    assert "crc ok" in lines["fc.weight"] and "crc ok" in lines["steps"]


def test_corrupted_zstd_tensor_in_message(update_bytes):
    msg = messages.decode_message(update_bytes)
    assert msg.weights is not None
    frame = bytes(_record(bytes(msg.weights), "fc.weight").data)
    offset = _payload_offset(update_bytes, frame)
    rc, text = _inspect(_flip(update_bytes, offset + _zstd_body_index(frame)))
    assert rc == 1
    lines = _tensor_lines(text)
    assert "BAD" in lines["fc.weight"]
    assert "crc ok" in lines["fc.bias"]


def test_corrupted_raw_tensor_in_map(map_bytes):
    record = _record(map_bytes, "steps")
    offset = _payload_offset(map_bytes, bytes(record.data))
    rc, text = _inspect(_flip(map_bytes, offset))
    assert rc == 1
    assert "BAD" in _tensor_lines(text)["steps"]


def test_corrupted_zstd_tensor_in_map(map_bytes):
    frame = bytes(_record(map_bytes, "fc.weight").data)
    offset = _payload_offset(map_bytes, frame)
    rc, text = _inspect(_flip(map_bytes, offset + _zstd_body_index(frame)))
    assert rc == 1
    assert "BAD" in _tensor_lines(text)["fc.weight"]


def test_corrupted_zstd_frame_header_in_message_returns_one(update_bytes):
    # Regression: the Envelope decodes but msg.weights_info() raises; inspect_bytes used to
    # let that SerializationException escape (a traceback from `flwire inspect`).
    msg = messages.decode_message(update_bytes)
    assert msg.weights is not None
    frame = bytes(_record(bytes(msg.weights), "fc.weight").data)
    offset = _payload_offset(update_bytes, frame)
    rc, text = _inspect(_flip(update_bytes, offset + 1))  # inside the zstd magic number
    assert rc == 1
    assert "BAD" in text
    assert "fc.weight" in text


def test_corrupted_zstd_frame_header_in_map_returns_one(map_bytes):
    frame = bytes(_record(map_bytes, "fc.weight").data)
    offset = _payload_offset(map_bytes, frame)
    rc, text = _inspect(_flip(map_bytes, offset + 1))
    assert rc == 1
    assert "fc.weight" in text


def test_truncated_message_returns_one(update_bytes):
    rc, text = _inspect(update_bytes[: len(update_bytes) // 2])
    assert rc == 1
    assert text.strip()


def test_an_old_json_message_is_recognised_and_named():
    import json

    old = json.dumps(
        {"type": "client_update", "payload": {"client_id": "c1"}, "sender_id": "c1"}
    ).encode()
    out, err = io.StringIO(), io.StringIO()
    assert inspect_bytes(old, out, err) == 1
    assert out.getvalue() == ""
    text = err.getvalue()
    assert "old common package (JSON, type 'client_update')" in text
    assert "cannot be mixed" in text and "truncated" not in text
    # JSON that is not an old message is still described as what it is not.
    out, err = io.StringIO(), io.StringIO()
    assert inspect_bytes(b'{"a": 1}', out, err) == 1
    assert "not a flwire message" in err.getvalue()


def test_columns_metrics_parts_and_lossy_sizes():
    from flwire import LossyConfig
    from flwire.transport.chunking import split_payload

    msg = messages.client_update(
        CLIENT_ID,
        3,
        {"w": torch.randn(300, 300), "b": torch.zeros(3)},
        {"loss": 0.5, "acc": 0.9},
        options=EncodeOptions(lossy=LossyConfig("float16"), min_saving=0.0),
    )
    rc, text = _inspect(msg.to_bytes())
    assert rc == 0
    assert "metrics     {'acc': 0.9, 'loss': 0.5}" in text  # a dict, not protobuf text
    assert "metrics {" not in text
    header = next(line for line in text.splitlines() if line.strip().startswith("name "))
    for column in ("dtype", "shape", "codec", "filter", "lossy", "logical", "payload", "wire"):
        assert column in header
    (w,) = [line for line in text.splitlines() if line.strip().startswith("w ")]
    assert "float16" in w and "360.0 KB" in w and "180.0 KB" in w  # logical and payload
    part, _, _ = next(split_payload(msg.to_bytes(), "T1", 60_000))
    rc, text = _inspect(part)
    assert rc == 0
    assert text.startswith("flwire.v1.TransferPart")
    assert "part 1 of 3 of transfer T1" in text


def test_custom_message_is_named_by_its_own_type():
    blob = messages.custom("model_checkpoint", {"tag": "best"}, {"w": torch.ones(3)})
    rc, text = _inspect(blob.to_bytes())
    assert rc == 0
    assert text.splitlines()[0].endswith("custom (model_checkpoint)")
    assert 'type: "model_checkpoint"' in text
    assert "1 tensors" in text


def test_a_signature_is_shown_and_said_to_be_unverified(update_bytes):
    from flwire import security

    key = security.private_key_from_seed(bytes(32))
    signed = security.sign_envelope(update_bytes, CLIENT_ID, key)
    rc, text = _inspect(signed)
    assert rc == 0
    line = (
        f"  signature   key '{CLIENT_ID}', ed25519, 64 B "
        "(not verified: inspect holds no trust store)"
    )
    assert line in text.splitlines()
    assert "signature" not in _inspect(update_bytes)[1]
