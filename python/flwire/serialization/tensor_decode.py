"""The tensor decoder: walks TensorMap bytes, validating every declared size
against ``DecodeLimits`` and the input's length, into ``TensorRecord``s whose
data are views on the input (``read_tensor_map``, returning a
``TensorMapView``); then turns records into torch tensors or numpy arrays
(``decode_tensor_map``): views on the input when stored uncompressed, else one
fresh buffer per tensor that its zstd frames are decompressed into in parallel,
with the byte shuffle undone, the CRC checked and lossy payloads reconstructed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from flwire.exceptions import ChecksumMismatchError, PayloadTooLargeError, SerializationException
from flwire.serialization import _schema as s
from flwire.serialization import compression as z
from flwire.serialization import dtypes
from flwire.serialization import lossy as _lossy
from flwire.serialization._wire import (
    I32,
    LEN,
    VARINT,
    as_signed64,
    byte_view,
    decode_packed_varints,
    decode_utf8,
    expect_wire_type,
    iter_fields,
)
from flwire.serialization.tensor_types import DEFAULT_LIMITS, DecodeLimits, TensorRecord


@dataclass
class TensorMapView:
    """A parsed TensorMap whose tensors are not decoded yet."""

    records: list[TensorRecord]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def raw_bytes(self) -> int:
        return sum(r.raw_size for r in self.records)

    def to_torch(
        self, *, verify_checksum: bool = True, threads: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Decode every tensor to torch (views on the input where stored uncompressed)."""
        return _decode_all(self.records, "torch", verify_checksum, threads)

    def to_numpy(
        self, *, verify_checksum: bool = True, threads: int | None = None
    ) -> dict[str, np.ndarray]:
        """Decode every tensor to numpy (read-only views where stored uncompressed)."""
        return _decode_all(self.records, "numpy", verify_checksum, threads)


