"""Generate flwire's golden wire vectors (see README.md beside this file).

Each vector is a small ``flwire.v1.TensorMap`` built from deterministic inputs
and encoded with :func:`flwire.encode_tensor_map`. For every
vector this writes:

* ``<name>.bin``   the encoded message, byte for byte;
* ``<name>.txtpb`` the same message in protobuf text format;
* ``<name>.json``  what a decoder must produce, derived from the *inputs* (not
  from decoding ``.bin``): per tensor its name, dtype, shape, codec, filter,
  raw size, CRC-32C and raw little-endian bytes in hex; for a lossy tensor
  (docs/wire-format.md section 9.1) those of its payload, and under ``lossy``
  the method, block_size, k, and the reconstructed and original tensors.

and ``manifest.json`` with the SHA-256 of every file and the zstd and LZ4 versions used.

The raw bytes in ``.json`` are packed here with :mod:`struct` or written out as
hand-checked bit patterns (bfloat16, float8), never read back from torch; the
generator asserts that torch's memory agrees, so a change in either side shows.
Lossy payloads and reconstructions are computed here too, with exact rational
arithmetic, and the generator asserts that the encoder agrees (payload size and CRC-32C).

Usage::

    python tests/vectors/generate.py            # (re)write the files here
    python tests/vectors/generate.py --check    # exit 1 if any file would change
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import struct
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import lz4
import torch
import zstandard
from google.protobuf import text_format

from flwire import EncodeOptions, LossyConfig, encode_tensor_map
from flwire.v1 import messages_pb2, tensor_pb2

HERE = Path(__file__).resolve().parent
MANIFEST = "manifest.json"
#: Invalid maps, one per reader check (refusals.py).
REFUSALS_DIR = "refusals"


def _sibling(module_name: str, filename: str) -> Any:
    """A module beside this file, loaded by path (this directory is no package)."""
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, HERE / filename)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


refusals = _sibling("flwire_golden_refusals", "refusals.py")
#: Envelopes and transfer parts (messages.py).
MESSAGES_DIR = "messages"
message_vectors = _sibling("flwire_golden_messages", "messages.py")
#: Streamed transfers and the stream refusals (streams.py).
stream_vectors = _sibling("flwire_golden_streams", "streams.py")
STREAM_REFUSALS_DIR = stream_vectors.REFUSALS_DIR

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
    lossy: Lossy | None = None  # set when the vector's LossyConfig applies to it
    #: Built from ``raw`` rather than ``values`` (NaN payloads, which Python
    #: floats do not carry through torch.tensor).
    from_raw: bool = False

    def tensor(self) -> torch.Tensor:
        """The torch tensor handed to the encoder, built from ``values``."""
        torch_dtype = getattr(torch, DTYPES[self.dtype][2])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # complex32 is "experimental"
            if self.from_raw:
                t = torch.frombuffer(bytearray(self.raw), dtype=torch_dtype)
            elif self.dtype == "complex32":
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
    name: str,
    dtype: str,
    shape: tuple[int, ...],
    values: Sequence[Any],
    codec: str = "CODEC_UNSPECIFIED",
    filter: str = "FILTER_UNSPECIFIED",
) -> Input:
    return Input(name, dtype, shape, tuple(values), pack(dtype, values), codec, filter)


def with_bits(
    name: str, dtype: str, shape: tuple[int, ...], values: Sequence[float], bits: bytes
) -> Input:
    return Input(name, dtype, shape, tuple(values), bits)


def from_words(name: str, dtype: str, shape: tuple[int, ...], words: Sequence[int]) -> Input:
    """float32 / float64 elements given as bit patterns (NaN payloads kept)."""
    fmt = {"float32": "I", "float64": "Q", "bfloat16": "H", "float16": "H"}[dtype]
    raw = struct.pack(f"<{len(words)}{fmt}", *words)
    values = unpack_floats(dtype, raw)
    return Input(name, dtype, shape, tuple(values), raw, from_raw=True)


# ----------------------------------------------------------------------------- lossy references
#
# docs/wire-format.md section 9.1, computed independently of torch and of
# flwire.tensors.lossy: exact rational arithmetic (fractions.Fraction)
# rounds every value once, and struct packs the results.


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format, for rounding to it."""

    precision: int  # significand bits, the implicit one included
    emin: int  # exponent of the smallest normal number
    emax: int  # exponent of the largest finite number


FLOAT16 = FloatFormat(11, -14, 15)
BFLOAT16 = FloatFormat(8, -126, 127)
FLOAT32 = FloatFormat(24, -126, 127)


