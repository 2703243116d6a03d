"""The sending side of a streamed transfer (wire format section 14.5): a
message's unencoded weights become records as they are encoded.

The head (the envelope and the tensors' names, dtypes and shapes) needs no
encoding, so it is ready at once. Each tensor is then cut into runs of
elements that fit a record once encoded, and worker threads encode the runs
(compression releases the GIL) a few ahead of the one being sent, so that
encoding overlaps sending and memory holds only those few. With
``EncodeOptions.lossy``, each run of a tensor the config applies to (its name,
dtype and size, judged on the whole tensor) is lossy-encoded as a tensor of its
own (see :func:`chunk_lossy`). After a run that ends its tensor, the next
exact tensors go in the same record, whole, while they fit (a packed chunk,
:func:`pack`): without it, each tensor of a few KB took a record, and a
produce request, of its own. A record with nothing lossy and little to
compress (its raw bytes take a CRC-32C and one copy, about 0.2 ms per MB; at
most LOOP_COMPRESS_BYTES compressed) is encoded on the event loop when its turn
comes, a tensor's probe too: handing it to a worker thread and back cost more
than the work (the 410 MB model's sender took 0.47 CPU-s with every record on
the workers, 0.34 with the raw ones on the loop; raw Kafka's producer, 0.32).
The seal carries the part count and the CRC-32C of every earlier record: each
record's is computed beside its encoding, and the event loop combines them in
order (:func:`~flwire._protowire.crc32c_combine`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any, cast

from flwire._protowire import crc32c, crc32c_around, crc32c_combine
from flwire.exceptions import SerializationException
from flwire.messages import Message
from flwire.tensors.encode import PROBE_BYTES, compresses, encode_elements, pays
from flwire.tensors.lossy import LossyConfig, check_encodable
from flwire.tensors.lossy.params import MAX_TOPK_DENSITY, SCALE_BYTES
from flwire.tensors.options import EncodeOptions
from flwire.tensors.parallel import default_threads, executor
from flwire.tensors.sources import Source
from flwire.transport.streaming.format import CHUNK_OVERHEAD, chunk_part, head_part, seal_part
from flwire.v1 import messages_pb2, transfer_pb2

#: Runs being encoded ahead of the one being sent, per worker thread.
AHEAD_PER_THREAD = 2
#: The least raw tensor data a chunk's record must have room for.
MIN_RUN_BYTES = 64
#: Room a record leaves for each whole tensor packed after its first one (its
#: map entry's key and length, its header fields, up to 63 bytes of alignment
#: padding): at most about 110 bytes.
PACKED_TENSOR_OVERHEAD = 192
#: The most tensor bytes a record may compress and still be encoded on the event
#: loop (see StreamWriter._on_loop): a zstd pass over that much takes about as
#: long as handing the record to a worker thread and back.
LOOP_COMPRESS_BYTES = 64 << 10


@dataclass(frozen=True)
class _Run:
    tensor_index: int
    start: int
    stop: int


def run_elements(width: int, max_run_bytes: int, lossy: LossyConfig | None = None) -> int:
    """How many elements of ``width`` bytes a run holds, so that its encoding
    takes at most ``max_run_bytes`` of data (at least one element): as many as
    fit raw; under a cast, as many as fit at 2 bytes each; under block int8,
    whole blocks of ``block_size`` int8 values and their 4-byte scale (a run
    of ``max_run_bytes - 4`` elements when one block does not fit). Top-k
    runs stay raw-sized: a run whose top-k would not be smaller goes raw."""
    if lossy is not None and lossy.method in ("float16", "bfloat16"):
        return max(1, max_run_bytes // 2)
    if lossy is not None and lossy.method == "int8":
        block = lossy.block_size
        if block + SCALE_BYTES <= max_run_bytes:
            return max_run_bytes // (block + SCALE_BYTES) * block
        return max(1, max_run_bytes - SCALE_BYTES)
    return max(1, max_run_bytes // width)


def runs(
    sources: list[Source], max_run_bytes: int, lossy: list[LossyConfig | None] | None = None
) -> list[_Run]:
    """Each tensor's elements in runs whose encoding takes at most
    ``max_run_bytes`` (:func:`run_elements`; ``lossy``: each tensor's config,
    None for an exact one); a tensor without elements has none."""
    out = []
    for i, src in enumerate(sources):
        width = src.dtype.itemsize
        step = run_elements(width, max_run_bytes, lossy[i] if lossy else None)
        count = src.raw.nbytes // width
        out += [_Run(i, a, min(a + step, count)) for a in range(0, count, step)]
    return out


@dataclass(frozen=True)
class _Record:
    """One chunk record: ``run``, then the whole tensors ``packed`` (by index,
    each the next one), which fill what the run left of the record."""

    run: _Run
    packed: tuple[int, ...] = ()


def pack(
    sources: list[Source], planned: list[_Run], budget: int, lossy: list[bool]
) -> list[_Record]:
    """The chunk records of ``planned`` (:func:`runs`, ``budget`` bytes each):
    after a run that ends its tensor, the next tensors go in the same record,
    whole, while they fit in what is left (less PACKED_TENSOR_OVERHEAD each;
    a tensor of 64 KB or less, or the tail of a larger one, would otherwise
    take a record of its own). Lossy tensors and tensors without elements are
    never packed, nor packed after."""
    out: list[_Record] = []
    i = 0
    while i < len(planned):
        run = planned[i]
        i += 1
        first = sources[run.tensor_index]
        width = first.dtype.itemsize
        packed: list[int] = []
        if not lossy[run.tensor_index] and run.stop * width == first.raw.nbytes:
            room = budget - (run.stop - run.start) * width
            while i < len(planned):
                nxt = planned[i]
                t = run.tensor_index + len(packed) + 1
                if nxt.tensor_index != t or lossy[t]:  # t has no elements, or is lossy
                    break
                nbytes = sources[t].raw.nbytes
                if nxt.stop * sources[t].dtype.itemsize != nbytes:  # not whole
                    break
                if nbytes + PACKED_TENSOR_OVERHEAD > room:
                    break
                packed.append(t)
                room -= nbytes + PACKED_TENSOR_OVERHEAD
                i += 1
        out.append(_Record(run, tuple(packed)))
    return out


def chunk_lossy(config: LossyConfig, numel: int, start: int, stop: int) -> LossyConfig | None:
    """The lossy config of the run ``[start, stop)`` of a tensor of ``numel``
    elements that ``config`` applies to (judged whole): the same method, applied
    to the run whatever its size and name; None when the run goes exact.

    Top-k keeps the largest elements of each run: the run's share of the
    tensor's ``K`` (``config.k_for(numel)``), ``floor(K x stop / numel) -
    floor(K x start / numel)``, so that the shares add up to ``K``; at least 1,
    and at most one in ``MAX_TOPK_DENSITY`` (8) of the run's elements (a run
    shorter than that goes exact)."""
    k = None
    if config.method == "topk":
        count = stop - start
        if count < MAX_TOPK_DENSITY:
            return None
        total = config.k_for(numel)
        share = total * stop // numel - total * start // numel
        k = min(max(1, share), count // MAX_TOPK_DENSITY)
    return replace(config, topk_k=k, min_elements=0, include=None, exclude=None)


def lossy_applies(config: LossyConfig, src: Source) -> bool:
    """Whether ``config`` makes ``src`` lossy, judged on the whole tensor as a
    whole message judges it: its name, dtype and size, and for top-k a ``K`` of
    at most one element in ``MAX_TOPK_DENSITY``."""
    numel = src.raw.nbytes // src.dtype.itemsize
    if not config.applies_to(src.name, src.dtype, numel):
        return False
    return config.method != "topk" or config.k_for(numel) * MAX_TOPK_DENSITY <= numel


def ending_crc(value: bytes, pieces: list[Any], crcs: list[int | None]) -> int:
    """The CRC-32C of ``value``, which ends with ``pieces`` (``crcs``: each one's
    CRC-32C where known, else None): the bytes of the pieces whose CRC is known
    (an uncompressed tensor's, computed by the encoder; a packed chunk has one
    per raw tensor) are not read again."""
    sizes = [memoryview(p).nbytes for p in pieces]
    at = len(value) - sum(sizes)
    spans = []
    for size, known in zip(sizes, crcs, strict=True):
        if known is not None:
            spans.append((at, size, known))
        at += size
    return crc32c_around(value, spans)


def tensor_infos(sources: list[Source]) -> list[transfer_pb2.TensorInfo]:
    return [
        transfer_pb2.TensorInfo(name=src.name, dtype=cast(Any, src.dtype.wire), shape=src.shape)
        for src in sources
    ]


def head_envelope(msg: Message) -> messages_pb2.Envelope:
    """The envelope of a streamed message: its body's weights field absent."""
    if msg.envelope.HasField("signature"):
        raise SerializationException(
            "a streamed message is signed in its seal, not in its envelope: pass the "
            "signer to the stream, not a signed message"
        )
    return msg.envelope


