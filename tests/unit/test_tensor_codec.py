"""Targeted behaviour of the tensor codec: zero-copy, codec choices, metadata,
devices, unsupported tensors, numpy output and a real model."""

from __future__ import annotations

import array
import subprocess
import sys
import textwrap
import warnings
from typing import Any

import crc32c
import numpy as np
import pytest
import torch
import zstandard
from torch import nn

from flwire.exceptions import SerializationException
from flwire.tensors import (
    EncodeOptions,
    decode_tensor_map,
    dtypes,
    encode_tensor_map,
    read_tensor_map,
    torch_support,
)
from flwire.v1 import tensor_pb2 as pb


def raw_of(t: torch.Tensor) -> bytes:
    """Element bytes in C order, from a fresh dense copy (odd strides are fine)."""
    if t.numel() == 0:
        return b""
    flat = t.detach().reshape(-1).clone(memory_format=torch.contiguous_format)
    return flat.view(torch.uint8).numpy().tobytes()


def buffer_range(buf) -> tuple[int, int]:
    start = np.frombuffer(buf, np.uint8).ctypes.data
    return start, start + len(buf)


def inside(t: torch.Tensor, buf) -> bool:
    lo, hi = buffer_range(buf)
    return lo <= t.data_ptr() and t.data_ptr() + t.numel() * t.element_size() <= hi


def state():
    g = torch.Generator().manual_seed(3)
    return {
        "w": torch.randn(16, 8, generator=g),
        "i": torch.arange(10, dtype=torch.int64),
        "b": torch.tensor([True, False, True]),
        "h": torch.randn(5, generator=g).to(torch.bfloat16),
    }


# --------------------------------------------------------------------------- zero copy


def test_uncompressed_tensors_are_views_on_a_bytearray():
    src = state()
    buf = bytearray(encode_tensor_map(src, compression="none"))
    out = decode_tensor_map(buf)
    for name, t in out.items():
        assert inside(t, buf), name
        assert raw_of(t) == raw_of(src[name])
    # Writing into the buffer shows through the tensor: it is the same memory.
    w = out["w"]
    offset = w.data_ptr() - buffer_range(buf)[0]
    buf[offset : offset + 4] = np.float32(42.5).tobytes()
    assert w[0, 0].item() == 42.5
    # ... and the other way round: the tensor is writable and writes into buf.
    out["i"][3] = -7
    i_off = out["i"].data_ptr() - buffer_range(buf)[0]
    assert int.from_bytes(buf[i_off + 24 : i_off + 32], "little", signed=True) == -7


def test_uncompressed_torch_tensors_from_bytes_are_copies_numpy_arrays_read_only_views():
    src = state()
    data = encode_tensor_map(src, compression="none")
    out = decode_tensor_map(data)
    # torch tensors are writable: from immutable bytes they must not be views.
    assert not any(inside(t, data) for t in out.values() if t.numel())
    del src["h"]  # bfloat16 has no numpy dtype without ml_dtypes
    data = encode_tensor_map(src, compression="none")
    arrays = decode_tensor_map(data, as_numpy=True)
    assert list(arrays) == list(src)
    lo, hi = buffer_range(data)
    for a in arrays.values():
        assert lo <= a.ctypes.data < hi
        assert not a.flags.writeable  # views on immutable bytes are read-only


def test_compressed_tensors_are_fresh_allocations():
    src = {"zeros": torch.zeros(1000), "ints": torch.arange(500, dtype=torch.int32)}
    for shuffle in (False, True):
        buf = bytearray(encode_tensor_map(src, compression="zstd", shuffle=shuffle))
        assert all(r.codec == pb.CODEC_ZSTD for r in read_tensor_map(buf).records)
        out = decode_tensor_map(buf)
        lo, hi = buffer_range(buf)
        for name, t in out.items():
            assert not lo <= t.data_ptr() < hi, name
            assert raw_of(t) == raw_of(src[name])
        before = raw_of(out["ints"])
        buf[:] = bytes(len(buf))
        assert raw_of(out["ints"]) == before
        out["zeros"][0] = 1.0  # writable, owned memory


