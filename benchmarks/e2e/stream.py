"""Streaming a large model through a real Kafka broker, against raw Kafka on the same broker.

Each trial moves one model from a sender process to a receiver process, each with its own
Kafka client, on a fresh topic:

* flwire: a ClientUpdate built with ``EncodeOptions(stream=True)`` sent by
  ``Channel.send_message`` over KafkaTransport (1 MB records, the SDK's defaults), received by
  ``Channel.receive``: from encode start in the sender to the decoded tensors in the receiver;
* raw: confluent-kafka alone producing as many 1,000,000-byte records as the model has MB
  (same producer settings: idempotent, acks=all, linger 0 ms) and a consumer (flwire's fetch
  settings) reading them all: from the first produce to the last record consumed;
* raw + fill: the same, the consumer copying each record's value into one fresh buffer of the
  whole model (flwire's own allocator, ``flwire.tensors.buffers.empty``). Raw Kafka never
  touches fresh memory; a receiver that makes tensors must fill as much of it as the model,
  and the kernel's page faults on it are part of the cost: this is the floor of any receiver
  that ends with tensors, shown so that the ratios can be read against it.

The kinds run interleaved (raw, raw + fill, flwire zstd, flwire none, raw, ...) for
``--pairs`` repetitions; each other figure is divided by the raw run next to it (paired ratios
of throughput), and medians are printed. ``--loaded`` repeats it with one core kept busy by a
CPU-bound process that the benchmark starts. Also printed: when the first record left (after
encode start), the receive lag (last record received after the last ack), and peak memory:
the sender's beyond the model, the receiver's in all (both from VmHWM).

``--big-bf16 5e9`` also sends one bfloat16 model of that many bytes (5 GB) through the 1 MB
record limit and checks its memory against the bounds (sender extra <= 0.25x the model,
receiver <= 1.25x).

    .venv/bin/python -m benchmarks.e2e.stream                     # ~4 min on 2 cores
    .venv/bin/python -m benchmarks.e2e.stream --pairs 8 --loaded --big-bf16 5e9
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from benchmarks.e2e.broker import DEFAULT_PORT, Broker
from benchmarks.e2e.wire import BenchError, create_topics, log
from benchmarks.tables import host_info, host_line, library_version

WORKER = "benchmarks.e2e.stream_worker"
MB = 1e6
#: Longest wait for one side of one trial, in seconds.
WAIT_S = 300.0


class Side:
    """A worker process, its JSON lines read from stdout."""

    def __init__(self, args: list[str]) -> None:
        self.log = tempfile.NamedTemporaryFile("w+", prefix="flwire-stream-bench-", suffix=".log")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", WORKER, *args],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )

    def errors(self) -> str:
        self.log.seek(0)
        return self.log.read()[-2000:]

    def read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line:
                doc: dict[str, Any] = json.loads(line)
                return doc
            if self.proc.poll() is not None:
                raise BenchError(f"worker {self.proc.args!r} exited: {self.errors()}")
        raise BenchError(f"worker {self.proc.args!r} said nothing for {timeout} s: {self.errors()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()


def trial(
    bootstrap: str,
    kind: str,
    model: str,
    nbytes: int,
    compression: str,
    check: bool,
    fill: bool = False,
) -> dict[str, Any]:
    """One transfer; the sender's and the receiver's measurements merged. ``fill``: a raw
    receiver copies the records into fresh memory."""
    topic = f"stream-bench-{uuid.uuid4().hex[:10]}"
    create_topics(bootstrap, [topic, topic + ".warm"])
    common = ["--bootstrap", bootstrap, "--topic", topic]
    if kind == "raw":
        recv = Side(["raw-recv", *common, "--bytes", str(nbytes), *(["--fill"] if fill else [])])
    else:
        recv = Side(["flwire-recv", *common, "--model", model, *(["--check"] if check else [])])
    sender: Side | None = None
    try:
        warm = Producer({"bootstrap.servers": bootstrap, "log_level": 0})
        deadline = time.monotonic() + 120
        assert recv.proc.stdout is not None
        os.set_blocking(recv.proc.stdout.fileno(), False)
        ready = False
        while not ready:
            if time.monotonic() > deadline:
                raise BenchError("the receiver was not ready within 120 s")
            warm.produce(topic, b"warm-up", b"warm-up")
            warm.flush(10)
            time.sleep(0.3)
            line = recv.proc.stdout.readline()
            if line:
                ready = json.loads(line).get("ready", False)
            elif recv.proc.poll() is not None:
                raise BenchError(f"receiver exited: {recv.errors()}")
        os.set_blocking(recv.proc.stdout.fileno(), True)
        if kind == "raw":
            sender = Side(["raw-send", *common, "--bytes", str(nbytes)])
        else:
            sender = Side(["flwire-send", *common, "--model", model, "--compression", compression])
        sent = sender.read(WAIT_S)
        got = recv.read(WAIT_S)
    finally:
        recv.stop()
        if sender is not None:
            sender.stop()
        delete_topics(bootstrap, [topic, topic + ".warm"])
    return {"kind": kind, "compression": compression, **sent, **got}


def delete_topics(bootstrap: str, topics: list[str]) -> None:
    """Delete a trial's topics, so that a broker given with --bootstrap does not keep
    every model moved (a 5 GB one included) on its disk."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})  # alive until done
    futures = admin.delete_topics(topics)
    for topic, future in futures.items():
        try:
            future.result(60)
        except Exception as exc:  # reported, not fatal: the figures are taken already
            log(f"could not delete topic {topic!r}: {exc}")


