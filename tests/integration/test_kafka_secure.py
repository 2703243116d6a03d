"""The secured broker (kafka/broker.sh up --secure: SASL_SSL, SCRAM-SHA-512, the
StandardAuthorizer) with a job's ACLs (flwire.transport.kafka_acl): who may write
and read what, and how a refusal reads.

The broker runs on a port of its own for the session (conftest's ``secure_broker``);
each test grants the ACLs of a fresh job.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from flwire.compat.communication.kafka_client import AsyncKafkaClient
from flwire.exceptions import CommunicationException
from flwire.transport import Channel, TopicLayout, kafka_acl
from flwire.transport.kafka import KafkaTransport

from .conftest import SecureBroker

CLIENTS = ["client-1", "client-2"]
#: A refused password or an ACL denial must fail this fast (librdkafka reports the
#: refusal within a second; the bounds the calls would otherwise wait out are 30-60 s).
FAST_S = 5.0


@pytest.fixture
def job(secure_broker: SecureBroker) -> TopicLayout:
    """A fresh job with its topics and ACLs (server "server", clients client-1/2)."""
    layout = TopicLayout(f"s{uuid.uuid4().hex[:10]}")
    grants = kafka_acl.job_grants(layout, "server", CLIENTS)
    admin = {"bootstrap.servers": secure_broker.bootstrap, **secure_broker.config("admin")}
    kafka_acl.apply(admin, layout, grants)
    return layout


@asynccontextmanager
async def transport_of(
    broker: SecureBroker, user: str, *, password: str | None = None
) -> AsyncIterator[KafkaTransport]:
    security = broker.config(user)
    if password is not None:
        security["sasl.password"] = password
    transport = KafkaTransport(
        broker.bootstrap,
        security=security,
        environ={},  # the test's own settings, whatever the environment says
        consumer_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
    )
    await transport.start()
    try:
        yield transport
    finally:
        await transport.stop()


async def receive_one(channel: Channel, topics: list[str], group: str) -> bytes:
    async for delivery in channel.receive(topics, group):
        await delivery.done()
        return delivery.payload
    raise AssertionError("the subscription ended without a record")


async def refused_within(
    bound_s: float, call: Callable[[], Awaitable[object]]
) -> tuple[CommunicationException, float]:
    """The CommunicationException ``call()`` raises, and how long that took (under
    ``bound_s``, else the test fails)."""
    start = time.monotonic()
    with pytest.raises(CommunicationException) as info:
        await asyncio.wait_for(call(), timeout=bound_s * 4)
    elapsed = time.monotonic() - start
    assert elapsed < bound_s, f"took {elapsed:.1f} s: {info.value}"
    return info.value, elapsed


def test_client_and_server_exchange_on_their_topics(
    secure_broker: SecureBroker, job: TopicLayout
) -> None:
    """With the right passwords: a client writes an update and the server reads it,
    the server writes a broadcast and the client reads it (through a Channel, so the
    seen-ids topics of both groups are created and used under the ACLs too)."""

    async def run() -> None:
        async with (
            transport_of(secure_broker, "client-1") as client,
            transport_of(secure_broker, "server") as server,
        ):
            client_channel, server_channel = Channel(client), Channel(server)
            await client_channel.send(job.updates, b"update from client-1")
            await client_channel.send(job.control, b"heartbeat from client-1")
            got = await asyncio.wait_for(
                receive_one(server_channel, [job.updates], job.server_group()), 30
            )
            assert got == b"update from client-1"
            await server_channel.send(job.broadcast, b"global model")
            got = await asyncio.wait_for(
                receive_one(client_channel, [job.broadcast], job.client_group("client-1")), 30
            )
            assert got == b"global model"
            control = await server.read_topic(job.control)
            assert [r.value for r in control] == [b"heartbeat from client-1"]

    asyncio.run(run())


def test_wrong_password_is_refused_at_once_without_leaking_it(
    secure_broker: SecureBroker, job: TopicLayout, caplog: pytest.LogCaptureFixture
) -> None:
    async def run() -> None:
        caplog.set_level(logging.DEBUG)
        wrong = "not-the-password-" + uuid.uuid4().hex
        async with transport_of(secure_broker, "client-1", password=wrong) as client:
            error, _ = await refused_within(FAST_S, lambda: client.send(job.updates, b"x"))
            text = str(error)
            assert "authentication failed" in text and "wrong user name or password" in text
            assert "'client-1'" in text and "sasl.password" in text
            # Later calls fail at once too, and subscribing as well.
            await refused_within(1.0, lambda: client.ensure_topics([job.updates]))
            error, _ = await refused_within(
                1.0, lambda: client.subscribe([job.broadcast], job.client_group("client-1"))
            )
        assert wrong not in text and wrong not in str(error)
        assert wrong not in caplog.text
        assert wrong not in repr(client)

    asyncio.run(run())


def test_a_client_writing_broadcast_is_denied_naming_the_topic(
    secure_broker: SecureBroker, job: TopicLayout
) -> None:
    async def run() -> None:
        async with transport_of(secure_broker, "client-2") as client:
            error, _ = await refused_within(FAST_S, lambda: client.send(job.broadcast, b"forged"))
        text = str(error)
        assert f"not authorized to write topic {job.broadcast!r}" in text
        assert "User:client-2" in text and "TOPIC_AUTHORIZATION_FAILED" in text
        # Nothing was written.
        async with transport_of(secure_broker, "server") as server:
            assert await server.read_topic(job.broadcast) == []

    asyncio.run(run())


def test_a_client_cannot_read_updates_nor_another_clients_group(
    secure_broker: SecureBroker, job: TopicLayout
) -> None:
    async def run() -> None:
        async with transport_of(secure_broker, "client-1") as client:
            await client.send(job.updates, b"client-1's update")
            error, _ = await refused_within(FAST_S, lambda: client.read_topic(job.updates))
            assert f"not authorized to read topic {job.updates!r}" in str(error)

            async def join(group: str) -> None:
                subscription = await client.subscribe([job.broadcast], group)
                try:
                    async for _ in subscription:
                        raise AssertionError("a record through a group that is not this user's")
                finally:
                    await subscription.close()

            other = job.client_group("client-2")
            error, _ = await refused_within(FAST_S, lambda: join(other))
            assert f"not authorized to use consumer group {other!r}" in str(error)

    asyncio.run(run())


def test_the_server_writes_broadcast_and_reads_but_cannot_write_updates(
    secure_broker: SecureBroker, job: TopicLayout
) -> None:
    async def run() -> None:
        async with transport_of(secure_broker, "server") as server:
            await server.send(job.broadcast, b"round 1")
            error, _ = await refused_within(
                FAST_S, lambda: server.send(job.updates, b"fake update")
            )
            assert f"not authorized to write topic {job.updates!r}" in str(error)
            # Another job's topics do not exist for it, and it may not create them.
            other = TopicLayout(f"s{uuid.uuid4().hex[:10]}")
            error, _ = await refused_within(FAST_S, lambda: server.send(other.broadcast, b"x"))
            assert f"not authorized to create topic {other.broadcast!r}" in str(error)
        async with transport_of(secure_broker, "client-1") as client:
            assert [r.value for r in await client.read_topic(job.broadcast)] == [b"round 1"]

    asyncio.run(run())


def test_async_kafka_client_takes_its_credentials_from_the_environment(
    secure_broker: SecureBroker, job: TopicLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compat client: the FLWIRE_KAFKA__* variables reach every client it makes
    (the admin client that creates the seen-ids topic, the producer, the consumer)."""

    async def run() -> None:
        for key, value in secure_broker.config("client-1").items():
            monkeypatch.setenv("FLWIRE_KAFKA__" + key.upper().replace(".", "_"), value)
        sender = AsyncKafkaClient({"bootstrap_servers": secure_broker.bootstrap})
        await sender.start()
        received: asyncio.Queue[bytes] = asyncio.Queue()
        try:
            await sender.send_message(job.updates, b"via the compat client")
            monkeypatch.setenv("FLWIRE_KAFKA__SASL_USERNAME", "server")
            monkeypatch.setenv(
                "FLWIRE_KAFKA__SASL_PASSWORD", secure_broker.config("server")["sasl.password"]
            )
            reader = AsyncKafkaClient(
                {"bootstrap_servers": secure_broker.bootstrap, "group_id": job.server_group()}
            )
            await reader.start()
            try:
                await reader.subscribe_to_topic(job.updates, received.put_nowait)
                assert await asyncio.wait_for(received.get(), 30) == b"via the compat client"
            finally:
                await reader.stop()
        finally:
            await sender.stop()

    asyncio.run(run())


