"""The compiled tensor codec: state dicts <-> TensorMap protobuf bytes.

Encoding writes the protobuf wire format of ``flwire.v1.TensorMap`` directly:
small headers are built per tensor and the tensor bytes (views on the source
tensors, or their compressed frames: one zstd frame per 512 KiB of a tensor, so
that threads share even a single large tensor) are joined into one output
buffer, each byte copied once. Decoding walks the wire format and returns
tensors that are views on the input buffer when a tensor is stored uncompressed
(zero-copy), and otherwise allocates exactly one output tensor and decompresses
its frames, in parallel, straight into it.

The bytes are identical to what the generated classes produce for the same
TensorMap, and either side parses the other's output (see tests/property).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch

from flwire.exceptions import ChecksumMismatchError, PayloadTooLargeError, SerializationException
from flwire.serialization import _schema as s
from flwire.serialization import compression as z
from flwire.serialization import dtypes
from flwire.serialization import lossy as _lossy
from flwire.serialization._output import FilledBytes
from flwire.serialization._wire import (
    I32,
    LEN,
    VARINT,
    as_signed64,
    byte_view,
    decode_packed_varints,
    decode_utf8,
    encode_varint,
    expect_wire_type,
    field_key,
    iter_fields,
    len_field,
    padding_field,
    utf8,
)

if sys.byteorder != "little":  # pragma: no cover - no big-endian CI machine
    raise ImportError("flwire's tensor codec needs a little-endian host")

Compression = Literal["zstd", "none"]
TensorLike = Any  # torch.Tensor or numpy.ndarray

GIB = 1 << 30
#: Stock protobuf parsers refuse messages of 2 GiB and more.
MAX_MESSAGE_BYTES = 2 * GIB
_DTYPE_KEY = field_key(s.T_DTYPE, VARINT)
_CODEC_KEY = field_key(s.T_CODEC, VARINT)
_FILTER_KEY = field_key(s.T_FILTER, VARINT)
_RAW_SIZE_KEY = field_key(s.T_RAW_SIZE, VARINT)
_CRC_KEY = field_key(s.T_CRC32C, I32)


@dataclass(frozen=True)
class DecodeLimits:
    """Caps a decoder checks before it allocates (defaults: 4 GiB)."""

    max_tensor_bytes: int = 4 * GIB
    max_total_bytes: int = 4 * GIB
    max_tensors: int = 1_000_000
    max_rank: int = 64


DEFAULT_LIMITS = DecodeLimits()


@dataclass(frozen=True)
class TensorRecord:
    """One tensor as it sits on the wire; ``data`` is a view on the input buffer."""

    name: str
    dtype: dtypes.DtypeInfo
    shape: tuple[int, ...]
    codec: int
    filter: int
    raw_size: int
    crc32c: int
    data: memoryview
    #: The zstd frames of ``data`` (CODEC_ZSTD only), checked against raw_size.
    frames: tuple[z.Frame, ...] = ()
    #: Set for a lossy-encoded tensor (``Tensor.lossy``): ``dtype`` and ``shape``
    #: are then the logical tensor's, and ``raw_size``/``crc32c`` the payload's.
    lossy: _lossy.LossyParams | None = None

    @property
    def numel(self) -> int:
        count = 1
        for d in self.shape:
            count *= d
        return count

    @property
    def decoded_size(self) -> int:
        """Bytes of the decoded tensor (``raw_size`` unless lossy)."""
        return self.numel * self.dtype.itemsize

    @property
    def lossy_name(self) -> str:
        """``float16``, ``bfloat16``, ``int8``, ``topk``, or ``""`` when lossless."""
        return self.lossy.name if self.lossy else ""

    @property
    def codec_name(self) -> str:
        return s.CODEC_NAMES.get(self.codec, str(self.codec))

    @property
    def filter_name(self) -> str:
        return s.FILTER_NAMES.get(self.filter, str(self.filter))


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


# ----------------------------------------------------------------------------- encoding


@dataclass
class _Source:
    name: str
    dtype: dtypes.DtypeInfo  # of the elements of ``raw`` (the lossy payload's when lossy)
    shape: tuple[int, ...]
    raw: np.ndarray  # uint8, C-contiguous, a view on the source tensor where possible
    lossy: _LossySource | None = None


@dataclass(frozen=True)
class _LossySource:
    """A lossy tensor's logical dtype and the bytes of its ``Tensor.lossy`` field."""

    dtype: dtypes.DtypeInfo
    params: _lossy.LossyParams
    field: bytes  # key, length and the LossyEncoding message, written after ``data``


