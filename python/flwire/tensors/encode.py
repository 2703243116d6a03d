"""The tensor encoder: writes the protobuf wire format of ``flwire.v1.TensorMap``
from prepared sources. Each tensor's bytes are split into jobs (one frame per
512 KiB) that worker threads compress with the chosen frame codec, and the
results, taken in order, become per-tensor headers plus data passed to a sink:
one output buffer filled in place (``encode_tensor_map``) or a list of pieces
(``encode_tensor_map_segments``). Also ``split_state_dict``, for maps that
would reach the 2 GiB limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from flwire._protowire import (
    I32,
    VARINT,
    crc32c,
    encode_varint,
    field_key,
    len_field,
    padding_field,
    utf8,
)
from flwire.exceptions import SerializationException
from flwire.tensors import codecs, parallel, shuffle
from flwire.tensors import schema as s
from flwire.tensors.options import EncodeOptions, resolve
from flwire.tensors.output import FilledBytes
from flwire.tensors.records import MAX_MESSAGE_BYTES, TensorLike
from flwire.tensors.sources import Source, apply_lossy, prepare, require_state_dict

StateDict = Mapping[str, TensorLike] | Iterable[tuple[str, TensorLike]]

_DTYPE_KEY = field_key(s.T_DTYPE, VARINT)
_CODEC_KEY = field_key(s.T_CODEC, VARINT)
_FILTER_KEY = field_key(s.T_FILTER, VARINT)
_RAW_SIZE_KEY = field_key(s.T_RAW_SIZE, VARINT)
_CRC_KEY = field_key(s.T_CRC32C, I32)
#: A tensor's fields other than its name, shape, data and trailer (keys,
#: varints, up to 64 bytes of padding) take at most this many bytes.
_HEADER_BOUND = 256
#: The most bytes a UTF-8 character or a shape varint takes.
_UTF8_MAX, _VARINT_MAX = 4, 10
#: The probe: a tensor larger than this is first judged on its first PROBE_BYTES,
#: compressed; one that does not save ``EncodeOptions.min_saving`` there is not
#: compressed at all. A tensor no larger is compressed whole, and kept raw if
#: that did not save ``min_saving``. With the byte shuffle the probe is 4 times
#: larger (or this much per byte of an element, if more): a shuffled probe holds
#: small byte planes, which zstd compresses worse than whole ones (shuffled
#: float32 weights: 7.6 % saved on a 64 KiB probe, 11 % on 256 KiB, 16 % whole;
#: shuffled float16: 8 % on 64 KiB, 16 % on 256 KiB and whole).
PROBE_BYTES = 64 << 10


def _tensor_header(
    src: Source, codec: int, filt: int, crc: int, data_len: int, start: int
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
    parts += [_DTYPE_KEY, encode_varint(src.wire_dtype.wire)]
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
    tail = len(src.trailer)  # written by the caller after the data

    def data_offset(pad_len: int) -> int:
        body_len = len(fields) + pad_len + len(data_key) + data_len + tail
        return start + len(len_field(s.M_TENSORS, body_len)) + body_len - data_len - tail

    pad = padding_field(s.T_PADDING, data_offset) if data_len and codec == s.CODEC_NONE else b""
    body_len = len(fields) + len(pad) + len(data_key) + data_len + tail
    return len_field(s.M_TENSORS, body_len) + fields + pad + data_key


@dataclass(frozen=True)
class _Job:
    """A share of one tensor's encoding work: its filtered bytes ``[start, end)``
    become one frame; the job with ``start == 0`` also checks the tensor and
    computes its CRC."""

    index: int
    start: int
    end: int
    last: bool
    compress: bool


def _jobs(sources: list[Source], compress: list[bool]) -> list[_Job]:
    jobs = []
    for i, src in enumerate(sources):
        n = src.raw.nbytes
        bounds = codecs.frame_bounds(n) if compress[i] and n else [(0, n)]
        jobs += [
            _Job(i, a, b, k == len(bounds) - 1, compress[i]) for k, (a, b) in enumerate(bounds)
        ]
    return jobs


def _shuffles(src: Source, options: EncodeOptions) -> bool:
    return options.shuffle and src.dtype.itemsize > 1


def _filtered(src: Source, options: EncodeOptions, start: int, end: int) -> Any:
    """Bytes ``[start, end)`` of the tensor as the codec takes them (shuffled or not)."""
    if _shuffles(src, options):
        return shuffle.shuffled_slice(src.raw, src.dtype.itemsize, start, end)
    return src.raw[start:end]


def pays(stored: int, raw: int, options: EncodeOptions) -> bool:
    """Whether ``raw`` bytes stored as ``stored`` compressed bytes save at least
    ``options.min_saving`` (and at least one byte)."""
    return stored < raw and stored <= (1.0 - options.min_saving) * raw


def compresses(src: Source, options: EncodeOptions) -> bool:
    """Whether ``src`` is worth compressing with ``options``' codec: a tensor
    above its probe (:data:`PROBE_BYTES`; with the byte shuffle, 4 times as
    much, or PROBE_BYTES per byte of an element if more) is judged on
    its first elements, compressed on the calling thread; a smaller one is (it
    is compressed whole, then kept raw unless that paid), and so is every
    tensor when ``min_saving`` is 0 (any saving is kept: no probe)."""
    codec = options.codec
    n = src.raw.nbytes
    if codec is None or not n:
        return False
    width = src.dtype.itemsize
    shuffled = _shuffles(src, options)
    size = PROBE_BYTES * max(4, width) if shuffled else PROBE_BYTES
    if n <= size or options.min_saving <= 0.0:
        return True
    end = max(width, size // width * width)
    # The first elements, filtered as a tensor of their own: a byte shuffle of the
    # whole tensor would put only its first plane (the floats' low bytes) here.
    probe = src.raw[:end]
    if shuffled:
        probe = shuffle.shuffled_slice(probe, width, 0, end)
    return pays(len(codec.compress(probe, options.codec_level)), end, options)


def _run_job(src: Source, job: _Job, options: EncodeOptions) -> tuple[int | None, bytes | None]:
    """(CRC of the whole tensor if this is its first job, else None; the frame
    of this job's bytes, or None when not compressing)."""
    raw = src.raw
    crc = None
    if job.start == 0:
        crc = crc32c(raw) if raw.nbytes else 0
    codec = options.codec
    if codec is None or not job.compress or not raw.nbytes:
        return crc, None
    return crc, codec.compress(_filtered(src, options, job.start, job.end), options.codec_level)


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

    def __init__(
        self,
        sources: list[Source],
        options: EncodeOptions,
        sink: Callable[[Any], Any],
        crcs: list[int | None] | None = None,
    ) -> None:
        self.sources, self.options, self.sink = sources, options, sink
        self.offset = self.crc = 0
        self.frames: list[bytes] = []
        #: When given: per piece passed to ``sink``, its CRC-32C if known (a
        #: tensor's raw data, stored uncompressed), else None.
        self.crcs = crcs

    def add(self, result: tuple[_Job, int | None, bytes | None]) -> None:
        job, crc, frame = result
        if crc is not None:
            self.crc, self.frames = crc, []
        if frame is not None:
            self.frames.append(frame)
        if job.last:
            self._emit(self.sources[job.index])

    def _emit(self, src: Source) -> None:
        frames, self.frames = self.frames, []
        codec: int = s.CODEC_NONE
        filt: int = s.FILTER_NONE
        data: list[Any] = [src.raw]
        data_len = src.raw.nbytes
        framed = sum(len(f) for f in frames)
        frame_codec = self.options.codec
        if frames and frame_codec is not None and pays(framed, data_len, self.options):
            # (else keep it raw: compression did not save options.min_saving)
            codec = frame_codec.wire
            filt = s.FILTER_BYTE_SHUFFLE if _shuffles(src, self.options) else s.FILTER_NONE
            data, data_len = frames, framed
        header = _tensor_header(src, codec, filt, self.crc, data_len, self.offset)
        trailer = src.trailer
        self.offset += len(header) + data_len + len(trailer)
        if self.offset >= MAX_MESSAGE_BYTES:
            raise SerializationException(
                f"the encoded TensorMap would be over {self.offset} bytes; protobuf parsers "
                "refuse messages of 2 GiB and more. Split the state dict "
                "(flwire.tensors.split_state_dict) and send the parts as separate maps"
            )
        for piece in (header, *data, trailer):
            if len(piece):
                self.sink(piece)
                if self.crcs is not None:
                    self.crcs.append(self.crc if piece is src.raw else None)


def _max_encoded_size(sources: list[Source], metadata: list[bytes]) -> int:
    """An upper bound of the TensorMap's size: stored data is never larger than
    the raw bytes (a tensor whose frames would be is kept raw)."""
    return sum(
        src.raw.nbytes
        + len(src.name) * _UTF8_MAX
        + _VARINT_MAX * len(src.shape)
        + _HEADER_BOUND
        + len(src.trailer)
        for src in sources
    ) + sum(len(m) for m in metadata)


def _encode(
    sink: Callable[[Any], Any],
    sources: list[Source],
    options: EncodeOptions,
    metadata: list[bytes],
    *,
    probe: bool = True,
    crcs: list[int | None] | None = None,
    compress: list[bool] | None = None,
) -> None:
    """Pass the buffers whose concatenation is the TensorMap to ``sink``, in
    order, as the (parallel) compression finishes each tensor; ``sink`` may be
    called from a worker thread, never from two at once. ``probe``: judge each
    tensor above PROBE_BYTES on its start first (see :func:`compresses`); else
    every tensor is compressed, and kept raw unless that paid. ``crcs``, when
    given, gets one entry per tensor piece passed to ``sink`` (see _Assembler).
    ``compress``, when given, says per tensor whether to compress it at all
    (compressed ones are kept raw unless that paid), instead of the probe."""
    if compress is None and probe:
        compress = [compresses(src, options) for src in sources]
    elif compress is None:
        compress = [options.codec is not None] * len(sources)
    jobs = _jobs(sources, compress)

    def work(j: int) -> tuple[_Job, int | None, bytes | None]:
        job = jobs[j]
        return (job, *_run_job(sources[job.index], job, options))

    sizes = [job.end - job.start for job in jobs]
    assembler = _Assembler(sources, options, sink, crcs)
    threads = options.threads if options.codec is not None else 1
    parallel.consume_in_order(work, assembler.add, sizes, threads)
    for piece in metadata:
        sink(piece)


def encode_tensor_map_segments(
    tensors: StateDict,
    options: EncodeOptions | None = None,
    *,
    metadata: Mapping[str, str] | None = None,
) -> list[Any]:
    """The TensorMap encoding as a list of buffers whose concatenation is the message.

    Uncompressed tensors appear as views on the source tensors, so a caller
    that embeds the map in a larger message (an Envelope) joins everything in
    one copy. Options as in :func:`encode_tensor_map`.
    """
    options = resolve(options)
    return encode_sources(prepare(tensors, options.lossy, options.threads), options, metadata)


def encode_sources(
    sources: list[Source], options: EncodeOptions, metadata: Mapping[str, str] | None = None
) -> list[Any]:
    """:func:`encode_tensor_map_segments` of prepared sources."""
    pieces: list[Any] = []
    _encode(pieces.append, sources, options, _metadata_bytes(metadata or {}))
    return pieces


def split_state_dict(
    tensors: Mapping[str, TensorLike], max_raw_bytes: int = 1 << 30
) -> list[dict[str, TensorLike]]:
    """Split a state dict, in order, into dicts of at most ``max_raw_bytes`` raw
    bytes each (a single larger tensor gets a dict of its own)."""
    groups: list[dict[str, TensorLike]] = [{}]
    size = 0
    for name, value in require_state_dict(tensors, "split_state_dict").items():
        nbytes = int(value.nbytes) if hasattr(value, "nbytes") else 0
        if groups[-1] and size + nbytes > max_raw_bytes:
            groups.append({})
            size = 0
        groups[-1][name] = value
        size += nbytes
    return groups


def encode_tensor_map(
    tensors: StateDict,
    options: EncodeOptions | None = None,
    *,
    compression: str | None = None,
    level: int | None = None,
    shuffle: bool | None = None,
    threads: int | None = None,
    lossy: Any = None,
    min_saving: float | None = None,
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """Encode a state dict (numpy arrays and/or torch tensors) as TensorMap bytes.

    ``options`` (an :class:`EncodeOptions`) says how; the keywords
    ``compression``, ``level``, ``shuffle``, ``threads``, ``lossy`` and
    ``min_saving`` override single options of it (see :class:`EncodeOptions`).
    By default each tensor is zstd-compressed (level 1, on every core) and kept
    raw where that does not make it at least 10 % smaller. Tensors on another
    device are copied to the CPU; non-contiguous tensors are made contiguous.
    ``metadata`` is a str -> str map stored beside the tensors.
    """
    opts = resolve(
        options,
        compression=compression,
        level=level,
        shuffle=shuffle,
        threads=threads,
        lossy=lossy,
        min_saving=min_saving,
    )
    # Each piece is copied into the output as soon as it is ready and then
    # dropped, so compressed frames never all sit in memory beside the output.
    # The output is one bytes object filled in place (no final copy), and the
    # copies run on the worker threads, beside the compression.
    sources = prepare(tensors, opts.lossy, opts.threads)
    meta = _metadata_bytes(metadata or {})
    out = FilledBytes(_max_encoded_size(sources, meta))
    _encode(out.write, sources, opts, meta)
    return out.getvalue()


def encode_elements(
    src: Source,
    start: int,
    stop: int,
    options: EncodeOptions,
    *,
    crcs: list[int | None] | None = None,
    packed: Sequence[tuple[Source, bool]] = (),
    compress_first: bool = True,
) -> list[Any]:
    """The TensorMap pieces (concatenated: the map) of one unnamed 1-D tensor
    holding elements ``[start, stop)`` of ``src`` (row-major), encoded on the
    calling thread with ``options``' codec and filter: one chunk of a streamed
    tensor (wire format section 14.5). With ``options.lossy``, the elements are
    lossy-encoded as a tensor of their own (the caller has checked that the
    config applies to ``src``: it is applied to the chunk whatever its name and
    size), or sent exactly when their payload would not be smaller. ``src``
    itself must not be lossy. No probe: the caller chose ``options`` for the
    tensor (a chunk that does not save ``min_saving`` still goes raw).
    ``crcs``, when given, is filled with one entry per piece: its CRC-32C where
    the encoder computed it anyway (the elements' raw bytes, when stored
    uncompressed), else None.

    ``packed``: whole tensors that follow in the same map, each unnamed and
    flattened to 1-D, with whether to compress it (kept raw unless that
    paid): a packed chunk (section 14.5), ``compress_first`` saying the same
    of the elements. They must then be exact (no ``options.lossy``); when
    ``options`` has no codec, none is compressed.
    """
    if src.lossy is not None:
        raise SerializationException("a streamed tensor's source cannot be lossy already")
    if packed and options.lossy is not None:
        raise SerializationException("a packed chunk's elements cannot be lossy")
    width = src.dtype.itemsize
    piece = Source("", src.dtype, (stop - start,), src.raw[start * width : stop * width])
    if options.lossy is not None:
        # Named for its errors (a value the method cannot carry), unnamed on the wire.
        named = replace(piece, name=f"{src.name}[{start}:{stop}]")
        piece = replace(apply_lossy(named, options.lossy, 1), name="")
        options = replace(options, lossy=None)
    pieces: list[Any] = []
    if not packed:
        _encode(pieces.append, [piece], options, [], probe=False, crcs=crcs)
        return pieces
    whole = [Source("", t.dtype, (t.raw.nbytes // t.dtype.itemsize,), t.raw) for t, _ in packed]
    can = options.codec is not None
    flags = [can and compress_first, *(can and on for _, on in packed)]
    _encode(pieces.append, [piece, *whole], options, [], probe=False, crcs=crcs, compress=flags)
    return pieces
