"""`flwire demo`: a FedAvg run with N clients, on the in-memory transport or on Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from flwire import _optional
from flwire.aggregation.screening import UpdatePolicy
from flwire.compat.utils.metrics import MetricsCollector
from flwire.demo.client import DemoClient
from flwire.demo.data import split_non_iid
from flwire.demo.secure import SecureJob
from flwire.demo.secure import prepare as prepare_secure_job
from flwire.demo.server import FedAvgServer, RoundResult
from flwire.demo.training import DEFAULT_CONFIG
from flwire.exceptions import CommunicationException, FLException, TrainingException
from flwire.messages import SERVER_ID
from flwire.security import (
    TrustStore,
    generate_private_key,
    load_private_key,
    load_public_key,
    write_key_pair,
)
from flwire.transport import InMemoryBroker, InMemoryTransport, TopicLayout, Transport

logger = logging.getLogger(__name__)

# The old path wrapped base64 text in a JSON envelope; its fixed keys and values
# (type, payload keys, sender, timestamp, datetime, version) take about this much.
_LEGACY_JSON_OVERHEAD = 250

#: Seconds the clients get to end after the server's Shutdown (they finish the message
#: at hand: an evaluation, or the batch their training is on) before they are stopped.
CLIENT_STOP_TIMEOUT = 60.0
#: Seconds a client that was told to stop (cancelled, or sent SIGTERM) gets to end.
CLIENT_KILL_TIMEOUT = 10.0


@dataclass
class DemoOptions:
    clients: int = 4
    rounds: int = 5
    local_epochs: int = int(DEFAULT_CONFIG["local_epochs"])
    learning_rate: float = float(DEFAULT_CONFIG["learning_rate"])
    min_clients: int = 2
    max_wait_time: float = 300.0
    round_timeout: float | None = None  # None: twice max_wait_time
    stragglers: int = 0
    straggler_delay: float = 0.0
    bootstrap_servers: str | None = None
    report_dir: Path | None = None
    seed: int = 0
    #: Updates farther than this (L2, over all parameters) from the global model are
    #: refused: the demo's honest updates measured 0.6-1.8 (4 clients, 5 rounds).
    max_update_distance: float | None = 10.0
    #: The most training examples one update may claim.
    max_num_examples: int = 100_000
    #: Sign every message: a server key and one key per client are generated for the
    #: run (in a temporary folder, mode 0700, removed at the end); the server refuses
    #: what its clients' keys did not sign, the clients what the server's did not.
    sign: bool = False
    #: Run over the secured broker of ``kafka/broker.sh up --secure`` (SASL_SSL, SCRAM,
    #: ACLs per job; see flwire.demo.secure), with signed messages.
    secure: bool = False
    #: Clients send their updates as streamed transfers (``EncodeOptions(stream=True)``).
    stream: bool = False
    #: The folder of kafka/broker.sh (its ``secure/`` holds the CA and the passwords);
    #: None: $FLWIRE_KAFKA_HOME, else ~/.cache/flwire/kafka.
    kafka_home: Path | None = None


def legacy_path_bytes(state: dict[str, torch.Tensor]) -> int:
    """Estimated size of the old JSON message for a state dict: gzip level 9 of
    the tensor bytes (pickle adds little on top), base64 (x 4/3), JSON framing."""
    raw = b"".join(
        t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        for t in state.values()
    )
    return 4 * math.ceil(len(gzip.compress(raw, 9)) / 3) + _LEGACY_JSON_OVERHEAD


#: Seconds between two progress lines when the output is not a terminal.
PROGRESS_INTERVAL = 1.0


class _Console:
    """Progress on one line when writing to a terminal, plain lines otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.live = out.isatty()
        self._last_status = 0.0
        self._last_progress = ""
        self._last_progress_at = -PROGRESS_INTERVAL

    def progress(self, text: str) -> None:
        """What the job waits for, as a plain line when it changed. The first line of
        a new stage (the text before its colon: "clients registered", "round 2") shows
        at once; changes within a stage at most once per PROGRESS_INTERVAL (the server
        repeats the text while waiting, so the latest shows). A terminal has the status
        line instead."""
        now = time.monotonic()
        if self.live or text == self._last_progress:
            return
        new_stage = text.partition(":")[0] != self._last_progress.partition(":")[0]
        if new_stage or now - self._last_progress_at >= PROGRESS_INTERVAL:
            self._last_progress, self._last_progress_at = text, now
            self.line(f"  ... {text}")

    def status(self, text: str) -> None:
        if self.live and time.monotonic() - self._last_status > 0.2:
            self._last_status = time.monotonic()
            self.out.write(f"\r  {text:<78}")
            self.out.flush()

    def end_status(self) -> None:
        if self.live:
            self.out.write("\r" + " " * 80 + "\r")
            self.out.flush()

    def line(self, text: str = "") -> None:
        self.end_status()
        self.out.write(text + "\n")
        self.out.flush()


