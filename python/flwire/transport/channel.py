"""A Channel puts flwire payloads of any size on a transport.

Sending: a payload that fits the transport's record limit goes as one record;
a larger one is split into TransferParts (same key, so they share a
partition). A send returns once every record of it is confirmed written.

Receiving: parts are reassembled in whatever order they arrive (a part resent
after a failed write lands after the later parts), and each payload is handed
out as a :class:`Delivery`. The application settles each delivery:

- ``await delivery.done()``: handled. Its id is recorded (see de-duplication)
  and its records' offsets are committed as soon as every earlier record of
  the partition is settled too: nothing is committed past a record that is
  still being handled, or past a part of a transfer still incomplete. It
  returns at once: the id's record is written in the background, and the
  offsets are let go only once the transport has acknowledged it
  (``await delivery.settled()`` waits for that; at most MAX_SETTLING, 64, are
  written at once, past which the loop waits). A write that fails is counted
  in ``stats["unsettled"]``, reported to ``on_event`` as a
  :class:`~flwire.transport.events.DeliveryUnsettled` and made again (backoff
  0.5 s doubling to 5 s); until it succeeds the delivery's offsets stay
  uncommitted, so if the loop ends first it is delivered again after a
  restart.
- ``await delivery.fail(error)``: not handled. The channel's
  :class:`~flwire.transport.failures.FailurePolicy` hands it out again (up to
  ``max_attempts``), then writes it to a dead-letter topic (or skips it) and
  commits. Either way it is counted in :attr:`Channel.stats` and reported to
  ``on_event``.

A transfer that cannot complete (parts missing for ``part_timeout`` seconds,
evicted by the memory cap, or failing its CRC-32C) is given up on: its
offsets move on, and it is counted in ``stats["dropped_transfers"]`` and
reported to ``on_event`` as a :class:`~flwire.transport.events.TransferDropped`.

De-duplication: with ``receive(..., dedupe=True)`` (the default), the ids of
the deliveries a consumer group has handled are kept on the transport
(:class:`~flwire.transport.seen.SeenLog`, a compacted topic) and written
before the offsets are committed, so a message delivered again, after a
restart or because its sender sent it twice, is skipped (counted in
``stats["duplicates"]``). A delivery's id is its ``flwire-message-id`` header,
else the id of the transfer it came in.

Verification: with ``receive(..., verifier=Verifier(trust, ...))`` every
delivery is verified (signature, sender, timestamp, replay, round: see
:class:`flwire.security.Verifier`) before it is handed out, its weights left
undecoded; a refused one is logged with its reason, counted in
``stats["refused"]`` and the verifier's ``refusals``, and settled (its offsets
move on). A delivery handed out carries its verified :class:`Message` in
``delivery.message``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flwire._args import require_count
from flwire._protowire import Segments, byte_view
from flwire.exceptions import CommunicationException, RefusedMessageError, SerializationException
from flwire.messages import Message
from flwire.transport.base import Headers, Record, Subscription, Transport, last_header
from flwire.transport.chunking import (
    CORRUPTED,
    DUPLICATE_PART,
    LATE_DUPLICATE,
    PART_HEADER,
    SPARE_COPY,
    Dropped,
    Reassembler,
    parse_part,
    split_payload,
)
from flwire.transport.events import (
    ChannelEvent,
    DeliveryFailed,
    DeliveryUnsettled,
    EventCallback,
    TransferDropped,
)
from flwire.transport.failures import FailurePolicy, dead_letter_headers
from flwire.transport.headers import MESSAGE_ID, SENDER_ID, message_headers
from flwire.transport.offsets import OffsetTracker
from flwire.transport.seen import SeenLog
from flwire.transport.streaming import STREAM_HEADER, Failed, StreamAssembler, StreamWriter

if TYPE_CHECKING:
    from flwire.security.verifier import Verifier

logger = logging.getLogger(__name__)

#: How long a receive loop that ends waits for the ids of done deliveries still
#: being written, before it commits and closes (see ``_Receiver.drain``).
SETTLE_DRAIN_S = 5.0
#: The most done deliveries whose ids are being written at once: past it, the
#: receive loop waits for the oldest write before it hands out the next
#: delivery (so a crash re-handles at most this many, and a broker that stopped
#: acknowledging stops the loop instead of piling up work).
MAX_SETTLING = 64
#: Backoff between writes of an id that failed: from the first, doubling to the last.
SETTLE_RETRY_S = (0.5, 5.0)

#: progress(direction, transfer_id, bytes_done, bytes_total); direction is "send" or "receive"
ProgressCallback = Callable[[str, str, int, int], None]


@dataclass
class Delivery:
    """One received payload (reassembled if it came in parts).

    Settle it once: ``await done()`` when handled, ``await fail(error)`` when not.
    ``attempt`` counts from 1 and grows each time a failed delivery is handed
    out again.
    """

    topic: str
    key: bytes | None
    #: The payload's bytes; None for a streamed transfer (its decoded message is
    #: in ``message``).
    payload: Any
    headers: Headers
    attempt: int = 1
    transfer_id: str | None = None
    #: The message of a streamed transfer (its weights decoded as they came), or
    #: the verified message (receiving with a verifier), else None.
    message: Message | None = None
    _tokens: list[_Token] = field(repr=False, default_factory=list)
    _receiver: _Receiver | None = field(repr=False, default=None)
    #: done() was called; its records while its id is written (see _Pending),
    #: and the background write.
    _done: bool = field(repr=False, default=False)
    _pending: _Pending | None = field(repr=False, default=None)
    _settling: asyncio.Task[None] | None = field(repr=False, default=None)
    #: A streamed transfer's seal signature (None: unsigned) and records' digest.
    _signature: Any = field(repr=False, default=None)
    _digest: bytes | None = field(repr=False, default=None)

    def header(self, name: str) -> bytes | None:
        """The last value of a header, or None."""
        return last_header(self.headers, name)

    @property
    def streamed(self) -> bool:
        """Whether it came as a streamed transfer: ``payload`` is None and
        ``message`` holds the message, its weights decoded as they came."""
        return self.payload is None and self.message is not None

    async def verify(self, verifier: Verifier) -> Message:
        """Check it with ``verifier`` (:meth:`Verifier.averify` on its payload;
        for a streamed transfer, :meth:`Verifier.verify_streamed` with its seal's
        signature) and return the verified message. Raises RefusedMessageError,
        neither logged nor counted (``verifier.refuse(exc)`` does both)."""
        if self.streamed:
            assert self.message is not None
            return verifier.verify_streamed(self.message, self._signature, self._digest)
        return await verifier.averify(self.payload)

    @property
    def message_id(self) -> str | None:
        """The ``flwire-message-id`` header (set by ``send_message``), or None."""
        raw = self.header(MESSAGE_ID)
        return raw.decode("utf-8", "replace") if raw else None

    @property
    def id(self) -> str | None:
        """What de-duplication knows this delivery by: its message id, else the
        id of the transfer it came in (None for a bare single record)."""
        return self.message_id or self.transfer_id

    async def done(self) -> None:
        """The payload is handled: record its id, then let its offsets be committed.

        Returns at once, without waiting for the broker: with de-duplication on,
        the id's record is written in the background, and the offsets are let go
        only once the transport has acknowledged it (:meth:`settled` waits for
        that). A write that fails is reported (``stats["unsettled"]``, a
        :class:`DeliveryUnsettled` event) and made again, with a backoff of
        0.5 s doubling to 5 s, until it succeeds or the receive loop ends. A
        second call changes nothing. Raises CommunicationException when the
        delivery's receive loop has ended (its offsets were not committed: it
        comes again after a restart)."""
        if self._receiver is None:
            tokens, self._tokens = self._tokens, []
            await _finish_tokens(tokens)
            return
        await self._receiver.settle_done(self)

    async def settled(self) -> None:
        """Wait until :meth:`done` has taken effect: the id recorded (with
        de-duplication on) and the offsets let go to be committed. Raises
        CommunicationException when the id's write in progress (or the next
        one, during a backoff) fails (the channel keeps making it, until its
        receive loop ends) or the receive loop ended first: the offsets are
        then not committed, and the delivery comes again after a restart. Waits
        at most the transport's own bound on a send (and a backoff)."""
        if self._receiver is not None and not self._done:
            raise CommunicationException(
                f"delivery {self.id} is not settled: call done() first (settled() waits "
                "for what done() started)"
            )
        task, pending = self._settling, self._pending
        if task is None or pending is None:
            return
        failed = asyncio.ensure_future(pending.failed.wait())
        try:
            # Neither is cancelled when the caller is.
            await asyncio.wait([task, failed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            failed.cancel()
        if task.cancelled():
            raise CommunicationException(
                f"delivery {self.id}: its id was still being recorded when its receive "
                f"loop ended (after waiting {SETTLE_DRAIN_S:g} s); its offsets stay "
                "uncommitted, so it is delivered again after a restart"
            )
        if pending.error is None:
            return
        if task.done():  # written, and then the commit failed
            raise pending.error
        raise CommunicationException(
            f"delivery {self.id}: its id is not recorded yet: {pending.error} (the "
            "channel writes it again until its receive loop ends)"
        ) from pending.error

    async def fail(self, error: BaseException | str) -> None:
        """The payload could not be handled: hand it out again, or after the last
        attempt dead-letter (or skip) it, as the channel's FailurePolicy says."""
        if self._receiver is None:
            raise CommunicationException(
                "this Delivery was not handed out by Channel.receive, so it cannot be retried"
            )
        await self._receiver.settle_failed(self, error)


class Channel:
    """Sends and receives payloads of any size over a :class:`Transport`.

    ``on_event`` is called with a :class:`TransferDropped` or
    :class:`DeliveryFailed` whenever data could not be handed to the
    application, and with a :class:`DeliveryUnsettled` when a handled
    delivery's id could not be recorded; ``failure_policy`` says what
    ``Delivery.fail`` does.

    :attr:`stats` counts, since the channel was made:

    - ``sent``: messages written (whole, split or streamed), dead letters
      included; ``sent_parts``: the records of split or streamed ones;
      ``sent_streams``: the streamed ones; ``bytes_sent``: record values written;
    - ``received``: deliveries handed out (``received_streams`` of them streamed);
      ``received_parts``: records of split or streamed transfers taken in;
      ``bytes_received``: record values taken in;
    - ``duplicates``: copies skipped (a message or part seen before);
      ``bad_records``: records skipped as unreadable (logged);
      ``dropped_transfers``: transfers given up (a :class:`TransferDropped` each);
      ``refused``: messages the verifier refused;
    - ``retries``: ``fail()`` calls that handed a delivery out again;
      ``dead_lettered``: deliveries written to the dead-letter topic (also in
      ``sent``); ``failed_deliveries``: deliveries failed for good with no
      dead-letter topic; ``unsettled``: done deliveries whose id could not be
      recorded (a :class:`DeliveryUnsettled` each).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        on_progress: ProgressCallback | None = None,
        reassembler: Reassembler | None = None,
        streams: StreamAssembler | None = None,
        max_in_flight: int = 64,
        max_in_flight_bytes: int = 32 << 20,
        failure_policy: FailurePolicy | None = None,
        on_event: EventCallback | None = None,
    ) -> None:
        if not isinstance(transport, Transport):
            raise TypeError(
                f"Channel() takes a Transport (KafkaTransport(bootstrap) or "
                f"InMemoryTransport()), got {type(transport).__name__}"
            )
        self.transport = transport
        self.on_progress = on_progress
        self.on_event = on_event
        self.max_in_flight = require_count(max_in_flight, "max_in_flight", minimum=1)
        self.max_in_flight_bytes = require_count(
            max_in_flight_bytes, "max_in_flight_bytes", minimum=1, unit="bytes"
        )
        self.reassembler = reassembler or Reassembler()
        self.streams = streams or StreamAssembler(part_timeout=self.reassembler.part_timeout)
        self.failure_policy = failure_policy or FailurePolicy()
        self.stats: dict[str, int] = {
            "sent": 0,
            "sent_parts": 0,
            "sent_streams": 0,
            "received": 0,
            "received_streams": 0,
            "received_parts": 0,
            "bad_records": 0,
            "dropped_transfers": 0,
            "duplicates": 0,
            "retries": 0,
            "failed_deliveries": 0,
            "unsettled": 0,
            "dead_lettered": 0,
            "refused": 0,
            "bytes_sent": 0,
            "bytes_received": 0,
        }

    async def send(
        self,
        topic: str,
        payload: Any,
        *,
        key: bytes | None = None,
        headers: Headers | None = None,
        transfer_id: str | None = None,
    ) -> None:
        """Send a payload (bytes-like, or a list of bytes-like pieces sent as their
        concatenation, never joined when it is split into parts); return once every
        record of it is confirmed written."""
        _check_topic(topic)
        view: Any
        if isinstance(payload, list | tuple):
            view = Segments(payload)
        else:
            view = byte_view(payload, "payload")
        limit = self.transport.max_record_bytes
        headers = list(headers or [])
        overhead = len(key or b"") + sum(len(k) + len(v) for k, v in headers)
        if len(view) + overhead <= limit:
            if isinstance(view, Segments):
                value: Any = view.join()
            else:
                value = payload if isinstance(payload, bytes) else view
            await self.transport.send(topic, value, key=key, headers=headers)
            self.stats["sent"] += 1
            self.stats["bytes_sent"] += len(view)
            return
        transfer_id = transfer_id or uuid.uuid4().hex
        key = key if key is not None else transfer_id.encode()

        async def parts() -> AsyncIterator[tuple[bytes, Headers]]:
            for part, index, count in split_payload(view, transfer_id, limit - overhead):
                yield part, [*headers, (PART_HEADER, f"{index}/{count}".encode())]

        def sent(acked: int) -> tuple[int, int]:
            return min(acked, len(view)), len(view)

        count, acked = await self._send_records(topic, key, transfer_id, parts(), sent)
        self.stats["sent"] += 1
        self.stats["sent_parts"] += count
        self.stats["bytes_sent"] += acked

    async def _send_records(
        self,
        topic: str,
        key: bytes,
        transfer_id: str,
        records: AsyncIterator[tuple[bytes, Headers]],
        progress: Callable[[int], tuple[int, int]],
    ) -> tuple[int, int]:
        """Send ``records`` in order, with at most ``max_in_flight`` records and
        ``max_in_flight_bytes`` bytes waiting for their ack at a time (so that
        they never add up to a second copy of a large payload); return (records,
        bytes) once every one is confirmed written. ``progress(bytes acked)``
        gives what ``on_progress`` is told."""
        window: deque[tuple[asyncio.Task[None], int]] = deque()
        acked = count = waiting = 0

        async def settle_oldest() -> None:
            nonlocal acked, waiting
            task, size = window.popleft()
            await task
            acked += size
            waiting -= size
            if self.on_progress:
                self.on_progress("send", transfer_id, *progress(acked))

        try:
            async for value, record_headers in records:
                task = asyncio.ensure_future(
                    self.transport.send(topic, value, key=key, headers=record_headers)
                )
                # Let the transport hand this record to its client before building
                # the next one, so records usually enter the partition in order.
                await asyncio.sleep(0)
                window.append((task, len(value)))
                waiting += len(value)
                count += 1
                while window and (
                    len(window) >= self.max_in_flight or waiting >= self.max_in_flight_bytes
                ):
                    await settle_oldest()
                # A record that failed ends the send now: nothing more is written
                # after a gap (a receiver could not complete the payload anyway).
                while window and window[0][0].done():
                    await settle_oldest()
                for task, _ in window:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        await task
            while window:
                await settle_oldest()
        except BaseException:
            for task, _ in window:
                task.cancel()
            raise
        return count, acked

    async def send_message(self, topic: str, msg: Message) -> int:
        """Send a flwire message with its routing headers, keyed by its sender
        (so a sender's messages stay in order); return its size in bytes. A
        message built with ``EncodeOptions(stream=True)`` goes as a streamed
        transfer (wire format section 14.5), its weights encoded as they are
        sent: its size is then the bytes of its records."""
        if not isinstance(msg, Message):
            raise TypeError(
                f"send_message() takes a flwire Message (flwire.messages builders, or "
                f"decode_message), got {type(msg).__name__}; bytes go to channel.send(topic, "
                "payload)"
            )
        _check_topic(topic)
        if msg.sources is not None:
            return await self._send_stream(topic, msg)
        pieces = Segments(msg.buffers())  # the weights go into parts without a join
        await self.send(
            topic,
            pieces.views,
            key=msg.sender_id.encode(),
            headers=message_headers(msg),
            transfer_id=msg.message_id,
        )
        return len(pieces)

    async def send_stream_as(self, topic: str, msg: Message, headers: Headers) -> int:
        """Stream a message whose weights are unencoded (see ``send_message``) with
        ``headers`` instead of its own routing headers (a dead letter's)."""
        return await self._send_stream(topic, msg, headers)

    async def _send_stream(self, topic: str, msg: Message, headers: Headers | None = None) -> int:
        key = msg.sender_id.encode()
        headers = message_headers(msg) if headers is None else headers
        # Room for the key, the headers and the stream header with its index.
        overhead = len(key) + sum(len(k) + len(v) for k, v in headers) + len(STREAM_HEADER) + 10
        writer = StreamWriter(msg, self.transport.max_record_bytes - overhead)

        async def records() -> AsyncIterator[tuple[bytes, Headers]]:
            index = 0
            async for value in writer.parts():
                yield value, [*headers, (STREAM_HEADER, str(index).encode())]
                index += 1

        def sent(_: int) -> tuple[int, int]:
            return writer.raw_done, writer.raw_total

        count, acked = await self._send_records(topic, key, msg.message_id, records(), sent)
        self.stats["sent"] += 1
        self.stats["sent_streams"] += 1
        self.stats["sent_parts"] += count
        self.stats["bytes_sent"] += acked
        return acked

    async def receive(
        self,
        topics: Sequence[str],
        group_id: str,
        *,
        dedupe: bool = True,
        verifier: Verifier | None = None,
    ) -> AsyncGenerator[Delivery, None]:
        """Payloads from ``topics`` for consumer group ``group_id``; settle each
        with ``await delivery.done()`` or ``await delivery.fail(error)``.

        With ``dedupe`` (the default) the group's handled ids are read back from
        the transport first (``<group_id>.seen``) and deliveries already handled
        are skipped; a transport that cannot read a topic back needs
        ``dedupe=False``.

        With ``verifier``, deliveries it refuses are settled and skipped (see
        the module); the others carry their verified message in
        ``delivery.message``.
        """
        if isinstance(topics, str | bytes) or not topics:
            raise TypeError(
                f"receive() takes a non-empty list of topic names, got {topics!r}"
                + (f": pass [{topics!r}]" if isinstance(topics, str) and topics else "")
            )
        for topic in topics:
            _check_topic(topic)
        if not isinstance(group_id, str) or not group_id:
            raise TypeError(
                f"receive() needs a consumer group id (a non-empty str), got {group_id!r}; "
                "e.g. TopicLayout.server_group()"
            )
        seen = None
        if dedupe:
            seen = SeenLog(self.transport, group_id)
            await seen.load()
        subscription = await self.transport.subscribe(topics, group_id)
        receiver = _Receiver(self, subscription, seen)
        loop = asyncio.get_running_loop()
        # Missing parts must time out even when no further record arrives.
        expiry = asyncio.create_task(self._expire_periodically())
        records = subscription.__aiter__()
        try:
            while True:
                while receiver.retries:
                    ready_at, retry = receiver.retries.popleft()
                    delay = ready_at - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    yield retry
                try:
                    record = await records.__anext__()
                except StopAsyncIteration:
                    return
                tp = (record.topic, record.partition)
                receiver.tracker.seen(tp, record.offset)
                token = _Token(record, receiver, receiver.tracker.generation(tp))
                if record.header(STREAM_HEADER) is not None:
                    delivery, abandoned = await self._on_stream_record(token, seen)
                else:
                    delivery, abandoned = self._on_record(token, seen)
                abandoned.extend(self._drop(self.reassembler.expire()))
                abandoned.extend(self._drop_streams(self.streams.expire()))
                # Nothing will handle these records: let their offsets move on.
                await _finish_tokens(abandoned)
                if delivery is None:
                    continue
                ident = delivery.id
                if seen is not None and ident is not None:
                    if ident in seen:
                        self.stats["duplicates"] += 1
                        logger.info("Skipped delivery %s: already handled by this group", ident)
                        await _finish_tokens(delivery._tokens)
                        continue
                    holder = receiver.in_flight.get(ident)
                    if holder is not None:
                        # A copy of a delivery still being handled (redelivered by a
                        # rebalance, or sent twice): its records settle with it.
                        self.stats["duplicates"] += 1
                        holder._tokens.extend(delivery._tokens)
                        continue
                    receiver.in_flight[ident] = delivery
                if verifier is not None and not await self._verify(delivery, verifier):
                    if ident is not None and receiver.in_flight.get(ident) is delivery:
                        del receiver.in_flight[ident]
                    await _finish_tokens(delivery._tokens)
                    continue
                delivery._receiver = receiver
                await receiver.bound_settling()
                yield delivery
        finally:
            expiry.cancel()
            try:
                await receiver.drain(SETTLE_DRAIN_S)
            finally:
                receiver.closed = True
                await subscription.close()

    async def _verify(self, delivery: Delivery, verifier: Verifier) -> bool:
        """Verify a delivery: set its message, or count its refusal (the verifier
        logs it)."""
        try:
            delivery.message = await delivery.verify(verifier)
        except RefusedMessageError as exc:
            claimed = delivery.header(SENDER_ID)
            verifier.refuse(exc, claimed=claimed.decode("utf-8", "replace") if claimed else None)
            delivery.message = None
            self.stats["refused"] += 1
            return False
        return True

    async def _expire_periodically(self) -> None:
        timeout = min(self.reassembler.part_timeout, self.streams.part_timeout)
        interval = max(0.2, min(5.0, timeout / 4))
        while True:
            await asyncio.sleep(interval)
            await _finish_tokens(self._drop(self.reassembler.expire()))
            await _finish_tokens(self._drop_streams(self.streams.expire()))

    def _drop_streams(self, failed: Sequence[Failed]) -> list[_Token]:
        """Count and report streamed transfers given up on (and parts skipped);
        their tokens, to finish."""
        tokens: list[_Token] = []
        for drop in failed:
            tokens.extend(drop.tokens)
            if drop.duplicate:
                self.stats["duplicates"] += 1
                continue
            if drop.unreadable:
                self.stats["bad_records"] += 1
                logger.error("Skipped a bad stream record: %s", drop.reason)
                continue
            self._report_dropped(
                drop.tokens, drop.transfer_id, drop.reason, drop.parts_received, 0, drop.total_bytes
            )
        return tokens

    async def _on_stream_record(
        self, token: _Token, seen: SeenLog | None
    ) -> tuple[Delivery | None, list[_Token]]:
        """The delivery this part of a streamed transfer completes (if any), and
        records to give up on."""
        record = token.record
        self.stats["bytes_received"] += len(record.value)
        self.stats["received_parts"] += 1
        ident = record.header(MESSAGE_ID)
        if seen is not None and ident is not None and ident.decode("utf-8", "replace") in seen:
            if not self.streams.holds(ident.decode("utf-8", "replace")):
                # A part of a message this group has handled: nothing to decode.
                self.stats["duplicates"] += 1
                return None, [token]
        finished, failed = await self.streams.add(record.value, token.slim())
        abandoned = self._drop_streams(failed)
        if self.on_progress and ident is not None:
            tid = ident.decode("utf-8", "replace")
            if finished is not None:
                size = finished.message.weights_nbytes
                self.on_progress("receive", tid, size, size)
            elif self.streams.holds(tid):
                self.on_progress("receive", tid, *self.streams.progress(tid))
        if finished is None:
            return None, abandoned
        self.stats["received"] += 1
        self.stats["received_streams"] += 1
        headers = [(k, v) for k, v in record.headers if k != STREAM_HEADER]
        delivery = Delivery(
            record.topic,
            record.key,
            None,
            headers,
            transfer_id=finished.transfer_id,
            message=finished.message,
        )
        delivery._signature = finished.signature
        delivery._digest = finished.digest
        delivery._tokens = list(finished.tokens)
        return delivery, abandoned

    def _drop(self, dropped: Sequence[Dropped]) -> list[_Token]:
        """Count and report transfers given up on; their tokens, to finish."""
        tokens: list[_Token] = []
        for drop in dropped:
            tokens.extend(drop.tokens)
            if drop.reason in (LATE_DUPLICATE, DUPLICATE_PART, SPARE_COPY):
                self.stats["duplicates"] += 1
                continue
            if drop.reason == CORRUPTED:
                self.stats["bad_records"] += 1
            self._report_dropped(
                drop.tokens,
                drop.transfer_id,
                drop.reason,
                drop.parts_received,
                drop.parts_total,
                drop.total_bytes,
            )
        return tokens

    def _report_dropped(
        self,
        tokens: Sequence[_Token],
        transfer_id: str,
        reason: str,
        parts_received: int,
        parts_total: int,
        total_bytes: int,
    ) -> None:
        """Count a transfer given up on and report it to ``on_event`` (logged as
        a warning too when no ``on_event`` is set: never lost without a word)."""
        self.stats["dropped_transfers"] += 1
        first = tokens[0].record if tokens else None
        if self.on_event is None:
            where = f" on {first.topic}[{first.partition}]" if first else ""
            logger.warning(
                "Gave up on transfer %s%s (%d parts received): %s",
                transfer_id,
                where,
                parts_received,
                reason,
            )
        self.emit(
            TransferDropped(
                topic=first.topic if first else "",
                partition=first.partition if first else -1,
                transfer_id=transfer_id,
                reason=reason,
                parts_received=parts_received,
                parts_total=parts_total,
                total_bytes=total_bytes,
            )
        )

    def emit(self, event: ChannelEvent) -> None:
        """Hand an event to ``on_event`` (an exception there is logged, not raised)."""
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:
            logger.exception("on_event callback failed on %r", event)

    def _on_record(
        self, token: _Token, seen: SeenLog | None
    ) -> tuple[Delivery | None, list[_Token]]:
        """The delivery this record completes (if any), and records to give up on
        (possibly other receive loops' records, each finished by its own loop)."""
        record = token.record
        self.stats["bytes_received"] += len(record.value)
        if record.header(PART_HEADER) is None:
            self.stats["received"] += 1
            delivery = Delivery(record.topic, record.key, record.value, record.headers)
            delivery._tokens = [token]
            return delivery, []
        self.stats["received_parts"] += 1
        try:
            part = parse_part(record.value)
            if seen is not None and part.transfer_id in seen:
                # A part of a transfer this group has handled (delivered again after
                # a restart, or sent twice): nothing to rebuild.
                self.stats["duplicates"] += 1
                return None, [token]
            completed, dropped = self.reassembler.add(part, token.slim())
        except (SerializationException, CommunicationException) as exc:
            self.stats["bad_records"] += 1
            logger.error(
                "Skipped a bad part at %s[%d]@%d: %s",
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            return None, [token]
        abandoned = self._drop(dropped)
        if self.on_progress:
            done, _ = self.reassembler.progress(part.transfer_id)
            self.on_progress(
                "receive",
                part.transfer_id,
                part.total_size if completed else done,
                part.total_size,
            )
        if completed is None:
            return None, abandoned
        self.stats["received"] += 1
        headers = [(k, v) for k, v in record.headers if k != PART_HEADER]
        delivery = Delivery(
            record.topic, record.key, completed.payload, headers, transfer_id=part.transfer_id
        )
        delivery._tokens = list(completed.tokens)
        return delivery, abandoned


class _Receiver:
    """The state of one receive loop: its subscription, offsets, ids and retries."""

    def __init__(self, channel: Channel, subscription: Subscription, seen: SeenLog | None) -> None:
        self.channel = channel
        self.subscription = subscription
        self.seen = seen
        self.tracker = OffsetTracker()
        #: (loop time when due, delivery) of failed deliveries to hand out again.
        self.retries: deque[tuple[float, Delivery]] = deque()
        #: Deliveries handed out and not settled yet, by id (with de-duplication on).
        self.in_flight: dict[str, Delivery | _Pending] = {}
        #: Writes of done deliveries' ids under way (see settle_done).
        self.settling: set[asyncio.Task[None]] = set()
        #: The receive loop has ended: its subscription is closed.
        self.closed = False
        # A rebalance took partitions away: records of theirs still being handled
        # must not move their commit point (another consumer owns it now).
        subscription.on_revoke(self._revoked)

    def _revoked(self, partitions: list[tuple[str, int]]) -> None:
        for tp in partitions:
            self.tracker.forget(tp)

    async def finish(self, tokens: list[_Token]) -> None:
        commits: dict[tuple[str, int], int] = {}
        for token in tokens:
            rec = token.record
            tp = (rec.topic, rec.partition)
            moved = self.tracker.finish(tp, rec.offset, token.generation)
            if moved is not None:
                commits[tp] = moved
        for (topic, partition), next_offset in commits.items():
            await self.subscription.commit(topic, partition, next_offset)

    async def settle_done(self, delivery: Delivery) -> None:
        if delivery._done or not delivery._tokens:
            return  # settled, being settled, or handed out again by fail()
        if self.closed:
            raise CommunicationException(
                f"delivery {delivery.id} from {delivery.topic}: its receive loop has ended, "
                "so its offsets can no longer be committed; it is delivered again after a "
                "restart (call done() before leaving the loop)"
            )
        delivery._done = True
        ident = delivery.id
        if self.seen is None or ident is None:
            tokens, delivery._tokens = delivery._tokens, []
            await _finish_tokens(tokens)
            return
        # What the write needs, without the delivery: its payload and message are
        # the application's, freed when it lets them go, not held during the write.
        pending = _Pending(ident, delivery.topic, [t.slim() for t in delivery._tokens])
        delivery._tokens = []
        delivery._pending = pending
        if self.in_flight.get(ident) is delivery:
            self.in_flight[ident] = pending  # copies arriving meanwhile join it
        # The id's record is one broker round trip: written beside the handling of
        # the next deliveries, not awaited here (done() never waits for the broker).
        task = asyncio.create_task(self._record(pending))
        delivery._settling = task
        self.settling.add(task)
        task.add_done_callback(self.settling.discard)

    async def _record(self, pending: _Pending) -> None:
        """Write a done delivery's id (again after a failure, with a backoff,
        until it succeeds or the receive loop cancels this), then let its
        offsets go. The first failure is reported."""
        assert self.seen is not None
        attempt = 0
        while True:
            try:
                await self.seen.add(pending.ident)
                break
            except CommunicationException as exc:
                attempt += 1
                pending.error = exc
                pending.failed.set()  # wakes settled(); later calls wait for the next try
                pending.failed = asyncio.Event()
                retry_s = min(SETTLE_RETRY_S[1], SETTLE_RETRY_S[0] * 2 ** (attempt - 1))
                if attempt == 1:
                    self.channel.stats["unsettled"] += 1
                    self.channel.emit(DeliveryUnsettled(pending.topic, pending.ident, str(exc)))
                logger.error(
                    "Delivery %s from %s is done, but its id could not be recorded "
                    "(attempt %d): %s; its offsets stay uncommitted until it is (written "
                    "again in %g s; if the receive loop ends first, the delivery comes "
                    "again after a restart)",
                    pending.ident,
                    pending.topic,
                    attempt,
                    exc,
                    retry_s,
                )
                await asyncio.sleep(retry_s)
        pending.error = None
        # Taken only now: copies that arrived during the write joined these tokens.
        tokens, pending._tokens = pending._tokens, []
        if self.in_flight.get(pending.ident) is pending:
            del self.in_flight[pending.ident]
        try:
            await _finish_tokens(tokens)
        except Exception as exc:  # e.g. the consumer closed meanwhile
            pending.error = CommunicationException(
                f"delivery {pending.ident} from {pending.topic}: its id is recorded, but its "
                f"offsets could not be committed ({type(exc).__name__}: {exc}); it is "
                "delivered again after a restart, and skipped there as handled (leave the "
                "receive loop with contextlib.aclosing, or let it end, before stopping the "
                "transport)"
            )
            pending.failed.set()
            logger.error("%s", pending.error)

    async def bound_settling(self) -> None:
        """Wait while MAX_SETTLING ids are being written (see MAX_SETTLING)."""
        while len(self.settling) >= MAX_SETTLING:
            await asyncio.wait(set(self.settling), return_when=asyncio.FIRST_COMPLETED)

    async def drain(self, bound_s: float) -> None:
        """Wait up to ``bound_s`` for the ids being written; a write still going
        then is cancelled (its delivery's offsets stay uncommitted: it comes
        again after a restart, and is skipped if its id did get written). The
        writes are cancelled too if this wait is."""
        if not self.settling:
            return
        pending = set(self.settling)
        late = pending
        try:
            _, late = await asyncio.wait(pending, timeout=bound_s)
        finally:
            for task in late:
                task.cancel()
        if late:
            logger.warning(
                "Stopped receiving with %d delivery id(s) still being recorded after %g s; "
                "their offsets stay uncommitted (delivered again after a restart)",
                len(late),
                bound_s,
            )

    async def settle_failed(self, delivery: Delivery, error: BaseException | str) -> None:
        reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        if delivery._done or not delivery._tokens:
            # Settled already: its failure cannot undo a done() (nor fail it twice).
            logger.warning(
                "Delivery %s from %s was settled already (done() or fail()); this fail() "
                "is ignored: %s",
                delivery.id,
                delivery.topic,
                reason,
            )
            return
        policy = self.channel.failure_policy
        stats = self.channel.stats
        if delivery.attempt < policy.max_attempts:
            stats["retries"] += 1
            retry = dataclasses.replace(delivery, attempt=delivery.attempt + 1)
            retry._tokens, delivery._tokens = delivery._tokens, []
            retry._receiver = self
            if retry.id is not None and self.in_flight.get(retry.id) is delivery:
                self.in_flight[retry.id] = retry
            due = asyncio.get_running_loop().time() + policy.backoff(delivery.attempt)
            self.retries.append((due, retry))
            logger.warning(
                "Delivery %s from %s failed (attempt %d of %d): %s; handing it out again",
                delivery.id,
                delivery.topic,
                delivery.attempt,
                policy.max_attempts,
                reason,
            )
            return
        dead_letter = policy.dead_letter_topic(delivery.topic)
        if dead_letter is not None:
            first = delivery._tokens[0].record
            headers = dead_letter_headers(
                delivery.headers,
                error=reason,
                attempts=delivery.attempt,
                source=f"{first.topic}[{first.partition}]@{first.offset}",
            )
            if delivery.payload is None and delivery.message is not None:
                # A streamed transfer goes to the dead letters as one again.
                await self.channel.send_stream_as(dead_letter, delivery.message, headers)
            else:
                await self.channel.send(
                    dead_letter, delivery.payload, key=delivery.key, headers=headers
                )
            stats["dead_lettered"] += 1
        else:
            stats["failed_deliveries"] += 1
        logger.error(
            "Delivery %s from %s failed %d time(s): %s; %s",
            delivery.id,
            delivery.topic,
            delivery.attempt,
            reason,
            f"written to {dead_letter!r}" if dead_letter else "skipped",
        )
        self.channel.emit(
            DeliveryFailed(
                topic=delivery.topic,
                message_id=delivery.id,
                attempts=delivery.attempt,
                error=reason,
                dead_letter_topic=dead_letter,
            )
        )
        # Settled for good: remembered as handled, so a copy delivered again after
        # a restart is not retried from scratch.
        await self.settle_done(delivery)


@dataclass
class _Pending:
    """A done delivery's records (slim tokens), held while its id is written;
    copies of the delivery that arrive meanwhile join them. ``error``: the
    write's, when it failed."""

    ident: str
    topic: str
    _tokens: list[_Token]
    #: The last failed write's error (None once written).
    error: CommunicationException | None = None
    #: Set when a write fails, then replaced: what settled() waits on besides the task.
    failed: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class _Token:
    """A received record, the receive loop that finishes it, and its partition's
    generation in that loop's tracker when it was received."""

    record: Record
    receiver: _Receiver
    generation: int

    def slim(self) -> _Token:
        """This token without the record's value, key and headers: what a part held
        until its transfer completes needs (where it is, to commit and report it),
        so that held parts cost the bytes the reassembler counts, not whole records."""
        bare = dataclasses.replace(self.record, value=b"", key=None, headers=[])
        return _Token(bare, self.receiver, self.generation)


def _check_topic(topic: Any) -> None:
    """TypeError unless ``topic`` is a non-empty str (a topic name)."""
    if not isinstance(topic, str) or not topic:
        raise TypeError(
            f"a topic name must be a non-empty str, got {topic!r} (TopicLayout(job) names "
            "a job's topics: layout.updates, layout.broadcast, layout.for_message(type))"
        )


async def _finish_tokens(tokens: Sequence[_Token]) -> None:
    by_loop: dict[int, tuple[_Receiver, list[_Token]]] = {}
    for token in tokens:
        entry = by_loop.setdefault(id(token.receiver), (token.receiver, []))
        entry[1].append(token)
    for receiver, group in by_loop.values():
        await receiver.finish(group)
