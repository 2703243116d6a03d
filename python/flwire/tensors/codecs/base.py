"""The frame-codec interface, and the frame rules every codec shares.

A compressed tensor's ``data`` is one or more frames, back to back, whose
contents concatenated are the tensor's filtered bytes (wire format, section 7).
Every frame records its content size, so a reader checks every size before it
allocates, and decompresses each frame straight into its place in the output,
frames in parallel. What differs between codecs is how a frame's header and
blocks are laid out (:meth:`FrameCodec.frame_end`) and how it is compressed
and decompressed; what a reader checks of the sequence is here, once.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from flwire.exceptions import SerializationException

#: Writers cut a tensor's filtered bytes into frames of this many bytes (the last
#: one shorter), so that every core compresses and decompresses a share of even
#: a single large tensor. (Smaller frames for smaller tensors were measured:
#: threads do not pay below ~1 MiB here, and each frame costs a little ratio.)
FRAME_BYTES = 1 << 19
#: Every frame but the last must hold at least this many bytes (wire format,
#: section 7), which bounds the number of frames by ``raw_size``.
MIN_FRAME_BYTES = 1 << 16

T = TypeVar("T")


@dataclass(frozen=True)
class Frame:
    """One frame of a tensor: ``data[start:end]`` decompresses to the filtered
    bytes ``[offset, offset + size)``."""

    start: int
    end: int
    offset: int
    size: int


def frame_bounds(nbytes: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` ranges of filtered bytes a writer puts in each frame."""
    return [(a, min(a + FRAME_BYTES, nbytes)) for a in range(0, nbytes, FRAME_BYTES)]


class FrameCodec(abc.ABC):
    """One compression a tensor's data may use: its name in the API, its value
    of the ``flwire.v1.Codec`` enum, and how its frames are written and read."""

    #: Short name used by :class:`~flwire.tensors.EncodeOptions` (``"zstd"``).
    name: str
    #: Its ``flwire.v1.Codec`` enum value.
    wire: int
    #: The level used when the caller does not give one.
    default_level: int
    #: The lowest and highest level its compressor takes (None: any int);
    #: :class:`~flwire.tensors.EncodeOptions` refuses a level outside them.
    levels: tuple[int, int] | None = None

    def __init__(self) -> None:
        self._local = threading.local()

    def per_thread(self, key: Hashable, make: Callable[[], T]) -> T:
        """This thread's ``make()`` result for ``key`` (compression contexts are
        not thread-safe, and cheaper to keep than to create per frame)."""
        cache: dict[Hashable, Any] | None = getattr(self._local, "cache", None)
        if cache is None:
            cache = self._local.cache = {}
        if key not in cache:
            cache[key] = make()
        value: T = cache[key]
        return value

    @abc.abstractmethod
    def compress(self, data: Any, level: int) -> bytes:
        """One frame of ``data`` (a bytes-like object) that records its content size."""

    @abc.abstractmethod
    def frame_end(self, data: memoryview, pos: int, tensor_name: str) -> tuple[int, int]:
        """(end, content size) of the frame that starts at ``pos``, found by
        walking its header and block headers without decompressing anything.
        Raises SerializationException for anything the spec forbids (no content
        size, dictionaries, skippable frames, truncation)."""

    @abc.abstractmethod
    def decompress_into(self, frame: memoryview, out: np.ndarray, tensor_name: str) -> None:
        """Decompress one frame into ``out`` (uint8), which is exactly its content
        size; never writes or allocates more than that. Raises
        SerializationException for corrupt data or a size that disagrees."""

    def frames(self, data: memoryview, raw_size: int, tensor_name: str) -> list[Frame]:
        """Split a tensor's data into its frames and check them before any
        allocation: every frame records its content size, the sizes add up to
        ``raw_size``, every frame but the last holds at least MIN_FRAME_BYTES,
        and nothing follows the last frame."""
        frames: list[Frame] = []
        pos = offset = 0
        while pos < len(data):
            end, size = self.frame_end(data, pos, tensor_name)
            if frames and frames[-1].size < MIN_FRAME_BYTES:
                raise SerializationException(
                    f"tensor {tensor_name!r}: {self.name} frame #{len(frames) - 1} holds "
                    f"{frames[-1].size} bytes and is not the last; every frame but the last "
                    f"must hold at least {MIN_FRAME_BYTES}"
                )
            frames.append(Frame(pos, end, offset, size))
            pos, offset = end, offset + size
            if offset > raw_size:
                break
        if offset != raw_size or not frames:
            raise SerializationException(
                f"tensor {tensor_name!r}: its {self.name} frames declare "
                f"{'more than ' if pos < len(data) else ''}{offset} bytes of content, "
                f"raw_size says {raw_size}"
            )
        return frames

    def short_output(self, tensor_name: str, filled: int, expected: int, extra: bool) -> None:
        """Raise unless a frame decompressed to exactly ``expected`` bytes."""
        if filled != expected or extra:
            held = f"more than {expected} bytes" if extra else f"only {filled} bytes"
            raise SerializationException(
                f"tensor {tensor_name!r}: {self.name} frame decompresses to {held}; "
                f"its header and raw_size declare {expected}"
            )