def _floor_log2(x: Fraction) -> int:
    e = x.numerator.bit_length() - x.denominator.bit_length()
    while Fraction(2) ** e > x:
        e -= 1
    while Fraction(2) ** (e + 1) <= x:
        e += 1
    return e


def round_even(x: float | Fraction, fmt: FloatFormat) -> float:
    """``x`` rounded to the nearest value of ``fmt``, ties to even, in one rounding
    (subnormals included); +-inf beyond ``fmt``'s range. NaN and infinities pass."""
    if isinstance(x, float) and not math.isfinite(x):
        return x
    negative = x < 0 or (isinstance(x, float) and math.copysign(1.0, x) < 0)
    mag = abs(Fraction(x))
    if mag == 0:
        return -0.0 if negative else 0.0
    ulp = Fraction(2) ** (max(_floor_log2(mag), fmt.emin) - fmt.precision + 1)
    n, rest = divmod(mag, ulp)
    if rest > ulp / 2 or (rest == ulp / 2 and n % 2 == 1):
        n += 1
    value = float(n * ulp) if n * ulp < Fraction(2) ** (fmt.emax + 1) else INF
    return -value if negative else value


def round_half_even(x: Fraction) -> int:
    n, rest = divmod(x, 1)
    return int(n) + (1 if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and n % 2) else 0)


def unpack_floats(dtype: str, raw: bytes) -> list[float]:
    """The elements of raw floating-point bytes, as Python floats (exact)."""
    if dtype == "bfloat16":
        words = struct.unpack(f"<{len(raw) // 2}H", raw)
        return [struct.unpack("<f", struct.pack("<I", w << 16))[0] for w in words]
    fmt = _STRUCT_FORMATS[dtype]
    return list(struct.unpack(f"<{len(raw) // DTYPES[dtype][1]}{fmt}", raw))


def pack_floats(dtype: str, values: Sequence[float]) -> bytes:
    """Raw bytes of values exactly representable in ``dtype`` (NaN: the quiet NaN)."""
    if dtype == "bfloat16":
        return bfloat16_bits(values)
    return pack(dtype, values)


@dataclass(frozen=True)
class Lossy:
    """A lossy tensor's ``Tensor.lossy`` fields, payload and reconstruction."""

    method: str  # Lossy enum name
    payload: bytes  # what takes the place of the raw bytes on the wire
    decoded: bytes  # the logical tensor a reader reconstructs, in the tensor's dtype
    block_size: int = 0
    k: int = 0


#: Section 9.1: a cast writes every NaN as the quiet NaN of its sign, and a
#: reader widens it exactly.
QUIET_NAN_BITS = {"float16": 0x7E00, "bfloat16": 0x7FC0}
WIDE_QUIET_NAN = {"float32": (0x7FC00000, 31, "I"), "float64": (0x7FF8000000000000, 63, "Q")}


def _cast(dtype: str, raw: bytes, target: str) -> tuple[bytes, bytes]:
    fmt = {"float16": FLOAT16, "bfloat16": BFLOAT16}[target]
    xs = unpack_floats(dtype, raw)
    ys = [round_even(x, fmt) for x in xs]
    assert all(math.isinf(y) == math.isinf(x) for x, y in zip(xs, ys, strict=True)), "overflow"
    width = DTYPES[dtype][1]
    payload, decoded = bytearray(), bytearray()
    for i, y in enumerate(ys):
        if math.isnan(y):  # the sign bit of the input, from its top byte
            negative = raw[(i + 1) * width - 1] >> 7
            payload += (QUIET_NAN_BITS[target] | negative << 15).to_bytes(2, "little")
            quiet, sign_bit, _ = WIDE_QUIET_NAN[dtype]
            decoded += (quiet | negative << sign_bit).to_bytes(width, "little")
        else:
            payload += pack_floats(target, [y])
            decoded += pack_floats(dtype, [y])
    return bytes(payload), bytes(decoded)


def _f32_toward_zero(x: float) -> float:
    (word,) = struct.unpack("<I", struct.pack("<f", x))
    return struct.unpack("<f", struct.pack("<I", word - 1))[0]


