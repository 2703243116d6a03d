"""The worker threads that encode and decode streamed chunks (compression and
CRC-32C release the GIL, so they run beside the event loop)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

_lock = threading.Lock()
_pools: dict[int, ThreadPoolExecutor] = {}


def pool(workers: int) -> ThreadPoolExecutor:
    """The shared pool of ``workers`` threads (made on first use)."""
    with _lock:
        found = _pools.get(workers)
        if found is None:
            found = ThreadPoolExecutor(workers, thread_name_prefix="flwire-stream")
            _pools[workers] = found
        return found
