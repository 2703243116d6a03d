"""Model factory and utilities (mirrors ``common.models.utils``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flwire.compat.models.neural_networks import SimpleCNN, SimpleMLP
from flwire.exceptions import ModelException

if TYPE_CHECKING:
    from torch import nn


class UnknownModelError(ModelException, ValueError):
    """The config names a model type flwire does not know (also a ValueError, as before)."""


def create_model_from_config(config: dict[str, Any]) -> nn.Module:
    """Build a model from a config dict: ``{"type": "SimpleMLP"|"SimpleCNN", ...}``."""
    model_type = config.get("type", "SimpleMLP")
    if model_type == "SimpleMLP":
        return SimpleMLP(
            input_dim=config.get("input_dim", 784),
            hidden_dims=config.get("hidden_dims", [128, 64]),
            output_dim=config.get("output_dim", 10),
        )
    if model_type == "SimpleCNN":
        return SimpleCNN(
            num_classes=config.get("num_classes", 10),
            input_channels=config.get("input_channels", 1),
        )
    raise UnknownModelError(f"Unknown model type: {model_type!r} (known: SimpleMLP, SimpleCNN)")


def get_model_hash(model: nn.Module) -> str:
    """A hash of the architecture: class name plus every state-dict entry's name,
    shape and dtype. Stable across processes and machines (unlike hashing
    ``str(model)``), and independent of the weights' values."""
    parts = [type(model).__name__]
    for name, tensor in model.state_dict().items():
        parts.append(f"{name}:{tuple(tensor.shape)}:{str(tensor.dtype).removeprefix('torch.')}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def compare_model_architectures(model1: nn.Module, model2: nn.Module) -> bool:
    """Whether two models have the same architecture (see :func:`get_model_hash`)."""
    return get_model_hash(model1) == get_model_hash(model2)


def save_model_config(model: nn.Module, filepath: str | Path) -> None:
    """Write the model's type, info and state-dict keys as JSON."""
    describe = getattr(model, "get_model_info", None)
    info = describe() if callable(describe) else {}
    config = {
        "type": getattr(model, "model_name", None) or type(model).__name__,
        "info": info,
        "state_dict_keys": list(model.state_dict().keys()),
        "architecture_hash": get_model_hash(model),
    }
    path = Path(filepath)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))


def load_model_config(filepath: str | Path) -> dict[str, Any]:
    """Read a config written by :func:`save_model_config`."""
    try:
        data: dict[str, Any] = json.loads(Path(filepath).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelException(f"model config not found: {filepath}") from None
    except OSError as exc:
        raise ModelException(f"cannot read model config {filepath}: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelException(f"model config {filepath} is not valid JSON: {exc}") from None
    return data
