"""flwire messages over a real Apache Kafka broker left at its default 1 MB limit."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
import torch

from flwire import messages
from flwire.compat.communication.kafka_client import AsyncKafkaClient
from flwire.compat.serialization.weight_serializer import WeightSerializer
from flwire.exceptions import CommunicationException
from flwire.tensors import EncodeOptions
from flwire.tensors.lossy import LossyConfig
from flwire.transport import Channel, TopicLayout

from ._helpers import cnn_state, collect, send_message, transport


def _all_message_types(state: dict[str, torch.Tensor]) -> list[messages.Message]:
    return [
        messages.client_registration(
            "c1", model_info={"name": "SimpleCNN"}, max_message_bytes=1 << 20
        ),
        messages.heartbeat("c1", "training", {"cpu_percent": 12.5}),
        messages.training_start(0, {"local_epochs": 1}),
        messages.global_update(0, state, {"lr": 0.01}),
        messages.client_update("c1", 0, state, {"loss": 0.3, "epochs": 1}, num_examples=600),
        messages.evaluation_request(0, config={"batch_size": 64}),
        messages.evaluation_result("c1", 0, {"accuracy": 0.91}, 200),
        messages.shutdown("done"),
    ]


def test_every_message_type_round_trips(bootstrap: str, job_id: str) -> None:
    state = cnn_state(0)
    layout = TopicLayout(job_id)
    sent = _all_message_types(state)

    async def scenario() -> list[messages.Message]:
        t = transport(bootstrap)
        await t.start()
        try:
            channel = Channel(t)
            await t.ensure_topics(layout.all)
            for msg in sent:
                await send_message(channel, layout.for_message(msg.type), msg)
            return await collect(
                channel, list(layout.all), "reader", lambda got: len(got) == len(sent), 60
            )
        finally:
            await t.stop()

    got = {msg.message_id: msg for msg in asyncio.run(scenario())}
    assert len(got) == len(sent)
    for msg in sent:
        back = got[msg.message_id]
        assert back.type == msg.type
        assert back.body == msg.body
        assert back.sender_id == msg.sender_id
        if msg.has_weights:
            tensors = back.tensors()
            assert all(torch.equal(tensors[k], v) for k, v in state.items())


def test_hundred_megabyte_update_through_the_default_limit(bootstrap: str, job_id: str) -> None:
    gen = torch.Generator().manual_seed(1)
    state = {f"layer{i}.weight": torch.randn(1024, 1024, generator=gen) * 0.02 for i in range(25)}
    raw = sum(t.numel() * t.element_size() for t in state.values())
    assert raw >= 100 * 1024 * 1024
    layout = TopicLayout(job_id)
    progress: list[tuple[str, int, int]] = []
    msg = messages.client_update("big", 0, state, {"loss": 1.0})
    blob = msg.to_bytes()

    async def scenario() -> tuple[float, list[messages.Message], dict[str, int]]:
        t = transport(bootstrap)
        await t.start()
        try:
            channel = Channel(
                t, on_progress=lambda d, _id, done, total: progress.append((d, done, total))
            )
            await t.ensure_topics(layout.all)
            start = time.perf_counter()
            await send_message(channel, layout.updates, msg)
            got = await collect(
                channel, [layout.updates], layout.server_group(), lambda g: len(g) == 1, 300
            )
            return time.perf_counter() - start, got, dict(channel.stats)
        finally:
            await t.stop()

    elapsed, got, stats = asyncio.run(scenario())
    # Really went in parts under the 1 MB limit: one part per ~1 MB of message.
    assert stats["sent_parts"] >= len(blob) // 1_000_000 >= 90
    back = got[0].tensors()
    assert all(torch.equal(back[k], v) for k, v in state.items())
    sends = [p for p in progress if p[0] == "send"]
    receives = [p for p in progress if p[0] == "receive"]
    assert sends[-1][1] == sends[-1][2] == len(blob)
    assert receives[-1][1] == receives[-1][2] == len(blob)
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(receives))
    print(
        f"\n100 MB update: {raw / 1e6:.0f} MB raw, {len(blob) / 1e6:.0f} MB on the wire in "
        f"{stats['sent_parts']} parts, send+receive+decode {elapsed:.1f} s "
        f"({raw / 1e6 / elapsed:.0f} MB/s)"
    )


def test_a_lossy_streamed_update_through_the_default_limit(bootstrap: str, job_id: str) -> None:
    """Block int8 chunks of a 21 MB update, through 1 MB records: decoded as the
    same message sent whole decodes, in half the records or fewer."""
    gen = torch.Generator().manual_seed(2)
    state = {f"layer{i}.weight": torch.randn(1024, 1024, generator=gen) for i in range(5)}
    state["layer0.bias"] = torch.randn(10, generator=gen)  # below min_elements: exact
    lossy = LossyConfig("int8")
    options = EncodeOptions(stream=True, compression="none", lossy=lossy)
    msg = messages.client_update("c1", 0, state, num_examples=3, options=options)
    whole = messages.client_update(
        "c1", 0, state, num_examples=3, options=EncodeOptions(compression="none", lossy=lossy)
    )
    want = messages.decode_message(whole.to_bytes()).tensors()
    layout = TopicLayout(job_id)

    async def scenario() -> tuple[messages.Message, dict[str, int]]:
        t = transport(bootstrap)
        await t.start()
        try:
            channel = Channel(t)
            await t.ensure_topics(layout.all)
            await channel.send_message(layout.updates, msg)

            async def first() -> messages.Message:
                async for delivery in channel.receive([layout.updates], layout.server_group()):
                    await delivery.done()
                    assert delivery.message is not None
                    return delivery.message
                raise AssertionError("the receive loop ended")

            return await asyncio.wait_for(first(), 120), dict(channel.stats)
        finally:
            await t.stop()

    got, stats = asyncio.run(scenario())
    assert stats["sent_streams"] == stats["received_streams"] == 1
    # Exact, each 4 MB tensor takes 5 records; in int8 (a byte an element, a scale
    # a block), 2: 5 x 2, the bias, the head and the seal.
    assert stats["sent_parts"] == 13
    tensors = got.tensors()
    assert list(tensors) == list(state)
    assert all(torch.equal(tensors[k], want[k]) for k in state)
    assert torch.equal(tensors["layer0.bias"], state["layer0.bias"])


def test_single_record_above_the_limit_is_refused_by_kafka(bootstrap: str, job_id: str) -> None:
    """The old path's one-record JSON message cannot pass the default limit at all."""
    state = cnn_state(2)
    legacy_style = WeightSerializer.serialize_weights(state) * 2  # stands for a >1 MB single record

    async def scenario() -> None:
        t = transport(bootstrap)
        t.producer_config["message.max.bytes"] = 20_000_000  # let the broker be the one to refuse
        await t.start()
        try:
            await t.ensure_topics([f"{job_id}.raw"])
            await t.send(f"{job_id}.raw", legacy_style)
        finally:
            await t.stop()

    with pytest.raises(CommunicationException, match=r"MSG_SIZE_TOO_LARGE|too large"):
        asyncio.run(scenario())


