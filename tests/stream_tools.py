"""What the streamed-transfer tests share (importable as ``stream_tools``:
tests/ is on the path as the rootdir of its conftest.py): streamed messages,
an in-memory sender and receiver, a receive loop that runs until a condition
holds, a fake clock, bit-exact comparisons, and a record log to replay with
parts changed."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
from helpers import INFO_BY_TORCH, tensor_bytes, tensor_from_bytes

from flwire.messages import Message, client_update
from flwire.security import Verifier
from flwire.tensors import EncodeOptions
from flwire.tensors.lossy import LossyConfig
from flwire.transport import (
    Channel,
    ChannelEvent,
    Delivery,
    Headers,
    InMemoryBroker,
    InMemoryTransport,
    TransferDropped,
)
from flwire.transport.streaming import STREAM_HEADER, StreamAssembler, StreamWriter

T = TypeVar("T")

TOPIC = "t"
#: A record limit that cuts the test tensors into many chunks.
SMALL_LIMIT = 4096
#: How long any one scenario may take before it fails.
SCENARIO_TIMEOUT = 30.0
#: Headers of the end marker ``drain`` sends after the records under test.
SENTINEL_HEADER = "test-sentinel"


def run(coro: Coroutine[Any, Any, T], timeout: float = SCENARIO_TIMEOUT) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def started(broker: InMemoryBroker, limit: int = SMALL_LIMIT) -> InMemoryTransport:
    transport = InMemoryTransport(broker, max_record_bytes=limit)
    await transport.start()
    return transport


def streamed(
    weights: Mapping[str, Any],
    *,
    sender: str = "client-1",
    round_id: int = 1,
    compression: str = "none",
    shuffle: bool = False,
    lossy: LossyConfig | None = None,
) -> Message:
    """A client update whose weights go as a streamed transfer."""
    options = EncodeOptions(stream=True, compression=compression, shuffle=shuffle, lossy=lossy)
    return client_update(sender, round_id, weights, num_examples=7, options=options)


def random_tensor(
    dtype: torch.dtype, shape: tuple[int, ...], seed: int = 0, *, compressible: bool = False
) -> torch.Tensor:
    """A tensor of ``dtype`` holding arbitrary bits (NaN payloads included); bool
    as 0/1. ``compressible``: a few distinct bytes repeated."""
    info = INFO_BY_TORCH[dtype]
    size = int(np.prod(shape, dtype=np.int64)) * info.itemsize
    rng = random.Random(seed)
    if compressible:
        raw = bytes(rng.choice(b"\x00\x01\x3f") for _ in range(size))
    else:
        raw = rng.randbytes(size)
    if dtype == torch.bool:
        raw = bytes(b & 1 for b in raw)
    return tensor_from_bytes(raw, dtype, shape)


def same_bits(got: Any, want: Any) -> bool:
    """Whether a decoded tensor (torch or numpy) has ``want``'s dtype name, shape
    and bytes (``want``: a torch tensor or numpy array)."""
    if isinstance(want, torch.Tensor):
        want_dtype, want_bytes = str(want.dtype).removeprefix("torch."), tensor_bytes(want)
    else:
        want_dtype, want_bytes = want.dtype.name, np.ascontiguousarray(want).tobytes()
    if isinstance(got, torch.Tensor):
        got_dtype, got_bytes = str(got.dtype).removeprefix("torch."), tensor_bytes(got)
    else:
        got_dtype, got_bytes = got.dtype.name, np.ascontiguousarray(got).tobytes()
    return (
        got_dtype == want_dtype
        and tuple(got.shape) == tuple(want.shape)
        and got_bytes == want_bytes
    )


def assert_same_weights(got: Mapping[str, Any], want: Mapping[str, Any]) -> None:
    """Same names in the same order, each tensor bit-exact."""
    assert list(got) == list(want)
    for name, expected in want.items():
        assert same_bits(got[name], expected), name


class FakeClock:
    """A clock for StreamAssembler(clock=...): moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def stream_values(msg: Message, max_value_bytes: int = SMALL_LIMIT) -> list[bytes]:
    """The record values of ``msg`` as a streamed transfer (head, chunks, seal)."""
    return [bytes(v) async for v in StreamWriter(msg, max_value_bytes, threads=1).parts()]


async def assembled(values: Sequence[bytes]) -> Message:
    """The message a StreamAssembler makes of a stream's record values, given in
    order; fails if any record is refused or the stream does not finish."""
    asm = StreamAssembler(threads=1)
    finished = None
    for token, value in enumerate(values):
        done, failed = await asm.add(value, token)
        assert failed == []
        finished = done or finished
    assert finished is not None
    return finished.message