def _lossy_field(params: _lossy.LossyParams) -> bytes:
    body = field_key(s.L_METHOD, VARINT) + encode_varint(params.method)
    if params.block_size:
        body += field_key(s.L_BLOCK_SIZE, VARINT) + encode_varint(params.block_size)
    if params.k:
        body += field_key(s.L_K, VARINT) + encode_varint(params.k)
    return len_field(s.T_LOSSY, len(body)) + body


def _lossy_source(src: _Source, config: _lossy.LossyConfig | None) -> _Source:
    """The source whose raw bytes are its lossy payload, when ``config`` applies
    to it (the transform happens here, before CRC, filter and codec)."""
    if config is None:
        return src
    encoded = _lossy.encode(src.name, src.dtype, src.raw, config)
    if encoded is None:
        return src
    params, payload = encoded
    element = _lossy.element_dtype(params.method)
    info = _LossySource(src.dtype, params, _lossy_field(params))
    return _Source(src.name, element, src.shape, payload, info)


def _trailer(src: _Source) -> bytes:
    """The Tensor fields after ``data`` (field-number order): ``lossy``."""
    return src.lossy.field if src.lossy else b""


def _source_from_torch(name: str, tensor: torch.Tensor) -> _Source:
    if tensor.layout != torch.strided:
        raise SerializationException(
            f"tensor {name!r} has layout {tensor.layout}; flwire carries dense tensors "
            "(call .to_dense() first)"
        )
    if tensor.is_quantized:
        raise SerializationException(
            f"tensor {name!r} is quantized ({tensor.dtype}); call .dequantize() first"
        )
    if tensor.device.type == "meta":
        raise SerializationException(f"tensor {name!r} is on the meta device and has no data")
    info = dtypes.from_torch(tensor.dtype, name)
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.resolve_conj().resolve_neg().contiguous()
    flat = t.reshape(-1)
    if flat.numel() and flat.stride(0) != 1:  # a one-element view can keep an odd stride
        flat = flat.clone(memory_format=torch.contiguous_format)
    raw = flat.view(torch.uint8).numpy()
    return _Source(name, info, tuple(t.shape), raw)


def _source_from_numpy(name: str, array: np.ndarray) -> _Source:
    info = dtypes.from_numpy(array.dtype, name)
    if info.itemsize > 1 and array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    shape = tuple(array.shape)  # ascontiguousarray turns a 0-d array into 1-d
    raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    return _Source(name, info, shape, raw)


def _source(name: Any, value: Any) -> _Source:
    if not isinstance(name, str):
        raise SerializationException(f"state dict keys must be str, got {type(name).__name__}")
    if isinstance(value, torch.Tensor):
        return _source_from_torch(name, value)
    if isinstance(value, (np.ndarray, np.generic)):
        return _source_from_numpy(name, np.asarray(value))
    raise SerializationException(
        f"value of {name!r} is a {type(value).__name__}; flwire encodes torch tensors and "
        "numpy arrays only (wrap scalars with torch.tensor(...))"
    )


