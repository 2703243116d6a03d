"""The tensor decoder.

``read_tensor_map`` walks TensorMap bytes into ``TensorRecord``s whose data
are views on the input: a field walker (:func:`_walk_tensor`, wire types only)
collects each tensor's fields, and a validator (:func:`_validate`) checks every
declared size against ``DecodeLimits`` and the input's length, once each,
before anything is allocated. ``decode_tensor_map`` then turns records into
numpy arrays or torch tensors: views on the input when stored uncompressed,
else one fresh buffer per tensor that its frames are decompressed into in
parallel, with the byte shuffle undone, the CRC checked and lossy payloads
reconstructed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flwire._protowire import (
    I32,
    LEN,
    VARINT,
    Field,
    as_signed64,
    byte_view,
    crc32c,
    decode_packed_varints,
    decode_utf8,
    expect_wire_type,
    iter_fields,
)
from flwire.exceptions import ChecksumMismatchError, PayloadTooLargeError, SerializationException
from flwire.tensors import codecs, dtypes, lossy, parallel, shuffle, torch_support
from flwire.tensors import schema as s
from flwire.tensors.records import DecodeLimits, TensorRecord, resolve_limits

#: Strides are int64: a shape whose byte span reaches this is refused.
_MAX_SPAN = 1 << 63
#: Lossy fields are uint32/int32 on the wire except ``k``: protobuf keeps the
#: low 32 bits of a longer varint.
_UINT32_MASK = 0xFFFFFFFF


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
    ) -> dict[str, Any]:
        """Decode every tensor to torch: independent tensors, except views on the
        input for tensors stored uncompressed when the input is writable (see
        :func:`decode_tensor_map`)."""
        return _decode_all(self.records, "torch", verify_checksum, threads)

    def to_numpy(
        self, *, verify_checksum: bool = True, threads: int | None = None
    ) -> dict[str, np.ndarray]:
        """Decode every tensor to numpy (views on the input where stored
        uncompressed: read-only when the input is, e.g. ``bytes``)."""
        return _decode_all(self.records, "numpy", verify_checksum, threads)

    def verify(self, *, threads: int | None = None) -> None:
        """Decode every tensor's bytes and check them (frames, CRC-32C, bool
        bytes, lossy payloads) without handing anything out: needs neither torch
        nor a numpy dtype for the tensor. Raises SerializationException (or a
        subclass) for the first tensor that fails."""
        _decode_all(self.records, "bytes", True, threads)


# ----------------------------------------------------------------------------- walking


@dataclass
class _TensorFields:
    """A Tensor message's fields as found on the wire, not yet checked."""

    name: str = ""
    dtype: int = 0
    shape: list[int] = field(default_factory=list)
    codec: int = 0
    filter: int = 0
    raw_size: int = 0
    crc: int = 0
    data: memoryview = field(default_factory=lambda: memoryview(b""))
    lossy: dict[int, int] | None = None  # LossyEncoding field number -> value


_VARINT_FIELDS = {
    s.T_DTYPE: "dtype",
    s.T_CODEC: "codec",
    s.T_FILTER: "filter",
    s.T_RAW_SIZE: "raw_size",
}