def _round_row(r: RoundResult, legacy_bytes: int | None) -> str:
    legacy = f"{legacy_bytes / 1e6:>9.1f}" if legacy_bytes else f"{'':>9}"
    fed = f"{r.federated_accuracy:>10.1%}" if r.federated_accuracy is not None else f"{'-':>10}"
    # A client left out may also be named in refused (an update forged in its name).
    selected = len({*r.reporting, *r.left_out, *r.refused, *r.failed})
    return (
        f"{r.round_id:>5}  {len(r.reporting):>3}/{selected:<3}"
        f"{r.accuracy:>9.1%}{fed}{r.wire_bytes / 1e6:>10.1f}{legacy}{r.seconds:>8.1f}"
    )


HEADER = (
    f"{'round':>5}  {'clients':<7}{'accuracy':>9}{'fed.eval':>10}{'wire MB':>10}"
    f"{'old MB*':>9}{'secs':>8}"
)


@dataclass
class _Keys:
    """The keys of a signed run: where they are, and what the server needs."""

    folder: Path
    server: Any  # Ed25519PrivateKey
    trust: TrustStore

    def client(self, client_id: str) -> dict[str, Any]:
        """What a client is given: its own key and the server's public key."""
        return {
            "signing_key": load_private_key(self.folder / f"{client_id}.key"),
            "server_key": load_public_key(self.folder / f"{SERVER_ID}.pub"),
        }


def _make_keys(folder: Path, clients: int) -> _Keys:
    """A server key and one key per client (``client-<i>``) in ``folder``; the server's
    trust store holds the clients' public keys only."""
    server = generate_private_key()
    write_key_pair(SERVER_ID, server, folder)
    public = {}
    for i in range(clients):
        key = generate_private_key()
        write_key_pair(f"client-{i}", key, folder)
        public[f"client-{i}"] = key.public_key()
    return _Keys(folder, server, TrustStore(public))


async def _run_clients_in_process(
    opts: DemoOptions,
    broker: InMemoryBroker,
    layout: TopicLayout,
    metrics: MetricsCollector,
    transports: list[Transport],
    keys: _Keys | None = None,
) -> list[asyncio.Task[None]]:
    train, test, _ = split_non_iid(opts.clients, seed=opts.seed)
    tasks = []
    for i in range(opts.clients):
        transport = InMemoryTransport(broker)
        transports.append(transport)
        await transport.start()
        delay = opts.straggler_delay if i >= opts.clients - opts.stragglers else 0.0
        client = DemoClient(
            f"client-{i}",
            transport,
            layout,
            train[i],
            test[i],
            seed=opts.seed + i,
            delay=delay,
            stream=opts.stream,
            metrics=metrics,
            **(keys.client(f"client-{i}") if keys is not None else {}),
        )
        tasks.append(asyncio.create_task(client.run(), name=f"client-{i}"))
    return tasks


