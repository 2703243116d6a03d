"""The server side of the end-to-end benchmark, one class per path, the same scenarios and
records for both. Scenario A: registrations, then per round one global update out and N
client updates in; scenario B: one big update in.

* flwire: the SDK itself (Channel over KafkaTransport with its defaults, message builders,
  decode_message); the big update arrives in 1 MB parts.
* old: JSON messages with base64(gzip-9(pickle)) weights (``benchmarks.legacy``), one record
  each, over a plain confluent-kafka producer and consumer (``wire``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Generator
from typing import Any

from benchmarks import legacy
from benchmarks.e2e.phases import ClientProcesses, ServerPhase
from benchmarks.e2e.results import RoundLog, big_result
from benchmarks.e2e.wire import (
    BIG_ROUND,
    BenchError,
    LegacyProducer,
    flwire_transport,
    legacy_consumer,
    legacy_poll,
    log,
)
from benchmarks.models import StateDict
from flwire import messages as m
from flwire.transport import Channel, Delivery, TopicLayout, message_headers

# ----------------------------------------------------------------------------- flwire


class LoopHolds:
    """Awaits a coroutine and returns how long each of its steps held the event loop (the
    time from each resumption to its next suspension), its result discarded: the longest
    step is the longest the loop could not run anything else because of it."""

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.coro = coro

    def __await__(self) -> Generator[Any, Any, list[float]]:
        steps: list[float] = []
        gen = self.coro.__await__()
        value: Any = None
        error: BaseException | None = None
        while True:
            t0 = time.perf_counter()
            try:
                pending = gen.send(value) if error is None else gen.throw(error)
            except StopIteration:
                steps.append(time.perf_counter() - t0)
                return steps
            steps.append(time.perf_counter() - t0)
            try:
                value, error = (yield pending), None
            except BaseException as exc:  # delivered into the coroutine, as await does
                value, error = None, exc


class Inbox:
    """The server's deliveries (updates and control topics), taken in by a background task
    so that a wait can check on the clients every second."""

    def __init__(self, channel: Channel, layout: TopicLayout, wait_s: float, phase: str) -> None:
        self._queue: asyncio.Queue[Delivery | BaseException] = asyncio.Queue()
        self._channel = channel
        self._layout = layout
        self._wait_s = wait_s
        self._phase = phase
        self._task: asyncio.Task[None] | None = None

    async def _pump(self) -> None:
        layout = self._layout
        try:
            async for delivery in self._channel.receive(
                [layout.updates, layout.control], layout.server_group()
            ):
                await self._queue.put(delivery)
        except Exception as exc:
            await self._queue.put(exc)

    def start(self) -> None:
        self._task = asyncio.create_task(self._pump())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def next(self, what: str, clients: ClientProcesses) -> Delivery:
        since = time.monotonic()
        while True:
            try:
                item = await asyncio.wait_for(self._queue.get(), 1.0)
            except asyncio.TimeoutError:
                clients.still_waiting(self._phase, what, since, self._wait_s)
                continue
            if isinstance(item, BaseException):
                raise BenchError(
                    f"{self._phase}: the server's receive loop failed: {item}"
                ) from item
            return item


class FlwireServer:
    """One flwire phase of the plan, server side, over an open Channel."""

    def __init__(self, ph: ServerPhase, channel: Channel) -> None:
        self.ph = ph
        self.channel = channel
        self.inbox = Inbox(channel, ph.layout, ph.st.wait_s, ph.name)

    async def _next(self, what: str) -> Delivery:
        return await self.inbox.next(what, self.ph.clients)

    async def register(self) -> float:
        """Wait until every client has registered; the seconds that took."""
        t0 = time.monotonic()
        registered: set[str] = set()
        while len(registered) < len(self.ph.clients.ids):
            delivery = await self._next("client registrations")
            msg = m.decode_message(delivery.payload)
            if msg.type == "client_registration":
                registered.add(msg.body.client_id)
            await delivery.done()
        return time.monotonic() - t0

    async def round(self, r: int, base: StateDict) -> dict[str, Any]:
        """Scenario A: broadcast the global weights, take in every client's update."""
        stats = self.channel.stats
        before = dict(stats)
        rec = RoundLog(self.ph.name, r, warmup=r < self.ph.st.warmup)
        t0 = time.perf_counter()
        glob = m.global_update(r, base, {"learning_rate": 0.01})
        blob = glob.to_bytes()
        encode_s = time.perf_counter() - t0
        await self.channel.send(
            self.ph.layout.broadcast,
            blob,
            key=glob.sender_id.encode(),
            headers=message_headers(glob),
            transfer_id=glob.message_id,
        )
        rec.broadcast_done(encode_s, len(blob))
        rec.broadcast_records = stats["sent_parts"] - before["sent_parts"] or 1
        rec.broadcast_bytes = stats["bytes_sent"] - before["bytes_sent"]
        while len(rec.updates) < len(self.ph.clients.ids):
            delivery = await self._next(f"client updates of round {r}")
            rec.arrived()
            t0 = time.perf_counter()
            msg = m.decode_message(delivery.payload)
            if msg.type == "client_update" and msg.body.round_id == r:
                tensors = msg.tensors()
                rec.decoded(msg.body.client_id, tensors, time.perf_counter() - t0)
            # done() is awaited before the next update is taken, as the README's
            # receive loop does; it returns at once (the handled id's record, one
            # broker round trip, is written in the background, beside the next
            # decode, and the offsets are committed after it).
            await self._settle(delivery, rec)
        rec.updates_bytes_received = stats["bytes_received"] - before["bytes_received"]
        return rec.finish(self.ph.expected)

    @staticmethod
    async def _settle(delivery: Delivery, rec: RoundLog) -> None:
        t0 = time.perf_counter()
        steps = await LoopHolds(delivery.done())
        rec.done_s.append(time.perf_counter() - t0)
        rec.done_hold_s.append(max(steps))

    async def big(self) -> dict[str, Any]:
        """Scenario B: ask the first client for the big model; time it until decoded."""
        before = dict(self.channel.stats)
        start_msg = m.training_start(
            BIG_ROUND, {"big_model": self.ph.st.big}, client_ids=[self.ph.clients.ids[0]]
        )
        await self.channel.send_message(self.ph.layout.broadcast, start_msg)
        while True:
            delivery = await self._next("the big model")
            t0 = time.perf_counter()
            msg = m.decode_message(delivery.payload)
            if msg.type == "client_update" and msg.body.round_id == BIG_ROUND:
                break
            await delivery.done()
        tensors = msg.tensors()
        decode_s = time.perf_counter() - t0
        received = dict(self.channel.stats)
        result = big_result(
            self.ph.name,
            msg.body.metrics["t_start"].double_value,
            decode_s,
            records=received["received_parts"] - before["received_parts"] or 1,
            nbytes=received["bytes_received"] - before["bytes_received"],
            tensors=tensors,
            expected=self.ph.expected,
        )
        await delivery.done()
        return result

    async def run(self, base: StateDict) -> dict[str, Any]:
        """Registrations, warm-up and timed rounds, the big model if planned, shutdown."""
        out: dict[str, Any] = {"rounds": [], "big": None}
        self.inbox.start()
        try:
            out["clients_ready_s"] = await self.register()
            for r in range(self.ph.st.warmup + self.ph.st.rounds):
                out["rounds"].append(await self.round(r, base))
            if self.ph.with_big:
                out["big"] = await self.big()
            await self.channel.send_message(self.ph.layout.broadcast, m.shutdown("benchmark done"))
        finally:
            await self.inbox.stop()
        return out


