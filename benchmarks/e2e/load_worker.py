"""A process of the many-clients load scenario (``benchmarks.e2e.load``), started by it; not
meant to be run by hand.

    python -m benchmarks.e2e.load_worker server  BOOTSTRAP JOB MODEL CLIENTS
    python -m benchmarks.e2e.load_worker clients BOOTSTRAP JOB MODEL FIRST COUNT

It reads commands from stdin and answers each with one JSON line on stdout (logs go to
stderr); the first line it writes is ``{"ready": ...}`` once it is set up.

* ``server``: one KafkaTransport and Channel on the job's updates and control topics, in the
  server's consumer group. Counts the clients' registrations (so its consumer is in the
  group and fetching before any round). ``{"cmd": "round", "round": r}``: gives freed
  memory back to the OS (``malloc_trim``), notes its RSS,
  resets its peak RSS (VmHWM, ``/proc/self/clear_refs``), answers ``armed``, then folds
  each update of round r into a fresh StreamingFedAvg as it arrives (decode, fold, drop:
  nothing heavier is screened) and answers once every client's is folded: when each was
  folded, the client's send start (from the update's metrics), bytes, peak RSS growth and
  whether the average is right. ``{"cmd": "raw", ...}``: a plain confluent-kafka consumer
  reads a topic from its start until it has ``records`` records; when the first and last
  came.
* ``clients``: COUNT clients (ids c<FIRST>..), each with its own KafkaTransport (so its own
  producer) and its own identity, registered on the control topic. ``round``: all of them
  at once (asyncio tasks) build their update (the model + (index + 1) * STEP on every float,
  ``num_examples`` = 100 + index, send start in the metrics) and send it. ``raw``: one
  plain confluent-kafka producer writes the same number of records of the same sizes.

Clock: time.monotonic() (``wire.clock``), one clock for every process of the machine.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks import models
from benchmarks.e2e.wire import clock, flwire_transport
from benchmarks.models import StateDict
from flwire import messages as m
from flwire.aggregation import StreamingFedAvg
from flwire.tensors import EncodeOptions
from flwire.transport import Channel, Delivery, Reassembler, TopicLayout
from flwire.transport.kafka import KafkaTransport

log = logging.getLogger("e2e-load")

#: What client i adds to every float weight: (i + 1) * STEP (a stand-in for training).
STEP = 1e-4
#: How often the server samples what its reassembler holds (s).
SAMPLE_S = 0.005
#: Clients send their updates as streamed transfers (``--stream``).
STREAM = False


def model(kind: str) -> StateDict:
    """The model the clients train: the demo's SimpleCNN, or a tiny one for smoke tests."""
    if kind == "cnn":
        return models.cnn()
    if kind == "tiny":
        gen = torch.Generator().manual_seed(7)
        return {
            "w": torch.randn(600, 600, generator=gen),  # 1.4 MB: a transfer in 2 parts
            "b": torch.randn(300, generator=gen),
            "steps": torch.tensor(3, dtype=torch.int64),
        }
    raise SystemExit(f"unknown model {kind!r}")


def client_id(index: int) -> str:
    return f"c{index}"


def client_index(cid: str) -> int:
    return int(cid[1:])


def examples(index: int) -> int:
    return 100 + index


def trained(base: StateDict, index: int) -> StateDict:
    shift = (index + 1) * STEP
    return {k: v + shift if v.is_floating_point() else v.clone() for k, v in base.items()}


def expected_average(base: StateDict, indices: list[int]) -> StateDict:
    """The weighted average of the clients' updates, computed from what they add."""
    total = sum(examples(i) for i in indices)
    shift = sum(examples(i) * (i + 1) * STEP for i in indices) / total
    return {
        k: (v.double() + shift).to(v.dtype) if v.is_floating_point() else v for k, v in base.items()
    }