def _tensor_header(
    src: _Source, codec: int, filt: int, crc: int, data_len: int, start: int
) -> bytes:
    """Every field of the Tensor message up to the data payload, plus the map's
    key and length prefix for the Tensor itself. Proto3 defaults (0, "", []) are
    omitted, in field-number order, exactly as the generated serializer writes
    them. Uncompressed data is padded to land ALIGNMENT-aligned from ``start``,
    the offset of this tensor in the map."""
    parts = []
    if src.name:
        name = utf8(src.name, f"tensor name {src.name!r}")
        parts += [len_field(s.T_NAME, len(name)), name]
    parts += [_DTYPE_KEY, encode_varint((src.lossy.dtype if src.lossy else src.dtype).wire)]
    if src.shape:
        packed = b"".join(encode_varint(d) for d in src.shape)
        parts += [len_field(s.T_SHAPE, len(packed)), packed]
    if codec:
        parts += [_CODEC_KEY, encode_varint(codec)]
    if filt:
        parts += [_FILTER_KEY, encode_varint(filt)]
    raw_size = src.raw.nbytes
    if raw_size:
        parts += [_RAW_SIZE_KEY, encode_varint(raw_size)]
    if crc:
        parts += [_CRC_KEY, crc.to_bytes(4, "little")]
    fields = b"".join(parts)
    data_key = len_field(s.T_DATA, data_len) if data_len else b""
    tail = len(_trailer(src))  # written by the caller after the data

    def data_offset(pad_len: int) -> int:
        body_len = len(fields) + pad_len + len(data_key) + data_len + tail
        return start + len(len_field(s.M_TENSORS, body_len)) + body_len - data_len - tail

    pad = padding_field(s.T_PADDING, data_offset) if data_len and codec == s.CODEC_NONE else b""
    body_len = len(fields) + len(pad) + len(data_key) + data_len + tail
    return len_field(s.M_TENSORS, body_len) + fields + pad + data_key


@dataclass(frozen=True)
class _Job:
    """A share of one tensor's encoding work: its filtered bytes ``[start, end)``
    become one zstd frame; the job with ``start == 0`` also checks the tensor and
    computes its CRC."""

    index: int
    start: int
    end: int
    last: bool


def _jobs(sources: list[_Source], compress: bool) -> list[_Job]:
    jobs = []
    for i, src in enumerate(sources):
        n = src.raw.nbytes
        bounds = z.frame_bounds(n) if compress and n else [(0, n)]
        jobs += [_Job(i, a, b, k == len(bounds) - 1) for k, (a, b) in enumerate(bounds)]
    return jobs


def _shuffles(src: _Source, shuffle: bool) -> bool:
    return shuffle and src.dtype.itemsize > 1


def _run_job(
    src: _Source, job: _Job, compress: bool, level: int, shuffle: bool
) -> tuple[int | None, bytes | None]:
    """(CRC of the whole tensor if this is its first job, else None; the frame
    of this job's bytes, or None when not compressing)."""
    raw = src.raw
    crc = None
    if job.start == 0:
        if src.dtype.wire == dtypes.pb.DTYPE_BOOL and raw.nbytes and int(raw.max()) > 1:
            raise SerializationException(
                f"bool tensor {src.name!r} holds bytes other than 0 and 1 (made with .view(bool)?)"
            )
        crc = z.crc32c(raw) if raw.nbytes else 0
    if not (compress and raw.nbytes):
        return crc, None
    if _shuffles(src, shuffle):
        filtered = z.shuffled_slice(raw, src.dtype.itemsize, job.start, job.end)
    else:
        filtered = raw[job.start : job.end]
    return crc, z.zstd_compress(filtered, level)