def test_shuffled_but_uncompressed_tensor_is_a_fresh_allocation():
    raw = np.arange(6, dtype="<i4").tobytes()
    shuffled = np.frombuffer(raw, np.uint8).reshape(-1, 4).T.tobytes()
    t = pb.Tensor(name="x", dtype=pb.DTYPE_INT32, shape=[6], raw_size=24)
    t.filter, t.crc32c, t.data = pb.FILTER_BYTE_SHUFFLE, crc32c.crc32c(raw), shuffled
    buf = bytearray(pb.TensorMap(tensors=[t]).SerializeToString())
    out = decode_tensor_map(buf)
    assert out["x"].tolist() == list(range(6))
    assert not inside(out["x"], buf)


ALL_DTYPES = [torch_support.torch_dtype(i) for i in dtypes.BY_WIRE.values()]


def _one_of_each_dtype() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(9)
    out = {}
    for dt in ALL_DTYPES:
        size = torch.empty(0, dtype=dt).element_size()
        raw = torch.randint(0, 2 if dt == torch.bool else 256, (5 * size,), generator=g)
        out[str(dt)] = raw.to(torch.uint8).view(dt)
    return out


@pytest.mark.parametrize("shift", range(16))
def test_decoded_views_are_aligned_even_in_a_misaligned_buffer(shift):
    """docs/wire-format.md section 13: a typed view must start at a multiple of
    the element width; a misaligned one is copied instead."""
    src = _one_of_each_dtype()
    data = encode_tensor_map(src, compression="none")
    holder = bytearray(shift) + bytearray(data)
    view = memoryview(holder)[shift:]
    out = decode_tensor_map(view)
    for name, t in out.items():
        assert t.data_ptr() % t.element_size() == 0, (name, shift)
        assert raw_of(t) == raw_of(src[name])
    numpy_ok = {i.name for i in dtypes.BY_WIRE.values() if i.numpy_dtype is not None}
    np_src = {k: v for k, v in src.items() if k.removeprefix("torch.") in numpy_ok}
    assert len(np_src) >= 12
    np_data = bytearray(shift) + bytearray(encode_tensor_map(np_src, compression="none"))
    for name, a in decode_tensor_map(memoryview(np_data)[shift:], as_numpy=True).items():
        assert a.ctypes.data % a.dtype.itemsize == 0, (name, shift)
        assert a.tobytes() == raw_of(np_src[name])


def test_writer_aligns_uncompressed_data_to_64_bytes():
    src = _one_of_each_dtype()
    data = encode_tensor_map(src, compression="none", metadata={"k": "v"})
    base = buffer_range(data)[0]
    for rec in read_tensor_map(data).records:
        assert (np.frombuffer(rec.data, np.uint8).ctypes.data - base) % 64 == 0, rec.name


