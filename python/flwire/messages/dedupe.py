"""Remembering message ids, so that a redelivered message is handled once."""

from __future__ import annotations

from collections import OrderedDict


class SeenIds:
    """Remembers the last ``capacity`` message ids, to count redeliveries once."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._ids

    def first_time(self, message_id: str) -> bool:
        """True the first time an id is seen, False for a repeat."""
        if message_id in self._ids:
            self._ids.move_to_end(message_id)
            return False
        self._ids[message_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True
