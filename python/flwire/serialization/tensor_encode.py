"""The tensor encoder: writes the protobuf wire format of ``flwire.v1.TensorMap``
from prepared sources. Each tensor's bytes are split into jobs (one zstd frame
per 512 KiB) that worker threads compress, and the results, taken in order,
become per-tensor headers plus data passed to a sink: one output buffer filled
in place (``encode_tensor_map``) or a list of pieces
(``encode_tensor_map_segments``). Also ``split_state_dict``, for maps that
would reach the 2 GiB limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flwire.exceptions import SerializationException
from flwire.serialization import _schema as s
from flwire.serialization import compression as z
from flwire.serialization import dtypes
from flwire.serialization import lossy as _lossy
from flwire.serialization._output import FilledBytes
from flwire.serialization._wire import (
    I32,
    VARINT,
    encode_varint,
    field_key,
    len_field,
    padding_field,
    utf8,
)
from flwire.serialization.tensor_sources import _prepare, _Source, _trailer
from flwire.serialization.tensor_types import MAX_MESSAGE_BYTES, Compression, TensorLike

_DTYPE_KEY = field_key(s.T_DTYPE, VARINT)
_CODEC_KEY = field_key(s.T_CODEC, VARINT)
_FILTER_KEY = field_key(s.T_FILTER, VARINT)
_RAW_SIZE_KEY = field_key(s.T_RAW_SIZE, VARINT)
_CRC_KEY = field_key(s.T_CRC32C, I32)


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
        data_len = src.raw.nbytes
        framed = sum(len(f) for f in frames)
        if frames and framed < data_len:  # else keep it raw: compression did not pay
            codec = s.CODEC_ZSTD
            filt = s.FILTER_BYTE_SHUFFLE if _shuffles(src, self.shuffle) else s.FILTER_NONE
            data, data_len = frames, framed
        header = _tensor_header(src, codec, filt, self.crc, data_len, self.offset)
        trailer = _trailer(src)
        self.offset += len(header) + data_len + len(trailer)
        if self.offset >= MAX_MESSAGE_BYTES:
            raise SerializationException(
                f"the encoded TensorMap would be over {self.offset} bytes; protobuf parsers "
                "refuse messages of 2 GiB and more. Split the state dict "
                "(flwire.serialization.split_state_dict) and send the parts as separate maps"
            )
        for piece in (header, *data, trailer):
            if len(piece):
                self.sink(piece)


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