class _Unknown:
    """Counts the bytes of unknown fields of one map against the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.bytes = 0

    def add(self, f: Field, what: str) -> None:
        self.bytes += f.end - f.key_start
        if self.bytes > self.limit:
            raise SerializationException(
                f"{what}: more than {self.limit} bytes of unknown fields in the map "
                "(DecodeLimits.max_unknown_bytes)"
            )


def _walk_tensor(
    buf: memoryview, start: int, end: int, index: int, limits: DecodeLimits, unknown: _Unknown
) -> _TensorFields:
    """Collect a Tensor's fields, checking wire types only (unknown fields are
    skipped, as protobuf does, and counted; a repeated scalar field keeps its last
    value). Enum values are read as protobuf reads them, as 32 bits."""
    out = _TensorFields()
    what = f"tensor #{index}"
    for f in iter_fields(buf, start, end, what):
        n = f.number
        if n in _VARINT_FIELDS:
            expect_wire_type(f, VARINT, what)
            value = f.value if n == s.T_RAW_SIZE else f.value & _UINT32_MASK
            setattr(out, _VARINT_FIELDS[n], value)
        elif n == s.T_NAME:
            expect_wire_type(f, LEN, what)
            out.name = decode_utf8(buf, f.start, f.end, f"name of {what}")
            what = f"tensor {out.name!r}"
        elif n == s.T_SHAPE:
            room = limits.max_rank - len(out.shape)
            too_many = f"{what} has rank above the limit {limits.max_rank}"
            if f.wire_type == LEN:  # packed (what writers emit)
                out.shape.extend(
                    decode_packed_varints(
                        buf, f.start, f.end, f"shape of {what}", max(room, 0), too_many
                    )
                )
            else:  # unpacked repeated, which parsers must accept too
                expect_wire_type(f, VARINT, what)
                out.shape.append(f.value)
            if len(out.shape) > limits.max_rank:
                raise SerializationException(f"{what} has rank above the limit {limits.max_rank}")
        elif n == s.T_CRC32C:
            expect_wire_type(f, I32, what)
            out.crc = f.value
        elif n == s.T_DATA:
            expect_wire_type(f, LEN, what)
            out.data = buf[f.start : f.end]
        elif n == s.T_LOSSY:
            expect_wire_type(f, LEN, what)
            # A message field seen twice merges, field by field, as protobuf does.
            out.lossy = _walk_lossy(buf, f.start, f.end, what, out.lossy or {})
        elif n != s.T_PADDING:
            unknown.add(f, what)
    return out


def _walk_lossy(
    buf: memoryview, start: int, end: int, what: str, values: dict[int, int]
) -> dict[int, int]:
    """The fields of one LossyEncoding message, merged into ``values``."""
    for e in iter_fields(buf, start, end, f"lossy encoding of {what}"):
        if e.number in (s.L_METHOD, s.L_BLOCK_SIZE, s.L_K):
            expect_wire_type(e, VARINT, f"lossy encoding of {what}")
            values[e.number] = e.value if e.number == s.L_K else e.value & _UINT32_MASK
    return values


# ----------------------------------------------------------------------------- validating


def _lossy_params(values: dict[int, int] | None) -> lossy.LossyParams | None:
    if not values or values.get(s.L_METHOD, 0) == s.LOSSY_NONE:
        return None  # absent, or LOSSY_UNSPECIFIED: a lossless tensor
    return lossy.LossyParams(
        values[s.L_METHOD], values.get(s.L_BLOCK_SIZE, 0), values.get(s.L_K, 0)
    )


def _checked_shape(raw: list[int], what: str, limits: DecodeLimits) -> tuple[int, ...]:
    dims = tuple(as_signed64(d) for d in raw)
    if len(dims) > limits.max_rank:
        raise SerializationException(
            f"{what} has rank {len(dims)}, above the limit {limits.max_rank}"
        )
    if any(d < 0 for d in dims):
        raise SerializationException(f"{what} has a negative dimension in shape {list(dims)}")
    return dims


def _check_span(dims: tuple[int, ...], what: str, itemsize: int) -> None:
    """Checked after the sizes, so that a consistent but huge tensor is refused
    as above the limit (PayloadTooLargeError), not for its strides."""
    span = itemsize  # bytes spanned if zero dimensions were one: must fit in int64
    for d in dims:
        span *= max(d, 1)
    if span >= _MAX_SPAN:
        raise SerializationException(
            f"{what} has shape {list(dims)}, whose strides overflow 64 bits"
        )


def _too_large(what: str, verb: str, size: int, limits: DecodeLimits) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"{what} {verb} {size} bytes, above the limit of {limits.max_tensor_bytes} "
        "(raise DecodeLimits.max_tensor_bytes if you expect tensors this large)"
    )


def _expected_size(
    f: _TensorFields, info: dtypes.DtypeInfo, dims: tuple[int, ...], what: str, limits: DecodeLimits
) -> tuple[int, lossy.LossyParams | None, str]:
    """(bytes ``raw_size`` must hold, lossy parameters, what those bytes are)."""
    numel = 1
    for d in dims:
        numel *= d
    decoded = numel * info.itemsize
    params = _lossy_params(f.lossy)
    if params is None:
        return decoded, None, f"shape {list(dims)} of {info.name} needs"
    if decoded > limits.max_tensor_bytes:
        raise _too_large(what, "decodes to", decoded, limits)
    if f.filter != s.FILTER_NONE and not lossy.filter_allowed(params.method):
        raise SerializationException(
            f"{what}: {'an' if params.name == 'int8' else 'a'} {params.name} lossy payload "
            "must not be filtered "
            f"(filter is {s.FILTER_NAMES.get(f.filter, f.filter)})"
        )
    size = lossy.payload_size(info, numel, params, what)
    return (
        size,
        params,
        f"the {params.describe()} lossy payload of shape {list(dims)} of {info.name} takes",
    )


def _validate(f: _TensorFields, index: int, limits: DecodeLimits) -> TensorRecord:
    """Check a walked Tensor and turn it into a record; nothing is allocated."""
    what = f"tensor {f.name!r}" if f.name else f"tensor #{index}"
    info = dtypes.from_wire(f.dtype, f.name)
    dims = _checked_shape(f.shape, what, limits)
    expected, params, meaning = _expected_size(f, info, dims, what, limits)
    if expected != f.raw_size:
        raise SerializationException(
            f"{what}: {meaning} {expected} bytes, but raw_size says {f.raw_size}"
        )
    if f.raw_size > limits.max_tensor_bytes:
        raise _too_large(what, "declares", f.raw_size, limits)
    _check_span(dims, what, info.itemsize)
    if f.filter not in s.FILTER_NAMES:
        raise SerializationException(f"{what} uses unknown filter {f.filter}; upgrade flwire")
    frames: tuple[codecs.Frame, ...] = ()
    if f.codec == s.CODEC_NONE:
        if len(f.data) != f.raw_size:
            raise SerializationException(
                f"{what} is stored uncompressed with {len(f.data)} bytes of data, "
                f"but raw_size says {f.raw_size}"
            )
    else:
        codec = codecs.by_wire(f.codec)
        if codec is None:
            raise SerializationException(f"{what} uses unknown codec {f.codec}; upgrade flwire")
        frames = tuple(codec.frames(f.data, f.raw_size, f.name))
    if f.raw_size == 0 and f.crc != 0:
        raise SerializationException(
            f"{what} is empty but records CRC-32C {f.crc:#010x} (the CRC of no bytes is 0)"
        )
    return TensorRecord(
        f.name, info, dims, f.codec, f.filter, f.raw_size, f.crc, f.data, frames, params
    )


def _layout(expect: Mapping[str, Any]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Name -> (dtype name, shape) of the tensors or arrays a caller expects."""
    return {
        name: (str(value.dtype).removeprefix("torch."), tuple(int(d) for d in value.shape))
        for name, value in expect.items()
    }


