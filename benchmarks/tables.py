"""What both benchmarks print the same way: units, times, aligned tables, the commit under
test and the host. MB = 10^6 bytes throughout."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

MB = 1e6
#: The repository root (both programs run from it, as ``python -m benchmarks.<name>``).
ROOT = Path(__file__).resolve().parent.parent


def fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1:
        return f"{s * 1e3:.3g} ms" if s < 0.1 else f"{s * 1e3:.0f} ms"
    return f"{s:.2f} s"


def table(headers: list[list[str]], rows: list[list[str]], left: int = 1) -> str:
    """Columns aligned; the first `left` columns are left-aligned, the rest right."""
    cols = len(headers[0])
    widths = [max(len(r[i]) for r in [*headers, *rows]) for i in range(cols)]

    def line(r: list[str]) -> str:
        cells = [r[i].ljust(widths[i]) if i < left else r[i].rjust(widths[i]) for i in range(cols)]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([*(line(h) for h in headers), rule, *(line(r) for r in rows)])


def library_version() -> str:
    """The commit under test, and whether the library sources differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "python"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head or 'unknown'}{' + uncommitted changes under python/' if dirty else ''}"


def host_info() -> dict[str, Any]:
    """The machine and the versions the timings depend on (for the JSON output)."""
    return {
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "load_average_1m": os.getloadavg()[0],
    }


def host_line(host: dict[str, Any]) -> str:
    return (
        f"host: {host['machine']}, {host['cores']} cores, python {host['python']}, torch "
        f"{host['torch']} ({host['torch_threads']} threads), numpy {host['numpy']}; load "
        f"average {host['load_average_1m']:.2f} at start (other work on the machine skews "
        "timings)"
    )
