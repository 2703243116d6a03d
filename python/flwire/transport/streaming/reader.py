"""The receiving side of streamed transfers (wire format section 14.5).

A head declares the message and its tensors; each tensor's buffer is made
when its first chunk arrives, checked (uninitialised, ``buffers.empty``: the
memory pages become resident as chunks fill them) and each chunk is decoded,
on a worker thread, straight into its place: nothing is reassembled. The seal
is checked against what arrived (part count, CRC-32C of every record), then
the message is handed out with its tensors.

Bounds: a head is refused when its tensors exceed ``max_stream_bytes``, or
would take the streams under way past ``max_pending_bytes`` (declared sizes
count, as each becomes resident, plus STREAM_COST per stream and TENSOR_COST
per tensor), or ``max_streams`` are under way already (those under way are
kept; the new one is refused), or it declares more tensors than
``DecodeLimits.tensor_cap`` allows for their declared size. A stream whose
chunks would decode past ``DecodeLimits.max_expansion`` times the bytes of its
records (at least ``expansion_floor_bytes``) is given up on before the chunk is
decoded, and so is one whose tensor memory the host refuses (MemoryError). A
stream with no new part for ``part_timeout`` seconds is given up on. Parts
must come in order, as a writer sends them to one partition: a part at an
index already passed is a redelivered copy and is skipped; one beyond the next
expected index means parts were lost, and ends the transfer, reported.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flwire._args import require_count, require_positive
from flwire._protowire import byte_view, crc32c, crc32c_around, crc32c_combine
from flwire.exceptions import SerializationException
from flwire.messages import Message
from flwire.messages.envelope import split as split_envelope
from flwire.messages.schema import BODY_TYPES
from flwire.messages.validation import describe, violations
from flwire.security.digest import stream_hasher
from flwire.tensors import buffers, dtypes
from flwire.tensors.decode import check_element_dtype, decode_elements_into, read_chunk
from flwire.tensors.parallel import default_threads, executor
from flwire.tensors.records import DecodeLimits, resolve_limits
from flwire.tensors.sources import Source
from flwire.transport.streaming.format import StreamPart, parse_part
from flwire.v1 import messages_pb2, transfer_pb2

logger = logging.getLogger(__name__)

#: Bytes accounted for each stream besides its tensors.
STREAM_COST = 4096
#: Bytes accounted for each tensor a head declares, besides its data: what the
#: stream keeps per tensor (its Source, name and bookkeeping: about 300 bytes).
TENSOR_COST = 512
_EMPTY = np.empty(0, np.uint8)
#: Strides are int64: a shape whose byte span reaches this is refused.
_MAX_SPAN = 1 << 63


@dataclass
class Finished:
    """A stream completed: its message (weights decoded), its records' tokens,
    and the seal's signature (None when unsigned) with the digest it signs."""

    transfer_id: str
    message: Message
    tokens: list[Any]
    signature: messages_pb2.Signature | None = None
    #: BLAKE3 of every record before the seal (signed streams only).
    digest: bytes | None = None


@dataclass
class Failed:
    """A stream given up on (or a part skipped, ``duplicate``), with tokens."""

    transfer_id: str
    reason: str
    tokens: list[Any]
    parts_received: int = 0
    total_bytes: int = 0
    duplicate: bool = False

    @property
    def unreadable(self) -> bool:
        """A record that is not a stream part at all: no transfer to name."""
        return not self.transfer_id


#: How the decoder names a chunk's own (unnamed, first) tensor in its messages.
_UNNAMED = re.compile(r"^tensor (''|#0)(: | )")


def _named(reason: str, where: str) -> str:
    """A decoder's ``reason`` about a chunk's unnamed tensor, naming it by
    ``where`` (the part, the stream's tensor and the first element) instead."""
    found = _UNNAMED.match(reason)
    if found is None:
        return f"{where}: {reason}"
    return where + found.group(2) + reason[found.end() :]


def _decode_chunk(value: Any, places: list[tuple[Any, np.ndarray]]) -> tuple[int, int]:
    """A worker's job for one chunk: decode each of its tensors' elements into
    place (a lossy one is reconstructed there); return the CRC-32C and length
    of its whole record (the seal's checksum, combined in order on the event
    loop). Raw elements are read once: their CRC-32C, checked by the decode,
    is combined with that of the bytes around them."""
    known = []
    for rec, out in places:
        data_crc = decode_elements_into(rec, out)
        if data_crc is not None:
            known.append((rec.data, data_crc))
    return crc32c_of_views(value, known), memoryview(value).nbytes


