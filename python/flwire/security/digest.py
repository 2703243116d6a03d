"""The digest a signature covers (wire format section 14.3): SHA-256 over the
signed bytes in chunks of 1 MiB, then SHA-256 over the chunks' digests.

The chunks are hashed on threads (hashlib releases the GIL for large inputs),
so a 400 MB envelope is hashed by every core; the result does not depend on
how many threads there are.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

#: Bytes per chunk: each is hashed on its own, and their digests then together.
CHUNK_BYTES = 1 << 20
#: Domain separation of the digest over the chunk digests.
DIGEST_DOMAIN = b"flwire.v1 envelope digest\x00"
#: Below this many bytes the chunks are hashed on the calling thread.
PARALLEL_MIN_BYTES = 8 * CHUNK_BYTES

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            workers = max(1, min(8, os.cpu_count() or 1))
            _pool = ThreadPoolExecutor(workers, thread_name_prefix="flwire-digest")
        return _pool


def _leaves(view: memoryview, first: int, last: int) -> bytes:
    """The SHA-256 digests of chunks ``first`` to ``last - 1``, concatenated."""
    return b"".join(
        hashlib.sha256(view[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES]).digest()
        for i in range(first, last)
    )


def envelope_digest(data: Any, *, threads: int | None = None) -> bytes:
    """The 32-byte digest of ``data`` (the signed bytes of an envelope).

    ``threads`` caps the threads used (default: one per core, at most 8; 1
    hashes on the calling thread)."""
    view = memoryview(data).cast("B")
    count = -(-len(view) // CHUNK_BYTES)
    workers = threads if threads is not None else (os.cpu_count() or 1)
    if workers <= 1 or len(view) < PARALLEL_MIN_BYTES:
        leaves = _leaves(view, 0, count)
    else:
        pool = _executor()
        per = -(-count // min(workers, count))
        spans: Sequence[tuple[int, int]] = [(i, min(count, i + per)) for i in range(0, count, per)]
        leaves = b"".join(pool.map(lambda s: _leaves(view, *s), spans))
    return hashlib.sha256(DIGEST_DOMAIN + struct.pack("<Q", len(view)) + leaves).digest()
