"""Issue 15: ``Delivery.done()`` never blocks the event loop. confluent-kafka
serialises the calls on one Consumer, so a commit issued on the event loop's
thread waited for the poll in progress (up to the poll timeout, 200 ms per
done()). Commits are now issued from the consumer's own thread."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, ClassVar

import pytest

from flwire.transport import kafka


class BusyConsumer:
    """A Consumer whose poll holds the handle for its whole timeout, as
    librdkafka's does; records the thread of every commit."""

    commits: ClassVar[list[tuple[str, list[Any], bool]]] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self._handle = threading.Lock()

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        pass

    def consume(self, n: int, timeout: float) -> list[Any]:
        return []

    def poll(self, timeout: float) -> None:
        with self._handle:
            time.sleep(timeout)

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        with self._handle:
            self.commits.append((threading.current_thread().name, offsets, asynchronous))

    def close(self) -> None:
        pass


def test_commits_are_issued_from_the_consumers_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka, "Consumer", BusyConsumer)
    BusyConsumer.commits = []

    async def main() -> float:
        sub = kafka._KafkaSubscription({"bootstrap.servers": "x"}, ["t"], poll_timeout=0.2)
        await sub.open()

        async def consume() -> None:
            async for _ in sub:
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.05)  # the consumer's thread is polling now
        slowest = 0.0
        for offset in range(1, 11):
            started = time.perf_counter()
            await sub.commit("t", 0, offset)
            slowest = max(slowest, time.perf_counter() - started)
        while len(BusyConsumer.commits) < 10:
            await asyncio.sleep(0.01)
        await sub.close()
        task.cancel()
        return slowest

    slowest = asyncio.run(asyncio.wait_for(main(), 30))
    print(f"\nslowest commit() call: {slowest * 1e3:.2f} ms")
    threads = {name for name, _, _ in BusyConsumer.commits}
    assert all(name.startswith("flwire-consumer") for name in threads), threads
    queued = [(o[0].offset, asynchronous) for _, o, asynchronous in BusyConsumer.commits[:10]]
    assert queued == [(offset, True) for offset in range(1, 11)]
    # The final commit on close is synchronous, with the latest offset.
    assert BusyConsumer.commits[-1][1][0].offset == 10 and BusyConsumer.commits[-1][2] is False
