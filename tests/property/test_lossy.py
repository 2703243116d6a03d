"""Lossy encodings (docs/wire-format.md section 9.1): decode(encode(x)) is within
the documented error bound, special values are handled as specified, and the
payload layout on the wire is the documented one.

The bounds are checked against the payload read from the wire (scales, indices)
and against independent references (numpy / ml_dtypes casts), not against the
codec's own helpers.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
import torch
from helpers import tensor_bytes
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import torch_tensors

from flwire.exceptions import SerializationException
from flwire.tensors import LossyConfig, decode_tensor_map, encode_tensor_map, read_tensor_map
from flwire.v1 import tensor_pb2 as pb

FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
NP = {
    torch.float32: np.dtype("<f4"),
    torch.float64: np.dtype("<f8"),
    torch.float16: np.dtype("<f2"),
    torch.bfloat16: np.dtype(ml_dtypes.bfloat16),
}
# Relative rounding unit of a dtype, and the absolute error bound below its normal range.
UNIT = {torch.float32: 0.0, torch.float64: 0.0, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
ABS = {
    torch.float32: 2.0**-142,
    torch.float64: 2.0**-142,
    torch.float16: 2.0**-24,
    torch.bfloat16: 2.0**-133,
}


def _specials(dtype: torch.dtype, finite: bool) -> list[float]:
    info = torch.finfo(dtype)
    out = [0.0, -0.0, info.tiny, -info.tiny, info.max, -info.max, info.eps, 1.0, -1.0]
    out += [info.tiny * info.eps, -info.tiny * info.eps]  # smallest subnormals
    out += [float(np.finfo(np.float32).max), 2.0**-149, 65504.0, 65519.0, 6e-8, 1e-30]
    if not finite:
        out += [math.inf, -math.inf, math.nan]
    return out


@st.composite
def float_tensors(draw, dtypes=tuple(FLOATS), finite=True, max_numel=400):
    """A float tensor whose values mix ordinary numbers of widely different
    magnitudes with zeros, signed zeros, subnormals, extremes (and NaN/inf)."""
    dtype = draw(st.sampled_from(dtypes))
    n = draw(st.integers(1, max_numel))
    exponent = draw(st.integers(-140, 120))
    base = torch.randn(
        n,
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1))),
    )
    values = base * 2.0**exponent
    picks = draw(
        st.lists(st.tuples(st.integers(0, n - 1), st.sampled_from(_specials(dtype, finite))))
    )
    for i, v in picks:
        values[i] = v
    values = values.to(dtype)  # may overflow to inf / underflow to 0 for narrow dtypes
    if finite:
        values = torch.where(torch.isfinite(values), values, torch.zeros_like(values))
    shape = draw(st.sampled_from([(n,), (1, n), (n, 1)]))
    return values.reshape(shape)


def _roundtrip(t: torch.Tensor, config: LossyConfig, **kw):
    data = encode_tensor_map({"x": t}, lossy=config, **kw)
    out = decode_tensor_map(data)["x"]
    assert out.dtype == t.dtype and out.shape == t.shape
    (rec,) = read_tensor_map(data).records
    return data, rec, out


def _payload(data: bytes) -> bytes:
    (t,) = pb.TensorMap.FromString(data).tensors
    assert t.codec == pb.CODEC_UNSPECIFIED
    return t.data


def _f64(t: torch.Tensor) -> np.ndarray:
    return t.to(torch.float64).numpy().reshape(-1)


# ----------------------------------------------------------------------------- casts


@pytest.mark.parametrize("method", ["float16", "bfloat16"])
@given(t=float_tensors(dtypes=(torch.float32, torch.float64), finite=False))
def test_cast_is_round_to_nearest_even_within_the_bound(method, t):
    target = np.dtype(np.float16) if method == "float16" else np.dtype(ml_dtypes.bfloat16)
    x = _f64(t)
    limit = 65520.0 if method == "float16" else float(ml_dtypes.finfo(ml_dtypes.bfloat16).max)
    overflows = np.isfinite(x) & (np.abs(x) >= limit)
    if method == "bfloat16":  # bfloat16 overflows only at the very top of float32's range
        with np.errstate(over="ignore"):
            overflows = np.isfinite(x) & np.isinf(x.astype(target).astype(np.float64))
    if overflows.any():
        with pytest.raises(SerializationException, match="overflows"):
            encode_tensor_map({"x": t}, lossy=LossyConfig(method, min_elements=0))
        return
    data, rec, out = _roundtrip(t, LossyConfig(method, min_elements=0), compression="none")
    assert rec.lossy is not None and rec.lossy.name == method
    assert rec.raw_size == 2 * t.numel() and len(_payload(data)) == 2 * t.numel()
    got = _f64(out)
    # NaN stays NaN, infinities stay, everything else is finite.
    assert np.array_equal(np.isnan(got), np.isnan(x))
    inf = np.isinf(x)
    assert np.array_equal(got[inf], x[inf]) and not np.isinf(got[~inf]).any()
    fin = np.isfinite(x)
    # Correctly rounded (nearest even), from float32 and from float64 alike.
    reference = x.astype(target).astype(np.float64)
    if t.dtype == torch.float32 or method == "float16":
        assert np.array_equal(got[fin], reference[fin])
    # The documented bound.
    unit, tiny = (2.0**-11, 2.0**-25) if method == "float16" else (2.0**-8, 2.0**-134)
    err = np.abs(x[fin] - got[fin])
    assert (err <= np.maximum(unit * np.abs(x[fin]), tiny)).all()
    # The payload on the wire is the cast values.
    payload = np.frombuffer(_payload(data), dtype=target).astype(np.float64)
    assert np.array_equal(payload[fin], got[fin])


def test_float64_to_bfloat16_has_no_double_rounding():
    # 1 + 2^-8 + 2^-40 is just above the midpoint of two bfloat16 values; via a
    # float32 rounded to nearest it would become the midpoint and round to even (1.0).
    x = torch.full((4,), 1 + 2.0**-8 + 2.0**-40, dtype=torch.float64)
    _, _, out = _roundtrip(x, LossyConfig("bfloat16", min_elements=0))
    assert out[0].item() == 1 + 2.0**-7
    x = torch.full((4,), 1 + 2.0**-11 + 2.0**-40, dtype=torch.float64)
    _, _, out = _roundtrip(x, LossyConfig("float16", min_elements=0))
    assert out[0].item() == 1 + 2.0**-10


def test_float16_overflow_is_refused_with_a_hint():
    t = torch.tensor([1.0, 70000.0, 2.0, 3.0])
    with pytest.raises(SerializationException, match=r"'w'.*overflows float16.*bfloat16"):
        encode_tensor_map({"w": t}, lossy=LossyConfig("float16", min_elements=0))


@pytest.mark.parametrize("method", ["float16", "bfloat16"])
@given(shuffle=st.booleans())
def test_cast_payload_is_shuffled_with_2_byte_elements(method, shuffle):
    t = torch.linspace(-1, 1, 4096)
    data = encode_tensor_map({"x": t}, lossy=LossyConfig(method), shuffle=shuffle, min_saving=0.0)
    (rec,) = read_tensor_map(data).records
    assert rec.filter == (pb.FILTER_BYTE_SHUFFLE if shuffle else pb.FILTER_UNSPECIFIED)
    assert rec.codec == pb.CODEC_ZSTD
    expected = t.to(torch.float16 if method == "float16" else torch.bfloat16).to(torch.float32)
    assert torch.equal(decode_tensor_map(data)["x"], expected)


# ----------------------------------------------------------------------------- int8


@given(
    t=float_tensors(),
    block=st.sampled_from([8, 9, 13, 64, 100, 1000]),
    compression=st.sampled_from(["none", "zstd"]),
)
def test_int8_is_within_half_a_scale(t, block, compression):
    config = LossyConfig("int8", block_size=block, min_elements=0)
    n = t.numel()
    blocks = -(-n // block)
    with np.errstate(over="ignore"):
        beyond_float32 = np.isinf(_f64(t).astype(np.float32)).any()
    if beyond_float32 and 4 * blocks + n < n * t.element_size():
        with pytest.raises(SerializationException, match="float32's range"):
            encode_tensor_map({"x": t}, lossy=config)
        return
    if 4 * blocks + n >= n * t.element_size():
        # Not smaller than the raw bytes: sent exactly.
        data, rec, out = _roundtrip(t, config)
        assert rec.lossy is None and torch.equal(out.view(torch.uint8), t.view(torch.uint8))
        return
    data, rec, out = _roundtrip(t, config, compression="none")
    assert rec.lossy is not None and rec.lossy.block_size == block and rec.filter == 0
    payload = _payload(data)
    assert len(payload) == 4 * blocks + n
    scales = np.frombuffer(payload, "<f4", count=blocks).astype(np.float64)
    q = np.frombuffer(payload, np.int8, offset=4 * blocks).astype(np.float64)
    x, got = _f64(t), _f64(out)
    # max |x| over each block, of the values converted to float32.
    amax = np.maximum.reduceat(np.abs(x.astype(np.float32)), np.arange(0, n, block))
    # scale = max|x| / 127 in float32 (the smallest float32 where that underflows).
    with np.errstate(over="ignore"):
        expected32 = amax.astype(np.float32) / np.float32(127)
        # ... one step toward zero where 127 * scale would overflow float32.
        top = np.isinf(expected32 * np.float32(127))
    expected32 = np.where(top, np.nextafter(expected32, np.float32(0)), expected32)
    expected = expected32.astype(np.float64)
    expected = np.where((expected == 0) & (amax > 0), 2.0**-149, expected)
    assert np.array_equal(scales.view(np.uint64), expected.view(np.uint64))
    assert (np.abs(q) <= 127).all()
    s = np.repeat(scales, block)[:n]
    # x^ = q * scale in float32, then cast to the tensor's dtype.
    wide = (q.astype(np.float32) * s.astype(np.float32)).astype(np.float64)
    assert np.array_equal(got, wide.astype(NP[t.dtype]).astype(np.float64))
    bound = s * (0.5 + 2.0**-15) + UNIT[t.dtype] * np.abs(got) + ABS[t.dtype]
    assert (np.abs(x - got) <= bound).all()
    assert (got[x == 0] == 0).all()
    # The same with zstd on top: identical values.
    assert torch.equal(_roundtrip(t, config)[2], out)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e39])
def test_int8_refuses_non_finite_values(bad):
    t = torch.zeros(2048, dtype=torch.float64)
    t[5] = bad
    with pytest.raises(SerializationException, match=r"'layer\.w'.*(NaN|infinity)"):
        encode_tensor_map({"layer.w": t}, lossy=LossyConfig("int8"))


# ----------------------------------------------------------------------------- top-k


@given(
    t=float_tensors(finite=False),
    k=st.one_of(st.none(), st.integers(1, 500)),
    fraction=st.floats(0.001, 1.0),
)
def test_top_k_keeps_exactly_the_k_largest_magnitudes(t, k, fraction):
    n = t.numel()
    config = LossyConfig("topk", topk_k=k, topk_fraction=fraction, min_elements=0)
    kept = max(1, min(n, k if k is not None else math.ceil(fraction * n)))
    index_width = 4
    if kept * 8 > n:  # denser than one in 8: sent exactly (spec section 9.1)
        data, rec, out = _roundtrip(t, config)
        assert rec.lossy is None and torch.equal(out.view(torch.uint8), t.view(torch.uint8))
        return
    data, rec, out = _roundtrip(t, config, compression="none")
    assert rec.lossy is not None and rec.lossy.k == kept and rec.filter == 0
    payload = _payload(data)
    width = t.element_size()
    assert len(payload) == kept * (width + index_width)
    index = np.frombuffer(payload, "<u4", offset=kept * width).astype(np.int64)
    assert len(index) == kept and (np.diff(index) > 0).all() and index[-1] < n
    xb = t.reshape(-1).view(
        torch.uint8 if width == 1 else {2: torch.int16, 4: torch.int32, 8: torch.int64}[width]
    )
    ob = out.reshape(-1).view(xb.dtype)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.from_numpy(index)] = True
    assert torch.equal(ob[mask], xb[mask]), "kept elements are bit-exact"
    assert (ob[~mask] == 0).all(), "dropped elements decode to +0.0"
    values = np.frombuffer(payload, NP[t.dtype], count=kept).astype(np.float64)
    assert np.array_equal(values.view(np.uint64), _f64(t)[index].view(np.uint64)) or np.array_equal(
        values, _f64(t)[index], equal_nan=True
    )
    mag = np.abs(_f64(t))
    kept_mag, dropped_mag = mag[index], np.delete(mag, index)
    if np.isnan(dropped_mag).any():  # more NaNs than k: every kept one is a NaN
        assert np.isnan(kept_mag).all()
    else:
        finite_kept = kept_mag[~np.isnan(kept_mag)]
        if len(finite_kept) and len(dropped_mag):
            assert dropped_mag.max() <= finite_kept.min()


def test_top_k_of_a_delta():
    delta = torch.zeros(10_000)
    delta[[3, 77, 4000, 9999]] = torch.tensor([0.5, -2.0, 1.0, -0.25])
    delta[5000] = 1e-6
    out = decode_tensor_map(encode_tensor_map({"d": delta}, lossy=LossyConfig("topk", topk_k=4)))[
        "d"
    ]
    expected = delta.clone()
    expected[5000] = 0
    assert torch.equal(out, expected)


# ----------------------------------------------------------------------------- selection


@given(t=torch_tensors(), method=st.sampled_from(["float16", "bfloat16", "int8", "topk"]))
def test_non_float_tensors_pass_bit_exact(t, method):
    assume(t.dtype not in FLOATS)
    data = encode_tensor_map({"t": t}, lossy=LossyConfig(method, min_elements=0))
    (rec,) = read_tensor_map(data).records
    assert rec.lossy is None
    assert tensor_bytes(decode_tensor_map(data)["t"]) == tensor_bytes(t)


@given(
    t=float_tensors(max_numel=60),
    method=st.sampled_from(["float16", "bfloat16", "int8", "topk"]),
)
def test_tensors_below_min_elements_pass_bit_exact(t, method):
    data = encode_tensor_map({"t": t}, lossy=LossyConfig(method, min_elements=t.numel() + 1))
    (rec,) = read_tensor_map(data).records
    assert rec.lossy is None
    assert tensor_bytes(decode_tensor_map(data)["t"]) == tensor_bytes(t)


@pytest.mark.parametrize("method", ["float16", "bfloat16"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_casts_skip_2_byte_tensors(method, dtype):
    t = torch.randn(4096).to(dtype)
    data = encode_tensor_map({"t": t}, lossy=LossyConfig(method))
    assert read_tensor_map(data).records[0].lossy is None
    assert torch.equal(decode_tensor_map(data)["t"], t)


def test_include_and_exclude_select_tensors_by_name():
    sd = {n: torch.randn(2048) for n in ("enc.weight", "enc.bias", "dec.weight")}
    config = LossyConfig("int8", include="*.weight", exclude=lambda name: name.startswith("dec"))
    data = encode_tensor_map(sd, lossy=config)
    lossy = {r.name: r.lossy_name for r in read_tensor_map(data).records}
    assert lossy == {"enc.weight": "int8", "enc.bias": "", "dec.weight": ""}
    out = decode_tensor_map(data)
    assert torch.equal(out["enc.bias"], sd["enc.bias"])
    assert not torch.equal(out["enc.weight"], sd["enc.weight"])


@given(method=st.sampled_from(["float16", "bfloat16", "int8", "topk"]))
def test_numpy_decoding_gives_the_same_values(method):
    t = torch.randn(64, 33, dtype=torch.float64)
    data = encode_tensor_map({"t": t}, lossy=LossyConfig(method, min_elements=0))
    as_torch = decode_tensor_map(data)["t"]
    as_numpy = decode_tensor_map(data, as_numpy=True)["t"]
    assert as_numpy.dtype == np.float64 and as_numpy.shape == (64, 33)
    assert np.array_equal(as_numpy, as_torch.numpy())