def _check_expected(rec: TensorRecord, layout: dict[str, tuple[str, tuple[int, ...]]]) -> None:
    want = layout.get(rec.name)
    if want is None:
        raise SerializationException(
            f"tensor {rec.name!r} is not in the expected layout (an extra tensor)"
        )
    if (rec.dtype.name, rec.shape) != want:
        raise SerializationException(
            f"tensor {rec.name!r} is {rec.dtype.name} {list(rec.shape)}, but the expected "
            f"layout says {want[0]} {list(want[1])}"
        )


def read_tensor_map(
    data: Any,
    *,
    limits: DecodeLimits | None = None,
    expect: Mapping[str, Any] | None = None,
    unique_names: bool = True,
) -> TensorMapView:
    """Parse and validate TensorMap bytes without decoding any tensor data.

    Checks every declared size against ``limits`` and the input's length; the
    returned records' ``data`` are views on ``data``. ``expect`` (a state dict,
    or any mapping of names to things with ``dtype`` and ``shape``) is the
    layout the caller expects, e.g. the global model's on a server: a tensor
    not in it, missing from it, or of another dtype or shape is refused, naming
    it, before anything is allocated or decompressed.
    """
    limits = resolve_limits(limits)
    layout = None if expect is None else _layout(expect)
    unknown = _Unknown(limits.max_unknown_bytes)
    buf = byte_view(data, "TensorMap")
    records: list[TensorRecord] = []
    metadata: dict[str, str] = {}
    total = 0
    allowed = (
        float("inf")
        if limits.max_expansion is None
        else max(limits.expansion_floor_bytes, limits.max_expansion * len(buf))
    )
    _check_tensor_count(buf, limits)
    for f in iter_fields(buf, 0, len(buf), "TensorMap"):
        if f.number == s.M_TENSORS:
            expect_wire_type(f, LEN, "TensorMap")
            walked = _walk_tensor(buf, f.start, f.end, len(records), limits, unknown)
            rec = _validate(walked, len(records), limits)
            if layout is not None:
                _check_expected(rec, layout)
            total += rec.decoded_size
            if total > limits.max_total_bytes:
                raise PayloadTooLargeError(
                    f"TensorMap declares more than {limits.max_total_bytes} raw bytes in all "
                    "(raise DecodeLimits.max_total_bytes if you expect a model this large)"
                )
            if total > allowed:
                raise PayloadTooLargeError(
                    f"TensorMap of {len(buf)} bytes declares {total} or more decoded bytes, "
                    f"over {limits.max_expansion:g} times its size "
                    f"(DecodeLimits.max_expansion; pass a higher one, or None, if you expect "
                    "maps this compressible: mostly zeros, or top-k below 1 %)"
                )
            records.append(rec)
        elif f.number == s.M_METADATA:
            expect_wire_type(f, LEN, "TensorMap")
            key, value = _metadata_entry(buf, f.start, f.end)
            metadata[key] = value
        else:
            unknown.add(f, "TensorMap")
    names = {r.name for r in records}
    if unique_names and len(names) != len(records):
        raise SerializationException("TensorMap holds two tensors with the same name")
    if layout is not None and len(names) != len(layout):
        missing = sorted(set(layout) - names)
        raise SerializationException(
            f"{len(missing)} tensor(s) of the expected layout missing: "
            f"{', '.join(repr(n) for n in missing[:5])}{' ...' if len(missing) > 5 else ''}"
        )
    return TensorMapView(records, metadata)


