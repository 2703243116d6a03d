"""Handwritten digits that need no download, split non-IID across clients.

scikit-learn ships 1,797 8x8 digit images; they are upsampled to 28x28 so the
old SimpleCNN (built for MNIST) takes them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from flwire import _optional


@dataclass
class Shard:
    """One client's (or the server's) examples."""

    x: torch.Tensor  # (n, 1, 28, 28) float32, normalised
    y: torch.Tensor  # (n,) int64

    def __len__(self) -> int:
        return int(self.y.shape[0])


def load_digits_28() -> tuple[torch.Tensor, torch.Tensor]:
    """All digits as (n, 1, 28, 28) float32 in about [-1, 2.5], and labels."""
    digits = _optional.require("sklearn.datasets").load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
    images = (images - 0.1307) / 0.3081
    return images.contiguous(), torch.from_numpy(digits.target.astype(np.int64))


def split_non_iid(
    num_clients: int, *, alpha: float = 0.5, test_fraction: float = 0.2, seed: int = 0
) -> tuple[list[Shard], list[Shard], Shard]:
    """Per-client train shards, per-client test shards, and a global test set.

    Labels are spread with a Dirichlet(alpha) draw per class, so each client
    sees a skewed mix of digits (small alpha: more skew). Deterministic for a
    seed, so separate client processes compute the same split.
    """
    x, y = load_digits_28()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_test = int(len(y) * test_fraction)
    test_idx, train_idx = order[:n_test], order[n_test:]
    global_test = Shard(x[test_idx], y[test_idx])
    parts: list[list[int]] = [[] for _ in range(num_clients)]
    labels = y.numpy()
    for cls in range(10):
        idx = train_idx[labels[train_idx] == cls]
        rng.shuffle(idx)
        weights = rng.dirichlet([alpha] * num_clients)
        cuts = (np.cumsum(weights)[:-1] * len(idx)).astype(int)
        for client, chunk in enumerate(np.split(idx, cuts)):
            parts[client].extend(chunk.tolist())
    train, test = [], []
    for part in parts:
        idx = np.array(sorted(part), dtype=np.int64)
        rng.shuffle(idx)
        n_local_test = max(1, len(idx) // 5)
        test.append(Shard(x[idx[:n_local_test]], y[idx[:n_local_test]]))
        train.append(Shard(x[idx[n_local_test:]], y[idx[n_local_test:]]))
    return train, test, global_test