def crc32c_of_views(value: Any, known: list[tuple[memoryview, int]]) -> int:
    """The CRC-32C of ``value`` given, for each ``(inner, inner_crc)`` of
    ``known``, the CRC-32C of ``inner``, a view on part of it (found by
    address): only the bytes around them are read; all of ``value`` when one
    is not a view on it after all."""
    whole = np.frombuffer(value, dtype=np.uint8)
    spans = []
    for inner, inner_crc in known:
        part = np.frombuffer(inner, dtype=np.uint8)
        start = part.ctypes.data - whole.ctypes.data
        if not part.nbytes or start < 0 or start + part.nbytes > whole.nbytes:
            return crc32c(value)
        spans.append((start, part.nbytes, inner_crc))
    spans.sort()
    if any(a[0] + a[1] > b[0] for a, b in itertools.pairwise(spans)):
        return crc32c(value)  # overlapping: not the spans of one record's tensors
    return crc32c_around(value, spans)


@dataclass
class _Stream:
    transfer_id: str
    envelope: messages_pb2.Envelope
    sources: list[Source]
    declared: int
    last_new: float
    next_index: int = 1
    crc: int = 0
    #: Per tensor: the next element expected, and its size in bytes.
    filled: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    tokens: list[Any] = field(default_factory=list)
    #: Decode jobs not settled yet, in part order; each gives its record's
    #: CRC-32C and length.
    jobs: deque[Future[tuple[int, int]]] = field(default_factory=deque)
    received: int = 0
    #: Bytes of the records received (the head's included), and the raw bytes
    #: their chunks decode to: DecodeLimits.max_expansion bounds the one by the other.
    arrived: int = 0
    decoded: int = 0
    #: A BLAKE3 hasher fed every record, on the digest thread (signed streams).
    hasher: Any = None
    digesting: Future[None] | None = None

    @property
    def held(self) -> int:
        return STREAM_COST + TENSOR_COST * len(self.sources) + self.declared


