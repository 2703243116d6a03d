"""A caller's mistake is refused at the call, with one message that names what
was wrong and what to pass instead: the SDK's own exception, or TypeError /
ValueError as Python's conventions say, never an AttributeError or TypeError
from deep inside."""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import flwire.numpy as fnp
import flwire.torch as ftorch
from flwire.compat.communication.kafka_client import AsyncKafkaClient
from flwire.compat.serialization.weight_serializer import WeightSerializer
from flwire.exceptions import ConfigurationException, SerializationException
from flwire.messages import client_update, global_update, heartbeat
from flwire.security import Verifier, sign_envelope, sign_message, verify_message
from flwire.tensors import (
    DecodeLimits,
    EncodeOptions,
    decode_tensor_map,
    encode_tensor_map,
    encode_tensor_map_segments,
    split_state_dict,
)
from flwire.transport.chunking import MIN_RECORD_BYTES, Reassembler
from flwire.transport.memory import InMemoryTransport

STATE = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
MODEL = torch.nn.Linear(2, 2)


# 1. encode_tensor_map of what is not a state dict


@pytest.mark.parametrize(
    ("value", "fix"),
    [
        (MODEL, "pass model.state_dict()"),
        (torch.ones(3), "wrap a single tensor in a dict"),
        (np.ones(3), "wrap a single tensor in a dict"),
        ([torch.ones(2), torch.zeros(2)], "name each one"),
        (b"\x0a\x00", "encoded bytes already"),
        (7, "got int"),
    ],
)
@pytest.mark.parametrize("encode", [encode_tensor_map, encode_tensor_map_segments])
def test_encoding_what_is_not_a_state_dict_says_what_to_pass(
    encode: Any, value: object, fix: str
) -> None:
    with pytest.raises(SerializationException, match="expected a mapping of names to tensors") as e:
        encode(value)
    assert fix in str(e.value)
    assert type(value).__name__ in str(e.value)


def test_name_tensor_pairs_still_encode() -> None:
    pairs = [("w", STATE["w"])]
    assert decode_tensor_map(encode_tensor_map(pairs), as_numpy=True)["w"].tolist() == (
        STATE["w"].tolist()
    )


def test_builders_and_split_name_the_state_dict_too() -> None:
    with pytest.raises(SerializationException, match=r"weights: .*pass model\.state_dict\(\)"):
        client_update("c", 1, MODEL)  # type: ignore[arg-type]
    with pytest.raises(SerializationException, match=r"split_state_dict: .*got Linear"):
        split_state_dict(MODEL)  # type: ignore[arg-type]


# 2. flwire.torch.save / flwire.numpy.save / the compat WeightSerializer


def test_torch_and_numpy_save_of_a_model_say_pass_its_state_dict() -> None:
    with pytest.raises(SerializationException, match=r"flwire\.torch\.save: .*model\.state_dict"):
        ftorch.save(MODEL)  # type: ignore[arg-type]
    with pytest.raises(SerializationException, match=r"wrap a single tensor in a dict"):
        fnp.save(np.ones(3))  # type: ignore[arg-type]


def test_compat_weight_serializer_keeps_serialization_exception() -> None:
    with pytest.raises(SerializationException, match=r"state_dict: .*pass model\.state_dict"):
        WeightSerializer.serialize_weights(MODEL)  # type: ignore[arg-type]
    with pytest.raises(SerializationException, match=r"state_dict: .*pass model\.state_dict"):
        WeightSerializer.get_weights_size(MODEL)  # type: ignore[arg-type]


# 3. a client id that is not a str


def test_a_non_str_client_id_is_a_type_error_naming_the_parameter() -> None:
    with pytest.raises(TypeError, match=r"client_id must be a str .*got int 7"):
        client_update(7, 1, STATE)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"client_id must be a str"):
        heartbeat(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"sender_id must be a str"):
        global_update(1, STATE, sender_id=3)  # type: ignore[arg-type]


