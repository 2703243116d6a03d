"""The run as the server sees it: its settings, its plan (the flwire phase, then the old
one, each on topics of its own), the client processes (``python -m benchmarks.e2e.client``,
one OS process each: start them, notice one that died or a message that never came, collect
their results, stop them), and one phase as a server side (``servers``) takes it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.e2e.results import Expected
from benchmarks.e2e.wire import BenchError
from benchmarks.tables import ROOT
from flwire.transport import TopicLayout

#: How the server starts a client process (from the repository root).
CLIENT_COMMAND = [sys.executable, "-m", "benchmarks.e2e.client"]


@dataclass
class Settings:
    clients: int
    rounds: int
    warmup: int
    big: str  # "full", "quick" or "none"
    legacy_big: bool
    wait_s: float  # longest wait for any one message
    quick: bool
    #: Extra transport tuning for flwire (empty: the SDK's defaults).
    flwire_options: dict[str, Any] = field(default_factory=dict)


def make_plan(st: Settings) -> list[dict[str, Any]]:
    """The phases, in order (flwire, then old), each on topics of its own."""
    run_id = uuid.uuid4().hex[:8]
    big = st.big != "none"
    plan = [
        {"name": "flwire", "kind": "flwire", "options": st.flwire_options, "big": big},
        {"name": "old", "kind": "old", "options": {}, "big": big and st.legacy_big},
    ]
    for ph in plan:
        ph["job"] = f"e2e-{run_id}-{ph['name']}"
    return plan


class ClientProcesses:
    """N client processes, each with its own log and result file in ``workdir``."""

    def __init__(self, n: int, bootstrap: str, plan: list[dict[str, Any]], workdir: Path) -> None:
        self.workdir = workdir
        self.ids = [f"c{i}" for i in range(n)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        for cid in self.ids:
            with open(self.log_path(cid), "wb") as out:
                self.procs[cid] = subprocess.Popen(
                    [
                        *CLIENT_COMMAND,
                        bootstrap,
                        cid,
                        json.dumps(plan),
                        str(self.result_path(cid)),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=ROOT,
                    start_new_session=True,  # Ctrl-C reaches the server only; it stops them
                )

    def log_path(self, cid: str) -> Path:
        return self.workdir / f"client-{cid}.log"

    def result_path(self, cid: str) -> Path:
        return self.workdir / f"client-{cid}.json"

    def _tail(self, cid: str, lines: int = 25) -> str:
        try:
            text = self.log_path(cid).read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:]) or "(empty log)"

    def check(self, waiting_for: str) -> None:
        """Raise if a client process has died."""
        for cid, proc in self.procs.items():
            rc = proc.poll()
            if rc is not None and (rc != 0 or not self.result_path(cid).exists()):
                raise BenchError(
                    f"client {cid} (pid {proc.pid}) exited with code {rc} while the server "
                    f"waited for {waiting_for}. Last lines of its log "
                    f"{self.log_path(cid)}:\n{self._tail(cid)}"
                )

    def still_waiting(self, phase: str, what: str, since: float, wait_s: float) -> None:
        """Called while the server waits for ``what`` (since ``since``, time.monotonic()):
        raise if a client has died or ``wait_s`` has passed."""
        self.check(what)
        if time.monotonic() - since > wait_s:
            raise BenchError(
                f"{phase}: no {what} within {wait_s:.0f} s (--wait); client logs in {self.workdir}"
            )

    def results(self, timeout: float) -> dict[str, Any]:
        """Each client's result (JSON), once all have exited."""
        deadline = time.monotonic() + timeout
        out = {}
        for cid, proc in self.procs.items():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise BenchError(
                    f"client {cid} did not exit {timeout:.0f} s after the last shutdown; its "
                    f"log: {self.log_path(cid)}"
                ) from None
            self.check("the clients' results")
            out[cid] = json.loads(self.result_path(cid).read_text())
        return out

    def stop(self) -> None:
        """Terminate those still running (kill after 5 s)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class ServerPhase:
    """One phase of the plan as a server side sees it: the settings, the phase's topics,
    the client processes and the weights it should decode."""

    st: Settings
    name: str
    layout: TopicLayout
    with_big: bool  # also run scenario B in this phase
    clients: ClientProcesses
    expected: Expected

    @classmethod
    def of(
        cls, st: Settings, phase: dict[str, Any], clients: ClientProcesses, expected: Expected
    ) -> ServerPhase:
        """From a phase of the plan (name, job, big)."""
        layout = TopicLayout(phase["job"])
        return cls(st, phase["name"], layout, bool(phase["big"]), clients, expected)
