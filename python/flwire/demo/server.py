"""The demo's FedAvg server.

Per round r: broadcast GlobalUpdate(r, weights), EvaluationRequest(r - 1)
(clients evaluate the weights they just received) and TrainingStart(r); wait
for client updates; aggregate with FedAvg once every selected client has
reported, or once ``max_wait_time`` has passed with at least ``min_clients``
updates (naming the clients left out); evaluate on the held-out test set.
A round with fewer than ``min_clients`` updates ``round_timeout`` seconds after
it started fails the job. A client that failed (:meth:`FedAvgServer.client_failed`:
its training raised, its process ended) is not waited for: the job fails as soon
as fewer than ``min_clients`` clients are left to answer, every client failed
included. After the last round the final weights are broadcast
and evaluated, then Shutdown ends the job; a job that fails sends Shutdown too,
with the reason, so that no client waits for a round that will not come.

With a trust store (``trust``), every message from the clients is verified
before anything in it is used (wire format section 14.3): its signature over
the received bytes, then its ``sender_id`` and ``client_id`` against the
signing key's id. A message is also refused when its id was seen before (a
replay), and a client update when it is for another round than the current
one. A refused message is logged with its reason, counted in
:attr:`FedAvgServer.refusals` and never recorded; a refused client update is
named in its round's :attr:`RoundResult.refused` (under the client id it
claims), but does not stand for that client's answer: the round still waits
for the client's own update. With ``signing_key`` the server signs what it
broadcasts, so that its clients can refuse what it did not send.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from flwire import messages as m
from flwire._aio import wait_for
from flwire.aggregation import StreamingFedAvg, UpdatePolicy, UpdateRefused, screen
from flwire.aggregation.screening import is_delta
from flwire.compat.models import SimpleCNN
from flwire.compat.utils.metrics import MetricsCollector
from flwire.demo.data import Shard
from flwire.demo.metering import record_weights
from flwire.demo.training import DEFAULT_CONFIG, evaluate
from flwire.exceptions import AggregationException, RefusedMessageError, SerializationException
from flwire.messages import SERVER_ID, value_map_to_dict
from flwire.security import TrustStore, Verifier, sign_in_place
from flwire.transport import Channel, Delivery, TopicLayout, Transport

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

logger = logging.getLogger(__name__)

#: Seconds a failed job gives its Shutdown broadcast before it gives up on it.
SHUTDOWN_SEND_TIMEOUT = 10.0


@dataclass
class RoundResult:
    """What happened in one round."""

    round_id: int
    reporting: list[str]
    left_out: list[str]
    accuracy: float
    loss: float
    wire_bytes: int
    seconds: float
    federated_accuracy: float | None = None
    #: Clients whose update was refused, and why (see flwire.aggregation.screening).
    refused: dict[str, str] = field(default_factory=dict)
    #: Selected clients that failed (ended) before they sent an update, and why.
    failed: dict[str, str] = field(default_factory=dict)


@dataclass
class _State:
    registered: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_heartbeat: dict[str, float] = field(default_factory=dict)
    #: Each accepted update's example count, per round and client.
    updates: dict[int, dict[str, int]] = field(default_factory=dict)
    #: Each round's running FedAvg: an accepted update is folded in as it arrives,
    #: then dropped (server memory stays O(model) whatever the number of clients).
    #: (None once the round is aggregated.)
    folds: dict[int, StreamingFedAvg | None] = field(default_factory=dict)
    #: Each refused update's reason, per round and client.
    refused: dict[int, dict[str, str]] = field(default_factory=dict)
    #: The clients selected for each round (an update of another is refused).
    selected: dict[int, list[str]] = field(default_factory=dict)
    #: Client updates refused before they were read (signature, replay, round), by
    #: the round in progress when they came and the client id they claim.
    unverified: dict[int, dict[str, str]] = field(default_factory=dict)
    evaluations: dict[int, dict[str, m.Message]] = field(default_factory=dict)
    #: Clients that failed (they will send nothing more), and why.
    failed: dict[str, str] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class FedAvgServer:
    """Runs a FedAvg job over any transport."""

    def __init__(
        self,
        transport: Transport,
        layout: TopicLayout,
        test: Shard,
        *,
        num_clients: int,
        rounds: int,
        min_clients: int = 2,
        max_wait_time: float = 300.0,
        round_timeout: float | None = None,
        config: dict[str, Any] | None = None,
        registration_timeout: float = 120.0,
        metrics: MetricsCollector | None = None,
        on_round: Callable[[RoundResult], None] | None = None,
        on_status: Callable[[str], None] | None = None,
        on_progress: Callable[[str], None] | None = None,
        seed: int = 0,
        policy: UpdatePolicy | None = None,
        trust: TrustStore | None = None,
        require_signatures: bool | None = None,
        signing_key: Ed25519PrivateKey | None = None,
        key_id: str = SERVER_ID,
        timestamp_window_s: float | None = 600.0,
    ) -> None:
        self.transport = transport
        self.layout = layout
        self.test = test
        self.num_clients = num_clients
        self.rounds = rounds
        self.min_clients = min_clients
        self.max_wait_time = max_wait_time
        # Past max_wait_time a round aggregates as soon as min_clients updates are in; it
        # fails only when there are still fewer at round_timeout.
        self.round_timeout = 2 * max_wait_time if round_timeout is None else round_timeout
        if self.round_timeout < max_wait_time:
            raise ValueError(
                f"round_timeout ({self.round_timeout:g} s) is shorter than "
                f"max_wait_time ({max_wait_time:g} s)"
            )
        self.config = config or dict(DEFAULT_CONFIG)
        self.registration_timeout = registration_timeout
        self.metrics = metrics or MetricsCollector()
        self.on_round = on_round or (lambda _r: None)
        #: Called often while waiting, with a detailed line (a terminal's status line).
        self.on_status = on_status or (lambda _s: None)
        #: Called while waiting with what the job waits for (clients registered,
        #: updates in); the same text until something changes.
        self.on_progress = on_progress or (lambda _s: None)
        #: What a client update must pass to reach the average.
        self.policy = policy or UpdatePolicy()
        #: Verifies, de-duplicates and round-checks every message from the clients
        #: (with ``trust``, the clients' public keys by client id, their signatures too).
        self.verifier = Verifier(
            trust,
            require_signatures=require_signatures,
            timestamp_window_s=timestamp_window_s,
            current_round=lambda: self.current_round,
            name="server",
        )
        #: The key the server signs its broadcasts with (None: they go unsigned), and its id.
        self.signing_key = signing_key
        self.key_id = key_id
        #: Refused messages, by reason.
        self.refusals: Counter[str] = self.verifier.refusals
        #: The round in progress (0 before the first): a client update for another is refused.
        self.current_round = 0
        self.channel = Channel(transport)
        self.state = _State()
        torch.manual_seed(seed)
        self.model = SimpleCNN()
        self.results: list[RoundResult] = []
        #: Whether the clients were sent Shutdown (when the job ended, or failed).
        self.shutdown_sent = False
        self._listener: asyncio.Task[None] | None = None

    def client_failed(self, client_id: str, reason: str) -> None:
        """Record that a client ended for good (its training raised, its process
        exited): it is no longer waited for, and the job fails as soon as too few
        clients are left to reach ``min_clients``. The first reason given counts."""
        if client_id not in self.state.failed:
            logger.debug("%s failed: %s", client_id, reason)
            self.state.failed[client_id] = reason
            self.state.changed.set()

    def _too_few_left(self, where: str, candidates: int, failed: list[str]) -> None:
        """Raise AggregationException when ``failed`` (of the ``candidates`` clients that
        could still answer) leave fewer than ``min_clients``: waiting is pointless."""
        left = candidates - len(failed)
        if left >= self.min_clients:
            return
        if left <= 0:
            what = f"every client failed ({len(failed)} of {candidates})"
        else:
            what = (
                f"{len(failed)} of {candidates} clients failed, leaving {left}, fewer than "
                f"min_clients={self.min_clients}"
            )
        by_reason: dict[str, list[str]] = {}
        for client in sorted(failed):
            by_reason.setdefault(self.state.failed[client], []).append(client)
        why = "; ".join(f"{', '.join(ids)}: {reason}" for reason, ids in by_reason.items())
        raise AggregationException(f"{where}: {what}: {why}")

    def wire_bytes(self) -> int:
        """Bytes the server sent and received so far."""
        return self.channel.stats["bytes_sent"] + self.channel.stats["bytes_received"]

    async def _broadcast(self, msg: m.Message) -> None:
        if self.signing_key is not None:
            sign_in_place(msg, self.key_id, self.signing_key)
        await self.channel.send_message(self.layout.broadcast, msg)

    async def _listen(self) -> None:
        topics = [self.layout.updates, self.layout.control]
        async for delivery in self.channel.receive(topics, self.layout.server_group()):
            await self.accept_delivery(delivery)
            await delivery.done()

    async def accept(self, payload: Any) -> str | None:
        """Verify, de-duplicate and record one message from a client; return the
        reason it was refused (a key of :attr:`refusals`), or None."""
        return await self._admit(self.verifier.averify(payload), lambda: _claimed(payload))

    async def accept_delivery(self, delivery: Delivery) -> str | None:
        """:meth:`accept` for a delivery of the server's Channel: its payload, or,
        for a streamed transfer (``EncodeOptions(stream=True)``), its message and
        its seal's signature."""
        return await self._admit(
            delivery.verify(self.verifier),
            lambda: delivery.message if delivery.streamed else _claimed(delivery.payload),
        )

    async def _admit(
        self, verified: Awaitable[m.Message], claimed: Callable[[], m.Message | None]
    ) -> str | None:
        """Record the message ``verified`` gives; or, when it is refused, log and
        count that and name the ``claimed`` sender (read only then)."""
        try:
            msg = await verified
        except RefusedMessageError as exc:
            return self._refused(exc, claimed())
        # The verifier checked and marked the id in the same step as this record (no
        # await between), so two concurrent deliveries of one message count once.
        self._record(msg)
        return None

    def _refused(self, exc: RefusedMessageError, claimed: m.Message | None) -> str:
        """Log and count a refusal, and name a refused client update in its round's
        summary, under the client it claims to come from (its weights left unread)."""
        self.verifier.refuse(exc)
        if claimed is not None and claimed.type == "client_update":
            named = self.state.unverified.setdefault(self.current_round, {})
            named[claimed.body.client_id] = f"{exc.reason}: {exc}"
            self.state.changed.set()
        return exc.reason

    def _record(self, msg: m.Message) -> None:
        body = msg.body
        state = self.state
        if msg.type == "client_registration":
            state.registered[body.client_id] = value_map_to_dict(body.attributes)
        elif msg.type == "heartbeat":
            state.last_heartbeat[body.client_id] = time.monotonic()
        elif msg.type == "client_update":
            self._screen(msg)
        elif msg.type == "evaluation_result":
            state.evaluations.setdefault(body.round_id, {})[body.client_id] = msg
        state.changed.set()

    def _screen(self, msg: m.Message) -> None:
        """Check a client update and keep it, decoded, or its refusal."""
        round_id, client = msg.body.round_id, msg.body.client_id
        if client in self.state.updates.get(round_id, {}):
            logger.warning(
                "Ignored a second round %d update of %s: the first one counts", round_id, client
            )
            return
        chosen = self.state.selected.get(round_id)
        if chosen is not None and client not in chosen:
            logger.error(
                "Refused the round %d update of %s: the client is not selected for the round",
                round_id,
                client,
            )
            self.state.refused.setdefault(round_id, {})[client] = "not selected for the round"
            return
        started = time.perf_counter()
        try:
            tensors = screen(msg, self.model.state_dict(), self.policy)
        except UpdateRefused as exc:
            logger.error("Refused the round %d update of %s: %s", round_id, client, exc)
            self.state.refused.setdefault(round_id, {})[client] = str(exc)
            return
        record_weights(self.metrics, "received", msg, tensors, time.perf_counter() - started)
        fold = self._fold(round_id)
        if fold is None:  # the round is over (it was aggregated while this was checked)
            logger.warning("Ignored a round %d update of %s: too late", round_id, client)
            return
        fold.add(client, tensors, msg.body.num_examples, delta=is_delta(msg))
        self.state.refused.get(round_id, {}).pop(client, None)
        self.state.updates.setdefault(round_id, {})[client] = msg.body.num_examples

    def _fold(self, round_id: int) -> StreamingFedAvg | None:
        """The running FedAvg of a round (made on first use, from the current
        model); None once the round has been aggregated."""
        if round_id not in self.state.folds:
            self.state.folds[round_id] = StreamingFedAvg(self.model.state_dict())
        return self.state.folds[round_id]

    async def _wait(self, ready: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not ready():
            if self._listener is not None and self._listener.done():
                self._listener.result()  # re-raise what stopped the listener
                raise AggregationException("the server stopped receiving messages")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.state.changed.clear()
            with contextlib.suppress(TimeoutError):
                await wait_for(self.state.changed.wait(), min(remaining, 0.5))
        return True

    async def run(self) -> list[RoundResult]:
        """Run the whole job; return the per-round results."""
        await self.transport.ensure_topics(self.layout.all)
        listener = self._listener = asyncio.create_task(self._listen())
        try:

            def registered() -> bool:
                count = len(self.state.registered)
                self.on_status(f"waiting for clients: {count}/{self.num_clients} registered")
                self.on_progress(f"clients registered: {count}/{self.num_clients}")
                failed = sorted(self.state.failed)
                self._too_few_left("the job could not start", self.num_clients, failed)
                return len({*self.state.registered, *failed}) >= self.num_clients

            if not await self._wait(registered, self.registration_timeout):
                if len(self.state.registered) < self.min_clients:
                    raise AggregationException(
                        f"only {len(self.state.registered)} of {self.num_clients} clients "
                        f"registered within {self.registration_timeout:.0f} s"
                    )
            for round_id in range(1, self.rounds + 1):
                await self._round(round_id)
            await self._broadcast(m.global_update(self.rounds + 1, self.model.state_dict()))
            await self._broadcast(m.evaluation_request(self.rounds))

            def evaluated() -> bool:
                count = len(self.state.evaluations.get(self.rounds, {}))
                running = [c for c in self.state.registered if c not in self.state.failed]
                self.on_progress(f"final evaluation: {count}/{len(running)} clients reported")
                return count >= len(running)

            await self._wait(evaluated, 30)
            self._attach_federated_accuracy()
            await self._broadcast(m.shutdown(f"finished {self.rounds} rounds"))
            self.shutdown_sent = True
            return self.results
        except Exception as exc:
            await self._stop_clients_after(exc)
            raise
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _stop_clients_after(self, failure: Exception) -> None:
        """Best effort, bounded: tell the clients that the job failed. The failure is
        what the caller needs to see, so a failure to send is only logged."""
        try:
            await wait_for(
                self._broadcast(m.shutdown(f"the job failed: {failure}")), SHUTDOWN_SEND_TIMEOUT
            )
            self.shutdown_sent = True
        except Exception as exc:
            logger.warning("could not send Shutdown to the clients after a failure: %r", exc)

    async def _round(self, round_id: int) -> None:
        self.current_round = round_id
        self._fold(round_id)  # before any await: this round's updates are folded from now on
        start = time.perf_counter()
        bytes_before = self.wire_bytes()
        # A client that failed is not asked again.
        selected = sorted(c for c in self.state.registered if c not in self.state.failed)
        self.state.selected[round_id] = selected
        # No update for this round can be in before its TrainingStart is sent.
        self.on_progress(f"round {round_id}: 0/{len(selected)} updates in")
        encode_start = time.perf_counter()
        state = self.model.state_dict()
        update = m.global_update(round_id, state, self.config)
        record_weights(self.metrics, "sent", update, state, time.perf_counter() - encode_start)
        await self._broadcast(update)
        if round_id > 1:
            await self._broadcast(m.evaluation_request(round_id - 1, client_ids=selected))
        await self._broadcast(m.training_start(round_id, self.config, selected))
        updates = self.state.updates.setdefault(round_id, {})
        refused = self.state.refused.setdefault(round_id, {})
        where = f"round {round_id} could not be aggregated"

        registered = sorted(self.state.registered)

        def failed() -> list[str]:
            """The registered clients that failed (in this round or before) and sent no
            update for it, once checked that enough are left to reach min_clients."""
            gone = [c for c in registered if c in self.state.failed and c not in updates]
            self._too_few_left(where, len(registered), gone)
            return gone

        def progress() -> str:
            return (
                f"round {round_id}/{self.rounds}: {len(updates)}/{len(selected)} updates, "
                f"{self.wire_bytes() / 1e6:.1f} MB on the wire"
            )

        def ready() -> bool:
            self.on_status(progress())
            self.on_progress(
                f"round {round_id}: {len(updates)}/{len(selected)} updates in"
                + (f", {len(refused)} refused" if refused else "")
            )
            # A refused client is not waited for: it has answered, wrongly; nor is one
            # that failed: it will not answer.
            answered = {*updates, *refused, *failed()}
            return all(c in answered for c in selected)

        def enough() -> bool:
            failed()
            return len(updates) >= self.min_clients

        started = time.monotonic()
        if not await self._wait(ready, self.max_wait_time):
            if len(updates) < self.min_clients:
                await self._wait(enough, started + self.round_timeout - time.monotonic())
            if len(updates) < self.min_clients:
                raise AggregationException(
                    f"round {round_id} could not be aggregated: {len(updates)} of "
                    f"{len(selected)} clients sent an update within {self.round_timeout:g} s "
                    f"({', '.join(sorted(updates)) or 'none'}), fewer than "
                    f"min_clients={self.min_clients}"
                )
        if not updates:  # every client answered, and none was accepted
            refusals = {**self.state.unverified.get(round_id, {}), **refused}
            raise AggregationException(
                f"{where}: no update was accepted ("
                + "; ".join(f"{c}: {r}" for c, r in sorted(refusals.items()))
                + ")"
            )
        reporting = sorted(updates)
        gone = {c: self.state.failed[c] for c in failed() if c in selected}
        left_out = [c for c in selected if c not in updates and c not in refused and c not in gone]
        if left_out:
            logger.warning(
                "round %d: aggregating without %s (no update within %.0f s)",
                round_id,
                ", ".join(left_out),
                self.max_wait_time,
            )
        fold, self.state.folds[round_id] = self.state.folds[round_id], None
        assert fold is not None
        self.model.load_state_dict(fold.result())
        accuracy, loss = evaluate(self.model, self.test)
        result = RoundResult(
            round_id,
            reporting,
            left_out,
            accuracy,
            loss,
            self.wire_bytes() - bytes_before,
            time.perf_counter() - start,
            refused={
                c: r
                for c, r in {**self.state.unverified.get(round_id, {}), **refused}.items()
                if c not in updates
            },
            failed=gone,
        )
        self.results.append(result)
        self._attach_federated_accuracy()
        self.on_round(result)

    def _attach_federated_accuracy(self) -> None:
        for result in self.results:
            evals = self.state.evaluations.get(result.round_id)
            if not evals or result.federated_accuracy is not None:
                continue
            total = sum(e.body.num_examples for e in evals.values())
            if total:
                result.federated_accuracy = (
                    sum(
                        e.body.metrics["accuracy"].double_value * e.body.num_examples
                        for e in evals.values()
                    )
                    / total
                )


def _claimed(payload: Any) -> m.Message | None:
    """What a refused message says it is (its weights left unread), to name it; None
    when it is not even a message."""
    try:
        return m.decode_message(payload)
    except SerializationException:
        return None
