"""The consumer settings flwire chooses for 1 MB parts, and that a user's own
consumer_config wins over them."""

from __future__ import annotations

from flwire.transport.kafka import KafkaTransport


def test_the_fetch_queue_backoff_is_short_unless_the_user_says_otherwise() -> None:
    # librdkafka's default (1000 ms) made a receiver wait out a second between the
    # parts of one transfer once its prefetch queue was full (issue 15).
    assert KafkaTransport("127.0.0.1:1").consumer_config["fetch.queue.backoff.ms"] == 10
    mine = KafkaTransport("127.0.0.1:1", consumer_config={"fetch.queue.backoff.ms": 250})
    assert mine.consumer_config["fetch.queue.backoff.ms"] == 250
    assert mine.consumer_config["max.partition.fetch.bytes"] == 16 * mine.max_record_bytes


def test_the_prefetch_queue_is_one_fetch_unless_the_user_says_otherwise() -> None:
    # librdkafka's default (64 MiB) is memory beside the model for a receiver that
    # falls behind a stream (issue 15: receiver memory at most 1.25x the model).
    transport = KafkaTransport("127.0.0.1:1")
    queued_kb = transport.consumer_config["queued.max.messages.kbytes"]
    assert queued_kb * 1024 >= transport.consumer_config["max.partition.fetch.bytes"]
    assert queued_kb == 16384
    mine = KafkaTransport("127.0.0.1:1", consumer_config={"queued.max.messages.kbytes": 65536})
    assert mine.consumer_config["queued.max.messages.kbytes"] == 65536