def _reason(exc: BaseException) -> str:
    """A client's error in a line: a TrainingException says what failed already."""
    if isinstance(exc, TrainingException):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _tell_server_when_clients_end(server: FedAvgServer, tasks: list[asyncio.Task[None]]) -> None:
    """An in-process client that ends with an error (its training failed), or ends
    before the job does, is reported to the server at once: it is not waited for."""

    def ended(task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            server.client_failed(task.get_name(), _reason(exc))
        elif not server.shutdown_sent:
            server.client_failed(task.get_name(), "it stopped before the job ended")

    for task in tasks:
        task.add_done_callback(ended)


#: Seconds between two checks that the client processes of the Kafka demo still run.
PROCESS_CHECK_INTERVAL = 0.5


async def _watch_processes(server: FedAvgServer, procs: list[subprocess.Popen[bytes]]) -> None:
    """Report to the server each client process that exits before the job ends (a
    failed client exits with status 1 and its error in one line on standard error)."""
    running = dict(enumerate(procs))
    while running:
        for i, proc in list(running.items()):
            status = proc.poll()
            if status is None:
                continue
            del running[i]
            if status != 0 or not server.shutdown_sent:
                server.client_failed(f"client-{i}", f"its process exited with status {status}")
        await asyncio.sleep(PROCESS_CHECK_INTERVAL)


async def _stop_tasks(
    tasks: list[asyncio.Task[None]], grace: float
) -> list[tuple[str, BaseException]]:
    """Give in-process clients ``grace`` seconds to end by themselves (after Shutdown),
    then cancel those still running and wait for them too, within a bound: a task
    cancelled and left running here would be cancelled a second time by asyncio.run on
    its way out. Return the clients' errors, by client (task) name."""
    if not tasks:
        return []
    running = set(tasks)
    if grace > 0:
        _, running = await asyncio.wait(tasks, timeout=grace)
        for task in running:
            logger.warning("%s did not stop within %g s of Shutdown", task.get_name(), grace)
    for task in running:
        task.cancel()
    if running:
        _, stuck = await asyncio.wait(running, timeout=CLIENT_KILL_TIMEOUT)
        for task in stuck:
            logger.error(
                "%s did not end within %g s of being cancelled",
                task.get_name(),
                CLIENT_KILL_TIMEOUT,
            )
    return [
        (task.get_name(), exc)
        for task in tasks
        if task.done() and not task.cancelled() and (exc := task.exception()) is not None
    ]


def _stop_processes(procs: list[subprocess.Popen[bytes]], grace: float) -> None:
    """Give client processes ``grace`` seconds in all to end by themselves (after
    Shutdown), then SIGTERM those still running, then SIGKILL."""
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            if grace > 0:
                logger.warning("client process %d did not stop within %g s", proc.pid, grace)
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=CLIENT_KILL_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _spawn_kafka_clients(
    opts: DemoOptions,
    layout: TopicLayout,
    keys: _Keys | None = None,
    secure: SecureJob | None = None,
) -> list[subprocess.Popen[bytes]]:
    procs = []
    signing = ["--key-dir", str(keys.folder)] if keys is not None else []
    for i in range(opts.clients):
        delay = opts.straggler_delay if i >= opts.clients - opts.stragglers else 0.0
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "flwire.demo.client",
                    "--bootstrap-servers",
                    str(opts.bootstrap_servers),
                    "--job-id",
                    layout.job_id,
                    "--client-id",
                    f"client-{i}",
                    "--index",
                    str(i),
                    "--num-clients",
                    str(opts.clients),
                    "--seed",
                    str(opts.seed),
                    "--delay",
                    str(delay),
                    "--parent-pid",
                    str(os.getpid()),
                    *signing,
                    *(["--stream"] if opts.stream else []),
                ],
                env={
                    **os.environ,
                    "PYTHONUNBUFFERED": "1",
                    # its own Kafka user's credentials, never on the command line
                    **(secure.client_env(f"client-{i}") if secure is not None else {}),
                },
                # A session of their own: a Ctrl-C at the terminal reaches the demo only,
                # which stops them (each also stops once the demo's process is gone).
                start_new_session=True,
            )
        )
    return procs


#: How long the demo's Kafka transport retries a broker that stops answering.
_CONNECT_TIMEOUT_S = 20.0


async def _start_checked(transport: Transport, servers: str) -> None:
    """Start the transport, and fail at once, in one line, when no broker answers (the
    transport's own retries and librdkafka's reconnect warnings, which start as soon
    as its clients exist, would otherwise fill the terminal)."""
    kafka_logger = logging.getLogger("flwire.transport.kafka")
    level = kafka_logger.level
    kafka_logger.setLevel(logging.ERROR)
    try:
        await transport.start()
        answers = await transport.healthy()
        if not answers:
            await transport.stop()  # its clients' last warnings stay quiet too
    finally:
        kafka_logger.setLevel(level)
    if not answers:
        raise CommunicationException(
            f"no Kafka broker answers at {servers}: start one (`make kafka-up` in the "
            "flwire repository) or check --bootstrap-servers"
        )


