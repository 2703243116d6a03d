"""Many clients: one FL round of 128 clients into one flwire server over a real Kafka broker,
measured against raw Kafka moving the same bytes on the same broker (issue 15, section 4).

    .venv/bin/python -m benchmarks.e2e.load              # 128 clients in 4 processes, 3 reps
    .venv/bin/python -m benchmarks.e2e --load            # the same
    .venv/bin/python -m benchmarks.e2e.load --quick      # 32 clients in 2 processes, 2 reps
    .venv/bin/python -m benchmarks.e2e.load --bootstrap 127.0.0.1:9092 --json out.json

* flwire: CLIENTS clients simulated in PROCS processes (``load_worker clients``), each client
  with its own KafkaTransport (its own idempotent producer) and its own id (sender id and
  record key), send one update each of the demo's SimpleCNN (4.4 MB float32, moved by a
  per-client amount) in one round, all at once, through 1 MB records (so in parts), to one
  server process (``load_worker server``: Channel over KafkaTransport, SDK defaults but for
  the README's two settings for many clients, --memory-mb and --queue-kb) that
  decodes each update and folds it into a StreamingFedAvg as it arrives, holding none.
  Round wall time: the first client's send start (it stamps ``t_start`` in the update's
  metrics before encoding) to the last fold; latency: each client's send start to its fold.
  The server checks the average it folded against the one computed from what each client
  added.
* raw Kafka, right after each flwire round on the same broker: one plain confluent-kafka
  producer per client process (the transport's producer settings: acks=all, idempotent,
  no compression) writes the same number of records of the same sizes as its clients'
  updates took, and one plain consumer in the server process (the transport's consumer
  settings) reads them all; from the first produce to the last record consumed.
* Server memory: its VmHWM (peak RSS) is reset before each round (``/proc/self/clear_refs``)
  and compared with its RSS then, before the round's StreamingFedAvg is made; the growth
  is compared with the target of issue 15, 4x the model + FIXED_OVERHEAD.

Each repetition runs the flwire round, then the raw transfer; the table shows the median
[min-max] over repetitions. MB = 10^6 bytes; bytes = record values.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import FrameType
from typing import IO, Any

from benchmarks.e2e.broker import DEFAULT_PORT, Broker
from benchmarks.e2e.wire import BenchError, create_topics, log
from benchmarks.tables import MB, ROOT, host_info, host_line, library_version, table

WORKER = [sys.executable, "-m", "benchmarks.e2e.load_worker"]
#: Server memory the target allows beside 4x the model, whatever the model and the number
#: of clients (see the README of the benchmark and ``fixed_overhead_note``).
FIXED_OVERHEAD = 200_000_000
#: The server reassembler's max_memory_bytes by default, in MB (--memory-mb): part of the
#: fixed overhead, since it does not grow with the model or the number of clients.
SERVER_MEMORY_MB = 16
#: The server consumer's queued.max.messages.kbytes by default (--queue-kb; 0 for
#: librdkafka's, 65536): KafkaTransport's default.
SERVER_QUEUE_KB = 16384


class Worker:
    """A load_worker process: JSON commands on its stdin, one JSON answer a line."""

    def __init__(self, name: str, args: list[str], workdir: Path) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(
                [*WORKER, *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=ROOT,
                text=True,
                start_new_session=True,  # Ctrl-C reaches the benchmark only; it stops them
            )

    def send(self, cmd: dict[str, Any]) -> None:
        stdin: IO[str] | None = self.proc.stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps(cmd) + "\n")
            stdin.flush()
        except BrokenPipeError:
            self.died()

    def read(self) -> dict[str, Any]:
        stdout: IO[str] | None = self.proc.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            self.died()
        doc: dict[str, Any] = json.loads(line)
        return doc

    def died(self) -> None:
        rc = self.proc.wait()
        tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-25:])
        raise BenchError(f"load worker {self.name} exited with code {rc}. Its log:\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"cmd": "stop"})
                self.proc.wait(30)
            except (BenchError, subprocess.TimeoutExpired):
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()


def run_load(
    bootstrap: str,
    clients: int,
    procs: int,
    reps: int,
    kind: str,
    wait_s: float,
    workdir: Path,
    stream: bool = False,
    memory: int = 0,
    queue_kb: int = 0,
) -> list[dict[str, Any]]:
    """Start the server and client processes, run ``reps`` repetitions (a flwire round,
    then the raw transfer), stop them; each repetition's measurements."""
    job = f"load-{uuid.uuid4().hex[:8]}"
    flag = ["--stream"] if stream else []
    server = Worker(
        "server",
        ["server", bootstrap, job, kind, str(clients), str(memory), str(queue_kb), *flag],
        workdir,
    )
    shares = [clients // procs + (p < clients % procs) for p in range(procs)]
    firsts = [sum(shares[:p]) for p in range(procs)]
    workers = [
        Worker(
            f"clients-{p}",
            ["clients", bootstrap, job, kind, str(firsts[p]), str(shares[p]), *flag],
            workdir,
        )
        for p in range(procs)
        if shares[p]
    ]
    everyone = [server, *workers]
    try:
        t0 = time.perf_counter()
        for w in [*workers, server]:
            w.read()  # {"ready": ...}
        log(
            f"{clients} clients in {len(workers)} processes ready "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        out = []
        for rep in range(reps):
            server.send({"cmd": "round", "round": rep, "wait_s": wait_s})
            server.read()  # armed
            for w in workers:
                w.send({"cmd": "round", "round": rep})
            sent = [w.read() for w in workers]
            folded = server.read()
            topic = f"{job}.raw{rep}"
            create_topics(bootstrap, [topic])
            records = sum(c["records"] for s in sent for c in s["clients"].values())
            server.send({"cmd": "raw", "topic": topic, "records": records, "wait_s": wait_s})
            server.read()  # armed
            for w in workers:
                w.send({"cmd": "raw", "topic": topic, "wait_s": wait_s})
            produced = [w.read() for w in workers]
            consumed = server.read()
            rec = measure(rep, sent, folded, produced, consumed)
            log(
                f"rep {rep}: round {rec['wall_s']:.2f} s, {rec['ingest_mbs']:.0f} MB/s, raw "
                f"{rec['raw_mbs']:.0f} MB/s ({rec['ratio']:.2f}x), server RSS +"
                f"{rec['rss_growth'] / MB:.0f} MB"
            )
            out.append(rec)
        return out
    finally:
        for w in everyone:
            w.stop()


def measure(
    rep: int,
    sent: list[dict[str, Any]],
    folded: dict[str, Any],
    produced: list[dict[str, Any]],
    consumed: dict[str, Any],
) -> dict[str, Any]:
    """One repetition's figures, from the processes' answers."""
    clients = {cid: c for s in sent for cid, c in s["clients"].items()}
    folds = folded["folded"]
    if set(folds) != set(clients):
        raise BenchError(f"rep {rep}: the server folded {len(folds)} of {len(clients)} updates")
    start = min(c["start"] for c in clients.values())
    end = max(f["folded"] for f in folds.values())
    wall = end - start
    latency = sorted(folds[c]["folded"] - clients[c]["start"] for c in clients)
    from_sent = sorted(folds[c]["folded"] - clients[c]["encoded"] for c in clients)
    raw_start = min(p["start"] for p in produced)
    raw_wall = consumed["last"] - raw_start
    ingest = folded["bytes"] / wall
    raw = consumed["bytes"] / raw_wall
    hwm = folded["hwm_kb"]
    return {
        "rep": rep,
        "clients": len(clients),
        "wall_s": wall,
        "bytes": folded["bytes"],
        "sent_bytes": sum(c["bytes"] for c in clients.values()),
        "records": sum(c["records"] for c in clients.values()),
        "ingest_mbs": ingest / MB,
        "updates_per_s": len(clients) / wall,
        "latency_p50_s": quantile(latency, 0.5),
        "latency_p99_s": quantile(latency, 0.99),
        "sent_to_folded_p50_s": quantile(from_sent, 0.5),
        "sent_to_folded_p99_s": quantile(from_sent, 0.99),
        "encode_s_median": statistics.median(c["encoded"] - c["start"] for c in clients.values()),
        "rss_before": folded["rss_before_kb"] * 1024,
        "rss_growth": None if hwm is None else (hwm - folded["rss_before_kb"]) * 1024,
        "pending_peak": folded["pending_peak"],
        "memory_peak": folded["memory_peak"],
        "spilled_peak": folded["spilled_peak"],
        "spilled_total": folded["spilled_total"],
        "transfers_peak": folded["transfers_peak"],
        "max_error": folded["max_error"],
        "server_cpu_s": folded["cpu_s"],
        "decode_cpu_s": folded["decode_cpu_s"],
        "fold_cpu_s": folded["fold_cpu_s"],
        "raw_wall_s": raw_wall,
        "raw_bytes": consumed["bytes"],
        "raw_mbs": raw / MB,
        "ratio": ingest / raw,
    }


def quantile(xs: list[float], q: float) -> float:
    """The q-quantile of sorted xs (nearest rank)."""
    return xs[min(len(xs) - 1, max(0, round(q * len(xs) + 0.5) - 1))]


# ----------------------------------------------------------------------------- report


def spread(xs: list[float], fmt: str, scale: float = 1.0) -> str:
    """Median [min-max] (just the value when there is one)."""
    vals = [x / scale for x in xs]
    med = format(statistics.median(vals), fmt)
    if len(vals) == 1:
        return med
    return f"{med} [{format(min(vals), fmt)}-{format(max(vals), fmt)}]"


def _decode_fold(reps: list[dict[str, Any]]) -> str:
    decode = statistics.median(r["decode_cpu_s"] for r in reps)
    fold = statistics.median(r["fold_cpu_s"] for r in reps)
    return f"{decode:.2f} / {fold:.2f}"


def report(reps: list[dict[str, Any]], model_bytes: int, procs: int, memory: int = 0) -> str:
    """The table: one row per figure, median [min-max] over the repetitions."""

    def col(key: str) -> list[float]:
        return [float(r[key]) for r in reps]

    growth = [r["rss_growth"] for r in reps]
    fixed = FIXED_OVERHEAD + memory
    bound = 4 * model_bytes + fixed
    rows = [
        ["round wall time (first send start -> last fold)", spread(col("wall_s"), ".2f") + " s"],
        ["server ingest, MB/s (update records' bytes)", spread(col("ingest_mbs"), ".0f")],
        ["server ingest, updates/s", spread(col("updates_per_s"), ".1f")],
        ["latency send start -> folded, p50", spread(col("latency_p50_s"), ".2f") + " s"],
        ["latency send start -> folded, p99", spread(col("latency_p99_s"), ".2f") + " s"],
        ["  of which encode (client), median", spread(col("encode_s_median"), ".3f") + " s"],
        ["latency encoded -> folded, p50", spread(col("sent_to_folded_p50_s"), ".2f") + " s"],
        ["latency encoded -> folded, p99", spread(col("sent_to_folded_p99_s"), ".2f") + " s"],
        ["server CPU in the round (all threads), s", spread(col("server_cpu_s"), ".2f")],
        ["  of which decode / fold (main thread), s", _decode_fold(reps)],
        ["raw Kafka, first produce -> all consumed", spread(col("raw_wall_s"), ".2f") + " s"],
        ["raw Kafka ingest, MB/s (same records, same bytes)", spread(col("raw_mbs"), ".0f")],
        ["flwire / raw ingest, paired (target >= 0.5x)", spread(col("ratio"), ".2f") + "x"],
    ]
    if all(g is not None for g in growth):
        grown = [float(g) for g in growth]
        rest = [g - p for g, p in zip(grown, col("memory_peak"), strict=True)]
        rows += [
            ["server peak RSS growth, MB", spread(grown, ".0f", MB)],
            ["  in models", spread(grown, ".1f", model_bytes) + "x"],
            [
                f"  target: 4x model + {fixed / MB:.0f} MB = {bound / MB:.0f} MB",
                "met" if max(grown) <= bound else "NOT met",
            ],
            ["  growth less the reassembler's peak in memory, MB", spread(rest, ".0f", MB)],
        ]
    else:
        rows.append(["server peak RSS growth", "not measured (clear_refs refused)"])
    rows += [
        ["  reassembler peak (incomplete transfers), MB", spread(col("pending_peak"), ".0f", MB)],
        ["    of which in memory, peak MB", spread(col("memory_peak"), ".0f", MB)],
        ["    of which in the spill file, peak MB", spread(col("spilled_peak"), ".0f", MB)],
        ["  written to the spill file in the round, MB", spread(col("spilled_total"), ".0f", MB)],
        ["  incomplete transfers at once, peak", spread(col("transfers_peak"), ".0f")],
        ["server RSS before the round, MB", spread(col("rss_before"), ".0f", MB)],
        ["average folded right (max abs error)", f"{max(col('max_error')):.1e}"],
    ]
    n = reps[0]["clients"]
    title = (
        f"many clients: {n} clients in {procs} processes, one update each "
        f"({model_bytes / MB:.1f} MB float32, {statistics.median(col('records')) / n:.0f} "
        f"records, {statistics.median(col('bytes')) / n / MB:.2f} MB), one flwire server "
        f"folding as they arrive; {len(reps)} repetition(s), median [min-max]"
    )
    return f"{title}\n{table([['', 'value']], rows)}"


def fixed_overhead_note(memory: int = 0, queue_kb: int = 0) -> str:
    cap = (
        f"the reassembler's max_memory_bytes ({memory / MB:.0f} MB; incomplete updates past it "
        "wait in its spill file on disk) + "
        if memory
        else ""
    )
    return (
        f"fixed overhead {(FIXED_OVERHEAD + memory) / MB:.0f} MB, whatever the model and the "
        f"clients: {cap}"
        "the server consumer's prefetch queue (librdkafka's queued.max.messages.kbytes, "
        f"{(queue_kb or 65536) // 1024} MiB) "
        "+ the records taken from it into Python at once (at most as much again) + one fetch "
        "response in flight (max.partition.fetch.bytes, 16 MB) + interpreter and allocator "
        "slack (~50 MB). The 4x model: the float64 running sums (2x), one update decoded (1x) "
        "and its payload (1x). Without a memory cap (--memory-mb 0), the reassembler's "
        "incomplete transfers are in neither: they grow with the updates in flight at once "
        "(one partition interleaves every sender's 1 MB parts)."
    )


def run(args: argparse.Namespace) -> int:
    from benchmarks.e2e.load_worker import model
    from benchmarks.models import raw_size

    clients = args.clients or (32 if args.quick else 128)
    procs = args.procs or (2 if args.quick else 4)
    reps = args.reps or (2 if args.quick else 3)
    model_bytes = raw_size(model(args.model))
    memory = int(args.memory_mb * MB)  # the server reassembler's max_memory_bytes
    host = host_info()
    load_before = os.getloadavg()
    how = "streamed transfers" if args.stream else "messages in 1 MB parts"
    print(f"flwire many-clients load over a real Kafka broker ({clients} clients, {how})")
    print(f"flwire: {library_version()}")
    print(host_line(host))
    broker = None if args.bootstrap else Broker(args.port)
    bootstrap = args.bootstrap
    workdir = Path(tempfile.mkdtemp(prefix="flwire-load-"))
    wall0 = time.perf_counter()
    try:
        if broker is not None:
            log(f"starting a private Kafka broker on {broker.bootstrap}")
            broker.start()
            bootstrap = broker.bootstrap
        reps_out = run_load(
            bootstrap,
            clients,
            procs,
            reps,
            args.model,
            args.wait,
            workdir,
            args.stream,
            memory,
            args.queue_kb,
        )
        shutil.rmtree(workdir, ignore_errors=True)  # the workers' logs: kept on a failure
    except BenchError as exc:
        print(f"load benchmark failed: {exc}\n(logs in {workdir})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("load benchmark interrupted", file=sys.stderr)
        return 130
    finally:
        if broker is not None:
            broker.stop()
    load_after = os.getloadavg()
    print()
    print(report(reps_out, model_bytes, procs, memory))
    print(fixed_overhead_note(memory, args.queue_kb))
    print(
        "load average (1, 5, 15 min): before "
        + " ".join(f"{x:.2f}" for x in load_before)
        + ", after "
        + " ".join(f"{x:.2f}" for x in load_after)
        + f"; load wall time {time.perf_counter() - wall0:.0f} s"
    )
    if args.json:
        doc = {
            "host": host,
            "bootstrap": bootstrap,
            "settings": {
                "clients": clients,
                "procs": procs,
                "reps": reps,
                "model": args.model,
                "stream": args.stream,
                "server_memory_mb": args.memory_mb,
                "server_queue_kb": args.queue_kb,
            },
            "model_bytes": model_bytes,
            "fixed_overhead": FIXED_OVERHEAD,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "reps": reps_out,
        }
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2))
        print(f"wrote {out}")
    bad = [r["rep"] for r in reps_out if r["max_error"] > 1e-6]
    if bad:
        print(f"load benchmark: the folded average is wrong in repetitions {bad}")
        return 1
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.e2e.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="32 clients, 2 processes, 2 reps")
    ap.add_argument("--clients", type=int, help="clients (default 128, --quick 32)")
    ap.add_argument("--procs", type=int, help="client processes (default 4, --quick 2)")
    ap.add_argument("--reps", type=int, help="repetitions (default 3, --quick 2)")
    ap.add_argument("--model", choices=["cnn", "tiny"], default="cnn", help="default cnn")
    ap.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("FLWIRE_E2E_KAFKA_PORT", DEFAULT_PORT)),
        help=f"port of the private broker (and port+1) (default {DEFAULT_PORT}, "
        "env FLWIRE_E2E_KAFKA_PORT)",
    )
    ap.add_argument("--bootstrap", metavar="HOST:PORT", help="use this running broker")
    ap.add_argument(
        "--stream",
        action="store_true",
        help="clients send their updates as streamed transfers (EncodeOptions(stream=True))",
    )
    ap.add_argument(
        "--memory-mb",
        type=int,
        default=SERVER_MEMORY_MB,
        help="the server reassembler's max_memory_bytes, in MB: incomplete updates past "
        f"it wait in its spill file (default {SERVER_MEMORY_MB}; 0: no cap, all in memory)",
    )
    ap.add_argument(
        "--queue-kb",
        type=int,
        default=SERVER_QUEUE_KB,
        help=f"the server consumer's queued.max.messages.kbytes (default {SERVER_QUEUE_KB}; "
        "0: librdkafka's, 65536)",
    )
    ap.add_argument("--wait", type=float, default=300.0, help="longest wait for a step (s)")
    ap.add_argument("--json", metavar="PATH", help="write every measurement to PATH as JSON")
    return ap


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    for name in ("clients", "procs", "reps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            ap.error(f"--{name} must be at least 1")
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