def test_operations_on_decoded_tensors_from_misaligned_buffers_do_not_crash():
    """Cloning an unaligned complex128 view crashed torch with SIGSEGV: run
    the kernels in a child process so a regression fails this test instead
    of killing the test run."""
    script = textwrap.dedent(
        """
        import torch
        from flwire.tensors import decode_tensor_map, encode_tensor_map
        src = {
            "c128": torch.arange(40, dtype=torch.float64).view(torch.complex128),
            "c64": torch.arange(40, dtype=torch.float32).view(torch.complex64),
            "f64": torch.arange(33, dtype=torch.float64),
            "i64": torch.arange(17, dtype=torch.int64),
        }
        data = encode_tensor_map(src, compression="none")
        for shift in range(16):
            buf = memoryview(bytearray(shift) + bytearray(data))[shift:]
            out = decode_tensor_map(buf)
            for k, v in out.items():
                assert torch.equal(v.clone(), src[k]), k
                assert torch.equal(v * 2, src[k] * 2), k
                assert torch.equal(v.sum(), src[k].sum()), k
        print("ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.strip() == "ok"


# ----------------------------------------------------------------------- codec choices


def test_incompressible_data_is_stored_raw_even_when_zstd_was_requested():
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (4096,), dtype=torch.uint8, generator=g)
    zeros = torch.zeros(4096, dtype=torch.uint8)
    data = encode_tensor_map({"noise": noise, "zeros": zeros}, compression="zstd", level=19)
    rec = {r.name: r for r in read_tensor_map(data).records}
    assert rec["noise"].codec == pb.CODEC_UNSPECIFIED
    assert rec["noise"].codec_name == "CODEC_UNSPECIFIED"
    assert bytes(rec["noise"].data) == raw_of(noise)
    assert rec["zeros"].codec == pb.CODEC_ZSTD
    assert len(rec["zeros"].data) < 100
    assert raw_of(decode_tensor_map(data)["noise"]) == raw_of(noise)


@pytest.mark.parametrize(
    "dtype",
    [
        torch.uint8,
        torch.int8,
        torch.bool,
        torch.float8_e4m3fn,
        torch.float8_e5m2,
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.int64,
        torch.complex64,
    ],
    ids=str,
)
def test_shuffle_is_recorded_only_for_multi_byte_dtypes(dtype):
    t = torch.zeros(2048, dtype=dtype)
    data = encode_tensor_map({"t": t}, compression="zstd", shuffle=True)
    rec = read_tensor_map(data).records[0]
    assert rec.codec == pb.CODEC_ZSTD
    expected = pb.FILTER_BYTE_SHUFFLE if t.element_size() > 1 else pb.FILTER_UNSPECIFIED
    assert rec.filter == expected
    # Without compression no filter is applied at all.
    plain = read_tensor_map(encode_tensor_map({"t": t}, compression="none", shuffle=True))
    assert plain.records[0].filter == pb.FILTER_UNSPECIFIED
    assert plain.records[0].codec == pb.CODEC_UNSPECIFIED
    # Without shuffle=True, no filter either.
    noshuf = read_tensor_map(encode_tensor_map({"t": t}, compression="zstd"))
    assert noshuf.records[0].filter == pb.FILTER_UNSPECIFIED


def test_shuffle_helps_float_compression():
    x = torch.linspace(0, 1, 20000, dtype=torch.float32)
    plain = encode_tensor_map({"x": x}, shuffle=False)
    shuffled = encode_tensor_map({"x": x}, shuffle=True)
    assert len(shuffled) < len(plain)
    assert raw_of(decode_tensor_map(shuffled)["x"]) == raw_of(x)


def test_read_tensor_map_exposes_records_without_decoding():
    src = {"zeros": torch.zeros(3, 300), "ramp": torch.arange(50, dtype=torch.int16)}
    data = encode_tensor_map(src, compression="zstd", shuffle=True, metadata={"a": "b"})
    view = read_tensor_map(data)
    assert [r.name for r in view.records] == ["zeros", "ramp"]
    zeros, ramp = view.records
    assert zeros.dtype.name == "float32" and torch_support.torch_dtype(zeros.dtype) == torch.float32
    assert zeros.shape == (3, 300)
    assert zeros.raw_size == 3600
    assert zeros.crc32c == crc32c.crc32c(raw_of(src["zeros"]))
    assert zeros.codec == pb.CODEC_ZSTD and zeros.codec_name == "CODEC_ZSTD"
    assert zeros.filter == pb.FILTER_BYTE_SHUFFLE and zeros.filter_name == "FILTER_BYTE_SHUFFLE"
    assert isinstance(zeros.data, memoryview) and len(zeros.data) < zeros.raw_size
    assert ramp.raw_size == 100 and ramp.crc32c == crc32c.crc32c(raw_of(src["ramp"]))
    assert view.raw_bytes == 3700
    assert view.metadata == {"a": "b"}
    assert raw_of(view.to_torch()["ramp"]) == raw_of(src["ramp"])
    assert view.to_numpy()["zeros"].shape == (3, 300)


def test_read_tensor_map_does_not_touch_tensor_data():
    """A corrupt payload is found only when the tensor is decoded."""
    raw = bytes(2000)
    t = pb.Tensor(name="z", dtype=pb.DTYPE_UINT8, shape=[2000], raw_size=2000)
    t.codec, t.crc32c = pb.CODEC_ZSTD, crc32c.crc32c(raw)
    frame = bytearray(zstandard.ZstdCompressor().compress(raw))
    frame[-2:] = b"\xff\xff"
    t.data = bytes(frame)
    data = pb.TensorMap(tensors=[t]).SerializeToString()
    view = read_tensor_map(data)
    assert view.records[0].raw_size == 2000
    with pytest.raises(SerializationException):
        view.to_torch()


@pytest.mark.parametrize(
    "metadata",
    [
        {"framework": "torch", "round": "12"},
        {"": "", "k": ""},
        {"ключ": "значение", "emoji 🙂": "✓", "a\x00b": "nul\x00inside"},
        {f"k{i}": "v" * i for i in range(50)},
    ],
    ids=["plain", "empty", "unicode", "many"],
)
def test_metadata_round_trips(metadata):
    data = encode_tensor_map({"x": torch.ones(2)}, metadata=metadata)
    view = read_tensor_map(data)
    assert view.metadata == metadata
    assert dict(pb.TensorMap.FromString(data).metadata) == metadata
    assert list(decode_tensor_map(data)) == ["x"]


def test_no_metadata_writes_no_metadata_field():
    t = {"x": torch.ones(2)}
    assert encode_tensor_map(t, metadata=None) == encode_tensor_map(t, metadata={})
    assert encode_tensor_map(t) == encode_tensor_map(t, metadata={})
    assert read_tensor_map(encode_tensor_map(t)).metadata == {}


def test_metadata_alone_is_a_valid_map():
    data = encode_tensor_map({}, metadata={"only": "meta"})
    assert decode_tensor_map(data) == {}
    assert read_tensor_map(data).metadata == {"only": "meta"}


@pytest.mark.parametrize("metadata", [{"k": 1}, {1: "v"}, {"k": None}, {"k": b"v"}])
def test_metadata_must_be_str(metadata):
    with pytest.raises(SerializationException, match="str"):
        encode_tensor_map({}, metadata=metadata)


def test_empty_map_and_empty_names():
    assert encode_tensor_map({}) == b""
    assert decode_tensor_map(b"") == {}
    out = decode_tensor_map(encode_tensor_map({"": torch.tensor([1, 2])}))
    assert list(out) == [""] and out[""].tolist() == [1, 2]


def test_order_of_the_state_dict_is_kept():
    names = ["z", "a", "m", "b.weight", "a.bias"]
    src = {n: torch.full((2,), float(i)) for i, n in enumerate(names)}
    assert list(decode_tensor_map(encode_tensor_map(src))) == names
    assert [r.name for r in read_tensor_map(encode_tensor_map(src)).records] == names


def test_unknown_compression_is_refused():
    for bad in ("gzip", "ZSTD", ""):
        with pytest.raises(SerializationException, match="compression"):
            encode_tensor_map({"x": torch.ones(1)}, compression=bad)
    for bad_option in ("gzip", "ZSTD", "", None):
        with pytest.raises(SerializationException, match="compression"):
            EncodeOptions(compression=bad_option)  # type: ignore[arg-type]


def test_keyword_left_at_none_keeps_the_options_value():
    x = {"x": torch.zeros(1000)}
    assert encode_tensor_map(x, compression=None) == encode_tensor_map(x)
    raw = EncodeOptions(compression="none")
    assert encode_tensor_map(x, raw, compression=None) == encode_tensor_map(x, raw)
    assert read_tensor_map(encode_tensor_map(x, raw)).records[0].codec == pb.CODEC_UNSPECIFIED
    # A keyword given overrides the options.
    rec = read_tensor_map(encode_tensor_map(x, raw, compression="lz4")).records[0]
    assert rec.codec == pb.CODEC_LZ4


def test_duplicate_names_from_an_iterable_are_refused():
    with pytest.raises(SerializationException, match="duplicate"):
        encode_tensor_map([("a", torch.ones(1)), ("a", torch.zeros(1))])


@pytest.mark.parametrize("compression", ["zstd", "lz4", "none"])
@pytest.mark.parametrize("framework", ["torch", "numpy"])
def test_a_bool_tensor_viewed_from_other_bytes_is_sent_as_what_it_means(compression, framework):
    """A bool tensor made by viewing other bytes holds values other than 0/1; torch and
    numpy read any nonzero byte as True, so the encoder sends 0/1 (the decoder still
    refuses anything else on the wire) and leaves the caller's tensor alone."""
    source = [2, 1, 0, 255] * 100
    if framework == "torch":
        odd: Any = torch.tensor(source, dtype=torch.uint8).view(torch.bool)
        before = odd.view(torch.uint8).tolist()
    else:
        odd = np.array(source, dtype=np.uint8).view(np.bool_)
        before = odd.view(np.uint8).tolist()
    data = encode_tensor_map({"b": odd}, compression=compression)
    assert decode_tensor_map(data)["b"].tolist() == [True, True, False, True] * 100
    after = odd.view(torch.uint8) if framework == "torch" else odd.view(np.uint8)
    assert after.tolist() == before


# ------------------------------------------------------------------ bugs found by these tests


def test_numpy_zero_d_array_keeps_its_shape():
    """numpy 0-d arrays must come back 0-d (np.ascontiguousarray makes them 1-d)."""
    for arr in (np.array(1.5, np.float32), np.array(7, ">i8"), np.float64(2.0).reshape(())):
        out = decode_tensor_map(encode_tensor_map({"s": arr}), as_numpy=True)
        assert out["s"].shape == ()
        assert out["s"] == arr
        assert decode_tensor_map(encode_tensor_map({"s": arr}))["s"].shape == ()


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.arange(4.0)[::2][:1],
        lambda: torch.randn(1, 10)[:, 3],
        lambda: torch.arange(12, dtype=torch.int32).reshape(3, 4)[1:2, 2:3][:, :, None][..., 0],
        lambda: torch.arange(6, dtype=torch.int64).reshape(2, 3).t()[:1, :1].reshape(1)[:1],
    ],
    ids=["step_slice", "row_of_one_row_matrix", "control_last_stride_1", "reshape"],
)
def test_single_element_views_with_odd_strides_encode(make):
    """A 1-element tensor with a non-unit stride is "contiguous" to torch, but
    reshape(-1) keeps the stride and .view(torch.uint8) then refuses it."""
    t = make()
    assert t.numel() == 1
    out = decode_tensor_map(encode_tensor_map({"t": t}))
    assert out["t"].shape == t.shape
    assert out["t"].item() == t.item()


