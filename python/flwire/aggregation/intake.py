"""What a scale-out aggregator does with the records of its partitions, without
Kafka: reassemble updates (whole, split into parts, or streamed: section 14.5,
decoded as their chunks come), screen and fold them per round, and say which
offsets (and which commit metadata) may be committed with the partials of the
folds (wire format section 14.4; the Kafka side is
:mod:`flwire.aggregation.scaleout`). The intake is synchronous: it drives the
stream assembler on an event loop of its own, so it must not be called from a
running event loop (the aggregator calls it from its own thread).

Exactly once rests on two rules:

- the offset committed for a partition never passes a record that is not
  handled yet (an update whose parts are not all in, or not folded):
  :class:`~flwire.transport.offsets.OffsetTracker`;
- an update that completed *above* that offset and was folded into a partial
  that is committed is named in the offset's metadata (``[round, client, last
  offset]``), so that whoever reads the partition again from that offset skips
  it. Such an entry stays until the committed offset passes its last record.

Besides, the metadata remembers the updates of the partition's open round (its
latest) folded into committed partials *below* the offset, as far as the
metadata's size allows (newest first): a copy of one of them that re-appears
above the offset (a client's resend, a replay) is skipped, not folded again
into a partial that the coordinator would refuse whole, with the other clients
in it. Readers that predate this skip them alike and drop them at their next
commit.

An update is refused (counted in ``stats["misrouted"]``) when a record of it is
not keyed by its client id (clients key their records so: TopicLayout, wire
format section 11), and (``stats["unselected"]``) when ``selected(round)``
names the round's clients and not its own.

:meth:`Intake.commit_point` returns the offsets and metadata to send with the
transaction, or None while the metadata would exceed Kafka's limit (the
commit then waits for the incomplete update below them).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from flwire import messages as m
from flwire.aggregation.fedavg import StreamingFedAvg
from flwire.aggregation.screening import UpdatePolicy, UpdateRefused, is_delta, screen
from flwire.exceptions import (
    AggregationException,
    CommunicationException,
    RefusedMessageError,
    SerializationException,
)
from flwire.security.verifier import Verifier
from flwire.transport.base import Record
from flwire.transport.chunking import MAX_MEMORY_BYTES, PART_HEADER, Reassembler, parse_part
from flwire.transport.offsets import OffsetTracker
from flwire.transport.streaming import STREAM_HEADER, Failed, StreamAssembler

logger = logging.getLogger(__name__)

TopicPartition = tuple[str, int]
#: The global model a round's updates were trained from; None: not known (yet).
Models = Callable[[int], Mapping[str, torch.Tensor] | None]
#: The clients selected for a round; None or empty: not known (not checked).
Selected = Callable[[int], Collection[str] | None]
#: Prefix of the commit metadata (section 14.4), then a JSON array.
METADATA_PREFIX = "flwire-folded/1 "
#: Kafka's default ``offset.metadata.max.bytes``.
MAX_METADATA_BYTES = 4096


@dataclass(frozen=True, order=True)
class FoldedEntry:
    """An update folded into a committed (or about to be) partial: its round, its
    client and the offset of its last record."""

    round_id: int
    client_id: str
    last_offset: int


def encode_metadata(entries: list[FoldedEntry]) -> str:
    """The commit metadata naming ``entries`` ("" when none)."""
    if not entries:
        return ""
    rows = [[e.round_id, e.client_id, e.last_offset] for e in sorted(entries)]
    return METADATA_PREFIX + json.dumps(rows, separators=(",", ":"), ensure_ascii=False)


def _row_bytes(entry: FoldedEntry) -> int:
    """The bytes one entry adds to :func:`encode_metadata`'s text, its comma included."""
    row = [entry.round_id, entry.client_id, entry.last_offset]
    return len(json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode("utf-8")) + 1


def _fit_remembered(required: list[FoldedEntry], extra: list[FoldedEntry]) -> list[FoldedEntry]:
    """As many of ``extra`` (newest first) as fit besides ``required`` within
    :data:`MAX_METADATA_BYTES`."""
    used = len(encode_metadata(required).encode("utf-8")) or len(METADATA_PREFIX) + 1
    kept: list[FoldedEntry] = []
    for entry in sorted(extra, key=lambda e: e.last_offset, reverse=True):
        size = _row_bytes(entry)
        if used + size > MAX_METADATA_BYTES:
            break
        used += size
        kept.append(entry)
    return kept


