"""asyncio helpers shared by the transport and the demo."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(awaitable: Awaitable[T], timeout: float) -> T:
    """``asyncio.wait_for`` without its race before Python 3.12: there, a
    cancellation that arrives as the awaited thing completes is dropped (the
    result is returned and the caller runs on, e.g. past a Ctrl-C). Here the
    cancellation always propagates. On timeout the awaited thing is cancelled
    and :class:`TimeoutError` raised."""
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise TimeoutError
    return task.result()
