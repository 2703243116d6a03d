"""Generate flwire's golden wire vectors (see README.md beside this file).

Each vector is a small ``flwire.v1.TensorMap`` built from deterministic inputs
and encoded with :func:`flwire.serialization.encode_tensor_map`. For every
vector this writes:

* ``<name>.bin``   the encoded message, byte for byte;
* ``<name>.txtpb`` the same message in protobuf text format;
* ``<name>.json``  what a decoder must produce, derived from the *inputs* (not
  from decoding ``.bin``): per tensor its name, dtype, shape, codec, filter,
  raw size, CRC-32C and raw little-endian bytes in hex.

and ``manifest.json`` with the SHA-256 of every file and the zstd versions used.

The raw bytes in ``.json`` are packed here with :mod:`struct` or written out as
hand-checked bit patterns (bfloat16, float8), never read back from torch; the
generator asserts that torch's memory agrees, so a change in either side shows.

Usage::

    python tests/vectors/generate.py            # (re)write the files here
    python tests/vectors/generate.py --check    # exit 1 if any file would change
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import zstandard
from google.protobuf import text_format

from flwire.serialization import encode_tensor_map
from flwire.v1 import tensor_pb2

HERE = Path(__file__).resolve().parent
MANIFEST = "manifest.json"

# dtype short name -> (wire enum name, width in bytes, torch dtype name)
DTYPES: dict[str, tuple[str, int, str]] = {
    "float32": ("DTYPE_FLOAT32", 4, "float32"),
    "float64": ("DTYPE_FLOAT64", 8, "float64"),
    "float16": ("DTYPE_FLOAT16", 2, "float16"),
    "bfloat16": ("DTYPE_BFLOAT16", 2, "bfloat16"),
    "float8_e4m3fn": ("DTYPE_FLOAT8_E4M3FN", 1, "float8_e4m3fn"),
    "float8_e5m2": ("DTYPE_FLOAT8_E5M2", 1, "float8_e5m2"),
    "int8": ("DTYPE_INT8", 1, "int8"),
    "int16": ("DTYPE_INT16", 2, "int16"),
    "int32": ("DTYPE_INT32", 4, "int32"),
    "int64": ("DTYPE_INT64", 8, "int64"),
    "uint8": ("DTYPE_UINT8", 1, "uint8"),
    "uint16": ("DTYPE_UINT16", 2, "uint16"),
    "uint32": ("DTYPE_UINT32", 4, "uint32"),
    "uint64": ("DTYPE_UINT64", 8, "uint64"),
    "bool": ("DTYPE_BOOL", 1, "bool"),
    "complex64": ("DTYPE_COMPLEX64", 8, "complex64"),
    "complex128": ("DTYPE_COMPLEX128", 16, "complex128"),
    "complex32": ("DTYPE_COMPLEX32", 4, "complex32"),
    "float8_e4m3fnuz": ("DTYPE_FLOAT8_E4M3FNUZ", 1, "float8_e4m3fnuz"),
    "float8_e5m2fnuz": ("DTYPE_FLOAT8_E5M2FNUZ", 1, "float8_e5m2fnuz"),
    "float8_e8m0fnu": ("DTYPE_FLOAT8_E8M0FNU", 1, "float8_e8m0fnu"),
}

_STRUCT_FORMATS = {
    "float32": "f",
    "float64": "d",
    "float16": "e",
    "int8": "b",
    "int16": "h",
    "int32": "i",
    "int64": "q",
    "uint8": "B",
    "uint16": "H",
    "uint32": "I",
    "uint64": "Q",
    "complex64": "f",
    "complex128": "d",
    "complex32": "e",
}

INF = float("inf")
NAN = float("nan")


# ----------------------------------------------------------------------------- raw bytes


def crc32c_reference(data: bytes) -> int:
    """Bitwise CRC-32C (reflected polynomial 0x82F63B78, init and xorout 0xFFFFFFFF).

    Deliberately slow and independent of the ``crc32c`` package the codec uses.
    """
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def pack(dtype: str, values: Sequence[Any]) -> bytes:
    """Little-endian raw bytes of ``values`` for the dtypes :mod:`struct` can pack."""
    if dtype == "bool":
        return bytes(1 if v else 0 for v in values)
    fmt = _STRUCT_FORMATS[dtype]
    if dtype.startswith("complex"):  # real part, then imaginary part
        flat = [part for v in values for part in (complex(v).real, complex(v).imag)]
        return struct.pack(f"<{len(flat)}{fmt}", *flat)
    if dtype == "bfloat16":  # pragma: no cover - bfloat16 uses explicit bits
        raise ValueError("pack bfloat16 with bits=")
    return struct.pack(f"<{len(values)}{fmt}", *values)


def bfloat16_bits(values: Sequence[float]) -> bytes:
    """bfloat16 = the upper 16 bits of binary32 (exact for the values used here)."""
    out = bytearray()
    for v in values:
        (word,) = struct.unpack("<I", struct.pack("<f", v))
        assert word & 0xFFFF == 0, f"{v} is not exactly representable in bfloat16"
        out += (word >> 16).to_bytes(2, "little")
    return bytes(out)


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Input:
    """One tensor of a vector: its values and the raw bytes they must become."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    values: tuple[Any, ...]
    raw: bytes
    codec: str = "CODEC_UNSPECIFIED"  # what the encoder is expected to choose
    filter: str = "FILTER_UNSPECIFIED"

    def tensor(self) -> torch.Tensor:
        """The torch tensor handed to the encoder, built from ``values``."""
        torch_dtype = getattr(torch, DTYPES[self.dtype][2])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # complex32 is "experimental"
            if self.dtype == "complex32":
                t = torch.tensor(self.values, dtype=torch.complex64).to(torch_dtype)
            elif self.dtype.startswith("float8") or self.dtype == "bfloat16":
                t = torch.tensor(self.values, dtype=torch.float32).to(torch_dtype)
            else:
                t = torch.tensor(self.values, dtype=torch_dtype)
            t = t.reshape(self.shape)
            # The independent expectation and torch's memory must agree.
            actual = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        assert actual == self.raw, f"{self.name}: torch bytes {actual.hex()} != {self.raw.hex()}"
        return t


