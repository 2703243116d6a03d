"""EncodeOptions.min_saving: a tensor is stored compressed only when that saves at
least min_saving of its bytes (default 10 %), and a tensor above PROBE_BYTES whose
first PROBE_BYTES do not is not compressed at all.

Why: dense float32 weights under zstd save about 8 %. Compressing them and
decompressing them on the server cost more than the bytes take on a fast link:
with 128 clients sending CNN updates, the server spent 1.4 s of its 3.5 CPU-s
decompressing (``benchmarks.e2e.load``)."""

from __future__ import annotations

import numpy as np
import pytest

from flwire import (
    EncodeOptions,
    LossyConfig,
    decode_tensor_map,
    encode_tensor_map,
    read_tensor_map,
)
from flwire.exceptions import SerializationException
from flwire.messages import client_update, decode_message
from flwire.tensors import codecs
from flwire.tensors.encode import PROBE_BYTES
from flwire.v1 import tensor_pb2

RAW, ZSTD = tensor_pb2.CODEC_UNSPECIFIED, tensor_pb2.CODEC_ZSTD


def _weights(n: int, seed: int = 0) -> np.ndarray:
    """Dense float32 weights ~ N(0, 0.02): zstd level 1 saves 5-9 % of them."""
    return (np.random.default_rng(seed).standard_normal(n) * 0.02).astype(np.float32)


def _sparse(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < 0.05, rng.standard_normal(n), 0).astype(np.float32)


def _stored(blob: bytes) -> dict[str, tuple[int, int]]:
    """name -> (codec, stored bytes) of each tensor of a TensorMap."""
    return {r.name: (r.codec, len(r.data)) for r in read_tensor_map(blob).records}


def _compressed_bytes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the size of every buffer the zstd codec is asked to compress."""
    seen: list[int] = []
    original = codecs.ZstdCodec.compress

    def spy(self: codecs.ZstdCodec, data: object, level: int) -> bytes:
        seen.append(memoryview(data).nbytes)  # type: ignore[arg-type]
        return original(self, data, level)

    monkeypatch.setattr(codecs.ZstdCodec, "compress", spy)
    return seen


@pytest.mark.parametrize("n", [PROBE_BYTES // 4 // 2, 4 * PROBE_BYTES // 4])
def test_dense_weights_go_raw_by_default_and_compressed_with_min_saving_0(n: int) -> None:
    state = {"w": _weights(n), "s": _sparse(n)}
    raw = state["w"].nbytes
    default = _stored(encode_tensor_map(state))
    assert default["w"] == (RAW, raw)
    # The sparse tensor saves far more than 10 %: compressed either way.
    assert default["s"][0] == ZSTD and default["s"][1] < 0.5 * raw
    anything = _stored(encode_tensor_map(state, min_saving=0.0))
    assert anything["w"][0] == ZSTD and 0.85 * raw < anything["w"][1] < raw
    for blob in (encode_tensor_map(state), encode_tensor_map(state, min_saving=0.0)):
        got = decode_tensor_map(blob, as_numpy=True)
        for name, value in state.items():
            assert got[name].tobytes() == value.tobytes()


def test_the_threshold_is_the_share_saved() -> None:
    # Half zeros, half random bytes: zstd saves just under half.
    rng = np.random.default_rng(3)
    data = np.concatenate([np.zeros(1 << 15, np.uint8), rng.integers(0, 256, 1 << 15, np.uint8)])
    stored = _stored(encode_tensor_map({"x": data}, min_saving=0.0))["x"][1]
    saved = 1 - stored / data.nbytes
    assert 0.4 < saved < 0.5
    assert _stored(encode_tensor_map({"x": data}, min_saving=saved - 0.01))["x"][0] == ZSTD
    assert _stored(encode_tensor_map({"x": data}, min_saving=saved + 0.01))["x"][0] == RAW


def test_a_tensor_whose_probe_does_not_pay_is_not_compressed_at_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = _compressed_bytes(monkeypatch)
    w = _weights(16 * PROBE_BYTES // 4)  # 1 MiB: two 512 KiB frames if compressed
    blob = encode_tensor_map({"w": w}, threads=1)
    assert seen == [PROBE_BYTES]  # the probe, and nothing else
    assert _stored(blob)["w"] == (RAW, w.nbytes)
    seen.clear()
    encode_tensor_map({"w": w}, threads=1, min_saving=0.0)
    assert seen == [codecs.FRAME_BYTES, codecs.FRAME_BYTES]  # no probe at 0.0
    seen.clear()
    s = _sparse(16 * PROBE_BYTES // 4)
    blob = encode_tensor_map({"s": s}, threads=1)
    assert seen == [PROBE_BYTES, codecs.FRAME_BYTES, codecs.FRAME_BYTES]
    assert _stored(blob)["s"][0] == ZSTD


@pytest.mark.parametrize(
    ("lossy", "shuffle"),
    [
        (None, False),  # saves ~7.6 %: raw
        (None, True),  # ~16 %: zstd (a 64 KiB shuffled probe saw only 7.6 %)
        ("float16", False),  # ~8 %: raw
        ("float16", True),  # ~16 %: zstd
        ("bfloat16", False),  # ~22 %: zstd
        ("int8", False),  # ~5 %: raw
        ("topk", False),  # ~15 %: zstd
    ],
)
def test_the_probe_judges_as_the_whole_tensor_would(lossy: str | None, shuffle: bool) -> None:
    """The probe's choice is the one the whole tensor's saving makes. A shuffled
    probe is filtered as a tensor of its own and is larger: the first bytes of
    a whole-tensor shuffle are the floats' low bytes only (0 % saved), and small
    byte planes compress worse than whole ones."""
    weights = _weights(1 << 21)
    config = LossyConfig(lossy, min_elements=0) if lossy else None  # type: ignore[arg-type]
    whole = read_tensor_map(
        encode_tensor_map({"w": weights}, lossy=config, shuffle=shuffle, min_saving=0.0)
    ).records[0]
    saved = 1 - len(whole.data) / whole.raw_size
    assert abs(saved - 0.10) > 0.015  # clear of the threshold either way
    blob = encode_tensor_map({"w": weights}, lossy=config, shuffle=shuffle)
    assert read_tensor_map(blob).records[0].codec == (ZSTD if saved >= 0.10 else RAW)
    assert decode_tensor_map(blob, as_numpy=True)["w"].shape == weights.shape


def test_messages_follow_the_rule_and_decode_exactly() -> None:
    state = {"conv.weight": _weights(300_000), "mask": _sparse(100_000)}
    msg = client_update("c1", 1, state, {"loss": 0.5}, num_examples=10)
    got_msg = decode_message(msg.to_bytes())
    records = {r.name: r.codec for r in read_tensor_map(got_msg.weights).records}
    assert records == {"conv.weight": RAW, "mask": ZSTD}
    got = got_msg.tensors(as_numpy=True)
    for name, value in state.items():
        assert got[name].tobytes() == value.tobytes()


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, "0.1", True, None])
def test_min_saving_outside_0_1_is_refused(bad: object) -> None:
    if bad is None:  # None means "keep the option" in the keyword form, not a value
        with pytest.raises(SerializationException, match="min_saving"):
            EncodeOptions(min_saving=bad)  # type: ignore[arg-type]
        return
    with pytest.raises(SerializationException, match=r"min_saving must be a number in \[0, 1\)"):
        EncodeOptions(min_saving=bad)  # type: ignore[arg-type]
