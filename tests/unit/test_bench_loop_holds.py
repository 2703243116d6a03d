"""benchmarks.e2e.servers.LoopHolds: how long each step of an awaited coroutine held the
event loop (the end-to-end benchmark's "longest it held the event loop" for done())."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import pytest

from benchmarks.e2e.servers import LoopHolds


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def work(log: list[str]) -> str:
    busy(0.002)  # step 1: holds the loop about 2 ms
    await asyncio.sleep(0.05)  # suspended: not counted
    busy(0.02)  # step 2: about 20 ms
    log.append("finished")
    return "result"


def test_steps_are_the_holds_between_suspensions() -> None:
    log: list[str] = []

    async def main() -> tuple[list[float], float]:
        t0 = time.perf_counter()
        steps = await LoopHolds(work(log))
        return steps, time.perf_counter() - t0

    steps, wall = asyncio.run(main())
    assert log == ["finished"]
    assert len(steps) == 2
    assert steps[0] >= 0.002
    assert steps[1] >= 0.02
    # The sleep between them (at least 50 ms of the wall time) is not a hold.
    assert sum(steps) <= wall - 0.05


def test_other_tasks_run_while_it_is_suspended() -> None:
    ticks: list[float] = []

    async def ticker() -> None:
        for _ in range(5):
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.005)

    async def main() -> list[float]:
        tick = asyncio.create_task(ticker())
        steps = await LoopHolds(work([]))
        await tick
        return steps

    asyncio.run(main())
    assert len(ticks) == 5


def test_errors_and_cancellation_reach_the_coroutine() -> None:
    cleaned: list[str] = []

    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("boom")

    async def waits() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.append("finally ran")

    async def main() -> None:
        with pytest.raises(ValueError, match="boom"):
            await LoopHolds(fails())
        task = asyncio.create_task(_wrap(waits()))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def _wrap(coro: Coroutine[Any, Any, None]) -> list[float]:
        return await LoopHolds(coro)

    asyncio.run(main())
    assert cleaned == ["finally ran"]