def _check_tensor_count(buf: memoryview, limits: DecodeLimits) -> None:
    """Refuse a map with more tensors and metadata entries than ``limits`` allow
    for its size, after counting its top-level fields only (about a microsecond
    each), before any of them is walked. Past ``max_unknown_bytes`` of unknown
    fields it stops: the walk then refuses those."""
    cap = limits.tensor_cap(len(buf))
    count = unknown = 0
    for f in iter_fields(buf, 0, len(buf), "TensorMap"):
        if f.number in (s.M_TENSORS, s.M_METADATA):
            count += 1
        else:
            unknown += f.end - f.key_start
            if unknown > limits.max_unknown_bytes:
                return
        if count > cap:
            per_mib = limits.max_tensors_per_mib
            raise PayloadTooLargeError(
                f"TensorMap of {len(buf)} bytes holds more than {cap} tensors and metadata "
                "entries "
                + (
                    f"(DecodeLimits.max_tensors {limits.max_tensors})"
                    if cap == limits.max_tensors
                    else f"(DecodeLimits.max_tensors_per_mib {per_mib}: pass a higher one, "
                    "or None, if you expect this many tiny tensors)"
                )
                + " [max_tensors]"
            )


def _metadata_entry(buf: memoryview, start: int, end: int) -> tuple[str, str]:
    texts = {s.E_KEY: "", s.E_VALUE: ""}
    for e in iter_fields(buf, start, end, "TensorMap metadata entry"):
        if e.number in texts:
            expect_wire_type(e, LEN, "TensorMap metadata entry")
            texts[e.number] = decode_utf8(buf, e.start, e.end, "TensorMap metadata")
    return texts[s.E_KEY], texts[s.E_VALUE]


