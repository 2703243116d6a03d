"""A fetched batch of records is handed out one by one, and a record handed out
is no longer held by the batch: with 1 MB records a batch is tens of MB, and
holding it whole until its last record was handled added that much to a
receiver's peak memory."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any, ClassVar

import pytest

from flwire.transport import kafka


class FakeMessage:
    def __init__(self, offset: int) -> None:
        self._offset = offset
        self._value = bytes(16)

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[Any]:
        return []


class OneBatchConsumer:
    """Hands out one batch of 20 messages, then nothing."""

    batch: ClassVar[list[FakeMessage]] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.given = False

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        pass

    def consume(self, n: int, timeout: float) -> list[Any]:
        if self.given:
            return []
        self.given = True
        out, OneBatchConsumer.batch = OneBatchConsumer.batch, []
        return out

    def poll(self, timeout: float) -> None:
        return None

    def close(self) -> None:
        pass


def test_a_record_handed_out_is_released_by_its_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka, "Consumer", OneBatchConsumer)
    messages = [FakeMessage(i) for i in range(20)]
    refs = [weakref.ref(m) for m in messages]
    OneBatchConsumer.batch = messages
    del messages

    async def main() -> list[int]:
        sub = kafka._KafkaSubscription({"bootstrap.servers": "x"}, ["t"], poll_timeout=0.05)
        await sub.open()
        alive_before: list[int] = []
        records = sub.__aiter__()
        for i in range(20):
            record = await records.__anext__()
            assert record.offset == i
            del record
            gc.collect()
            # Messages before this one: none is held any more.
            alive_before.append(sum(ref() is not None for ref in refs[:i]))
        await sub.close()
        return alive_before

    alive_before = asyncio.run(asyncio.wait_for(main(), 30))
    assert alive_before == [0] * 20
