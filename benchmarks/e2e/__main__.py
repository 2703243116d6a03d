"""flwire end to end over a real Apache Kafka broker, against the old JSON/base64 messages.

Starts a private single-node broker (kafka/broker.sh, port 19192 by default) whose record
limit is raised (to 255 MiB, the most Kafka takes) so that the old path's one-record messages
can pass at all, runs the scenarios, prints side-by-side tables, and stops and deletes the
broker at the end.

* A, one FL round: the server broadcasts the global SimpleCNN weights (1.2M float32
  parameters, 4.8 MB); each of N clients (default 8), each in its own OS process with its
  own producer and consumer, receives and decodes them, moves every weight a little (a
  stand-in for training) and sends its update back; the round ends when the server has
  received and decoded all N. One warm-up round, then R timed rounds (median [min-max]).
* B, one big update: client c0 sends a ~100M-parameter float32 model (``--quick``: ~10M)
  to the server, from the start of its encode to the end of the server's decode.

* Many clients (``--load``, or ``python -m benchmarks.e2e.load``; its own options follow
  ``--load``): 128 clients in 4 processes send one CNN update each in one round to a server
  that folds them as they arrive, against raw Kafka moving the same records (see ``load``).

flwire: the SDK itself with its defaults (Channel over KafkaTransport, message builders,
decode_message), records of at most 1 MB (Kafka's default limit), so big messages travel in
parts. Old: the old JSON message with base64(gzip-9(pickle)) weights as one record, plain
confluent-kafka producer/consumer. Same topic layout (flwire.<job>.broadcast/updates/control)
for both, on the same broker; the two paths run one after the other, never at the same time.

    make bench                                       # the codec benchmark, then this
    .venv/bin/python -m benchmarks.e2e               # 1.5-2 minutes on 2 cores
    .venv/bin/python -m benchmarks.e2e --quick --json bench-results/e2e.json
    .venv/bin/python -m benchmarks.e2e --bootstrap 127.0.0.1:9092   # your broker

Run it from the repository root.
MB = 10^6 bytes. Bytes on the wire = the sum of the records' value sizes (keys, headers
and Kafka framing not counted).

Modules: ``broker`` (the private broker), ``phases`` (settings, plan, the client processes
seen from the server), ``client`` (one client process), ``servers`` (the server side of each
path), ``wire`` (what server and clients share), ``results`` (what is recorded and summed
up), ``report`` (what is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks import models
from benchmarks.e2e.broker import DEFAULT_PORT, Broker
from benchmarks.e2e.phases import ClientProcesses, ServerPhase, Settings, make_plan
from benchmarks.e2e.report import paths_line, tables
from benchmarks.e2e.results import Expected, summarize
from benchmarks.e2e.servers import flwire_server, legacy_server
from benchmarks.e2e.wire import BenchError, create_topics, log
from benchmarks.models import StateDict, raw_size
from benchmarks.tables import MB, host_info, host_line, library_version
from flwire.transport import TopicLayout


def _consumer_options(items: list[str]) -> dict[str, int | str]:
    """--flwire-consumer KEY=VALUE items as librdkafka properties."""
    consumer: dict[str, int | str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--flwire-consumer wants KEY=VALUE, got {item!r}")
        value = value.strip()
        consumer[key.strip()] = int(value) if value.isdigit() else value
    return consumer


def settings(args: argparse.Namespace) -> Settings:
    consumer = _consumer_options(args.flwire_consumer)
    return Settings(
        clients=args.clients,
        rounds=args.rounds if args.rounds is not None else (2 if args.quick else 5),
        warmup=1,
        big="none" if args.no_big else ("quick" if args.quick else "full"),
        legacy_big=not args.no_legacy_big,
        wait_s=args.wait,
        quick=args.quick,
        flwire_options={"consumer": consumer} if consumer else {},
    )


def run_phases(
    st: Settings, bootstrap: str, workdir: Path, base: StateDict, expected: Expected
) -> tuple[dict[str, Any], dict[str, Any], dict[str, float]]:
    """The clients and the server through every phase of the plan: the server's records,
    the clients' records, and the seconds each phase took."""
    plan = make_plan(st)
    create_topics(bootstrap, [t for ph in plan for t in TopicLayout(ph["job"]).all])
    t0 = time.perf_counter()
    clients = ClientProcesses(st.clients, bootstrap, plan, workdir)
    log(f"started {st.clients} client processes (logs in {workdir})")
    try:
        server: dict[str, Any] = {}
        seconds: dict[str, float] = {}
        for ph in plan:
            side = ServerPhase.of(st, ph, clients, expected)
            if ph["kind"] == "flwire":
                server[ph["name"]] = asyncio.run(flwire_server(side, bootstrap, base))
            else:
                server[ph["name"]] = legacy_server(side, bootstrap, base)
            seconds[f"{ph['name']}_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
        return server, clients.results(st.wait_s), seconds
    finally:
        clients.stop()


def run(st: Settings, port: int, bootstrap: str | None, json_path: str | None) -> int:
    """Start the broker (unless ``bootstrap`` names one), run, report; the exit code."""
    wall0 = time.perf_counter()
    base = models.cnn()
    expected = Expected(base, st.big)
    host = host_info()
    quick = "  [QUICK: ~10M-parameter stand-in for the 100M model]" if st.quick else ""
    print(f"flwire end-to-end benchmark over a real Kafka broker{quick}")
    print(f"flwire: {library_version()}")
    print(host_line(host))

    broker = None if bootstrap else Broker(port)
    workdir = Path(tempfile.mkdtemp(prefix="flwire-e2e-"))
    steps: dict[str, float] = {}
    ok = False
    try:
        if broker is not None:
            log(f"starting a private Kafka broker on {broker.bootstrap} (record limit raised)")
            steps["broker_start_s"] = broker.start()
            bootstrap = broker.bootstrap
            log(f"broker up in {steps['broker_start_s']:.1f} s")
        assert bootstrap is not None
        server, client_results, seconds = run_phases(st, bootstrap, workdir, base, expected)
        steps.update(seconds)
        ok = True
    except BenchError as exc:
        print(f"e2e benchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("e2e benchmark interrupted; stopping the clients and the broker", file=sys.stderr)
        return 130
    finally:
        if broker is not None:
            t0 = time.perf_counter()
            broker.stop()
            steps["broker_stop_s"] = time.perf_counter() - t0
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"client logs kept in {workdir}", file=sys.stderr)

    summary = {p: summarize(server[p], client_results, p) for p in server}
    big_desc = None
    if st.big != "none":
        big_raw = raw_size(expected.big)
        params = sum(t.numel() for t in expected.big.values())
        big_desc = f"{params / 1e6:.1f}M float32 parameters ({big_raw / MB:.0f} MB)"
        for s in summary.values():
            if "big" in s:
                s["big"]["raw_bytes"] = big_raw
    wall = time.perf_counter() - wall0
    print(paths_line(st.flwire_options))
    print()
    print(tables(summary, st.clients, st.warmup, raw_size(base), big_desc))
    print(
        f"\nclients registered after {summary['flwire']['clients_ready_s']:.1f} s (process "
        "start, imports; not in any figure above); time per step: "
        + ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in steps.items())
        + f"; e2e wall time {wall:.0f} s"
    )
    if json_path:
        doc = {
            "host": host,
            "settings": asdict(st),
            "bootstrap": bootstrap,
            "summary": summary,
            "server": server,
            "clients": client_results,
            "phases_s": steps,
            "wall_s": wall,
        }
        out = Path(json_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2))
        print(f"wrote {out}")
    bad = [p for p, s in summary.items() if not s["exact"] or not s.get("big", {}).get("exact", 1)]
    if bad:
        print(f"e2e benchmark: decoded weights differ from those sent ({', '.join(bad)})")
        return 1
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="~10M model in scenario B, 2 rounds")
    ap.add_argument("--clients", type=int, default=8, help="clients in scenario A (default 8)")
    ap.add_argument("--rounds", type=int, help="timed rounds (default 5, --quick 2)")
    ap.add_argument("--no-big", action="store_true", help="skip scenario B")
    ap.add_argument(
        "--no-legacy-big", action="store_true", help="skip the old path of scenario B (~45 s)"
    )
    ap.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("FLWIRE_E2E_KAFKA_PORT", DEFAULT_PORT)),
        help=f"port of the private broker (and port+1) (default {DEFAULT_PORT}, "
        "env FLWIRE_E2E_KAFKA_PORT)",
    )
    ap.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        help="use this running broker instead of starting one (its message.max.bytes must "
        "be raised for the old path)",
    )
    ap.add_argument(
        "--flwire-consumer",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="try an extra librdkafka consumer property on flwire's transport (repeatable), "
        "e.g. max.partition.fetch.bytes=16777216",
    )
    ap.add_argument("--wait", type=float, default=180.0, help="longest wait for one message (s)")
    ap.add_argument("--json", metavar="PATH", help="write every measurement to PATH as JSON")
    ap.add_argument(
        "--load",
        action="store_true",
        help="run the many-clients load scenario instead (python -m benchmarks.e2e.load; "
        "--load --help shows its options)",
    )
    return ap


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--load" in argv:  # the many-clients scenario, with its own options
        from benchmarks.e2e.load import main as load_main

        return load_main([a for a in argv if a != "--load"])
    ap = parser()
    args = ap.parse_args(argv)
    if args.clients < 1 or (args.rounds is not None and args.rounds < 1):
        ap.error("--clients and --rounds must be at least 1")
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    return run(settings(args), args.port, args.bootstrap, args.json)


if __name__ == "__main__":
    sys.exit(main())
