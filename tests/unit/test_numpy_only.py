"""The core works with numpy alone: in a process where importing torch (and the
other optional packages) fails, every numpy dtype round-trips through every
codec, lossy encodings work where numpy can express them, the generated
classes and the messages work, and what needs an extra says which one."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# Runs in a fresh interpreter: a meta-path finder makes the optional packages
# unimportable, as on a machine where only the core dependencies are installed.
SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys

    BLOCKED = {"torch", "confluent_kafka", "sklearn", "matplotlib", "ml_dtypes", "yaml", "psutil"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ImportError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, Block())

    import numpy as np

    import flwire
    import flwire.numpy as fnp
    from flwire import messages
    from flwire.exceptions import MissingDependencyError, SerializationException
    from flwire.v1 import messages_pb2, options_pb2, tensor_pb2, transfer_pb2, values_pb2

    report = {}
    rng = np.random.default_rng(7)
    DTYPES = ["float16", "float32", "float64", "int8", "int16", "int32", "int64",
              "uint8", "uint16", "uint32", "uint64", "bool", "complex64", "complex128"]

    def sample(dtype, shape):
        if dtype == "bool":
            return rng.integers(0, 2, shape).astype(bool)
        if dtype.startswith("complex"):
            return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
        if dtype.startswith(("int", "uint")):
            info = np.iinfo(dtype)
            return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
        return (rng.standard_normal(shape) * 3).astype(dtype)

    # Big enough for several frames (512 KiB each), small ones, a 0-d and an empty one.
    state = {f"{d}.{i}": sample(d, shape) for d in DTYPES
             for i, shape in enumerate([(300_000,), (3, 5), (), (0, 4)])}
    state["big_endian"] = np.arange(1000, dtype=">i4")
    for compression in ("zstd", "lz4", "none"):
        for shuffle in (False, True):
            blob = flwire.encode_tensor_map(state, compression=compression, shuffle=shuffle)
            out = flwire.decode_tensor_map(blob, as_numpy=True)
            assert list(out) == list(state)
            for name, want in state.items():
                got = out[name]
                assert got.shape == want.shape, name
                assert got.dtype == want.dtype.newbyteorder("<"), (name, got.dtype)
                assert np.array_equal(got, want), name
            report[f"{compression}/{shuffle}"] = len(blob)

    x = {"w": rng.standard_normal(4096).astype(np.float32),
         "d": rng.standard_normal(4096).astype(np.float64)}
    for method in ("float16", "bfloat16", "int8", "topk"):
        blob = flwire.encode_tensor_map(x, lossy=flwire.LossyConfig(method))
        view = flwire.read_tensor_map(blob)
        assert all(r.lossy is not None and r.lossy.name == method for r in view.records), method
        out = flwire.decode_tensor_map(blob, as_numpy=True)
        for name, want in x.items():
            assert out[name].dtype == want.dtype and out[name].shape == want.shape
            err = float(np.max(np.abs(out[name] - want)))
            report[f"{method}/{name}"] = err
            if method != "topk":
                assert err < 0.1 * float(np.max(np.abs(want))), (method, name, err)

    # safetensors-style verbs, the generated classes, messages.
    assert np.array_equal(fnp.load(fnp.save({"a": x["w"]}))["a"], x["w"])
    tm = tensor_pb2.TensorMap.FromString(flwire.encode_tensor_map(x, compression="none"))
    assert [t.name for t in tm.tensors] == ["w", "d"]
    env = messages_pb2.Envelope(message_id="m")
    assert messages_pb2.Envelope.FromString(env.SerializeToString()).message_id == "m"
    assert transfer_pb2.TransferPart and values_pb2.Value and options_pb2.FieldRules
    msg = messages.client_update("c1", 2, x, {"loss": 0.5}, 10)
    got = messages.decode_message(msg.to_bytes())
    assert got.body.round_id == 2
    assert np.array_equal(got.tensors(as_numpy=True)["w"], x["w"])

    # What needs an extra says which one.
    errors = {}
    try:
        flwire.decode_tensor_map(blob)  # to torch
    except MissingDependencyError as exc:
        errors["torch"] = str(exc)
    one = tensor_pb2.Tensor(name="b", dtype=tensor_pb2.DTYPE_BFLOAT16, shape=[2], raw_size=4)
    one.data = bytes([0x80, 0x3F, 0x00, 0x40])  # bfloat16 1.0, 2.0
    bf16 = tensor_pb2.TensorMap(tensors=[one]).SerializeToString()
    try:
        flwire.decode_tensor_map(bf16, as_numpy=True, verify_checksum=False)
    except SerializationException as exc:
        errors["bfloat16"] = str(exc)
    # Checking and describing need no framework either (flwire inspect).
    import io
    import crc32c
    from flwire.inspect_cmd import inspect_bytes
    one.crc32c = crc32c.crc32c(one.data)
    bf16_ok = tensor_pb2.TensorMap(tensors=[one]).SerializeToString()
    flwire.read_tensor_map(bf16_ok).verify()
    out = io.StringIO()
    assert inspect_bytes(bf16_ok, out) == 0 and "crc ok" in out.getvalue(), out.getvalue()
    assert inspect_bytes(msg.to_bytes(), io.StringIO()) == 0
    one.crc32c ^= 1
    report["inspect_bad"] = inspect_bytes(
        tensor_pb2.TensorMap(tensors=[one]).SerializeToString(), io.StringIO()
    )
    try:
        import flwire.compat.serialization.weight_serializer  # noqa: F401
    except MissingDependencyError as exc:
        errors["compat"] = str(exc)
    try:
        from flwire.transport import KafkaTransport  # noqa: F401
    except MissingDependencyError as exc:
        errors["kafka"] = str(exc)
    import contextlib
    from flwire.cli import main
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        report["demo_exit"] = main(["demo", "--rounds", "1"])
    errors["demo"] = stderr.getvalue()
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        report["aggregator_exit"] = main(
            ["aggregator", "--bootstrap-servers", "127.0.0.1:1", "--job", "j", "--id", "a"]
        )
    errors["aggregator"] = stderr.getvalue()
    report["errors"] = errors
    report["loaded"] = sorted(m for m in BLOCKED if m in sys.modules)
    print(json.dumps(report))
    """
)


def test_the_core_needs_numpy_only():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []
    # Compression did something, and "none" is the raw size plus framing.
    assert report["zstd/False"] < report["none/False"]
    assert report["lz4/True"] < report["none/False"]
    assert report["inspect_bad"] == 1  # a wrong CRC is reported, not missed
    errors = report["errors"]
    assert "pip install 'flwire[torch]'" in errors["torch"]
    assert "bfloat16" in errors["bfloat16"] and "numpy cannot represent" in errors["bfloat16"]
    assert "pip install 'flwire[torch]'" in errors["compat"]
    assert "pip install 'flwire[kafka]'" in errors["kafka"]
    # The demo without its extra: one clear line, no traceback.
    assert report["demo_exit"] == 1
    assert errors["demo"].startswith("flwire demo: the package 'torch'")
    assert "pip install 'flwire[demo]'" in errors["demo"] and "Traceback" not in errors["demo"]
    assert report["aggregator_exit"] == 1
    assert errors["aggregator"].startswith("flwire aggregator: the package 'torch'")
    assert "pip install 'flwire[torch]'" in errors["aggregator"]
