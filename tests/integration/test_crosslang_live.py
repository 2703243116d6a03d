"""Cross-language consumers on a real job's Kafka traffic (issue 16).

A short Python FL job (tests/crosslang/live_job.py) sends a multi-part global
update and client updates through flwire's Kafka transport at the default 1 MB
record limit (one of them streamed, spec section 14.5), plus records a consumer
must reassemble itself (a part delivered twice, two messages' parts
interleaved). Each consumer, written in another
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
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from crosslang_tools import report, run, tool

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
    return tool(name, f"{install} (to build and run a cross-language consumer)")


def _build(cmd: list[str], cwd: Path) -> None:
    proc = run(cmd, cwd, BUILD_TIMEOUT_S)
    assert proc.returncode == 0, f"the build in {cwd} failed\n{report(proc, 10000)}"


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
    assert len(want) == 8
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


def known_values(j: int, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """The values a consumer's produce-update mode writes into tensor j (0-based, in
    the global model's order), computed here with numpy, apart from any consumer: for
    element i (flat C order), h = ((i + 1) * 2654435761 + j * 40503) mod 2^32;
    float32 ((h >> 8) - 2^23) / 256, float16 ((h >> 21) - 1024) / 16, int64 h."""
    n = int(np.prod(shape, dtype=np.int64))
    i = np.arange(n, dtype=np.uint64)
    h = ((i + np.uint64(1)) * np.uint64(2654435761) + np.uint64(j * 40503)) & np.uint64(0xFFFFFFFF)
    if dtype == torch.float32:
        a: np.ndarray = ((h >> np.uint64(8)).astype(np.int64) - 2**23) / 256
        return torch.from_numpy(a.astype(np.float32).reshape(shape))
    if dtype == torch.float16:
        a = ((h >> np.uint64(21)).astype(np.int64) - 1024) / 16
        return torch.from_numpy(a.astype(np.float16).reshape(shape))
    assert dtype == torch.int64, dtype
    return torch.from_numpy(h.astype(np.int64).reshape(shape))


def python_client(seed: int, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Python client's weights in the global model's layout: one random row repeated,
    so that zstd makes the update small (one record: only the consumer's is split)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in like.items():
        row = (1, *t.shape[1:]) if t.dim() else ()
        if t.is_floating_point():
            r = torch.randn(row, generator=g).to(t.dtype)
        else:
            r = torch.randint(0, 1000, row, generator=g, dtype=t.dtype)
        out[name] = r.expand(t.shape).contiguous()
    return out


@pytest.mark.parametrize("consumer", sorted(CONSUMERS))
def test_consumer_writes_an_update_the_server_aggregates(
    consumer: str, bootstrap: str, job_id: str, tmp_path: Path
) -> None:
    # The global model the consumer's client update follows: 4 tensors, 4.2 MB.
    model = live_job.global_state()
    global_file = tmp_path / "global.bin"
    global_file.write_bytes(messages.global_update(live_job.ROUND, model).to_bytes())
    mine = {
        name: known_values(j, t.dtype, tuple(t.shape)) for j, (name, t) in enumerate(model.items())
    }
    py = {"py-1": (python_client(1, model), 100), "py-2": (python_client(2, model), 200)}
    client_id, examples = f"{consumer}-client", 300
    live_job.send_client_updates(bootstrap, job_id, [(cid, st, n) for cid, (st, n) in py.items()])
    proc = run_consumer(
        consumer, "produce-update",
        "--bootstrap", bootstrap,
        "--topic", TopicLayout(job_id).updates,
        "--client-id", client_id,
        "--round", str(live_job.ROUND),
        "--from-global", str(global_file),
        "--examples", str(examples),
    )  # fmt: skip
    report = f"exit status {proc.returncode}\n--- stderr ---\n{proc.stderr[-10000:]}"
    assert proc.returncode == 0, report
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    want_line = {**live_job.summary_of(client_id, mine), "message_id": line["message_id"]}
    assert line == want_line, report

    average, seen_examples, stats = live_job.serve_round(bootstrap, job_id, clients=3)
    assert seen_examples == {"py-1": 100, "py-2": 200, client_id: examples}
    assert stats["received_parts"] >= 2, f"the consumer's update was not split: {stats}"
    total = 100 + 200 + examples
    for name, t in model.items():
        if t.is_floating_point():
            want = (
                py["py-1"][0][name].double().numpy() * 100
                + py["py-2"][0][name].double().numpy() * 200
                + mine[name].double().numpy() * examples
            ) / total
            tol = 1e-6 if t.dtype == torch.float32 else 1e-3
            np.testing.assert_allclose(
                average[name].double().numpy(), want, rtol=tol, atol=tol, err_msg=name
            )
        else:  # integer tensors: the largest contributor's (the consumer's)
            assert torch.equal(average[name], mine[name]), name
