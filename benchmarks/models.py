"""Deterministic state dicts for both benchmarks (every one is seeded).

* ``mlp``: the old ``SimpleMLP`` 784-128-64-10 (keys ``network.0.*``, ``network.3.*``,
  ``network.6.*``), default torch init.
* ``cnn``: the old ``SimpleCNN`` (conv1, conv2, fc1 9216->128, fc2; about 1.2M parameters),
  default torch init. These two stand in for "trained-like" weights.
* ``transformer100m``: about 100M float32 parameters shaped like a GPT-style transformer
  (token embedding 32000x768, 11 layers of q/k/v/o 768x768, MLP 768x3072 and 3072x768,
  biases and layer norms, a final layer norm), every value ~ N(0, 0.02).
* ``transformer100m_bf16``: the same tensors cast to bfloat16.
* ``mixed``: a quantized-model-like dict of ~39 MB with every kind of dtype a real
  checkpoint holds. A 4-layer transformer (d_model 768, vocab 8000) whose weight matrices
  are int8, quantized symmetrically per output channel from N(0, 0.02) floats, each with
  its float32 ``scale`` and int64 ``zero_point`` per channel (as torch.ao stores them);
  float32 biases and layer norms; bool masks (a 1024x1024 causal mask per layer, as
  GPT-2's ``attn.bias`` buffer, and a structured-pruning mask keeping ~70 % of each MLP's
  hidden channels); int64 ``position_ids``, a BatchNorm head with ``num_batches_tracked``,
  and step counters (``global_step``, ``ema.updates``). (An unstructured element-wise
  bool mask is left out: gzip level 9 crawls over one at ~0.3 MB/s, which would make the
  old-path anchor alone take minutes.)
* ``delta_dense``: a federated update, ``w_new - w_old`` for a ~11.7M-parameter float32
  transformer-shaped ``w_old`` ~ N(0, 0.02) (d_model 384, 4 layers, vocab 12000) and
  ``w_new = w_old + N(0, 1e-3)``. Computing the difference in float32 (as a client does)
  leaves each delta on the grid of ``w_new``'s ulp, so a few low mantissa bits are zero,
  as in real deltas. 46.8 MB raw: large enough for stable timings, small enough that the
  old path (gzip level 9, ~10 MB/s here) keeps ``make bench`` within its time budget.
* ``delta_sparse``: the same delta with every entry independently set to exactly 0.0 with
  probability 0.9 (a Bernoulli mask from its own seeded generator): 90 % zeros up to
  sampling noise (+-0.01 % at 12M entries), the kept 10 % are the dense delta's values.

The end-to-end benchmark sends ``cnn`` in its FL rounds and ``big_model`` (the 100M
transformer, or the ~10M one) as its one big update.

``quick=True`` swaps the 100M model for a ~10M one (d_model 384, 4 layers, vocab 8000) and
shrinks ``mixed`` and the deltas likewise (a few MB each), so that the whole harness can
be smoke-tested in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from flwire.compat.models import SimpleCNN, SimpleMLP

StateDict = dict[str, torch.Tensor]

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
MIXED = TransformerShape(d_model=768, layers=4, vocab=8000)  # 39 MB, mostly int8
MIXED_QUICK = TransformerShape(d_model=256, layers=2, vocab=2000)  # 3.7 MB
DELTA = TransformerShape(d_model=384, layers=4, vocab=12000)  # 11.7M parameters
DELTA_QUICK = TransformerShape(d_model=256, layers=2, vocab=4000)  # 2.6M parameters

CONTEXT = 1024  # causal-mask side and position_ids length in ``mixed``
DELTA_STD = 1e-3
SPARSE_ZERO_FRACTION = 0.9


def _frozen(module: nn.Module) -> StateDict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def mlp() -> StateDict:
    """SimpleMLP(784, [128, 64], 10) of flwire.compat (the old architecture), default init."""
    torch.manual_seed(SEED)
    return _frozen(SimpleMLP())


def cnn() -> StateDict:
    """SimpleCNN of flwire.compat (the old architecture, ~1.2M parameters), default init."""
    torch.manual_seed(SEED + 1)
    return _frozen(SimpleCNN())


def transformer(shape: TransformerShape, seed: int = SEED + 2) -> StateDict:
    """A transformer-shaped float32 state dict, values ~ N(0, 0.02), generated fast."""
    gen = torch.Generator().manual_seed(seed)
    d, ff = shape.d_model, shape.d_ff

    def normal(*dims: int) -> torch.Tensor:
        return torch.randn(*dims, generator=gen, dtype=torch.float32).mul_(0.02)

    sd: StateDict = {"embed_tokens.weight": normal(shape.vocab, d)}
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


def transformer_bf16(shape: TransformerShape) -> StateDict:
    """The float32 transformer cast to bfloat16 (round to nearest even)."""
    return {k: v.to(torch.bfloat16) for k, v in transformer(shape).items()}


def _quantized(sd: StateDict, prefix: str, rows: int, cols: int, gen: torch.Generator) -> None:
    """int8 weight quantized symmetrically per output channel from N(0, 0.02) floats, with
    its float32 per-channel scale and int64 zero point (all 0: symmetric)."""
    w = torch.randn(rows, cols, generator=gen).mul_(0.02)
    scale = w.abs().amax(dim=1).div_(127.0)
    sd[prefix + ".weight"] = w.div_(scale[:, None]).round_().clamp_(-127, 127).to(torch.int8)
    sd[prefix + ".scale"] = scale
    sd[prefix + ".zero_point"] = torch.zeros(rows, dtype=torch.int64)


def mixed(shape: TransformerShape, seed: int = SEED + 3) -> StateDict:
    """A quantized-transformer-like dict mixing int8, float32, int64 and bool tensors."""
    gen = torch.Generator().manual_seed(seed)
    d, ff = shape.d_model, shape.d_ff

    def normal(*dims: int, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(*dims, generator=gen).mul_(0.02).add_(mean)

    sd: StateDict = {"position_ids": torch.arange(CONTEXT).unsqueeze(0)}
    _quantized(sd, "embed_tokens", shape.vocab, d, gen)
    causal = torch.ones(CONTEXT, CONTEXT, dtype=torch.bool).tril_()
    for i in range(shape.layers):
        p = f"layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            _quantized(sd, p + f"attn.{name}", d, d, gen)
            sd[p + f"attn.{name}.bias"] = normal(d)
        sd[p + "attn.causal_mask"] = causal.clone()
        sd[p + "ln1.weight"], sd[p + "ln1.bias"] = normal(d, mean=1.0), normal(d)
        _quantized(sd, p + "mlp.fc_in", ff, d, gen)
        sd[p + "mlp.fc_in.bias"] = normal(ff)
        sd[p + "mlp.channel_mask"] = torch.rand(ff, generator=gen) >= 0.3
        _quantized(sd, p + "mlp.fc_out", d, ff, gen)
        sd[p + "mlp.fc_out.bias"] = normal(d)
        sd[p + "ln2.weight"], sd[p + "ln2.bias"] = normal(d, mean=1.0), normal(d)
        sd[p + "quant.calibration_steps"] = torch.tensor(512 + i, dtype=torch.int64)
    sd["head.bn.weight"], sd["head.bn.bias"] = normal(d, mean=1.0), normal(d)
    sd["head.bn.running_mean"], sd["head.bn.running_var"] = normal(d), normal(d, mean=1.0)
    sd["head.bn.num_batches_tracked"] = torch.tensor(18_750, dtype=torch.int64)
    sd["head.fc.weight"], sd["head.fc.bias"] = normal(10, d), normal(10)
    sd["global_step"] = torch.tensor(18_750, dtype=torch.int64)
    sd["ema.updates"] = torch.tensor(18_700, dtype=torch.int64)
    return sd


def delta_dense(shape: TransformerShape, seed: int = SEED + 4) -> StateDict:
    """``w_new - w_old`` in float32 with ``w_new = w_old + N(0, DELTA_STD)``."""
    gen = torch.Generator().manual_seed(seed + 1)
    out = {}
    for name, old in transformer(shape, seed).items():
        new = old + torch.randn(old.shape, generator=gen).mul_(DELTA_STD)
        out[name] = new.sub_(old)
    return out


def delta_sparse(shape: TransformerShape, seed: int = SEED + 4) -> StateDict:
    """The dense delta with each entry zeroed independently with probability 0.9."""
    gen = torch.Generator().manual_seed(seed + 2)
    out = delta_dense(shape, seed)
    for t in out.values():
        t.masked_fill_(torch.rand(t.shape, generator=gen) < SPARSE_ZERO_FRACTION, 0.0)
    return out


MODEL_NAMES = (
    "mlp",
    "cnn",
    "transformer100m",
    "transformer100m_bf16",
    "mixed",
    "delta_dense",
    "delta_sparse",
)
DELTA_MODELS = ("delta_dense", "delta_sparse")


def is_delta(model: str) -> bool:
    """Whether the model is a federated update delta (where top-k sparsification applies)."""
    return model in DELTA_MODELS


def big_model(quick: bool = False) -> StateDict:
    """``transformer100m``, or with ``quick`` its ~10M-parameter stand-in."""
    return transformer(QUICK if quick else FULL)


def builders(quick: bool = False) -> dict[str, Callable[[], StateDict]]:
    """Model name -> a function building its state dict (called lazily, one at a time)."""
    shape = QUICK if quick else FULL
    mixed_shape = MIXED_QUICK if quick else MIXED
    delta_shape = DELTA_QUICK if quick else DELTA
    return {
        "mlp": mlp,
        "cnn": cnn,
        "transformer100m": lambda: big_model(quick),
        "transformer100m_bf16": lambda: transformer_bf16(shape),
        "mixed": lambda: mixed(mixed_shape),
        "delta_dense": lambda: delta_dense(delta_shape),
        "delta_sparse": lambda: delta_sparse(delta_shape),
    }


def raw_size(sd: StateDict) -> int:
    """Bytes of tensor data in ``sd``."""
    return sum(t.numel() * t.element_size() for t in sd.values())


def zero_fraction(sd: StateDict) -> float:
    """Share of floating-point entries that are exactly zero."""
    floats = [t for t in sd.values() if t.is_floating_point()]
    total = sum(t.numel() for t in floats)
    return sum(int((t == 0).sum()) for t in floats) / total if total else 0.0


def describe(sd: StateDict) -> str:
    params = sum(t.numel() for t in sd.values())
    raw = raw_size(sd)
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in sd.values()})
    zeros = zero_fraction(sd)
    return (
        f"{len(sd)} tensors, {params / 1e6:.2f}M params, {'/'.join(dtypes)}, "
        f"{raw / 1e6:.1f} MB raw"
        + (f", {zeros:.2%} of float entries are 0.0" if zeros >= 0.01 else "")
    )