def packed(
    name: str, dtype: str, shape: tuple[int, ...], values: Sequence[Any], **kw: str
) -> Input:
    return Input(name, dtype, shape, tuple(values), pack(dtype, values), **kw)


def with_bits(
    name: str, dtype: str, shape: tuple[int, ...], values: Sequence[float], bits: bytes
) -> Input:
    return Input(name, dtype, shape, tuple(values), bits)


@dataclass(frozen=True)
class Vector:
    """One golden vector: inputs plus the encoder options used."""

    name: str
    description: str
    build: Callable[[], list[Input]]
    compression: str = "none"
    level: int = 1
    shuffle: bool = False
    metadata: dict[str, str] = field(default_factory=dict)

    def inputs(self) -> list[Input]:
        return self.build()

    def state_dict(self) -> list[tuple[str, torch.Tensor]]:
        return [(i.name, i.tensor()) for i in self.inputs()]

    def encode(self) -> bytes:
        return encode_tensor_map(
            self.state_dict(),
            compression=self.compression,  # type: ignore[arg-type]
            level=self.level,
            shuffle=self.shuffle,
            metadata=self.metadata or None,
            threads=1,
        )

    def encoder_options(self) -> dict[str, Any]:
        return {"compression": self.compression, "level": self.level, "shuffle": self.shuffle}


def _float32_small() -> list[Input]:
    # -0.0, +-inf and the canonical quiet NaN 0x7FC00000 (what torch and struct produce).
    values = [1.5, -0.0, INF, -INF, NAN, 2.0**-149]  # the last: smallest subnormal
    return [packed("weight", "float32", (2, 3), values)]


def _mixed_dtypes() -> list[Input]:
    return [
        packed("int8", "int8", (4,), [-128, -1, 0, 127]),
        packed("int64_scalar", "int64", (), [-2]),  # 0-d: no shape on the wire
        packed("bool", "bool", (2, 2), [True, False, False, True]),
        with_bits(
            "bfloat16",
            "bfloat16",
            (3,),
            [1.0, -2.0, 3.140625],
            bfloat16_bits([1.0, -2.0, 3.140625]),
        ),
        packed("float16", "float16", (3,), [1.0, -0.5, 65504.0]),
        packed("uint8_empty", "uint8", (0, 4), []),  # empty: no raw_size, crc32c or data
    ]


def _smooth_values() -> list[float]:
    # (i^2 + j^2) / 1024 is exact in binary32, so no libm is involved anywhere.
    return [(i * i + j * j) / 1024.0 for i in range(64) for j in range(64)]


