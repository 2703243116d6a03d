"""Remembering message ids, so that a redelivered message is handled once."""

from __future__ import annotations

from collections import OrderedDict

#: Bytes counted per remembered id on top of its UTF-8 length (the dict entry
#: and the str object), so that ``max_bytes`` bounds the memory actually held.
ENTRY_OVERHEAD_BYTES = 100


class SeenIds:
    """Remembers the last ``capacity`` message ids, and at most about
    ``max_bytes`` of them (their UTF-8 lengths plus a fixed overhead each), to
    count redeliveries once. The oldest id is forgotten first.

    :meth:`first_time` checks and marks in one synchronous step: two concurrent
    deliveries of one id on an event loop cannot both see it first."""

    def __init__(self, capacity: int = 100_000, *, max_bytes: int = 32 << 20) -> None:
        if capacity < 1 or max_bytes < 1:
            raise ValueError(f"capacity and max_bytes must be >= 1, got {capacity}, {max_bytes}")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.bytes = 0
        self._ids: OrderedDict[str, int] = OrderedDict()

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def forget(self, message_id: str) -> None:
        """Forget an id (its handling failed: a redelivery must be handled)."""
        size = self._ids.pop(message_id, None)
        if size is not None:
            self.bytes -= size

    def first_time(self, message_id: str) -> bool:
        """True the first time an id is seen, False for a repeat."""
        if message_id in self._ids:
            self._ids.move_to_end(message_id)
            return False
        size = len(message_id.encode("utf-8", "surrogatepass")) + ENTRY_OVERHEAD_BYTES
        self._ids[message_id] = size
        self.bytes += size
        while len(self._ids) > 1 and (
            len(self._ids) > self.capacity or self.bytes > self.max_bytes
        ):
            _, dropped = self._ids.popitem(last=False)
            self.bytes -= dropped
        return True
