"""Small helpers shared by the Kafka integration tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import torch

from flwire import messages
from flwire.compat.models.neural_networks import SimpleCNN
from flwire.transport import Channel, KafkaTransport


def cnn_state(seed: int) -> dict[str, torch.Tensor]:
    """Weights of the old SimpleCNN (1.2M parameters, 4.8 MB)."""
    torch.manual_seed(seed)
    return SimpleCNN().state_dict()


def transport(bootstrap: str, **consumer: Any) -> KafkaTransport:
    return KafkaTransport(
        bootstrap,
        consumer_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000, **consumer},
    )


async def send_message(channel: Channel, topic: str, msg: messages.Message) -> None:
    await channel.send_message(topic, msg)


async def collect(
    channel: Channel,
    topics: list[str],
    group: str,
    until: Callable[[list[messages.Message]], bool],
    timeout: float,
    seen: messages.SeenIds | None = None,
) -> list[messages.Message]:
    """Receive, decode and de-duplicate messages until ``until`` holds."""
    got: list[messages.Message] = []
    seen = seen or messages.SeenIds()
    deadline = time.monotonic() + timeout

    async def run() -> None:
        async for delivery in channel.receive(topics, group):
            msg = messages.decode_message(delivery.payload)
            if seen.first_time(msg.message_id):
                got.append(msg)
            await delivery.done()
            if until(got):
                return

    await asyncio.wait_for(run(), timeout=max(1.0, deadline - time.monotonic()))
    return got