def _block_int8(dtype: str, raw: bytes, block: int) -> tuple[bytes, bytes]:
    xs = [round_even(x, FLOAT32) for x in unpack_floats(dtype, raw)]
    scales: list[float] = []
    qs: list[int] = []
    out: list[float] = []
    for lo in range(0, len(xs), block):
        part = xs[lo : lo + block]
        a = max(abs(x) for x in part)
        scale = round_even(Fraction(a) / 127, FLOAT32) if a else 0.0
        if a and not scale:
            scale = 2.0**-149  # a / 127 underflows: the smallest float32
        if math.isinf(round_even(127 * Fraction(scale), FLOAT32)):
            scale = _f32_toward_zero(scale)  # 127 * scale must stay finite
        scales.append(scale)
        for x in part:
            q = 0  # an all-zero block
            if scale:
                q = round_half_even(Fraction(round_even(Fraction(x) / Fraction(scale), FLOAT32)))
                q = max(-127, min(127, q))
            qs.append(q)
            out.append(round_even(q * Fraction(scale), FLOAT32))
    if dtype in ("float16", "bfloat16"):
        out = [round_even(v, FLOAT16 if dtype == "float16" else BFLOAT16) for v in out]
    payload = struct.pack(f"<{len(scales)}f", *scales) + struct.pack(f"<{len(qs)}b", *qs)
    return payload, pack_floats(dtype, out)


def _top_k(dtype: str, raw: bytes, k: int) -> tuple[bytes, bytes]:
    xs = unpack_floats(dtype, raw)
    width = DTYPES[dtype][1]

    def rank(i: int) -> tuple[int, float, int]:  # NaN first, then by magnitude, then index
        return (0, 0.0, i) if math.isnan(xs[i]) else (1, -abs(xs[i]), i)

    kept = sorted(sorted(range(len(xs)), key=rank)[:k])
    decoded = bytearray(len(raw))
    for i in kept:
        decoded[i * width : (i + 1) * width] = raw[i * width : (i + 1) * width]
    values = b"".join(raw[i * width : (i + 1) * width] for i in kept)
    return values + struct.pack(f"<{k}I", *kept), bytes(decoded)


def _lossy_reference(
    method: str, dtype: str, raw: bytes, block_size: int, k: int
) -> tuple[bytes, bytes]:
    """(payload, decoded raw bytes) of ``raw`` under a lossy method (short name)."""
    if method in ("float16", "bfloat16"):
        return _cast(dtype, raw, method)
    if method == "int8":
        return _block_int8(dtype, raw, block_size)
    return _top_k(dtype, raw, k)


def lossy(
    inp: Input,
    method: str,
    *,
    block_size: int = 0,
    k: int = 0,
    codec: str = "CODEC_UNSPECIFIED",
    filter: str = "FILTER_UNSPECIFIED",
) -> Input:
    """``inp`` sent with a lossy method (short name, as in LossyConfig)."""
    payload, decoded = _lossy_reference(method, inp.dtype, inp.raw, block_size, k)
    enum = {
        "float16": "LOSSY_CAST_FLOAT16",
        "bfloat16": "LOSSY_CAST_BFLOAT16",
        "int8": "LOSSY_BLOCK_INT8",
        "topk": "LOSSY_TOP_K",
    }[method]
    encoding = Lossy(enum, payload, decoded, block_size, k)
    return replace(inp, lossy=encoding, codec=codec, filter=filter)


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
    lossy: LossyConfig | None = None

    def inputs(self) -> list[Input]:
        return self.build()

    def state_dict(self) -> list[tuple[str, torch.Tensor]]:
        return [(i.name, i.tensor()) for i in self.inputs()]

    def encode(self) -> bytes:
        options = EncodeOptions(
            compression=self.compression,
            level=self.level,
            shuffle=self.shuffle,
            threads=1,
            lossy=self.lossy,
        )
        return encode_tensor_map(self.state_dict(), options, metadata=self.metadata or None)

    def encoder_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "compression": self.compression,
            "level": self.level,
            "shuffle": self.shuffle,
        }
        if self.lossy is not None:  # the LossyConfig fields that matter for the method
            config: dict[str, Any] = {"method": self.lossy.method}
            if self.lossy.method == "int8":
                config["block_size"] = self.lossy.block_size
            if self.lossy.method == "topk":
                config["topk_k"] = self.lossy.topk_k
            options["lossy"] = {**config, "min_elements": self.lossy.min_elements}
        return options


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


def _noise(count: int) -> list[int]:
    # A 32-bit LCG (Numerical Recipes constants), top byte: neither zstd nor LZ4 shrinks it.
    state, values = 12345, []
    for _ in range(count):
        state = (1664525 * state + 1013904223) & 0xFFFFFFFF
        values.append(state >> 24)
    return values


def _incompressible() -> list[Input]:
    return [packed("noise", "uint8", (256,), _noise(256))]


def _lz4() -> list[Input]:
    return [packed("smooth", "float32", (64, 64), _smooth_values(), codec="CODEC_LZ4")]


def _lz4_shuffle() -> list[Input]:
    return [
        packed(
            "smooth",
            "float32",
            (64, 64),
            _smooth_values(),
            codec="CODEC_LZ4",
            filter="FILTER_BYTE_SHUFFLE",
        )
    ]


