"""What the cross-language conformance tests share: finding a toolchain (a missing
one fails the test with what to install, it never skips), running it with a
bound, its output in the failure report, and the lines a consumer prints for
the streamed-transfer vectors."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest


def tool(name: str, install: str) -> str:
    """The path of ``name``; fails the test with ``install`` when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is needed: {install}", pytrace=False)
    return path


def _text(stream: str | bytes | None) -> str:
    return stream.decode(errors="replace") if isinstance(stream, bytes) else (stream or "")


def run(
    args: Sequence[str], cwd: Path, timeout_s: float, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` in ``cwd`` (``env`` added to the environment); a run past
    ``timeout_s`` fails the test with what it printed."""
    try:
        return subprocess.run(
            list(args),
            cwd=cwd,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"{' '.join(args)} timed out after {timeout_s:g} s\n"
            f"--- stdout ---\n{_text(exc.stdout)}\n--- stderr ---\n{_text(exc.stderr)}"
        )


def report(proc: subprocess.CompletedProcess[str], tail: int = 20000) -> str:
    """A failed run's command, exit status and the end of its output."""
    return (
        f"{' '.join(map(str, proc.args))}: exit status {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout[-tail:]}\n--- stderr ---\n{proc.stderr[-tail:]}"
    )


def expected_stream_lines(vectors: Path) -> list[str]:
    """What a consumer's stream test prints for the streamed transfers and the
    stream refusals (spec 14.5), from the vectors' .json and the manifest:
    ``STREAM <name> tensor <tensor> <dtype> [<dims>] <raw hex>`` per tensor,
    ``STREAM <name> unsigned`` or ``STREAM <name> verified <key id>``, and
    ``STREAM-REFUSAL <name> <check>``; sorted, trailing blanks stripped."""
    manifest = json.loads((vectors / "manifest.json").read_text("utf-8"))
    lines = []
    for entry in manifest["messages"]:
        if entry["message"] != "flwire.v1.StreamPart":
            continue
        doc = json.loads((vectors / entry["files"]["json"]["path"]).read_text("utf-8"))
        for t in doc["tensors"]:
            shape = "[" + ",".join(str(d) for d in t["shape"]) + "]"
            lines.append(
                f"STREAM {doc['name']} tensor {t['name']} {t['dtype']} {shape} {t['raw_hex']}"
            )
        signed = f"verified {doc['signature']['key_id']}" if doc["signed"] else "unsigned"
        lines.append(f"STREAM {doc['name']} {signed}")
    for r in manifest["stream_refusals"]:
        lines.append(f"STREAM-REFUSAL {r['name']} {r['check']}")
    return sorted(line.rstrip() for line in lines)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def stream_lines(stdout: str) -> list[str]:
    """The ``STREAM`` lines a consumer printed, sorted, trailing blanks and
    terminal colour codes (Maven writes some into its test output) stripped."""
    lines = (_ANSI.sub("", line).rstrip() for line in stdout.splitlines())
    return sorted(line for line in lines if line.startswith("STREAM"))