@pytest.mark.parametrize(
    "wrap",
    [
        bytes,
        bytearray,
        memoryview,
        lambda b: memoryview(b"xx" + b)[2:],
        lambda b: np.frombuffer(b, np.uint8),
        lambda b: np.frombuffer(b, np.uint8).reshape(1, -1),
        lambda b: np.repeat(np.frombuffer(b, np.uint8), 2)[::2],
        lambda b: array.array("B", b),
        lambda b: array.array("b", b),
        lambda b: memoryview(b).cast("c"),
        lambda b: memoryview(b).cast("b"),
    ],
    ids=[
        "bytes",
        "bytearray",
        "memoryview",
        "offset_view",
        "ndarray",
        "2d_ndarray",
        "strided_ndarray",
        "array_B",
        "array_b",
        "memoryview_c",
        "memoryview_b",
    ],
)
def test_any_bytes_like_input_decodes(wrap):
    src = {"w": torch.linspace(-3, 3, 200), "n": torch.arange(300, dtype=torch.int16)}
    data = encode_tensor_map(src, compression="none")
    out = decode_tensor_map(wrap(data))
    assert list(out) == ["w", "n"]
    for k, v in src.items():
        assert raw_of(out[k]) == raw_of(v)


def test_empty_multidimensional_buffer_is_an_empty_map():
    assert decode_tensor_map(np.zeros((2, 0), np.uint8)) == {}


