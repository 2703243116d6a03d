"""Property: whatever the data and EncodeOptions.min_saving, a tensor stored
compressed saved at least min_saving of its bytes, a tensor stored raw is its
bytes, and the map decodes to the input exactly (messages and streams alike)."""

from __future__ import annotations

import asyncio

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from stream_tools import assembled

from flwire import EncodeOptions, decode_tensor_map, encode_tensor_map, read_tensor_map
from flwire.messages import client_update
from flwire.tensors.encode import PROBE_BYTES
from flwire.transport.streaming import StreamWriter
from flwire.v1 import tensor_pb2

RAW = tensor_pb2.CODEC_UNSPECIFIED


@st.composite
def tensors(draw: st.DrawFn) -> np.ndarray:
    """uint8 data of up to 3 probes, mixing runs of zeros, repeats and noise, so
    that every share saved from none to nearly all comes up."""
    n = draw(st.integers(1, 3 * PROBE_BYTES))
    seed = draw(st.integers(0, 2**32 - 1))
    zero_share = draw(st.floats(0.0, 1.0))
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, n, np.uint8)
    data[rng.random(n) < zero_share] = 0
    return data


@settings(max_examples=60, deadline=None)
@given(
    data=tensors(),
    min_saving=st.floats(0.0, 0.99),
    compression=st.sampled_from(["zstd", "lz4"]),
    shuffle=st.booleans(),
)
def test_compressed_tensors_saved_at_least_min_saving(data, min_saving, compression, shuffle):
    wide = data[: data.nbytes // 4 * 4].view(np.float32)
    state = {"b": data, "f": wide}
    blob = encode_tensor_map(state, compression=compression, shuffle=shuffle, min_saving=min_saving)
    for rec in read_tensor_map(blob).records:
        raw = state[rec.name].nbytes
        if rec.codec == RAW:
            assert len(rec.data) == raw
        else:
            assert len(rec.data) <= (1 - min_saving) * raw
            assert len(rec.data) < raw
    got = decode_tensor_map(blob, as_numpy=True)
    for name, value in state.items():
        assert got[name].tobytes() == value.tobytes()


@settings(max_examples=25, deadline=None)
@given(data=tensors(), min_saving=st.floats(0.0, 0.99))
def test_streams_decode_exactly_whatever_min_saving(data, min_saving):
    options = EncodeOptions(stream=True, min_saving=min_saving)
    msg = client_update("c1", 1, {"x": data}, options=options)

    async def main() -> np.ndarray:
        values = [v async for v in StreamWriter(msg, 48 << 10).parts()]
        out: np.ndarray = (await assembled(values)).tensors(as_numpy=True)["x"]
        return out

    assert asyncio.run(main()).tobytes() == data.tobytes()
