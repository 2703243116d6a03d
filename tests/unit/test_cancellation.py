"""Issue 13, "Cancellation swallowed": with the in-memory transport, cancelling a
subscription was swallowed on Python 3.11, so AsyncKafkaClient.stop() waited 10 s
and FedAvgServer.run() hung in its finally. Each case runs on an event loop in a
thread of its own, so that a regression fails here (with a bound) instead of
stalling the suite, and each asserts the time cancellation took."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from helpers import run_in_own_thread

from flwire.compat.communication.kafka_client import AsyncKafkaClient
from flwire.transport import Channel, InMemoryBroker, InMemoryTransport, TopicLayout

#: Cancellation must take effect at once; this bound only keeps a CI hiccup from
#: failing the test (the bug took 10 s, or forever).
BOUND_S = 2.0


async def _cancel_timed(task: asyncio.Task[Any]) -> float:
    started = time.perf_counter()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the task finished instead of being cancelled")
    return time.perf_counter() - started


def test_a_waiting_channel_receive_is_cancelled_at_once():
    async def scenario() -> list[float]:
        transport = InMemoryTransport(InMemoryBroker())
        await transport.start()
        took = []
        for pause in (0.0, 0.01, 0.3, 0.6):  # before, during and after a 0.5 s wait
            channel = Channel(transport)

            async def consume(channel: Channel = channel) -> None:
                async for _ in channel.receive(["t"], "g"):
                    pass

            task = asyncio.create_task(consume())
            await asyncio.sleep(pause)
            took.append(await _cancel_timed(task))
        return took

    took = run_in_own_thread(scenario)
    print(f"\ncancelled in {[round(t * 1e3, 1) for t in took]} ms")
    assert max(took) < BOUND_S, took


def test_async_kafka_client_stop_returns_at_once_on_the_in_memory_transport():
    async def scenario() -> float:
        client = AsyncKafkaClient({"group_id": "g"}, transport=InMemoryTransport(InMemoryBroker()))
        await client.start()
        for topic in ("a", "b", "c"):
            await client.subscribe_to_topic(topic, lambda _value: None)
        await asyncio.sleep(0.2)  # the consumers are waiting for records
        started = time.perf_counter()
        await client.stop()
        return time.perf_counter() - started

    took = run_in_own_thread(scenario)
    print(f"\nstop() took {took * 1e3:.1f} ms")
    assert took < BOUND_S, took


def test_a_cancelled_fedavg_server_run_ends_at_once():
    """The server waits for registrations (none come); cancelling run() must end it,
    its listener included, with CancelledError."""
    from flwire.demo.data import split_non_iid
    from flwire.demo.server import FedAvgServer

    _, _, test = split_non_iid(2, seed=0)

    async def scenario() -> float:
        transport = InMemoryTransport(InMemoryBroker())
        await transport.start()
        server = FedAvgServer(transport, TopicLayout("j"), test, num_clients=2, rounds=1)
        task = asyncio.create_task(server.run())
        await asyncio.sleep(0.5)
        assert not task.done()
        took = await _cancel_timed(task)
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
        return took

    took = run_in_own_thread(scenario)
    print(f"\nFedAvgServer.run() cancelled in {took * 1e3:.1f} ms")
    assert took < BOUND_S, took