def _zstd() -> list[Input]:
    return [packed("smooth", "float32", (64, 64), _smooth_values(), codec="CODEC_ZSTD")]


def _zstd_shuffle() -> list[Input]:
    return [
        packed(
            "smooth",
            "float32",
            (64, 64),
            _smooth_values(),
            codec="CODEC_ZSTD",
            filter="FILTER_BYTE_SHUFFLE",
        )
    ]


def _incompressible() -> list[Input]:
    # A 32-bit LCG (Numerical Recipes constants), top byte: zstd cannot shrink it.
    state, values = 12345, []
    for _ in range(256):
        state = (1664525 * state + 1013904223) & 0xFFFFFFFF
        values.append(state >> 24)
    return [packed("noise", "uint8", (256,), values)]


def _metadata() -> list[Input]:
    return [packed("encoder.层0.bias", "float32", (2,), [0.25, -0.25])]


def _complex() -> list[Input]:
    return [packed("z", "complex64", (3,), [1 + 2j, -0.5 + 0j, complex(INF, -1.0)])]


def _float8() -> list[Input]:
    # E4M3FN: bias 7, no infinities, S.1111.111 is NaN, 448 is the largest finite.
    # E5M2: bias 15, IEEE-like, 0x7C is +inf.
    return [
        with_bits(
            "e4m3fn",
            "float8_e4m3fn",
            (5,),
            [1.0, -2.0, 0.5, 448.0, NAN],
            bytes.fromhex("38c0307e7f"),
        ),
        with_bits(
            "e5m2", "float8_e5m2", (5,), [1.0, -2.0, 0.5, 57344.0, INF], bytes.fromhex("3cc0387b7c")
        ),
    ]


def _other_dtypes() -> list[Input]:
    return [
        packed("float64", "float64", (2,), [1.0, -2.5]),
        packed("int16", "int16", (2,), [-32768, 32767]),
        packed("int32", "int32", (2,), [-2147483648, 2147483647]),
        packed("uint16", "uint16", (2,), [0, 65535]),
        packed("uint32", "uint32", (2,), [1, 4294967295]),
        packed("uint64", "uint64", (2,), [1, 2**63 - 1]),
        packed("complex128", "complex128", (1,), [1.0 - 1.0j]),
        packed("complex32", "complex32", (2,), [1 + 2j, -0.5]),
        # E4M3FNUZ: bias 8, 0x80 is NaN. E5M2FNUZ: bias 16. E8M0FNU: 2^(e-127), no sign.
        with_bits("e4m3fnuz", "float8_e4m3fnuz", (3,), [1.0, -2.0, 0.5], bytes.fromhex("40c838")),
        with_bits("e5m2fnuz", "float8_e5m2fnuz", (3,), [1.0, -2.0, 0.5], bytes.fromhex("40c43c")),
        with_bits("e8m0fnu", "float8_e8m0fnu", (3,), [1.0, 2.0, 0.5], bytes.fromhex("7f807e")),
    ]


VECTORS: list[Vector] = [
    Vector(
        "empty",
        "A TensorMap with no tensors and no metadata: zero bytes on the wire.",
        lambda: [],
    ),
    Vector(
        "float32_small",
        "One 2x3 float32 with -0.0, +inf, -inf, NaN and a subnormal; uncompressed.",
        _float32_small,
    ),
    Vector(
        "mixed_dtypes",
        "int8, a 0-d int64, bool, bfloat16, float16 and an empty uint8 of shape (0, 4).",
        _mixed_dtypes,
    ),
    Vector(
        "zstd",
        "A 64x64 float32 of a smooth pattern, zstd level 1, no filter.",
        _zstd,
        compression="zstd",
    ),
    Vector(
        "zstd_shuffle",
        "The same 64x64 float32, byte-shuffled, then zstd level 1.",
        _zstd_shuffle,
        compression="zstd",
        shuffle=True,
    ),
    Vector(
        "incompressible",
        "zstd requested, but the frame would not be smaller: stored raw, codec unspecified.",
        _incompressible,
        compression="zstd",
    ),
    Vector(
        "metadata",
        "A tensor with a non-ASCII name, and metadata including an empty value.",
        _metadata,
        metadata={"framework": "torch", "round": "3", "note": ""},
    ),
    Vector("complex", "complex64: real part, then imaginary part, each binary32.", _complex),
    Vector("float8", "float8_e4m3fn and float8_e5m2, including NaN, inf and the maxima.", _float8),
    Vector(
        "other_dtypes",
        "Every remaining dtype: float64, int16/32, uint16/32/64, complex128, complex32, "
        "float8_e4m3fnuz, float8_e5m2fnuz, float8_e8m0fnu.",
        _other_dtypes,
    ),
]