def _parse_tensor(
    buf: memoryview, start: int, end: int, index: int, limits: DecodeLimits
) -> TensorRecord:
    what = f"tensor #{index}"
    name = ""
    dtype = codec = filt = raw_size = crc = 0
    shape: list[int] = []
    data = buf[0:0]
    lossy_fields: dict[int, int] | None = None  # LossyEncoding field number -> value
    for f in iter_fields(buf, start, end, what):
        n = f.number
        if n == s.T_NAME:
            expect_wire_type(f, LEN, what)
            name = decode_utf8(buf, f.start, f.end, f"name of {what}")
            what = f"tensor {name!r}"
        elif n == s.T_DTYPE:
            expect_wire_type(f, VARINT, what)
            dtype = f.value
        elif n == s.T_SHAPE:
            if f.wire_type == LEN:  # packed (what writers emit)
                shape.extend(decode_packed_varints(buf, f.start, f.end, f"shape of {what}"))
            else:  # unpacked repeated, which parsers must accept too
                expect_wire_type(f, VARINT, what)
                shape.append(f.value)
        elif n == s.T_CODEC:
            expect_wire_type(f, VARINT, what)
            codec = f.value
        elif n == s.T_FILTER:
            expect_wire_type(f, VARINT, what)
            filt = f.value
        elif n == s.T_RAW_SIZE:
            expect_wire_type(f, VARINT, what)
            raw_size = f.value
        elif n == s.T_CRC32C:
            expect_wire_type(f, I32, what)
            crc = f.value
        elif n == s.T_DATA:
            expect_wire_type(f, LEN, what)
            data = buf[f.start : f.end]
        elif n == s.T_LOSSY:
            expect_wire_type(f, LEN, what)
            # A message field seen twice merges, field by field, as protobuf does.
            lossy_fields = _parse_lossy(buf, f.start, f.end, what, lossy_fields or {})
        # unknown fields are skipped, as protobuf does
    info = dtypes.from_wire(dtype, name)
    dims = tuple(as_signed64(d) for d in shape)
    if len(dims) > limits.max_rank:
        raise SerializationException(
            f"{what} has rank {len(dims)}, above the limit {limits.max_rank}"
        )
    if any(d < 0 for d in dims):
        raise SerializationException(f"{what} has a negative dimension in shape {list(dims)}")
    count = 1
    span = info.itemsize  # bytes spanned if zero dimensions were one: must fit in int64
    for d in dims:
        count *= d
        span *= max(d, 1)
    expected = count * info.itemsize
    lossy = _lossy_params(lossy_fields)
    if lossy is not None:
        if expected > limits.max_tensor_bytes:
            raise PayloadTooLargeError(
                f"{what} decodes to {expected} bytes, above the limit of "
                f"{limits.max_tensor_bytes} (raise DecodeLimits.max_tensor_bytes if you "
                "expect tensors this large)"
            )
        expected = _lossy.payload_size(info, count, lossy, what)
        if filt != s.FILTER_NONE and not _lossy.filter_allowed(lossy.method):
            raise SerializationException(
                f"{what}: a {lossy.name} lossy payload must not be filtered "
                f"(filter is {s.FILTER_NAMES.get(filt, filt)})"
            )
        if expected != raw_size:
            raise SerializationException(
                f"{what}: the {lossy.describe()} lossy payload of shape {list(dims)} of "
                f"{info.name} takes {expected} bytes, but raw_size says {raw_size}"
            )
    if expected != raw_size:
        raise SerializationException(
            f"{what}: shape {list(dims)} of {info.name} needs {expected} bytes, "
            f"but raw_size says {raw_size}"
        )
    if raw_size > limits.max_tensor_bytes:
        raise PayloadTooLargeError(
            f"{what} declares {raw_size} bytes, above the limit of {limits.max_tensor_bytes} "
            "(raise DecodeLimits.max_tensor_bytes if you expect tensors this large)"
        )
    if span >= 1 << 63:
        raise SerializationException(
            f"{what} has shape {list(dims)}, whose strides overflow 64 bits"
        )
    if codec not in s.CODEC_NAMES:
        raise SerializationException(f"{what} uses unknown codec {codec}; upgrade flwire")
    if filt not in s.FILTER_NAMES:
        raise SerializationException(f"{what} uses unknown filter {filt}; upgrade flwire")
    if codec == s.CODEC_NONE and len(data) != raw_size:
        raise SerializationException(
            f"{what} is stored uncompressed with {len(data)} bytes of data, "
            f"but raw_size says {raw_size}"
        )
    frames: tuple[z.Frame, ...] = ()
    if codec == s.CODEC_ZSTD:
        frames = tuple(z.zstd_frames(data, raw_size, name))
    if raw_size == 0 and crc != 0:
        raise SerializationException(
            f"{what} is empty but records CRC-32C {crc:#010x} (the CRC of no bytes is 0)"
        )
    return TensorRecord(name, info, dims, codec, filt, raw_size, crc, data, frames, lossy)


def _parse_lossy(
    buf: memoryview, start: int, end: int, what: str, values: dict[int, int]
) -> dict[int, int]:
    """The fields of one LossyEncoding message, merged into ``values``."""
    for e in iter_fields(buf, start, end, f"lossy encoding of {what}"):
        if e.number in (s.L_METHOD, s.L_BLOCK_SIZE, s.L_K):
            expect_wire_type(e, VARINT, f"lossy encoding of {what}")
            # method is an int32 enum and block_size a uint32: protobuf keeps the
            # low 32 bits of a longer varint.
            values[e.number] = e.value if e.number == s.L_K else e.value & 0xFFFFFFFF
    return values


def _lossy_params(values: dict[int, int] | None) -> _lossy.LossyParams | None:
    if not values or values.get(s.L_METHOD, 0) == s.LOSSY_NONE:
        return None  # absent, or LOSSY_UNSPECIFIED: a lossless tensor
    return _lossy.LossyParams(
        values[s.L_METHOD], values.get(s.L_BLOCK_SIZE, 0), values.get(s.L_K, 0)
    )


