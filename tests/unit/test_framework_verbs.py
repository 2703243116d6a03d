"""safetensors-style verbs per framework: flwire.numpy and flwire.torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import flwire.numpy as fnp
import flwire.torch as ftorch
from flwire import EncodeOptions, read_tensor_map
from flwire.exceptions import SerializationException
from flwire.v1 import tensor_pb2

ARRAYS: dict[str, np.ndarray] = {
    "w": np.linspace(-1, 1, 5000, dtype=np.float32).reshape(50, 100),
    "n": np.arange(3),
}
TENSORS = {"w": torch.linspace(-1, 1, 5000).reshape(50, 100), "b": torch.tensor([True, False])}


def test_numpy_save_load_and_files(tmp_path: Path):
    blob = fnp.save(ARRAYS, {"round": "3"}, EncodeOptions(compression="lz4", shuffle=True))
    view = read_tensor_map(blob)
    assert view.metadata == {"round": "3"}
    assert {r.codec for r in view.records if r.name == "w"} == {tensor_pb2.CODEC_LZ4}
    out = fnp.load(blob)
    assert all(np.array_equal(out[k], v) and out[k].dtype == v.dtype for k, v in ARRAYS.items())
    path = tmp_path / "model.flw"
    fnp.save_file(ARRAYS, path, {"a": "b"})
    assert path.read_bytes() == fnp.save(ARRAYS, {"a": "b"})
    assert [p.name for p in tmp_path.iterdir()] == ["model.flw"]  # no temporary left behind
    again = fnp.load_file(path)
    assert np.array_equal(again["w"], ARRAYS["w"])
    again["w"][0, 0] = 42.0  # the file's buffer belongs to the caller: writable, independent
    assert fnp.load_file(path)["w"][0, 0] == ARRAYS["w"][0, 0]


def test_torch_save_load_and_files(tmp_path: Path):
    out = ftorch.load(ftorch.save(TENSORS))
    assert all(torch.equal(out[k], v) and out[k].dtype == v.dtype for k, v in TENSORS.items())
    path = tmp_path / "m.flw"
    ftorch.save_file(TENSORS, path)
    loaded = ftorch.load_file(path, device="cpu")
    assert torch.equal(loaded["w"], TENSORS["w"])


def test_each_framework_takes_its_own_tensors():
    with pytest.raises(SerializationException, match=r"numpy arrays; 'w' is a Tensor"):
        fnp.save({"w": torch.ones(2)})  # type: ignore[dict-item]
    with pytest.raises(SerializationException, match=r"torch tensors; 'w' is a ndarray"):
        ftorch.save({"w": np.ones(2)})  # type: ignore[dict-item]


def test_file_errors_name_the_file(tmp_path: Path):
    missing = tmp_path / "nope.flw"
    with pytest.raises(SerializationException, match=r"cannot read .*nope\.flw"):
        fnp.load_file(missing)
    with pytest.raises(SerializationException, match=r"cannot write .*no-such-dir"):
        fnp.save_file(ARRAYS, tmp_path / "no-such-dir" / "m.flw")
