"""Bytes parked on disk while they wait: the reassembler's overflow.

A :class:`SpillLog` appends byte ranges to anonymous temporary files (unlinked at
creation, so nothing is left behind when the process dies) and reads them back
into a caller's buffer. The files are segments of at most ``segment_bytes``:
a segment is closed, and its disk space freed, once nothing in it is live, and
the segment being written is emptied in place when it holds nothing live.

The data on disk is a cache, never the only copy: whatever was spilled is still
in Kafka, below the consumer's committed offsets, until the message it belongs
to is handled.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any

from flwire.exceptions import CommunicationException

#: Size past which the segment being written is closed and a new one opened.
SEGMENT_BYTES = 64 << 20


class _Segment:
    def __init__(self, directory: str | None) -> None:
        self.file = tempfile.TemporaryFile(dir=directory, prefix="flwire-spill-")
        self.fd = self.file.fileno()
        self.size = 0  # bytes written
        self.live = 0  # bytes written and not released

    def close(self) -> None:
        self.file.close()


@dataclass(eq=False)
class Spilled:
    """A byte range on disk; ``len()`` is its length."""

    segment: _Segment
    position: int
    length: int
    released: bool = False

    def __len__(self) -> int:
        return self.length


class SpillLog:
    """Appends byte ranges to disk and gives them back; see the module's docstring."""

    def __init__(self, directory: str | None = None, *, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self.segment_bytes = max(1, segment_bytes)
        self._active: _Segment | None = None
        self._segments: set[_Segment] = set()
        #: Bytes on disk that are still live.
        self.live_bytes = 0
        #: Bytes ever written (a measure of the work spilling cost).
        self.written_bytes = 0

    @property
    def segments(self) -> int:
        """Open segment files."""
        return len(self._segments)

    def write(self, data: Any) -> Spilled:
        """Append ``data`` (bytes-like); raises :class:`CommunicationException`
        naming the directory when the disk refuses it."""
        view = memoryview(data).cast("B")
        segment = self._active
        try:
            if segment is None or segment.size >= self.segment_bytes:
                segment = self._active = _Segment(self.directory)
                self._segments.add(segment)
            position = segment.size
            done = 0
            while done < len(view):
                done += os.pwrite(segment.fd, view[done:], position + done)
        except OSError as exc:
            where = self.directory or tempfile.gettempdir()
            raise CommunicationException(
                f"could not spill {len(view)} bytes to {where}: {exc} "
                "(free disk space there, choose another spill_dir, or raise max_memory_bytes)"
            ) from exc
        segment.size += len(view)
        segment.live += len(view)
        self.live_bytes += len(view)
        self.written_bytes += len(view)
        return Spilled(segment, position, len(view))

    def read_into(self, spilled: Spilled, out: memoryview) -> None:
        """Read a range back into ``out`` (exactly its length)."""
        if spilled.released or len(out) != spilled.length:
            raise CommunicationException("internal: reading a released or mis-sized spilled range")
        done = 0
        try:
            while done < spilled.length:
                got = os.preadv(spilled.segment.fd, [out[done:]], spilled.position + done)
                if got <= 0:
                    raise OSError("unexpected end of the spill file")
                done += got
        except OSError as exc:
            raise CommunicationException(f"could not read spilled bytes back: {exc}") from exc

    def read(self, spilled: Spilled) -> bytearray:
        out = bytearray(spilled.length)
        self.read_into(spilled, memoryview(out))
        return out

    def release(self, spilled: Spilled) -> None:
        """The range is no longer needed; frees its segment once nothing in it is live."""
        if spilled.released:
            return
        spilled.released = True
        segment = spilled.segment
        segment.live -= spilled.length
        self.live_bytes -= spilled.length
        if segment.live:
            return
        if segment is self._active:
            # Empty again: start it over rather than open a new file.
            os.ftruncate(segment.fd, 0)
            segment.size = 0
        else:
            self._segments.discard(segment)
            segment.close()

    def close(self) -> None:
        for segment in self._segments:
            segment.close()
        self._segments.clear()
        self._active = None
        self.live_bytes = 0