def test_ten_clients_each_counted_once(bootstrap: str, job_id: str) -> None:
    layout = TopicLayout(job_id)
    clients = [f"client-{i}" for i in range(10)]

    async def client(cid: str, i: int) -> bytes:
        t = transport(bootstrap)
        await t.start()
        try:
            msg = messages.client_update(
                cid, 3, cnn_state(i), {"loss": 0.1 * i}, num_examples=100 + i
            )
            await send_message(Channel(t), layout.updates, msg)
            return msg.to_bytes()
        finally:
            await t.stop()

    async def scenario() -> tuple[float, list[messages.Message]]:
        server = transport(bootstrap)
        await server.start()
        await server.ensure_topics(layout.all)
        try:
            start = time.perf_counter()
            sent = await asyncio.gather(*(client(c, i) for i, c in enumerate(clients)))
            # Redeliver two updates, as a client retrying after a lost ack would.
            channel = Channel(server)
            for raw in sent[:2]:
                await channel.send(layout.updates, raw)
            got = await collect(
                channel, [layout.updates], layout.server_group(), lambda g: len(g) == 10, 180
            )
            # Drain the duplicates too: they must not be counted.
            await asyncio.sleep(1)
            return time.perf_counter() - start, got
        finally:
            await server.stop()

    elapsed, got = asyncio.run(scenario())
    assert sorted(msg.body.client_id for msg in got) == clients
    assert len({msg.message_id for msg in got}) == 10
    print(f"\nten-client round over Kafka: {elapsed:.1f} s wall")


def test_async_kafka_client_legacy_api(bootstrap: str, job_id: str) -> None:
    topic = f"{job_id}.compat"
    received: list[bytes] = []
    big = messages.global_update(1, cnn_state(5))

    async def scenario() -> bool:
        client = AsyncKafkaClient({"bootstrap_servers": bootstrap, "group_id": "compat"})
        await client.start()
        try:
            healthy = await client.health_check()
            done = asyncio.Event()

            async def handler(value: bytes) -> None:
                received.append(bytes(value))
                if len(received) == 3:
                    done.set()

            await client.subscribe_to_topic(topic, handler)
            await client.send_message(topic, "hello", key="k")
            await client.send_message(topic, b"\x00bytes")
            await client.send_message(topic, big)
            await asyncio.wait_for(done.wait(), 60)
            return healthy
        finally:
            await client.stop()

    assert asyncio.run(scenario()) is True
    assert received[0] == b"hello" and received[1] == b"\x00bytes"
    assert messages.decode_message(received[2]).message_id == big.message_id


def test_seen_ids_used_across_deliveries() -> None:
    seen = messages.SeenIds(capacity=2)
    assert seen.first_time("a") and not seen.first_time("a")