def rss_kb(field: str) -> int:
    """A field of /proc/self/status (VmRSS, VmHWM) in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def release_freed_memory() -> None:
    """Give memory freed by earlier rounds back to the OS (glibc keeps it otherwise), so
    that each round's growth is measured from what the server really holds."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux: clear_refs 5); False where refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def answer(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


async def commands(handle: Callable[[dict[str, Any]], Awaitable[bool]]) -> None:
    """Read JSON commands from stdin until ``stop`` (or EOF: the parent is gone)."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or json.loads(line)["cmd"] == "stop":
            return
        if not await handle(json.loads(line)):
            return


# ----------------------------------------------------------------------------- server


#: librdkafka's default queued.max.messages.kbytes (``--queue-kb 0``).
LIBRDKAFKA_QUEUE_KB = 65536


class Server:
    def __init__(
        self,
        bootstrap: str,
        job: str,
        kind: str,
        clients: int,
        memory: int | None,
        queue_kb: int | None,
    ) -> None:
        self.bootstrap = bootstrap
        self.layout = TopicLayout(job)
        self.base = model(kind)
        self.clients = clients
        # 0: librdkafka's own default (KafkaTransport's is 16 MiB).
        queue = {"consumer": {"queued.max.messages.kbytes": queue_kb or LIBRDKAFKA_QUEUE_KB}}
        self.transport = flwire_transport(bootstrap, queue)
        # Incomplete updates past `memory` bytes wait in the spill file (None: all in memory).
        self.channel = Channel(self.transport, reassembler=Reassembler(max_memory_bytes=memory))
        self.registered: set[str] = set()
        self.changed = asyncio.Event()
        self.round: int | None = None
        self.fold: StreamingFedAvg | None = None
        self.folded: dict[str, dict[str, float]] = {}
        self.pending_peak = 0
        self.transfers_peak = 0
        self.spilled_peak = self.memory_peak = 0
        self.late = 0
        self.decode_cpu_s = self.fold_cpu_s = 0.0

    async def pump(self) -> None:
        """Take in every delivery: count registrations, fold updates of the round."""
        layout = self.layout
        async for delivery in self.channel.receive(
            [layout.updates, layout.control], layout.server_group()
        ):
            self.take(delivery)
            await delivery.done()
            self.changed.set()

    def take(self, delivery: Delivery) -> None:
        # A streamed update comes decoded already (payload None).
        msg = delivery.message or m.decode_message(delivery.payload)
        body = msg.body
        if msg.type == "client_registration":
            self.registered.add(body.client_id)
        elif msg.type == "client_update":
            if self.fold is None or body.round_id != self.round:
                self.late += 1
                return
            t0 = time.process_time()
            tensors = msg.tensors()
            t1 = time.process_time()
            self.fold.add(body.client_id, tensors, body.num_examples)
            del tensors
            self.decode_cpu_s += t1 - t0
            self.fold_cpu_s += time.process_time() - t1
            self.folded[body.client_id] = {
                "folded": clock(),
                "start": body.metrics["t_start"].double_value,
            }

    async def sample(self) -> None:
        """Keep the peak of what the reassembler holds (incomplete transfers)."""
        reassembler, streams = self.channel.reassembler, self.channel.streams
        while True:
            pending = reassembler.pending_bytes + streams.pending_bytes
            self.pending_peak = max(self.pending_peak, pending)
            transfers = reassembler.pending_transfers + streams.pending_streams
            self.transfers_peak = max(self.transfers_peak, transfers)
            self.spilled_peak = max(self.spilled_peak, reassembler.spilled_bytes)
            held = reassembler.memory_bytes + streams.pending_bytes
            self.memory_peak = max(self.memory_peak, held)
            await asyncio.sleep(SAMPLE_S)

    async def wait(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"server: no {what} within {timeout:.0f} s")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), 1.0)
            except asyncio.TimeoutError:
                pass

    async def run_round(self, cmd: dict[str, Any]) -> dict[str, Any]:
        r = int(cmd["round"])
        before = dict(self.channel.stats)
        release_freed_memory()
        rss0 = rss_kb("VmRSS")
        peak_reset = reset_peak_rss()
        self.folded = {}
        self.pending_peak = self.transfers_peak = self.spilled_peak = self.memory_peak = 0
        spilled0 = self.channel.reassembler.spilled_total
        self.decode_cpu_s = self.fold_cpu_s = 0.0
        cpu0 = time.process_time()
        self.round = r
        self.fold = StreamingFedAvg(self.base)  # its float64 sums count in the growth
        answer({"armed": r})
        await self.wait(lambda: len(self.folded) >= self.clients, cmd["wait_s"], "updates")
        fold, self.fold = self.fold, None
        hwm = rss_kb("VmHWM")
        result = fold.result()
        want = expected_average(self.base, [client_index(c) for c in fold.counts])
        error = max(float((result[k].double() - want[k].double()).abs().max()) for k in want)
        stats = self.channel.stats
        return {
            "round": r,
            "folded": self.folded,
            "bytes": stats["bytes_received"] - before["bytes_received"],
            "rss_before_kb": rss0,
            "hwm_kb": hwm if peak_reset else None,
            "pending_peak": self.pending_peak,
            "transfers_peak": self.transfers_peak,
            "spilled_peak": self.spilled_peak,
            "memory_peak": self.memory_peak,
            "spilled_total": self.channel.reassembler.spilled_total - spilled0,
            "max_error": error,
            "late": self.late,
            "cpu_s": time.process_time() - cpu0,
            "decode_cpu_s": self.decode_cpu_s,
            "fold_cpu_s": self.fold_cpu_s,
        }

    def raw(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Read cmd["records"] records of topic cmd["topic"] with a plain consumer."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        config = {
            k: v
            for k, v in self.transport.consumer_config.items()
            if k not in ("session.timeout.ms", "heartbeat.interval.ms")
        }
        consumer = Consumer({**config, "group.id": f"raw-{cmd['topic']}"})
        consumer.assign([TopicPartition(cmd["topic"], 0, OFFSET_BEGINNING)])
        consumer.consume(1, 1.0)  # connected and fetching (the topic is still empty)
        answer({"armed": cmd["topic"]})
        count = nbytes = 0
        first = last = 0.0
        deadline = time.monotonic() + cmd["wait_s"]
        try:
            while count < cmd["records"]:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"raw: {count} of {cmd['records']} records came")
                for rec in consumer.consume(500, 0.2):
                    if rec.error() is not None:
                        continue
                    last = clock()
                    first = first or last
                    count += 1
                    nbytes += len(rec.value() or b"")
        finally:
            consumer.close()
        return {"first": first, "last": last, "records": count, "bytes": nbytes}

    async def main(self) -> None:
        await self.transport.start()
        tasks: list[asyncio.Task[None]] = []
        try:
            await self.transport.ensure_topics(self.layout.all)
            tasks = [asyncio.create_task(self.pump()), asyncio.create_task(self.sample())]
            await self.wait(lambda: len(self.registered) >= self.clients, 300, "registrations")
            answer({"ready": "server", "pid": os.getpid()})

            async def handle(cmd: dict[str, Any]) -> bool:
                if cmd["cmd"] == "round":
                    answer(await self.run_round(cmd))
                elif cmd["cmd"] == "raw":
                    answer(await asyncio.to_thread(self.raw, cmd))
                return True

            await commands(handle)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.transport.stop()


# ----------------------------------------------------------------------------- clients


class Clients:
    def __init__(self, bootstrap: str, job: str, kind: str, first: int, count: int) -> None:
        self.bootstrap = bootstrap
        self.layout = TopicLayout(job)
        self.base = model(kind)
        self.indices = list(range(first, first + count))
        self.transports: dict[int, KafkaTransport] = {}
        self.channels: dict[int, Channel] = {}
        #: Per client, the sizes of its last update's records (what raw sends again).
        self.sizes: dict[int, list[int]] = {}
        self.raw_producer: Any = None

    async def setup(self) -> None:
        from confluent_kafka import Producer

        for i in self.indices:
            transport = flwire_transport(self.bootstrap)
            await transport.start()
            await transport.ensure_topics([self.layout.updates, self.layout.control])
            self.transports[i] = transport
            self.channels[i] = Channel(transport)
        await asyncio.gather(
            *(
                self.channels[i].send_message(
                    self.layout.control, m.client_registration(client_id(i))
                )
                for i in self.indices
            )
        )
        # The raw path's producer, with the transport's settings, connected before a round.
        self.raw_producer = Producer(self.transports[self.indices[0]].producer_config)
        self.raw_producer.list_topics(timeout=30)

    async def send(self, r: int, i: int) -> dict[str, Any]:
        channel = self.channels[i]
        before = dict(channel.stats)
        await asyncio.sleep(0)  # every client task starts before any encodes
        start = clock()
        update = m.client_update(
            client_id(i),
            r,
            trained(self.base, i),
            {"t_start": start},
            num_examples=examples(i),
            options=EncodeOptions(stream=True) if STREAM else None,
        )
        encoded = clock()
        await channel.send_message(self.layout.updates, update)
        parts = channel.stats["sent_parts"] - before["sent_parts"] or 1
        nbytes = channel.stats["bytes_sent"] - before["bytes_sent"]
        self.sizes[i] = [nbytes // parts + (k < nbytes % parts) for k in range(parts)]
        return {
            "start": start,
            "encoded": encoded,
            "acked": clock(),
            "bytes": nbytes,
            "records": parts,
        }

    async def run_round(self, r: int) -> dict[str, Any]:
        sent = await asyncio.gather(*(self.send(r, i) for i in self.indices))
        return {
            "round": r,
            "clients": {client_id(i): s for i, s in zip(self.indices, sent, strict=True)},
        }

    def raw(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """One plain producer writes every client's records (same sizes) to cmd["topic"]."""
        producer = self.raw_producer
        filler = os.urandom(max(max(s) for s in self.sizes.values()))
        errors: list[str] = []

        def report(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        start = clock()
        for i in self.indices:
            key = client_id(i).encode()
            for size in self.sizes[i]:
                while True:
                    try:
                        producer.produce(cmd["topic"], filler[:size], key, on_delivery=report)
                        break
                    except BufferError:
                        producer.poll(0.01)
                producer.poll(0)
        left = producer.flush(cmd["wait_s"])
        acked = clock()
        if left or errors:
            raise RuntimeError(f"raw: {left} records not delivered; {errors[:3]}")
        records = sum(len(self.sizes[i]) for i in self.indices)
        return {"start": start, "acked": acked, "records": records}

    async def main(self) -> None:
        try:
            await self.setup()
            answer({"ready": "clients", "pid": os.getpid()})

            async def handle(cmd: dict[str, Any]) -> bool:
                if cmd["cmd"] == "round":
                    answer(await self.run_round(int(cmd["round"])))
                elif cmd["cmd"] == "raw":
                    answer(await asyncio.to_thread(self.raw, cmd))
                elif cmd["cmd"] == "sizes":
                    answer({"records": sum(len(s) for s in self.sizes.values())})
                return True

            await commands(handle)
        finally:
            await asyncio.gather(*(t.stop() for t in self.transports.values()))


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
    )
    global STREAM
    STREAM = "--stream" in argv
    argv = [a for a in argv if a != "--stream"]
    role, bootstrap, job, kind = argv[:4]
    if role == "server":
        # Then the reassembler's max_memory_bytes and the consumer's queue (0: defaults).
        memory, queue_kb = (int(a) or None for a in [*argv, "0", "0"][5:7])
        asyncio.run(Server(bootstrap, job, kind, int(argv[4]), memory, queue_kb).main())
    elif role == "clients":
        asyncio.run(Clients(bootstrap, job, kind, int(argv[4]), int(argv[5])).main())
    else:
        raise SystemExit(f"unknown role {role!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