class StreamWriter:
    """The record values of one streamed message, in order: ``async for value in
    writer.parts()``. ``max_value_bytes`` is what a record's value may take.
    A message signed with ``sign_in_place`` has a seal signer: it is fed every
    record before the seal, and signs the seal."""

    def __init__(
        self,
        msg: Message,
        max_value_bytes: int,
        *,
        threads: int | None = None,
    ) -> None:
        sources = msg.sources
        if sources is None:
            raise SerializationException(
                "this message's weights are encoded already; build it with "
                "EncodeOptions(stream=True) to stream it"
            )
        self.msg = msg
        self.sources = sources
        self.transfer_id = msg.message_id
        options = msg.encode_options
        #: The lossy config, applied run by run (see :func:`chunk_lossy`).
        self.lossy_config = options.lossy
        self.options: EncodeOptions = replace(options, threads=1, stream=False, lossy=None)
        self._raw = replace(self.options, compression="none", shuffle=False)
        self.max_value_bytes = max_value_bytes
        fixed = CHUNK_OVERHEAD + len(self.transfer_id.encode())
        budget = max_value_bytes - fixed
        if budget < MIN_RUN_BYTES:
            raise SerializationException(
                f"records of {max_value_bytes} bytes (the transport's max_record_bytes less "
                "the key and headers) are too small to stream a message into: a chunk "
                f"needs {fixed + MIN_RUN_BYTES} bytes at least; raise max_record_bytes"
            )
        lossy = self.lossy_config
        #: Per tensor, whether the lossy config applies to it (judged whole).
        self.lossy = [lossy is not None and lossy_applies(lossy, src) for src in sources]
        planned = runs(sources, budget, [lossy if on else None for on in self.lossy])
        #: The chunk records, in order.
        self.records = pack(sources, planned, budget, self.lossy)
        self.workers = threads or options.threads or default_threads()
        #: Per tensor: how it goes, once its probe is made (see _choose).
        self._chosen: dict[int, EncodeOptions] = {}
        self.signer = msg.seal_signer
        #: Bytes of raw tensor data encoded so far, and in all.
        self.raw_done = 0
        self.raw_total = sum(src.raw.nbytes for src in sources)

    def _encode(self, k: int, options: EncodeOptions | None) -> tuple[bytes, int, EncodeOptions]:
        """Run ``k``'s chunk record, its CRC-32C (computed here, beside the
        encoding: the seal only combines the records' CRCs), and the options
        of its tensor's later runs. ``options`` None: this is the tensor's first
        run, and the options are chosen here (see :meth:`_choose`)."""
        record = self.records[k]
        run = record.run
        src = self.sources[run.tensor_index]
        config = self.lossy_config
        lossy = config is not None and self.lossy[run.tensor_index]
        if config is not None and lossy:
            # Each run is compressed, and kept raw unless that paid: no probe.
            numel = src.raw.nbytes // src.dtype.itemsize
            chosen = replace(self.options, lossy=chunk_lossy(config, numel, run.start, run.stop))
        else:
            chosen = self._choose(run) if options is None else options
        crcs: list[int | None] = []
        if record.packed:
            packed = [(self.sources[t], self._compresses_whole(t)) for t in record.packed]
            pieces = encode_elements(
                src,
                run.start,
                run.stop,
                self.options,
                crcs=crcs,
                packed=packed,
                compress_first=chosen.codec is not None,
            )
        else:
            pieces = encode_elements(src, run.start, run.stop, chosen, crcs=crcs)
        value = chunk_part(self.transfer_id, k + 1, run.tensor_index, run.start, pieces)
        if lossy:
            chosen = self.options  # each later run chooses its own
        elif options is None and self._run_bytes(run) <= PROBE_BYTES:
            chosen = self._later_runs(value, run)
        return value, ending_crc(value, pieces, crcs), chosen

    def _compresses_whole(self, t: int) -> bool:
        """Whether a tensor packed whole is compressed (kept raw unless that
        paid): as :meth:`_choose` decides for a tensor of one run."""
        run = _Run(t, 0, self.sources[t].raw.nbytes // self.sources[t].dtype.itemsize)
        return self._choose(run).codec is not None

    def _on_loop(self, record: _Record, options: EncodeOptions | None) -> bool:
        """Whether ``record`` is encoded on the event loop: nothing in it is lossy,
        and it compresses at most LOOP_COMPRESS_BYTES of tensor data (``options``:
        its tensor's, None for a first run: its probe is then made here)."""
        if self.lossy[record.run.tensor_index]:
            return False
        if self.options.codec is None:
            return True
        chosen = self._choose(record.run) if options is None else options
        work = self._run_bytes(record.run) if chosen.codec is not None else 0
        for t in record.packed:
            if self._compresses_whole(t):
                work += self.sources[t].raw.nbytes
        return work <= LOOP_COMPRESS_BYTES

    def _choose(self, run: _Run) -> EncodeOptions:
        """How a tensor goes, from its first run (made once per tensor): as
        asked, unless a probe of its first PROBE_BYTES does not save
        ``min_saving`` under the codec (:func:`flwire.tensors.encode.compresses`);
        then raw. A first run no larger than the probe goes as asked."""
        known = self._chosen.get(run.tensor_index)
        if known is not None:
            return known
        if self._run_bytes(run) <= PROBE_BYTES:
            known = self.options
        else:
            src = self.sources[run.tensor_index]
            known = self.options if compresses(src, self.options) else self._raw
        self._chosen[run.tensor_index] = known
        return known

    def _run_bytes(self, run: _Run) -> int:
        return (run.stop - run.start) * self.sources[run.tensor_index].dtype.itemsize

    def _later_runs(self, first: bytes, run: _Run) -> EncodeOptions:
        """How the later runs of a tensor whose first run was no larger than the
        probe are encoded: as asked, unless that run did not save ``min_saving``;
        then raw."""
        if self.options.codec is None or pays(len(first), self._run_bytes(run), self.options):
            return self.options
        return self._raw

    async def _check_lossy(self) -> None:
        """Refuse, before the head goes out, a lossy tensor holding a value its
        method cannot carry (``lossy.check_encodable``: a cast's overflow, int8 on
        NaN): refused halfway, the stream would be left incomplete at every
        receiver until its part timeout. One pass over those tensors, on a
        worker thread."""
        config = self.lossy_config
        if config is None or config.method == "topk" or not any(self.lossy):
            return
        lossy_sources = [src for src, on in zip(self.sources, self.lossy, strict=True) if on]

        def check() -> None:
            for src in lossy_sources:
                check_encodable(src.name, src.dtype, src.raw, config)

        await asyncio.wrap_future(executor(self.workers).submit(check))

    async def parts(self) -> AsyncIterator[bytes]:
        """The head, each chunk as soon as it is encoded, then the seal."""
        await self._check_lossy()
        signer = self.signer() if self.signer else None
        head = head_part(
            self.transfer_id,
            head_envelope(self.msg),
            tensor_infos(self.sources),
            signed=signer is not None,
        )
        if len(head) > self.max_value_bytes:
            # Refused before any record is written: a stream without its head is
            # lost to every reader.
            raise SerializationException(
                f"the stream's head (the envelope and {len(self.sources)} tensors' names, "
                f"dtypes and shapes) takes {len(head)} bytes, above the record limit of "
                f"{self.max_value_bytes}: raise the transport's record limit, or send "
                "fewer tensors or a smaller envelope"
            )
        crc = crc32c(head)
        if signer:
            signer.update(head)
        yield head
        workers = executor(self.workers)
        # A worker's job, or None for a record encoded on the loop when reached.
        ahead: deque[Future[tuple[bytes, int, EncodeOptions]] | None] = deque()
        submitted = 0
        # Per tensor, the options of its later runs: chosen with its first run.
        decided: dict[int, EncodeOptions] = {}
        try:
            for k in range(len(self.records)):
                while (
                    submitted < len(self.records) and len(ahead) < AHEAD_PER_THREAD * self.workers
                ):
                    record = self.records[submitted]
                    options = decided.get(record.run.tensor_index)
                    if record.run.start and options is None:
                        break  # its tensor's first run is still being encoded
                    if self._on_loop(record, options):
                        ahead.append(None)
                    else:
                        ahead.append(workers.submit(self._encode, submitted, options))
                    submitted += 1
                record = self.records[k]
                run = record.run
                job = ahead.popleft()
                if job is None:
                    value, value_crc, chosen = self._encode(k, decided.get(run.tensor_index))
                else:
                    value, value_crc, chosen = await asyncio.wrap_future(job)
                if run.start == 0:
                    decided[run.tensor_index] = chosen
                crc = crc32c_combine(crc, value_crc, len(value))
                if signer:
                    signer.update(value)
                self.raw_done += self._run_bytes(run) + sum(
                    self.sources[t].raw.nbytes for t in record.packed
                )
                yield value
        finally:
            for future in ahead:
                if future is not None:
                    future.cancel()
        index = len(self.records) + 1
        yield seal_part(self.transfer_id, index, crc, signer.finish() if signer else None)