#: Rows of the lz4_frames tensor: 513 x 256 float32 = 525,312 bytes, one 512 KiB
#: frame and a last frame of 1,024 bytes.
LZ4_FRAMES_ROWS = 513


def _lz4_frames() -> list[Input]:
    # ((i mod 64)^2 + j^2) / 1024: exact in binary32; repeats every 64 rows, so
    # that the vector stays small (about 20 KB of frames).
    values = [((i % 64) ** 2 + j * j) / 1024.0 for i in range(LZ4_FRAMES_ROWS) for j in range(256)]
    return [
        packed(
            "big",
            "float32",
            (LZ4_FRAMES_ROWS, 256),
            values,
            codec="CODEC_LZ4",
            filter="FILTER_BYTE_SHUFFLE",
        ),
        packed("noise", "uint8", (256,), _noise(256)),  # LZ4 cannot shrink it: stored raw
    ]


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


def _mixed_float32(count: int, start: int = 0) -> list[float]:
    """Float32-exact values of many magnitudes (24-bit significands, 2^-8..2^8)."""
    out = []
    for i in range(start, start + count):
        m = (i * 2654435761) % (1 << 24)  # Knuth's multiplicative hash
        out.append((m - (1 << 23)) / 2.0**23 * 2.0 ** ((i % 17) - 8))
    return out


def _ramp(count: int, seed: int) -> list[float]:
    """Small float32-exact values (multiples of 1/8 in [-0.75, 0.75])."""
    return [((i * 7 + seed) % 13 - 6) / 8.0 for i in range(count)]


#: Names chosen so that rule 7 of section 2.3 meets its edge cases; the
#: generator asserts that it does (PADDING_EDGES: the padding field lengths).
_GAP_2 = "gap_2." + "a" * 35  # data 2 bytes short of 64: a field of 66 bytes
_GAP_1 = "gap_1." + "b" * 36  # 1 byte short: a field of 65 bytes
_GROWS = "grows." + "c" * 38  # 2 bytes short, and the padding grows the Tensor's
# length prefix from 1 to 2 bytes: a field of 65 bytes
PADDING_EDGES = {_GAP_2: 66, _GAP_1: 65, _GROWS: 65}


def _padding_edges() -> list[Input]:
    return [
        packed(_GAP_2, "float32", (32,), _ramp(32, 1)),
        packed(_GAP_1, "float32", (32,), _ramp(32, 2)),
        packed(_GROWS, "float32", (4,), _ramp(4, 3)),
    ]


#: NaNs of both signs, quiet and signalling, with and without payloads: a cast
#: writes each as the quiet NaN of its sign (section 9.1).
_NAN32 = [0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0xFFA12345, 0x7FC00001]
_NAN64 = [0x7FF8000000000000, 0xFFF8000000000000, 0x7FF0000000000001, 0xFFF4000000000000]


def _f32_word(x: float) -> int:
    return int.from_bytes(struct.pack("<f", x), "little")


def _f64_word(x: float) -> int:
    return int.from_bytes(struct.pack("<d", x), "little")


def _cast_nans(method: str) -> list[Input]:
    finite32 = [_f32_word(v) for v in (1.0, -2.0, 0.5, -0.0, INF, -INF, 3.0, -0.25, 0.0)]
    finite64 = [_f64_word(v) for v in (1.0, -2.0, 0.5, -0.0)]
    return [
        lossy(from_words("f32", "float32", (16,), _NAN32 + finite32), method),
        lossy(from_words("f64", "float64", (8,), _NAN64 + finite64), method),
    ]


def _topk_ties() -> list[Input]:
    # k = 5 in every tensor. "run": two NaNs, then eleven elements of magnitude
    # 1.0 (the first three are kept: lower indices win); "zeros": three non-zero
    # elements, then +0 and -0 (the first two zeros are kept, bit for bit);
    # "nans": seven NaNs of both signs and several payloads (the first five).
    run = [0.25 * ((i % 3) - 1) for i in range(64)]
    for j, i in enumerate(range(1, 34, 3)):
        run[i] = 1.0 if j % 2 else -1.0
    run_words = [_f32_word(v) for v in run]
    run_words[0], run_words[18] = 0xFFC00000, 0x7FC00123
    # (64 elements each: top-k keeps at most one element in 8.)
    zeros = [0.0, -0.0] * 32
    zeros[5], zeros[11], zeros[14] = 2.0, -0.5, 0.5
    nans = [_f32_word(1.0)] * 64
    for j, i in enumerate((1, 3, 6, 7, 10, 12, 15)):
        nans[i] = _NAN32[j % len(_NAN32)]
    return [
        lossy(from_words("run", "float32", (64,), run_words), "topk", k=5),
        lossy(from_words("zeros", "float32", (64,), [_f32_word(v) for v in zeros]), "topk", k=5),
        lossy(from_words("nans", "float32", (64,), nans), "topk", k=5),
    ]


