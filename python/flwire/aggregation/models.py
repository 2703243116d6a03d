"""The global model of each round, read from the job's broadcast topic: what a
scale-out aggregator needs to screen and fold the round's updates (deltas are
added to it), without the server handing it over by hand.

    models = BroadcastModels({"bootstrap.servers": "127.0.0.1:9092"}, layout)
    models.start()
    Aggregator(config, layout, "agg-1", models).run(stop)
    models.close()

A thread of its own runs a :class:`~flwire.transport.Channel` over a
:class:`~flwire.transport.KafkaTransport` on ``layout.broadcast``, from the
topic's start (a consumer group of its own for each start), and keeps the
``GlobalModelUpdate`` of the ``keep`` latest rounds (whole, split into parts or
streamed; with ``verifier``, only the ones it admits: the server's signature).
``models(round_id)`` waits up to ``wait_s`` for that round's model, since an
aggregator may read a client's update before this thread has read the
broadcast the client trained from; then None (the update is refused, and
counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch

from flwire import messages as m
from flwire.exceptions import CommunicationException, SerializationException
from flwire.security.verifier import Verifier
from flwire.transport.channel import Channel
from flwire.transport.kafka import KafkaTransport
from flwire.transport.layout import TopicLayout

logger = logging.getLogger(__name__)

#: Seconds ``models(round)`` waits for a round's global model by default.
DEFAULT_WAIT_S = 30.0
#: How often the feed thread looks whether it is asked to stop.
_STOP_CHECK_S = 0.2


class BroadcastModels:
    """``models(round_id)``: the round's global model as read from the
    broadcast topic (see the module)."""

    def __init__(
        self,
        config: Mapping[str, Any],
        layout: TopicLayout,
        *,
        verifier: Verifier | None = None,
        wait_s: float = DEFAULT_WAIT_S,
        keep: int = 2,
        name: str = "aggregator",
    ) -> None:
        if "bootstrap.servers" not in config:
            raise ValueError("config needs 'bootstrap.servers'")
        if wait_s < 0 or keep < 1:
            raise ValueError("wait_s must be >= 0 and keep >= 1")
        self.layout = layout
        self.verifier = verifier
        self.wait_s = wait_s
        self.keep = keep
        settings = {k: v for k, v in config.items() if k != "bootstrap.servers"}
        self._bootstrap = str(config["bootstrap.servers"])
        self._settings = settings
        self._group = f"{layout.aggregator_group()}.models.{name}.{uuid.uuid4().hex[:12]}"
        self._models: OrderedDict[int, Mapping[str, torch.Tensor]] = OrderedDict()
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: What ended the feed thread, if it failed.
        self.error: BaseException | None = None

    def start(self) -> None:
        """Start reading the broadcast topic (in a daemon thread)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="flwire-models", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Stop reading; wait up to ``timeout`` seconds for the thread to end."""
        self._stop.set()
        with self._changed:
            self._changed.notify_all()  # a caller waiting for a model: none will come
        if self._thread is not None:
            self._thread.join(timeout)

    def rounds(self) -> list[int]:
        """The rounds whose global model is held, oldest first."""
        with self._changed:
            return list(self._models)

    def put(self, round_id: int, state: Mapping[str, torch.Tensor]) -> None:
        """Hold ``state`` as round ``round_id``'s global model (the feed calls
        this; so may a caller that has the model by other means)."""
        with self._changed:
            self._models[round_id] = state
            self._models.move_to_end(round_id)
            while len(self._models) > self.keep:
                self._models.popitem(last=False)
            self._changed.notify_all()

    def __call__(self, round_id: int) -> Mapping[str, torch.Tensor] | None:
        with self._changed:
            self._changed.wait_for(
                lambda: round_id in self._models or self.error is not None or self._stop.is_set(),
                self.wait_s,
            )
            state = self._models.get(round_id)
        if state is None:
            logger.warning(
                "No global model of round %d read from %s within %.0f s (held: %s)%s",
                round_id,
                self.layout.broadcast,
                self.wait_s,
                self.rounds() or "none",
                f"; the feed failed: {self.error}" if self.error else "",
            )
        return state

    def _run(self) -> None:
        try:
            asyncio.run(self._feed())
        except BaseException as exc:  # reported to callers, and logged
            logger.error("Reading global models from %s failed: %s", self.layout.broadcast, exc)
            with self._changed:
                self.error = exc
                self._changed.notify_all()

    async def _feed(self) -> None:
        transport = KafkaTransport(
            self._bootstrap,
            producer_config=dict(self._settings),
            consumer_config=dict(self._settings),
        )
        await transport.start()
        try:
            reader = asyncio.ensure_future(self._read(Channel(transport)))
            while not self._stop.is_set() and not reader.done():
                await asyncio.wait({reader}, timeout=_STOP_CHECK_S)
            if reader.done():
                reader.result()  # raises what ended it
                raise CommunicationException(
                    f"the broadcast topic {self.layout.broadcast} stopped being read"
                )
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        finally:
            await transport.stop()

    async def _read(self, channel: Channel) -> None:
        topics = [self.layout.broadcast]
        async for delivery in channel.receive(
            topics, self._group, dedupe=False, verifier=self.verifier
        ):
            try:
                msg = delivery.message or m.decode_message(delivery.payload)
            except SerializationException as exc:
                logger.error("Skipped an undecodable message on %s: %s", topics[0], exc)
                msg = None
            if msg is not None and msg.type == "global_update":
                round_id = msg.body.round_id
                try:
                    self.put(round_id, msg.tensors())
                    logger.info("Read the global model of round %d", round_id)
                except SerializationException as exc:
                    logger.error("Skipped round %d's global model: %s", round_id, exc)
            await delivery.done()