@pytest.mark.parametrize(
    ("name", "metadata"),
    [("\ud800", None), ("ok", {"\udc00": "v"}), ("ok", {"k": "\ud83d"})],
    ids=["name", "meta_key", "meta_value"],
)
def test_unencodable_strings_raise_serialization_exception(name, metadata):
    with pytest.raises(SerializationException):
        encode_tensor_map({name: torch.ones(1)}, metadata=metadata)


# ------------------------------------------------------------------------------ devices


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_are_copied_to_the_cpu():
    src = {"g": torch.arange(10.0, device="cuda"), "c": torch.randn(4, 4).cuda().t()}
    out = decode_tensor_map(encode_tensor_map(src))
    for k, v in src.items():
        assert out[k].device.type == "cpu"
        assert torch.equal(out[k], v.cpu())


def test_meta_tensors_are_refused_clearly():
    with pytest.raises(SerializationException, match="meta"):
        encode_tensor_map({"m": torch.empty(3, 4, device="meta")})


def test_decoded_tensors_are_always_on_the_cpu():
    for compression in ("zstd", "none"):
        out = decode_tensor_map(
            encode_tensor_map({"x": torch.randn(3, 3)}, compression=compression)
        )
        assert out["x"].device.type == "cpu"


# -------------------------------------------------------------------- unsupported inputs


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.eye(3).to_sparse(),
        lambda: torch.eye(3).to_sparse_csr(),
        lambda: torch.eye(3).to_sparse_csc(),
    ],
    ids=["coo", "csr", "csc"],
)
def test_sparse_tensors_are_refused(make):
    with pytest.raises(SerializationException, match="dense"):
        encode_tensor_map({"s": make()})