class StreamAssembler:
    """Decodes streamed transfers as their parts arrive, within bounds."""

    def __init__(
        self,
        *,
        max_stream_bytes: int = 16 << 30,
        max_pending_bytes: int = 32 << 30,
        max_streams: int = 1024,
        part_timeout: float = 120.0,
        limits: DecodeLimits | None = None,
        threads: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        remember_ended: int = 10_000,
    ) -> None:
        self.max_stream_bytes = require_count(max_stream_bytes, "max_stream_bytes", unit="bytes")
        self.max_pending_bytes = require_count(max_pending_bytes, "max_pending_bytes", unit="bytes")
        self.max_streams = require_count(max_streams, "max_streams", minimum=1)
        self.part_timeout = require_positive(part_timeout, "part_timeout", unit="seconds")
        self.limits = resolve_limits(limits)
        self.workers = threads or default_threads()
        require_count(self.workers, "threads", minimum=1)
        require_count(remember_ended, "remember_ended")
        self._clock = clock
        self._streams: OrderedDict[str, _Stream] = OrderedDict()
        #: Ended transfer ids: True when completed, False when given up on.
        self._ended: OrderedDict[str, bool] = OrderedDict()
        self._remember_ended = remember_ended
        self.pending_bytes = 0
        #: Decode jobs not finished yet, over all streams.
        self._jobs_in_flight = 0
        # Counted up on the event loop, down on the worker threads.
        self._jobs_lock = threading.Lock()

    @property
    def pending_streams(self) -> int:
        return len(self._streams)

    def holds(self, transfer_id: str) -> bool:
        return transfer_id in self._streams

    def progress(self, transfer_id: str) -> tuple[int, int]:
        """(bytes of tensor data received, declared) of a stream under way."""
        stream = self._streams.get(transfer_id)
        if stream is None:
            return 0, 0
        return stream.decoded, stream.declared

    async def add(self, value: Any, token: Any) -> tuple[Finished | None, list[Failed]]:
        """Take one record value of a stream. Returns the finished message when
        this was a seal that checked out, and what was given up on or skipped
        (each with its tokens, to settle)."""
        try:
            value = byte_view(value, "StreamPart")  # contiguous, whatever was handed over
            part = parse_part(value)
        except SerializationException as exc:
            return None, [Failed("", f"not a valid stream part: {exc}", [token])]
        ident = part.transfer_id
        completed = self._ended.get(ident)
        if completed is not None:
            if completed or part.head is None:
                return None, [Failed(ident, "part of an ended stream", [token], duplicate=True)]
            # A head of a transfer given up on: its sender sends it again (a send
            # that failed and is retried): a new try.
            del self._ended[ident]
        stream = self._streams.get(ident)
        if stream is None:
            if part.head is None:
                # Its head was never seen here (read from the middle, or already
                # given up on): nothing to decode it into.
                self._remember(ident)
                reason = f"part {part.index} of a stream whose head was not received"
                return None, [Failed(ident, reason, [token])]
            return None, self._start(part, value, token)
        if part.index < stream.next_index:
            return None, [Failed(ident, "a part already received", [token], duplicate=True)]
        if part.index > stream.next_index:
            return None, [
                self._give_up(
                    ident,
                    f"part {part.index} arrived where part {stream.next_index} was expected "
                    "(parts lost)",
                    token,
                )
            ]
        stream.next_index += 1
        stream.last_new = self._clock()
        stream.tokens.append(token)
        stream.received += 1
        stream.arrived += value.nbytes
        self._streams.move_to_end(ident)
        if part.chunk is not None:
            self._digest(stream, value)
            try:
                job = self._chunk_job(stream, part, value)
            except SerializationException as exc:
                return None, [self._give_up(ident, str(exc))]
            except MemoryError as exc:
                reason = (
                    f"part {part.index}: no memory for tensor {part.chunk.tensor_index}'s "
                    f"buffer ({exc}); lower StreamAssembler(max_stream_bytes=, "
                    "max_pending_bytes=) to what this host can hold"
                )
                return None, [self._give_up(ident, reason)]
            stream.jobs.append(job)
            failed = self._failed_chunk(stream)
            if failed is not None:
                return None, [self._give_up(ident, f"a chunk did not decode: {failed}")]
            await self._throttle()
            return None, []
        assert part.seal is not None
        return await self._seal(stream, part.seal)

    def _start(self, part: StreamPart, value: Any, token: Any) -> list[Failed]:
        ident = part.transfer_id
        head = part.head
        assert head is not None
        try:
            envelope, infos, declared = self._check_head(head, ident)
        except SerializationException as exc:
            self._remember(ident)
            return [Failed(ident, f"refused its head: {exc}", [token])]
        if declared > self.max_stream_bytes:
            self._remember(ident)
            counted = len(infos) + 1  # the sum stops at the tensor that passes the bound
            some = (
                f" in its first {counted} of {len(head.tensors)}"
                if counted < len(head.tensors)
                else ""
            )
            return [
                Failed(
                    ident,
                    f"refused: declares at least {declared} bytes of tensors{some}, above "
                    f"max_stream_bytes {self.max_stream_bytes}",
                    [token],
                    1,
                    declared,
                )
            ]
        cost = STREAM_COST + TENSOR_COST * len(infos) + declared
        if len(self._streams) >= self.max_streams or (
            self.pending_bytes + cost > self.max_pending_bytes
        ):
            self._remember(ident)
            return [
                Failed(
                    ident,
                    f"refused: {len(self._streams)} streams holding {self.pending_bytes} bytes "
                    f"under way already (max_streams {self.max_streams}, max_pending_bytes "
                    f"{self.max_pending_bytes})",
                    [token],
                    1,
                    declared,
                )
            ]
        # A tensor's buffer is made when its first chunk arrives (buffers.empty: its
        # pages become resident as chunks fill them), so a head alone holds nothing.
        sources = [Source(name, dtype, shape, _EMPTY) for name, dtype, shape, _ in infos]
        stream = _Stream(
            ident,
            envelope,
            sources,
            declared,
            self._clock(),
            crc=crc32c(value),
            filled=[0] * len(sources),
            sizes=[nbytes for *_, nbytes in infos],
            tokens=[token],
            received=1,
            arrived=value.nbytes,
        )
        if head.signed:
            try:
                stream.hasher = stream_hasher()
            except ImportError as exc:
                return [Failed(ident, f"a signed stream, and {exc}", [token], 1, declared)]
            self._digest(stream, value)
        self._streams[ident] = stream
        self.pending_bytes += stream.held
        return []

    def _digest(self, stream: _Stream, value: Any) -> None:
        """Feed a record to the stream's digest, in order, on the digest thread."""
        if stream.hasher is not None:
            stream.digesting = executor(1).submit(stream.hasher.update, value)

    def _check_head(
        self, head: transfer_pb2.StreamHead, transfer_id: str
    ) -> tuple[
        messages_pb2.Envelope, list[tuple[str, dtypes.DtypeInfo, tuple[int, ...], int]], int
    ]:
        """The head's envelope (checked as any message is), its tensors as (name,
        dtype, shape, bytes), and their bytes in all."""
        limits = self.limits
        if len(head.tensors) > limits.max_tensors:
            raise SerializationException(
                f"{len(head.tensors)} tensors, above DecodeLimits.max_tensors {limits.max_tensors}"
            )
        envelope, weights = split_envelope(head.envelope.SerializeToString())
        if weights is not None:
            raise SerializationException("the head's envelope carries weights of its own")
        body = envelope.WhichOneof("body")
        if body is not None and BODY_TYPES[body].weights_field is None:
            raise SerializationException(f"a {body} message carries no weights to stream")
        if envelope.HasField("signature"):
            raise SerializationException(
                "the head's envelope is signed; a streamed message is signed in its seal"
            )
        if envelope.message_id != transfer_id:
            raise SerializationException(
                f"the head's envelope has message_id {envelope.message_id!r}, not the "
                f"transfer_id {transfer_id!r}"
            )
        names: set[str] = set()
        infos = []
        declared = 0
        for info in head.tensors:
            dtype = dtypes.from_wire(info.dtype, info.name)
            if info.name in names:
                raise SerializationException(f"two tensors named {info.name!r}")
            names.add(info.name)
            if len(info.shape) > limits.max_rank:
                raise SerializationException(
                    f"tensor {info.name!r} has {len(info.shape)} dimensions, above "
                    f"DecodeLimits.max_rank {limits.max_rank}"
                )
            nbytes = dtype.itemsize
            for d in info.shape:
                nbytes *= d
                if nbytes > self.max_stream_bytes:
                    break
            declared += nbytes
            if declared > self.max_stream_bytes:
                break
            span = dtype.itemsize  # what the strides reach: zero dimensions count as one
            for d in info.shape:
                span *= max(d, 1)
                if span >= _MAX_SPAN:
                    # A tensor without elements, but numpy and torch refuse its shape.
                    raise SerializationException(
                        f"tensor {info.name!r} has shape {list(info.shape)}, whose strides "
                        "overflow 64 bits"
                    )
            infos.append((info.name, dtype, tuple(info.shape), nbytes))
        if declared <= self.max_stream_bytes and len(infos) > limits.tensor_cap(declared):
            raise SerializationException(
                f"{len(infos)} tensors declaring {declared} bytes in all, above "
                f"DecodeLimits.max_tensors_per_mib {limits.max_tensors_per_mib} (at least "
                "1 MiB counts)"
            )
        if declared <= self.max_stream_bytes:
            placeholder = [Source(n, d, sh, np.empty(0, np.uint8)) for n, d, sh, _ in infos]
            found = violations(Message.received(envelope, placeholder))
            if found:
                raise SerializationException(describe(found))
        return envelope, infos, declared

    def _chunk_job(self, stream: _Stream, part: StreamPart, value: Any) -> Future[tuple[int, int]]:
        """Check a chunk against its tensor and queue its decoding into place
        (the job also gives its record's CRC-32C and length, for the seal)."""
        chunk = part.chunk
        assert chunk is not None
        if chunk.tensor_index >= len(stream.sources):
            raise SerializationException(
                f"part {part.index}: tensor_index {chunk.tensor_index} of "
                f"{len(stream.sources)} tensors"
            )
        # Its errors name the stream's tensor and the elements: a chunk's own tensors
        # are unnamed, which the decoder's messages would show as tensor ''.
        try:
            recs = read_chunk(chunk.elements, limits=self.limits)
        except SerializationException as exc:
            src = stream.sources[chunk.tensor_index]
            where = f"part {part.index}: tensor {src.name!r} from element {chunk.element_offset}"
            raise SerializationException(_named(str(exc), where)) from None
        checked = []
        for k, rec in enumerate(recs):
            i = chunk.tensor_index + k
            if i >= len(stream.sources):
                raise SerializationException(
                    f"part {part.index}: tensor_index {i} of {len(stream.sources)} tensors "
                    f"(the chunk's tensor {k + 1} of {len(recs)}, packed)"
                )
            src = stream.sources[i]
            width = src.dtype.itemsize
            offset = chunk.element_offset if k == 0 else 0
            if offset != stream.filled[i]:
                raise SerializationException(
                    f"part {part.index}: a chunk of tensor {src.name!r} starts at element "
                    f"{offset}, where {stream.filled[i]} was expected"
                )
            try:
                check_element_dtype(rec, src.dtype)
            except SerializationException as exc:
                raise SerializationException(
                    f"part {part.index}: tensor {src.name!r} from element {offset}: {exc}"
                ) from None
            end = offset + rec.numel
            rec = dataclasses.replace(rec, name=f"{src.name}[{offset}:{end}]")
            self._check_expansion(stream, part.index, rec.decoded_size)
            room = stream.sizes[i] // width - offset
            if rec.numel > room:
                raise SerializationException(
                    f"part {part.index}: a chunk of {rec.numel} elements of tensor "
                    f"{src.name!r}, which has room for {room} more"
                )
            if k < len(recs) - 1 and rec.numel != room:
                raise SerializationException(
                    f"part {part.index}: a packed chunk's tensor {k + 1} of {len(recs)} holds "
                    f"{rec.numel} of the {room} elements left of tensor {src.name!r}; every "
                    "tensor of a chunk but its last must end its tensor"
                )
            checked.append((i, offset, rec))
        # Every tensor of the chunk checked: the places it decodes into.
        places = []
        for i, offset, rec in checked:
            src = stream.sources[i]
            if src.raw.nbytes != stream.sizes[i]:
                # Its first chunk: the buffer is made now (MemoryError if refused).
                src = Source(src.name, src.dtype, src.shape, buffers.empty(stream.sizes[i]))
                stream.sources[i] = src
            start = offset * src.dtype.itemsize
            places.append((rec, src.raw[start : start + rec.numel * src.dtype.itemsize]))
            stream.filled[i] += rec.numel
        with self._jobs_lock:
            self._jobs_in_flight += 1
        future = executor(self.workers).submit(_decode_chunk, value, places)
        future.add_done_callback(self._job_done)
        return future

    def _check_expansion(self, stream: _Stream, index: int, raw_size: int) -> None:
        """Count a chunk's decoded bytes, refusing them past what the records
        received allow: at most ``max(expansion_floor_bytes, max_expansion x
        received)``, as a whole TensorMap's are by its size (section 11), so that
        a few compressed records cannot fill gigabytes of tensor memory."""
        stream.decoded += raw_size
        limits = self.limits
        if limits.max_expansion is None:
            return
        allowed = max(limits.expansion_floor_bytes, limits.max_expansion * stream.arrived)
        if stream.decoded > allowed:
            raise SerializationException(
                f"part {index}: the stream's chunks decode to {stream.decoded} bytes from "
                f"{stream.arrived} bytes of records, over {limits.max_expansion:g} times "
                "their size (DecodeLimits.max_expansion; pass StreamAssembler(limits=) a "
                "higher one, or None, if you expect models this compressible: mostly zeros)"
            )

    @staticmethod
    def _failed_chunk(stream: _Stream) -> BaseException | None:
        """Settle the stream's finished decode jobs from the front, combining
        their records' CRCs into the stream's; the error of the first that
        failed (the stream is then given up on at once, not at its seal, so its
        buffers are not held for the rest of the transfer)."""
        while stream.jobs and stream.jobs[0].done():
            job = stream.jobs.popleft()
            error = None if job.cancelled() else job.exception()
            if error is not None:
                if not isinstance(error, (SerializationException, MemoryError)):
                    raise error
                return error
            if not job.cancelled():
                stream.crc = crc32c_combine(stream.crc, *job.result())
        return None

    def _job_done(self, _: Future[Any]) -> None:
        with self._jobs_lock:
            self._jobs_in_flight -= 1

    async def _throttle(self) -> None:
        """Wait while more decode jobs are queued than the workers can start."""
        while self._jobs_in_flight > 4 * self.workers:
            await asyncio.sleep(0.001)

    async def _seal(
        self, stream: _Stream, seal: transfer_pb2.StreamSeal
    ) -> tuple[Finished | None, list[Failed]]:
        ident = stream.transfer_id
        if stream.jobs:
            # Waited for without raising: a job given up on (cancelled) meanwhile
            # must not end this call with a CancelledError. Their errors are taken
            # from the jobs below; the wrappers' are marked read.
            waiting = [asyncio.wrap_future(job) for job in stream.jobs]
            await asyncio.wait(waiting)
            for wrapper in waiting:
                if not wrapper.cancelled():
                    wrapper.exception()
        if self._streams.get(ident) is not stream:
            # Given up on while its chunks were decoding (expire() or another receive
            # loop on this assembler): reported there, with this seal's token.
            return None, []
        # Every job is done: this settles them all, in order, their records' CRCs
        # combined into the stream's.
        failed = self._failed_chunk(stream)
        if failed is not None:
            return None, [self._give_up(ident, f"a chunk did not decode: {failed}")]
        count = stream.next_index
        if seal.part_count != count:
            return None, [
                self._give_up(ident, f"the seal counts {seal.part_count} parts; {count} arrived")
            ]
        if seal.stream_crc32c != stream.crc:
            return None, [
                self._give_up(
                    ident,
                    f"CRC-32C of the parts is {stream.crc:#010x}, the seal says "
                    f"{seal.stream_crc32c:#010x} (corrupted parts?)",
                )
            ]
        for i, src in enumerate(stream.sources):
            numel = stream.sizes[i] // src.dtype.itemsize
            if stream.filled[i] != numel:
                return None, [
                    self._give_up(
                        ident,
                        f"tensor {src.name!r} got {stream.filled[i]} of its {numel} elements",
                    )
                ]
        signature = seal.signature if seal.HasField("signature") else None
        if (signature is not None) != (stream.hasher is not None):
            return None, [
                self._give_up(
                    ident,
                    "the seal carries a signature the head did not announce"
                    if signature is not None
                    else "the head announced a signature the seal does not carry",
                )
            ]
        digest = None
        if stream.hasher is not None:
            if stream.digesting is not None:
                await asyncio.wrap_future(stream.digesting)
                if self._streams.get(ident) is not stream:
                    return None, []  # given up on meanwhile, as above
            digest = stream.hasher.digest(length=32)
        self._end(ident, completed=True)
        msg = Message.received(stream.envelope, stream.sources)
        return Finished(ident, msg, stream.tokens, signature, digest), []

    def _remember(self, ident: str, *, completed: bool = False) -> None:
        """Remember an ended transfer: its later parts are skipped, and so is a
        new head of a completed one (a new head of one given up on starts again)."""
        self._ended[ident] = completed
        self._ended.move_to_end(ident)
        if len(self._ended) > self._remember_ended:
            self._ended.popitem(last=False)

    def _end(self, ident: str, *, completed: bool = False) -> _Stream:
        stream = self._streams.pop(ident)
        self.pending_bytes -= stream.held
        self._remember(ident, completed=completed)
        return stream

    def _give_up(self, ident: str, reason: str, token: Any = None) -> Failed:
        stream = self._end(ident)
        for job in stream.jobs:
            job.cancel()
        tokens = stream.tokens + ([token] if token is not None else [])
        logger.error(
            "Gave up on streamed transfer %s (%d bytes declared, %d parts in): %s",
            ident,
            stream.declared,
            stream.received,
            reason,
        )
        return Failed(ident, reason, tokens, stream.received, stream.declared)

    def expire(self) -> list[Failed]:
        """Give up on the streams with no new part for ``part_timeout`` seconds."""
        now = self._clock()
        return [
            self._give_up(ident, f"no new part for {self.part_timeout:.0f} s")
            for ident, stream in list(self._streams.items())
            if now - stream.last_new >= self.part_timeout
        ]