def _metadata_bytes(metadata: Mapping[str, str]) -> list[bytes]:
    out = []
    # Deterministic order, the one Python's SerializeToString(deterministic=True)
    # uses: bytewise, a key before its own prefixes. UTF-8 never holds 0xFF.
    for key in sorted(metadata, key=lambda k: str(k).encode("utf-8", "surrogatepass") + b"\xff"):
        value = metadata[key]
        if not isinstance(key, str) or not isinstance(value, str):
            raise SerializationException("TensorMap metadata keys and values must be str")
        k, v = utf8(key, f"metadata key {key!r}"), utf8(value, f"metadata value of {key!r}")
        # Map entries carry key and value even when empty, as protobuf writes them.
        entry = len_field(s.E_KEY, len(k)) + k + len_field(s.E_VALUE, len(v)) + v
        out.append(len_field(s.M_METADATA, len(entry)) + entry)
    return out


class _Assembler:
    """Turns the jobs' results, taken in order, into the TensorMap's pieces: a
    tensor's header once its last frame is in, then its data, passed to ``sink``."""

    def __init__(self, sources: list[_Source], shuffle: bool, sink: Callable[[Any], Any]) -> None:
        self.sources, self.shuffle, self.sink = sources, shuffle, sink
        self.offset = self.crc = 0
        self.frames: list[bytes] = []

    def add(self, result: tuple[_Job, int | None, bytes | None]) -> None:
        job, crc, frame = result
        if crc is not None:
            self.crc, self.frames = crc, []
        if frame is not None:
            self.frames.append(frame)
        if job.last:
            self._emit(self.sources[job.index])

    def _emit(self, src: _Source) -> None:
        frames, self.frames = self.frames, []
        codec, filt = s.CODEC_NONE, s.FILTER_NONE
        data: list[Any] = [src.raw]
        if frames and sum(len(f) for f in frames) < src.raw.nbytes:
            # else keep it raw: compression did not pay
            codec = s.CODEC_ZSTD
            filt = s.FILTER_BYTE_SHUFFLE if _shuffles(src, self.shuffle) else s.FILTER_NONE
            data = frames
        data_len = sum(len(d) for d in data)
        header = _tensor_header(src, codec, filt, self.crc, data_len, self.offset)
        self.offset += len(header) + data_len + len(_trailer(src))
        if self.offset >= MAX_MESSAGE_BYTES:
            raise SerializationException(
                f"the encoded TensorMap would be over {self.offset} bytes; protobuf parsers "
                "refuse messages of 2 GiB and more. Split the state dict "
                "(flwire.serialization.split_state_dict) and send the parts as separate maps"
            )
        self.sink(header)
        for piece in data:
            if len(piece):
                self.sink(piece)
        if src.lossy:
            self.sink(src.lossy.field)


def _prepare(
    tensors: Mapping[str, TensorLike] | Iterable[tuple[str, TensorLike]],
    compression: Compression,
    lossy: _lossy.LossyConfig | None,
) -> list[_Source]:
    if compression not in ("zstd", "none"):
        raise SerializationException(f"unknown compression {compression!r}; use 'zstd' or 'none'")
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    sources = [_lossy_source(_source(k, v), lossy) for k, v in items]
    names = [src.name for src in sources]
    if len(set(names)) != len(names):
        raise SerializationException("duplicate tensor names in the state dict")
    return sources


def _max_encoded_size(sources: list[_Source], metadata: list[bytes]) -> int:
    """An upper bound of the TensorMap's size: stored data is never larger than
    the raw bytes, and a tensor's other fields (keys, varints, up to 64 bytes of
    padding) take at most 256 bytes plus its name and 10 per dimension."""
    return sum(
        src.raw.nbytes + len(src.name) * 4 + 10 * len(src.shape) + 256 + len(_trailer(src))
        for src in sources
    ) + sum(len(m) for m in metadata)


def _encode(
    sink: Callable[[Any], Any],
    sources: list[_Source],
    compression: Compression,
    level: int,
    shuffle: bool,
    metadata: list[bytes],
    threads: int | None,
) -> None:
    """Pass the buffers whose concatenation is the TensorMap to ``sink``, in
    order, as the (parallel) compression finishes each tensor; ``sink`` may be
    called from a worker thread, never from two at once."""
    compress = compression == "zstd"
    jobs = _jobs(sources, compress)

    def work(j: int) -> tuple[_Job, int | None, bytes | None]:
        job = jobs[j]
        return (job, *_run_job(sources[job.index], job, compress, level, shuffle))

    sizes = [job.end - job.start for job in jobs]
    assembler = _Assembler(sources, shuffle, sink)
    z.consume_in_order(work, assembler.add, sizes, threads if compress else 1)
    for piece in metadata:
        sink(piece)


