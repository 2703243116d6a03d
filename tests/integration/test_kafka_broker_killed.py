"""Issue 12, section 2: a broker killed in the middle of a send. The send fails
within its bound with an error that says what happened, stop() returns within
its own, and librdkafka prints nothing raw on stderr."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import numpy as np
import pytest

from flwire.compat.communication.kafka_client import AsyncKafkaClient
from flwire.compat.serialization.message_serializer import MessageSerializer
from flwire.exceptions import CommunicationException
from flwire.tensors import encode_tensor_map

from .conftest import PrivateBroker

DELIVERY_TIMEOUT_S = 8.0
CLOSE_TIMEOUT_S = 3.0


def test_a_broker_killed_mid_send(
    private_broker: PrivateBroker, capfd: pytest.CaptureFixture[str]
) -> None:
    killed_at: list[float] = []
    killer: list[threading.Thread] = []

    def kill() -> None:
        private_broker.kill()
        killed_at.append(time.monotonic())

    def on_progress(direction: str, _transfer: str, done: int, total: int) -> None:
        # Once the first parts of the big message are written, kill the broker.
        if direction == "send" and done > 0 and done < total and not killer:
            killer.append(threading.Thread(target=kill))
            killer[0].start()

    client = AsyncKafkaClient(
        {
            "bootstrap_servers": private_broker.bootstrap,
            "delivery_timeout_s": DELIVERY_TIMEOUT_S,
            "close_timeout_s": CLOSE_TIMEOUT_S,
            "connect_timeout_s": 5,
        },
        on_progress=on_progress,
    )
    # 200 MB of random float32, uncompressed: 200 parts of 1 MB.
    weights = {"w": np.random.default_rng(0).random(50_000_000, dtype=np.float32)}
    big = MessageSerializer.create_client_update_message(
        "c1", 1, encode_tensor_map(weights, compression="none"), {}
    )
    small = MessageSerializer.create_client_update_message(
        "c1", 0, encode_tensor_map({"w": np.ones(4, np.float32)}), {}
    )
    topic = f"killed-{uuid.uuid4().hex[:8]}"

    async def main() -> tuple[CommunicationException, float]:
        await client.start()
        await client.send_message(topic, small)  # the broker is there
        with pytest.raises(CommunicationException) as failure:
            await client.send_message(topic, big)
        killer[0].join()
        failed_after_kill = time.monotonic() - killed_at[0]
        started = time.monotonic()
        await client.stop()
        stopped_in = time.monotonic() - started
        assert stopped_in < CLOSE_TIMEOUT_S + 2, stopped_in
        return failure.value, failed_after_kill

    error, failed_after_kill = asyncio.run(main())
    assert killer, "the big send finished before the broker was killed"
    # The send fails within its bound of the kill (a record's delivery timeout, plus
    # the grace flwire gives the delivery report), not minutes later, and says why.
    assert failed_after_kill < DELIVERY_TIMEOUT_S + 5, failed_after_kill
    text = str(error)
    # It names the topic, the broker, librdkafka's reason and the bound.
    assert f"delivery to {topic!r} at {private_broker.bootstrap} failed" in text, text
    assert "_MSG_TIMED_OUT" in text or "_TRANSPORT" in text, text
    assert "delivery_timeout_s = 8 s" in text, text
    err = capfd.readouterr().err
    assert "rdkafka#" not in err and "[thrd:" not in err, err
    with capfd.disabled():
        print(f"\nsend failed {failed_after_kill:.1f} s after the kill: {text}")
        print(f"stderr: {len(err.splitlines())} lines: {err.strip()[-600:]}")