class Terminated(Exception):
    """The demo was sent SIGTERM (it stopped its clients first)."""


def _cancel_on_sigterm(task: asyncio.Task[Any], received: list[int]) -> None:
    """SIGTERM cancels the run like Ctrl-C does, so that it stops its clients on the
    way out (by default it would end the process and leave them running)."""

    def on_signal() -> None:
        received.append(signal.SIGTERM)
        task.cancel()

    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_signal)
    except (ValueError, RuntimeError, NotImplementedError):
        pass  # not the main thread, or no signals (Windows): nothing to take over


async def _run(opts: DemoOptions, console: _Console) -> tuple[list[RoundResult], dict[str, Any]]:
    received: list[int] = []
    main = asyncio.current_task()
    if main is not None:
        _cancel_on_sigterm(main, received)
    try:
        if not (opts.sign or opts.secure):
            return await _run_job(opts, console)
        # mkdtemp makes the folder 0700; the private keys in it are 0600.
        with tempfile.TemporaryDirectory(prefix="flwire-demo-keys-") as folder:
            keys = _make_keys(Path(folder), opts.clients)
            return await _run_job(opts, console, keys)
    except asyncio.CancelledError:
        if received:
            raise Terminated() from None
        raise


async def _run_job(
    opts: DemoOptions, console: _Console, keys: _Keys | None = None
) -> tuple[list[RoundResult], dict[str, Any]]:
    layout = TopicLayout(f"demo-{uuid.uuid4().hex[:8]}")
    metrics = MetricsCollector()
    _, _, global_test = split_non_iid(opts.clients, seed=opts.seed)
    legacy_sizes: dict[int, int] = {}
    transport: Transport
    procs: list[subprocess.Popen[bytes]] = []
    tasks: list[asyncio.Task[None]] = []
    client_transports: list[Transport] = []
    secure_job: SecureJob | None = None
    if opts.bootstrap_servers:
        from flwire.transport.kafka import KafkaTransport

        if opts.secure:
            ids = [f"client-{i}" for i in range(opts.clients)]
            secure_job = await asyncio.to_thread(
                prepare_secure_job, opts.bootstrap_servers, layout, ids, opts.kafka_home
            )
        transport = KafkaTransport(
            opts.bootstrap_servers,
            connect_timeout_s=_CONNECT_TIMEOUT_S,
            security=secure_job.server if secure_job is not None else None,
        )
        await _start_checked(transport, opts.bootstrap_servers)
    else:
        broker = InMemoryBroker()
        transport = InMemoryTransport(broker)
        await transport.start()
    server = FedAvgServer(
        transport,
        layout,
        global_test,
        num_clients=opts.clients,
        rounds=opts.rounds,
        min_clients=opts.min_clients,
        max_wait_time=opts.max_wait_time,
        round_timeout=opts.round_timeout,
        config={"local_epochs": opts.local_epochs, "learning_rate": opts.learning_rate},
        metrics=metrics,
        on_status=console.status,
        on_progress=console.progress,
        seed=opts.seed,
        policy=UpdatePolicy(
            max_num_examples=opts.max_num_examples, max_distance=opts.max_update_distance
        ),
        trust=keys.trust if keys is not None else None,
        signing_key=keys.server if keys is not None else None,
    )

    legacy_per_model: list[int] = []
    # A round's row waits for its federated evaluation, which the clients send once
    # the next round's weights are out: it is printed when the next round ends (or
    # the job), with fed.eval filled in.
    unprinted: list[RoundResult] = []
    printed: list[int] = []

    def print_rows() -> None:
        if unprinted and not printed:
            console.line(HEADER)  # above the first row, below the first progress lines
        for result in unprinted:
            printed.append(result.round_id)
            console.line(_round_row(result, legacy_sizes[result.round_id]))
            if result.left_out:
                console.line(
                    f"       left out (no update within {opts.max_wait_time:g} s): "
                    f"{', '.join(result.left_out)}"
                )
            for client, reason in sorted(result.refused.items()):
                console.line(f"       refused the update of {client}: {reason}")
            for client, reason in sorted(result.failed.items()):
                console.line(f"       failed: {client}: {reason}")
        unprinted.clear()

    def on_round(result: RoundResult) -> None:
        # Messages with weights this round: the global update, and one update per client.
        # The old size is estimated once (gzip-9 of 4.8 MB costs about 0.4 s); trained
        # weights of the same model compress alike.
        if not legacy_per_model:
            legacy_per_model.append(legacy_path_bytes(server.model.state_dict()))
        legacy_sizes[result.round_id] = legacy_per_model[0] * (1 + len(result.reporting))
        print_rows()
        unprinted.append(result)

    server.on_round = on_round
    watcher: asyncio.Task[None] | None = None
    try:
        await transport.ensure_topics(layout.all)
        if opts.bootstrap_servers:
            procs = _spawn_kafka_clients(opts, layout, keys, secure_job)
            watcher = asyncio.create_task(_watch_processes(server, procs))
        else:
            tasks = await _run_clients_in_process(
                opts, broker, layout, metrics, client_transports, keys
            )
            _tell_server_when_clients_end(server, tasks)
        results = await server.run()
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        print_rows()  # the rounds that completed, also when a later one failed
        # The server sends Shutdown when the job ends and when it fails: then the clients
        # get time to end by themselves. Otherwise (the run was cancelled, e.g. by Ctrl-C,
        # or Shutdown could not be sent) they are stopped at once.
        grace = CLIENT_STOP_TIMEOUT if server.shutdown_sent else 0.0
        client_errors = await _stop_tasks(tasks, grace)
        if procs:
            await asyncio.to_thread(_stop_processes, procs, grace)
        for client_transport in client_transports:
            await client_transport.stop()
        await transport.stop()
        # The server names the clients that failed (its error, or the round's row); their
        # tracebacks are for debugging only.
        for name, exc in client_errors:
            logger.debug("%s failed: %s", name, _reason(exc), exc_info=exc)
    # A client that failed during a round the job still completed (enough others were
    # left) is named in that round's row; any other failure fails the job.
    named = {client for r in results for client in r.failed}
    unnamed = [(name, exc) for name, exc in client_errors if name not in named]
    if unnamed:
        name, exc = unnamed[0]
        raise FLException(f"{len(unnamed)} client(s) failed: {name}: {_reason(exc)}")
    return results, {
        "legacy_bytes": legacy_sizes,
        "wire": metrics.wire_summary(),
        "transport": "kafka" if opts.bootstrap_servers else "in-memory",
        "secure": secure_job is not None,
        "job_id": layout.job_id,
        "refusals": dict(server.refusals),
    }


