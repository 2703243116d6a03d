"""Deterministic state dicts for the benchmark (every one is seeded).

* ``mlp``: the old ``SimpleMLP`` 784-128-64-10 (keys ``network.0.*``, ``network.3.*``,
  ``network.6.*``), default torch init.
* ``cnn``: the old ``SimpleCNN`` (conv1, conv2, fc1 9216->128, fc2; about 1.2M parameters),
  default torch init. These two stand in for "trained-like" weights.
* ``transformer100m``: about 100M float32 parameters shaped like a GPT-style transformer
  (token embedding 32000x768, 11 layers of q/k/v/o 768x768, MLP 768x3072 and 3072x768,
  biases and layer norms, a final layer norm), every value ~ N(0, 0.02).
* ``transformer100m_bf16``: the same tensors cast to bfloat16.

``quick=True`` swaps the 100M model for a ~10M one (d_model 384, 4 layers, vocab 8000) so
that the whole harness can be smoke-tested in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from flwire.models import SimpleCNN, SimpleMLP

SEED = 20240607


@dataclass(frozen=True)
class TransformerShape:
    d_model: int
    layers: int
    vocab: int

    @property
    def d_ff(self) -> int:
        return 4 * self.d_model


FULL = TransformerShape(d_model=768, layers=11, vocab=32000)  # 102.5M parameters
QUICK = TransformerShape(d_model=384, layers=4, vocab=8000)  # 10.2M parameters


def _frozen(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def mlp() -> dict[str, torch.Tensor]:
    """flwire's SimpleMLP(784, [128, 64], 10) (the old architecture), default init."""
    torch.manual_seed(SEED)
    return _frozen(SimpleMLP())


def cnn() -> dict[str, torch.Tensor]:
    """flwire's SimpleCNN (the old architecture, ~1.2M parameters), default init."""
    torch.manual_seed(SEED + 1)
    return _frozen(SimpleCNN())


def transformer(shape: TransformerShape, seed: int = SEED + 2) -> dict[str, torch.Tensor]:
    """A transformer-shaped float32 state dict, values ~ N(0, 0.02), generated fast."""
    gen = torch.Generator().manual_seed(seed)
    d, ff = shape.d_model, shape.d_ff

    def normal(*dims: int) -> torch.Tensor:
        return torch.randn(*dims, generator=gen, dtype=torch.float32).mul_(0.02)

    sd: dict[str, torch.Tensor] = {"embed_tokens.weight": normal(shape.vocab, d)}
    for i in range(shape.layers):
        p = f"layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            sd[p + f"attn.{name}.weight"] = normal(d, d)
            sd[p + f"attn.{name}.bias"] = normal(d)
        sd[p + "ln1.weight"] = normal(d)
        sd[p + "ln1.bias"] = normal(d)
        sd[p + "mlp.fc_in.weight"] = normal(ff, d)
        sd[p + "mlp.fc_in.bias"] = normal(ff)
        sd[p + "mlp.fc_out.weight"] = normal(d, ff)
        sd[p + "mlp.fc_out.bias"] = normal(d)
        sd[p + "ln2.weight"] = normal(d)
        sd[p + "ln2.bias"] = normal(d)
    sd["ln_f.weight"] = normal(d)
    sd["ln_f.bias"] = normal(d)
    return sd


def transformer_bf16(shape: TransformerShape) -> dict[str, torch.Tensor]:
    """The float32 transformer cast to bfloat16 (round to nearest even)."""
    return {k: v.to(torch.bfloat16) for k, v in transformer(shape).items()}


MODEL_NAMES = ("mlp", "cnn", "transformer100m", "transformer100m_bf16")


def builders(quick: bool = False) -> dict[str, Callable[[], dict[str, torch.Tensor]]]:
    """Model name -> a function building its state dict (called lazily, one at a time)."""
    shape = QUICK if quick else FULL
    return {
        "mlp": mlp,
        "cnn": cnn,
        "transformer100m": lambda: transformer(shape),
        "transformer100m_bf16": lambda: transformer_bf16(shape),
    }


def describe(sd: dict[str, torch.Tensor]) -> str:
    params = sum(t.numel() for t in sd.values())
    raw = sum(t.numel() * t.element_size() for t in sd.values())
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in sd.values()})
    return (
        f"{len(sd)} tensors, {params / 1e6:.2f}M params, {'/'.join(dtypes)}, {raw / 1e6:.1f} MB raw"
    )
