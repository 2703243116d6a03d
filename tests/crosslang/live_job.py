"""A short flwire FL job on a real Kafka broker, for the cross-language consumers.

The harness of tests/integration/test_crosslang_live.py (issue 16). It sends,
through flwire's own Kafka transport (``KafkaTransport`` + ``Channel``, the
default 1 MB record limit), on the topics of ``TopicLayout(job_id)``:

- a global update of a few MB (float32 under zstd, an incompressible float32
  that stays raw, a float16 and an int64 tensor): several TransferParts;
- three client updates, the first of them split into parts;
- a client update built with ``EncodeOptions(stream=True)``, which
  ``Channel.send_message`` streams (wire format section 14.5: a head, chunks of
  each tensor encoded as they are sent, its 1.5 MB tensor in two, a seal);

and, with a raw confluent-kafka producer, records a consumer must put together
itself: one client update whose parts are delivered with one part twice, and
two client updates whose parts are interleaved (each message split with
flwire's own splitter, ``flwire.transport.chunking.split_payload``, and sent
with flwire's headers, ``message_headers``).

For every message it returns the summary a consumer must print (see
``summary``), computed from the tensors Python sent, never by decoding.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from confluent_kafka import Producer

from flwire import messages
from flwire.tensors import EncodeOptions
from flwire.transport import Channel, KafkaTransport, TopicLayout, message_headers
from flwire.transport.chunking import PART_HEADER, split_payload

#: Dtype enum names of tensor.proto, for the dtypes this job sends.
DTYPE_NAMES = {
    torch.float32: "DTYPE_FLOAT32",
    torch.float16: "DTYPE_FLOAT16",
    torch.int64: "DTYPE_INT64",
}
ROUND = 1

#: A raw record: key, value, headers.
RawRecord = tuple[bytes, bytes, list[tuple[str, str | bytes | None]]]


def raw_bytes(t: torch.Tensor) -> bytes:
    """The tensor's raw bytes (spec section 5): C order, little-endian."""
    a = t.detach().contiguous().numpy()
    return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()


def tensor_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over, per tensor in ascending order of its UTF-8 name: name, 0x00,
    dtype enum name, 0x00, dims joined by ',', 0x00, raw bytes."""
    h = hashlib.sha256()
    for name in sorted(state, key=lambda n: n.encode()):
        t = state[name]
        h.update(name.encode() + b"\0" + DTYPE_NAMES[t.dtype].encode() + b"\0")
        h.update(",".join(str(d) for d in t.shape).encode() + b"\0")
        h.update(raw_bytes(t))
    return h.hexdigest()


def summary(msg: messages.Message, state: Mapping[str, torch.Tensor]) -> dict[str, object]:
    """The line a consumer prints for ``msg``, whose weights were ``state``."""
    return {**summary_of(msg.sender_id, state), "message_id": msg.message_id, "type": msg.type}


def summary_of(client_id: str, state: Mapping[str, torch.Tensor]) -> dict[str, object]:
    """The line of a client update of ROUND from ``client_id`` (without its id)."""
    return {
        "type": "client_update",
        "sender_id": client_id,
        "round": ROUND,
        "tensors": len(state),
        "bytes": sum(len(raw_bytes(t)) for t in state.values()),
        "sha256": tensor_digest(state),
    }


def global_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """About 4.2 MB: zstd shrinks the smooth float32; the noise stays raw."""
    g = torch.Generator().manual_seed(seed)
    smooth = torch.linspace(-1, 1, 768 * 1024).reshape(768, 1024)
    noise = torch.randint(-(2**31), 2**31 - 1, (256, 1024), generator=g, dtype=torch.int64)
    return {
        "encoder.weight": smooth,
        "encoder.noise": noise.to(torch.int32).view(torch.float32),
        "head.weight": torch.randn(64, 64, generator=g).to(torch.float16),
        "steps": torch.arange(10, dtype=torch.int64) * 3,
    }


def client_state(seed: int, large: bool) -> dict[str, torch.Tensor]:
    """A client's weights: 1.5 MB of noise when large (split), else 40 KB."""
    g = torch.Generator().manual_seed(100 + seed)
    rows = 384 if large else 10
    noise = torch.randint(-(2**31), 2**31 - 1, (rows, 1024), generator=g, dtype=torch.int64)
    return {
        "encoder.weight": noise.to(torch.int32).view(torch.float32),
        "head.weight": torch.randn(64, 64, generator=g).to(torch.float16),
        "steps": torch.full((10,), seed, dtype=torch.int64),
    }


@dataclass
class SentJob:
    layout: TopicLayout
    expected: list[dict[str, object]]

    @property
    def topics(self) -> list[str]:
        return list(self.layout.all)

    def expected_lines(self) -> list[str]:
        """One JSON line per message, sorted by message_id (the consumers' order)."""
        rows = sorted(self.expected, key=lambda r: str(r["message_id"]))
        return [json.dumps(r, sort_keys=True) for r in rows]

    def write(self, path: Path) -> None:
        path.write_text("".join(line + "\n" for line in self.expected_lines()))


