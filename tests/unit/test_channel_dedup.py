"""De-duplication of redelivered messages: messages.SeenIds, and a server counting each of
ten concurrent clients' updates exactly once despite re-sends and redelivery."""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from flwire import messages
from flwire.transport import (
    Channel,
    InMemoryBroker,
    InMemoryTransport,
    TopicLayout,
    message_headers,
    read_headers,
)

TIMEOUT = 10


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


# ----------------------------------------------------------------------------- SeenIds


def test_seen_ids_first_time_and_repeat():
    seen = messages.SeenIds()
    assert seen.first_time("a") is True
    assert seen.first_time("a") is False
    assert seen.first_time("b") is True
    assert seen.first_time("a") is False


def test_seen_ids_evicts_the_least_recently_seen_beyond_capacity():
    seen = messages.SeenIds(capacity=3)
    for ident in "abc":
        assert seen.first_time(ident)
    assert not seen.first_time("a")  # a is now the most recent
    assert seen.first_time("d")  # evicts b
    assert not seen.first_time("a")
    assert not seen.first_time("c")
    assert not seen.first_time("d")
    assert seen.first_time("b")  # forgotten, so new again (evicts a)
    assert seen.first_time("a")


@given(st.lists(st.sampled_from([f"id{i}" for i in range(12)]), max_size=80), st.integers(1, 8))
def test_seen_ids_matches_an_lru_model(ids, capacity):
    seen = messages.SeenIds(capacity=capacity)
    model: list[str] = []  # least recent first
    for ident in ids:
        expected = ident not in model
        assert seen.first_time(ident) is expected
        if not expected:
            model.remove(ident)
        model.append(ident)
        del model[:-capacity]


# ----------------------------------------------------------------------------- scenario


def _weights(i: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(i)
    return {
        "layer.weight": rng.standard_normal((16, 32)).astype(np.float32),
        "layer.bias": rng.standard_normal(16).astype(np.float32),
    }


async def _server(
    layout: TopicLayout, broker, seen: messages.SeenIds, expected: int, ack=lambda d: True
):
    """Receive until ``expected`` deliveries; return (per-client counts of first
    sightings, number of repeats, decoded messages)."""
    transport = InMemoryTransport(broker)
    await transport.start()
    channel = Channel(transport)
    counts: dict[str, int] = {}
    repeats = 0
    decoded = {}
    received = 0
    # The application de-duplicates here (SeenIds), so the Channel's own
    # de-duplication is off: every copy must reach the application.
    stream = channel.receive([layout.updates], layout.server_group(), dedupe=False)
    async with contextlib.aclosing(stream) as deliveries:
        async for delivery in deliveries:
            msg = messages.decode_message(delivery.payload)
            assert read_headers(delivery.headers)["flwire-message-id"] == msg.message_id
            if seen.first_time(msg.message_id):
                counts[msg.body.client_id] = counts.get(msg.body.client_id, 0) + 1
                decoded[msg.body.client_id] = msg
            else:
                repeats += 1
            if ack(delivery):
                await delivery.done()
            received += 1
            if received == expected:
                break
    return counts, repeats, decoded, channel


def test_ten_clients_counted_once_despite_resends_and_redelivery():
    layout = TopicLayout("dedup-job")
    n_clients = 10
    resend = [1, 4, 4, 7]  # client 4's update is re-sent twice

    async def main():
        broker = InMemoryBroker()
        clients = []
        for _ in range(n_clients):
            transport = InMemoryTransport(broker, max_record_bytes=1200)  # updates get split
            await transport.start()
            clients.append(Channel(transport))
        updates = [
            messages.client_update(
                f"client-{i}", 3, _weights(i), {"loss": 0.1 * i}, num_examples=10 + i
            )
            for i in range(n_clients)
        ]
        encoded = [u.to_bytes() for u in updates]
        assert all(len(e) > 1200 for e in encoded)

        async def send(i):
            await clients[i].send(
                layout.for_message(updates[i].type),
                encoded[i],
                key=f"client-{i}".encode(),
                headers=message_headers(updates[i]),
            )

        # Every client sends at once, then some retry (their parts interleave).
        await asyncio.gather(*(send(i) for i in range(n_clients)))
        await asyncio.gather(*(send(i) for i in resend))
        seen = messages.SeenIds()
        first_log = len(broker.topics[layout.updates])
        first = await _server(layout, broker, seen, n_clients + len(resend))
        after_first = broker.committed[(layout.server_group(), layout.updates)]
        assert after_first == first_log  # everything handled was committed

        # Two more re-sends; the server handles them but stops before acknowledging
        # (as if it crashed), so the restarted server gets them again.
        for i in (2, 5):
            await send(i)
        crashed = await _server(layout, broker, seen, 2, ack=lambda d: False)
        restarted = await _server(layout, broker, seen, 2)
        return updates, first, after_first, crashed, restarted, broker, clients

    updates, first, after_first, crashed, restarted, broker, clients = run(main())
    counts, repeats, decoded, channel = first
    assert counts == {f"client-{i}": 1 for i in range(n_clients)}
    assert repeats == len(resend)
    assert channel.stats["received"] == n_clients + len(resend)
    assert sum(c.stats["sent_parts"] for c in clients) > 2 * n_clients  # really chunked
    log = broker.topics[layout.updates]
    keys = [r.key for r in log[:after_first]]
    assert keys != sorted(keys)  # the clients' parts interleave

    for counts_, repeats_ in (crashed[:2], restarted[:2]):
        assert counts_ == {}  # already counted
        assert repeats_ == 2
    assert broker.committed[(layout.server_group(), layout.updates)] == len(log)
    for i, update in enumerate(updates):
        got = decoded[f"client-{i}"]
        assert got.message_id == update.message_id
        assert (got.body.round_id, got.body.num_examples) == (3, 10 + i)
        tensors = got.tensors()
        for name, array in _weights(i).items():
            assert np.array_equal(np.asarray(tensors[name]), array)
