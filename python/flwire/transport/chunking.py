"""Payloads above a transport's record limit: split into TransferParts, reassemble.

Each part is an encoded ``flwire.v1.TransferPart`` carried in its own record
with the header ``flwire-part``. The receiver copies each part's data straight
into one buffer preallocated at the payload's declared size, ignores duplicate
parts, verifies the CRC-32C of the whole, and bounds what it holds: a cap on
one payload's size, a cap on the bytes of all incomplete payloads (the oldest
is evicted, with a log line), and a timeout for missing parts.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from flwire._protowire import (
    I32,
    LEN,
    VARINT,
    byte_view,
    crc32c,
    decode_utf8,
    expect_wire_type,
    iter_fields,
    len_field,
)
from flwire.exceptions import CommunicationException, SerializationException
from flwire.v1 import transfer_pb2

logger = logging.getLogger(__name__)

PART_HEADER = "flwire-part"
#: Reason of the Dropped returned for a late duplicate of a completed transfer's part.
LATE_DUPLICATE = "part of a completed transfer"
#: Reason of the Dropped returned when a completed transfer fails its checks.
CORRUPTED = "reassembled payload does not match its size or CRC-32C (corrupted parts?)"

_F = transfer_pb2.TransferPart.DESCRIPTOR.fields_by_name
_ID, _INDEX, _COUNT = _F["transfer_id"].number, _F["part_index"].number, _F["part_count"].number
_TOTAL, _OFFSET, _CRC = _F["total_size"].number, _F["offset"].number, _F["payload_crc32c"].number
_DATA = _F["data"].number

# Room left in each record for the part's own fields, the key and the headers.
PART_OVERHEAD = 512


def split_payload(
    payload: Any, transfer_id: str, max_record_bytes: int
) -> Iterator[tuple[bytes, int, int]]:
    """Encoded parts of ``payload``, each at most ``max_record_bytes``; yields
    (part bytes, part index, part count)."""
    view = byte_view(payload, "payload")
    chunk = max_record_bytes - PART_OVERHEAD - len(transfer_id.encode())
    if chunk <= 0:
        raise CommunicationException(f"record limit {max_record_bytes} is too small to split into")
    if not len(view):
        raise CommunicationException("an empty payload fits any record: nothing to split")
    count = max(1, -(-len(view) // chunk))
    checksum = crc32c(view)
    for index in range(count):
        start = index * chunk
        data = view[start : start + chunk]
        head = transfer_pb2.TransferPart(
            transfer_id=transfer_id,
            part_index=index,
            part_count=count,
            total_size=len(view),
            offset=start,
            payload_crc32c=checksum,
        ).SerializeToString()
        # `data` is the highest-numbered field, so appending it keeps field order.
        yield b"".join((head, len_field(_DATA, len(data)), data)), index, count


@dataclass
class Part:
    transfer_id: str
    index: int
    count: int
    total_size: int
    offset: int
    crc: int
    data: memoryview


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
            fields[f.number] = f.value
    ident = fields.get(_ID)
    data = fields.get(_DATA)
    part = Part(
        transfer_id=decode_utf8(buf, ident.start, ident.end, "transfer_id") if ident else "",
        index=fields.get(_INDEX, 0),
        count=fields.get(_COUNT, 0),
        total_size=fields.get(_TOTAL, 0),
        offset=fields.get(_OFFSET, 0),
        crc=fields.get(_CRC, 0),
        data=buf[data.start : data.end] if data else buf[0:0],
    )
    if not part.transfer_id or part.count < 1 or part.index >= part.count:
        raise SerializationException(
            f"invalid transfer part: id={part.transfer_id!r} index={part.index} count={part.count}"
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


@dataclass
class _Pending:
    part: Part  # the first part seen: count, size and checksum to hold the others to
    buffer: bytearray
    last_seen: float
    received: set[int] = field(default_factory=set)
    filled: int = 0
    tokens: list[Any] = field(default_factory=list)


@dataclass
class Completed:
    """A reassembled payload and the tokens (e.g. record offsets) of its parts."""

    transfer_id: str
    payload: memoryview
    tokens: list[Any]


@dataclass
class Dropped:
    """A payload given up on (timeout, eviction, failed checks) or a late
    duplicate part, with the tokens of its parts."""

    transfer_id: str
    reason: str
    tokens: list[Any]
    parts_received: int = 0
    parts_total: int = 0
    total_bytes: int = 0


class Reassembler:
    """Collects parts into payloads within bounded memory."""

    def __init__(
        self,
        *,
        max_payload_bytes: int = 2 << 30,
        max_pending_bytes: int = 4 << 30,
        part_timeout: float = 120.0,
        clock: Any = time.monotonic,
        remember_completed: int = 10_000,
    ) -> None:
        self.max_payload_bytes = max_payload_bytes
        self.max_pending_bytes = max_pending_bytes
        self.part_timeout = part_timeout
        self._clock = clock
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        # Ids of recently completed transfers: a late duplicate of one of their
        # parts must not start a new buffer that would never complete.
        self._completed: OrderedDict[str, None] = OrderedDict()
        self._remember_completed = remember_completed
        self.pending_bytes = 0
        self.duplicates = 0

    def holds(self, transfer_id: str) -> bool:
        """Whether a transfer is incomplete and buffered here."""
        return transfer_id in self._pending

    def add(self, part: Part, token: Any = None) -> tuple[Completed | None, list[Dropped]]:
        """Add one part; return the completed payload, if this part completed
        one, and any payloads dropped to make room."""
        dropped: list[Dropped] = []
        if part.transfer_id in self._completed:
            self.duplicates += 1
            return None, [Dropped(part.transfer_id, LATE_DUPLICATE, [token])]
        entry = self._pending.get(part.transfer_id)
        if entry is None:
            limit = min(self.max_payload_bytes, self.max_pending_bytes)
            if part.total_size > limit:
                raise CommunicationException(
                    f"transfer {part.transfer_id} declares {part.total_size} bytes, above the "
                    f"limit of {limit}; refusing to buffer it"
                )
            while self._pending and self.pending_bytes + part.total_size > self.max_pending_bytes:
                dropped.append(self._drop_oldest("evicted to stay under the memory cap"))
            entry = _Pending(part, bytearray(part.total_size), self._clock())
            self._pending[part.transfer_id] = entry
            self.pending_bytes += part.total_size
        first = entry.part
        if (part.count, part.total_size, part.crc) != (first.count, first.total_size, first.crc):
            raise SerializationException(
                f"transfer {part.transfer_id}: part {part.index} disagrees with earlier parts "
                "on count, size or checksum"
            )
        entry.tokens.append(token)
        entry.last_seen = self._clock()
        self._pending.move_to_end(part.transfer_id)
        if part.index in entry.received:
            self.duplicates += 1
            return None, dropped
        entry.received.add(part.index)
        entry.buffer[part.offset : part.offset + len(part.data)] = part.data
        entry.filled += len(part.data)
        if len(entry.received) < first.count:
            return None, dropped
        del self._pending[part.transfer_id]
        self.pending_bytes -= first.total_size
        self._completed[part.transfer_id] = None
        if len(self._completed) > self._remember_completed:
            self._completed.popitem(last=False)
        if entry.filled != first.total_size or crc32c(entry.buffer) != first.crc:
            logger.error("Gave up on transfer %s: %s", part.transfer_id, CORRUPTED)
            dropped.append(
                Dropped(
                    part.transfer_id,
                    CORRUPTED,
                    entry.tokens,
                    len(entry.received),
                    first.count,
                    first.total_size,
                )
            )
            return None, dropped
        return Completed(part.transfer_id, memoryview(entry.buffer), entry.tokens), dropped

    def progress(self, transfer_id: str) -> tuple[int, int]:
        """(bytes received, total bytes) of an incomplete transfer."""
        entry = self._pending.get(transfer_id)
        return (entry.filled, entry.part.total_size) if entry else (0, 0)

    def expire(self) -> list[Dropped]:
        """Drop the payloads that have had no new part for ``part_timeout`` seconds."""
        now = self._clock()
        dropped = []
        while self._pending:
            entry = next(iter(self._pending.values()))
            if now - entry.last_seen < self.part_timeout:
                break
            missing = entry.part.count - len(entry.received)
            dropped.append(
                self._drop_oldest(
                    f"no part for {self.part_timeout:.0f} s, {missing} of "
                    f"{entry.part.count} parts still missing"
                )
            )
        return dropped

    def _drop_oldest(self, reason: str) -> Dropped:
        transfer_id, entry = self._pending.popitem(last=False)
        self.pending_bytes -= entry.part.total_size
        logger.error(
            "Gave up on transfer %s (%d bytes, %d/%d parts): %s",
            transfer_id,
            entry.part.total_size,
            len(entry.received),
            entry.part.count,
            reason,
        )
        return Dropped(
            transfer_id,
            reason,
            entry.tokens,
            len(entry.received),
            entry.part.count,
            entry.part.total_size,
        )
