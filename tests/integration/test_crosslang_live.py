"""Cross-language consumers on a real job's Kafka traffic (issue 16).

A short Python FL job (tests/crosslang/live_job.py) sends a multi-part global
update and client updates through flwire's Kafka transport at the default 1 MB
record limit, plus records a consumer must reassemble itself (a part delivered
twice, two messages' parts interleaved). Each consumer, written in another
language from docs/wire-format.md, runs as a separate process, reads the job's
topics from the earliest offset, and prints one JSON line per distinct message
(type, sender, round, tensor count, bytes, SHA-256 of the decoded tensors); the
test compares them, field for field, with what Python sent.

CONSUMERS maps a consumer's name to the function that builds it (once per
session) and returns its command line. A missing toolchain fails the test with
what to install; it never skips.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from flwire import messages
from flwire.transport import TopicLayout

ROOT = Path(__file__).resolve().parents[2]
CROSSLANG = ROOT / "tests" / "crosslang"
BUILD_TIMEOUT_S = 900
RUN_TIMEOUT_S = 120


def _load_harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("crosslang_live_job", CROSSLANG / "live_job.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


live_job = _load_harness()


def _tool(name: str, install: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is needed to build and run a cross-language consumer: {install}",
            pytrace=False,
        )
    return path


def _build(cmd: list[str], cwd: Path) -> None:
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(cmd)} (in {cwd}) took more than {BUILD_TIMEOUT_S} s")
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} (in {cwd}) failed with {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout[-10000:]}\n--- stderr ---\n{proc.stderr[-10000:]}"
    )


def java_consumer() -> list[str]:
    """tests/crosslang/java: `mvn package` makes target/flwire-consume.jar."""
    java = _tool("java", "install a JDK 17+ (e.g. apt-get install openjdk-17-jdk-headless)")
    mvn = _tool("mvn", "install Maven 3.8+ (e.g. apt-get install maven)")
    here = CROSSLANG / "java"
    _build([mvn, "-B", "-q", "-DskipTests", "package"], here)
    return [java, "-jar", str(here / "target" / "flwire-consume.jar")]


def ts_consumer() -> list[str]:
    """tests/crosslang/ts: `npm ci` (when node_modules is older than package-lock.json)
    and `npm run build` (tsc) make dist/src/cli.js."""
    node = _tool("node", "install Node.js 20+ with npm (https://nodejs.org/)")
    npm = _tool("npm", "install npm (it comes with Node.js: https://nodejs.org/)")
    here = CROSSLANG / "ts"
    installed = here / "node_modules" / ".package-lock.json"
    if (
        not installed.exists()
        or installed.stat().st_mtime < (here / "package-lock.json").stat().st_mtime
    ):
        _build([npm, "ci", "--no-audit", "--no-fund"], here)
    _build([npm, "run", "build"], here)
    return [node, str(here / "dist" / "src" / "cli.js")]


#: name -> builds the consumer (once per session) and returns its command line.
CONSUMERS: dict[str, Callable[[], list[str]]] = {
    "java": java_consumer,
    "ts": ts_consumer,
}


@functools.cache
def consumer_command(name: str) -> tuple[str, ...]:
    return tuple(CONSUMERS[name]())


def run_consumer(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [*consumer_command(name), *args]
    try:
        return subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
            env={**os.environ},
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(cmd)} ran more than {RUN_TIMEOUT_S} s\n{exc.stderr!r}")


@pytest.mark.parametrize("consumer", sorted(CONSUMERS))
def test_consumer_reads_a_live_job(consumer: str, bootstrap: str, job_id: str) -> None:
    sent = live_job.run_job(bootstrap, job_id)
    want = sent.expected_lines()
    assert len(want) == 7
    proc = run_consumer(
        consumer,
        "--bootstrap", bootstrap,
        "--topics", ",".join(sent.topics),
        "--expect", str(len(want)),
        "--timeout-s", "60",
    )  # fmt: skip
    report = f"exit status {proc.returncode}\n--- stderr ---\n{proc.stderr[-10000:]}"
    assert proc.returncode == 0, report
    got = [json.dumps(json.loads(line), sort_keys=True) for line in proc.stdout.splitlines()]
    assert got == want, report
