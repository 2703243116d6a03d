"""The demo's FL client: registers, sends heartbeats, trains on its shard when
asked, evaluates the global model, and stops on shutdown.

Run as a process of its own for the Kafka demo::

    python -m flwire.demo.client --bootstrap-servers HOST:PORT --job-id J --client-id client-0

With its own key (``signing_key``, whose id is the client id) a client signs
all it sends; with the server's public key (``server_key``) it refuses every
broadcast message that the server's key did not sign (wire format section
14.3): a forged global update, evaluation request, training start or shutdown
is logged, counted in :attr:`DemoClient.refusals` and never applied. A server
message whose id was handled before is refused too (reason ``replay``).

A round whose training fails (an invalid setting, a model that diverges into an
error) ends the client: :meth:`DemoClient.run` raises a TrainingException that
names the round and the cause, at once, so that whoever runs the client can tell
the server (``FedAvgServer.client_failed``) instead of leaving it waiting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from flwire import messages as m
from flwire.compat.models import SimpleCNN, get_model_hash
from flwire.compat.utils.metrics import MetricsCollector
from flwire.demo.data import Shard, split_non_iid
from flwire.demo.metering import record_weights
from flwire.demo.training import DEFAULT_CONFIG, evaluate, train_local
from flwire.exceptions import RefusedMessageError, TrainingException
from flwire.messages import SERVER_ID, Dispatcher, HandlerError, value_map_to_dict
from flwire.security import TrustStore, Verifier, sign_in_place
from flwire.tensors import EncodeOptions
from flwire.transport import Channel, TopicLayout, Transport
from flwire.v1 import messages_pb2 as pb

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

logger = logging.getLogger(__name__)


class DemoClient:
    """One federated client over any transport."""

    def __init__(
        self,
        client_id: str,
        transport: Transport,
        layout: TopicLayout,
        train: Shard,
        test: Shard,
        *,
        seed: int = 0,
        delay: float = 0.0,
        stream: bool = False,
        heartbeat_interval: float = 1.0,
        metrics: MetricsCollector | None = None,
        signing_key: Ed25519PrivateKey | None = None,
        server_key: Ed25519PublicKey | None = None,
        server_id: str = SERVER_ID,
    ) -> None:
        self.client_id = client_id
        #: Signs what this client sends (its key id is the client id); None: unsigned.
        self.signing_key = signing_key
        #: Verifies server messages against the server's key (None accepts unsigned
        #: ones, as before) and refuses one whose id was handled before.
        self.verifier = Verifier(
            None if server_key is None else TrustStore({server_id: server_key}),
            name=client_id,
        )
        #: Refused server messages, by reason.
        self.refusals: Counter[str] = self.verifier.refusals
        self.transport = transport
        self.layout = layout
        self.train_shard = train
        self.test_shard = test
        self.seed = seed
        self.delay = delay
        #: Send updates as streamed transfers (EncodeOptions(stream=True)).
        self.stream = stream
        self.heartbeat_interval = heartbeat_interval
        self.metrics = metrics or MetricsCollector()
        self.channel = Channel(transport)
        self.model = SimpleCNN()  # the latest global weights
        self.status = "idle"
        self._training: asyncio.Task[None] | None = None
        self.stopped = asyncio.Event()
        #: What ended the client before Shutdown (a failed training), or None.
        self.failure: BaseException | None = None
        self._run_task: asyncio.Task[Any] | None = None
        # The verifier de-duplicates by message id, a concurrent delivery included.
        self.handler = Dispatcher(verifier=self.verifier)
        self.handler.route(pb.GlobalUpdate, self._on_global_update)
        self.handler.route(pb.TrainingStart, self._on_training_start)
        self.handler.route(pb.EvaluationRequest, self._on_evaluation_request)
        self.handler.route(pb.Shutdown, self._on_shutdown)

    async def _send(self, topic: str, msg: m.Message) -> None:
        if self.signing_key is not None:
            sign_in_place(msg, self.client_id, self.signing_key)
        await self.channel.send_message(topic, msg)

    async def accept(self, payload: Any) -> str | None:
        """Verify, de-duplicate and handle one server message; return the reason it
        was refused (a key of :attr:`refusals`), or None. Raises HandlerError when
        a handler failed (the message may then be delivered again)."""
        try:
            msg = await self.handler.admit(payload)
        except RefusedMessageError as exc:
            self.verifier.refuse(exc)
            return exc.reason
        await self.handler.handle(msg)
        return None

    async def run(self) -> None:
        """Register, then follow the server's broadcast until shutdown. Raises the
        TrainingException of a round whose training failed, as soon as it failed."""
        self._run_task = asyncio.current_task()
        try:
            await self._follow()
        except asyncio.CancelledError:
            # A failed training cancels this task (see _training_ended): its error is
            # what ended the client (also when it was told to stop at the same time).
            if self.failure is None:
                raise
        if self.failure is not None:
            raise self.failure

    async def _follow(self) -> None:
        info = self.model.get_model_info()
        info["architecture_hash"] = get_model_hash(self.model)
        info["parameter_count"] = info.pop("parameters")
        await self._send(
            self.layout.control,
            m.client_registration(
                self.client_id,
                max_message_bytes=self.transport.max_record_bytes,
                model_info=info,
                attributes={"train_examples": len(self.train_shard)},
            ),
        )
        beats = asyncio.create_task(self._heartbeats())
        try:
            # Closed on the way out (aclosing): the ids of the deliveries just done are
            # written and their offsets committed before the transport stops.
            async with contextlib.aclosing(
                self.channel.receive(
                    [self.layout.broadcast], self.layout.client_group(self.client_id)
                )
            ) as deliveries:
                async for delivery in deliveries:
                    try:
                        await self.accept(delivery.payload)
                    except HandlerError as exc:
                        await delivery.fail(exc)  # retried, then dead-lettered
                        continue
                    await delivery.done()
                    if self.stopped.is_set():
                        break
        finally:
            for task in (beats, self._training):
                # A training that ended by itself is not awaited: its error, if any, is
                # self.failure, raised by run.
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def _heartbeats(self) -> None:
        while not self.stopped.is_set():
            await self._send(
                self.layout.control,
                m.heartbeat(self.client_id, self.status, {"examples": len(self.train_shard)}),
            )
            await asyncio.sleep(self.heartbeat_interval)

    def _selected(self, body: Any) -> bool:
        return not body.client_ids or self.client_id in body.client_ids

    async def _on_global_update(self, msg: m.Message) -> None:
        start = time.perf_counter()
        state = msg.tensors()
        record_weights(self.metrics, "received", msg, state, time.perf_counter() - start)
        self.model.load_state_dict(state)

    async def _on_training_start(self, msg: m.Message) -> None:
        if not self._selected(msg.body):
            return
        if self._training is not None and not self._training.done():
            logger.warning(
                "%s: round %d starts before the last one finished; dropping that",
                self.client_id,
                msg.body.round_id,
            )
            self._training.cancel()
        # Train in the background so heartbeats, evaluation requests and shutdown
        # are still handled while the round runs.
        self._training = asyncio.create_task(self._train(msg.body))
        self._training.add_done_callback(self._training_ended)

    def _training_ended(self, task: asyncio.Task[None]) -> None:
        """A training that raised ends the client: its error is kept and :meth:`run`,
        cancelled, raises it."""
        if task.cancelled() or (exc := task.exception()) is None or self.failure is not None:
            return
        logger.debug("%s: training failed", self.client_id, exc_info=exc)
        self.failure = exc
        self.status = "failed"
        if self._run_task is not None and not self._run_task.done():
            self._run_task.cancel()

    async def _train(self, body: Any) -> None:
        config = value_map_to_dict(body.config)
        epochs = int(config.get("local_epochs", DEFAULT_CONFIG["local_epochs"]))
        lr = float(config.get("learning_rate", DEFAULT_CONFIG["learning_rate"]))
        self.status = "training"
        # A copy, not SimpleCNN() + load_state_dict: initialising a model draws from torch's
        # global generator, here on the event loop, while another client's training thread
        # may be drawing its dropout masks from it (see training._TRAINING).
        local = copy.deepcopy(self.model)
        stop = threading.Event()
        try:
            loss = await asyncio.to_thread(
                train_local,
                local,
                self.train_shard,
                epochs=epochs,
                lr=lr,
                batch_size=32,
                seed=self.seed * 1000 + body.round_id,
                stop=stop,
            )
        except Exception as exc:
            raise TrainingException(
                f"training for round {body.round_id} failed: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            # Cancelling this task does not stop the thread: tell it to stop at its next
            # batch, so a client that shuts down leaves no training running behind it.
            stop.set()
        if self.delay:
            await asyncio.sleep(self.delay)  # a straggler: slow device or network
        start = time.perf_counter()
        state = local.state_dict()
        update = m.client_update(
            self.client_id,
            body.round_id,
            state,
            {"loss": loss, "local_epochs": epochs},
            num_examples=len(self.train_shard),
            options=EncodeOptions(stream=True) if self.stream else None,
        )
        record_weights(self.metrics, "sent", update, state, time.perf_counter() - start)
        self.status = "idle"
        await self._send(self.layout.updates, update)

    async def _on_evaluation_request(self, msg: m.Message) -> None:
        if not self._selected(msg.body):
            return
        if msg.has_weights:
            self.model.load_state_dict(msg.tensors())
        self.status = "evaluating"
        accuracy, loss = await asyncio.to_thread(evaluate, self.model, self.test_shard)
        self.status = "idle"
        await self._send(
            self.layout.updates,
            m.evaluation_result(
                self.client_id,
                msg.body.round_id,
                {"accuracy": accuracy, "loss": loss},
                num_examples=len(self.test_shard),
            ),
        )

    async def _on_shutdown(self, msg: m.Message) -> None:
        logger.info("%s: shutdown (%s)", self.client_id, msg.body.reason)
        self.status = "stopping"
        self.stopped.set()


def main(argv: list[str] | None = None) -> int:
    """Entry point of a client process in the Kafka demo."""
    from flwire.transport.kafka import KafkaTransport

    parser = argparse.ArgumentParser(description="one client of `flwire demo` over Kafka")
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--index", type=int, required=True, help="this client's shard")
    parser.add_argument("--num-clients", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument(
        "--key-dir",
        type=Path,
        help="sign with KEY_DIR/<client-id>.key and trust KEY_DIR/server.pub only",
    )
    parser.add_argument("--stream", action="store_true", help="stream the updates")
    parser.add_argument(
        "--parent-pid", type=int, default=0, help="stop once this process (the demo) is gone"
    )
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    train, test, _ = split_non_iid(args.num_clients, seed=args.seed)
    transport = KafkaTransport(args.bootstrap_servers)
    keys: dict[str, Any] = {}
    if args.key_dir is not None:
        from flwire.security import load_private_key, load_public_key

        keys["signing_key"] = load_private_key(args.key_dir / f"{args.client_id}.key")
        keys["server_key"] = load_public_key(args.key_dir / f"{SERVER_ID}.pub")

    async def run() -> None:
        main_task = asyncio.current_task()
        assert main_task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # told to stop: end quietly
            loop.add_signal_handler(sig, main_task.cancel)
        watch = asyncio.create_task(_stop_without_parent(args.parent_pid, main_task))
        await transport.start()
        try:
            client = DemoClient(
                args.client_id,
                transport,
                TopicLayout(args.job_id),
                train[args.index],
                test[args.index],
                seed=args.seed + args.index,
                delay=args.delay,
                stream=args.stream,
                **keys,
            )
            await client.run()
        finally:
            watch.cancel()
            await transport.stop()

    try:
        asyncio.run(run())
    except asyncio.CancelledError:
        logger.info("%s: stopped", args.client_id)
    except TrainingException as exc:
        # One line (the demo names the client that ended); the traceback at DEBUG.
        logger.debug("%s failed", args.client_id, exc_info=exc)
        print(f"{args.client_id}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


#: Seconds between two checks that the demo that started a client still runs.
PARENT_CHECK_INTERVAL = 1.0


async def _stop_without_parent(parent_pid: int, task: asyncio.Task[None]) -> None:
    """Cancel ``task`` once the process ``parent_pid`` is no longer this one's parent
    (it died, even by SIGKILL, and this process was handed to init): a client of a
    demo that is gone leaves no orphan behind."""
    if not parent_pid:
        return
    while os.getppid() == parent_pid:
        await asyncio.sleep(PARENT_CHECK_INTERVAL)
    logger.warning("the demo (pid %d) is gone: stopping", parent_pid)
    task.cancel()


if __name__ == "__main__":
    raise SystemExit(main())
