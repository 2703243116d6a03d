"""flwire.compat.models: the old ``common.models`` architectures, metadata, factory, utilities."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any, TypeVar

import pytest
import torch
from torch import nn

from flwire.compat.models.base import BaseFLModel
from flwire.compat.models.neural_networks import SimpleCNN, SimpleMLP
from flwire.compat.models.utils import (
    UnknownModelError,
    compare_model_architectures,
    create_model_from_config,
    get_model_hash,
    load_model_config,
    save_model_config,
)
from flwire.exceptions import FLException, ModelException

CNN_PARAMS = 1_199_882
MLP_PARAMS = 109_386
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def _fresh(cls: type[ModuleT], seed: int, **kwargs: Any) -> ModuleT:
    torch.manual_seed(seed)
    return cls(**kwargs)


# ----------------------------------------------------------------------------- architectures


def test_simple_cnn_parameter_count_matches_legacy():
    model = SimpleCNN()
    assert model.count_parameters() == CNN_PARAMS
    assert model.parameter_count == CNN_PARAMS
    assert sum(p.numel() for p in model.parameters()) == CNN_PARAMS


def test_simple_mlp_default_parameter_count_matches_legacy():
    model = SimpleMLP()
    assert model.count_parameters() == MLP_PARAMS
    assert model.parameter_count == MLP_PARAMS


def test_simple_cnn_layers_match_legacy():
    model = SimpleCNN()
    assert isinstance(model.conv1, nn.Conv2d)
    assert (model.conv1.in_channels, model.conv1.out_channels) == (1, 32)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert (model.conv2.in_channels, model.conv2.out_channels) == (32, 64)
    assert model.conv2.kernel_size == (3, 3) and model.conv2.stride == (1, 1)
    assert model.dropout1.p == 0.25
    assert model.dropout2.p == 0.5
    assert (model.fc1.in_features, model.fc1.out_features) == (9216, 128)
    assert (model.fc2.in_features, model.fc2.out_features) == (128, 10)
    assert list(model.state_dict()) == [
        "conv1.weight",
        "conv1.bias",
        "conv2.weight",
        "conv2.bias",
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
    ]


def test_simple_mlp_layers_match_legacy():
    model = SimpleMLP()
    kinds = [type(m).__name__ for m in model.network]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert [m.p for m in model.network if isinstance(m, nn.Dropout)] == [0.2, 0.2]
    linears = [m for m in model.network if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 128), (128, 64), (64, 10)]


def test_simple_mlp_custom_dims():
    model = SimpleMLP(input_dim=20, hidden_dims=[16, 8, 4], output_dim=3)
    linears = [m for m in model.network if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (20, 16),
        (16, 8),
        (8, 4),
        (4, 3),
    ]
    expected = (20 * 16 + 16) + (16 * 8 + 8) + (8 * 4 + 4) + (4 * 3 + 3)
    assert model.count_parameters() == expected


def test_simple_mlp_without_hidden_layers():
    model = SimpleMLP(input_dim=5, hidden_dims=[], output_dim=2)
    assert len(model.network) == 1
    assert model.get_model_info()["hidden_layers"] == 0
    assert model.count_parameters() == 5 * 2 + 2


def test_simple_cnn_custom_classes_and_channels():
    model = SimpleCNN(num_classes=7, input_channels=3)
    assert model.conv1.in_channels == 3
    assert model.fc2.out_features == 7
    assert model.count_parameters() == CNN_PARAMS - 1290 + (128 * 7 + 7) + (2 * 32 * 9)


def test_count_parameters_counts_only_trainable():
    model = SimpleMLP()
    for p in model.network[0].parameters():
        p.requires_grad = False
    assert model.count_parameters() == MLP_PARAMS - (784 * 128 + 128)


# ----------------------------------------------------------------------------- forward


def test_cnn_forward_gives_log_probabilities():
    torch.manual_seed(0)
    model = SimpleCNN().eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)
    assert (out <= 0).all()
    torch.testing.assert_close(out.exp().sum(dim=1), torch.ones(2))


def test_cnn_forward_with_three_channels():
    model = SimpleCNN(num_classes=4, input_channels=3).eval()
    with torch.no_grad():
        out = model(torch.randn(5, 3, 28, 28))
    assert out.shape == (5, 4)


def test_mlp_flattens_image_batches():
    torch.manual_seed(0)
    model = SimpleMLP().eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        from_images = model(x)
        from_flat = model(x.view(2, -1))
    assert from_images.shape == (2, 10)
    torch.testing.assert_close(from_images, from_flat)


def test_mlp_outputs_raw_logits():
    torch.manual_seed(1)
    model = SimpleMLP(input_dim=4, hidden_dims=[3], output_dim=2).eval()
    with torch.no_grad():
        out = model(torch.randn(8, 4))
    assert out.shape == (8, 2)
    # Unlike the CNN, no log_softmax: rows need not be log-probabilities.
    assert not torch.allclose(out.exp().sum(dim=1), torch.ones(8))


# ----------------------------------------------------------------------------- metadata


def test_mlp_model_info_exactly_as_legacy():
    assert SimpleMLP().get_model_info() == {
        "name": "SimpleMLP",
        "version": "1.0",
        "parameters": MLP_PARAMS,
        "input_dim": 784,
        "output_dim": 10,
        "hidden_layers": 2,
    }


def test_mlp_model_info_custom():
    info = SimpleMLP(input_dim=12, hidden_dims=[6, 5, 4], output_dim=2).get_model_info()
    assert info["input_dim"] == 12
    assert info["output_dim"] == 2
    assert info["hidden_layers"] == 3
    assert info["parameters"] == (12 * 6 + 6) + (6 * 5 + 5) + (5 * 4 + 4) + (4 * 2 + 2)


def test_cnn_model_info_exactly_as_legacy():
    assert SimpleCNN().get_model_info() == {
        "name": "SimpleCNN",
        "version": "1.0",
        "parameters": CNN_PARAMS,
        "input_channels": 1,
        "num_classes": 10,
        "architecture": "CNN",
    }


def test_cnn_model_info_custom():
    info = SimpleCNN(num_classes=5, input_channels=3).get_model_info()
    assert (info["input_channels"], info["num_classes"]) == (3, 5)


def test_base_attributes():
    model = SimpleMLP()
    assert model.model_name == "SimpleMLP"
    assert model.model_version == "1.0"
    assert isinstance(model, BaseFLModel)
    assert isinstance(model, nn.Module)


def test_cnn_layer_info_lists_leaf_modules():
    assert SimpleCNN().get_layer_info() == [
        {"name": "conv1", "type": "Conv2d", "parameters": 320},
        {"name": "conv2", "type": "Conv2d", "parameters": 18_496},
        {"name": "dropout1", "type": "Dropout", "parameters": 0},
        {"name": "dropout2", "type": "Dropout", "parameters": 0},
        {"name": "fc1", "type": "Linear", "parameters": 1_179_776},
        {"name": "fc2", "type": "Linear", "parameters": 1290},
    ]


def test_mlp_layer_info_lists_leaf_modules():
    layers = SimpleMLP().get_layer_info()
    assert [(layer["name"], layer["type"]) for layer in layers] == [
        ("network.0", "Linear"),
        ("network.1", "ReLU"),
        ("network.2", "Dropout"),
        ("network.3", "Linear"),
        ("network.4", "ReLU"),
        ("network.5", "Dropout"),
        ("network.6", "Linear"),
    ]
    assert sum(layer["parameters"] for layer in layers) == MLP_PARAMS
    # Containers (the model itself, the Sequential) are not leaves.
    assert all(layer["name"] not in ("", "network") for layer in layers)


# ----------------------------------------------------------------------------- BaseFLModel


def test_base_model_is_abstract():
    with pytest.raises(TypeError):
        BaseFLModel()  # type: ignore[abstract]


def test_subclass_missing_get_model_info_cannot_be_instantiated():
    class OnlyForward(BaseFLModel):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    with pytest.raises(TypeError, match="get_model_info"):
        OnlyForward()  # type: ignore[abstract]


def test_subclass_missing_forward_cannot_be_instantiated():
    class OnlyInfo(BaseFLModel):
        def get_model_info(self) -> dict[str, Any]:
            return {}

    with pytest.raises(TypeError, match="forward"):
        OnlyInfo()  # type: ignore[abstract]


class _Tiny(BaseFLModel):
    def __init__(self) -> None:
        super().__init__()
        self.model_name = "Tiny"
        self.fc = nn.Linear(3, 2)
        self.parameter_count = self.count_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)

    def get_model_info(self) -> dict[str, Any]:
        return {"name": self.model_name, "parameters": self.parameter_count}


def test_complete_subclass_works():
    model = _Tiny()
    assert model.count_parameters() == 8
    assert model.get_layer_info() == [{"name": "fc", "type": "Linear", "parameters": 8}]
    assert model(torch.zeros(1, 3)).shape == (1, 2)
    assert model.model_version == "1.0"


def test_base_defaults_before_subclass_sets_them():
    class Bare(BaseFLModel):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

        def get_model_info(self) -> dict[str, Any]:
            return {}

    model = Bare()
    assert model.model_name is None
    assert model.model_version == "1.0"
    assert model.parameter_count == 0
    assert model.count_parameters() == 0
    assert model.get_layer_info() == [{"name": "", "type": "Bare", "parameters": 0}]


# ----------------------------------------------------------------------------- factory


def test_factory_default_is_mlp():
    model = create_model_from_config({})
    assert isinstance(model, SimpleMLP)
    assert model.count_parameters() == MLP_PARAMS


def test_factory_mlp_defaults():
    model = create_model_from_config({"type": "SimpleMLP"})
    assert isinstance(model, SimpleMLP)
    assert model.get_model_info() == SimpleMLP().get_model_info()


def test_factory_mlp_custom_params():
    model = create_model_from_config(
        {"type": "SimpleMLP", "input_dim": 30, "hidden_dims": [20], "output_dim": 4}
    )
    assert isinstance(model, SimpleMLP)
    info = model.get_model_info()
    assert (info["input_dim"], info["output_dim"], info["hidden_layers"]) == (30, 4, 1)
    assert info["parameters"] == (30 * 20 + 20) + (20 * 4 + 4)


def test_factory_cnn_defaults():
    model = create_model_from_config({"type": "SimpleCNN"})
    assert isinstance(model, SimpleCNN)
    assert model.count_parameters() == CNN_PARAMS


def test_factory_cnn_custom_params():
    model = create_model_from_config({"type": "SimpleCNN", "num_classes": 3, "input_channels": 2})
    assert isinstance(model, SimpleCNN)
    info = model.get_model_info()
    assert (info["num_classes"], info["input_channels"]) == (3, 2)


def test_factory_ignores_unrelated_keys():
    model = create_model_from_config({"type": "SimpleCNN", "input_dim": 5, "comment": "x"})
    assert isinstance(model, SimpleCNN)
    assert model.count_parameters() == CNN_PARAMS


@pytest.mark.parametrize("model_type", ["ResNet", "simplemlp", "", None])
def test_factory_unknown_type_raises(model_type):
    with pytest.raises(UnknownModelError) as info:
        create_model_from_config({"type": model_type})
    err = info.value
    assert isinstance(err, ValueError)
    assert isinstance(err, ModelException)
    assert isinstance(err, FLException)
    assert repr(model_type) in str(err) or str(model_type) in str(err)


def test_unknown_type_catchable_as_value_error_like_legacy_code():
    try:
        create_model_from_config({"type": "Transformer"})
    except ValueError as exc:
        assert "Unknown model type" in str(exc)
        assert "Transformer" in str(exc)
    else:
        pytest.fail("no error raised")


def test_unknown_type_catchable_as_fl_exception():
    with pytest.raises(FLException):
        create_model_from_config({"type": "Transformer"})


# ----------------------------------------------------------------------------- hashes


def test_hash_is_sha256_hex():
    assert SHA256_HEX.match(get_model_hash(SimpleCNN()))


def test_hash_independent_of_weight_values():
    a = _fresh(SimpleCNN, 0)
    b = _fresh(SimpleCNN, 1)
    assert not torch.equal(a.conv1.weight, b.conv1.weight)
    assert get_model_hash(a) == get_model_hash(b)
    assert compare_model_architectures(a, b)


def test_hash_unchanged_by_training_or_zeroing():
    model = SimpleMLP()
    before = get_model_hash(model)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    assert get_model_hash(model) == before


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (lambda: SimpleCNN(), lambda: SimpleMLP()),
        (lambda: SimpleMLP(), lambda: SimpleMLP(hidden_dims=[128])),
        (lambda: SimpleMLP(), lambda: SimpleMLP(hidden_dims=[64, 128])),
        (lambda: SimpleMLP(), lambda: SimpleMLP(output_dim=5)),
        (lambda: SimpleCNN(), lambda: SimpleCNN(num_classes=5)),
        (lambda: SimpleCNN(), lambda: SimpleCNN(input_channels=3)),
        (lambda: SimpleCNN(), lambda: SimpleCNN().to(torch.float64)),
    ],
)
def test_hash_differs_for_different_architectures(one, other):
    a, b = one(), other()
    assert get_model_hash(a) != get_model_hash(b)
    assert not compare_model_architectures(a, b)


def test_hash_includes_class_name():
    class OtherTiny(_Tiny):
        pass

    a, b = _Tiny(), OtherTiny()
    assert list(a.state_dict()) == list(b.state_dict())
    assert get_model_hash(a) != get_model_hash(b)


def test_hash_independent_of_memory_addresses():
    class AddressRepr(_Tiny):
        def extra_repr(self) -> str:
            return f"at {id(self):#x}"

    a, b = AddressRepr(), AddressRepr()
    assert str(a) != str(b)  # the old str(model)-based hash would differ
    assert get_model_hash(a) == get_model_hash(b)


def test_hash_stable_across_processes():
    code = (
        "from flwire.compat.models import SimpleCNN, SimpleMLP, get_model_hash\n"
        "print(get_model_hash(SimpleCNN()))\n"
        "print(get_model_hash(SimpleMLP(hidden_dims=[32])))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    lines = result.stdout.split()
    assert lines == [get_model_hash(SimpleCNN()), get_model_hash(SimpleMLP(hidden_dims=[32]))]


def test_hash_does_not_change_on_repeat_calls():
    model = SimpleCNN()
    assert get_model_hash(model) == get_model_hash(model)


# ----------------------------------------------------------------------------- configs


def test_save_and_load_model_config_round_trip(tmp_path):
    model = SimpleCNN(num_classes=7)
    path = tmp_path / "nested" / "deeper" / "model.json"
    save_model_config(model, path)
    assert path.is_file()
    loaded = load_model_config(path)
    assert loaded["type"] == "SimpleCNN"
    assert loaded["info"] == model.get_model_info()
    assert loaded["state_dict_keys"] == list(model.state_dict().keys())
    # The old keys are all there; extras are allowed.
    assert {"type", "info", "state_dict_keys"} <= set(loaded)
    assert json.loads(path.read_text()) == loaded


def test_save_model_config_accepts_str_path(tmp_path):
    model = SimpleMLP(hidden_dims=[4])
    path = tmp_path / "a" / "m.json"
    save_model_config(model, str(path))
    loaded = load_model_config(str(path))
    assert loaded["type"] == "SimpleMLP"
    assert loaded["info"]["hidden_layers"] == 1


def test_saved_config_rebuilds_same_architecture(tmp_path):
    model = create_model_from_config({"type": "SimpleMLP", "hidden_dims": [32, 16]})
    path = tmp_path / "m.json"
    save_model_config(model, path)
    loaded = load_model_config(path)
    info = loaded["info"]
    rebuilt = create_model_from_config(
        {
            "type": loaded["type"],
            "input_dim": info["input_dim"],
            "output_dim": info["output_dim"],
            "hidden_dims": [32, 16],
        }
    )
    assert compare_model_architectures(model, rebuilt)
    if "architecture_hash" in loaded:
        assert loaded["architecture_hash"] == get_model_hash(rebuilt)


def test_load_missing_model_config_raises_model_exception(tmp_path):
    path = tmp_path / "missing.json"
    with pytest.raises(ModelException, match=re.escape(str(path))):
        load_model_config(path)


def test_load_invalid_json_model_config_raises_model_exception(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ModelException, match=re.escape(str(path))):
        load_model_config(path)


def test_load_non_utf8_model_config_raises_model_exception(tmp_path):
    # Regression: a UnicodeDecodeError used to escape instead of a ModelException.
    path = tmp_path / "binary.json"
    path.write_bytes(b"\x80\x81\xfe\xff not text")
    with pytest.raises(ModelException, match=re.escape(str(path))):
        load_model_config(path)


def test_load_directory_as_model_config_raises_model_exception(tmp_path):
    # Regression: an IsADirectoryError used to escape instead of a ModelException.
    path = tmp_path / "dir.json"
    path.mkdir()
    with pytest.raises(ModelException, match=re.escape(str(path))):
        load_model_config(path)


def test_save_model_config_of_plain_module(tmp_path):
    model = nn.Linear(2, 2)
    path = tmp_path / "plain.json"
    save_model_config(model, path)
    loaded = load_model_config(path)
    assert loaded["type"] == "Linear"
    assert loaded["state_dict_keys"] == ["weight", "bias"]
