"""The stream writer's choice of codec per tensor: a tensor whose probe (its
first PROBE_BYTES) does not shrink by EncodeOptions().min_saving under the codec is sent raw,
first run included; one that does keeps the codec for every run. A first run no
larger than the probe is compressed whole and chooses for the later runs.
Decoding is bit-exact either way."""

from __future__ import annotations

import asyncio

import crc32c as reference_crc32c
import numpy as np
import pytest
from stream_tools import assembled

from flwire.messages import client_update
from flwire.tensors import EncodeOptions, read_tensor_map
from flwire.tensors import schema as s
from flwire.tensors.encode import PROBE_BYTES
from flwire.transport.streaming import StreamWriter
from flwire.transport.streaming.format import parse_part
from flwire.v1 import tensor_pb2

ZSTD = tensor_pb2.CODEC_ZSTD

LIMIT = 64 << 10  # small records: each tensor below spans many runs


def _codecs(
    state: dict[str, np.ndarray], compression: str, limit: int = LIMIT, min_saving: float = 0.10
) -> tuple[dict[str, list[int]], dict]:
    options = EncodeOptions(stream=True, compression=compression, min_saving=min_saving)
    msg = client_update("c1", 1, state, options=options)

    async def main():
        writer = StreamWriter(msg, limit)
        values = [v async for v in writer.parts()]
        return values, (await assembled(values)).tensors(as_numpy=True)

    values, got = asyncio.run(main())
    names = list(state)
    codecs: dict[str, list[int]] = {name: [] for name in names}
    for value in values[1:-1]:
        chunk = parse_part(value).chunk
        assert chunk is not None
        codecs[names[chunk.tensor_index]].append(read_tensor_map(chunk.elements).records[0].codec)
    return codecs, got


def test_an_incompressible_tensor_is_sampled_once_then_sent_raw_and_a_compressible_one_is_not():
    rng = np.random.default_rng(5)
    state = {
        "noise": rng.integers(0, 256, 1 << 20, dtype=np.uint8).view(np.float32),
        "sparse": np.where(rng.random(1 << 18) < 0.05, rng.standard_normal(1 << 18), 0).astype(
            np.float32
        ),
    }
    codecs, got = _codecs(state, "zstd")
    # Random bytes do not shrink: the first run is stored raw too (it did not pay), and
    # the later runs are not even tried.
    assert len(codecs["noise"]) > 3 and set(codecs["noise"]) == {s.CODEC_NONE}
    # A 95 % sparse tensor shrinks far more than EncodeOptions().min_saving: zstd for every run.
    assert len(codecs["sparse"]) > 3 and set(codecs["sparse"]) == {ZSTD}
    for name, value in state.items():
        assert got[name].tobytes() == value.tobytes()


def test_a_tensor_that_shrinks_a_little_goes_raw_its_first_small_run_included():
    rng = np.random.default_rng(6)
    # Float32 weights ~ N(0, 0.02): zstd saves a few percent, less than min_saving. The
    # first run (no larger than the probe) is compressed whole, kept raw as it did not
    # pay, and the later runs follow it; with min_saving 0 every run keeps its zstd.
    weights = (rng.standard_normal(1 << 18) * 0.02).astype(np.float32)
    assert EncodeOptions().min_saving == 0.10
    codecs, got = _codecs({"w": weights}, "zstd")
    assert len(codecs["w"]) > 3 and set(codecs["w"]) == {s.CODEC_NONE}
    assert got["w"].tobytes() == weights.tobytes()
    codecs, got = _codecs({"w": weights}, "zstd", min_saving=0.0)
    assert len(codecs["w"]) > 3 and set(codecs["w"]) == {ZSTD}
    assert got["w"].tobytes() == weights.tobytes()


def test_runs_above_the_probe_follow_it_first_run_included():
    rng = np.random.default_rng(7)
    state = {
        # ~8 % saving under zstd: below EncodeOptions().min_saving, so not one run is compressed.
        "weights": (rng.standard_normal(1 << 20) * 0.02).astype(np.float32),
        # 95 % zeros: every run compressed.
        "sparse": np.where(rng.random(1 << 20) < 0.05, rng.standard_normal(1 << 20), 0).astype(
            np.float32
        ),
    }
    limit = 1 << 20
    assert limit > 2 * PROBE_BYTES
    codecs, got = _codecs(state, "zstd", limit)
    assert len(codecs["weights"]) >= 4 and set(codecs["weights"]) == {s.CODEC_NONE}
    assert len(codecs["sparse"]) >= 4 and set(codecs["sparse"]) == {ZSTD}
    for name, value in state.items():
        assert got[name].tobytes() == value.tobytes()


def test_without_a_codec_every_run_is_raw():
    codecs, _ = _codecs({"w": np.zeros(1 << 18, np.float32)}, "none")
    assert set(codecs["w"]) == {s.CODEC_NONE}


@pytest.mark.parametrize(
    ("compression", "shuffle"), [("none", False), ("zstd", True), ("zstd", False), ("lz4", True)]
)
def test_the_seal_s_crc_is_that_of_every_earlier_record(compression: str, shuffle: bool) -> None:
    """The writer combines each record's CRC-32C (computed on its worker); the
    seal must hold the CRC-32C of the records' bytes, computed here by the
    crc32c package over their concatenation. Compressible and random tensors
    (raw later runs) alike."""
    rng = np.random.default_rng(3)
    state = {
        "dense": rng.standard_normal(20_000).astype(np.float32),
        "sparse": np.repeat(np.arange(50, dtype=np.int64), 300),
        "one": np.array(1.5, dtype=np.float16),
    }
    opts = EncodeOptions(stream=True, compression=compression, shuffle=shuffle)
    msg = client_update("c", 1, state, num_examples=1, options=opts)

    async def values() -> list[bytes]:
        return [bytes(v) async for v in StreamWriter(msg, 9_000, threads=2).parts()]

    records = asyncio.run(values())
    seal = parse_part(records[-1]).seal
    assert seal is not None and seal.part_count == len(records) > 10
    assert seal.stream_crc32c == reference_crc32c.crc32c(b"".join(records[:-1]))
