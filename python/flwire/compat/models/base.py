"""BaseFLModel: the abstract base of flwire's models (mirrors ``common.models.base``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from flwire import _optional

_optional.require("torch")  # a clear error naming the extra when it is missing
import torch  # noqa: E402
from torch import nn  # noqa: E402


class BaseFLModel(ABC, nn.Module):
    """Abstract base class for federated learning models."""

    def __init__(self) -> None:
        super().__init__()
        self.model_name: str | None = None
        self.model_version = "1.0"
        self.parameter_count = 0

    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forward pass through the model."""

    @abstractmethod
    def get_model_info(self) -> dict[str, Any]:
        """Model metadata (name, version, parameters, architecture details)."""

    def count_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def get_layer_info(self) -> list[dict[str, Any]]:
        """Name, type and parameter count of every leaf module."""
        return [
            {
                "name": name,
                "type": type(module).__name__,
                "parameters": sum(p.numel() for p in module.parameters()),
            }
            for name, module in self.named_modules()
            if not list(module.children())
        ]
