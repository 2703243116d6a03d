"""What the fault scenarios, the server and the client processes share.

Nothing here imports torch: the subprocesses start in well under a second.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from flwire import messages
from flwire.tensors import EncodeOptions
from flwire.transport import Channel, Delivery
from flwire.transport.chunking import PART_HEADER, parse_part
from flwire.transport.headers import MESSAGE_ID

ROOT = Path(__file__).resolve().parents[3]
BROKER_SH = ROOT / "kafka" / "broker.sh"
PACKAGE = __name__.rsplit(".", 1)[0]  # tests.integration.faults, or integration.faults under pytest

VERDICTS = ("exactly_once", "lost", "duplicated", "hung", "error")

#: Consumer settings of every receiving process: a killed member leaves its group
#: after 6 s instead of 45 s, so that the next one is assigned the partition soon.
FAST_GROUP: dict[str, Any] = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}

#: Parameters of the large update: 1.2M float32 values, stored raw, 4.8 MB = 5 parts.
LARGE_SHAPE = (128, 9375)


@dataclass
class Outcome:
    """The result of one iteration of one scenario."""

    scenario: str
    verdict: str
    detail: str
    seconds: float
    code: str = ""  # "new" or "old" flwire (see Features), and how the server de-duplicated
    logs: str = ""  # the processes' last output lines, when the verdict is not exactly_once

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        return (
            f"{self.scenario}: {self.verdict} in {self.seconds:.1f} s [{self.code}] {self.detail}"
        )


class Broker(Protocol):
    """A broker a scenario may kill and restart (conftest's PrivateBroker, or ScriptBroker)."""

    @property
    def bootstrap(self) -> str: ...

    def up(self) -> None: ...

    def kill(self) -> None: ...

    def reset(self) -> None: ...


@dataclass
class ScriptBroker:
    """A private broker on ``port``, run by kafka/broker.sh (conftest's
    ``private_broker`` fixture gives one; the CLI makes its own)."""

    port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self, command: str) -> None:
        env = {**os.environ, "FLWIRE_KAFKA_PORT": str(self.port)}
        result = subprocess.run(
            ["bash", str(BROKER_SH), command], env=env, capture_output=True, text=True, timeout=180
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"kafka/broker.sh {command} failed on port {self.port}:\n"
                f"{result.stdout}\n{result.stderr}"
            )

    def up(self) -> None:
        self._run("up")

    def kill(self) -> None:
        self._run("kill")

    def reset(self) -> None:
        self._run("reset")


# ---- which flwire is under test ----------------------------------------------------------


@dataclass(frozen=True)
class Features:
    """What the imported flwire offers, found by looking (the old code has none of it)."""

    #: ``Delivery.fail``: failed handling is redelivered, then dead-lettered.
    delivery_fail: bool
    #: ``Channel(on_event=...)``: dropped transfers and failed deliveries are reported.
    on_event: bool
    #: ``Channel.receive(..., dedupe=True)`` is the default: the Channel skips ids its
    #: consumer group handled before, across restarts.
    channel_dedupes: bool

    @property
    def code(self) -> str:
        return "new" if self.delivery_fail else "old"

    def describe(self) -> str:
        dedupe = "the Channel" if self.channel_dedupes else "an in-memory SeenIds"
        return f"{self.code} flwire, de-duplication by {dedupe}"


def features() -> Features:
    dedupe = inspect.signature(Channel.receive).parameters.get("dedupe")
    return Features(
        delivery_fail=callable(getattr(Delivery, "fail", None)),
        on_event="on_event" in inspect.signature(Channel.__init__).parameters,
        channel_dedupes=dedupe is not None and dedupe.default is True,
    )


# ---- messages ---------------------------------------------------------------------------


def large_update(sender: str, seed: int) -> messages.Message:
    """A client update of 4.8 MB (above the 1 MB record limit: 5 parts)."""
    rng = np.random.default_rng(seed)
    weights = {"fc.weight": rng.standard_normal(LARGE_SHAPE, dtype=np.float32)}
    return messages.client_update(
        sender, 1, weights, {"seed": seed}, options=EncodeOptions(compression="none")
    )