def _produce_raw(bootstrap: str, topic: str, records: Sequence[RawRecord]) -> None:
    """Writes (key, value, headers) records in this order, then waits for all."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    errors: list[str] = []

    def report(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    for key, value, headers in records:
        producer.produce(topic, value, key, headers=headers, on_delivery=report)
        producer.poll(0)
    left = producer.flush(30)
    assert left == 0 and not errors, f"raw producer: {left} records unsent, errors {errors}"


def _parts(msg: messages.Message, limit: int) -> list[RawRecord]:
    """The records of ``msg`` split as flwire's Channel splits it at ``limit``."""
    headers = message_headers(msg)
    key = msg.sender_id.encode()
    overhead = len(key) + sum(len(k) + len(v) for k, v in headers)
    records: list[RawRecord] = [
        (key, part, [*headers, (PART_HEADER, f"{index}/{count}".encode())])
        for part, index, count in split_payload(msg.to_bytes(), msg.message_id, limit - overhead)
    ]
    return records


def run_job(bootstrap: str, job_id: str) -> SentJob:
    """Sends the job's messages (see the module's docstring); returns what was sent."""
    layout = TopicLayout(job_id)
    expected: list[dict[str, object]] = []
    zstd = EncodeOptions(compression="zstd")

    async def send() -> int:
        t = KafkaTransport(bootstrap)
        await t.start()
        try:
            await t.ensure_topics(layout.all)
            channel = Channel(t)
            state = global_state()
            msg = messages.global_update(ROUND, state, {"lr": 0.1}, options=zstd)
            await channel.send_message(layout.broadcast, msg)
            expected.append(summary(msg, state))
            for k in range(1, 4):
                state = client_state(k, large=k == 1)
                msg = messages.client_update(
                    f"client-{k}",
                    ROUND,
                    state,
                    {"loss": 0.5 / k},
                    num_examples=100 * k,
                    options=zstd,
                )
                await channel.send_message(layout.updates, msg)
                expected.append(summary(msg, state))
            state = client_state(7, large=True)
            streamed = EncodeOptions(compression="zstd", shuffle=True, stream=True)
            msg = messages.client_update(
                "client-7", ROUND, state, {"loss": 0.07}, num_examples=700, options=streamed
            )
            before = channel.stats["sent_parts"]
            await channel.send_message(layout.updates, msg)
            expected.append(summary(msg, state))
            assert channel.stats["sent_streams"] == 1, channel.stats
            # A head, a seal and chunks of a tensor larger than a record (its end
            # packed with the tensors after it).
            assert channel.stats["sent_parts"] - before >= 1 + 2 + 1, channel.stats
            return t.max_record_bytes
        finally:
            await t.stop()

    limit = asyncio.run(send())
    # Records the consumer must reassemble itself: a part delivered twice, and two
    # messages' parts interleaved.
    sent = []
    for k in (4, 5, 6):
        state = client_state(k, large=True)
        msg = messages.client_update(f"client-{k}", ROUND, state, num_examples=10, options=zstd)
        sent.append(_parts(msg, limit))
        expected.append(summary(msg, state))
    twice, first, second = sent
    assert len(twice) >= 2 and len(first) >= 2 and len(second) >= 2
    records = [*twice[:1], *twice[:1], *twice[1:]]
    for a, b in zip(first, second, strict=False):
        records += [a, b]
    longer = first if len(first) > len(second) else second
    records += longer[min(len(first), len(second)) :]
    _produce_raw(bootstrap, layout.updates, records)
    return SentJob(layout, expected)


def send_client_updates(
    bootstrap: str, job_id: str, updates: Sequence[tuple[str, Mapping[str, torch.Tensor], int]]
) -> None:
    """Python clients: each (client id, weights, examples) as a ClientUpdate of ROUND."""
    layout = TopicLayout(job_id)

    async def send() -> None:
        t = KafkaTransport(bootstrap)
        await t.start()
        try:
            await t.ensure_topics(layout.all)
            channel = Channel(t)
            for client_id, state, examples in updates:
                msg = messages.client_update(client_id, ROUND, dict(state), num_examples=examples)
                await channel.send_message(layout.updates, msg)
        finally:
            await t.stop()

    asyncio.run(send())


def serve_round(
    bootstrap: str, job_id: str, clients: int, timeout_s: float = 60.0
) -> tuple[dict[str, torch.Tensor], dict[str, int], dict[str, int]]:
    """The server's side of a round: reads the job's updates topic in the server's
    group until ``clients`` distinct client updates of ROUND are in, and averages
    them with the demo server's FedAvg (``flwire.demo.training.fedavg``, weighted by
    num_examples). Returns the average, the examples per client id and the
    server channel's stats (``received_parts``: records that were parts)."""
    from flwire.demo.training import fedavg

    layout = TopicLayout(job_id)
    got: dict[str, messages.Message] = {}
    stats: dict[str, int] = {}

    async def receive() -> None:
        t = KafkaTransport(bootstrap)
        await t.start()
        channel = Channel(t)
        try:
            async for delivery in channel.receive([layout.updates], layout.server_group()):
                msg = messages.decode_message(delivery.payload)
                if msg.type == "client_update" and msg.body.round_id == ROUND:
                    got.setdefault(msg.body.client_id, msg)
                await delivery.done()
                if len(got) >= clients:
                    return
        finally:
            stats.update(channel.stats)
            await t.stop()

    asyncio.run(asyncio.wait_for(receive(), timeout_s))
    ids = sorted(got)
    examples = {i: int(got[i].body.num_examples) for i in ids}
    average = fedavg([got[i].tensors() for i in ids], [examples[i] for i in ids])
    return average, examples, stats