def _lossy_float16() -> list[Input]:
    special = [
        1.0,
        -0.0,
        INF,
        -INF,
        NAN,  # the quiet NaN: float16 0x7e00
        65504.0,  # float16's largest finite value
        65519.0,  # rounds down to 65504 (65520 would overflow: the encoder refuses it)
        2.0**-14,  # float16's smallest normal
        2.0**-24,  # float16's smallest subnormal
        2.0**-25,  # a tie between 0 and 2^-24: to even, +0
        3 * 2.0**-26,  # rounds up to 2^-24
        1 + 2.0**-11,  # a tie: to even, 1.0
        1 + 3 * 2.0**-11,  # a tie: to even, 1 + 2^-9
        -(1 + 2.0**-11 + 2.0**-23),  # just above a tie: -(1 + 2^-10)
        2.0**-149,  # float32's smallest subnormal: +0
        -(2.0**-126),  # -0
        -1000.0625,  # a tie in [512, 1024): to even, -1000.0
        3 * 2.0**-16,  # a float16 subnormal, exact
    ]
    values = special + _mixed_float32(256 - len(special))
    return [lossy(packed("w", "float32", (16, 16), values), "float16")]


def _lossy_bfloat16() -> list[Input]:
    smooth = [(i * i + j * j) / 64.0 + (i * j % 5) / 1024.0 for i in range(16) for j in range(16)]
    # float64 values that float32 would round to a bfloat16 tie first: rounding
    # them twice (float64 -> float32 -> bfloat16) gives the wrong neighbour.
    traps = [
        1 + 2.0**-8 + 2.0**-30,  # 1 + 2^-7, not 1.0
        -(1 + 2.0**-8 + 2.0**-40),  # -(1 + 2^-7)
        3 + 2.0**-7 + 2.0**-35,  # 3 + 2^-6, not 3.0
        1 + 2.0**-8,  # an exact tie: to even, 1.0
        1e-300,  # below bfloat16's subnormals: +0
        -1e-300,  # -0
        1e30,
        -0.0,
    ]
    f64 = traps + [0.1 * (i - 28) for i in range(64 - len(traps))]
    return [
        lossy(
            packed("smooth", "float32", (16, 16), smooth),
            "bfloat16",
            codec="CODEC_ZSTD",
            filter="FILTER_BYTE_SHUFFLE",
        ),
        lossy(
            packed("f64", "float64", (8, 8), f64),
            "bfloat16",
            codec="CODEC_ZSTD",
            filter="FILTER_BYTE_SHUFFLE",
        ),
    ]


def _lossy_int8() -> list[Input]:
    # Five blocks of 64 (the last one 44): mixed values; zeros (scale +0);
    # subnormals (scale 2^-149, where x / scale exceeds 127 and q is clamped);
    # float32's extremes (the scale steps toward zero so that 127 * scale stays
    # finite); a block whose max |x| is negative.
    w = (
        _mixed_float32(64)
        + [0.0, -0.0] * 32
        + [(i - 32) * 5 * 2.0**-149 for i in range(64)]  # scale 2^-149: q clamped
        + [3.4028234663852886e38, -3.4028234663852886e38]
        + [1e36 * (i - 31) for i in range(62)]
        + [-100.0]
        + [(i % 9) * 2.5 for i in range(43)]
    )
    h = [((i * 37) % 201 - 100) / 16.0 for i in range(256)]
    h[70] = 65504.0
    # More elements than a block, so that every block_size on the wire matters.
    b = [(2 * k - 127) / (32.0 if k < 64 else 64.0) for k in range(128)]  # two scales
    d = [0.1 * (i - 40) for i in range(80)]
    return [
        lossy(packed("w", "float32", (10, 30), w), "int8", block_size=64, codec="CODEC_ZSTD"),
        packed("bias", "float32", (4,), [0.5, -0.25, 0.125, 0.0]),  # below min_elements
        lossy(packed("h", "float16", (4, 64), h), "int8", block_size=64, codec="CODEC_ZSTD"),
        lossy(with_bits("bf", "bfloat16", (128,), b, bfloat16_bits(b)), "int8", block_size=64),
        lossy(packed("d", "float64", (80,), d), "int8", block_size=64),
    ]


