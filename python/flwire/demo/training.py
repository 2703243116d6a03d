"""Local training, evaluation and FedAvg for the demo."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from flwire.aggregation.fedavg import StreamingFedAvg
from flwire.demo.data import Shard
from flwire.exceptions import AggregationException

#: Round configuration the server sends when none is given.
DEFAULT_CONFIG = {"local_epochs": 3, "learning_rate": 0.005}

# Dropout draws from torch's global generator, so trainings that overlap in
# threads would make each other's runs irreproducible: train one at a time
# (each training still uses every core through torch's own threads).
_TRAINING = threading.Lock()


def train_local(
    model: nn.Module,
    shard: Shard,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    stop: threading.Event | None = None,
) -> float:
    """Train in place with SGD + momentum; return the mean loss of the last epoch.
    Reproducible for a given seed.

    Once ``stop`` is set, training ends before the next batch (the model is then only
    partly trained): a thread cannot be cancelled, so this is how a cancelled round ends
    the training it started in a thread, instead of leaving the thread to run to the end.
    """
    with _TRAINING:
        torch.manual_seed(seed)
        return _train(
            model, shard, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, stop=stop
        )


def _train(
    model: nn.Module,
    shard: Shard,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    stop: threading.Event | None,
) -> float:
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    loss_sum, batches = 0.0, 0
    for _ in range(epochs):
        loss_sum, batches = 0.0, 0
        order = torch.randperm(len(shard), generator=gen)
        for start in range(0, len(shard), batch_size):
            if stop is not None and stop.is_set():
                return loss_sum / max(batches, 1)
            idx = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = F.nll_loss(model(shard.x[idx]), shard.y[idx])
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
            batches += 1
    return loss_sum / max(batches, 1)


@torch.no_grad()
def evaluate(model: nn.Module, shard: Shard) -> tuple[float, float]:
    """(accuracy, mean loss) on a shard."""
    model.eval()
    out = model(shard.x)
    loss = float(F.nll_loss(out, shard.y))
    accuracy = float((out.argmax(dim=1) == shard.y).float().mean())
    return accuracy, loss


def fedavg(
    updates: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[int]
) -> dict[str, torch.Tensor]:
    """Weighted average of state dicts (weights: examples per client), folded in
    float64 by :class:`~flwire.aggregation.StreamingFedAvg`. Integer tensors
    (e.g. counters) take the value of the largest contributor (the first, on a tie)."""
    if not updates:
        raise AggregationException("no client updates to aggregate")
    fold = StreamingFedAvg(updates[0])
    for i, (update, weight) in enumerate(zip(updates, weights, strict=True)):
        fold.add(f"{i:010d}", update, weight)
    return fold.result()