def encode_tensor_map_segments(
    tensors: Mapping[str, TensorLike] | Iterable[tuple[str, TensorLike]],
    *,
    compression: Compression = "zstd",
    level: int = 1,
    shuffle: bool = False,
    metadata: Mapping[str, str] | None = None,
    threads: int | None = None,
    lossy: _lossy.LossyConfig | None = None,
) -> list[Any]:
    """The TensorMap encoding as a list of buffers whose concatenation is the message.

    Uncompressed tensors appear as views on the source tensors, so a caller
    that embeds the map in a larger message (an Envelope) joins everything in
    one copy. Options as in :func:`encode_tensor_map`.
    """
    pieces: list[Any] = []
    sources = _prepare(tensors, compression, lossy)
    _encode(
        pieces.append,
        sources,
        compression,
        level,
        shuffle,
        _metadata_bytes(metadata or {}),
        threads,
    )
    return pieces


def split_state_dict(
    tensors: Mapping[str, TensorLike], max_raw_bytes: int = 1 << 30
) -> list[dict[str, TensorLike]]:
    """Split a state dict, in order, into dicts of at most ``max_raw_bytes`` raw
    bytes each (a single larger tensor gets a dict of its own)."""
    groups: list[dict[str, TensorLike]] = [{}]
    size = 0
    for name, value in tensors.items():
        nbytes = int(value.nbytes) if hasattr(value, "nbytes") else 0
        if groups[-1] and size + nbytes > max_raw_bytes:
            groups.append({})
            size = 0
        groups[-1][name] = value
        size += nbytes
    return groups


def encode_tensor_map(
    tensors: Mapping[str, TensorLike] | Iterable[tuple[str, TensorLike]],
    *,
    compression: Compression = "zstd",
    level: int = 1,
    shuffle: bool = False,
    metadata: Mapping[str, str] | None = None,
    threads: int | None = None,
    lossy: _lossy.LossyConfig | None = None,
) -> bytes:
    """Encode a state dict (torch tensors and/or numpy arrays) as TensorMap bytes.

    ``compression="zstd"`` compresses each tensor with Zstandard at ``level``
    (1 is fast; 3-19 trade speed for size) and keeps a tensor raw when
    compressing does not make it smaller. ``shuffle=True`` byte-shuffles
    multi-byte dtypes first (smaller floats). ``threads`` caps the cores used
    (None: all; 1: the calling thread only). Tensors on another device are
    copied to the CPU; non-contiguous tensors are made contiguous.

    ``lossy`` (a :class:`~flwire.serialization.lossy.LossyConfig`, default
    None: everything exact) encodes the floating tensors it selects lossily
    (float16/bfloat16 cast, blockwise int8 or top-k), recorded per tensor in
    ``Tensor.lossy``; decoding reconstructs them in their own dtype and shape.
    Use it only with receivers that announce the method
    (``Capabilities.supported_lossy``).
    """
    # Each piece is copied into the output as soon as it is ready and then
    # dropped, so compressed frames never all sit in memory beside the output.
    # The output is one bytes object filled in place (no final copy), and the
    # copies run on the worker threads, beside the compression.
    sources = _prepare(tensors, compression, lossy)
    meta = _metadata_bytes(metadata or {})
    out = FilledBytes(_max_encoded_size(sources, meta))
    _encode(out.write, sources, compression, level, shuffle, meta, threads)
    return out.getvalue()


# ----------------------------------------------------------------------------- decoding


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
