"""What the cross-language conformance tests share: finding a toolchain (a missing
one fails the test with what to install, it never skips) and running it with a
bound, its output in the failure report."""

from __future__ import annotations

import os
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