def _lossy_topk() -> list[Input]:
    # |x| < 1 everywhere but at 8 indices (a NaN among them: it ranks first).
    delta = [v / 512.0 for v in _mixed_float32(256)]
    for i, v in {
        0: 3.0,
        17: -2.5,
        50: NAN,
        100: 1.5,
        101: -1.25,
        128: -7.0,
        200: 1.0625,
        255: 2.0,
    }.items():
        delta[i] = v
    small = [((i * 29) % 61 - 30) / 64.0 for i in range(128)]  # bfloat16-exact, |x| < 0.5
    for i, v in {
        3: 4.0,
        9: -3.5,
        10: 2.25,
        64: -1.0,
        90: 0.75,
        91: -0.625,
        120: 5.0,
        127: 0.5625,
    }.items():
        small[i] = v
    return [
        lossy(packed("delta", "float32", (16, 16), delta), "topk", k=8),
        lossy(
            with_bits("delta_bf16", "bfloat16", (128,), small, bfloat16_bits(small)), "topk", k=8
        ),
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
    Vector(
        "lossy_float16",
        "A 16x16 float32 cast to float16 (round to nearest even): ties, subnormals, "
        "-0.0, +-inf, NaN, float16's maximum; uncompressed.",
        _lossy_float16,
        lossy=LossyConfig("float16", min_elements=16),
    ),
    Vector(
        "lossy_bfloat16",
        "A 16x16 float32 and an 8x8 float64 cast to bfloat16 (the float64 one without double "
        "rounding); zstd with a byte shuffle of 2-byte elements.",
        _lossy_bfloat16,
        compression="zstd",
        shuffle=True,
        lossy=LossyConfig("bfloat16", min_elements=16),
    ),
    Vector(
        "lossy_int8",
        "Block int8 (64 elements per float32 scale) of float32 (a short last block, zero, "
        "subnormal and extreme blocks), float16, bfloat16 and float64 tensors, with a lossless "
        "bias below min_elements; zstd.",
        _lossy_int8,
        compression="zstd",
        lossy=LossyConfig("int8", block_size=64, min_elements=16),
    ),
    Vector(
        "lossy_topk",
        "Top-8 of a 16x16 float32 delta (a NaN among the kept) and of a bfloat16 one: values, "
        "then ascending uint32 indices; uncompressed.",
        _lossy_topk,
        lossy=LossyConfig("topk", topk_k=8, min_elements=16),
    ),
    Vector(
        "padding_edges",
        "Uncompressed float32 tensors whose data needs the padding fields of section 2.3 "
        "rule 7's edge cases: 2 bytes short of alignment (no field of 2 bytes exists: 66 "
        "bytes), 1 byte short (65 bytes), and a padding that grows the Tensor's length prefix.",
        _padding_edges,
    ),
    Vector(
        "lossy_float16_nans",
        "float32 and float64 tensors holding NaNs of both signs, quiet and signalling, with "
        "payloads, cast to float16: each becomes 0x7e00 or 0xfe00 (section 9.1).",
        lambda: _cast_nans("float16"),
        lossy=LossyConfig("float16", min_elements=1),
    ),
    Vector(
        "lossy_bfloat16_nans",
        "The same tensors cast to bfloat16: each NaN becomes 0x7fc0 or 0xffc0.",
        lambda: _cast_nans("bfloat16"),
        lossy=LossyConfig("bfloat16", min_elements=1),
    ),
    Vector(
        "lossy_topk_ties",
        "Top-5 of float32 tensors where k cuts through ties: a run of equal magnitudes, "
        "zeros of both signs, more NaNs than k; the lower index wins (section 9.1).",
        _topk_ties,
        lossy=LossyConfig("topk", topk_k=5, min_elements=1),
    ),
    Vector(
        "lz4",
        "A 64x64 float32 of a smooth pattern, LZ4 frame (fast mode, level 0), no filter.",
        _lz4,
        compression="lz4",
        level=0,
    ),
    Vector(
        "lz4_shuffle",
        "The same 64x64 float32, byte-shuffled, then LZ4 (level 0).",
        _lz4_shuffle,
        compression="lz4",
        level=0,
        shuffle=True,
    ),
    Vector(
        "lz4_frames",
        "A 513x256 float32 (525,312 bytes), byte-shuffled, then LZ4 (level 0) in two frames: "
        "524,288 and 1,024 bytes of content, cut inside the last byte plane; and 256 bytes of "
        "noise that LZ4 cannot shrink, stored raw.",
        _lz4_frames,
        compression="lz4",
        level=0,
        shuffle=True,
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
        # A lossy tensor's payload takes the place of its raw bytes (section 9.1).
        raw = i.lossy.payload if i.lossy else i.raw
        entry: dict[str, Any] = {
            "name": i.name,
            "dtype": wire_name,
            "shape": list(i.shape),
            "codec": i.codec,
            "filter": i.filter,
            "raw_size": len(raw),
            "crc32c": f"{crc32c_reference(raw):08x}",
            "raw_hex": raw.hex(),
        }
        if i.lossy:
            assert len(i.lossy.decoded) == len(i.raw), f"{i.name}: decoded size"
            entry["lossy"] = {
                "method": i.lossy.method,
                "block_size": i.lossy.block_size,
                "k": i.lossy.k,
                "decoded_hex": i.lossy.decoded.hex(),
                "original_hex": i.raw.hex(),
            }
        tensors.append(entry)
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
    _check_padding_edges(files["padding_edges.bin"])
    refused = _refusal_entries(files)
    envelopes = _message_entries(files)
    streams, stream_refusals = _stream_entries(files)
    manifest = {
        "format": "flwire golden wire vectors",
        "message": "flwire.v1.TensorMap",
        "schema": "proto/flwire/v1/tensor.proto",
        "spec": "docs/wire-format.md",
        "generator": "tests/vectors/generate.py",
        "zstandard_version": zstandard.__version__,
        "libzstd_version": ".".join(str(p) for p in zstandard.ZSTD_VERSION),
        "lz4_version": lz4.__version__,
        "liblz4_version": lz4.library_version_string(),
        "vectors": entries,
        "refusals": refused,
        "messages": envelopes + streams,
        "stream_refusals": stream_refusals,
    }
    files[MANIFEST] = _json_text(manifest).encode("utf-8")
    return files


def _file_entry(files: dict[str, bytes], path: str) -> dict[str, Any]:
    return {
        "path": path,
        "size": len(files[path]),
        "sha256": hashlib.sha256(files[path]).hexdigest(),
    }


def _refusal_entries(files: dict[str, bytes]) -> list[dict[str, Any]]:
    """Write every refusal vector (refusals.py) into ``files``; their manifest entries."""
    entries = []
    for r in refusals.build():
        path = f"{REFUSALS_DIR}/{r.name}.bin"
        files[path] = r.data
        entry: dict[str, Any] = {
            "name": r.name,
            "check": r.check,
            "section": refusals.CHECKS[r.check],
            "description": r.description,
            "message": "flwire.v1.TensorMap",
        }
        if r.limits:
            entry["limits"] = dict(r.limits)
        entries.append({**entry, "file": _file_entry(files, path)})
    return entries


def _weight_entry(compressed: bool) -> Callable[[Any], dict[str, Any]]:
    def entry(w: Any) -> dict[str, Any]:
        raw = w.raw()
        return {
            "name": w.name,
            "dtype": "DTYPE_FLOAT32",
            "shape": list(w.shape),
            "codec": "CODEC_ZSTD" if compressed else "CODEC_UNSPECIFIED",
            "filter": "FILTER_BYTE_SHUFFLE" if compressed else "FILTER_UNSPECIFIED",
            "raw_size": len(raw),
            "crc32c": f"{crc32c_reference(raw):08x}",
            "raw_hex": raw.hex(),
        }

    return entry


def _message_entries(files: dict[str, bytes]) -> list[dict[str, Any]]:
    """Write the envelope and transfer vectors (messages.py) into ``files``."""
    entries = []
    whole: dict[str, tuple[bytes, Any]] = {}
    for vector in message_vectors.ENVELOPES:
        msg = vector.message()
        data = vector.encode()
        whole[vector.name] = (data, msg)
        expected = message_vectors.expectations(
            vector, data, _weight_entry(vector.compression != "none")
        )
        names = {
            "bin": f"{MESSAGES_DIR}/{vector.name}.bin",
            "txtpb": f"{MESSAGES_DIR}/{vector.name}.txtpb",
            "json": f"{MESSAGES_DIR}/{vector.name}.json",
        }
        files[names["bin"]] = data
        header = "# proto-file: flwire/v1/messages.proto\n# proto-message: flwire.v1.Envelope\n\n"
        parsed = messages_pb2.Envelope.FromString(data)
        files[names["txtpb"]] = (header + text_format.MessageToString(parsed)).encode("utf-8")
        files[names["json"]] = _json_text(expected).encode("utf-8")
        entries.append(
            {
                "name": vector.name,
                "description": vector.description,
                "message": "flwire.v1.Envelope",
                "files": {kind: _file_entry(files, path) for kind, path in names.items()},
            }
        )
    data, msg = whole[message_vectors.TRANSFER_OF]
    parts, doc = message_vectors.transfer(data, message_vectors.message_headers(msg))
    names = {"json": f"{MESSAGES_DIR}/transfer_parts.json"}
    for k, part in enumerate(parts):
        names[f"part{k}"] = f"{MESSAGES_DIR}/transfer_parts.{k}.bin"
        files[names[f"part{k}"]] = part
        doc["parts"][k]["path"] = names[f"part{k}"]
    doc["whole"] = f"{MESSAGES_DIR}/{doc['whole']}"
    files[names["json"]] = _json_text(doc).encode("utf-8")
    entries.append(
        {
            "name": "transfer_parts",
            "description": doc["description"],
            "message": "flwire.v1.TransferPart",
            "files": {kind: _file_entry(files, path) for kind, path in names.items()},
        }
    )
    return entries


def _stream_entries(files: dict[str, bytes]) -> tuple[list[Any], list[Any]]:
    """Write the streamed-transfer vectors and the stream refusals (streams.py)
    into ``files``; their manifest entries."""
    entries = []
    valid: dict[str, list[bytes]] = {}
    paths: dict[str, list[str]] = {}
    for vector in stream_vectors.VECTORS:
        parts = vector.parts()
        doc = stream_vectors.expectations(vector, parts, crc32c_reference, _lossy_reference)
        names = {"json": f"{MESSAGES_DIR}/{vector.name}.json"}
        for k, part in enumerate(parts):
            names[f"part{k}"] = f"{MESSAGES_DIR}/{vector.name}.{k}.bin"
            files[names[f"part{k}"]] = part
            doc["parts"][k]["path"] = names[f"part{k}"]
        files[names["json"]] = _json_text(doc).encode("utf-8")
        valid[vector.name] = parts
        paths[vector.name] = [names[f"part{k}"] for k in range(len(parts))]
        entries.append(
            {
                "name": vector.name,
                "description": vector.description,
                "message": "flwire.v1.StreamPart",
                "files": {kind: _file_entry(files, path) for kind, path in names.items()},
            }
        )
    public = stream_vectors.golden.signing_key().public_key().public_bytes_raw().hex()
    refused = []
    for case in stream_vectors.build_refusals(valid, paths, crc32c_reference):
        listed = []
        for k, part in enumerate(case.parts):
            if isinstance(part, bytes):
                path = f"{STREAM_REFUSALS_DIR}/{case.name}.{k}.bin"
                files[path] = part
                part = path
            listed.append(_file_entry(files, part))
        entry: dict[str, Any] = {
            "name": case.name,
            "check": case.check,
            "section": "14.3" if case.check in stream_vectors.VERIFY_REASONS else "14.5",
            "description": case.description,
            "message": "flwire.v1.StreamPart",
        }
        if case.trust:
            entry["trust"] = {key_id: public for key_id in case.trust}
        refused.append({**entry, "parts": listed})
    return entries, refused


def _check_padding_edges(data: bytes) -> None:
    """The padding_edges vector meets the edge cases it is named for."""
    msg = tensor_pb2.TensorMap.FromString(data)
    got = {}
    for t in msg.tensors:
        n = len(t.padding)
        got[t.name] = 1 + len(_varint_bytes(n)) + n if n else 0
    assert got == PADDING_EDGES, f"padding_edges: padding fields {got}, meant {PADDING_EDGES}"


def _varint_bytes(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


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
        lossy = (
            (tensor_pb2.Lossy.Name(t.lossy.method), t.lossy.block_size, t.lossy.k)
            if t.HasField("lossy")
            else None
        )
        want_lossy = e.get("lossy")
        if want_lossy is not None:
            want_lossy = tuple(want_lossy[k] for k in ("method", "block_size", "k"))
        assert lossy == want_lossy, f"{expected['name']}: {t.name} lossy {lossy} != {want_lossy}"
    assert dict(msg.metadata) == expected["metadata"], expected["name"]


#: Directories holding nothing but generated files.
GENERATED_DIRS = (REFUSALS_DIR, MESSAGES_DIR, STREAM_REFUSALS_DIR)


def _unlisted(out: Path, files: dict[str, bytes]) -> list[str]:
    """Generated files on disk that the generator no longer writes."""
    found = []
    for directory in GENERATED_DIRS:
        if (out / directory).is_dir():
            found += [f"{directory}/{p.name}" for p in sorted((out / directory).iterdir())]
    return [name for name in found if name not in files]


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
        stale += _unlisted(args.out, files)
        for name in stale:
            print(f"would change: {name}", file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (args.out / name).parent.mkdir(parents=True, exist_ok=True)
        (args.out / name).write_bytes(content)
    for name in _unlisted(args.out, files):  # a vector that was removed or renamed
        (args.out / name).unlink()
    print(f"wrote {len(files)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