# ----------------------------------------------------------------------------- rendering


def expectations(vector: Vector) -> dict[str, Any]:
    """The ``.json`` document: everything derived from the inputs, not from the bytes."""
    tensors = []
    for i in vector.inputs():
        wire_name, width, _ = DTYPES[i.dtype]
        count = 1
        for d in i.shape:
            count *= d
        assert len(i.raw) == count * width, f"{i.name}: raw size does not match shape"
        tensors.append(
            {
                "name": i.name,
                "dtype": wire_name,
                "shape": list(i.shape),
                "codec": i.codec,
                "filter": i.filter,
                "raw_size": len(i.raw),
                "crc32c": f"{crc32c_reference(i.raw):08x}",
                "raw_hex": i.raw.hex(),
            }
        )
    return {
        "name": vector.name,
        "description": vector.description,
        "message": "flwire.v1.TensorMap",
        "encoder": vector.encoder_options(),
        "metadata": dict(vector.metadata),
        "tensors": tensors,
    }


def text_form(data: bytes) -> str:
    msg = tensor_pb2.TensorMap.FromString(data)
    header = "# proto-file: flwire/v1/tensor.proto\n# proto-message: flwire.v1.TensorMap\n\n"
    return header + text_format.MessageToString(msg)


def _json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def render() -> dict[str, bytes]:
    """Every file of the vector set, by file name."""
    files: dict[str, bytes] = {}
    entries = []
    for vector in VECTORS:
        data = vector.encode()
        expected = expectations(vector)
        _check_against_expectations(data, expected)
        names = {
            "bin": f"{vector.name}.bin",
            "txtpb": f"{vector.name}.txtpb",
            "json": f"{vector.name}.json",
        }
        files[names["bin"]] = data
        files[names["txtpb"]] = text_form(data).encode("utf-8")
        files[names["json"]] = _json_text(expected).encode("utf-8")
        entries.append(
            {
                "name": vector.name,
                "description": vector.description,
                "files": {
                    kind: {
                        "path": path,
                        "size": len(files[path]),
                        "sha256": hashlib.sha256(files[path]).hexdigest(),
                    }
                    for kind, path in names.items()
                },
            }
        )
    manifest = {
        "format": "flwire golden wire vectors",
        "message": "flwire.v1.TensorMap",
        "schema": "proto/flwire/v1/tensor.proto",
        "spec": "docs/wire-format.md",
        "generator": "tests/vectors/generate.py",
        "zstandard_version": zstandard.__version__,
        "libzstd_version": ".".join(str(p) for p in zstandard.ZSTD_VERSION),
        "vectors": entries,
    }
    files[MANIFEST] = _json_text(manifest).encode("utf-8")
    return files


def _check_against_expectations(data: bytes, expected: dict[str, Any]) -> None:
    """Sanity-check the encoder's choices against the declared ones (codec, filter, CRC)."""
    msg = tensor_pb2.TensorMap.FromString(data)
    assert len(msg.tensors) == len(expected["tensors"]), expected["name"]
    for t, e in zip(msg.tensors, expected["tensors"], strict=True):
        got = (
            t.name,
            tensor_pb2.Dtype.Name(t.dtype),
            list(t.shape),
            tensor_pb2.Codec.Name(t.codec),
            tensor_pb2.Filter.Name(t.filter),
            t.raw_size,
            f"{t.crc32c:08x}",
        )
        want = tuple(
            e[k] for k in ("name", "dtype", "shape", "codec", "filter", "raw_size", "crc32c")
        )
        assert got == want, f"{expected['name']}: encoder wrote {got}, expected {want}"
    assert dict(msg.metadata) == expected["metadata"], expected["name"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="directory to write (default: here)")
    parser.add_argument(
        "--check", action="store_true", help="compare with the files, write nothing"
    )
    args = parser.parse_args(argv)
    files = render()
    if args.check:
        stale = [
            n
            for n, b in files.items()
            if not (args.out / n).is_file() or (args.out / n).read_bytes() != b
        ]
        for name in stale:
            print(f"would change: {name}", file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (args.out / name).write_bytes(content)
    print(f"wrote {len(files)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
