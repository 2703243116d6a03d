"""Smoke check of a running broker from kafka/broker.sh, with confluent-kafka.

    .venv/bin/python kafka/smoke.py write    # topic, round trip, size limits; leaves a marker
    .venv/bin/python kafka/smoke.py verify   # after a restart: topic and marker still there

Bootstrap: $FLWIRE_KAFKA_BOOTSTRAP, else 127.0.0.1:$FLWIRE_KAFKA_PORT (9092).
"""

from __future__ import annotations

import os
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BOOTSTRAP = os.environ.get(
    "FLWIRE_KAFKA_BOOTSTRAP", f"127.0.0.1:{os.environ.get('FLWIRE_KAFKA_PORT', '9092')}"
)
TOPIC = "flwire-smoke"
MARKER_KEY = b"flwire-smoke-marker"


def produce_one(value: bytes, key: bytes, **conf: object) -> KafkaError | None:
    """Produce one message synchronously; return the delivery error (None when acked)."""
    result: list[KafkaError | None] = []
    p = Producer(
        {"bootstrap.servers": BOOTSTRAP, "compression.type": "none", "linger.ms": 0, **conf}
    )
    p.produce(TOPIC, value=value, key=key, on_delivery=lambda err, _msg: result.append(err))
    remaining = p.flush(30)
    assert remaining == 0 and result, "delivery report not received within 30 s"
    return result[0]


def read_all(deadline_s: float = 20.0) -> dict[bytes, bytes]:
    """Read the topic from the beginning until the end offsets; key -> value."""
    c = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": f"smoke-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    t0 = time.monotonic()
    c.subscribe([TOPIC])
    out: dict[bytes, bytes] = {}
    lo, hi = c.get_watermark_offsets(TopicPartition(TOPIC, 0), timeout=10)
    seen = lo
    while seen < hi and time.monotonic() - t0 < deadline_s:
        msg = c.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            raise KafkaException(msg.error())
        out[msg.key() or b""] = msg.value() or b""
        seen = msg.offset() + 1
    c.close()
    assert seen >= hi, f"read {seen}/{hi} offsets within {deadline_s} s"
    took = time.monotonic() - t0
    print(f"  consumed {len(out)} distinct keys (offsets {lo}..{hi}) in {took:.2f} s")
    return out


def write() -> None:
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    t0 = time.monotonic()
    fut = admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1)])[TOPIC]
    fut.result(timeout=30)
    print(f"created topic {TOPIC} in {time.monotonic() - t0:.2f} s")

    token = uuid.uuid4().hex.encode()
    assert produce_one(b"hello " + token, MARKER_KEY) is None
    print("produced marker message")

    small = os.urandom(900 * 1024)
    assert produce_one(small, b"900k") is None, "900 KB message refused"
    print("900 KB message accepted")

    big = os.urandom(2 * 1024 * 1024)
    # Raise the client-side limit so that the broker (default message.max.bytes 1048588) refuses it.
    err = produce_one(big, b"2m", **{"message.max.bytes": 4 * 1024 * 1024})
    assert err is not None, "2 MB message was accepted: broker message.max.bytes is not the default"
    assert err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err
    print(f"2 MB message refused by the broker: {err.name()} ({err.str()})")

    got = read_all()
    assert got[MARKER_KEY] == b"hello " + token
    assert got[b"900k"] == small
    assert b"2m" not in got
    print("round trip ok (marker and 900 KB message read back byte-exact)")
    with open(os.environ.get("SMOKE_TOKEN_FILE", "/tmp/flwire-kafka-smoke.token"), "wb") as f:
        f.write(token)


def verify() -> None:
    with open(os.environ.get("SMOKE_TOKEN_FILE", "/tmp/flwire-kafka-smoke.token"), "rb") as f:
        token = f.read()
    md = AdminClient({"bootstrap.servers": BOOTSTRAP}).list_topics(timeout=10)
    assert TOPIC in md.topics, f"topic {TOPIC} is gone after restart"
    got = read_all()
    assert got.get(MARKER_KEY) == b"hello " + token, "marker message is gone after restart"
    print("after restart: topic and marker message still there")


if __name__ == "__main__":
    {"write": write, "verify": verify}[sys.argv[1]]()