# ----------------------------------------------------------------------------- decoding


def _shuffled(rec: TensorRecord) -> bool:
    return rec.filter == s.FILTER_BYTE_SHUFFLE and rec.dtype.itemsize > 1


def _inflate_frame(rec: TensorRecord, frame: codecs.Frame, out: np.ndarray) -> None:
    """Decompress one frame of ``rec`` into its place in ``out`` (the raw bytes),
    undoing the byte shuffle on the way."""
    codec = codecs.by_wire(rec.codec)
    assert codec is not None  # checked by _validate
    data = rec.data[frame.start : frame.end]
    if _shuffled(rec):
        tmp = parallel.scratch(frame.size)
        codec.decompress_into(data, tmp, rec.name)
        shuffle.unshuffle_slice_into(tmp, out, rec.dtype.itemsize, frame.offset)
    else:
        codec.decompress_into(data, out[frame.offset : frame.offset + frame.size], rec.name)


def _raw_bytes(rec: TensorRecord, inflated: np.ndarray | None, verify: bool) -> tuple[Any, bool]:
    """The tensor's raw bytes as a uint8 array and whether it is a view on the
    input; ``inflated`` holds them already for a compressed tensor."""
    if inflated is not None:
        raw, zero_copy = inflated, False
    elif _shuffled(rec):
        raw, zero_copy = np.empty(rec.raw_size, dtype=np.uint8), False
        shuffle.unshuffle_slice_into(
            np.frombuffer(rec.data, dtype=np.uint8), raw, rec.dtype.itemsize, 0
        )
    else:
        raw = np.frombuffer(rec.data, dtype=np.uint8) if rec.raw_size else np.empty(0, np.uint8)
        zero_copy = True
        if raw.ctypes.data % rec.dtype.itemsize:
            # Misaligned elements break vectorized kernels: one aligned copy.
            raw = raw.copy()
            zero_copy = False
    if verify and rec.raw_size:
        actual = crc32c(raw)
        if actual != rec.crc32c:
            raise ChecksumMismatchError(
                f"tensor {rec.name!r}: CRC-32C of the decoded bytes is {actual:#010x}, "
                f"the sender recorded {rec.crc32c:#010x} (data corrupted in transit?)"
            )
    if rec.dtype.wire == dtypes.BOOL.wire and rec.raw_size and int(raw.max()) > 1:
        raise SerializationException(
            f"tensor {rec.name!r}: bool tensor holds bytes other than 0 and 1"
        )
    return raw, zero_copy


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
    element = lossy.element_dtype(rec.lossy.method)
    # Built directly: dataclasses.replace costs ~10 microseconds per call, per tensor.
    return TensorRecord(
        rec.name,
        element,
        (rec.raw_size // element.itemsize,),
        rec.codec,
        rec.filter,
        rec.raw_size,
        rec.crc32c,
        rec.data,
        rec.frames,
    )


def _runner(jobs: list[lossy.Job]) -> Callable[[int], None]:
    def run(j: int) -> None:
        jobs[j][1]()

    return run


def _decode_all(
    records: list[TensorRecord], target: str, verify: bool, threads: int | None
) -> dict[str, Any]:
    """Decode ``records`` to ``target``: "torch", "numpy", or "bytes" (each
    tensor's checked raw bytes, uint8). Three passes, each spread over the
    cores: every frame of every tensor into its tensor's buffer; per tensor,
    the checks (CRC-32C, bool bytes) and the reconstruction of a small lossy
    tensor; the reconstruction of the large lossy tensors, cut into jobs. Then
    each tensor is wrapped (a view, no copy)."""
    if target == "torch":
        torch_support.import_torch()  # fail before any work when torch is missing
    # Lossy tensors: the payload goes through the first two passes as a tensor
    # of the payload's element type; the third pass reconstructs it.
    records, logical = [_payload_record(r) for r in records], records
    # A payload to decompress goes into its own buffer, or into the end of its
    # tensor's output when it is reconstructed there (lossy.in_place).
    outputs: list[np.ndarray | None] = [
        np.empty(rec.numel * rec.dtype.itemsize, dtype=np.uint8)
        if rec.lossy is not None
        and r.codec != s.CODEC_NONE
        and lossy.in_place(rec.dtype, rec.numel, rec.lossy, r.raw_size)
        else None
        for r, rec in zip(records, logical, strict=True)
    ]
    inflated = [
        None
        if r.codec == s.CODEC_NONE
        else np.empty(r.raw_size, dtype=np.uint8)
        if out is None
        else out[out.nbytes - r.raw_size :]
        for r, out in zip(records, outputs, strict=True)
    ]
    frames = [(i, f) for i, r in enumerate(records) for f in r.frames]

    def inflate(j: int) -> None:
        i, frame = frames[j]
        out = inflated[i]
        assert out is not None
        _inflate_frame(records[i], frame, out)

    parallel.run_parallel(inflate, [f.size for _, f in frames], threads)

    def check(i: int) -> tuple[np.ndarray, bool, list[list[lossy.Job]]]:
        raw, zero_copy = _raw_bytes(records[i], inflated[i], verify)
        rec = logical[i]
        if rec.lossy is None:
            return raw, zero_copy, []
        out, phases = lossy.decode_jobs(rec.name, rec.dtype, rec.numel, rec.lossy, raw, outputs[i])
        if len(phases) == 1 and len(phases[0]) == 1:  # done here, while the payload is
            phases.pop()[0][1]()  # in this core's cache
        return out, False, phases

    # The checks cost about one pass at memory speed per 16 bytes of work.
    checked = parallel.run_parallel(check, [r.raw_size // 16 for r in records], threads)
    raws = [(raw, zero_copy) for raw, zero_copy, _ in checked]
    for i, rec in enumerate(logical):
        if rec.lossy is not None:
            records[i] = TensorRecord(
                rec.name,
                rec.dtype,
                rec.shape,
                rec.codec,
                rec.filter,
                raws[i][0].nbytes,
                rec.crc32c,
                rec.data,
                rec.frames,
                rec.lossy,
            )
    # The large lossy tensors' remaining jobs, phase by phase, spread over the cores.
    phased = [phases for _, _, phases in checked]
    for k in range(max(map(len, phased), default=0)):
        jobs = [job for phases in phased if k < len(phases) for job in phases[k]]
        parallel.run_parallel(_runner(jobs), [size for size, _ in jobs], threads)

    values: dict[str, Any] = {}
    for rec, (raw, zero_copy) in zip(records, raws, strict=True):
        if target == "torch":
            values[rec.name] = torch_support.from_raw(raw, rec.dtype, rec.shape, zero_copy)
        else:
            values[rec.name] = _to_numpy(rec, raw) if target == "numpy" else raw
    return values


def decode_tensor_map(
    data: Any,
    *,
    as_numpy: bool = False,
    verify_checksum: bool = True,
    limits: DecodeLimits | None = None,
    threads: int | None = None,
    expect: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Decode TensorMap bytes to a dict of torch tensors (or numpy arrays).

    ``limits`` bounds the cost (see :class:`DecodeLimits`); ``expect``, the
    layout the caller expects (see :func:`read_tensor_map`), is checked before
    anything is allocated.

    Decoded tensors never write through to memory the caller did not hand over:

    - from ``bytes`` (immutable), torch tensors are independent: a tensor stored
      uncompressed is copied once, at memcpy speed, and in-place maths on it
      leaves ``data`` unchanged;
    - from a writable buffer (``bytearray``, writable ``memoryview``, ``mmap``)
      tensors stored uncompressed are views on it (zero-copy): passing it hands
      it over, so do not reuse it while the tensors live;
    - numpy results stored uncompressed are views on ``data``, read-only when
      ``data`` is (``bytes``): writing to one raises, ``.copy()`` first.

    Every other tensor gets one fresh allocation. Raises SerializationException (or a
    subclass) naming the problem for any malformed input; decoding to torch
    without torch installed raises MissingDependencyError (an ImportError).
    """
    return _decode_all(
        read_tensor_map(data, limits=limits, expect=expect).records,
        "numpy" if as_numpy else "torch",
        verify_checksum,
        threads,
    )


def read_chunk(data: Any, *, limits: DecodeLimits | None = None) -> list[TensorRecord]:
    """Parse a streamed chunk's TensorMap bytes (wire format section 14.5): one
    or more unnamed 1-D tensors, each with at least one element, lossless or
    lossy (a lossy one passed the checks of section 9.1 here); their data stay
    views on ``data``. Their dtypes are the caller's to check
    (:func:`check_element_dtype`). Raises SerializationException naming what is
    wrong."""
    # A chunk's tensors are unnamed: a packed chunk has several named ''.
    records = read_tensor_map(data, limits=limits, unique_names=False).records
    if not records:
        raise SerializationException("a chunk holds no tensor")
    for rec in records:
        if rec.name:
            raise SerializationException(
                f"a chunk's tensor is named {rec.name!r}; it must be unnamed"
            )
        if len(rec.shape) != 1 or not rec.numel:
            raise SerializationException(
                f"a chunk's tensor has shape {list(rec.shape)}, not 1-D with elements"
            )
    return records


def check_element_dtype(rec: TensorRecord, dtype: dtypes.DtypeInfo) -> None:
    """Refuse a chunk's tensor whose dtype is not that of the tensor it belongs to."""
    if rec.dtype.wire != dtype.wire:
        raise SerializationException(
            f"a chunk holds {rec.dtype.name} elements, but its tensor is {dtype.name}"
        )


def decode_elements_into(
    rec: TensorRecord, out: np.ndarray, *, verify_checksum: bool = True
) -> int | None:
    """Decode a chunk's tensor (from :func:`read_chunk`) straight into
    ``out``, a writable uint8 array of exactly its decoded size. A lossless one
    as :func:`decode_record_into` does (and returns what it returns). A lossy
    one: its payload is decompressed and checked (into the end of ``out`` when
    the method reconstructs in place, see ``lossy.in_place``), then
    reconstructed into ``out``; returns None. Raises SerializationException."""
    params = rec.lossy
    if params is None:
        return decode_record_into(rec, out, verify_checksum=verify_checksum)
    if rec.decoded_size != out.nbytes:
        raise SerializationException(
            f"tensor {rec.name!r}: {rec.decoded_size} decoded bytes for a place of {out.nbytes}"
        )
    in_place = lossy.in_place(rec.dtype, rec.numel, params, rec.raw_size)
    payload = out[out.nbytes - rec.raw_size :] if in_place else np.empty(rec.raw_size, np.uint8)
    decode_record_into(_payload_record(rec), payload, verify_checksum=verify_checksum)
    if params.name == "topk":
        # Zeros and the kept values, in out itself: no second chunk-sized buffer.
        lossy.scatter_top_k_into(rec.name, rec.dtype, params, payload, out)
        return None
    # Reconstructed in out itself: in place (the payload at its end), or from
    # the payload's own buffer (block int8 on wide dtypes), never copied after.
    _, phases = lossy.decode_jobs(
        rec.name,
        rec.dtype,
        rec.numel,
        params,
        payload,
        out if in_place else None,
        into=None if in_place else out,
    )
    for phase in phases:
        for _, work in phase:
            work()
    return None


def decode_record_into(
    rec: TensorRecord, out: np.ndarray, *, verify_checksum: bool = True
) -> int | None:
    """Decode a lossless tensor (from :func:`read_chunk`) straight into
    ``out``, a writable uint8 array of exactly its raw size: compressed frames
    are decompressed into ``out`` itself, raw data is copied into it once; the
    CRC-32C is checked there. Returns the CRC-32C of ``rec.data`` when that is
    known without reading it again (raw data, unfiltered, checked: the record's
    own), else None. Raises SerializationException (or a subclass)."""
    if rec.raw_size != out.nbytes:
        raise SerializationException(
            f"tensor {rec.name!r}: {rec.raw_size} raw bytes for a place of {out.nbytes}"
        )
    if rec.codec != s.CODEC_NONE:
        for frame in rec.frames:
            _inflate_frame(rec, frame, out)
        _raw_bytes(rec, out, verify_checksum)
    elif _shuffled(rec):
        shuffle.unshuffle_slice_into(
            np.frombuffer(rec.data, dtype=np.uint8), out, rec.dtype.itemsize, 0
        )
        _raw_bytes(rec, out, verify_checksum)
    else:
        out[:] = np.frombuffer(rec.data, dtype=np.uint8)
        _raw_bytes(rec, out, verify_checksum)
        # out holds exactly rec.data's bytes, and their CRC-32C checked out.
        return rec.crc32c if verify_checksum else None
    return None


def wrap_raw(
    raw: np.ndarray, info: dtypes.DtypeInfo, shape: tuple[int, ...], name: str, *, as_numpy: bool
) -> Any:
    """A tensor over raw bytes the decoder owns (a numpy view, or a torch tensor
    sharing them): what ``decode_tensor_map`` returns for a decoded tensor."""
    if as_numpy:
        return _to_numpy(_bare(name, info, shape, raw), raw)
    return torch_support.from_raw(raw, info, shape, False)


def tensors_from_raw(
    raws: list[tuple[str, dtypes.DtypeInfo, tuple[int, ...], np.ndarray]],
    *,
    as_numpy: bool = False,
    expect: Mapping[str, Any] | None = None,
    **_ignored: Any,
) -> dict[str, Any]:
    """Tensors over decoded raw bytes the caller hands over, (name, dtype,
    shape, uint8 array) each: a streamed message's weights. ``expect`` is
    checked as in :func:`read_tensor_map`; the other options of
    :func:`decode_tensor_map` have nothing left to do (the data was checked as
    it was decoded)."""
    if expect is not None:
        layout = _layout(expect)
        for name, info, shape, raw in raws:
            _check_expected(_bare(name, info, shape, raw), layout)
        if len(raws) != len(layout):
            missing = sorted(set(layout) - {name for name, *_ in raws})
            raise SerializationException(
                f"{len(missing)} tensor(s) of the expected layout missing: "
                f"{', '.join(repr(n) for n in missing[:5])}"
            )
    if not as_numpy:
        torch_support.import_torch()
    return {
        name: wrap_raw(raw, info, shape, name, as_numpy=as_numpy) for name, info, shape, raw in raws
    }


def _bare(name: str, info: dtypes.DtypeInfo, shape: tuple[int, ...], raw: Any) -> TensorRecord:
    """A record describing decoded bytes (no wire data)."""
    return TensorRecord(name, info, shape, 0, 0, raw.nbytes, 0, memoryview(b""))