@pytest.mark.parametrize("qdtype", [torch.quint8, torch.qint8, torch.qint32])
def test_quantized_tensors_are_refused(qdtype):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.quantize_per_tensor(torch.randn(4), 0.1, 0, qdtype)
    with pytest.raises(SerializationException, match=r"quantized|dequantize"):
        encode_tensor_map({"q": q})


@pytest.mark.parametrize("key", [1, 2.5, None, b"w", ("a", "b")])
def test_non_str_keys_are_refused(key):
    with pytest.raises(SerializationException, match="str"):
        encode_tensor_map({key: torch.ones(1)})


@pytest.mark.parametrize(
    "value",
    [[1.0, 2.0], 3.0, 7, None, "tensor", {"nested": torch.ones(1)}],
    ids=["list", "float", "int", "None", "str", "dict"],
)
def test_non_tensor_values_are_refused(value):
    with pytest.raises(SerializationException, match="tensor"):
        encode_tensor_map({"v": value})


@pytest.mark.parametrize(
    "arr",
    [
        np.array(["a", "b"]),
        np.array([object()]),
        np.array([1], dtype="datetime64[s]"),
        np.zeros(2, dtype=[("a", "<f4")]),
        np.zeros(2, dtype=np.longdouble),
    ],
    ids=["str", "object", "datetime", "structured", "longdouble"],
)
def test_numpy_dtypes_outside_the_wire_table_are_refused(arr):
    with pytest.raises(SerializationException, match="cannot carry"):
        encode_tensor_map({"a": arr})


def test_torch_dtypes_outside_the_wire_table_are_refused():
    t = torch.zeros(4, dtype=torch.uint8).view(torch.bits8)
    with pytest.raises(SerializationException, match="cannot carry"):
        encode_tensor_map({"b": t})


# --------------------------------------------------------------------------- numpy output


