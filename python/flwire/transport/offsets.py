"""Which offset a consumer may commit when records finish out of order.

Parts of a large payload, and whole messages, finish when their handler does
(or when they are given up on), in any order. A committed offset ``C`` for a
partition promises: every record with an offset below ``C`` that this consumer
saw has been finished at least once. Nothing is ever committed past a record
that has not finished, so after a crash or a rebalance everything unfinished is
read again: at-least-once delivery (the application de-duplicates repeats).

Semantics, per partition ``tp`` and per *generation* (a generation ends when
the partition is revoked, :meth:`OffsetTracker.forget`):

* The commit point is the smallest offset seen in this generation that has
  never been finished, or, when every seen offset has been finished, the
  largest seen offset + 1. Offsets never seen (gaps left by compaction or
  transaction markers) are not waited for. Across a gap the value returned is
  the last finished offset + 1 rather than the next unfinished offset: no
  record lies between the two, so a consumer resumes at the same record, and
  the commit only ever moves when a finish lets it (never on ``seen``).
* Records may be seen again: after a rejoin or restart the consumer rewinds to
  the group's committed offset and delivers offsets a second time, possibly
  while the first copy is still being handled. Copies do not count: an offset
  is done once *any* copy of it has finished. A copy of an offset seen again
  after it was finished does not hold the commit point back (it was handled
  once; the repeat is a redelivery), and an offset below the last value
  returned is ignored outright (everything there was handled).
* :meth:`~OffsetTracker.finish` returns the commit point only when it moved
  forward past the last value returned for ``tp``, so the returned values
  strictly increase: a commit never goes backwards, not even across a
  :meth:`~OffsetTracker.forget` and re-assignment.
* A finish for an offset that is not tracked (never seen, already finished,
  below the last commit, or an unknown partition) is ignored. A finish passing
  the ``generation`` of the copy it finishes (from
  :meth:`~OffsetTracker.generation` when the record was seen) is ignored when
  that generation has ended, so a late finish of a record seen before a revoke
  never moves the commit of the partition's next assignment. Without
  ``generation`` a finish counts for the current generation (the tracker cannot
  tell copies apart otherwise); callers that never :meth:`~OffsetTracker.forget`
  need not pass it.

Memory: per partition, the tracker holds each distinct offset seen in the
current generation in ``[last commit, largest seen]`` once (a min-heap of
offsets and a dict of their finished flags), plus a few integers. Duplicates
never grow it; offsets leave as soon as the commit passes them, and a
revoke drops them all. ``seen`` and ``finish`` cost O(log n) amortized.
"""

from __future__ import annotations

import heapq

TopicPartition = tuple[str, int]


class _Partition:
    """The tracked state of one partition."""

    __slots__ = ("done", "generation", "heap", "last")

    def __init__(self) -> None:
        self.generation = 0
        # The last commit value returned (kept across generations).
        self.last: int | None = None
        # Every tracked offset, smallest first; each is a key of ``done``.
        self.heap: list[int] = []
        # Tracked offset -> finished at least once.
        self.done: dict[int, bool] = {}


class OffsetTracker:
    """The offsets a consumer may commit, per partition (see the module docstring)."""

    def __init__(self) -> None:
        self._parts: dict[TopicPartition, _Partition] = {}

    def seen(self, tp: TopicPartition, offset: int) -> None:
        """A record (one copy) was received; any order, rewinds included."""
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = _Partition()
        if (part.last is not None and offset < part.last) or offset in part.done:
            return  # handled already, or a second copy of a tracked offset
        part.done[offset] = False
        heapq.heappush(part.heap, offset)

    def finish(self, tp: TopicPartition, offset: int, generation: int | None = None) -> int | None:
        """A record (one copy) was finished: handled, or given up on.

        Returns the offset to commit for ``tp`` when the commit point moved
        forward, else None. ``generation`` (optional) is :meth:`generation` at
        the time the record was seen; a finish from an ended generation is
        ignored. So is a finish of an offset that is not tracked (never seen,
        finished already, below the last commit, unknown partition).
        """
        part = self._parts.get(tp)
        if part is None or (generation is not None and generation != part.generation):
            return None
        done = part.done
        if done.get(offset) is not False:
            return None
        done[offset] = True
        heap = part.heap
        if heap[0] != offset:
            return None  # an earlier offset is still unfinished
        while heap and done[heap[0]]:
            offset = heapq.heappop(heap)
            del done[offset]
        # The heap holds only offsets at or above the last commit, so this
        # moves the commit forward.
        part.last = offset + 1
        return offset + 1

    def forget(self, tp: TopicPartition) -> None:
        """``tp`` was revoked: drop what is in flight and start a new generation.

        The last commit value is kept, so a later assignment never commits
        backwards; finishes passing the old generation are ignored.
        """
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = _Partition()
        part.generation += 1
        part.heap = []
        part.done = {}

    def generation(self, tp: TopicPartition) -> int:
        """The current generation of ``tp``: how many times it was forgotten."""
        part = self._parts.get(tp)
        return 0 if part is None else part.generation

    def committed(self, tp: TopicPartition) -> int | None:
        """The last commit value returned for ``tp`` (None if none)."""
        part = self._parts.get(tp)
        return None if part is None else part.last

    def pending(self, tp: TopicPartition) -> int:
        """How many offsets the tracker holds for ``tp`` (tests and metrics)."""
        part = self._parts.get(tp)
        return 0 if part is None else len(part.done)