# 4. signing and verifying with the wrong things


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_signing_with_a_public_key_says_the_private_one_is_needed(
    key: Ed25519PrivateKey,
) -> None:
    msg = client_update("c", 1, STATE)
    with pytest.raises(TypeError, match=r"public key; signing needs the private one"):
        sign_message(msg, "c", key.public_key())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"load_private_key"):
        sign_message(msg, "c", "keys/c.key")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"load_private_key"):
        sign_envelope(msg.to_bytes(), "c", Path("keys/c.key"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"key_id must be a str"):
        sign_message(msg, 7, key)  # type: ignore[arg-type]


def test_signing_bytes_points_to_sign_envelope(key: Ed25519PrivateKey) -> None:
    blob = client_update("c", 1, STATE).to_bytes()
    with pytest.raises(TypeError, match=r"msg must be a flwire Message.*sign_envelope"):
        sign_message(blob, "c", key)  # type: ignore[arg-type]


def test_verifying_against_a_path_says_load_the_trust_store(key: Ed25519PrivateKey) -> None:
    signed = sign_message(client_update("c", 1, STATE), "c", key)
    with pytest.raises(TypeError, match=r"trust must be a TrustStore.*load_trust_store"):
        verify_message(signed, Path("keys"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"load_trust_store"):
        Verifier("keys")  # type: ignore[arg-type]
    assert verify_message(signed, {"c": key.public_key()}).sender_id == "c"


# 5. DecodeLimits


def test_limits_must_be_decode_limits() -> None:
    blob = encode_tensor_map(STATE)
    with pytest.raises(TypeError, match=r"limits must be a flwire\.tensors\.DecodeLimits.*\*\*"):
        decode_tensor_map(blob, limits={"max_tensors": 3})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"limits must be"):
        fnp.load(blob, limits=5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"max_tensor_bytes": None}, TypeError, "max_tensor_bytes"),
        ({"max_tensor_bytes": -1}, ValueError, "max_tensor_bytes"),
        ({"max_total_bytes": "x"}, TypeError, "max_total_bytes"),
        ({"max_tensors": 1.5}, TypeError, "max_tensors"),
        ({"max_rank": True}, TypeError, "max_rank"),
        ({"max_unknown_bytes": -5}, ValueError, "max_unknown_bytes"),
        ({"expansion_floor_bytes": -1}, ValueError, "expansion_floor_bytes"),
        ({"max_tensors_per_mib": 0}, ValueError, "max_tensors_per_mib"),
        ({"max_expansion": 0}, ValueError, "max_expansion"),
        ({"max_expansion": "big"}, TypeError, "max_expansion"),
    ],
)
def test_bad_decode_limits_are_refused_naming_the_field(
    kwargs: dict[str, Any], error: type[Exception], field: str
) -> None:
    with pytest.raises(error, match=rf"DecodeLimits\.{field} must be"):
        DecodeLimits(**kwargs)


def test_positional_nonsense_and_none_where_allowed() -> None:
    with pytest.raises(ValueError, match=r"DecodeLimits\.max_tensor_bytes must be an int >= 0"):
        DecodeLimits(-1)
    with pytest.raises(TypeError, match=r"DecodeLimits\.max_tensor_bytes"):
        DecodeLimits("x")  # type: ignore[arg-type]
    DecodeLimits(max_expansion=None, max_tensors_per_mib=None, max_tensors=0)


# 6. compression levels


@pytest.mark.parametrize(
    ("compression", "level", "valid"),
    [
        ("zstd", 99, "-131072 to 22"),
        ("zstd", -(1 << 17) - 1, "-131072 to 22"),
        ("lz4", 17, "-65537 to 16"),
    ],
)
def test_a_level_out_of_range_names_the_codecs_range(
    compression: str, level: int, valid: str
) -> None:
    with pytest.raises(SerializationException, match=f"out of range for {compression}.*{valid}"):
        EncodeOptions(compression=compression, level=level)
    with pytest.raises(SerializationException, match=valid):
        encode_tensor_map(STATE, compression=compression, level=level)


def test_levels_in_range_still_encode() -> None:
    for compression, level in [("zstd", 22), ("zstd", -5), ("lz4", 16), ("lz4", -1), ("none", 99)]:
        blob = encode_tensor_map(STATE, compression=compression, level=level)
        assert decode_tensor_map(blob, as_numpy=True)["w"].tolist() == STATE["w"].tolist()


# 7. the compat AsyncKafkaClient without a config


@pytest.mark.parametrize("config", [None, "localhost:9092", ["bootstrap_servers"]])
def test_compat_kafka_client_needs_a_config_dict(config: object) -> None:
    with pytest.raises(ConfigurationException, match=r"needs a config dict.*bootstrap_servers"):
        AsyncKafkaClient(config)  # type: ignore[arg-type]


# 8. transport constructors


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"part_timeout": 0}, ValueError, r"part_timeout must be a number > 0 \(seconds\), got 0"),
        ({"part_timeout": -3.0}, ValueError, r"part_timeout must be a number > 0"),
        ({"part_timeout": float("nan")}, ValueError, r"part_timeout must be a number > 0"),
        ({"part_timeout": "10"}, TypeError, r"part_timeout must be a number > 0.*got str"),
        ({"max_pending_transfers": 0}, ValueError, r"max_pending_transfers must be an int >= 1"),
        ({"max_pending_transfers": 2.0}, TypeError, r"max_pending_transfers must be an int"),
        ({"max_pending_bytes": -1}, ValueError, r"max_pending_bytes must be an int >= 1 bytes"),
        ({"max_payload_bytes": 0}, ValueError, r"max_payload_bytes must be an int >= 1"),
        ({"remember_completed": -1}, ValueError, r"remember_completed must be an int >= 0"),
    ],
)
def test_reassembler_refuses_nonsense_settings(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Reassembler(**kwargs)


def test_reassembler_takes_sensible_settings() -> None:
    Reassembler(part_timeout=float("inf"), max_pending_transfers=1, remember_completed=0)
    Reassembler(part_timeout=5)


def test_in_memory_transport_names_the_smallest_record_limit() -> None:
    with pytest.raises(
        ValueError,
        match=rf"max_record_bytes must be an int >= {MIN_RECORD_BYTES} bytes .*got 100",
    ):
        InMemoryTransport(max_record_bytes=100)
    with pytest.raises(TypeError, match=r"max_record_bytes must be an int"):
        InMemoryTransport(max_record_bytes="1MB")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"broker must be an InMemoryBroker"):
        InMemoryTransport({})  # type: ignore[arg-type]
    assert InMemoryTransport(max_record_bytes=700).max_record_bytes == 700


