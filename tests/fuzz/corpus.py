"""The seeds: golden vectors, envelopes built with ``flwire.messages`` (weights
exact and lossy, every body type, extensions) and the TransferParts that the
transport's splitter cuts such envelopes into. Deterministic: the same seeds in
every run (fixed message ids and timestamps), so a seed number names an input.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from flwire import messages
from flwire.tensors import EncodeOptions, LossyConfig, decode_tensor_map, encode_tensor_map
from flwire.transport.chunking import PART_OVERHEAD, split_payload

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
TENSOR_MAP, ENVELOPE, TRANSFER = "tensor_map", "envelope", "transfer"
KINDS = (TENSOR_MAP, ENVELOPE, TRANSFER)


@dataclass
class Seed:
    """One seed input: one record (a tensor map, an envelope) or, for a transfer,
    the records of its parts in order. ``expect`` is the layout a receiver
    would expect for the seed's tensors (names, dtypes, shapes), when it has any."""

    kind: str
    name: str
    records: list[bytes]
    expect: dict[str, Any] | None = field(default=None, repr=False)


def state_dict() -> dict[str, np.ndarray]:
    """A small model: a conv and a linear layer, a scalar counter, 16-bit tensors."""
    rng = np.random.default_rng(7)
    return {
        "conv.weight": rng.standard_normal((4, 1, 3, 3)).astype(np.float32),
        "conv.bias": rng.standard_normal(4).astype(np.float32),
        "fc.weight": rng.standard_normal((16, 80)).astype(np.float32),
        "fc.bias": np.zeros(16, np.float32),
        "steps": np.array(42, np.int64),
        "half": rng.standard_normal(96).astype(np.float16),
        "mask": rng.integers(0, 2, 24).astype(np.bool_),
        "ids": rng.integers(-1000, 1000, (3, 5)).astype(np.int32),
        "double": rng.standard_normal(40),
    }


def delta_dict() -> dict[str, np.ndarray]:
    """A sparse update (what top-k is for)."""
    sd = state_dict()
    out = {k: np.zeros_like(v) for k, v in sd.items() if v.dtype.kind == "f"}
    out["fc.weight"].flat[::37] = 0.25
    return out


def encode_options() -> dict[str, EncodeOptions]:
    lossy = 16  # min_elements: lossy down to small tensors
    return {
        "zstd": EncodeOptions(threads=1),
        "raw": EncodeOptions(compression="none", threads=1),
        "lz4-shuffle": EncodeOptions(compression="lz4", shuffle=True, threads=1),
        "zstd-shuffle": EncodeOptions(shuffle=True, threads=1),
        "float16": EncodeOptions(threads=1, lossy=LossyConfig("float16", min_elements=lossy)),
        "bfloat16": EncodeOptions(
            compression="none", threads=1, lossy=LossyConfig("bfloat16", min_elements=lossy)
        ),
        "int8": EncodeOptions(
            threads=1, lossy=LossyConfig("int8", block_size=32, min_elements=lossy)
        ),
        "int8-raw": EncodeOptions(
            compression="none",
            threads=1,
            lossy=LossyConfig("int8", block_size=9, min_elements=lossy),
        ),
        "topk": EncodeOptions(
            threads=1, lossy=LossyConfig("topk", topk_fraction=0.05, min_elements=lossy)
        ),
    }


def _fixed(msg: messages.Message, n: int) -> bytes:
    """The message with a fixed id and time, so the seeds are the same every run."""
    msg.envelope.message_id = f"00000000-0000-4000-8000-{n:012d}"
    msg.envelope.timestamp.seconds = 1_700_000_000 + n
    msg.envelope.timestamp.nanos = 0
    return msg.to_bytes()


