"""The message ids a consumer group has handled, kept on the transport so that
de-duplication survives a restart.

Why: delivery is at least once. A consumer that handled a message but stopped
before its offset commit gets the message again from the next consumer of its
group; an in-memory set of seen ids (:class:`flwire.messages.SeenIds`) is empty
after a restart, so the message would be handled twice. :class:`SeenLog` writes
each handled id to a log-compacted topic, ``<group_id>.seen``, and reads it back
on start: handling plus the id's record gives the effect of exactly once across
restarts. The order that makes it hold: handle the message, ``await add(id)``
(returns once the transport acknowledged the id's record), then commit the offset;
after a restart, ``await load()`` before receiving, and skip (but commit) a message
whose id is ``in`` the log.

What remains: between the handler's success and the acknowledgement of the id's
record, a crash loses the id, and the message is handled again after the restart
(its offset was not committed either). The window is one round trip to the broker.
A failed ``add`` raises and remembers nothing: the caller must not commit then.

Bounds:

- memory: the newest ``capacity`` ids (an LRU like SeenIds); a redelivery of an
  older one is not recognized;
- topic: one record per handled message (key: the id in UTF-8, value: the time it
  was added, in milliseconds since the epoch, 8 bytes big-endian). The topic is
  created with ``cleanup.policy=compact,delete`` and ``retention.ms`` (default 7
  days): compaction keeps one record per id, and records older than the retention
  are deleted, so an id is forgotten after about the retention (Kafka deletes and
  compacts only closed segments, so up to the retention plus ``segment.ms``, 7 days
  by default). A restart reads the whole topic back (``Transport.read_topic``).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

from flwire.transport.base import Transport

logger = logging.getLogger(__name__)

#: Default retention of the ids' topic: 7 days.
DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000


class SeenLog:
    """Message ids handled by consumer group ``group_id``, persisted on ``transport``
    in the compacted topic ``f"{group_id}.seen"`` (:attr:`topic`; flwire's group ids,
    such as ``flwire.<job>.server``, are legal topic names, and so is the suffix).

    Call :meth:`load` once before receiving; then ``message_id in log`` tells a
    message already handled, and :meth:`add` records one after handling it, before
    its offset is committed.
    """

    def __init__(
        self,
        transport: Transport,
        group_id: str,
        *,
        capacity: int = 100_000,
        retention_ms: int = DEFAULT_RETENTION_MS,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self.transport = transport
        self.group_id = group_id
        self.capacity = capacity
        self.retention_ms = retention_ms
        #: The topic that holds the ids.
        self.topic = f"{group_id}.seen"
        self._ids: OrderedDict[str, None] = OrderedDict()

    async def load(self) -> int:
        """Create the topic if missing, read it back and keep its newest ``capacity``
        ids in memory (ids added before this call stay, as the newest); return how
        many ids were loaded from the topic."""
        started = time.monotonic()
        await self.transport.ensure_compacted_topic(self.topic, retention_ms=self.retention_ms)
        records = await self.transport.read_topic(self.topic)
        loaded: OrderedDict[str, None] = OrderedDict()
        for record in records:  # one partition: in the order the ids were added
            if record.key is None:
                continue
            message_id = bytes(record.key).decode("utf-8", errors="replace")
            if record.value is None:  # a tombstone: the id was deleted
                loaded.pop(message_id, None)
                continue
            loaded[message_id] = None
            loaded.move_to_end(message_id)
        while len(loaded) > self.capacity:
            loaded.popitem(last=False)
        count = len(loaded)
        for message_id in self._ids:
            loaded[message_id] = None
            loaded.move_to_end(message_id)
        while len(loaded) > self.capacity:
            loaded.popitem(last=False)
        self._ids = loaded
        logger.info(
            "Loaded %d handled message id(s) of group %r from topic %r (%d record(s)) in %.3f s",
            count,
            self.group_id,
            self.topic,
            len(records),
            time.monotonic() - started,
        )
        return count

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    async def add(self, message_id: str) -> None:
        """Record that ``message_id`` is handled: send its record, wait for the
        transport's acknowledgement, then remember it (the oldest id goes past
        ``capacity``). An id already here is sent again (its record is renewed, so
        its retention starts over). If the send fails, the exception (a
        CommunicationException from the transport) propagates and nothing is
        remembered: do not commit the message's offset then."""
        stamp = int(time.time() * 1000).to_bytes(8, "big")
        await self.transport.send(self.topic, stamp, key=message_id.encode("utf-8"))
        self._ids[message_id] = None
        self._ids.move_to_end(message_id)
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