def decode_metadata(text: str | None) -> list[FoldedEntry]:
    """The entries of commit metadata; metadata that is not flwire's is ignored
    (logged), since it names nothing to skip."""
    if not text:
        return []
    if not text.startswith(METADATA_PREFIX):
        logger.warning("Ignored commit metadata that is not flwire's: %.80r", text)
        return []
    try:
        rows = json.loads(text[len(METADATA_PREFIX) :])
        entries = [FoldedEntry(int(r), str(c), int(o)) for r, c, o in rows]
    except (ValueError, TypeError) as exc:
        raise CommunicationException(
            f"unreadable flwire commit metadata ({exc}): {text[:80]!r}"
        ) from None
    return entries


@dataclass
class Intake:
    """Records in, folds and commit points out (see the module)."""

    models: Models
    policy: UpdatePolicy = field(default_factory=UpdatePolicy)
    part_timeout_s: float = 120.0
    #: Data of incomplete updates (1 MB parts interleaved from many clients) kept in
    #: memory; past it, parts wait in a spill file in ``spill_dir`` (the system's
    #: temporary directory by default). None: all in memory. See Reassembler.
    max_memory_bytes: int | None = MAX_MEMORY_BYTES
    spill_dir: str | None = None
    #: Uncommitted folds, per round.
    folds: dict[int, StreamingFedAvg] = field(default_factory=dict)
    stats: Counter[str] = field(default_factory=Counter)
    #: Called with (round, client) after each fold (progress, tests).
    on_fold: Callable[[int, str], None] = lambda _r, _c: None
    #: Verifies each update's signature, sender and timestamp before it is read
    #: (its refusals counted in ``verifier.refusals`` and ``stats["unverified"]``);
    #: None: not verified. Replays are this class's business: records are read
    #: again on purpose after an abort.
    verifier: Verifier | None = None
    #: Makes the assembler of streamed updates (section 14.5), with its bounds;
    #: None: the defaults, with ``part_timeout_s``.
    stream_assembler: Callable[[], StreamAssembler] | None = None
    #: The clients selected for each round, when known: an update of another
    #: client is refused (``stats["unselected"]``). Default: not known.
    selected: Selected = lambda _r: None

    def __post_init__(self) -> None:
        self.tracker = OffsetTracker()
        self.reassembler = self._new_reassembler()
        self.streams = self._new_streams()
        # The stream assembler is asynchronous (a seal waits for its chunks'
        # decoding on worker threads); this synchronous intake drives it on an
        # event loop of its own, made at the first streamed record.
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Per partition: folded into committed partials, still above the commit.
        self._committed: dict[TopicPartition, list[FoldedEntry]] = {}
        #: Per partition: folded into the uncommitted folds.
        self._pending: dict[TopicPartition, list[FoldedEntry]] = {}
        #: (round, client) folded into a partial this process committed.
        self._published: set[tuple[int, str]] = set()
        #: Partitions whose commit point moved since the last commit.
        self._moved: set[TopicPartition] = set()
        #: Per partition, the first offset read since it was assigned (or reset):
        #: the offset to commit while nothing of it is finished yet.
        self._start: dict[TopicPartition, int] = {}
        #: (partition, round) whose folded updates outgrew the metadata (warned once).
        self._outgrown: set[tuple[TopicPartition, int]] = set()

    def _new_reassembler(self) -> Reassembler:
        return Reassembler(
            part_timeout=self.part_timeout_s,
            max_memory_bytes=self.max_memory_bytes,
            spill_dir=self.spill_dir,
        )

    def assigned(self, tp: TopicPartition, metadata: str | None) -> None:
        """``tp`` is ours now, from its committed offset with this metadata."""
        self._committed[tp] = decode_metadata(metadata)
        self._pending.pop(tp, None)
        self._start.pop(tp, None)

    def reset(self) -> None:
        """Forget everything not committed (partitions revoked, or a transaction
        aborted): the records are read again from the committed offsets."""
        # A new tracker: the old one's commit points may lie past the offsets that
        # are committed (an aborted transaction's), and records below them would be
        # taken as handled when they are read again.
        self.tracker = OffsetTracker()
        self.reassembler.close()
        self.reassembler = self._new_reassembler()
        self.streams = self._new_streams()
        self.folds.clear()
        self._pending.clear()
        self._committed.clear()
        self._moved.clear()
        self._start.clear()

    def add(self, record: Record) -> None:
        """Take one record of the updates topic."""
        tp = (record.topic, record.partition)
        self._start.setdefault(tp, record.offset)
        self.tracker.seen(tp, record.offset)
        # The key travels with the offset: each record of an update must be keyed
        # by its client id (checked once the update is complete).
        token = (tp, record.offset, self.tracker.generation(tp), record.key)
        if record.header(STREAM_HEADER) is not None:
            self._add_stream_record(record.value, token)
            return
        if record.header(PART_HEADER) is None:
            self._handle(record.value, [token])
            return
        try:
            part = parse_part(record.value)
            completed, dropped = self.reassembler.add(part, token)
        except (SerializationException, CommunicationException) as exc:
            logger.error("Skipped a bad part at %s[%d]@%d: %s", *tp, record.offset, exc)
            self.stats["bad_parts"] += 1
            self._finish([token])
            return
        for gone in dropped:
            self._finish(gone.tokens)
        if completed is not None:
            self._handle(completed.payload, completed.tokens)

    def _new_streams(self) -> StreamAssembler:
        if self.stream_assembler is not None:
            return self.stream_assembler()
        return StreamAssembler(part_timeout=self.part_timeout_s)

    def _add_stream_record(self, value: Any, token: Any) -> None:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        finished, failed = self._loop.run_until_complete(self.streams.add(value, token))
        self._stream_failed(failed)
        if finished is None:
            return
        if self.verifier is not None:
            admitted = self.verifier.admit_streamed(
                finished.message, finished.signature, finished.digest, remember=False
            )
            if admitted is None:  # refused: logged and counted by the verifier
                self.stats["unverified"] += 1
                self._finish(finished.tokens)
                return
        self._fold_message(finished.message, finished.tokens)

    def _stream_failed(self, failed: list[Failed]) -> None:
        for gone in failed:
            if gone.duplicate:
                self.stats["duplicate_parts"] += 1
            elif gone.unreadable:
                self.stats["bad_parts"] += 1
                logger.error("Skipped a bad stream record: %s", gone.reason)
            else:
                self.stats["dropped_transfers"] += 1
                logger.error("Gave up on streamed update %s: %s", gone.transfer_id, gone.reason)
            self._finish(gone.tokens)

    def expire(self) -> None:
        """Give up on updates with no new part for ``part_timeout_s``."""
        for gone in self.reassembler.expire():
            self.stats["dropped_transfers"] += 1
            self._finish(gone.tokens)
        self._stream_failed(self.streams.expire())

    def close(self) -> None:
        """Release the event loop that drives streamed updates (if one was made)."""
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def _finish(self, tokens: list[Any]) -> None:
        for tp, offset, generation, _key in tokens:
            if self.tracker.finish(tp, offset, generation) is not None:
                self._moved.add(tp)

    def _handle(self, payload: Any, tokens: list[Any]) -> None:
        try:
            if self.verifier is not None:
                msg = self.verifier.verify(payload, remember=False)
            else:
                msg = m.decode_message(payload)
        except SerializationException as exc:
            logger.error("Skipped an undecodable message on the updates topic: %s", exc)
            self.stats["undecodable"] += 1
            self._finish(tokens)
            return
        except RefusedMessageError as exc:
            assert self.verifier is not None
            key = tokens[0][3]  # the record's key: the client id it claims
            claimed = bytes(key).decode("utf-8", "replace") if key is not None else None
            self.verifier.refuse(exc, claimed=claimed)
            self.stats["unverified"] += 1
            self._finish(tokens)
            return
        self._fold_message(msg, tokens)

    def _fold_message(self, msg: m.Message, tokens: list[Any]) -> None:
        if msg.type != "client_update":
            self.stats["other"] += 1  # evaluation results: the server's, not ours
            self._finish(tokens)
            return
        round_id, client = msg.body.round_id, msg.body.client_id
        tp = tokens[0][0]
        last = max(offset for _tp, offset, _g, _k in tokens)
        if not self._keyed_by_client(client, tokens) or not self._is_selected(round_id, client):
            self.stats["refused"] += 1
            self._finish(tokens)
            return
        if (round_id, client) in self._published or any(
            (e.round_id, e.client_id) == (round_id, client)
            for e in self._committed.get(tp, []) + self._pending.get(tp, [])
        ):
            self.stats["skipped"] += 1
            logger.info("Skipped round %d update of %s: folded already", round_id, client)
            self._finish(tokens)
            return
        reference = self.models(round_id)
        if reference is None:
            logger.error("Refused round %d update of %s: no global model", round_id, client)
            self.stats["refused"] += 1
            self._finish(tokens)
            return
        fold = self.folds.get(round_id)
        if fold is not None and client in fold.counts:
            self.stats["skipped"] += 1
            logger.warning(
                "Skipped a second round %d update of %s (message %s): its first is folded, "
                "and a client's round counts once",
                round_id,
                client,
                msg.message_id,
            )
            self._finish(tokens)
            return
        try:
            tensors = screen(msg, reference, self.policy)
            if fold is None:
                fold = self.folds[round_id] = StreamingFedAvg(reference)
            fold.add(client, tensors, msg.body.num_examples, delta=is_delta(msg))
        except (UpdateRefused, AggregationException) as exc:
            logger.error("Refused round %d update of %s: %s", round_id, client, exc)
            self.stats["refused"] += 1
            self._finish(tokens)
            return
        self._pending.setdefault(tp, []).append(FoldedEntry(round_id, client, last))
        self.stats["folded"] += 1
        self._finish(tokens)
        self.on_fold(round_id, client)

    def _keyed_by_client(self, client: str, tokens: list[Any]) -> bool:
        """Whether every record of ``client``'s update is keyed by its id (else
        logged and counted in ``stats["misrouted"]``)."""
        want = client.encode("utf-8")
        keys = {bytes(key) if key is not None else None for *_rest, key in tokens}
        if keys == {want}:
            return True
        self.stats["misrouted"] += 1
        tp, offset = tokens[0][0], min(t[1] for t in tokens)
        logger.error(
            "Refused the update of %s at %s[%d]@%d: its records are keyed %s, not by its "
            "client id (clients key their updates by client id, so that each client's "
            "records stay in one partition)",
            client,
            *tp,
            offset,
            sorted(repr(k) for k in keys),
        )
        return False

    def _is_selected(self, round_id: int, client: str) -> bool:
        """Whether ``client`` may send round ``round_id``'s update: selected, or
        the selection is not known (else logged and counted)."""
        chosen = self.selected(round_id)
        if not chosen or client in chosen:
            return True
        self.stats["unselected"] += 1
        logger.error(
            "Refused round %d update of %s: the client is not selected for the round",
            round_id,
            client,
        )
        return False

    def dirty(self) -> bool:
        """Whether there is anything to commit: folds, or offsets that moved."""
        return bool(self.folds) or bool(self._moved)

    def commit_point(self) -> dict[TopicPartition, tuple[int, str]] | None:
        """Per partition that moved or has folds, (offset, metadata) to commit with
        the partials of :attr:`folds`; None while some metadata is too long."""
        out: dict[TopicPartition, tuple[int, str]] = {}
        for tp in self._moved | set(self._pending):
            offset = self.tracker.committed(tp)
            if offset is None:
                # Nothing finished below an incomplete update: commit where reading
                # started, so that the metadata names what was folded above it.
                offset = self._start[tp]
            known = self._committed.get(tp, []) + self._pending.get(tp, [])
            entries = [e for e in known if e.last_offset >= offset]
            text = encode_metadata(entries)
            if len(text.encode("utf-8")) > MAX_METADATA_BYTES:
                logger.warning(
                    "Commit of %s[%d] waits: %d updates folded above an incomplete one "
                    "do not fit the commit metadata",
                    *tp,
                    len(entries),
                )
                return None
            out[tp] = (offset, encode_metadata(entries + self._remembered(tp, known, offset)))
        return out

    def _remembered(
        self, tp: TopicPartition, known: list[FoldedEntry], offset: int
    ) -> list[FoldedEntry]:
        """The entries of ``tp``'s open round below ``offset`` that fit in the
        metadata besides those above it (see the module)."""
        if not known:
            return []
        open_round = max(e.round_id for e in known)
        below = [e for e in known if e.last_offset < offset and e.round_id == open_round]
        required = [e for e in known if e.last_offset >= offset]
        kept = _fit_remembered(required, below)
        if len(kept) < len(below) and (tp, open_round) not in self._outgrown:
            self._outgrown.add((tp, open_round))
            logger.warning(
                "The commit metadata of %s[%d] remembers %d of the %d updates of round %d "
                "folded below its offset (Kafka's %d-byte limit): a copy of an older one "
                "re-read from the partition would be folded again",
                *tp,
                len(kept),
                len(below),
                open_round,
                MAX_METADATA_BYTES,
            )
        return kept

    def committed(self, point: Mapping[TopicPartition, tuple[int, str]]) -> None:
        """The transaction with :attr:`folds` and ``point`` committed."""
        for tp, (_offset, text) in point.items():
            self._committed[tp] = decode_metadata(text)
        for entries in self._pending.values():
            self._published.update((e.round_id, e.client_id) for e in entries)
        self._pending.clear()
        self.folds.clear()
        self._moved.clear()
