"""Faults on a real broker: a broker crash mid-round and a consumer killed before commit.

These tests own a private broker (``private_broker``) because they kill it.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from flwire import messages
from flwire.transport import Channel, TopicLayout

from ._helpers import cnn_state, collect, send_message, transport
from .conftest import PrivateBroker

HERE = Path(__file__).resolve().parent


def _watermarks(bootstrap: str, topic: str) -> tuple[int, int]:
    """(low, high) offsets of partition 0, for failure messages."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "flwire-watermarks"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return int(low), int(high)
    finally:
        consumer.close()


def test_broker_crash_mid_round_loses_and_doubles_nothing(
    private_broker: PrivateBroker, job_id: str
) -> None:
    layout = TopicLayout(job_id)
    bootstrap = private_broker.bootstrap
    clients = [f"client-{i}" for i in range(10)]
    updates = [messages.client_update(c, 1, cnn_state(i), {"i": i}) for i, c in enumerate(clients)]

    async def send(msg: messages.Message) -> None:
        t = transport(bootstrap)
        await t.start()
        try:
            await send_message(Channel(t), layout.updates, msg)
        finally:
            await t.stop()

    async def scenario() -> list[messages.Message]:
        server = transport(bootstrap)
        await server.start()
        await server.ensure_topics(layout.all)
        seen = messages.SeenIds()
        channel = Channel(server)
        receiving = asyncio.create_task(
            collect(
                channel, [layout.updates], layout.server_group(), lambda g: len(g) == 10, 240, seen
            )
        )
        await asyncio.gather(*(send(u) for u in updates[:5]))
        # The broker dies in the middle of the round...
        await asyncio.to_thread(private_broker.kill)
        late = [asyncio.create_task(send(u)) for u in updates[5:]]
        await asyncio.sleep(2)
        # ...and comes back; the late clients' producers retry on their own.
        await asyncio.to_thread(private_broker.up)
        await asyncio.gather(*late)
        got = await receiving
        await server.stop()
        return got

    got = asyncio.run(scenario())
    assert sorted(msg.body.client_id for msg in got) == clients
    assert len({msg.message_id for msg in got}) == len(got) == 10


def test_consumer_killed_before_commit_gets_the_message_again(
    private_broker: PrivateBroker, job_id: str, tmp_path: Path
) -> None:
    layout = TopicLayout(job_id)
    bootstrap = private_broker.bootstrap
    # Above 1 MB: travels in parts.
    update = messages.client_update("c1", 2, cnn_state(7), {"loss": 0.5})
    group = layout.server_group()

    async def produce() -> int:
        t = transport(bootstrap)
        await t.start()
        await t.ensure_topics(layout.all)
        channel = Channel(t)
        await send_message(channel, layout.updates, update)
        await t.stop()
        return channel.stats["sent_parts"]

    parts = asyncio.run(produce())
    assert parts > 1
    assert _watermarks(bootstrap, layout.updates) == (0, parts)  # every acked part is there
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    stderr_path = tmp_path / "consumer.stderr"
    stderr_file = stderr_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "_consumer_proc.py"), bootstrap, layout.updates, group],
        stdout=subprocess.PIPE,
        stderr=stderr_file,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        line = ""
        while not line.startswith("GOT"):
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([proc.stdout], [], [], max(remaining, 0))
            if not ready:
                break  # timed out: the assertion below says what was printed
            line = proc.stdout.readline()
            if not line:
                break  # the consumer exited
        assert line.strip() == f"GOT {update.message_id}", (
            f"consumer printed {line!r}; topic watermarks {_watermarks(bootstrap, layout.updates)}"
            f"; its stderr:\n{stderr_path.read_text()[-3000:]}"
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        stderr_file.close()

    async def restart() -> list[messages.Message]:
        t = transport(bootstrap)
        await t.start()
        try:
            return await collect(Channel(t), [layout.updates], group, lambda g: len(g) == 1, 90)
        finally:
            await t.stop()

    got = asyncio.run(restart())
    assert got[0].message_id == update.message_id
    assert got[0].tensors()["fc1.weight"].shape == (128, 9216)
