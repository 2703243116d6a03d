"""Peak extra memory (RSS high-water mark) of each path's first encode and decode, measured
in a fresh process that re-runs this program with --mem-probe (see mem_child)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import crc32c
import numpy as np
import torch

from benchmarks.codec.fidelity import zero_copy_count
from benchmarks.codec.paths import BenchPath, all_paths, failure
from benchmarks.models import StateDict
from benchmarks.tables import ROOT

# What first_calls starts for each probe: this program, whose entry point dispatches
# --mem-probe to mem_child.
PROBE_COMMAND = [sys.executable, "-m", "benchmarks.codec", "--mem-probe"]

_libc: Any = None
with contextlib.suppress(OSError, TypeError):
    _libc = ctypes.CDLL(ctypes.util.find_library("c"))


def malloc_trim() -> None:
    """Give freed heap memory back to the kernel, so RSS-before is not inflated by it."""
    if _libc is not None and hasattr(_libc, "malloc_trim"):
        _libc.malloc_trim(0)


def proc_status() -> dict[str, int]:
    """VmRSS and VmHWM in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def hwm_reset_works() -> bool:
    """True when writing 5 to /proc/self/clear_refs resets VmHWM on this kernel."""
    try:
        gc.collect()
        malloc_trim()
        reset_hwm()
        before = proc_status()["VmHWM"]
        block = np.ones(96 << 20, dtype=np.uint8)  # touched: 96 MiB resident
        grown = proc_status()["VmHWM"]
        del block
        gc.collect()
        malloc_trim()
        reset_hwm()
        after = proc_status()["VmHWM"]
    except OSError:
        return False
    return grown - before > (80 << 20) and grown - after > (80 << 20)


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def fix_mmap_threshold() -> None:
    """Serve every allocation >= 128 KiB with its own mmap, returned to the kernel on free.

    glibc otherwise raises the threshold after big frees and keeps freed blocks resident
    in its arenas (malloc_trim does not release them all): the next call then reuses them
    without raising RSS, and its peak reads low. Used in the memory-measuring process only.
    """
    if _libc is not None and hasattr(_libc, "mallopt"):
        _libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)


def dump_state_dict(sd: StateDict, folder: Path) -> None:
    """Raw bytes + layout, so a fresh process can rebuild sd with no transient copies."""
    layout = []
    with open(folder / "tensors.bin", "wb") as f:
        for name, t in sd.items():
            raw = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
            f.write(raw.data)
            layout.append([name, str(t.dtype).removeprefix("torch."), list(t.shape)])
    (folder / "layout.json").write_text(json.dumps(layout))


def load_state_dict(folder: Path) -> StateDict:
    sd = {}
    layout = json.loads((folder / "layout.json").read_text())
    with open(folder / "tensors.bin", "rb") as f:
        for name, dtype, shape in layout:
            t = torch.empty(shape, dtype=getattr(torch, dtype))
            if t.numel():
                f.readinto(t.reshape(-1).view(torch.uint8).numpy().data)
            sd[name] = t
    return sd


def fingerprint(sd: StateDict) -> list[int]:
    """CRC-32C of every tensor's bytes: shows whether a path wrote into its input."""
    return [crc32c.crc32c(t.reshape(-1).view(torch.uint8).numpy().data) for t in sd.values()]


def mem_child(folder: str, path_names: list[str], reset: bool) -> None:
    """Run in a fresh process: the first encode and decode of each path, with their peak
    extra RSS, wall time, output size, the path's check (bit-exact, or within its lossy
    bound) and zero-copy count (JSON on stdout).

    peak = VmHWM during the call - VmRSS just before it. With ``reset`` the high-water
    mark is reset before every call. Without it (kernels that cannot) the parent starts one
    process per path and only the encode peak is valid: loading the state dict is made
    peak-free, so VmHWM before the encode is VmRSS.
    """
    fix_mmap_threshold()
    sd = load_state_dict(Path(folder))
    before = fingerprint(sd)
    paths = all_paths()
    out: dict[str, dict[str, Any]] = {}
    for name in path_names:
        path = paths[name]
        rec: dict[str, Any] = {"skipped": path.supports(sd)}
        out[name] = rec
        if rec["skipped"]:
            continue
        try:
            rec.update(_first_call(path, sd, reset))
        except Exception as exc:  # reported in the path's row; the other paths still run
            rec["failed"] = failure(exc)
        if fingerprint(sd) != before:  # the next paths must see the original values
            rec["failed"] = "it modified the input state dict in place"
            sd = load_state_dict(Path(folder))
        gc.collect()
    print(json.dumps(out))


def _first_call(path: BenchPath, sd: StateDict, reset: bool) -> dict[str, Any]:
    """One encode and one decode of ``path``, measured (see mem_child)."""
    rec: dict[str, Any] = {}
    blob, rec["encode_s"], rec["encode_peak"] = _timed_peak(path.encode, sd, reset)
    blob = path.handover(blob)
    rec["size"] = len(memoryview(blob).cast("B"))
    decoded, rec["decode_s"], decode_peak = _timed_peak(path.decode, blob, reset)
    rec["decode_peak"] = decode_peak if reset else None
    rec["check"] = asdict(path.check(sd, decoded))
    rec["zero_copy"] = zero_copy_count(blob, decoded)
    return rec


def _timed_peak(fn: Callable[[Any], Any], arg: Any, reset: bool) -> tuple[Any, float, int]:
    """(result, seconds, peak extra RSS in bytes) of one call, from a trimmed heap."""
    gc.collect()
    malloc_trim()
    rss0 = proc_status()["VmRSS"]
    if reset:
        reset_hwm()
    t0 = time.perf_counter()
    result = fn(arg)
    seconds = time.perf_counter() - t0
    return result, seconds, max(0, proc_status()["VmHWM"] - rss0)


def first_calls(
    sd: StateDict, path_names: list[str], reset: bool, log: Callable[[str], None]
) -> dict[str, dict[str, Any]]:
    """Each path's first encode/decode, made in fresh processes (see mem_child)."""
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="flwire-bench-") as tmp:
        dump_state_dict(sd, Path(tmp))
        groups = [path_names] if reset else [[p] for p in path_names]
        for group in groups:
            cmd = [*PROBE_COMMAND, tmp, "--paths", ",".join(group)]
            if not reset:
                cmd.append("--mem-no-reset")
            proc = None
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
                results.update(json.loads(proc.stdout.strip().splitlines()[-1]))
            except (subprocess.SubprocessError, ValueError, IndexError) as exc:
                err = proc.stderr.strip().splitlines()[-3:] if proc is not None else []
                log(f"  memory probe failed for {group}: {exc!r} {' | '.join(err)}")
    return results