def _envelopes() -> list[tuple[str, bytes]]:
    sd, delta = state_dict(), delta_dict()
    ext = {"note": "fuzz", "n": 3, "f": 0.5, "list": [1, "a", None], "raw": b"\x00\x01"}
    metrics = {"loss": 0.21, "acc": 0.9, "tags": ["a", "b"], "nested": {"x": 1}}
    build: list[tuple[str, Callable[[], messages.Message]]] = [
        ("heartbeat", lambda: messages.heartbeat("c1", "training", {"cpu": 0.5}, extensions=ext)),
        ("registration", lambda: messages.client_registration(
            "c1", max_message_bytes=1 << 20, capabilities={"gpu": True},
            model_info={"name": "cnn", "parameter_count": 1234, "layers": 3},
            attributes={"site": "x"})),
        ("training_start", lambda: messages.training_start(3, {"lr": 0.01}, ["c1", "c2"])),
        ("evaluation_request", lambda: messages.evaluation_request(
            2, sd, {"batch": 32}, ["c1"], options=EncodeOptions(threads=1))),
        ("evaluation_request-noweights", lambda: messages.evaluation_request(2)),
        ("evaluation_result", lambda: messages.evaluation_result("c1", 2, metrics, 100)),
        ("shutdown", lambda: messages.shutdown("done", extensions={"why": "end"})),
        ("custom", lambda: messages.custom(
            "app.Thing", {"k": 1, "s": "v"}, sd, sender_id="c9",
            options=EncodeOptions(threads=1))),
        ("custom-noweights", lambda: messages.custom("app.Ping", {"k": [1.5, True]})),
        ("global_update", lambda: messages.global_update(
            4, sd, {"lr": 0.1}, options=EncodeOptions(threads=1))),
    ]  # fmt: skip
    for name, options in encode_options().items():
        weights = delta if name == "topk" else sd
        make = partial(
            messages.client_update, "c1", 5, weights, metrics, 600,
            delta=name == "topk", options=options, extensions=ext,
        )  # fmt: skip
        build.append((f"client_update-{name}", make))
    return [(name, _fixed(make(), n)) for n, (name, make) in enumerate(build)]


def _tensor_maps() -> list[tuple[str, bytes]]:
    maps = [(path.stem, path.read_bytes()) for path in sorted(VECTORS.glob("*.bin"))]
    # Refusal vectors: one check away from valid, so mutations of them reach further.
    maps += [(f"refusal-{p.stem}", p.read_bytes()) for p in sorted(VECTORS.glob("refusals/*.bin"))]
    sd, delta = state_dict(), delta_dict()
    for name, options in encode_options().items():
        maps.append(
            (f"map-{name}", encode_tensor_map(delta if name == "topk" else sd, options=options))
        )
    maps.append(("map-empty-tensors", encode_tensor_map({"e": np.zeros((0, 3), np.float32)})))
    return maps


def _layout(data: bytes) -> dict[str, Any] | None:
    try:
        return decode_tensor_map(data, as_numpy=True)
    except Exception:  # a vector numpy cannot hold (e.g. float8 without ml_dtypes)
        return None


def _weights(envelope: bytes) -> bytes | None:
    msg = messages.decode_message(envelope)
    return bytes(msg.weights) if msg.weights is not None else None


def build() -> list[Seed]:
    """Every seed, in a fixed order."""
    seeds: list[Seed] = []
    for name, data in _tensor_maps():
        seeds.append(Seed(TENSOR_MAP, name, [data], _layout(data)))
    envelopes = _envelopes()
    envelopes += [(p.stem, p.read_bytes()) for p in sorted(VECTORS.glob("messages/envelope_*.bin"))]
    for name, data in envelopes:
        weights = _weights(data)
        seeds.append(Seed(ENVELOPE, name, [data], _layout(weights) if weights else None))
    # Transfers: envelopes with weights cut into 2 to 12 parts (the part size is
    # what split_payload gets as a record limit, less its overhead).
    for n, (name, data) in enumerate(e for e in envelopes if _weights(e[1])):
        transfer_id = f"00000000-0000-4000-9000-{n:012d}"
        chunk = max(64, len(data) // (2 + n % 11))
        limit = chunk + PART_OVERHEAD + len(transfer_id)
        parts = [p for p, _, _ in split_payload(data, transfer_id, limit)]
        seeds.append(Seed(TRANSFER, f"parts-{name}", parts, None))
    golden = sorted(
        VECTORS.glob("messages/transfer_parts.*.bin"), key=lambda p: int(p.suffixes[0][1:])
    )
    if golden:
        seeds.append(Seed(TRANSFER, "transfer_parts", [p.read_bytes() for p in golden], None))
    return seeds


def digest(seeds: list[Seed]) -> str:
    """A short hash of every seed: a reproduction must see the same corpus."""
    h = hashlib.sha256()
    for seed in seeds:
        h.update(seed.kind.encode() + b"\0" + seed.name.encode() + b"\0")
        for record in seed.records:
            h.update(len(record).to_bytes(8, "little") + record)
    return h.hexdigest()[:16]
