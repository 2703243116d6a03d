"""Fresh, uninitialised byte buffers of plain pages: :func:`empty`, for the
tensors of a streamed transfer.

Why not ``np.empty``: numpy asks the kernel for transparent huge pages
(``madvise(MADV_HUGEPAGE)``) on every array of 4 MiB or more, and a huge page
must come from a free block of 2 MB or more. In a virtual machine with free
page reporting (virtio-balloon, as on the benchmark host), those are the
blocks the guest has handed back to its hypervisor, so the first write to each
huge page costs a fault in the hypervisor as well. On other hosts, a kernel
whose ``defrag`` is ``madvise`` (Linux's default) may compact memory inside
the fault when free memory is fragmented. Plain pages mostly come from memory
freed recently. A stream receiver fills fresh tensor memory while the records
arrive, so it would pay that in the middle of a transfer. Measured on the
2-core benchmark host, where /proc/vmstat counted no compaction stall over the
runs: filling a fresh 410 MB buffer in 1 MB copies took 0.14-0.98 s with
numpy's allocation (0.025 s right after another process freed its huge pages)
and 0.16-0.19 s with plain pages, run after run; the streaming receiver's CPU
in ``python -m benchmarks.e2e.stream`` fell from 0.60-0.78 s to 0.45-0.49 s.

The price: a process that frees and refills such buffers again and again
gets the huge pages it just freed back at once, with no stall, and then fills
410 MB in 0.025 s against 0.17 s with plain pages. A long-lived receiver of
one streamed 410 MB model after another pays that 0.15 s of CPU per model, in
exchange for never stalling in the middle of a transfer (a stalled decode
backs up the consumer's queue, and librdkafka then postpones its fetches).
Whole-message decoding keeps numpy's allocation: it decodes a message in one
go, and ``python -m benchmarks.codec`` decoded the 410 MB model from bytes at
5,246 MB/s with it against 2,539 MB/s with plain pages.
"""

from __future__ import annotations

import mmap

import numpy as np

#: From this many bytes on, a buffer is a mapping of its own (numpy's own
#: threshold for huge-page advice).
MAPPED_BYTES = 4 << 20

_PRIVATE = getattr(mmap, "MAP_PRIVATE", None)


def empty(nbytes: int) -> np.ndarray:
    """A writable uint8 array of ``nbytes`` whose contents are undefined (every
    byte is the caller's to write): from :data:`MAPPED_BYTES` on, a private
    anonymous mapping of its own (page-aligned, given back to the system when
    the array is freed), else numpy's memory, which gets no huge-page advice at
    that size either. Raises MemoryError when the system refuses the memory, as
    ``np.empty`` does."""
    if nbytes < MAPPED_BYTES or _PRIVATE is None:
        return np.empty(nbytes, dtype=np.uint8)
    try:
        mapping = mmap.mmap(-1, nbytes, flags=_PRIVATE)
    except OSError as exc:
        raise MemoryError(f"cannot map {nbytes} bytes for a streamed tensor: {exc}") from None
    return np.frombuffer(mapping, dtype=np.uint8)
