"""Byte transforms of the tensor codec: CRC-32C, byte shuffle and Zstandard.

A tensor's filtered bytes are cut into zstd frames of FRAME_BYTES, and the
shuffle works on any slice of its output, so that :func:`consume_in_order` and
:func:`run_parallel` can spread even one large tensor over threads (zstd,
crc32c and numpy copies release the GIL).
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import crc32c as _crc32c
import numpy as np
import zstandard

from flwire.exceptions import SerializationException

T = TypeVar("T")

# Below this many bytes in total, threads cost more than they save.
PARALLEL_MIN_BYTES = 1 << 20

_local = threading.local()
_pool_lock = threading.Lock()
_pools: dict[int, ThreadPoolExecutor] = {}


def crc32c(data: Any) -> int:
    """CRC-32C (Castagnoli) of a bytes-like object."""
    return int(_crc32c.crc32c(data))


def _plane_ranges(a: int, b: int, n: int) -> Iterator[tuple[int, int, int]]:
    """For bytes ``[a, b)`` of a shuffled stream of n-byte planes: (plane, first
    element, end element) of each plane the range touches."""
    for plane in range(a // n, (b - 1) // n + 1):
        base = plane * n
        yield plane, max(a, base) - base, min(b, base + n) - base


def shuffled_slice(raw: np.ndarray, itemsize: int, a: int, b: int) -> np.ndarray:
    """Bytes ``[a, b)`` of the byte-shuffled ``raw`` (uint8), where byte j of
    element i goes to j*n+i; computed without shuffling the rest."""
    if itemsize == 1 or b == a:
        return raw[a:b]
    n = raw.nbytes // itemsize
    out = np.empty(b - a, dtype=np.uint8)
    if itemsize == 2:  # 16-bit words: a plane is the words' low or high bytes
        words = raw.view("<u2")
        for plane, lo, hi in _plane_ranges(a, b, n):
            dst = out[plane * n + lo - a : plane * n + hi - a]
            np.copyto(dst, words[lo:hi] >> (8 * plane), casting="unsafe")
        return out
    columns = raw.reshape(n, itemsize)
    for plane, lo, hi in _plane_ranges(a, b, n):
        out[plane * n + lo - a : plane * n + hi - a] = columns[lo:hi, plane]
    return out


def unshuffle_slice_into(chunk: np.ndarray, out: np.ndarray, itemsize: int, a: int) -> None:
    """Invert :func:`shuffled_slice`: scatter ``chunk``, bytes ``[a, a+len)`` of a
    shuffled stream, into their places in ``out`` (uint8, the whole tensor)."""
    b = a + chunk.nbytes
    if b == a:
        return
    if itemsize == 1:
        out[a:b] = chunk
        return
    n = out.nbytes // itemsize
    columns = out.reshape(n, itemsize)
    for plane, lo, hi in _plane_ranges(a, b, n):
        columns[lo:hi, plane] = chunk[plane * n + lo - a : plane * n + hi - a]


def scratch(nbytes: int) -> np.ndarray:
    """A per-thread reusable uint8 buffer of ``nbytes`` (contents undefined)."""
    buf: np.ndarray | None = getattr(_local, "scratch", None)
    if buf is None or buf.nbytes < nbytes:
        buf = _local.scratch = np.empty(max(nbytes, FRAME_BYTES), dtype=np.uint8)
    return buf[:nbytes]


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "cctx", None)
    if cache is None:
        cache = _local.cctx = {}
    cctx = cache.get(level)
    if cctx is None:
        cctx = cache[level] = zstandard.ZstdCompressor(
            level=level, write_content_size=True, write_checksum=False
        )
    return cctx


def _decompressor() -> zstandard.ZstdDecompressor:
    dctx: zstandard.ZstdDecompressor | None = getattr(_local, "dctx", None)
    if dctx is None:
        dctx = _local.dctx = zstandard.ZstdDecompressor()
    return dctx


def zstd_compress(data: Any, level: int) -> bytes:
    """One zstd frame that records its content size."""
    return _compressor(level).compress(data)


_ZSTD_MAGIC = 0xFD2FB528
_BLOCK_RLE = 1
_BLOCK_RESERVED = 3

#: Writers cut a tensor's filtered bytes into zstd frames of this many bytes
#: (the last one shorter), so that every core compresses and decompresses a
#: share of even a single large tensor. (Smaller frames for smaller tensors
#: were measured: threads do not pay below ~1 MiB here, and each frame costs
#: a little ratio.)
FRAME_BYTES = 1 << 19
#: Every frame but the last must hold at least this many bytes (wire format,
#: section 7), which bounds the number of frames by ``raw_size``.
MIN_FRAME_BYTES = 1 << 16


@dataclass(frozen=True)
class Frame:
    """One zstd frame of a tensor: ``data[start:end]`` decompresses to the
    filtered bytes ``[offset, offset + size)``."""

    start: int
    end: int
    offset: int
    size: int


def frame_bounds(nbytes: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` ranges of filtered bytes a writer puts in each frame."""
    return [(a, min(a + FRAME_BYTES, nbytes)) for a in range(0, nbytes, FRAME_BYTES)]


