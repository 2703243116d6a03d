"""Bytes held as several buffers (a message's header and its weights), read as
their concatenation without joining them: one copy fewer on the way out."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwire._protowire.buffers import byte_view
from flwire._protowire.checksum import crc32c


class Segments:
    """The concatenation of ``buffers`` (bytes-like objects), never joined unless
    :meth:`join` is asked for."""

    def __init__(self, buffers: Iterable[Any], what: str = "payload") -> None:
        self.views = [v for v in (byte_view(b, what) for b in buffers) if len(v)]
        self.nbytes = sum(len(v) for v in self.views)

    def __len__(self) -> int:
        return self.nbytes

    def crc32c(self) -> int:
        """CRC-32C of the whole."""
        value = 0
        for view in self.views:
            value = crc32c(view, value)
        return value

    def pieces(self, start: int, end: int) -> list[memoryview]:
        """Views on the bytes ``start`` to ``end`` of the whole (no copy)."""
        out = []
        at = 0
        for view in self.views:
            lo, hi = max(start - at, 0), min(end - at, len(view))
            if lo < hi:
                out.append(view[lo:hi])
            at += len(view)
            if at >= end:
                break
        return out

    def join(self) -> bytes:
        """The whole, as one bytes object (a copy)."""
        return b"".join(self.views)
