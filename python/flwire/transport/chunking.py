"""Payloads above a transport's record limit: split into TransferParts, reassemble.

Each part is an encoded ``flwire.v1.TransferPart`` carried in its own record
with the header ``flwire-part``. The receiver keeps each part's data as it
arrives (nothing is allocated for what a part only declares), hands duplicates
back at once, joins the parts and verifies the CRC-32C of the whole, and bounds
what it holds by what it actually holds: a cap on one payload's size, a cap on
the bytes of all incomplete payloads (data plus a fixed cost per part and per
transfer; the least recently active is evicted, with a log line), a cap on
their number (a new transfer beyond it is refused; those under way are kept),
and a timeout that only a new part restarts.

What incomplete transfers hold in memory is bounded too (``max_memory_bytes``):
past it, a part's data is written to a spill file (:mod:`flwire.transport.spill`)
and read back, straight into the payload, when its transfer completes. A server
taking many clients' updates at once, their parts interleaved in one partition,
so holds a few models in memory rather than every update under way; the disk
takes the rest, up to ``max_pending_bytes`` in all.

A copy of a part whose bytes differ from the copy already held is kept beside
it (a few per part, at most the payload's size in all): a forged part that
arrives first must not end someone else's transfer. When every part is in but
the CRC-32C does not match, the transfer stays open, and each differing copy
that arrives is tried, until its timeout reports it as corrupted.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flwire._args import require_count, require_positive
from flwire._protowire import (
    I32,
    LEN,
    VARINT,
    Segments,
    byte_view,
    crc32c,
    decode_utf8,
    expect_wire_type,
    iter_fields,
    len_field,
)
from flwire.exceptions import CommunicationException, SerializationException
from flwire.transport.spill import Spilled, SpillLog
from flwire.v1 import transfer_pb2

logger = logging.getLogger(__name__)

PART_HEADER = "flwire-part"
#: Reason of the Dropped returned for a late duplicate of a completed transfer's part.
LATE_DUPLICATE = "part of a completed transfer"
#: Reason of the Dropped returned for a second copy of a part still being reassembled.
DUPLICATE_PART = "a part already received"
#: Reason of the Dropped returned for a differing copy of a part beyond what its
#: transfer may keep (MAX_COPIES of one part, or its payload's size in all).
SPARE_COPY = "a differing copy of a part beyond what its transfer keeps"
#: Reason of the Dropped returned when a transfer's parts never passed its checks.
CORRUPTED = "reassembled payload does not match its size or CRC-32C (corrupted parts?)"

_F = transfer_pb2.TransferPart.DESCRIPTOR.fields_by_name
_ID, _INDEX, _COUNT = _F["transfer_id"].number, _F["part_index"].number, _F["part_count"].number
_TOTAL, _OFFSET, _CRC = _F["total_size"].number, _F["offset"].number, _F["payload_crc32c"].number
_DATA = _F["data"].number

# Room left in each record for the part's own fields, the key and the headers.
PART_OVERHEAD = 512
#: Longest transfer id a reader takes, in UTF-8 bytes (ids are message ids: UUIDs).
MAX_TRANSFER_ID_BYTES = 128
#: The smallest record limit (``max_record_bytes``) a transport may have: a
#: split message's part needs room for its own fields and its transfer id
#: besides at least one byte of data (records that also carry headers need more).
MIN_RECORD_BYTES = PART_OVERHEAD + MAX_TRANSFER_ID_BYTES + 1
#: Payloads must be below 2 GiB (protobuf parsers refuse larger messages).
MAX_TOTAL_SIZE = (1 << 31) - 1
#: Bytes accounted for each part a transfer holds besides its data (its token and
#: bookkeeping), and for each transfer, so that tiny parts cannot hold memory unseen.
PART_COST = 256
TRANSFER_COST = 1024
#: Bytes a record may hold besides its part's data for the reassembler to keep a
#: view on it rather than a copy of the data (a part's own fields take about 60
#: with a 32-character transfer id); covered by PART_COST.
RECORD_SLACK = 128
#: Copies of one part (differing in their bytes) a transfer keeps, the first included.
MAX_COPIES = 4
#: Combinations of differing copies checked against the CRC-32C for one new copy.
MAX_TRIALS = 8
_UINT32_MAX = (1 << 32) - 1
#: Default of ``Reassembler(max_memory_bytes=)``: data of incomplete transfers
#: kept in memory before parts go to the spill file.
MAX_MEMORY_BYTES = 1 << 30
#: A spill file that refuses writes is logged at most once per this many seconds.
SPILL_WARN_S = 30.0


def split_payload(
    payload: Any, transfer_id: str, max_record_bytes: int
) -> Iterator[tuple[bytes, int, int]]:
    """Encoded parts of ``payload`` (bytes-like, or :class:`Segments` read as
    their concatenation), each at most ``max_record_bytes``; yields (part bytes,
    part index, part count). Each part's data is copied once, into its part."""
    whole = payload if isinstance(payload, Segments) else Segments([payload])
    chunk = max_record_bytes - PART_OVERHEAD - len(transfer_id.encode())
    if chunk <= 0:
        raise CommunicationException(f"record limit {max_record_bytes} is too small to split into")
    if not len(whole):
        raise CommunicationException("an empty payload fits any record: nothing to split")
    count = max(1, -(-len(whole) // chunk))
    checksum = whole.crc32c()
    for index in range(count):
        start = index * chunk
        pieces = whole.pieces(start, start + chunk)
        size = sum(len(p) for p in pieces)
        head = transfer_pb2.TransferPart(
            transfer_id=transfer_id,
            part_index=index,
            part_count=count,
            total_size=len(whole),
            offset=start,
            payload_crc32c=checksum,
        ).SerializeToString()
        # `data` is the highest-numbered field, so appending it keeps field order.
        yield b"".join((head, len_field(_DATA, size), *pieces)), index, count


@dataclass
class Part:
    transfer_id: str
    index: int
    count: int
    total_size: int
    offset: int
    crc: int
    data: memoryview
    #: Bytes of the whole record ``data`` is a view on.
    record_size: int = 0


def parse_part(value: Any) -> Part:
    """Decode a TransferPart, its data as a view on ``value``."""
    buf = byte_view(value, "TransferPart")
    fields: dict[int, Any] = {}
    for f in iter_fields(buf, 0, len(buf), "TransferPart"):
        if f.number in (_ID, _DATA):
            expect_wire_type(f, LEN, "TransferPart")
            fields[f.number] = f
        elif f.number == _CRC:
            expect_wire_type(f, I32, "TransferPart")
            fields[f.number] = f.value
        elif f.number in (_INDEX, _COUNT, _TOTAL, _OFFSET):
            expect_wire_type(f, VARINT, "TransferPart")
            if f.number in (_INDEX, _COUNT) and f.value > _UINT32_MAX:
                # protobuf runtimes would keep the low 32 bits: refuse, never disagree.
                raise SerializationException(
                    f"invalid transfer part: {_NAMES[f.number]} {f.value} does not fit "
                    "its uint32 field"
                )
            fields[f.number] = f.value
    ident = fields.get(_ID)
    data = fields.get(_DATA)
    if ident is not None and ident.end - ident.start > MAX_TRANSFER_ID_BYTES:
        raise SerializationException(
            f"invalid transfer part: transfer_id of {ident.end - ident.start} bytes, "
            f"longer than {MAX_TRANSFER_ID_BYTES}"
        )
    part = Part(
        transfer_id=decode_utf8(buf, ident.start, ident.end, "transfer_id") if ident else "",
        index=fields.get(_INDEX, 0),
        count=fields.get(_COUNT, 0),
        total_size=fields.get(_TOTAL, 0),
        offset=fields.get(_OFFSET, 0),
        crc=fields.get(_CRC, 0),
        data=buf[data.start : data.end] if data else buf[0:0],
        record_size=len(buf),
    )
    if not part.transfer_id or part.count < 1 or part.index >= part.count:
        raise SerializationException(
            f"invalid transfer part: id={part.transfer_id!r} index={part.index} count={part.count}"
        )
    if part.total_size > MAX_TOTAL_SIZE:
        raise SerializationException(
            f"transfer {part.transfer_id}: total_size {part.total_size} is 2 GiB or more "
            "(a message must be smaller)"
        )
    if not part.data:
        # Only payloads above a record limit are split, so every part carries data
        # (this also refuses a truncated part that lost its data field).
        raise SerializationException(f"transfer {part.transfer_id}: part {part.index} is empty")
    if part.offset + len(part.data) > part.total_size:
        raise SerializationException(
            f"transfer {part.transfer_id}: part {part.index} ends at "
            f"{part.offset + len(part.data)}, past the payload size {part.total_size}"
        )
    return part


_NAMES = {_INDEX: "part_index", _COUNT: "part_count"}


@dataclass
class _Pending:
    part: Part  # the first part seen: count, size and checksum to hold the others to
    #: When a part with a new index last arrived (copies do not count).
    last_new: float
    #: Each part received: index -> its copies, first first, as (offset, data: a
    #: view or a copy, see _kept, or a Spilled range); copies differ in their bytes.
    parts: dict[int, list[tuple[int, Any]]] = field(default_factory=dict)
    #: Data bytes held, every copy included.
    filled: int = 0
    tokens: list[Any] = field(default_factory=list)
    #: Every part is in, but no combination of copies matched the CRC-32C yet.
    unverified: bool = False

    @property
    def held(self) -> int:
        """Bytes this transfer holds, as accounted."""
        return TRANSFER_COST + self.filled + PART_COST * len(self.tokens)


def _kept(part: Part) -> Any:
    """What to keep of a part's data until its transfer completes. A view on an
    immutable record that holds little besides this data (at most
    :data:`RECORD_SLACK` bytes, which :data:`PART_COST` covers) is kept as it is,
    so the data is copied once, when the parts are joined. Anything else (a
    record padded with other fields, a buffer its owner may reuse) is copied out
    now, so that only the data stays alive."""
    data = part.data
    record = data.obj  # the object the view keeps alive: all of it must be the record
    if (
        type(record) is bytes
        and len(record) == part.record_size
        and part.record_size - len(data) <= RECORD_SLACK
    ):
        return data
    return bytes(data)


@dataclass
class Completed:
    """A reassembled payload and the tokens (e.g. record offsets) of its parts."""

    transfer_id: str
    payload: memoryview
    tokens: list[Any]


@dataclass
class Dropped:
    """A payload given up on (timeout, eviction, failed checks) or a duplicate
    part, with the tokens of its parts."""

    transfer_id: str
    reason: str
    tokens: list[Any]
    parts_received: int = 0
    parts_total: int = 0
    total_bytes: int = 0


class Reassembler:
    """Collects parts into payloads within bounded memory.

    ``pending_bytes`` counts what incomplete transfers hold: their parts' data,
    plus :data:`PART_COST` per part and :data:`TRANSFER_COST` per transfer. A
    part's declared ``total_size`` allocates nothing. A token passed to
    :meth:`add` should be small (the caller's record without its value): it is
    counted at :data:`PART_COST`.

    ``memory_bytes`` counts the part of that data kept in memory; a part that
    would take it past ``max_memory_bytes`` is written to a spill file in
    ``spill_dir`` (the system's temporary directory by default) instead, and
    ``spilled_bytes`` counts what is there. ``max_memory_bytes=None`` never
    spills. Should the disk refuse a write, the part stays in memory, with a
    warning: ``max_pending_bytes`` still bounds the whole.
    """

    def __init__(
        self,
        *,
        max_payload_bytes: int = MAX_TOTAL_SIZE,
        max_pending_bytes: int = 4 << 30,
        max_pending_transfers: int = 1024,
        part_timeout: float = 120.0,
        clock: Any = time.monotonic,
        remember_completed: int = 10_000,
        max_memory_bytes: int | None = MAX_MEMORY_BYTES,
        spill_dir: str | None = None,
    ) -> None:
        if max_memory_bytes is not None and (
            not isinstance(max_memory_bytes, int)
            or isinstance(max_memory_bytes, bool)
            or max_memory_bytes < 0
        ):
            raise ValueError(
                f"max_memory_bytes must be None or a number of bytes >= 0, got {max_memory_bytes!r}"
            )
        require_count(max_payload_bytes, "max_payload_bytes", minimum=1, unit="bytes")
        require_count(max_pending_bytes, "max_pending_bytes", minimum=1, unit="bytes")
        require_count(max_pending_transfers, "max_pending_transfers", minimum=1)
        require_count(remember_completed, "remember_completed", minimum=0)
        require_positive(part_timeout, "part_timeout", unit="seconds")
        if spill_dir is not None and not os.path.isdir(spill_dir):
            raise ValueError(
                f"spill_dir {spill_dir!r} is not a directory; create it, or leave "
                "spill_dir unset for the system's temporary directory"
            )
        self.max_payload_bytes = max_payload_bytes
        self.max_pending_bytes = max_pending_bytes
        self.max_pending_transfers = max_pending_transfers
        self.max_memory_bytes = max_memory_bytes
        self.spill_dir = spill_dir
        self._spill: SpillLog | None = None
        # When a failed spill was last logged (one warning per SPILL_WARN_S).
        self._spill_warned = -math.inf
        #: Data of incomplete transfers held in memory (``spilled_bytes``: on disk).
        self.memory_bytes = 0
        #: Most data held in memory at once since this reassembler was made.
        self.memory_peak = 0
        #: Parts kept in memory because the spill file refused them.
        self.spill_failures = 0
        self.part_timeout = part_timeout
        self._clock = clock
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        # Ids of recently completed transfers: a late duplicate of one of their
        # parts must not start a new transfer that would never complete.
        self._completed: OrderedDict[str, None] = OrderedDict()
        self._remember_completed = remember_completed
        self.pending_bytes = 0
        self.duplicates = 0
        #: New transfers refused because max_pending_transfers were under way.
        self.refused = 0

    def holds(self, transfer_id: str) -> bool:
        """Whether a transfer is incomplete and buffered here."""
        return transfer_id in self._pending

    @property
    def pending_transfers(self) -> int:
        return len(self._pending)

    def add(self, part: Part, token: Any = None) -> tuple[Completed | None, list[Dropped]]:
        """Add one part; return the completed payload, if this part completed
        one, and what was given up on: a duplicate part (at once, with its token),
        transfers evicted to make room, or this transfer if it failed its checks."""
        dropped: list[Dropped] = []
        if part.transfer_id in self._completed:
            self.duplicates += 1
            return None, [Dropped(part.transfer_id, LATE_DUPLICATE, [token])]
        entry = self._pending.get(part.transfer_id)
        if entry is None:
            # What it would hold once complete must fit both caps.
            held = part.total_size + TRANSFER_COST + PART_COST * part.count
            if part.total_size > self.max_payload_bytes or held > self.max_pending_bytes:
                raise CommunicationException(
                    f"transfer {part.transfer_id} declares {part.total_size} bytes in "
                    f"{part.count} parts, above the limits (max_payload_bytes "
                    f"{self.max_payload_bytes}, max_pending_bytes {self.max_pending_bytes}); "
                    "refusing to buffer it"
                )
            if len(self._pending) >= self.max_pending_transfers:
                # Transfers under way are not evicted for new ones (a flood of first
                # parts would otherwise end every real transfer): the new one waits
                # until a slot frees, and this part is given up on.
                self.refused += 1
                return None, [
                    Dropped(
                        part.transfer_id,
                        f"refused: {self.max_pending_transfers} incomplete transfers "
                        "already (max_pending_transfers)",
                        [token],
                        1,
                        part.count,
                        part.total_size,
                    )
                ]
            # The first part's fields, without its data: a view that would keep the
            # whole record (any padding included) alive.
            entry = _Pending(dataclasses.replace(part, data=memoryview(b"")), self._clock())
            self._pending[part.transfer_id] = entry
            self.pending_bytes += entry.held
        first = entry.part
        if (part.count, part.total_size, part.crc) != (first.count, first.total_size, first.crc):
            raise SerializationException(
                f"transfer {part.transfer_id}: part {part.index} disagrees with earlier parts "
                "on count, size or checksum"
            )
        copies = entry.parts.get(part.index)
        if copies is not None and any(self._same(part, *copy) for copy in copies):
            # That copy holds the data and a token that keeps the commit point below
            # it: this one is done now, and does not hold the transfer open.
            self.duplicates += 1
            return None, [Dropped(part.transfer_id, DUPLICATE_PART, [token])]
        if (copies is not None and len(copies) >= MAX_COPIES) or (
            entry.filled + len(part.data) > 2 * first.total_size
        ):
            # Real parts tile the payload once: beyond that, keep no more copies,
            # but a copy that completes the payload is still taken.
            payload = None
            if len(entry.parts) == first.count and copies is not None:
                payload = self._verified(entry, part.index, (part.offset, part.data))
            if payload is None:
                self.duplicates += 1
                return None, [Dropped(part.transfer_id, SPARE_COPY, [token])]
            self._end(part.transfer_id, completed=True)
            return Completed(part.transfer_id, payload, [*entry.tokens, token]), []
        before = entry.held
        if copies is None:
            # The part that completes the set is joined at once: never spilled for that.
            completing = len(entry.parts) + 1 == first.count
            entry.parts[part.index] = [(part.offset, self._keep(part, completing=completing))]
            entry.last_new = self._clock()
        else:
            copies.append((part.offset, self._keep(part)))
            logger.warning(
                "Transfer %s: part %d arrived again with different bytes; both copies "
                "are kept until one combination matches the payload's CRC-32C",
                part.transfer_id,
                part.index,
            )
        entry.filled += len(part.data)
        entry.tokens.append(token)
        self.pending_bytes += entry.held - before
        self._pending.move_to_end(part.transfer_id)
        while self.pending_bytes > self.max_pending_bytes and len(self._pending) > 1:
            dropped.append(self._drop_oldest("evicted to stay under the memory cap"))
        if part.transfer_id not in self._pending or len(entry.parts) < first.count:
            return None, dropped
        payload = self._verified(entry, None if copies is None else part.index)
        if payload is None:
            self._fit(entry, part.index)
            if not entry.unverified:
                entry.unverified = True
                logger.warning(
                    "Transfer %s: all %d parts are in but do not match the payload's "
                    "size or CRC-32C; kept open for %.0f s in case good copies follow",
                    part.transfer_id,
                    first.count,
                    self.part_timeout,
                )
            return None, dropped
        self._end(part.transfer_id, completed=True)
        return Completed(part.transfer_id, payload, entry.tokens), dropped

    def _end(self, transfer_id: str, *, completed: bool) -> _Pending:
        """Stop holding a transfer; remember a completed (or failed) one's id, so
        that late copies of its parts do not start it again."""
        entry = self._pending.pop(transfer_id)
        self.pending_bytes -= entry.held
        for copies in entry.parts.values():
            for _, data in copies:
                self._forget(data)
        if completed:
            self._completed[transfer_id] = None
            if len(self._completed) > self._remember_completed:
                self._completed.popitem(last=False)
        return entry

    def _give_up(self, transfer_id: str, reason: str, *, completed: bool = True) -> Dropped:
        """End a transfer that cannot complete (failed checks, evicted, expired)."""
        entry = self._end(transfer_id, completed=completed)
        logger.error(
            "Gave up on transfer %s (%d bytes, %d/%d parts): %s",
            transfer_id,
            entry.part.total_size,
            len(entry.parts),
            entry.part.count,
            reason,
        )
        return Dropped(
            transfer_id,
            reason,
            entry.tokens,
            len(entry.parts),
            entry.part.count,
            entry.part.total_size,
        )

    @property
    def spilled_bytes(self) -> int:
        """Data of incomplete transfers waiting in the spill file."""
        return self._spill.live_bytes if self._spill else 0

    @property
    def spilled_total(self) -> int:
        """Bytes ever written to the spill file."""
        return self._spill.written_bytes if self._spill else 0

    def _keep(self, part: Part, *, completing: bool = False) -> Any:
        """What to hold of a part's data: in memory (see _kept) while under
        max_memory_bytes, else a range of the spill file. A ``completing`` part
        (the last index missing) stays in memory: its transfer is joined at once
        (and should the join fail its checks, :meth:`_fit` spills it then)."""
        size = len(part.data)
        cap = self.max_memory_bytes
        if cap is not None and self.memory_bytes + size > cap and not completing:
            spilled = self._to_disk(part.transfer_id, part.data)
            if spilled is not None:
                return spilled
        self.memory_bytes += size
        self.memory_peak = max(self.memory_peak, self.memory_bytes)
        return _kept(part)

    def _fit(self, entry: _Pending, index: int) -> None:
        """Back under max_memory_bytes after a completing part that stayed in
        memory did not complete its transfer: spill that part."""
        cap = self.max_memory_bytes
        copies = entry.parts[index]
        offset, data = copies[-1]
        if cap is None or self.memory_bytes <= cap or isinstance(data, Spilled):
            return
        spilled = self._to_disk(entry.part.transfer_id, data)
        if spilled is not None:
            copies[-1] = (offset, spilled)
            self.memory_bytes -= len(data)

    def _to_disk(self, transfer_id: str, data: Any) -> Spilled | None:
        """``data`` written to the spill file (made at the first spill); None when
        the disk refused it (counted, and logged at most once per SPILL_WARN_S)."""
        if self._spill is None:
            self._spill = SpillLog(self.spill_dir)
        try:
            return self._spill.write(data)
        except CommunicationException as exc:
            self.spill_failures += 1
            now = time.monotonic()
            if now - self._spill_warned >= SPILL_WARN_S:
                self._spill_warned = now
                logger.warning(
                    "Transfer %s: %s; parts stay in memory meanwhile (%d failed "
                    "spills so far; this is logged at most once per %.0f s)",
                    transfer_id,
                    exc,
                    self.spill_failures,
                    SPILL_WARN_S,
                )
            return None

    def _forget(self, data: Any) -> None:
        if isinstance(data, Spilled):
            assert self._spill is not None
            self._spill.release(data)
        else:
            self.memory_bytes -= len(data)

    def _same(self, part: Part, offset: int, data: Any) -> bool:
        """Whether a part is a copy of a held one (same place, same bytes; a
        spilled one is read back to compare)."""
        if offset != part.offset or len(data) != len(part.data):
            return False
        if isinstance(data, Spilled):
            assert self._spill is not None
            data = self._spill.read(data)
        held = np.frombuffer(data, np.uint8)
        return bool(np.array_equal(held, np.frombuffer(part.data, np.uint8)))

    def _verified(
        self, entry: _Pending, changed: int | None, spare: tuple[int, Any] | None = None
    ) -> memoryview | None:
        """The payload as one writable buffer (the caller's to own), from the first
        combination of the parts' copies that tiles it exactly and matches its
        CRC-32C; None when none does. ``changed`` is the index that just got a new
        copy (its last, or ``spare``, one not kept): only combinations using that
        copy are new. At most :data:`MAX_TRIALS` are tried, newest copies first."""
        options = [
            ([spare] if spare else copies[-1:]) if i == changed else copies[::-1]
            for i, copies in sorted(entry.parts.items())
        ]
        total = entry.part.total_size
        for combination in itertools.islice(itertools.product(*options), MAX_TRIALS):
            pieces = sorted(combination, key=lambda item: item[0])
            at = 0
            for offset, data in pieces:
                if offset != at:
                    break
                at += len(data)
            if at != total:
                continue
            if not any(isinstance(data, Spilled) for _, data in pieces):
                # All in memory: check, then join (one copy, only of a match).
                checksum = 0
                for _, data in pieces:
                    checksum = crc32c(data, checksum)
                if checksum == entry.part.crc:
                    return memoryview(bytearray().join(data for _, data in pieces))
                continue
            # Some on disk: read them straight into the payload, then check it (an
            # uninitialised buffer: every byte of it is written, none zero-filled first).
            view = np.empty(total, np.uint8).data
            for offset, data in pieces:
                target = view[offset : offset + len(data)]
                if isinstance(data, Spilled):
                    assert self._spill is not None
                    self._spill.read_into(data, target)
                else:
                    target[:] = data
            if crc32c(view) == entry.part.crc:
                return view
        return None

    def close(self) -> None:
        """Drop every incomplete transfer's data and close the spill file."""
        for transfer_id in list(self._pending):
            self._end(transfer_id, completed=False)
        if self._spill is not None:
            self._spill.close()
            self._spill = None

    def progress(self, transfer_id: str) -> tuple[int, int]:
        """(bytes received, total bytes) of an incomplete transfer."""
        entry = self._pending.get(transfer_id)
        if entry is None:
            return 0, 0
        return min(entry.filled, entry.part.total_size), entry.part.total_size

    def expire(self) -> list[Dropped]:
        """Drop the payloads that have had no new part for ``part_timeout`` seconds."""
        now = self._clock()
        dropped = []
        for transfer_id, entry in list(self._pending.items()):
            if now - entry.last_new < self.part_timeout:
                continue
            if entry.unverified:
                # Every part is in: late copies of them must not start it again.
                dropped.append(self._give_up(transfer_id, CORRUPTED))
                continue
            missing = entry.part.count - len(entry.parts)
            reason = (
                f"no new part for {self.part_timeout:.0f} s, {missing} of "
                f"{entry.part.count} parts still missing"
            )
            dropped.append(self._give_up(transfer_id, reason, completed=False))
        return dropped

    def _drop_oldest(self, reason: str) -> Dropped:
        """Evict the least recently active transfer."""
        return self._give_up(next(iter(self._pending)), reason, completed=False)
