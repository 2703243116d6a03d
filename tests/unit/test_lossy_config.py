"""LossyConfig validation, lossy pass-through in the serializers and message
builders, and the capabilities a client announces (Capabilities.supported_lossy)."""

from __future__ import annotations

import io

import pytest
import torch

from flwire import messages
from flwire.compat.serialization.message_serializer import MessageSerializer
from flwire.compat.serialization.weight_serializer import WeightSerializer
from flwire.exceptions import SerializationException
from flwire.inspect_cmd import inspect_bytes
from flwire.tensors import EncodeOptions, LossyConfig, read_tensor_map
from flwire.v1 import messages_pb2 as pb
from flwire.v1 import tensor_pb2


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"method": "int4"}, "unknown lossy method 'int4'"),
        ({"method": "int8", "block_size": 0}, "block_size"),
        ({"method": "int8", "block_size": 2**32}, "block_size"),
        ({"method": "topk", "topk_fraction": 0.0}, "topk_fraction"),
        ({"method": "topk", "topk_fraction": 1.5}, "topk_fraction"),
        ({"method": "topk", "topk_k": 0}, "topk_k"),
        ({"method": "float16", "min_elements": -1}, "min_elements"),
        ({"method": "float16", "include": [3]}, "include"),
    ],
)
def test_config_validation(kwargs, words):
    with pytest.raises(ValueError, match=words):
        LossyConfig(**kwargs)


def test_config_k_and_selection():
    config = LossyConfig("topk", topk_fraction=0.01)
    assert config.k_for(10_000) == 100
    assert config.k_for(5) == 1
    assert LossyConfig("topk", topk_k=50).k_for(10) == 10
    assert config.wire_method == tensor_pb2.LOSSY_TOP_K
    assert {LossyConfig(n).wire_method for n in ("float16", "bfloat16", "int8", "topk")} == {
        1,
        2,
        3,
        4,
    }


def test_default_min_elements_keeps_biases_exact():
    sd = {"fc.weight": torch.randn(64, 64), "fc.bias": torch.randn(64)}
    data = WeightSerializer.serialize_weights(sd, lossy=LossyConfig("int8"))
    kinds = {r.name: r.lossy_name for r in read_tensor_map(data).records}
    assert kinds == {"fc.weight": "int8", "fc.bias": ""}
    out = WeightSerializer.deserialize_weights(data)
    assert torch.equal(out["fc.bias"], sd["fc.bias"])
    assert (out["fc.weight"] - sd["fc.weight"]).abs().max() < sd["fc.weight"].abs().max() / 127


def test_weight_serializer_legacy_call_shape_is_lossless():
    sd = {"w": torch.randn(100, 100)}
    assert torch.equal(
        WeightSerializer.deserialize_weights(WeightSerializer.serialize_weights(sd, False))["w"],
        sd["w"],
    )


def test_encoder_error_names_the_tensor():
    with pytest.raises(SerializationException, match=r"'enc\.w'.*overflows float16"):
        WeightSerializer.serialize_weights(
            {"enc.w": torch.full((2048,), 1e6)}, lossy=LossyConfig("float16")
        )


def test_message_builders_pass_lossy_through():
    sd = {"w": torch.randn(128, 128)}
    bf16 = EncodeOptions(lossy=LossyConfig("bfloat16"))
    for msg in (
        messages.client_update("c1", 1, sd, options=bf16, delta=True),
        messages.global_update(1, sd, options=bf16),
        messages.evaluation_request(1, sd, options=bf16),
        messages.client_update(
            "c1", 1, sd, options=EncodeOptions("lz4", lossy=LossyConfig("bfloat16"))
        ),
    ):
        got = messages.decode_message(msg.to_bytes())
        assert got.weights_info().records[0].lossy_name == "bfloat16"
        assert torch.equal(got.tensors()["w"], sd["w"].to(torch.bfloat16).float())
    # The builders' lossy= and codec={...} keywords are gone: options=EncodeOptions(...).
    with pytest.raises(TypeError, match="lossy"):
        messages.client_update("c1", 1, sd, lossy=LossyConfig("int8"))  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="codec"):
        messages.client_update("c1", 1, sd, codec={"lossy": LossyConfig("topk")})  # type: ignore[call-arg]
    blob = WeightSerializer.serialize_weights(sd)
    with pytest.raises(SerializationException, match="state dict"):
        messages.client_update("c1", 1, blob, options=EncodeOptions(lossy=LossyConfig("int8")))


def test_registration_announces_every_lossy_method_by_default():
    msg = messages.decode_message(messages.client_registration("c1").to_bytes())
    caps = msg.body.capabilities
    assert list(caps.supported_lossy) == [
        tensor_pb2.LOSSY_CAST_FLOAT16,
        tensor_pb2.LOSSY_CAST_BFLOAT16,
        tensor_pb2.LOSSY_BLOCK_INT8,
        tensor_pb2.LOSSY_TOP_K,
    ]
    assert messages.supported_lossy(msg) == ["float16", "bfloat16", "int8", "topk"]
    assert messages.supported_lossy(msg.body) == messages.supported_lossy(caps)


def test_registration_with_chosen_lossy_methods_round_trips():
    msg = messages.client_registration("c1", supported_lossy=["int8", "LOSSY_TOP_K", 1])
    got = messages.decode_message(msg.to_bytes())
    assert messages.supported_lossy(got) == ["int8", "topk", "float16"]
    none = messages.decode_message(
        messages.client_registration("c2", supported_lossy=()).to_bytes()
    )
    assert messages.supported_lossy(none) == []
    with pytest.raises(SerializationException, match="supported_lossy"):
        messages.client_registration("c3", supported_lossy=["int3"])
    # A method this flwire does not know (a newer client) is left out.
    caps = pb.Capabilities()
    caps.supported_lossy.extend([3, 99])
    assert messages.supported_lossy(caps) == ["int8"]
    with pytest.raises(SerializationException, match="registration"):
        messages.supported_lossy("int8")


def test_pick_lossy_chooses_a_method_every_client_supports():
    a = messages.client_registration("a", supported_lossy=["int8", "topk"])
    b = messages.client_registration("b", supported_lossy=["topk", "bfloat16"])
    old = messages.client_registration("old", supported_lossy=())
    picked = messages.pick_lossy([a, b], ["int8", "topk"])
    assert picked is not None and picked.method == "topk"
    custom = LossyConfig("topk", topk_fraction=0.1)
    assert messages.pick_lossy([a, b], [custom]) is custom
    assert messages.pick_lossy([a, b, old], ["int8", "topk"]) is None
    assert messages.pick_lossy([], ["int8"]) is None


def test_old_style_registration_payload_lists_lossy_methods():
    blob = MessageSerializer.serialize_message(
        "client_registration", {"client_id": "c1", "supported_lossy": ["int8"]}
    )
    out = MessageSerializer.deserialize_message(blob)
    assert out["payload"]["supported_lossy"] == ["int8"]


def test_inspect_shows_the_lossy_method():
    data = WeightSerializer.serialize_weights(
        {"w": torch.randn(64, 64), "b": torch.randn(4)}, lossy=LossyConfig("int8", block_size=32)
    )
    out = io.StringIO()
    assert inspect_bytes(data, out) == 0
    lines = out.getvalue().splitlines()
    assert any(" w " in f" {line} " and "int8/32" in line and "crc ok" in line for line in lines)
    assert any("lossless" in line for line in lines)