@dataclass
class Received:
    """What a receive loop handed out and reported."""

    deliveries: list[Delivery] = field(default_factory=list)
    events: list[ChannelEvent] = field(default_factory=list)

    @property
    def messages(self) -> list[Delivery]:
        """Deliveries other than ``drain``'s end markers."""
        return [d for d in self.deliveries if not is_marker(d)]

    @property
    def dropped(self) -> list[TransferDropped]:
        return [e for e in self.events if isinstance(e, TransferDropped)]


def receiver(
    broker: InMemoryBroker, received: Received | None = None, **channel_args: Any
) -> tuple[Channel, Received]:
    """A receiving Channel on ``broker`` whose events go to ``received``."""
    got = received if received is not None else Received()
    transport = InMemoryTransport(broker)
    channel = Channel(transport, on_event=got.events.append, **channel_args)
    return channel, got


def is_marker(delivery: Delivery) -> bool:
    return delivery.header(SENTINEL_HEADER) is not None


async def consume(
    channel: Channel,
    received: Received,
    until: Callable[[], bool],
    *,
    topics: Sequence[str] = (TOPIC,),
    group: str = "g",
    dedupe: bool = False,
    verifier: Verifier | None = None,
    ack: Callable[[Delivery], bool] = lambda d: True,
    on_delivery: Callable[[Delivery], Awaitable[None]] | None = None,
    timeout: float = 10.0,
) -> Received:
    """Run ``channel.receive`` (``done()`` on the deliveries ``ack`` selects, then
    ``on_delivery``) until ``until()`` holds, then close it (as a crash would:
    nothing else is settled)."""
    await channel.transport.start()

    async def loop() -> None:
        async with contextlib.aclosing(
            channel.receive(list(topics), group, dedupe=dedupe, verifier=verifier)
        ) as deliveries:
            async for delivery in deliveries:
                received.deliveries.append(delivery)
                if ack(delivery):
                    await delivery.done()
                if on_delivery is not None:
                    await on_delivery(delivery)
                if until():
                    return

    task = asyncio.ensure_future(loop())
    try:

        async def wait() -> None:
            while not until() and not task.done():
                await asyncio.sleep(0.002)

        await asyncio.wait_for(wait(), timeout)
        if task.done():
            task.result()  # the receive loop's own error, if any
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return received


async def drain(
    channel: Channel,
    received: Received,
    broker: InMemoryBroker,
    *,
    topic: str = TOPIC,
    expire_with: FakeClock | None = None,
    marker: Callable[[], bytes] = lambda: b"end",
    **consume_args: Any,
) -> Received:
    """Append an end marker (a plain record whose value is ``marker()``: a
    receiver with a verifier needs a message it admits) to ``topic`` and
    receive until it is handed out: by then every record before it has been
    handled. With ``expire_with`` (the receiver's stream clock), the clock then
    moves past the part timeout and a second marker follows, so that streams
    still waiting for parts are given up on (and reported) before this returns."""
    sender = await started(broker)
    first, last = uuid.uuid4().hex.encode(), uuid.uuid4().hex.encode()
    await sender.send(topic, marker(), headers=[(SENTINEL_HEADER, first)])
    if expire_with is None:
        last = first

    def arrived(marker: bytes) -> bool:
        return any(d.header(SENTINEL_HEADER) == marker for d in received.deliveries)

    async def after(delivery: Delivery) -> None:
        if expire_with is not None and delivery.header(SENTINEL_HEADER) == first:
            expire_with.advance(channel.streams.part_timeout + 1)
            await sender.send(topic, marker(), headers=[(SENTINEL_HEADER, last)])

    return await consume(
        channel,
        received,
        lambda: arrived(last),
        topics=(topic,),
        on_delivery=after,
        **consume_args,
    )


@dataclass(frozen=True)
class Logged:
    """A record as written: key, value and headers (to write again, changed)."""

    key: bytes | None
    value: bytes
    headers: Headers


def logged(broker: InMemoryBroker, topic: str = TOPIC) -> list[Logged]:
    return [Logged(r.key, bytes(r.value), list(r.headers)) for r in broker.topics.get(topic, [])]


async def replay(broker: InMemoryBroker, records: Sequence[Logged], topic: str = TOPIC) -> None:
    """Write ``records`` to ``topic`` as they are."""
    transport = await started(broker, limit=1 << 30)
    for rec in records:
        await transport.send(topic, rec.value, key=rec.key, headers=rec.headers)


def stream_index(rec: Logged) -> int:
    """The ``flwire-stream`` header of a record, as an int."""
    value = dict(rec.headers)[STREAM_HEADER]
    return int(value)
