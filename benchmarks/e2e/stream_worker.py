"""One side of one trial of the streaming benchmark (``benchmarks.e2e.stream``), as its own
process: ``flwire-send``/``flwire-recv`` (a streamed ClientUpdate through Channel over
KafkaTransport) or ``raw-send``/``raw-recv`` (the same number of bytes as 1 MB records with
confluent-kafka alone; ``raw-recv --fill`` also copies each record's value into one fresh
buffer of the whole model, as any receiver that makes tensors must fill fresh memory). A
receiver prints ``{"ready": true}`` once it has received the controller's warm-up record (it
is then assigned and fetching), and each side ends by printing one JSON line of its
measurements. Times are ``time.monotonic()``, comparable across processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition

from flwire.tensors import buffers

RECORD_BYTES = 1_000_000
WARMUP_KEY = b"warm-up"


def rss_kb(field: str) -> int:
    """VmRSS or VmHWM of this process, in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def say(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def model(spec: str) -> Any:
    """``transformer100m`` (410 MB float32), ``quick`` (~10M parameters) or ``bf16:<bytes>``
    (bfloat16 tensors of 64 MiB each, seeded)."""
    from benchmarks import models

    if spec.startswith("bf16:"):
        import torch

        total = int(float(spec.split(":", 1)[1]))
        gen = torch.Generator().manual_seed(7)
        per = 32 << 20  # elements: 64 MiB of bfloat16
        out = {}
        left = total // 2
        i = 0
        while left > 0:
            n = min(per, left)
            out[f"layer{i}.weight"] = torch.randn(n, generator=gen, dtype=torch.float32).to(
                torch.bfloat16
            )
            left -= n
            i += 1
        return out
    return models.big_model(quick=spec == "quick")


def raw_bytes(sd: Any) -> int:
    return sum(t.numel() * t.element_size() for t in sd.values())


def producer_config(bootstrap: str) -> dict[str, Any]:
    """What flwire's KafkaTransport's producer uses (idempotent, acks=all, linger 0 ms)."""
    from flwire.transport.kafka import KafkaTransport

    cfg = dict(KafkaTransport(bootstrap).producer_config)
    return cfg


def consumer_config(bootstrap: str) -> dict[str, Any]:
    """flwire's consumer settings (fetch sizes, backoff) without the group."""
    from flwire.transport.kafka import KafkaTransport

    cfg = dict(KafkaTransport(bootstrap).consumer_config)
    cfg["group.id"] = f"raw-{os.getpid()}"
    return cfg


# ------------------------------------------------------------------------------- raw


def raw_send(args: argparse.Namespace) -> dict[str, Any]:
    count = math.ceil(args.bytes / RECORD_BYTES)
    value = os.urandom(RECORD_BYTES)
    producer = Producer(producer_config(args.bootstrap))
    producer.produce(args.topic + ".warm", b"x")
    producer.flush(30)
    rss0 = rss_kb("VmRSS")
    t0 = time.monotonic()
    cpu0 = time.process_time()
    first = None
    for _ in range(count):
        while True:
            try:
                producer.produce(args.topic, value, b"c0")
                break
            except BufferError:
                producer.poll(0.005)
        if first is None:
            first = time.monotonic()
        producer.poll(0)
    left = producer.flush(120)
    t_done = time.monotonic()
    if left:
        raise SystemExit(f"raw producer: {left} records not delivered")
    return {
        "t0": t0,
        "t_first_send": first,
        "t_done": t_done,
        "records": count,
        "bytes": count * RECORD_BYTES,
        "extra_kb": rss_kb("VmHWM") - rss0,
        "send_cpu_s": time.process_time() - cpu0,
    }


def raw_recv(args: argparse.Namespace) -> dict[str, Any]:
    count = math.ceil(args.bytes / RECORD_BYTES)
    consumer = Consumer(consumer_config(args.bootstrap))
    consumer.assign([TopicPartition(args.topic, 0, 0)])
    got = 0
    ready = False
    t_first = t_last = 0.0
    fill: Any = None  # --fill: made at the first record, as a stream receiver makes its tensors
    filled = 0
    cpu0 = 0.0
    deadline = time.monotonic() + args.wait
    while got < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"raw consumer: {got} of {count} records after {args.wait} s")
        for msg in consumer.consume(500, 0.05):
            if msg.error():
                continue
            if msg.key() == WARMUP_KEY:
                if not ready:
                    ready = True
                    say({"ready": True})
                continue
            got += 1
            if got == 1:
                t_first = time.monotonic()
                cpu0 = time.process_time()
            if args.fill:
                value = msg.value() or b""
                if fill is None:
                    fill = buffers.empty(count * RECORD_BYTES)
                fill[filled : filled + len(value)] = np.frombuffer(value, np.uint8)
                filled += len(value)
            t_last = time.monotonic()
    cpu = time.process_time() - cpu0
    consumer.close()
    return {
        "t_first_record": t_first,
        "t_last_record": t_last,
        "t_decoded": t_last,
        "recv_cpu_s": cpu,
        "filled_bytes": filled,
    }


