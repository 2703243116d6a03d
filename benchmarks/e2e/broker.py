"""The end-to-end benchmark's private Kafka broker: a kafka/broker.sh broker on its own port,
record limit raised for the old path's one-record messages, started fresh and deleted after."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.e2e.wire import LEGACY_RECORD_LIMIT, BenchError, log
from benchmarks.tables import ROOT

BROKER_SH = ROOT / "kafka" / "broker.sh"
#: The benchmark's own port (and port + 1 for the controller); 9092 and 19092 are others'.
DEFAULT_PORT = 19192


class Broker:
    """A private broker of kafka/broker.sh on ``port``, record limit raised; deleted after."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        home = Path(os.environ.get("FLWIRE_KAFKA_HOME", Path.home() / ".cache/flwire/kafka"))
        self.logs = home / f"logs-{port}"
        self.env = {
            **os.environ,
            "FLWIRE_KAFKA_PORT": str(port),
            "FLWIRE_KAFKA_CONTROLLER_PORT": str(port + 1),
            "FLWIRE_KAFKA_MESSAGE_MAX_BYTES": str(LEGACY_RECORD_LIMIT),
            # The broker holds a whole produce request (old path: up to 255 MiB) in its heap.
            "FLWIRE_KAFKA_HEAP": os.environ.get("FLWIRE_KAFKA_HEAP", "2g"),
            "FLWIRE_PYTHON": sys.executable,
        }
        self.started = False

    def _run(self, command: str, timeout: float) -> subprocess.CompletedProcess[str] | None:
        """``broker.sh command`` on this port; None when it ran past ``timeout``."""
        try:
            return subprocess.run(
                ["bash", str(BROKER_SH), command],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return None

    def start(self) -> float:
        """Start a fresh broker; the seconds it took. BenchError, with what to do, if not."""
        t0 = time.perf_counter()
        status = self._run("status", 30)
        if status is not None and status.returncode == 0:
            raise BenchError(
                f"a broker of kafka/broker.sh already runs on port {self.port} (another "
                "benchmark, or yours). This benchmark starts, raises the limit of and then "
                f"deletes a broker of its own: stop that one (FLWIRE_KAFKA_PORT={self.port} "
                "bash kafka/broker.sh down), choose another port (--port), or run against it "
                f"with --bootstrap 127.0.0.1:{self.port}."
            )
        # A fresh cluster (an earlier run may have been killed before it cleaned up).
        self._run("reset", 60)
        self.started = True
        result = self._run("up", 240)
        if result is None or result.returncode != 0:
            output = "" if result is None else (result.stdout + result.stderr).strip()
            raise BenchError(
                f"could not start the benchmark's Kafka broker on {self.bootstrap} "
                f"(`FLWIRE_KAFKA_PORT={self.port} bash kafka/broker.sh up` "
                f"{'timed out' if result is None else f'exited {result.returncode}'}).\n"
                f"{output}\n"
                f"Its log: {self.logs}/server.log (JVM output: {self.logs}/stdout.log). "
                "Needs Java 17+; the first start downloads the jars with Maven "
                "(`bash kafka/broker.sh fetch`). If the port is taken, use --port N (N and "
                "N+1 must be free). To skip this part: make bench BENCH_E2E=0."
            )
        return time.perf_counter() - t0

    def stop(self) -> None:
        """Stop the broker and delete its data; a warning (no error) if that fails."""
        if not self.started:
            return
        self.started = False
        result = self._run("reset", 90)
        if result is None or result.returncode != 0:
            log(
                f"warning: could not stop the benchmark's broker on port {self.port}; stop it "
                f"with `FLWIRE_KAFKA_PORT={self.port} bash kafka/broker.sh reset`"
            )
