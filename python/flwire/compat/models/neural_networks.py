"""SimpleMLP and SimpleCNN, with the architectures of ``common.models.neural_networks``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flwire import _optional

_optional.require("torch")  # a clear error naming the extra when it is missing
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from flwire.compat.models.base import BaseFLModel  # noqa: E402


class SimpleMLP(BaseFLModel):
    """Multi-layer perceptron: Linear-ReLU-Dropout(0.2) per hidden layer, then Linear."""

    def __init__(
        self, input_dim: int = 784, hidden_dims: Sequence[int] = (128, 64), output_dim: int = 10
    ) -> None:
        super().__init__()
        self.model_name = "SimpleMLP"
        layers: list[nn.Module] = []
        prev = input_dim
        for hidden in hidden_dims:
            layers += [nn.Linear(prev, hidden), nn.ReLU(), nn.Dropout(0.2)]
            prev = hidden
        layers.append(nn.Linear(prev, output_dim))
        self.network = nn.Sequential(*layers)
        self.parameter_count = self.count_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x.view(x.size(0), -1))

    def get_model_info(self) -> dict[str, Any]:
        linears = [m for m in self.network if isinstance(m, nn.Linear)]
        return {
            "name": self.model_name,
            "version": self.model_version,
            "parameters": self.parameter_count,
            "input_dim": linears[0].in_features,
            "output_dim": linears[-1].out_features,
            "hidden_layers": len(linears) - 1,
        }


class SimpleCNN(BaseFLModel):
    """Two 3x3 convolutions, max-pool, dropout, two linear layers; 28x28 inputs."""

    def __init__(self, num_classes: int = 10, input_channels: int = 1) -> None:
        super().__init__()
        self.model_name = "SimpleCNN"
        self.conv1 = nn.Conv2d(input_channels, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, num_classes)
        self.parameter_count = self.count_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = self.dropout1(F.max_pool2d(x, 2))
        x = torch.flatten(x, 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)

    def get_model_info(self) -> dict[str, Any]:
        return {
            "name": self.model_name,
            "version": self.model_version,
            "parameters": self.parameter_count,
            "input_channels": self.conv1.in_channels,
            "num_classes": self.fc2.out_features,
            "architecture": "CNN",
        }
