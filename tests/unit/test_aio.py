"""flwire._aio.wait_for: bounded waits that never drop a cancellation."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from flwire._aio import wait_for

Waiter = Callable[[Awaitable[Any], float], Awaitable[Any]]


async def _cancel_as_it_completes(waiter: Waiter) -> str:
    """Cancel a task in the same loop turn as the thing it waits for completes (what a
    Ctrl-C does when it lands just as a message arrives); say what the task saw."""
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def body() -> str:
        await waiter(fut, 10)
        return "ran on"

    task = asyncio.create_task(body())
    await asyncio.sleep(0)  # task now waits
    fut.set_result(1)
    task.cancel()
    try:
        return await task
    except asyncio.CancelledError:
        return "cancelled"


def test_a_cancellation_as_the_wait_completes_is_not_lost():
    assert asyncio.run(_cancel_as_it_completes(wait_for)) == "cancelled"


def test_the_standard_wait_for_loses_it_before_3_12():
    # Why flwire has its own: with asyncio.wait_for the task ran on after cancel()
    # (a Ctrl-C the demo's server never saw); Python 3.12 fixed it.
    lost = sys.version_info < (3, 12)
    expected = "ran on" if lost else "cancelled"
    assert asyncio.run(_cancel_as_it_completes(asyncio.wait_for)) == expected


def test_result_and_timeout():
    async def main() -> None:
        assert await wait_for(asyncio.sleep(0, "x"), 1) == "x"
        sleeper = asyncio.ensure_future(asyncio.sleep(10))
        with pytest.raises(TimeoutError):
            await wait_for(sleeper, 0.01)
        assert sleeper.cancelled()  # cancelled on timeout, like asyncio.wait_for

        async def boom() -> None:
            raise ValueError("inner")

        with pytest.raises(ValueError, match="inner"):
            await wait_for(boom(), 1)

    asyncio.run(main())