def seconds(r: dict[str, Any]) -> float:
    return float(r["t_decoded"] - r["t0"])


def series(bootstrap: str, pairs: int, model: str, nbytes: int, label: str) -> list[dict[str, Any]]:
    """``pairs`` rounds of raw, raw + fill, flwire zstd, flwire none; paired ratios per round."""
    rounds = []
    for i in range(pairs):
        raw = trial(bootstrap, "raw", model, nbytes, "none", False)
        filled = trial(bootstrap, "raw", model, nbytes, "none", False, fill=True)
        z = trial(bootstrap, "flwire", model, nbytes, "zstd", i == 0)
        n = trial(bootstrap, "flwire", model, nbytes, "none", i == 0)
        for r in (z, n):
            if r.get("exact") is False:
                raise BenchError(f"{label}: decoded weights differ from those sent")
        rate = raw["bytes"] / seconds(raw)
        rounds.append(
            {
                "raw": raw,
                "fill": filled,
                "ratio_fill": filled["bytes"] / seconds(filled) / rate,
                "zstd": z,
                "none": n,
                "ratio_zstd": z["model_bytes"] / seconds(z) / rate,
                "ratio_none": n["model_bytes"] / seconds(n) / rate,
            }
        )
        log(
            f"{label} pair {i + 1}/{pairs}: raw {seconds(raw):.2f} s, raw + fill "
            f"{seconds(filled):.2f} s ({rounds[-1]['ratio_fill']:.2f}x), zstd {seconds(z):.2f} s "
            f"({rounds[-1]['ratio_zstd']:.2f}x), none {seconds(n):.2f} s "
            f"({rounds[-1]['ratio_none']:.2f}x)"
        )
    return rounds


def cpu(rs: list[dict[str, Any]]) -> str:
    """Median CPU seconds of the sender and of the receiver (from its first record)."""
    send = statistics.median(r["send_cpu_s"] for r in rs)
    recv = statistics.median(r["recv_cpu_s"] for r in rs)
    return f"{send:.2f}+{recv:.2f}"


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} [{min(xs):.2f}-{max(xs):.2f}]"


def row(
    label: str,
    rs: list[dict[str, Any]],
    ratio: str,
    nbytes: Callable[[dict[str, Any]], float],
    memory: str = f"{'':>13} {'':>15}",
) -> str:
    """One line of :func:`table`: a path's trials ``rs`` (``nbytes``: what one moved)."""
    return (
        f"{label:<14} {med([seconds(r) for r in rs]):>28} "
        f"{statistics.median(nbytes(r) / seconds(r) / MB for r in rs):>8.0f} {ratio:>18} "
        f"{med([1000 * (r['t_first_send'] - r['t0']) for r in rs]):>18} "
        f"{med([1000 * (r['t_last_record'] - r['t_done']) for r in rs]):>17} "
        f"{memory} {cpu(rs):>16}"
    )


