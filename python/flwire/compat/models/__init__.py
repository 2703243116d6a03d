"""Models (mirrors ``common.models``)."""

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

__all__ = [
    "BaseFLModel",
    "SimpleCNN",
    "SimpleMLP",
    "UnknownModelError",
    "compare_model_architectures",
    "create_model_from_config",
    "get_model_hash",
    "load_model_config",
    "save_model_config",
]
