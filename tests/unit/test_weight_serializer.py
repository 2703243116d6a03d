"""The compatibility API of the old ``common`` package: WeightSerializer,
DifferentialWeightSerializer and the exception classes."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
import torch

import flwire
import flwire.compat.serialization
import flwire.exceptions
from flwire.compat.serialization.weight_serializer import (
    DifferentialWeightSerializer,
    WeightSerializer,
)
from flwire.tensors import read_tensor_map
from flwire.v1 import tensor_pb2 as pb

PACKAGE_DIR = Path(flwire.__file__).resolve().parent


def sample_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    return {
        "fc.weight": torch.randn(20, 30, generator=g),
        "fc.bias": torch.zeros(20),
        "bn.num_batches_tracked": torch.tensor(17, dtype=torch.int64),
        "emb.weight": torch.randn(8, 4, generator=g).to(torch.float16),
        "mask": torch.tensor([True, False, True, False]),
    }


def raw_of(t: torch.Tensor) -> bytes:
    """Element bytes in C order, from a fresh dense copy (odd strides are fine)."""
    if t.numel() == 0:
        return b""
    flat = t.detach().reshape(-1).clone(memory_format=torch.contiguous_format)
    return flat.view(torch.uint8).numpy().tobytes()


# ------------------------------------------------------------------------ import paths


def test_old_import_paths_work_under_compat():
    # common.X -> flwire.compat.X, path by path.
    ws = importlib.import_module("flwire.compat.serialization.weight_serializer")
    exc = importlib.import_module("flwire.compat.exceptions.custom_exceptions")
    package = importlib.import_module("flwire.compat.exceptions")
    assert ws.WeightSerializer is flwire.compat.serialization.WeightSerializer
    assert (
        ws.DifferentialWeightSerializer is flwire.compat.serialization.DifferentialWeightSerializer
    )
    for name in (
        "FLException",
        "ModelException",
        "SerializationException",
        "CommunicationException",
        "ConfigurationException",
        "TrainingException",
        "AggregationException",
    ):
        cls = getattr(exc, name)
        # The compat classes are the core's (flwire.exceptions), re-exported.
        assert getattr(flwire.exceptions, name) is cls
        assert getattr(package, name) is cls
        assert issubclass(cls, exc.FLException)
        assert issubclass(cls, Exception)
    assert issubclass(exc.ChecksumMismatchError, exc.SerializationException)
    assert issubclass(exc.PayloadTooLargeError, exc.SerializationException)
    for name in ("ModelException", "SerializationException", "TrainingException"):
        assert getattr(exc, name) is not exc.FLException


# ------------------------------------------------------------------------ serialize


@pytest.mark.parametrize("compression", [True, False])
def test_serialize_returns_bytes_that_decode(compression):
    sd = sample_state()
    data = WeightSerializer.serialize_weights(sd, compression=compression)
    assert type(data) is bytes
    codecs = {r.name: r.codec for r in read_tensor_map(data).records}
    if compression:
        assert codecs["fc.bias"] == pb.CODEC_ZSTD  # zeros compress
    else:
        assert set(codecs.values()) == {pb.CODEC_UNSPECIFIED}
    for flag in (True, False):  # the flag is ignored: the bytes say how they are stored
        out = WeightSerializer.deserialize_weights(data, compression=flag)
        assert list(out) == list(sd)
        for k, v in sd.items():
            assert out[k].dtype == v.dtype and out[k].shape == v.shape
            assert raw_of(out[k]) == raw_of(v)


def test_serialize_default_compresses():
    sd = {"z": torch.zeros(10_000)}
    assert len(WeightSerializer.serialize_weights(sd)) < 1000
    assert len(WeightSerializer.serialize_weights(sd, compression=False)) > 40_000
    out = WeightSerializer.deserialize_weights(WeightSerializer.serialize_weights(sd))
    assert torch.equal(out["z"], sd["z"])


def test_deserialize_refuses_legacy_base64_text():
    with pytest.raises(flwire.SerializationException, match="bytes"):
        WeightSerializer.deserialize_weights("H4sIAAAAAAAA/2tgYGBgYGBgYGBgYGBgYGA=")  # type: ignore[arg-type]


def test_deserialize_reports_corruption_as_serialization_exception():
    data = bytearray(WeightSerializer.serialize_weights(sample_state(), compression=False))
    data[-3] ^= 0xFF
    with pytest.raises(flwire.SerializationException):
        WeightSerializer.deserialize_weights(bytes(data))


def test_get_weights_size_keeps_the_legacy_keys_and_values():
    sd = sample_state()
    info = WeightSerializer.get_weights_size(sd)
    assert set(info) == {"total_parameters", "total_bytes", "total_mb", "layer_count", "layer_info"}
    params = 20 * 30 + 20 + 1 + 8 * 4 + 4
    size = (20 * 30 + 20) * 4 + 8 + 8 * 4 * 2 + 4
    assert info["total_parameters"] == params
    assert info["total_bytes"] == size
    assert info["total_mb"] == pytest.approx(size / (1024 * 1024))
    assert info["layer_count"] == 5
    assert info["layer_info"] == {
        "fc.weight": [20, 30],
        "fc.bias": [20],
        "bn.num_batches_tracked": [],
        "emb.weight": [8, 4],
        "mask": [4],
    }
    assert all(type(v) is list for v in info["layer_info"].values())
    empty = WeightSerializer.get_weights_size({})
    assert empty == {
        "total_parameters": 0,
        "total_bytes": 0,
        "total_mb": 0,
        "layer_count": 0,
        "layer_info": {},
    }


# ------------------------------------------------------------------------ differential


def test_diff_and_apply_round_trip_for_float_int_and_bool():
    old = sample_state()
    g = torch.Generator().manual_seed(5)
    new = {
        "fc.weight": old["fc.weight"] + torch.randn(20, 30, generator=g) * 0.01,
        "fc.bias": torch.randn(20, generator=g),
        "bn.num_batches_tracked": torch.tensor(42, dtype=torch.int64),
        "emb.weight": (old["emb.weight"].float() * 1.5).to(torch.float16),
        "mask": torch.tensor([False, False, True, True]),
    }
    diff = DifferentialWeightSerializer.compute_weight_diff(old, new)
    assert list(diff) == list(old)
    assert diff["bn.num_batches_tracked"].item() == 25
    assert diff["mask"].dtype == torch.bool
    assert diff["mask"].tolist() == [True, False, False, True]  # XOR
    for k in old:
        assert diff[k].dtype == old[k].dtype and diff[k].shape == old[k].shape
    applied = DifferentialWeightSerializer.apply_weight_diff(old, diff)
    assert torch.allclose(applied["fc.weight"], new["fc.weight"], atol=1e-6)
    assert torch.allclose(applied["fc.bias"], new["fc.bias"], atol=1e-6)
    assert torch.allclose(applied["emb.weight"].float(), new["emb.weight"].float(), atol=1e-2)
    assert torch.equal(applied["bn.num_batches_tracked"], new["bn.num_batches_tracked"])
    assert torch.equal(applied["mask"], new["mask"])


@pytest.mark.parametrize(
    "dtype", [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8], ids=str
)
def test_integer_diffs_are_exact(dtype):
    g = torch.Generator().manual_seed(1)
    old = {"x": torch.randint(0, 100, (50,), generator=g).to(dtype)}
    new = {"x": torch.randint(0, 100, (50,), generator=g).to(dtype)}
    applied = DifferentialWeightSerializer.apply_weight_diff(
        old, DifferentialWeightSerializer.compute_weight_diff(old, new)
    )
    assert torch.equal(applied["x"], new["x"])


def test_diff_survives_serialization():
    old, new = sample_state(), sample_state()
    new["fc.weight"] = new["fc.weight"] * 2
    new["mask"] = ~new["mask"]
    wire = WeightSerializer.deserialize_weights(
        WeightSerializer.serialize_weights(
            DifferentialWeightSerializer.compute_weight_diff(old, new)
        )
    )
    applied = DifferentialWeightSerializer.apply_weight_diff(old, wire)
    assert torch.allclose(applied["fc.weight"], new["fc.weight"])
    assert torch.equal(applied["mask"], new["mask"])


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (torch.zeros(3), torch.zeros(4)),
        (torch.zeros(2, 3), torch.zeros(3, 2)),
        (torch.zeros(3), torch.zeros(3, dtype=torch.float64)),
        (torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.uint8)),
    ],
    ids=["length", "transposed", "dtype", "bool_vs_int"],
)
def test_mismatched_tensors_raise(a, b):
    with pytest.raises(flwire.SerializationException, match="'w'"):
        DifferentialWeightSerializer.compute_weight_diff({"w": a}, {"w": b})
    with pytest.raises(flwire.SerializationException, match="'w'"):
        DifferentialWeightSerializer.apply_weight_diff({"w": a}, {"w": b})


def test_keys_missing_from_the_diff_are_cloned_not_aliased():
    base = {"a": torch.ones(3), "b": torch.arange(4), "c": torch.tensor([True])}
    diff = {"a": torch.full((3,), 2.0)}
    out = DifferentialWeightSerializer.apply_weight_diff(base, diff)
    assert list(out) == ["a", "b", "c"]
    assert out["a"].tolist() == [3.0, 3.0, 3.0]
    for k in ("b", "c"):
        assert torch.equal(out[k], base[k])
        assert out[k] is not base[k]
        assert out[k].data_ptr() != base[k].data_ptr()
    out["b"][0] = 99
    assert base["b"][0] == 0
    # The base is never modified in place by apply.
    assert base["a"].tolist() == [1.0, 1.0, 1.0]


def test_diff_only_covers_keys_present_in_both():
    old = {"a": torch.ones(2), "gone": torch.ones(2)}
    new = {"a": torch.zeros(2), "added": torch.ones(2)}
    assert list(DifferentialWeightSerializer.compute_weight_diff(old, new)) == ["a"]


# ------------------------------------------------------------------------ no pickle

PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "pickletools", "dill", "cloudpickle", "shelve"}


def _imported_modules(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0]
            if name in ("__import__", "import_module") and isinstance(arg, ast.Constant):
                found.add(str(arg.value).split(".")[0])
    return found


def test_scanner_detects_pickle_imports():
    for src in (
        "import pickle",
        "import os, pickle as p",
        "from pickle import loads",
        "def f():\n    import _pickle\n",
        "__import__('pickle')",
        "import importlib\nimportlib.import_module('dill')",
    ):
        assert _imported_modules(ast.parse(src)) & PICKLE_MODULES, src


def test_no_module_in_the_package_imports_pickle():
    files = sorted(PACKAGE_DIR.rglob("*.py"))
    names = {f.name for f in files}
    assert {"encode.py", "decode.py", "weight_serializer.py", "fields.py"} <= names
    offenders = {}
    for path in files:
        text = path.read_text(encoding="utf-8")
        bad = _imported_modules(ast.parse(text, filename=str(path))) & PICKLE_MODULES
        if bad:
            offenders[str(path.relative_to(PACKAGE_DIR))] = sorted(bad)
    assert offenders == {}
