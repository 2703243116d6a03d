"""Run `flwire demo` as a user would, in a process of its own, and stop it with a
signal once it is under way (tests of Ctrl-C, SIGTERM and a killed demo)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import psutil


@dataclass
class DemoProcess:
    """A running ``flwire demo``: its process, its output so far, its clients."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @classmethod
    def start(cls, *args: str) -> DemoProcess:
        # A process group of its own, like a shell's foreground job, with SIGINT at its
        # default (a shell's background jobs ignore it, and Python keeps that).
        proc = subprocess.Popen(
            [sys.executable, "-m", "flwire.cli", "demo", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        demo = cls(proc)
        demo.reader = threading.Thread(target=demo._read, daemon=True)
        demo.reader.start()
        return demo

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float) -> None:
        """Wait until a line of the output contains ``text``."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in the demo's output:\n{self.output}")
            time.sleep(0.1)

    def clients(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def ctrl_c(self) -> None:
        """What a terminal does on Ctrl-C: SIGINT to the foreground process group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def finish(self, timeout: float) -> int:
        rc = self.proc.wait(timeout=timeout)
        if self.reader is not None:
            self.reader.join(timeout=5)
        return rc

    @classmethod
    def run(cls, *args: str, timeout: float) -> tuple[int, DemoProcess]:
        """Start a demo and wait for its end (killed if it outlives ``timeout``, and
        the wait's TimeoutExpired raised); its exit status, and the demo."""
        demo = cls.start(*args)
        try:
            return demo.finish(timeout=timeout), demo
        finally:
            if demo.proc.poll() is None:
                demo.proc.kill()
