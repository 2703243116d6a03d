"""Which offset a consumer may commit when records finish out of order.

Parts of a large payload, and whole messages, finish when their handler does;
a record's offset may be committed only when every record before it in its
partition has finished too. Committing that low-water mark gives
at-least-once delivery: after a crash, everything not finished is read again.
"""

from __future__ import annotations

from collections import deque

TopicPartition = tuple[str, int]


class OffsetTracker:
    """Per partition: the offsets seen, in order, and which are finished."""

    def __init__(self) -> None:
        self._seen: dict[TopicPartition, deque[int]] = {}
        self._finished: dict[TopicPartition, set[int]] = {}

    def seen(self, tp: TopicPartition, offset: int) -> None:
        """A record was received (offsets arrive in increasing order per partition)."""
        self._seen.setdefault(tp, deque()).append(offset)
        self._finished.setdefault(tp, set())

    def finish(self, tp: TopicPartition, offset: int) -> int | None:
        """Mark a record finished; return the offset to commit if it moved."""
        finished = self._finished[tp]
        finished.add(offset)
        queue = self._seen[tp]
        moved = None
        while queue and queue[0] in finished:
            done = queue.popleft()
            finished.discard(done)
            moved = done + 1
        return moved