def _frame_end(data: memoryview, pos: int, tensor_name: str) -> tuple[int, int]:
    """(end, content size) of the frame starting at ``pos``, found by walking its
    block headers (RFC 8878 section 3.1.1.2) without decompressing anything."""
    head = data[pos:]
    if len(head) < 4 or int.from_bytes(head[:4], "little") != _ZSTD_MAGIC:
        raise SerializationException(
            f"tensor {tensor_name!r}: bytes at offset {pos} of its data are not a zstd frame "
            "(bad magic number; skippable frames are not allowed)"
        )
    try:
        size = zstandard.frame_content_size(head)
        pos += zstandard.frame_header_size(head)
        has_checksum = zstandard.get_frame_parameters(head).has_checksum
    except zstandard.ZstdError as exc:
        raise SerializationException(
            f"tensor {tensor_name!r}: data is not a valid zstd frame ({exc})"
        ) from None
    if size < 0:
        raise SerializationException(
            f"tensor {tensor_name!r}: zstd frame does not record its content size "
            "(flwire writers always record it; refusing to decompress an unbounded frame)"
        )
    end = len(data)
    while True:
        if pos + 3 > end:
            raise SerializationException(
                f"tensor {tensor_name!r}: zstd frame is truncated (its last block is missing)"
            )
        header = data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16)
        last, block_type, block_size = header & 1, (header >> 1) & 3, header >> 3
        if block_type == _BLOCK_RESERVED:
            raise SerializationException(f"tensor {tensor_name!r}: corrupt zstd block header")
        pos += 3 + (1 if block_type == _BLOCK_RLE else block_size)
        if last:
            break
    pos += 4 if has_checksum else 0
    if pos > end:
        raise SerializationException(
            f"tensor {tensor_name!r}: zstd frame is truncated (it runs {pos - end} bytes "
            "past the end of the data)"
        )
    return pos, int(size)


def zstd_frames(data: memoryview, raw_size: int, tensor_name: str) -> list[Frame]:
    """Split a tensor's zstd data into its frames and check them, before any
    allocation: every frame records its content size, the sizes add up to
    ``raw_size``, every frame but the last holds at least MIN_FRAME_BYTES, and
    nothing follows the last frame."""
    frames: list[Frame] = []
    pos = offset = 0
    while pos < len(data):
        end, size = _frame_end(data, pos, tensor_name)
        if frames and frames[-1].size < MIN_FRAME_BYTES:
            raise SerializationException(
                f"tensor {tensor_name!r}: zstd frame #{len(frames) - 1} holds "
                f"{frames[-1].size} bytes and is not the last; every frame but the last must "
                f"hold at least {MIN_FRAME_BYTES}"
            )
        frames.append(Frame(pos, end, offset, size))
        pos, offset = end, offset + size
        if offset > raw_size:
            break
    if offset != raw_size or not frames:
        raise SerializationException(
            f"tensor {tensor_name!r}: its zstd frames declare "
            f"{'more than ' if pos < len(data) else ''}{offset} bytes of content, "
            f"raw_size says {raw_size}"
        )
    return frames