def read_tensor_map(data: Any, *, limits: DecodeLimits | None = None) -> TensorMapView:
    """Parse and validate TensorMap bytes without decoding any tensor data.

    Checks every declared size against ``limits`` and the input's length; the
    returned records' ``data`` are views on ``data``.
    """
    limits = limits or DEFAULT_LIMITS
    buf = byte_view(data, "TensorMap")
    records: list[TensorRecord] = []
    metadata: dict[str, str] = {}
    total = 0
    for f in iter_fields(buf, 0, len(buf), "TensorMap"):
        if f.number == s.M_TENSORS:
            expect_wire_type(f, LEN, "TensorMap")
            if len(records) >= limits.max_tensors:
                raise PayloadTooLargeError(
                    f"TensorMap holds more than {limits.max_tensors} tensors"
                )
            rec = _parse_tensor(buf, f.start, f.end, len(records), limits)
            total += rec.decoded_size
            if total > limits.max_total_bytes:
                raise PayloadTooLargeError(
                    f"TensorMap declares more than {limits.max_total_bytes} raw bytes in all "
                    "(raise DecodeLimits.max_total_bytes if you expect a model this large)"
                )
            records.append(rec)
        elif f.number == s.M_METADATA:
            expect_wire_type(f, LEN, "TensorMap")
            key = value = ""
            for e in iter_fields(buf, f.start, f.end, "TensorMap metadata entry"):
                if e.number in (s.E_KEY, s.E_VALUE):
                    expect_wire_type(e, LEN, "TensorMap metadata entry")
                    text = decode_utf8(buf, e.start, e.end, "TensorMap metadata")
                    if e.number == s.E_KEY:
                        key = text
                    else:
                        value = text
            metadata[key] = value
    names = {r.name for r in records}
    if len(names) != len(records):
        raise SerializationException("TensorMap holds two tensors with the same name")
    return TensorMapView(records, metadata)


def _inflate_frame(rec: TensorRecord, frame: z.Frame, out: np.ndarray) -> None:
    """Decompress one frame of ``rec`` into its place in ``out`` (the raw bytes),
    undoing the byte shuffle on the way."""
    data = rec.data[frame.start : frame.end]
    if rec.filter == s.FILTER_BYTE_SHUFFLE and rec.dtype.itemsize > 1:
        tmp = z.scratch(frame.size)
        z.zstd_decompress_into(data, tmp, rec.name)
        z.unshuffle_slice_into(tmp, out, rec.dtype.itemsize, frame.offset)
    else:
        z.zstd_decompress_into(data, out[frame.offset : frame.offset + frame.size], rec.name)


def _raw_bytes(rec: TensorRecord, inflated: np.ndarray | None, verify: bool) -> tuple[Any, bool]:
    """The tensor's raw bytes as a uint8 array and whether it is a view on the
    input; ``inflated`` holds them already for a compressed tensor."""
    if inflated is not None:
        raw, zero_copy = inflated, False
    elif rec.filter == s.FILTER_BYTE_SHUFFLE and rec.dtype.itemsize > 1:
        raw, zero_copy = np.empty(rec.raw_size, dtype=np.uint8), False
        z.unshuffle_slice_into(np.frombuffer(rec.data, dtype=np.uint8), raw, rec.dtype.itemsize, 0)
    else:
        raw = np.frombuffer(rec.data, dtype=np.uint8) if rec.raw_size else np.empty(0, np.uint8)
        zero_copy = True
        if raw.ctypes.data % rec.dtype.itemsize:
            # Misaligned elements break vectorized kernels: one aligned copy.
            raw = raw.copy()
            zero_copy = False
    if verify and rec.raw_size:
        actual = z.crc32c(raw)
        if actual != rec.crc32c:
            raise ChecksumMismatchError(
                f"tensor {rec.name!r}: CRC-32C of the decoded bytes is {actual:#010x}, "
                f"the sender recorded {rec.crc32c:#010x} (data corrupted in transit?)"
            )
    if rec.dtype.wire == dtypes.pb.DTYPE_BOOL and rec.raw_size and int(raw.max()) > 1:
        raise SerializationException(
            f"tensor {rec.name!r}: bool tensor holds bytes other than 0 and 1"
        )
    return raw, zero_copy