def test_the_secure_demo_completes_its_rounds(secure_broker: SecureBroker, tmp_path) -> None:
    """`flwire demo --secure`: SCRAM users and ACLs made for the job, the clients as
    processes of their own, each logged in as itself, every message signed."""
    import io
    import json

    from flwire.demo.runner import DemoOptions, run_demo

    out, err = io.StringIO(), io.StringIO()
    opts = DemoOptions(
        clients=2,
        rounds=2,
        local_epochs=1,
        bootstrap_servers=secure_broker.bootstrap,
        secure=True,
        sign=True,
        kafka_home=secure_broker.users.parent.parent,
        report_dir=tmp_path,
    )
    status = run_demo(opts, out, err)
    text = out.getvalue()
    assert status == 0, f"{text}\n{err.getvalue()}"
    assert "(SASL_SSL, SCRAM-SHA-512, ACLs per job), signed messages" in text
    report = json.loads((tmp_path / "demo-report.json").read_text())
    assert (report["transport"], report["secure"], report["refusals"]) == ("kafka", True, {})
    rounds = report["rounds"]
    assert [sorted(r["reporting"]) for r in rounds] == [["client-0", "client-1"]] * 2
    assert all(not r["refused"] for r in rounds)
    assert rounds[1]["accuracy"] > rounds[0]["accuracy"] > 0.2

    async def logs_in(user: str) -> bool:
        async with transport_of(secure_broker, user) as transport:
            return await transport.healthy()

    # The broker's own users keep their passwords (client-1 is one of the demo's).
    assert asyncio.run(logs_in("client-1"))