async def flwire_server(ph: ServerPhase, bootstrap: str, base: StateDict) -> dict[str, Any]:
    """Run one flwire phase of the plan against the clients; the server's measurements."""
    transport = flwire_transport(bootstrap, ph.st.flwire_options)
    await transport.start()
    try:
        await transport.ensure_topics(ph.layout.all)
        return await FlwireServer(ph, Channel(transport)).run(base)
    finally:
        await transport.stop()


# ----------------------------------------------------------------------------- old path


class LegacyServer:
    """One old-path phase of the plan, server side."""

    def __init__(self, ph: ServerPhase, bootstrap: str) -> None:
        self.ph = ph
        self.producer = LegacyProducer(bootstrap)
        self.consumer = legacy_consumer(
            bootstrap, ph.layout.server_group(), [ph.layout.updates, ph.layout.control]
        )

    def _next(self, what: str) -> Any:
        since = time.monotonic()
        while True:
            record = legacy_poll(self.consumer, 0.2)
            if record is not None:
                return record
            self.ph.clients.still_waiting(self.ph.name, what, since, self.ph.st.wait_s)

    def _broadcast(self, kind: str, payload: dict[str, Any]) -> bytes:
        value = legacy.message(kind, "server", payload)
        self.producer.send(self.ph.layout.broadcast, value, "server")
        return value

    def register(self) -> float:
        """Wait until every client has registered; the seconds that took."""
        t0 = time.monotonic()
        registered: set[str] = set()
        while len(registered) < len(self.ph.clients.ids):
            message = legacy.parse(self._next("client registrations").value())
            if message["type"] == "client_registration":
                registered.add(message["payload"]["client_id"])
        return time.monotonic() - t0

    def round(self, r: int, base: StateDict) -> dict[str, Any]:
        """Scenario A: broadcast the global weights, take in every client's update."""
        rec = RoundLog(self.ph.name, r, warmup=r < self.ph.st.warmup)
        t0 = time.perf_counter()
        value = legacy.message(
            "global_update",
            "server",
            {
                "round_id": r,
                "weights": legacy.serialize_weights(base),
                "config": {"learning_rate": 0.01},
            },
        )
        encode_s = time.perf_counter() - t0
        self.producer.send(self.ph.layout.broadcast, value, "server")
        rec.broadcast_done(encode_s, len(value))
        rec.broadcast_bytes = len(value)
        while len(rec.updates) < len(self.ph.clients.ids):
            record = self._next(f"client updates of round {r}")
            rec.arrived()
            t0 = time.perf_counter()
            message = legacy.parse(record.value())
            payload = message["payload"]
            if message["type"] == "client_update" and payload["round_id"] == r:
                tensors = legacy.weights_of(message)
                rec.decoded(payload["client_id"], tensors, time.perf_counter() - t0)
                rec.updates_bytes_received += len(record.value())
        return rec.finish(self.ph.expected)

    def big(self) -> dict[str, Any]:
        """Scenario B: ask the first client for the big model; time it until decoded, or
        record why the client could not send it."""
        self._broadcast(
            "training_start",
            {
                "round_id": BIG_ROUND,
                "config": {"big_model": self.ph.st.big},
                "client_ids": [self.ph.clients.ids[0]],
            },
        )
        while True:
            record = self._next("the big model")
            t0 = time.perf_counter()
            value = record.value()
            message = legacy.parse(value)
            if message["type"] in ("client_update", "error"):
                if message["payload"]["round_id"] == BIG_ROUND:
                    break
        payload = message["payload"]
        if message["type"] == "error":
            log(f"{self.ph.name} big model: not sent: {payload['error']}")
            return {"failed": payload["error"]}
        tensors = legacy.weights_of(message)
        decode_s = time.perf_counter() - t0
        start = payload["metrics"]["t_start"]
        return big_result(self.ph.name, start, decode_s, 1, len(value), tensors, self.ph.expected)

    def run(self, base: StateDict) -> dict[str, Any]:
        """Registrations, warm-up and timed rounds, the big model if planned, shutdown."""
        out: dict[str, Any] = {"rounds": [], "big": None}
        try:
            out["clients_ready_s"] = self.register()
            for r in range(self.ph.st.warmup + self.ph.st.rounds):
                out["rounds"].append(self.round(r, base))
            if self.ph.with_big:
                out["big"] = self.big()
            self._broadcast("shutdown", {"reason": "done"})
        finally:
            self.consumer.close()
        return out


def legacy_server(ph: ServerPhase, bootstrap: str, base: StateDict) -> dict[str, Any]:
    """Run one old-path phase of the plan against the clients; the server's measurements."""
    return LegacyServer(ph, bootstrap).run(base)