# ------------------------------------------------------------------------------ flwire


async def flwire_send(args: argparse.Namespace) -> dict[str, Any]:
    from flwire.messages import client_update
    from flwire.tensors import EncodeOptions
    from flwire.transport import Channel
    from flwire.transport.kafka import KafkaTransport

    sd = model(args.model)
    transport = KafkaTransport(args.bootstrap)
    await transport.start()
    await transport.send(args.topic + ".warm", b"x")  # connected before the clock starts
    times: list[float] = []
    send = transport.send

    async def timed_send(*a: Any, **k: Any) -> None:
        if not times:
            times.append(time.monotonic())
        await send(*a, **k)

    transport.send = timed_send  # type: ignore[method-assign]
    channel = Channel(transport)
    rss0 = rss_kb("VmRSS")
    t0 = time.monotonic()
    cpu0 = time.process_time()
    options = EncodeOptions(stream=True, compression=args.compression)
    msg = client_update("c0", round_id=1, weights=sd, num_examples=1, options=options)
    size = await channel.send_message(args.topic, msg)
    t_done = time.monotonic()
    cpu = time.process_time() - cpu0
    extra = rss_kb("VmHWM") - rss0
    await transport.stop()
    return {
        "t0": t0,
        "t_first_send": times[0],
        "t_done": t_done,
        "records": channel.stats["sent_parts"],
        "bytes": size,
        "model_bytes": raw_bytes(sd),
        "extra_kb": extra,
        "send_cpu_s": cpu,
    }


async def flwire_recv(args: argparse.Namespace) -> dict[str, Any]:
    from flwire.transport import Channel
    from flwire.transport.kafka import KafkaTransport

    transport = KafkaTransport(args.bootstrap)
    await transport.start()
    progress: list[float] = []

    cpu0: list[float] = []

    def on_progress(direction: str, _tid: str, done: int, total: int) -> None:
        if direction == "receive" and done < total:
            progress.append(time.monotonic())
            if not cpu0:
                cpu0.append(time.process_time())

    channel = Channel(transport, on_progress=on_progress)
    rss0 = rss_kb("VmRSS")
    ready = False
    result: dict[str, Any] = {}
    async for delivery in channel.receive([args.topic], f"bench-{os.getpid()}", dedupe=False):
        if delivery.key == WARMUP_KEY:
            if not ready:
                ready = True
                say({"ready": True})
            await delivery.done()
            continue
        assert delivery.message is not None
        tensors = delivery.message.tensors()  # torch is imported already (see main)
        t_decoded = time.monotonic()
        cpu = time.process_time() - (cpu0[0] if cpu0 else 0.0)
        total_kb = rss_kb("VmHWM") - rss0
        result = {
            "t_first_record": progress[0] if progress else t_decoded,
            "t_last_record": progress[-1] if progress else t_decoded,
            "t_decoded": t_decoded,
            "total_kb": total_kb,
            "model_bytes": raw_bytes(tensors),
            "recv_cpu_s": cpu,
        }
        if args.check:
            expected = model(args.model)
            result["exact"] = all(
                bool((tensors[k].view(-1).view(dtype=_int(v)) == v.view(-1).view(_int(v))).all())
                for k, v in expected.items()
            ) and set(tensors) == set(expected)
        await delivery.done()
        break
    await transport.stop()
    return result


def _int(t: Any) -> Any:
    """The integer dtype of ``t``'s width (compare bits, so NaNs compare equal)."""
    import torch

    return {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("role", choices=["flwire-send", "flwire-recv", "raw-send", "raw-recv"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--model", default="transformer100m")
    ap.add_argument("--bytes", type=int, default=0, help="raw roles: bytes to move")
    ap.add_argument("--compression", default="zstd")
    ap.add_argument("--check", action="store_true", help="flwire-recv: compare bit for bit")
    ap.add_argument("--fill", action="store_true", help="raw-recv: copy into fresh memory")
    ap.add_argument("--wait", type=float, default=300.0)
    args = ap.parse_args(argv)
    if args.role.startswith("flwire"):
        import torch  # noqa: F401  (a receiver of torch tensors has it loaded before it starts)
    if args.role == "raw-send":
        say(raw_send(args))
    elif args.role == "raw-recv":
        say(raw_recv(args))
    elif args.role == "flwire-send":
        say(asyncio.run(flwire_send(args)))
    else:
        try:
            say(asyncio.run(asyncio.wait_for(flwire_recv(args), args.wait)))
        except TimeoutError:
            raise SystemExit(f"flwire receiver: nothing received within {args.wait} s") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
