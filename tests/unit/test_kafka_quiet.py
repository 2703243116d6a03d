"""No raw librdkafka lines on stderr: an application that configures no logging,
pointed at a broker that is not there, sees flwire's own messages only."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time

import pytest

from flwire.exceptions import CommunicationException

SCRIPT = textwrap.dedent(
    """
    import asyncio, time
    from flwire.exceptions import CommunicationException
    from flwire.transport import KafkaTransport

    async def main():
        t = KafkaTransport("127.0.0.1:1", connect_timeout_s=3)
        await t.start()
        started = time.monotonic()
        try:
            await t.ensure_topics(["x"])
        except CommunicationException as exc:
            print("FAILED", round(time.monotonic() - started, 1), exc)
        await t.stop()

    asyncio.run(main())
    """
)


def test_a_dead_broker_gives_one_clear_error_and_no_raw_librdkafka_lines():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip()
    assert out.startswith("FAILED"), out
    seconds = float(out.split()[1])
    assert 2.5 <= seconds < 10, out
    assert "did not answer for 3 s" in out and "raise connect_timeout_s" in out
    assert "rdkafka#" not in proc.stderr and "[thrd:" not in proc.stderr, proc.stderr


def test_every_client_shares_the_security_and_connection_settings(monkeypatch):
    from flwire.transport import kafka

    made: list[dict] = []

    class Client:
        def __init__(self, config):
            made.append(config)

        def poll(self, timeout):
            return 0

        def flush(self, timeout):
            return 0

    monkeypatch.setattr(kafka, "AdminClient", Client)
    monkeypatch.setattr(kafka, "Producer", Client)
    transport = kafka.KafkaTransport(
        "127.0.0.1:1",
        producer_config={
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "PLAIN",
            "linger.ms": 5,
        },
        consumer_config={"ssl.ca.location": "/ca.pem", "client.id": "fl-server"},
    )

    async def main():
        await transport.start()
        await transport.stop()

    asyncio.run(main())
    producer, admin = made
    assert producer["linger.ms"] == 5
    for key, value in {
        "bootstrap.servers": "127.0.0.1:1",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "ssl.ca.location": "/ca.pem",
        "client.id": "fl-server",
    }.items():
        assert admin[key] == value, key
    assert "linger.ms" not in admin  # a producer setting stays with the producer


def test_stop_is_bounded_when_the_broker_is_gone():
    """A send queued for a broker that does not answer: stop() returns within
    close_timeout_s, and the send itself fails within its own bound."""
    from flwire.transport import kafka

    async def main():
        transport = kafka.KafkaTransport(
            "127.0.0.1:1", close_timeout_s=2, delivery_timeout_s=3, connect_timeout_s=3
        )
        await transport.start()
        send = asyncio.create_task(transport.send("t", b"x"))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await transport.stop()
        stopped_in = time.monotonic() - started
        with pytest.raises(CommunicationException):
            await asyncio.wait_for(send, 30)
        return stopped_in

    assert asyncio.run(main()) < 4


def test_sends_left_queued_by_stop_fail_when_it_returns_and_say_why():
    """A record still queued when stop() gives up (close_timeout_s) is purged,
    and its send fails then, naming the cause, rather than when its own
    delivery_timeout_s (30 s here, plus the report's grace) runs out."""
    from flwire.transport import kafka

    async def main() -> tuple[CommunicationException, float]:
        transport = kafka.KafkaTransport("127.0.0.1:1", close_timeout_s=1, delivery_timeout_s=30)
        await transport.start()
        # The topic counts as checked, so the record goes straight to the producer's
        # queue (no broker answers the check here).
        transport._ready_topics.add("t")
        send = asyncio.create_task(transport.send("t", b"x"))
        await asyncio.sleep(0.3)
        await transport.stop()
        stopped = time.monotonic()
        with pytest.raises(CommunicationException) as failure:
            await asyncio.wait_for(send, 60)
        return failure.value, time.monotonic() - stopped

    error, after_stop = asyncio.run(main())
    assert after_stop < 10, after_stop
    assert str(error) == (
        "a record to 't' was not written: the transport was stopped first (stop() waits "
        "close_timeout_s = 1 s for queued records; send it again after start())"
    )


def test_the_demo_says_in_one_line_that_no_broker_answers():
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "flwire.cli", "demo", "--bootstrap-servers", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - started
    assert proc.returncode == 1
    assert took < 30, f"took {took:.1f} s"
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert errors == [
        "flwire demo: no Kafka broker answers at 127.0.0.1:1: start one (`make kafka-up` in "
        "the flwire repository) or check --bootstrap-servers"
    ], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