# 9. other libraries' files handed to load / load_file


def _safetensors_bytes() -> bytes:
    header = b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    return struct.pack("<Q", len(header)) + header + np.ones(2, np.float32).tobytes()


def _torch_zip_bytes() -> bytes:
    out = io.BytesIO()
    torch.save({"w": torch.ones(2)}, out)
    return out.getvalue()


def _npz_bytes() -> bytes:
    out = io.BytesIO()
    np.savez(out, w=np.ones(2))
    return out.getvalue()


def _npy_bytes() -> bytes:
    out = io.BytesIO()
    np.save(out, np.ones(2))
    return out.getvalue()


#: What pickle.dumps writes for {"w": [1.0, 2.0]} at protocol 2 and {"w": 1} at
#: protocol 5, written out here: the repository imports pickle in one place only
#: (benchmarks/legacy.py).
PICKLE_2 = (
    b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01]q\x02(G?\xf0\x00\x00\x00\x00\x00\x00"
    b"G@\x00\x00\x00\x00\x00\x00\x00es."
)
PICKLE_5 = b"\x80\x05\x95\n\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01w\x94K\x01s."

FOREIGN = {
    "safetensors": (_safetensors_bytes, "a safetensors file, not a flwire tensor map"),
    "torch_zip": (_torch_zip_bytes, "a torch.save file (a zip archive)"),
    "torch_legacy": (
        lambda: PICKLE_2,
        "a Python pickle (a legacy torch.save file?)",
    ),
    "pickle5": (lambda: PICKLE_5, "flwire never unpickles"),
    "npy": (_npy_bytes, "a numpy .npy file"),
    "npz": (_npz_bytes, "a numpy .npz archive"),
    "gzip": (lambda: gzip.compress(b"old weights"), "gzip-compressed"),
}


@pytest.mark.parametrize("kind", sorted(FOREIGN))
@pytest.mark.parametrize("module", [fnp, ftorch], ids=["numpy", "torch"])
def test_foreign_files_are_named_not_parsed(tmp_path: Path, module: Any, kind: str) -> None:
    make, says = FOREIGN[kind]
    data = make()
    path = tmp_path / f"model.{kind}"
    path.write_bytes(data)
    with pytest.raises(SerializationException, match=rf"{path.name}: this is ") as e:
        module.load_file(path)
    assert says in str(e.value)
    with pytest.raises(SerializationException, match=r"^data: this is ") as e:
        module.load(data)
    assert says in str(e.value)


def test_the_real_safetensors_and_torch_save_files_are_recognised(tmp_path: Path) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file({"w": torch.ones(3)}, str(path))
    with pytest.raises(SerializationException, match=r"load it with safetensors"):
        ftorch.load_file(path)
    torch_path = tmp_path / "model.pt"
    torch.save(MODEL.state_dict(), torch_path)
    with pytest.raises(SerializationException, match=r"torch\.load\(path, weights_only=True\)"):
        fnp.load_file(torch_path)
    assert zipfile.is_zipfile(torch_path)


def test_tensor_maps_still_load(tmp_path: Path) -> None:
    path = tmp_path / "model.flwire"
    fnp.save_file(STATE, path)
    assert fnp.load_file(path)["w"].tolist() == STATE["w"].tolist()
    assert ftorch.load(fnp.save({}), limits=DecodeLimits()) == {}


def test_numpy_numbers_are_numbers() -> None:
    """Sizes computed with numpy (np.int64, np.float32) pass the checks, as
    they did before the checks; bools do not."""
    assert DecodeLimits(max_total_bytes=np.int64(10**9)).max_total_bytes == 10**9
    assert InMemoryTransport(max_record_bytes=np.int64(1 << 20)).max_record_bytes == 1 << 20
    assert type(InMemoryTransport(max_record_bytes=np.int64(1 << 20)).max_record_bytes) is int
    Reassembler(part_timeout=np.float32(2.5), max_pending_transfers=np.int32(8))
    with pytest.raises(TypeError, match="max_record_bytes must be an int"):
        InMemoryTransport(max_record_bytes=True)