def small_message(sender: str) -> messages.Message:
    return messages.heartbeat(sender, "training", {"cpu_percent": 1.0})


def fresh_name(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


# ---- the broker's side ------------------------------------------------------------------


def create_topic(bootstrap: str, topic: str, timeout: float = 30.0) -> None:
    """Create a one-partition topic and wait until its partition has a leader."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    future = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic]
    future.result(timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        meta = admin.list_topics(timeout=10).topics.get(topic)
        if meta is not None and meta.error is None and meta.partitions.get(0) is not None:
            if meta.partitions[0].leader >= 0:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic} has no leader {timeout:.0f} s after its creation")
        time.sleep(0.2)


def topic_exists(bootstrap: str, topic: str) -> bool:
    # A metadata request for all topics: it never auto-creates one.
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return topic in admin.list_topics(timeout=10).topics


@dataclass(frozen=True)
class LogRecord:
    """One record read back from a topic's partition 0."""

    offset: int
    message_id: str | None  # the flwire-message-id header
    transfer_id: str | None  # parts only
    index: int | None
    count: int | None
    value: bytes = field(repr=False, default=b"")


def read_log(bootstrap: str, topic: str, timeout: float = 30.0) -> list[LogRecord]:
    """Every record of partition 0 from its start to the high watermark, without a group."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "flwire-faults-readback",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        if high <= low:
            return []
        consumer.assign([TopicPartition(topic, 0, low)])
        out: list[LogRecord] = []
        deadline = time.monotonic() + timeout
        while not out or out[-1].offset < high - 1:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"read {len(out)} records of {topic}[0] ({low}..{high}) in {timeout:.0f} s"
                )
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            headers = dict(msg.headers() or [])
            mid = headers.get(MESSAGE_ID)
            transfer_id = index = count = None
            value = msg.value() or b""
            if headers.get(PART_HEADER) is not None:
                part = parse_part(value)
                transfer_id, index, count = part.transfer_id, part.index, part.count
            offset = msg.offset()
            assert offset is not None
            out.append(
                LogRecord(
                    offset,
                    mid.decode() if isinstance(mid, bytes) else None,
                    transfer_id,
                    index,
                    count,
                    value,
                )
            )
        return out
    finally:
        consumer.close()


def watermarks(bootstrap: str, topic: str) -> tuple[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "flwire-faults-readback"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return int(low), int(high)
    finally:
        consumer.close()


def committed_offset(bootstrap: str, topic: str, group: str) -> int:
    """The group's committed offset of partition 0 (negative: none)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        try:
            (tp,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        except KafkaException:
            return -1
        return int(tp.offset)
    finally:
        consumer.close()


def part_indices(log: Iterable[LogRecord], transfer_id: str) -> list[int]:
    """The part indices of a transfer in log order (repeats included)."""
    return [r.index for r in log if r.transfer_id == transfer_id and r.index is not None]


# ---- effects and verdicts ---------------------------------------------------------------


def read_effects(*paths: Path) -> collections.Counter[str]:
    """How many times each message id was handled, across the effects files."""
    counts: collections.Counter[str] = collections.Counter()
    for path in paths:
        if path.exists():
            counts.update(line.strip() for line in path.read_text().splitlines() if line.strip())
    return counts


def tally(
    acked: Iterable[str],
    handled: collections.Counter[str],
    *,
    finished: bool,
    names: dict[str, str] | None = None,
    failed: Iterable[str] = (),
) -> tuple[str, str]:
    """(verdict, detail) of acked ids against handled counts. ``finished``: the run
    reached the point where every acked id should have been handled (else a
    missing one is "hung", not "lost")."""
    names = names or {}
    acked = list(dict.fromkeys(acked))
    failed = [i for i in failed if i not in acked]
    missing = [i for i in acked if handled[i] == 0]
    doubled = {i: n for i, n in handled.items() if n > 1}

    def label(ids: Iterable[str]) -> str:
        return ", ".join(f"{names.get(i, '?')}:{i[:8]}" for i in ids)

    parts = [f"{len(acked)} acked, {sum(1 for i in acked if handled[i])} handled"]
    if failed:
        parts.append(f"{len(failed)} sends failed ({label(failed)})")
    if missing:
        parts.append(f"never handled: {label(missing)}")
    if doubled:
        parts.append(
            "handled more than once: "
            + ", ".join(f"{names.get(i, '?')}:{i[:8]} x{n}" for i, n in doubled.items())
        )
    detail = "; ".join(parts)
    if missing:
        return ("lost" if finished else "hung"), detail
    if doubled:
        return "duplicated", detail
    return "exactly_once", detail


def worst(*verdicts: str) -> str:
    """The most severe verdict: lost > duplicated > hung > error > exactly_once."""
    order = ("lost", "duplicated", "hung", "error", "exactly_once")
    return min(verdicts, key=order.index)


# ---- subprocesses -----------------------------------------------------------------------


class Proc:
    """A harness subprocess (``python -m <module>``): stdout lines collected by a thread,
    stderr kept in a file for failure messages. Always ``close()`` it (kills it)."""

    def __init__(self, name: str, module: str, args: list[str], workdir: Path) -> None:
        self.name = name
        self.stderr_path = workdir / f"{name}.stderr"
        self._stderr: IO[str] = self.stderr_path.open("w")
        # stdout is kept too, each line with the time it came, for a post-mortem.
        self._stdout_copy: IO[str] = (workdir / f"{name}.stdout").open("w")
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self.started = time.monotonic()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.popen = subprocess.Popen(
            [sys.executable, "-m", f"{PACKAGE}.{module}", *args],
            cwd=_package_root(),
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self._reader = threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            line = raw.rstrip("\n")
            now = time.time()
            stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
            self._stdout_copy.write(f"{stamp} {line}\n")
            self._stdout_copy.flush()
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def snapshot(self) -> list[str]:
        with self._cond:
            return list(self.lines)

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float) -> bool:
        """Wait until ``predicate(lines)`` holds (True), the process's stdout ends or
        ``timeout`` passes (then the predicate's last value)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.lines):
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    return predicate(self.lines)
                self._cond.wait(min(remaining, 0.5))
            return True

    def words(self, tag: str) -> list[list[str]]:
        """The words after ``tag`` of each stdout line that starts with it."""
        return [line.split()[1:] for line in self.snapshot() if line.split()[:1] == [tag]]

    def firsts(self, tag: str) -> list[str]:
        return [w[0] for w in self.words(tag) if w]

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.alive:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=30)

    def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait for a clean exit; SIGKILL after ``timeout`` (returns None then)."""
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def tail(self, lines: int = 25) -> str:
        self._stderr.flush()
        err = self.stderr_path.read_text(errors="replace").splitlines()[-lines:]
        out = self.snapshot()[-8:]
        rc = self.popen.poll()
        state = "running" if rc is None else f"exit code {rc}"
        return (
            f"--- {self.name} ({state}) last stdout lines:\n"
            + "\n".join(out)
            + f"\n--- {self.name} last stderr lines ({self.stderr_path}):\n"
            + "\n".join(err)
        )

    def close(self) -> None:
        try:
            if self.alive:
                self.kill()
        finally:
            self._reader.join(timeout=10)
            if self.popen.stdout is not None:
                self.popen.stdout.close()
            self._stderr.close()
            self._stdout_copy.close()


def _package_root() -> Path:
    """The folder ``python -m <PACKAGE>.server`` must start in."""
    depth = PACKAGE.count(".") + 1
    return Path(__file__).resolve().parents[depth]


def run_process(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """The entry point of a scenario subprocess: flwire's logs on stderr (the test
    shows their end when a scenario fails), then ``asyncio.run(main())``."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    asyncio.run(main())