def table(rounds: list[dict[str, Any]], label: str) -> str:
    lines = [f"\n{label}: {len(rounds)} interleaved pairs, median [min-max]"]
    lines.append(
        f"{'path':<14} {'encode start -> decoded (s)':>28} {'MB/s':>8} {'vs raw':>18} "
        f"{'first record (ms)':>18} {'receive lag (ms)':>17} {'sender extra':>13} "
        f"{'receiver total':>15} {'CPU s send+recv':>16}"
    )
    raw = [r["raw"] for r in rounds]
    lines.append(row("raw Kafka", raw, "1", lambda r: r["bytes"]))
    fills = [r["fill"] for r in rounds]
    fill_ratio = med([r["ratio_fill"] for r in rounds])
    lines.append(row("raw + fill", fills, fill_ratio, lambda r: r["bytes"]))
    for codec in ("zstd", "none"):
        rs = [r[codec] for r in rounds]
        model = rs[0]["model_bytes"]
        memory = (
            f"{statistics.median(r['extra_kb'] * 1024 / model for r in rs):>12.2f}x "
            f"{statistics.median(r['total_kb'] * 1024 / model for r in rs):>14.2f}x"
        )
        ratio = med([r["ratio_" + codec] for r in rounds])
        lines.append(row("flwire " + codec, rs, ratio, lambda r: r["model_bytes"], memory))
    return "\n".join(lines)


def busy() -> subprocess.Popen[bytes]:
    """A CPU-bound process keeping one core busy."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def big(bootstrap: str, nbytes: float) -> str:
    r = trial(bootstrap, "flwire", f"bf16:{int(nbytes)}", 0, "none", False)
    model = r["model_bytes"]
    extra = r["extra_kb"] * 1024 / model
    total = r["total_kb"] * 1024 / model
    return (
        f"\nbfloat16 model of {model / 1e9:.2f} GB through 1 MB records ({r['records']} records, "
        f"compression none): {seconds(r):.1f} s encode start -> decoded "
        f"({model / seconds(r) / MB:.0f} MB/s); first record after "
        f"{1000 * (r['t_first_send'] - r['t0']):.0f} ms; sender peak extra memory "
        f"{r['extra_kb'] / 1e6:.2f} GB = {extra:.2f}x the model (bound 0.25x: "
        f"{'met' if extra <= 0.25 else 'NOT met'}); receiver peak memory "
        f"{r['total_kb'] / 1e6:.2f} GB = {total:.2f}x (bound 1.25x: "
        f"{'met' if total <= 1.25 else 'NOT met'})"
    )


def run(args: argparse.Namespace) -> int:
    print("flwire streaming benchmark: one model, sender -> Kafka -> receiver, against raw Kafka")
    print(f"flwire: {library_version()}")
    print(host_line(host_info()))
    broker = None if args.bootstrap else Broker(args.port)
    results: dict[str, Any] = {}
    try:
        if broker is not None:
            log(f"starting a private Kafka broker on {broker.bootstrap}")
            broker.start()
        bootstrap = args.bootstrap or (broker.bootstrap if broker else "")
        from benchmarks import models

        nbytes = sum(t.numel() * t.element_size() for t in models.big_model(args.quick).values())
        model = "quick" if args.quick else "transformer100m"
        # The broker's first transfers are slower (its code paths warming up, the
        # first log segments): a pair before the counted ones, not counted.
        raw = trial(bootstrap, "raw", model, nbytes, "none", False)
        warm = trial(bootstrap, "flwire", model, nbytes, "zstd", False)
        log(f"warm-up (not counted): raw {seconds(raw):.2f} s, flwire {seconds(warm):.2f} s")
        load = os.getloadavg()
        results["quiet"] = series(bootstrap, args.pairs, model, nbytes, "quiet")
        print(table(results["quiet"], f"{nbytes / MB:.0f} MB float32 model (load {load[0]:.1f})"))
        if args.loaded:
            hog = busy()
            try:
                results["loaded"] = series(bootstrap, args.pairs, model, nbytes, "loaded")
            finally:
                hog.kill()
            print(
                table(results["loaded"], "the same with one core kept busy by a CPU-bound process")
            )
        if args.big_bf16:
            print(big(bootstrap, args.big_bf16))
    except BenchError as exc:
        print(f"streaming benchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("streaming benchmark interrupted; workers and broker stopped", file=sys.stderr)
        return 130
    finally:
        if broker is not None:
            broker.stop()
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    # A SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so that the worker
    # processes and the private broker are stopped.
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pairs", type=int, default=8, help="interleaved repetitions (default 8)")
    ap.add_argument("--quick", action="store_true", help="a ~40 MB model instead of 410 MB")
    ap.add_argument("--loaded", action="store_true", help="also run with one core kept busy")
    ap.add_argument("--big-bf16", type=float, metavar="BYTES", help="also send a bfloat16 model")
    ap.add_argument("--port", type=int, default=DEFAULT_PORT + 10)
    ap.add_argument("--bootstrap", metavar="HOST:PORT", help="use this running broker")
    ap.add_argument("--json", metavar="PATH")
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