def _to_torch(rec: TensorRecord, raw: np.ndarray, zero_copy: bool) -> torch.Tensor:
    torch_dtype = rec.dtype.torch_dtype
    if torch_dtype is None:  # pragma: no cover - every wire dtype exists in supported torch
        raise SerializationException(f"tensor {rec.name!r}: this torch has no {rec.dtype.name}")
    if rec.raw_size == 0:
        return torch.empty(rec.shape, dtype=torch_dtype)
    with warnings.catch_warnings():
        # Views on a read-only input (bytes) are what zero-copy means; torch warns about it.
        warnings.simplefilter("ignore", UserWarning)
        flat = torch.frombuffer(raw, dtype=torch.uint8) if zero_copy else torch.from_numpy(raw)
    return flat.view(torch_dtype).reshape(rec.shape)


def _to_numpy(rec: TensorRecord, raw: np.ndarray) -> np.ndarray:
    np_dtype = rec.dtype.numpy_dtype
    if np_dtype is None:
        raise SerializationException(
            f"tensor {rec.name!r} has dtype {rec.dtype.name}, which numpy cannot represent; "
            "decode to torch instead, or install ml_dtypes for bfloat16/float8"
        )
    return raw.view(np_dtype).reshape(rec.shape)


def _payload_record(rec: TensorRecord) -> TensorRecord:
    """A lossy tensor's payload as a flat tensor of its element type (what its
    filter works on); a lossless record as it is."""
    if rec.lossy is None:
        return rec
    element = _lossy.element_dtype(rec.lossy.method)
    return replace(rec, dtype=element, shape=(rec.raw_size // element.itemsize,), lossy=None)


def _reconstruct(rec: TensorRecord, payload: np.ndarray) -> tuple[TensorRecord, np.ndarray, bool]:
    """The logical record (raw_size: the decoded size) and raw bytes of a lossy tensor."""
    assert rec.lossy is not None
    raw = _lossy.decode(rec.name, rec.dtype, rec.numel, rec.lossy, payload)
    return replace(rec, raw_size=raw.nbytes), raw, False


def _decode_all(
    records: list[TensorRecord], target: str, verify: bool, threads: int | None
) -> dict[str, Any]:
    # Lossy tensors: the payload goes through the usual path as a tensor of the
    # payload's element type, and is reconstructed in finish().
    records, logical = [_payload_record(r) for r in records], records
    # First every zstd frame, of every tensor, in parallel into its tensor's buffer;
    # then per tensor the checks and the wrapping.
    inflated = [
        np.empty(r.raw_size, dtype=np.uint8) if r.codec == s.CODEC_ZSTD else None for r in records
    ]
    frames = [(i, f) for i, r in enumerate(records) for f in r.frames]

    def inflate(j: int) -> None:
        i, frame = frames[j]
        out = inflated[i]
        assert out is not None
        _inflate_frame(records[i], frame, out)

    z.run_parallel(inflate, [f.size for _, f in frames], threads)

    def finish(i: int) -> Any:
        rec = records[i]
        raw, zero_copy = _raw_bytes(rec, inflated[i], verify)
        if logical[i].lossy is not None:
            rec, raw, zero_copy = _reconstruct(logical[i], raw)
        return _to_torch(rec, raw, zero_copy) if target == "torch" else _to_numpy(rec, raw)

    values = z.run_parallel(finish, [r.raw_size // 16 for r in records], threads)
    return {rec.name: value for rec, value in zip(records, values, strict=True)}


def decode_tensor_map(
    data: Any,
    *,
    as_numpy: bool = False,
    verify_checksum: bool = True,
    limits: DecodeLimits | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Decode TensorMap bytes to a dict of torch tensors (or numpy arrays).

    Tensors stored uncompressed are views on ``data`` (zero-copy): keep ``data``
    alive and unmodified while you use them, and ``.clone()`` one before
    modifying it in place when ``data`` is immutable ``bytes``. Every other
    tensor gets one fresh allocation. Raises SerializationException (or a
    subclass) naming the problem for any malformed input.
    """
    return _decode_all(
        read_tensor_map(data, limits=limits).records,
        "numpy" if as_numpy else "torch",
        verify_checksum,
        threads,
    )
