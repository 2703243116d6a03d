"""What two writers must agree on byte for byte (docs/wire-format.md), each
computed here independently of the writer:

* the alignment padding of section 2.3 rule 7 (the shortest zero-filled
  padding field with at least one byte of payload), from the spec's formula;
* the NaN bits of the lossy casts (section 9.1: the quiet NaN of the input's
  sign), on both conversion paths (numpy, and torch's kernels);
* the order of ties in top-k (section 9.1: NaN first, then magnitude, then the
  lower index), so that the payload is byte-exact.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flwire import EncodeOptions, LossyConfig, encode_tensor_map, read_tensor_map
from flwire._protowire import LEN, iter_fields
from flwire.tensors import dtypes
from flwire.tensors.lossy import floats

ALIGN = 64
_PADDING, _DATA, _TENSORS = 8, 9, 1


def _varint_len(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def _spec_padding(start: int, header: int, data_key: int, data_len: int) -> int:
    """Section 2.3 rule 7: the length of the padding field (0: none) for a Tensor
    whose key is at ``start`` in the map, whose fields 1-7 take ``header`` bytes
    and whose data field has a key and length of ``data_key`` bytes."""
    for pad in [0] + [1 + _varint_len(p) + p for p in range(1, 2 * ALIGN + 2)]:
        body = header + pad + data_key + data_len
        if (start + 1 + _varint_len(body) + header + pad + data_key) % ALIGN == 0:
            return pad
    raise AssertionError("no padding aligns the data")


# Names of every length 0..150, so that every gap of 0-63 bytes (the edge cases
# 1 and 2 among them) and the growth of a length prefix past 127 occur.
_tensors = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=150),
        st.sampled_from(["<f4", "<f8", "<u2", "|u1"]),
        st.integers(min_value=1, max_value=40),
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(specs=_tensors)
def test_padding_is_the_shortest_field_of_the_spec(
    specs: list[tuple[int, str, int]],
) -> None:
    state = {
        f"{k:02d}" + "x" * length: np.arange(count, dtype=np.dtype(dt))
        for k, (length, dt, count) in enumerate(specs)
    }
    data = encode_tensor_map(state, EncodeOptions(compression="none"))
    buf = memoryview(data)
    for tensor in iter_fields(buf, 0, len(buf), "map"):
        assert tensor.number == _TENSORS and tensor.wire_type == LEN
        fields = list(iter_fields(buf, tensor.start, tensor.end, "tensor"))
        (data_field,) = [f for f in fields if f.number == _DATA]
        pads = [f for f in fields if f.number == _PADDING]
        pad_len = sum(f.end - f.key_start for f in pads)
        header = (pads[0].key_start if pads else data_field.key_start) - tensor.start
        want = _spec_padding(
            tensor.key_start,
            header,
            data_field.start - data_field.key_start,
            data_field.end - data_field.start,
        )
        assert pad_len == want
        assert data_field.start % ALIGN == 0
        assert all(bytes(buf[f.start : f.end]) == bytes(f.end - f.start) for f in pads)
        assert all(f.end > f.start for f in pads), "a padding field has a payload"


# ----------------------------------------------------------------------------- NaN bits

_QUIET = {dtypes.FLOAT16.wire: 0x7E00, dtypes.BFLOAT16.wire: 0x7FC0}
_nan32 = st.integers(min_value=1, max_value=(1 << 23) - 1).flatmap(
    lambda m: st.sampled_from([0x7F800000 | m, 0xFF800000 | m])
)
_nan64 = st.integers(min_value=1, max_value=(1 << 52) - 1).flatmap(
    lambda m: st.sampled_from([0x7FF0000000000000 | m, 0xFFF0000000000000 | m])
)


def _expected_nan(word: int, width_bits: int, wire: int) -> int:
    sign = word >> (width_bits - 1)
    return sign << 15 | _QUIET[wire]


@pytest.mark.parametrize("path", ["torch", "numpy"])
@pytest.mark.parametrize("target", [dtypes.FLOAT16, dtypes.BFLOAT16], ids=lambda d: d.name)
@settings(max_examples=100, deadline=None)
@given(words32=st.lists(_nan32, min_size=1, max_size=20), words64=st.lists(_nan64, max_size=20))
def test_casts_write_the_quiet_nan_of_the_sign(
    path: str, target: dtypes.DtypeInfo, words32: list[int], words64: list[int]
) -> None:
    with pytest.MonkeyPatch.context() as m:
        if path == "numpy":
            m.setattr(floats, "_torch", lambda: None)
        x32 = np.array(words32, dtype=np.uint32).view(np.float32)
        got32 = floats.cast_bits(x32, target).tolist()
        x64 = np.array(words64, dtype=np.uint64).view(np.float64)
        got64 = floats.cast_bits(x64, target).tolist()
    assert got32 == [_expected_nan(w, 32, target.wire) for w in words32]
    assert got64 == [_expected_nan(w, 64, target.wire) for w in words64]


@pytest.mark.parametrize("method", ["float16", "bfloat16"])
@settings(max_examples=50, deadline=None)
@given(words=st.lists(st.one_of(_nan32, st.integers(0, 0x477FE000)), min_size=1, max_size=64))
def test_cast_payloads_carry_canonical_nans(method: Any, words: list[int]) -> None:
    """End to end: the payload the encoder writes, element by element."""
    x = np.array(words, dtype=np.uint32).view(np.float32)
    data = encode_tensor_map(
        {"w": x}, EncodeOptions(compression="none", lossy=LossyConfig(method, min_elements=1))
    )
    (rec,) = read_tensor_map(data).records
    payload = struct.unpack(f"<{len(words)}H", bytes(rec.data))
    wire = dtypes.FLOAT16.wire if method == "float16" else dtypes.BFLOAT16.wire
    for word, bits in zip(words, payload, strict=True):
        if math.isnan(struct.unpack("<f", struct.pack("<I", word))[0]):
            assert bits == _expected_nan(word, 32, wire)
        else:
            assert bits & 0x7FFF <= (0x7C00 if method == "float16" else 0x7F80)


# ----------------------------------------------------------------------------- top-k ties


def _spec_top_k(values: Sequence[float], k: int) -> list[int]:
    def rank(i: int) -> tuple[int, float, int]:
        x = values[i]
        return (0, 0.0, i) if math.isnan(x) else (1, -abs(x), i)

    return sorted(sorted(range(len(values)), key=rank)[:k])


_pool = st.sampled_from(
    [0x00000000, 0x80000000, 0x3F800000, 0xBF800000, 0x3F000000, 0x7FC00000, 0xFFC00001]
)


@settings(max_examples=200, deadline=None)
@given(
    words=st.lists(_pool, min_size=8, max_size=200),
    fraction=st.floats(min_value=0.0, max_value=1.0),
)
def test_top_k_breaks_ties_by_the_lower_index(words: list[int], fraction: float) -> None:
    n = len(words)
    k = max(1, int(fraction * n / 8))  # top-k keeps at most one element in 8
    raw = struct.pack(f"<{n}I", *words)
    x = np.frombuffer(raw, dtype=np.float32)
    data = encode_tensor_map(
        {"d": x},
        EncodeOptions(compression="none", lossy=LossyConfig("topk", topk_k=k, min_elements=1)),
    )
    (rec,) = read_tensor_map(data).records
    assert rec.lossy is not None and rec.lossy.k == k
    kept = _spec_top_k(struct.unpack(f"<{n}f", raw), k)
    expected = b"".join(raw[4 * i : 4 * i + 4] for i in kept) + struct.pack(f"<{k}I", *kept)
    assert bytes(rec.data) == expected
