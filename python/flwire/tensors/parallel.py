"""The tensor codec's threads: :func:`consume_in_order` and :func:`run_parallel`
spread the frames of even one large tensor over the cores (the codecs, crc32c
and numpy copies release the GIL), and :func:`scratch` gives each thread a
reusable buffer.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from flwire.tensors.codecs import FRAME_BYTES

T = TypeVar("T")

#: Below this many bytes in total, threads cost more than they save.
PARALLEL_MIN_BYTES = 1 << 20
#: How many results per thread :func:`consume_in_order` makes ahead of the one
#: it consumes, so finished results do not pile up in memory.
AHEAD_PER_THREAD = 4

_local = threading.local()
_pool_lock = threading.Lock()
_pools: dict[int, ThreadPoolExecutor] = {}


#: The largest scratch buffer a thread keeps between calls (four of flwire's
#: frames); a larger request (another writer's bigger frames) gets a buffer of its
#: own, freed once used, so one big decode leaves nothing behind.
SCRATCH_KEEP_BYTES = 4 * FRAME_BYTES


def scratch(nbytes: int) -> np.ndarray:
    """A uint8 buffer of ``nbytes`` (contents undefined): the thread's reusable
    one up to :data:`SCRATCH_KEEP_BYTES`, a fresh one above."""
    if nbytes > SCRATCH_KEEP_BYTES:
        return np.empty(nbytes, dtype=np.uint8)
    buf: np.ndarray | None = getattr(_local, "scratch", None)
    if buf is None or buf.nbytes < nbytes:
        buf = _local.scratch = np.empty(max(nbytes, FRAME_BYTES), dtype=np.uint8)
    return buf[:nbytes]


def executor(workers: int) -> ThreadPoolExecutor:
    """The process's shared pool of ``workers`` threads (made on first use): the
    codec's frames, and a streamed transfer's runs (one worker: FIFO order)."""
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
    At most AHEAD_PER_THREAD results per thread are made ahead of the one consumed, so
    finished results do not pile up in memory. Raises the first exception of
    ``fn`` or ``consume``.
    """
    threads = default_threads() if threads is None else threads
    if threads <= 1 or len(sizes) < 2 or sum(sizes) < PARALLEL_MIN_BYTES:
        for i in range(len(sizes)):
            consume(fn(i))
        return
    _InOrder(fn, consume, len(sizes), AHEAD_PER_THREAD * threads).run(executor(threads))


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
    pool = executor(threads)
    futures = {i: pool.submit(fn, i) for i in order}
    return [futures[i].result() for i in range(len(sizes))]