def test_numpy_output_for_bfloat16_and_float8():
    src = {
        "bf": torch.tensor([1.0, -2.5, 3.0], dtype=torch.bfloat16),
        "f8": torch.tensor([0.5, -1.0], dtype=torch.float8_e4m3fn),
    }
    data = encode_tensor_map(src)
    if dtypes.BY_NAME["bfloat16"].numpy_dtype is None:  # ml_dtypes is not installed
        for name in src:
            with pytest.raises(SerializationException, match="ml_dtypes"):
                decode_tensor_map(encode_tensor_map({name: src[name]}), as_numpy=True)
        # torch output is unaffected
        assert decode_tensor_map(data)["bf"].tolist() == [1.0, -2.5, 3.0]
    else:  # pragma: no cover - depends on the environment
        out = decode_tensor_map(data, as_numpy=True)
        assert out["bf"].astype(np.float32).tolist() == [1.0, -2.5, 3.0]
        assert out["f8"].astype(np.float32).tolist() == [0.5, -1.0]


def test_numpy_output_for_complex32_is_refused_clearly_or_exact():
    """numpy has no complex32; ml_dtypes (0.7 and later) has one, with torch's
    layout (two float16). Without it the refusal names numpy."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = torch.tensor([1.5 + 2j, -3 - 0.5j, 0j, 65504 - 1j], dtype=torch.complex32)
    data = encode_tensor_map({"c": c})
    if dtypes.BY_NAME["complex32"].numpy_dtype is None:
        with pytest.raises(SerializationException, match="numpy"):
            decode_tensor_map(data, as_numpy=True)
    else:  # pragma: no cover - depends on the environment
        out = decode_tensor_map(data, as_numpy=True)["c"]
        assert out.dtype.itemsize == 4 and out.shape == (4,)
        assert out.tobytes() == raw_of(c)
        assert out.astype(np.complex64).tolist() == [1.5 + 2j, -3 - 0.5j, 0j, 65504 - 1j]


def test_big_endian_numpy_input_comes_back_little_endian():
    arr = np.arange(12, dtype=">f8").reshape(3, 4)
    out = decode_tensor_map(encode_tensor_map({"be": arr}), as_numpy=True)["be"]
    assert out.dtype == np.dtype("<f8")
    assert np.array_equal(out, arr)
    t = decode_tensor_map(encode_tensor_map({"be": arr}))["be"]
    assert t.dtype == torch.float64 and t.tolist() == arr.tolist()


# ----------------------------------------------------------------------------- real model


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.bn = nn.BatchNorm2d(64)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.bn(self.conv2(x)))
        x = torch.flatten(torch.max_pool2d(x, 2), 1)
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.mark.parametrize(
    ("compression", "shuffle", "threads"),
    [("zstd", False, None), ("zstd", True, 1), ("none", False, None)],
)
def test_real_model_round_trips_and_loads(compression, shuffle, threads):
    torch.manual_seed(0)
    model = SmallCNN()
    model.train()
    model(torch.randn(4, 1, 28, 28))  # updates BatchNorm running stats
    model.eval()
    sd = model.state_dict()
    assert sd["bn.num_batches_tracked"].dtype == torch.int64
    data = encode_tensor_map(sd, compression=compression, shuffle=shuffle, threads=threads)
    out = decode_tensor_map(data, threads=threads)
    assert list(out) == list(sd)
    for k, v in sd.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape
        assert raw_of(out[k]) == raw_of(v), k
    clone = SmallCNN().eval()
    clone.load_state_dict(out)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(clone(x), model(x))
    if compression == "zstd":
        assert len(data) < sum(v.numel() * v.element_size() for v in sd.values()) + 4096


def test_numpy_scalars_encode_as_zero_d_arrays():
    out = decode_tensor_map(encode_tensor_map({"s": np.float32(1.5), "n": np.int64(-3)}))
    assert out["s"].shape == () and out["s"].dtype == torch.float32 and out["s"].item() == 1.5
    assert out["n"].shape == () and out["n"].dtype == torch.int64 and out["n"].item() == -3