def _unwritable(folder: Path) -> str | None:
    """Why the report cannot be written into ``folder`` (created if missing), or None."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".flwire-write-check"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def run_demo(opts: DemoOptions, out: TextIO = sys.stdout, err: TextIO | None = None) -> int:
    """Run the demo, print progress and a summary; return an exit status: 0 when the
    job ran (and its accuracy rose, given two rounds or more), 1 when it did not, or
    when it failed (the reason goes to ``err``, standard error by default)."""
    console = _Console(out)
    where = f"Kafka at {opts.bootstrap_servers}" if opts.bootstrap_servers else "in-memory"
    if opts.secure:
        where += " (SASL_SSL, SCRAM-SHA-512, ACLs per job)"
    console.line(
        f"flwire demo: FedAvg, SimpleCNN, {opts.clients} clients, {opts.rounds} rounds, "
        f"non-IID digits, transport: {where}"
        + (", signed messages" if opts.sign or opts.secure else "")
        + (", streamed updates" if opts.stream else "")
    )
    if opts.secure and not opts.bootstrap_servers:
        print("flwire demo: --secure needs --bootstrap-servers", file=err or sys.stderr)
        return 2
    if opts.report_dir is not None:
        problem = _unwritable(opts.report_dir)
        if problem:  # found now, not after minutes of training
            print(
                f"flwire demo: cannot write the report to {opts.report_dir}: {problem}",
                file=err or sys.stderr,
                flush=True,
            )
            return 1
    started = time.perf_counter()
    try:
        results, extra = asyncio.run(_run(opts, console))
    except FLException as exc:
        console.end_status()
        print(f"flwire demo: {exc}", file=err or sys.stderr, flush=True)
        return 1
    except (KeyboardInterrupt, Terminated) as exc:
        console.end_status()
        what = "interrupted" if isinstance(exc, KeyboardInterrupt) else "terminated"
        print(f"flwire demo: {what}; its clients were stopped", file=err or sys.stderr, flush=True)
        return 130 if isinstance(exc, KeyboardInterrupt) else 128 + signal.SIGTERM
    elapsed = time.perf_counter() - started
    wire = sum(r.wire_bytes for r in results)
    legacy = sum(extra["legacy_bytes"].values())
    w = extra["wire"]
    console.line(
        f"{'total':>5}  {'':<7}{'':>9}{'':>10}{wire / 1e6:>10.1f}"
        f"{legacy / 1e6:>9.1f}{elapsed:>8.1f}"
    )
    console.line(
        f"bytes on the wire: {wire / 1e6:.1f} MB with flwire vs {legacy / 1e6:.1f} MB "
        f"the old JSON/base64 path would send ({wire / legacy:.2f}x); * old MB estimated"
    )
    console.line(
        f"encode {w['encode_seconds_per_message'] * 1e3:.1f} ms, decode "
        f"{w['decode_seconds_per_message'] * 1e3:.1f} ms per weights message "
        f"(compression ratio {w['compression_ratio'] or 0:.3f}"
        + (
            ": mostly raw, as zstd saves dense float32 weights under min_saving, 10 %)"
            if (w["compression_ratio"] or 0) < 1.005
            else ")"
        )
    )
    if extra["refusals"]:
        counts = ", ".join(f"{n} {why}" for why, n in sorted(extra["refusals"].items()))
        console.line(f"messages refused by the server: {counts}")
    if opts.report_dir:
        _write_report(opts, results, extra, elapsed, console)
    rising = len(results) >= 2 and results[-1].accuracy > results[0].accuracy
    return 0 if rising or len(results) < 2 else 1


def _write_report(
    opts: DemoOptions,
    results: list[RoundResult],
    extra: dict[str, Any],
    elapsed: float,
    console: _Console,
) -> None:
    assert opts.report_dir is not None
    opts.report_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
        "seconds": elapsed,
        "rounds": [
            asdict(r) | {"legacy_path_bytes": extra["legacy_bytes"].get(r.round_id)}
            for r in results
        ],
        "wire": extra["wire"],
        "transport": extra["transport"],
        "secure": extra["secure"],
        "refusals": extra["refusals"],
    }
    json_path = opts.report_dir / "demo-report.json"
    json_path.write_text(json.dumps(report, indent=2))
    _optional.require("matplotlib", extra="demo").use("Agg")
    plt = _optional.require("matplotlib.pyplot", extra="demo")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.4))
    where = "Kafka" if opts.bootstrap_servers else "in-memory"
    fig.suptitle(
        f"flwire demo: FedAvg, SimpleCNN, {opts.clients} clients, {len(results)} rounds, "
        f"{where} transport, zstd weights (seed {opts.seed})"
    )
    rounds = [r.round_id for r in results]
    ax1.plot(rounds, [r.accuracy for r in results], marker="o", label="server test set")
    fed = [(r.round_id, r.federated_accuracy) for r in results if r.federated_accuracy is not None]
    if fed:
        ax1.plot(*zip(*fed, strict=True), marker="s", label="federated evaluation")
    ax1.set(xlabel="round", ylabel="accuracy", title="Accuracy per round", ylim=(0, 1))
    ax1.legend()
    ax2.bar([x - 0.2 for x in rounds], [r.wire_bytes / 1e6 for r in results], 0.4, label="flwire")
    ax2.bar(
        [x + 0.2 for x in rounds],
        [extra["legacy_bytes"][x] / 1e6 for x in rounds],
        0.4,
        label="old JSON/base64 (est.)",
    )
    ax2.set(xlabel="round", ylabel="MB", title="Bytes on the wire per round")
    ax2.legend()
    for ax in (ax1, ax2):  # rounds are whole numbers
        ax.set_xticks(rounds)
    fig.tight_layout()
    png_path = opts.report_dir / "demo-report.png"
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    console.line(f"report: {json_path} and {png_path}")