def zstd_decompress_into(frame: memoryview, out: np.ndarray, tensor_name: str) -> None:
    """Decompress one frame into ``out`` (uint8), which must be exactly its content size."""
    view = memoryview(out.data).cast("B")
    filled = 0
    try:
        with _decompressor().stream_reader(frame, read_across_frames=False) as reader:
            while filled < len(view):
                got = reader.readinto(view[filled:])
                if got == 0:
                    break
                filled += got
            extra = reader.read(1)
    except zstandard.ZstdError as exc:
        raise SerializationException(f"tensor {tensor_name!r}: corrupt zstd data ({exc})") from None
    if filled != len(view) or extra:
        held = "more than that" if extra else f"only {filled}"
        raise SerializationException(
            f"tensor {tensor_name!r}: zstd frame decompresses to {held} bytes; its header "
            f"and raw_size declare {len(view)}"
        )


def _executor(workers: int) -> ThreadPoolExecutor:
    with _pool_lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="flwire-codec"
            )
        return pool


_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def default_threads() -> int:
    """Threads used when the caller does not say: one per core this process may use."""
    return _CORES or 1


def consume_in_order(
    fn: Callable[[int], T], consume: Callable[[T], None], sizes: Sequence[int], threads: int | None
) -> None:
    """``consume(fn(i))`` for each index in index order, with the ``fn`` calls on
    threads when the work is big enough.

    Each result is consumed on whichever thread made the next one ready, one at
    a time, so that consuming (e.g. copying a frame into the output, which holds
    the GIL) overlaps with the other threads' ``fn`` calls (which release it).
    At most four results per thread are made ahead of the one consumed, so
    finished results do not pile up in memory. Raises the first exception of
    ``fn`` or ``consume``.
    """
    threads = default_threads() if threads is None else threads
    if threads <= 1 or len(sizes) < 2 or sum(sizes) < PARALLEL_MIN_BYTES:
        for i in range(len(sizes)):
            consume(fn(i))
        return
    _InOrder(fn, consume, len(sizes), 4 * threads).run(_executor(threads))


class _InOrder:
    """The state of one :func:`consume_in_order` run."""

    def __init__(
        self, fn: Callable[[int], T], consume: Callable[[T], None], count: int, ahead: int
    ) -> None:
        self.fn, self.consume, self.count = fn, consume, count
        self.cond = threading.Condition()
        self.ready: dict[int, Any] = {}
        self.next = 0  # index of the next result to consume
        self.consuming = False  # a thread is consuming: others only deposit
        self.error: BaseException | None = None
        self.window = threading.Semaphore(ahead)

    def run(self, pool: ThreadPoolExecutor) -> None:
        futures = []
        for i in range(self.count):
            self.window.acquire()
            if self.error is not None:
                break
            futures.append(pool.submit(self._task, i))
        with self.cond:
            while self.next < self.count and self.error is None:
                self.cond.wait()
        concurrent.futures.wait(futures)  # nothing runs on after an error
        if self.error is not None:
            raise self.error

    def _fail(self, exc: BaseException) -> None:
        with self.cond:
            if self.error is None:
                self.error = exc
            self.cond.notify_all()
        self.window.release()  # the submitting thread may wait for a slot

    def _task(self, i: int) -> None:
        if self.error is not None:
            return
        try:
            result = self.fn(i)
        except BaseException as exc:
            self._fail(exc)
            return
        with self.cond:
            self.ready[i] = result
            if self.consuming:
                return
            self.consuming = True
        while True:
            with self.cond:
                if self.error is not None or self.next not in self.ready:
                    self.consuming = False
                    return
                item = self.ready.pop(self.next)
            try:
                self.consume(item)
            except BaseException as exc:
                with self.cond:
                    self.consuming = False
                self._fail(exc)
                return
            with self.cond:
                self.next += 1
                if self.next == self.count:
                    self.cond.notify_all()
            self.window.release()


def run_parallel(fn: Callable[[int], T], sizes: Sequence[int], threads: int | None) -> list[T]:
    """Call ``fn(i)`` for each index, on threads when the work is big enough.

    The largest items are started first so that the cores finish together.
    """
    threads = default_threads() if threads is None else threads
    if threads <= 1 or len(sizes) < 2 or sum(sizes) < PARALLEL_MIN_BYTES:
        return [fn(i) for i in range(len(sizes))]
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    pool = _executor(threads)
    futures = {i: pool.submit(fn, i) for i in order}
    return [futures[i].result() for i in range(len(sizes))]
