"""SeenLog and reading a topic back, on a real Apache Kafka broker."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from flwire.exceptions import CommunicationException
from flwire.transport import KafkaTransport, SeenLog, kafka_admin

from ._helpers import transport

N = 50


def _topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(timeout=10)
    return {name: entry.value for name, entry in entries.items()}


def _groups(bootstrap: str) -> set[str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    listed = admin.list_consumer_groups(request_timeout=10).result(timeout=15)
    return {group.group_id for group in listed.valid}


def test_ids_survive_a_restart(bootstrap: str, job_id: str) -> None:
    group = f"flwire.{job_id}.server"
    ids = [f"{job_id}-m{i}" for i in range(N)]

    async def write() -> None:
        t = transport(bootstrap)
        await t.start()
        try:
            log = SeenLog(t, group)
            assert await log.load() == 0
            for message_id in ids:
                await log.add(message_id)
            assert len(log) == N
        finally:
            await t.stop()

    async def restart() -> tuple[int, SeenLog, float]:
        t = transport(bootstrap)
        await t.start()
        try:
            log = SeenLog(t, group)
            started = time.monotonic()
            loaded = await log.load()
            return loaded, log, time.monotonic() - started
        finally:
            await t.stop()

    asyncio.run(write())
    loaded, log, elapsed = asyncio.run(restart())
    assert loaded == N
    assert all(message_id in log for message_id in ids)
    assert f"{job_id}-other" not in log
    assert elapsed < 10, f"loading {N} ids took {elapsed:.1f} s"
    # Read back without a consumer group: none was left on the broker.
    assert not [g for g in _groups(bootstrap) if g.startswith("flwire.read-topic.")]


def test_the_ids_topic_is_compacted(bootstrap: str, job_id: str) -> None:
    group = f"flwire.{job_id}.server"
    retention_ms = 3 * 24 * 3600 * 1000

    async def scenario() -> None:
        t = transport(bootstrap)
        await t.start()
        try:
            await SeenLog(t, group, retention_ms=retention_ms).load()
            # A second ensure finds the topic there: no error.
            await t.ensure_compacted_topic(f"{group}.seen", retention_ms=retention_ms)
        finally:
            await t.stop()

    asyncio.run(scenario())
    config = _topic_config(bootstrap, f"{group}.seen")
    assert "compact" in config["cleanup.policy"]
    assert "delete" in config["cleanup.policy"]
    assert config["retention.ms"] == str(retention_ms)
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    assert len(metadata.topics[f"{group}.seen"].partitions) == 1


def test_read_topic_of_an_empty_or_missing_topic_is_empty_and_quick(
    bootstrap: str, job_id: str
) -> None:
    async def scenario() -> tuple[list[object], list[object], float]:
        t = transport(bootstrap)
        await t.start()
        try:
            await t.ensure_compacted_topic(f"{job_id}.empty", retention_ms=60_000)
            started = time.monotonic()
            empty = await t.read_topic(f"{job_id}.empty")
            missing = await t.read_topic(f"{job_id}.missing")
            return list(empty), list(missing), time.monotonic() - started
        finally:
            await t.stop()

    empty, missing, elapsed = asyncio.run(scenario())
    assert empty == [] and missing == []
    assert elapsed < 3, f"reading two empty topics took {elapsed:.1f} s"
    # Reading a missing topic does not create it (the broker auto-creates topics).
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    assert f"{job_id}.missing" not in topics


def test_read_topic_reads_every_partition_in_offset_order(bootstrap: str, job_id: str) -> None:
    topic = f"{job_id}.three"

    async def scenario() -> list[tuple[int, int, bytes | None, object]]:
        t = KafkaTransport(bootstrap, num_partitions=3)
        await t.start()
        try:
            await t.ensure_topics([topic])
            for i in range(30):
                await t.send(topic, f"v{i}".encode(), key=f"k{i}".encode())
            records = await t.read_topic(topic)
            return [(r.partition, r.offset, r.key, r.value) for r in records]
        finally:
            await t.stop()

    got = asyncio.run(scenario())
    assert sorted(key for _, _, key, _ in got if key) == sorted(f"k{i}".encode() for i in range(30))
    assert {partition for partition, _, _, _ in got} == {0, 1, 2}
    for partition in range(3):
        offsets = [offset for p, offset, _, _ in got if p == partition]
        assert offsets == list(range(len(offsets)))
    assert all(value == b"v" + key[1:] for _, _, key, value in got if key)


def test_read_topic_fails_within_its_bound_when_no_broker_answers(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    started = time.monotonic()
    with pytest.raises(CommunicationException) as info:
        kafka_admin.read_topic({"bootstrap.servers": "127.0.0.1:1"}, "flwire.x.seen", 3.0)
    elapsed = time.monotonic() - started
    assert 2.5 <= elapsed < 5, f"took {elapsed:.1f} s against a 3 s bound"
    message = str(info.value)
    assert "'flwire.x.seen'" in message and "127.0.0.1:1" in message and "3 s" in message
    # librdkafka's lines went to Python logging, once each, and nothing to stderr.
    assert "Connect to" not in capfd.readouterr().err
    # (the error callback reports the same failure once more, as a WARNING of its own)
    connects = [
        r
        for r in caplog.records
        if "Connect to" in r.getMessage() and r.name.endswith(".librdkafka")
    ]
    assert len(connects) <= 1


def test_create_compacted_topic_fails_within_its_bound_when_no_broker_answers() -> None:
    config: dict[str, Any] = {
        "bootstrap.servers": "127.0.0.1:1",
        "logger": logging.getLogger("test.admin"),
    }
    admin = AdminClient(config)
    started = time.monotonic()
    with pytest.raises(CommunicationException, match=r"kafka-topics\.sh --create"):
        kafka_admin.create_compacted_topic(admin, "flwire.x.seen", 60_000, 2.0)
    assert time.monotonic() - started < 5
