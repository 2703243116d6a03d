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
A global model is taken only from the server: its ``sender_id`` (with a
verifier: its signing key's id) must be one of ``server_ids`` (default
``flwire.messages.SERVER_ID``, ``"server"``, the id flwire's server sends and
signs as); any other, a client's trusted key included, is refused, logged and
counted (``stats["not_from_server"]``, and ``verifier.refusals`` as
``sender_not_allowed``).

``models(round_id)`` returns a held round's model at once. Otherwise it may
wait up to ``wait_s`` for it, since an aggregator may read a client's update
before this thread has read the broadcast the client trained from; then None
(the update is refused, and counted). An update cannot make the aggregator's
only thread wait long for a round that will not come (each wait costs the
poll loop ``wait_s``; ten of them pass Kafka's ``max.poll.interval.ms``):

- a round older than the oldest held is refused at once (the topic is read
  in order: it will not be read now);
- a round whose wait ran out is refused at once until another global model
  is read (its later records do not wait again);
- the next round (newest held + 1) gets its wait; any other round not held
  (further ahead, or any round while none is held) only while no such wait
  has run out since the last global model was read. Those are not refused
  outright: after a restart the feed catches up from the topic's start while
  the updates of the current round are read already.

So whatever the updates say, between two global models read the thread waits
at most ``wait_s`` for the next round and ``wait_s`` for all other rounds
together (a client's update for round 10**6 costs one wait, the next ones
nothing), far below ``max.poll.interval.ms``.

Refusals at once are logged and counted in ``stats`` (``"refused_at_once"``);
``stats["waited"]`` and ``stats["timed_out"]`` count the waits.

``models.selected(round_id)`` names the clients the server's ``TrainingStart``
of the round selected (None when it named none, or was not read): the
aggregator refuses an update of any other client (``Aggregator(selected=)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections import Counter, OrderedDict
from collections.abc import Collection, Mapping
from typing import Any

import torch

from flwire import messages as m
from flwire.exceptions import CommunicationException, SerializationException
from flwire.security.verifier import SenderNotAllowedError, Verifier
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
    broadcast topic (see the module). ``server_ids``: the sender ids global
    models (and TrainingStarts) are taken from (None: any sender, for a feed
    whose topic only the server can write). ``wait_s``: how long a call may
    wait for a round's model (see the module for when it does). ``keep``: how
    many of the latest rounds' models are held (older rounds are refused at
    once). ``verifier``: checks the global models' signatures."""

    def __init__(
        self,
        config: Mapping[str, Any],
        layout: TopicLayout,
        *,
        verifier: Verifier | None = None,
        server_ids: Collection[str] | None = (m.SERVER_ID,),
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
        self.server_ids = _server_ids(server_ids)
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
        #: The clients each recent round's TrainingStart selected (from the server).
        self._selected: OrderedDict[int, frozenset[str]] = OrderedDict()
        #: Rounds not held whose wait ran out: not waited for again.
        self._missed: set[int] = set()
        #: A wait for a round other than the next one ran out, and no global
        #: model was read since: such rounds are not waited for.
        self._spent = False
        #: Waits, refusals at once and global models not from the server.
        self.stats: Counter[str] = Counter()
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

    def selected(self, round_id: int) -> frozenset[str] | None:
        """The clients selected for round ``round_id`` by the server's
        ``TrainingStart`` as read from the broadcast topic; None when no client
        is known to be left out: the TrainingStart named none (every client), or
        has not been read (yet). None is not checked: every client's update is
        taken."""
        with self._changed:
            return self._selected.get(round_id)

    def put(self, round_id: int, state: Mapping[str, torch.Tensor]) -> None:
        """Hold ``state`` as round ``round_id``'s global model (the feed calls
        this; so may a caller that has the model by other means)."""
        with self._changed:
            self._models[round_id] = state
            self._models.move_to_end(round_id)
            while len(self._models) > self.keep:
                self._models.popitem(last=False)
            # The feed moved on: a round missed so far may come now.
            self._missed.clear()
            self._spent = False
            self._changed.notify_all()

    def __call__(self, round_id: int) -> Mapping[str, torch.Tensor] | None:
        """Round ``round_id``'s global model (tensors by name), waiting for it as
        the module says; None when it is not read in time, or is refused at once
        (logged and counted in :attr:`stats`)."""
        with self._changed:
            state = self._models.get(round_id)
            if state is not None:
                return state
            refusal = self._refusal(round_id)
            if refusal is None:
                state = self._wait(round_id)
        if refusal is not None:
            self.stats["refused_at_once"] += 1
            logger.warning(
                "No global model of round %d: refused at once, without waiting: %s (held: %s)",
                round_id,
                refusal,
                self.rounds() or "none",
            )
        elif state is None:
            logger.warning(
                "No global model of round %d read from %s within %.0f s (held: %s)%s",
                round_id,
                self.layout.broadcast,
                self.wait_s,
                self.rounds() or "none",
                f"; the feed failed: {self.error}" if self.error else "",
            )
        return state

    def _refusal(self, round_id: int) -> str | None:
        """Why round ``round_id`` (not held) is not waited for, or None: it may
        be. Called with the lock held."""
        if self._models and round_id < min(self._models):
            return (
                f"older than the oldest round held ({min(self._models)}, keep={self.keep}): "
                "the broadcast topic is read in order, so it will not be read now"
            )
        if round_id in self._missed:
            return (
                f"it was waited for {self.wait_s:g} s (wait_s) once already, and its "
                f"global model was not read from {self.layout.broadcast}"
            )
        if self._models and round_id == max(self._models) + 1:
            return None  # the next round: one wait
        if self._spent:
            return (
                "not the next round, and a wait for such a round ran out with no global "
                f"model read from {self.layout.broadcast} since: the server has not "
                "broadcast it (an update for a round that does not exist, or a "
                "broadcast topic that is not read: check the feed)"
            )
        return None

    def _wait(self, round_id: int) -> Mapping[str, torch.Tensor] | None:
        """Wait up to ``wait_s`` for round ``round_id``'s model; remember a wait
        that ran out. Called with the lock held."""
        next_round = bool(self._models) and round_id == max(self._models) + 1
        self.stats["waited"] += 1
        self._changed.wait_for(
            lambda: round_id in self._models or self.error is not None or self._stop.is_set(),
            self.wait_s,
        )
        state = self._models.get(round_id)
        if state is None and self.error is None and not self._stop.is_set():
            self.stats["timed_out"] += 1
            self._missed.add(round_id)
            if not next_round:
                self._spent = True
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
            if msg is not None and msg.type == "training_start" and self._from_server(msg):
                self._select(msg.body.round_id, msg.body.client_ids)
            if msg is not None and msg.type == "global_update" and self._from_server(msg):
                round_id = msg.body.round_id
                try:
                    self.put(round_id, msg.tensors())
                    logger.info("Read the global model of round %d", round_id)
                except SerializationException as exc:
                    logger.error("Skipped round %d's global model: %s", round_id, exc)
            await delivery.done()

    def _select(self, round_id: int, client_ids: Collection[str]) -> None:
        """Hold the clients a round's TrainingStart selected (none: every client)."""
        with self._changed:
            if client_ids:
                self._selected[round_id] = frozenset(client_ids)
                self._selected.move_to_end(round_id)
            else:
                self._selected.pop(round_id, None)
            while len(self._selected) > self.keep + 2:
                self._selected.popitem(last=False)

    def _from_server(self, msg: m.Message) -> bool:
        """Whether a global model (or a TrainingStart) comes from one of
        ``server_ids``; a refusal is logged and counted (in the verifier's
        refusals too, with one)."""
        if self.server_ids is None or msg.sender_id in self.server_ids:
            return True
        self.stats["not_from_server"] += 1
        use = "round's global model" if msg.type == "global_update" else "round's selection"
        refusal = SenderNotAllowedError(
            f"a {msg.type} of round {msg.body.round_id} from {msg.sender_id!r}, not from "
            f"the server ({', '.join(map(repr, sorted(self.server_ids)))}): not used as the "
            f"{use}; if that is the server's id, add it to server_ids "
            "(flwire aggregator --server-id)"
        )
        if self.verifier is not None:
            self.verifier.refuse(refusal)
        else:
            logger.warning("Refused a message on %s: %s", self.layout.broadcast, refusal)
        return False


def _server_ids(server_ids: Collection[str] | None) -> frozenset[str] | None:
    """``server_ids`` checked (a ValueError naming what to pass) and frozen."""
    if server_ids is None:
        return None
    if isinstance(server_ids, str):
        server_ids = [server_ids]  # one id, not its characters
    ids = frozenset(server_ids)
    if not ids or not all(isinstance(i, str) and i for i in ids):
        raise ValueError(
            "server_ids must name at least one sender id (non-empty strings; "
            f"flwire's server sends as {m.SERVER_ID!r}), or be None to take any"
        )
    return ids