def test_the_secure_demo_names_a_missing_broker_set_up(tmp_path) -> None:
    import io

    from flwire.demo.runner import DemoOptions, run_demo

    out, err = io.StringIO(), io.StringIO()
    opts = DemoOptions(
        clients=2,
        rounds=1,
        bootstrap_servers="127.0.0.1:9",
        secure=True,
        sign=True,
        kafka_home=tmp_path,
    )
    assert run_demo(opts, out, err) == 1
    assert f"no secured broker set-up in {tmp_path / 'secure'}" in err.getvalue()
    assert "kafka/broker.sh up --secure" in err.getvalue()


def test_a_logged_in_client_cannot_speak_as_another_when_updates_are_signed(
    secure_broker: SecureBroker, job: TopicLayout
) -> None:
    """SASL and ACLs let client-2 write the updates topic, so it can put client-1's
    name in an update; the signature is what refuses it. client-2's update in its
    own name, and client-1's own, go through."""
    import numpy as np

    from flwire import messages, security

    keys = {c: security.generate_private_key() for c in CLIENTS}
    trust = security.TrustStore({c: k.public_key() for c, k in keys.items()})
    weights = {"w": np.ones(300_000, dtype=np.float32)}  # 1.2 MB: sent in parts

    def update(claimed: str, signer: str) -> bytes:
        msg = messages.client_update(claimed, 1, weights, num_examples=5)
        return security.sign_envelope(msg.to_bytes(), signer, keys[signer])

    async def run() -> tuple[list[str], security.Verifier]:
        verifier = security.Verifier(trust, current_round=lambda: 1)
        async with (
            transport_of(secure_broker, "client-1") as one,
            transport_of(secure_broker, "client-2") as two,
            transport_of(secure_broker, "server") as server,
        ):
            await Channel(two).send(job.updates, update("client-1", "client-2"))
            await Channel(two).send(job.updates, update("client-2", "client-2"))
            await Channel(one).send(job.updates, update("client-1", "client-1"))
            got: list[str] = []
            receiving = Channel(server).receive(
                [job.updates], job.server_group(), verifier=verifier
            )
            async for delivery in receiving:
                assert delivery.message is not None
                got.append(delivery.message.body.client_id)
                await delivery.done()
                if len(got) == 2:
                    break
            await receiving.aclose()
        return got, verifier

    got, verifier = asyncio.run(asyncio.wait_for(run(), 60))
    assert sorted(got) == ["client-1", "client-2"]
    assert verifier.refusals == {"sender_mismatch": 1}
