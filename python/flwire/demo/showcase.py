"""A short tour of what flwire does today: encode a CNN's weights, decode them,
and show what the decoder does with corrupted bytes.

The full federated run (server, clients, rounds) replaces this tour once the
transport exists; until then `flwire demo` / `make demo` run this.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TextIO

import torch
from torch import nn

from flwire.exceptions import SerializationException
from flwire.serialization import (
    WeightSerializer,
    decode_tensor_map,
    encode_tensor_map,
    read_tensor_map,
)
from flwire.v1 import tensor_pb2


def _cnn() -> nn.Module:
    """The architecture of the old SimpleCNN (1.2M parameters, 28x28 inputs)."""
    torch.manual_seed(0)
    return nn.ModuleDict(
        {
            "conv1": nn.Conv2d(1, 32, 3, 1),
            "conv2": nn.Conv2d(32, 64, 3, 1),
            "fc1": nn.Linear(9216, 128),
            "fc2": nn.Linear(128, 10),
        }
    )


def _best_ms(fn: Callable[[], Any], repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def run(out: TextIO) -> int:
    state = _cnn().state_dict()
    info = WeightSerializer.get_weights_size(state)
    raw = info["total_bytes"]
    print(
        f"SimpleCNN state dict: {info['layer_count']} tensors, "
        f"{info['total_parameters']:,} parameters, {raw / 1e6:.2f} MB raw",
        file=out,
    )
    print("", file=out)
    print(f"{'mode':<16}{'bytes':>12}{'of raw':>9}{'encode ms':>11}{'decode ms':>11}", file=out)
    modes: dict[str, dict[str, Any]] = {
        "zstd (default)": {"compression": "zstd"},
        "zstd + shuffle": {"compression": "zstd", "shuffle": True},
        "uncompressed": {"compression": "none"},
    }
    for label, opts in modes.items():
        blob = encode_tensor_map(state, **opts)
        enc = _best_ms(functools.partial(encode_tensor_map, state, **opts))
        dec = _best_ms(functools.partial(decode_tensor_map, blob))
        back = decode_tensor_map(blob)
        assert all(torch.equal(back[k], v) for k, v in state.items())
        print(
            f"{label:<16}{len(blob):>12,}{len(blob) / raw:>9.3f}{enc:>11.2f}{dec:>11.2f}", file=out
        )

    blob = WeightSerializer.serialize_weights(state)
    print("", file=out)
    print("Any protobuf runtime reads the bytes; the generated class sees:", file=out)
    parsed = tensor_pb2.TensorMap.FromString(blob)
    for t in parsed.tensors:
        print(
            f"  {t.name:<14} {tensor_pb2.Dtype.Name(t.dtype):<15} shape={list(t.shape)!s:<18}"
            f" {tensor_pb2.Codec.Name(t.codec):<17} {len(t.data):>8,} B  crc32c={t.crc32c:08x}",
            file=out,
        )

    print("", file=out)
    print("Decoding bytes that were damaged in transit:", file=out)
    record = read_tensor_map(blob).records[2]
    damaged = bytearray(blob)
    offset = blob.find(bytes(record.data))
    damaged[offset + len(record.data) // 2] ^= 0x01
    try:
        decode_tensor_map(bytes(damaged))
        print("  (the damage went unnoticed: this should not happen)", file=out)
        return 1
    except SerializationException as exc:
        print(f"  {type(exc).__name__}: {exc}", file=out)
    try:
        decode_tensor_map(blob[: len(blob) // 3])
    except SerializationException as exc:
        print(f"  {type(exc).__name__}: {exc}", file=out)
    print("", file=out)
    print(
        "Next: `make test` runs the suite; `make bench` compares flwire with the old path.",
        file=out,
    )
    return 0
