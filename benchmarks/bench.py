"""flwire weight-serialization benchmark.

For each model x path: encoded size (and its ratio to the raw tensor bytes), encode and
decode throughput in MB/s of raw bytes (median of N timed runs after a warm-up, min-max
shown), round-trip time, bit-exactness, zero-copy decoding and peak extra memory (RSS
high-water mark). Then the project's targets, MET or MISSED.

    make bench                                  # everything (5-6 minutes on 2 busy cores)
    make bench BENCH_ARGS="--quick"             # ~10M stand-in for the 100M model
    .venv/bin/python benchmarks/bench.py --models mlp,cnn --paths flwire_zstd,old_path
    .venv/bin/python benchmarks/bench.py --json bench-results/run.json --profile

MB = 10^6 bytes throughout. Throughput is raw tensor bytes / time, for every path.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import ctypes
import ctypes.util
import gc
import io
import json
import math
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import anchors
import models

from flwire.serialization import compression as z
from flwire.serialization import decode_tensor_map, encode_tensor_map

StateDict = dict[str, torch.Tensor]
MB = 1e6


# ----------------------------------------------------------------------------- paths


@dataclass
class BenchPath:
    name: str
    label: str
    encode: Callable[[StateDict], Any]
    decode: Callable[[Any], StateDict]
    note: str = ""
    supports: Callable[[StateDict], str | None] = lambda sd: None


def all_paths() -> dict[str, BenchPath]:
    paths = {
        "flwire_zstd": BenchPath(
            "flwire_zstd",
            "flwire zstd",
            lambda sd: encode_tensor_map(sd),
            decode_tensor_map,
            "default: zstd level 1 per tensor",
        ),
        "flwire_shuffle": BenchPath(
            "flwire_shuffle",
            "flwire zstd+shuffle",
            lambda sd: encode_tensor_map(sd, shuffle=True),
            decode_tensor_map,
            "byte shuffle, then zstd level 1",
        ),
        "flwire_none": BenchPath(
            "flwire_none",
            "flwire none",
            lambda sd: encode_tensor_map(sd, compression="none"),
            decode_tensor_map,
            "raw bytes, zero-copy decode",
        ),
    }
    for a in anchors.all_anchors().values():
        paths[a.name] = BenchPath(a.name, a.name, a.encode, a.decode, a.note, a.supports)
    return paths


PATH_NAMES = tuple(all_paths())


# ----------------------------------------------------------------------------- memory


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
                f.readinto(t.reshape(-1).view(torch.uint8).numpy())
            sd[name] = t
    return sd


def mem_child(folder: str, path_names: list[str], reset: bool) -> None:
    """Run in a fresh process: the first encode and decode of each path, with their peak
    extra RSS, wall time, output size, bit-exactness and zero-copy count (JSON on stdout).

    peak = VmHWM during the call - VmRSS just before it. With ``reset`` the high-water
    mark is reset before every call. Without it (kernels that cannot) the parent starts one
    process per path and only the encode peak is valid: loading the state dict is made
    peak-free, so VmHWM before the encode is VmRSS.
    """
    fix_mmap_threshold()
    sd = load_state_dict(Path(folder))
    paths = all_paths()
    out: dict[str, dict[str, Any]] = {}
    for name in path_names:
        path = paths[name]
        rec: dict[str, Any] = {"skipped": path.supports(sd)}
        out[name] = rec
        if rec["skipped"]:
            continue
        gc.collect()
        malloc_trim()
        rss0 = proc_status()["VmRSS"]
        if reset:
            reset_hwm()
        t0 = time.perf_counter()
        blob = path.encode(sd)
        rec["encode_s"] = time.perf_counter() - t0
        rec["encode_peak"] = max(0, proc_status()["VmHWM"] - rss0)
        rec["size"] = len(memoryview(blob).cast("B"))
        gc.collect()
        malloc_trim()
        rss0 = proc_status()["VmRSS"]
        if reset:
            reset_hwm()
        t0 = time.perf_counter()
        decoded = path.decode(blob)
        rec["decode_s"] = time.perf_counter() - t0
        rec["decode_peak"] = max(0, proc_status()["VmHWM"] - rss0) if reset else None
        rec["exact"], rec["exact_detail"] = compare(sd, decoded)
        rec["zero_copy"] = zero_copy_count(blob, decoded)
        del decoded, blob
        gc.collect()
    print(json.dumps(out))


def first_calls(
    sd: StateDict, path_names: list[str], reset: bool, log: Callable[[str], None]
) -> dict[str, dict[str, Any]]:
    """Each path's first encode/decode, made in fresh processes (see mem_child)."""
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="flwire-bench-") as tmp:
        dump_state_dict(sd, Path(tmp))
        groups = [path_names] if reset else [[p] for p in path_names]
        for group in groups:
            cmd = [sys.executable, __file__, "--mem-probe", tmp, "--paths", ",".join(group)]
            if not reset:
                cmd.append("--mem-no-reset")
            proc = None
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                results.update(json.loads(proc.stdout.strip().splitlines()[-1]))
            except (subprocess.SubprocessError, ValueError, IndexError) as exc:
                err = proc.stderr.strip().splitlines()[-3:] if proc is not None else []
                log(f"  memory probe failed for {group}: {exc!r} {' | '.join(err)}")
    return results


# ----------------------------------------------------------------------------- measurement


@dataclass
class Settings:
    budget_s: float = 2.0  # stop adding timed runs after this much time...
    min_reps: int = 3  # ...but never fewer than this many
    max_reps: int = 5
    slow_s: float = 5.0  # a first call slower than this is the one measurement
    inner_s: float = 0.05  # batch fast calls so each timed sample lasts at least this


@dataclass
class Result:
    path: str
    label: str
    raw_bytes: int
    size: int | None = None
    encode_s: list[float] = field(default_factory=list)
    decode_s: list[float] = field(default_factory=list)
    encode_inner: int = 1
    decode_inner: int = 1
    single_run: bool = False
    exact: bool | None = None
    exact_detail: str = ""
    zero_copy: int = 0
    tensors: int = 0
    peak_encode: int | None = None
    peak_decode: int | None = None
    skipped: str | None = None
    first_call: dict[str, Any] | None = None  # the cold first call, in the memory process

    def mbps(self, samples: list[float]) -> tuple[float, float, float]:
        rates = sorted(self.raw_bytes / MB / s for s in samples)
        return statistics.median(rates), rates[0], rates[-1]

    @property
    def encode_med(self) -> float:
        return statistics.median(self.encode_s)

    @property
    def decode_med(self) -> float:
        return statistics.median(self.decode_s)

    @property
    def round_trip(self) -> float:
        return self.encode_med + self.decode_med

    @property
    def round_trip_best(self) -> float:
        """Fastest encode + fastest decode: less sensitive to other work on the machine."""
        return min(self.encode_s) + min(self.decode_s)


def compare(expected: StateDict, got: StateDict) -> tuple[bool, str]:
    """Same names, dtypes, shapes and raw bytes for every tensor (order is not compared:
    safetensors returns names sorted, and load_state_dict goes by name)."""
    if set(expected) != set(got):
        return False, f"names differ: {sorted(set(expected) ^ set(got))[:3]}"
    for name, a in expected.items():
        b = got[name]
        if not isinstance(b, torch.Tensor):
            return False, f"{name}: got {type(b).__name__}"
        if a.dtype != b.dtype or tuple(a.shape) != tuple(b.shape):
            return False, f"{name}: {a.dtype}{tuple(a.shape)} -> {b.dtype}{tuple(b.shape)}"
        ra = a.detach().contiguous().reshape(-1).view(torch.uint8)
        rb = b.detach().contiguous().reshape(-1).view(torch.uint8)
        if not torch.equal(ra, rb):
            return False, f"{name}: bytes differ"
    return True, ""


def zero_copy_count(blob: Any, out: StateDict) -> int:
    """How many decoded tensors (with data) point inside the encoded buffer."""
    view = np.frombuffer(blob, dtype=np.uint8)
    lo = view.ctypes.data
    hi = lo + view.nbytes
    n = 0
    for t in out.values():
        if t.numel() and lo <= t.data_ptr() and t.data_ptr() + t.numel() * t.element_size() <= hi:
            n += 1
    return n


def raw_size(sd: StateDict) -> int:
    return sum(t.numel() * t.element_size() for t in sd.values())


def sample(fn: Callable[[], Any], inner: int) -> float:
    """Seconds per call of fn, over `inner` back-to-back calls."""
    gc.collect()
    t0 = time.perf_counter()
    for _ in range(inner):
        out = fn()
        del out
    return (time.perf_counter() - t0) / inner


def batch(first_s: float, st: Settings) -> int:
    """Calls per sample so that a sample lasts at least st.inner_s."""
    return max(1, min(10_000, math.ceil(st.inner_s / max(first_s, 1e-7))))


def measure_model(
    sd: StateDict,
    chosen: list[BenchPath],
    st: Settings,
    firsts: dict[str, dict[str, Any]],
    log: Callable[[str], None],
) -> dict[str, Result]:
    """Time every path on one model, interleaved: round after round, each path takes one
    encode sample and one decode sample, so that load from other work on the machine
    falls on all paths alike. ``firsts`` holds each path's first call, made in the memory
    process; a path whose first encode took longer than st.slow_s is not run again here."""
    results: dict[str, Result] = {}
    live: dict[str, tuple[BenchPath, Any, int, int]] = {}  # name -> path, blob, inner e/d
    for path in chosen:
        res = results[path.name] = Result(path.name, path.label, raw_size(sd), tensors=len(sd))
        res.skipped = path.supports(sd)
        if res.skipped:
            continue
        first = firsts.get(path.name)
        first = first if first and "encode_s" in first else None
        res.first_call = first
        if first:
            res.peak_encode, res.peak_decode = first["encode_peak"], first["decode_peak"]
        if first and first["encode_s"] > st.slow_s:
            # Too slow to repeat: the cold first call is the one sample, encode and decode.
            res.size, res.exact = first["size"], first["exact"]
            res.exact_detail, res.zero_copy = first["exact_detail"], first["zero_copy"]
            res.encode_s, res.decode_s = [first["encode_s"]], [first["decode_s"]]
            res.single_run = True
            continue
        # Warm-up: one encode and one decode; the decode's output is checked.
        gc.collect()
        t0 = time.perf_counter()
        blob = path.encode(sd)
        enc_s = time.perf_counter() - t0
        res.size = len(memoryview(blob).cast("B"))
        gc.collect()
        t0 = time.perf_counter()
        out = path.decode(blob)
        dec_s = time.perf_counter() - t0
        res.exact, res.exact_detail = compare(sd, out)
        res.zero_copy = zero_copy_count(blob, out)
        del out
        if enc_s > st.slow_s:  # the warm-up is the one sample
            res.encode_s, res.decode_s, res.single_run = [enc_s], [dec_s], True
            del blob
            continue
        res.encode_inner, res.decode_inner = batch(enc_s, st), batch(dec_s, st)
        live[path.name] = (path, blob, res.encode_inner, res.decode_inner)
        del blob

    start = time.perf_counter()
    rounds = 0
    while live and (
        rounds < st.min_reps
        or (rounds < st.max_reps and time.perf_counter() - start < st.budget_s * len(live))
    ):
        for name, (path, blob, n_enc, n_dec) in live.items():
            results[name].encode_s.append(sample(lambda p=path: p.encode(sd), n_enc))
            results[name].decode_s.append(sample(lambda p=path, b=blob: p.decode(b), n_dec))
        rounds += 1
    live.clear()
    gc.collect()
    malloc_trim()
    for res in results.values():
        if not res.skipped:
            log(
                f"  {res.label:<20} encode {fmt_time(res.encode_med):>9}  "
                f"decode {fmt_time(res.decode_med):>9}  samples {len(res.encode_s)}"
            )
    return results


# ----------------------------------------------------------------------------- formatting


def fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1:
        return f"{s * 1e3:.3g} ms" if s < 0.1 else f"{s * 1e3:.0f} ms"
    return f"{s:.2f} s"


def fmt_rate(med: float, lo: float, hi: float) -> str:
    def r(x: float) -> str:
        return f"{x:.0f}" if x >= 10 else f"{x:.2g}"

    return f"{r(med)} [{r(lo)}-{r(hi)}]"


def fmt_mem(b: int | None, raw: int) -> str:
    if b is None:
        return "-"
    return f"{b / MB:.1f} ({b / raw:.2f}x)"


def table(headers: list[list[str]], rows: list[list[str]], left: int = 1) -> str:
    """Columns aligned; the first `left` columns are left-aligned, the rest right."""
    cols = len(headers[0])
    widths = [max(len(r[i]) for r in [*headers, *rows]) for i in range(cols)]

    def line(r: list[str]) -> str:
        cells = [r[i].ljust(widths[i]) if i < left else r[i].rjust(widths[i]) for i in range(cols)]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([*(line(h) for h in headers), rule, *(line(r) for r in rows)])


def model_tables(results: dict[str, Result]) -> str:
    old = results.get("old_path")
    st = results.get("safetensors")
    old_ok = old is not None and old.skipped is None
    st_ok = st is not None and st.skipped is None
    rows1, rows2, notes = [], [], []
    for r in results.values():
        if r.skipped:
            rows1.append([r.label, "n/a", "", "", "", "", ""])
            rows2.append([r.label, "n/a", "", "", "", "", "", ""])
            notes.append(f"{r.label}: skipped, {r.skipped}")
            continue
        assert r.size is not None
        reps = f"{len(r.encode_s)}/{len(r.decode_s)}" + ("*" if r.single_run else "")
        rows1.append(
            [
                r.label,
                f"{r.size / MB:.2f}" if r.size < 100 * MB else f"{r.size / MB:.1f}",
                f"{r.size / r.raw_bytes:.3f}",
                f"{r.size / old.size:.3f}" if old_ok and old.size else "-",
                fmt_rate(*r.mbps(r.encode_s)),
                fmt_rate(*r.mbps(r.decode_s)),
                reps,
            ]
        )
        rows2.append(
            [
                r.label,
                fmt_time(r.round_trip),
                f"{old.round_trip / r.round_trip:.1f}x" if old_ok else "-",
                f"{r.round_trip / st.round_trip:.2f}" if st_ok else "-",
                "yes" if r.exact else f"NO ({r.exact_detail})",
                f"{r.zero_copy}/{r.tensors}",
                fmt_mem(r.peak_encode, r.raw_bytes),
                fmt_mem(r.peak_decode, r.raw_bytes),
            ]
        )
        if r.single_run:
            notes.append(
                f"{r.label}: * timed once, no warm-up: a single call takes too long to repeat "
                "(see 'timing' above); no spread"
            )
    t1 = table(
        [
            ["", "size", "size /", "size /", "encode MB/s", "decode MB/s", "runs"],
            ["path", "MB", "raw", "old", "median [min-max]", "median [min-max]", "enc/dec"],
        ],
        rows1,
    )
    t2 = table(
        [
            ["", "round", "speedup", "RT /", "bit-", "zero-", "peak extra RSS", "peak extra RSS"],
            ["path", "trip", "vs old", "safetens.", "exact", "copy", "encode MB (x raw)", "decode"],
        ],
        rows2,
    )
    text = t1 + "\n\n" + t2
    if notes:
        text += "\n" + "\n".join("  note: " + n for n in notes)
    return text


# ----------------------------------------------------------------------------- targets


@dataclass
class Target:
    what: str
    model: str
    value: str
    goal: str
    met: bool | None  # None: could not be evaluated (path or model not run)


def evaluate_targets(all_results: dict[str, dict[str, Result]], big: str) -> list[Target]:
    out: list[Target] = []

    def get(model: str, path: str) -> Result | None:
        r = all_results.get(model, {}).get(path)
        return r if r is not None and r.skipped is None else None

    def is_bf16(model: str) -> bool:
        return model.endswith("_bf16")

    for model in all_results:
        zs, old = get(model, "flwire_zstd"), get(model, "old_path")
        if zs and old and zs.size and old.size:
            sp = old.round_trip / zs.round_trip
            out.append(
                Target(
                    "zstd round trip vs old",
                    model,
                    f"{sp:.1f}x ({fmt_time(zs.round_trip)} vs {fmt_time(old.round_trip)}); "
                    f"fastest samples {old.round_trip_best / zs.round_trip_best:.1f}x",
                    ">= 20x",
                    sp >= 20,
                )
            )
            ratio = zs.size / old.size
            limit = 0.75 if is_bf16(model) else 0.76
            out.append(
                Target(
                    "zstd bytes vs old",
                    model,
                    f"{ratio:.3f}x ({zs.size / MB:.2f} vs {old.size / MB:.2f} MB)",
                    f"<= {limit:.2f}x",
                    ratio <= limit,
                )
            )
    for model in all_results:
        no = get(model, "flwire_none")
        if no:
            out.append(
                Target(
                    "none decode zero-copy",
                    model,
                    f"{no.zero_copy}/{no.tensors} tensors are views on the input",
                    "all",
                    no.zero_copy == no.tensors and no.exact is True,
                )
            )
    for model in (big, big + "_bf16"):
        no, st = get(model, "flwire_none"), get(model, "safetensors")
        if no and st:
            out.append(
                Target(
                    "none round trip vs safetensors",
                    model,
                    f"{no.round_trip / st.round_trip:.2f}x "
                    f"({fmt_time(no.round_trip)} vs {fmt_time(st.round_trip)}); "
                    f"fastest samples {no.round_trip_best / st.round_trip_best:.2f}x",
                    "<= 1.00x",
                    no.round_trip <= st.round_trip,
                )
            )
    for model in all_results:
        sh = get(model, "flwire_shuffle")
        if sh and sh.size:
            limit = 0.70 if is_bf16(model) else 0.85
            ratio = sh.size / sh.raw_bytes
            dec = sh.mbps(sh.decode_s)[0]
            out.append(
                Target(
                    "shuffle size vs raw",
                    model,
                    f"{ratio:.3f}x raw",
                    f"<= {limit:.2f}x",
                    ratio <= limit,
                )
            )
            out.append(
                Target(
                    "shuffle decode throughput",
                    model,
                    f"{dec:.0f} MB/s; fastest sample {sh.mbps(sh.decode_s)[2]:.0f} MB/s",
                    ">= 400 MB/s",
                    dec >= 400,
                )
            )
    for model in (big, big + "_bf16"):
        for path in ("flwire_zstd", "flwire_shuffle", "flwire_none"):
            r = get(model, path)
            if r and r.peak_encode is not None:
                x = r.peak_encode / r.raw_bytes
                out.append(
                    Target(
                        f"peak encode memory ({path.removeprefix('flwire_')})",
                        model,
                        f"{r.peak_encode / MB:.0f} MB = {x:.2f}x raw "
                        f"(output itself {r.size / MB:.0f} MB)"
                        if r.size
                        else f"{x:.2f}x raw",
                        "<= 1.20x raw",
                        x <= 1.2,
                    )
                )
    return out


def targets_block(targets: list[Target]) -> str:
    rows = [
        [
            "MET" if t.met else ("MISSED" if t.met is False else "n/a"),
            t.what,
            t.model,
            t.goal,
            t.value,
        ]
        for t in targets
    ]
    return table([["status", "target", "model", "goal", "measured"]], rows, left=5)


# ----------------------------------------------------------------------------- profile


def profile_flwire(sd: StateDict, name: str) -> str:
    """Where flwire's time goes on one model: the codec's stages timed one by one (serial),
    whole calls with the default threads and threads=1, and cProfile of serial calls
    (cProfile sees only the calling thread, hence threads=1)."""
    raw = raw_size(sd)
    lines = [f"== profile: flwire on {name} ({raw / MB:.0f} MB raw, {len(sd)} tensors) =="]
    srcs = [t.detach().contiguous().reshape(-1).view(torch.uint8).numpy() for t in sd.values()]
    itemsize = next(iter(sd.values())).element_size()

    def stage(label: str, fn: Callable[[], Any]) -> Any:
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        lines.append(f"  {label:<48} {fmt_time(dt):>9}  {raw / MB / dt:7.0f} MB/s")
        return out

    def copy_into(buf: Any) -> Any:
        view, pos = memoryview(buf).cast("B"), 0
        for s in srcs:
            view[pos : pos + s.nbytes] = s
            pos += s.nbytes
        return buf

    def decompress_all(frames: list[bytes], outs: list[np.ndarray]) -> None:
        for f, o in zip(frames, outs, strict=True):
            z.zstd_decompress_into(memoryview(f), o, "t")

    def unshuffle_all(shuffled: list[np.ndarray], outs: list[np.ndarray]) -> None:
        for s, o in zip(shuffled, outs, strict=True):
            z.unshuffle_into(s, o, itemsize)

    lines.append("stages, serial on one thread, all tensors (MB/s of raw bytes):")
    stage("crc32c of raw bytes", lambda: [z.crc32c(s) for s in srcs])
    frames = stage("zstd level 1 compress", lambda: [z.zstd_compress(s, 1) for s in srcs])
    shuffled = stage(
        "byte shuffle (numpy transpose copy)", lambda: [z.shuffle(s, itemsize) for s in srcs]
    )
    stage(
        "zstd level 1 compress of shuffled bytes", lambda: [z.zstd_compress(s, 1) for s in shuffled]
    )
    stage("b''.join of all compressed frames (1 copy)", lambda: b"".join(frames))
    stage("b''.join of the raw tensors (1 copy, 'none')", lambda: b"".join(srcs))
    stage("copy into fresh bytearray (4 KiB page faults)", lambda: copy_into(bytearray(raw)))
    stage("copy into fresh np.empty (THP-advised)", lambda: copy_into(np.empty(raw, np.uint8)))
    outs = stage(
        "np.empty per tensor (lazy, no faults yet)",
        lambda: [np.empty(s.nbytes, np.uint8) for s in srcs],
    )
    stage("zstd_decompress_into, fresh outputs (stream)", lambda: decompress_all(frames, outs))
    stage("zstd_decompress_into, same outputs again", lambda: decompress_all(frames, outs))
    dctx = z._decompressor()
    stage(
        "ZstdDecompressor.decompress (one-shot, bytes)",
        lambda: [dctx.decompress(f) for f in frames],
    )
    stage("unshuffle_into (strided numpy copy)", lambda: unshuffle_all(shuffled, outs))
    frames = shuffled = outs = []
    gc.collect()

    lines.append("whole calls, default threads vs threads=1:")
    for label, kw in (
        ("zstd", {}),
        ("zstd+shuffle", {"shuffle": True}),
        ("none", {"compression": "none"}),
    ):
        blob = stage(f"encode {label}", lambda kw=kw: encode_tensor_map(sd, **kw))
        stage(f"encode {label}, threads=1", lambda kw=kw: encode_tensor_map(sd, threads=1, **kw))
        stage(f"decode {label}", lambda b=blob: decode_tensor_map(b))
        stage(f"decode {label}, threads=1", lambda b=blob: decode_tensor_map(b, threads=1))
        stage(
            f"decode {label}, verify_checksum=False",
            lambda b=blob: decode_tensor_map(b, verify_checksum=False),
        )
        blob = b""
        gc.collect()

    def prof(label: str, fn: Callable[[], Any]) -> None:
        gc.collect()
        p = cProfile.Profile()
        p.enable()
        fn()
        p.disable()
        s = io.StringIO()
        pstats.Stats(p, stream=s).sort_stats("tottime").print_stats(7)
        body = [ln for ln in s.getvalue().splitlines() if ln.strip()]
        head = next(i for i, ln in enumerate(body) if "function calls" in ln)
        start = next(i for i, ln in enumerate(body) if "ncalls" in ln)
        lines.append(f"cProfile, {label}, threads=1 ({body[head].strip()}), top by own time:")
        lines.extend("  " + ln.strip()[:140] for ln in body[start : start + 8])

    prof("encode zstd", lambda: encode_tensor_map(sd, threads=1))
    blob = encode_tensor_map(sd)
    prof("decode zstd", lambda b=blob: decode_tensor_map(b, threads=1))
    prof("encode zstd+shuffle", lambda: encode_tensor_map(sd, shuffle=True, threads=1))
    blob = encode_tensor_map(sd, shuffle=True)
    prof("decode zstd+shuffle", lambda b=blob: decode_tensor_map(b, threads=1))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse_list(value: str | None, allowed: tuple[str, ...], what: str) -> list[str]:
    if not value:
        return list(allowed)
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)} (choose from {', '.join(allowed)})")
    return items


def library_version() -> str:
    """The commit under test, and whether the library sources differ from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "python"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head or 'unknown'}{' + uncommitted changes under python/' if dirty else ''}"


def header(st: Settings, quick: bool, reset: bool, path_names: list[str]) -> str:
    paths = all_paths()
    memory = (
        "memory: peak extra RSS = VmHWM during the first call - VmRSS just before it, "
        "measured in a fresh process per model (VmHWM reset by writing 5 to "
        "/proc/self/clear_refs, verified on this kernel; glibc mmap threshold fixed at "
        "128 KiB there so freed blocks go back to the kernel); it includes the output"
        if reset
        else "memory: without a VmHWM reset (--mem-subprocess, or clear_refs cannot reset it "
        "here): peak extra RSS of each encode is measured in its own fresh process; decode "
        "peak not measured"
    )
    lines = [
        "flwire serialization benchmark"
        + ("  [QUICK: ~10M-parameter stand-in for the 100M model]" if quick else ""),
        f"flwire: {library_version()}",
        f"host: {platform.machine()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), numpy {np.__version__}; load average "
        f"{os.getloadavg()[0]:.2f} at start (other work on the machine skews timings)",
        "timing: the first call of each path runs in a fresh process that also measures "
        f"memory; if its encode took > {st.slow_s:g} s, that cold call is the one sample "
        "(marked *). Otherwise, here: 1 warm-up encode+decode per path, then rounds in which "
        "every path takes one encode and one decode sample in turn (interleaved, so load "
        f"spikes hit all paths alike); {st.min_reps}-{st.max_reps} rounds (more while under "
        f"{st.budget_s:g} s per path); fast calls batched to >= {st.inner_s * 1e3:.0f} ms per "
        "sample; tables show the median and [min-max]",
        memory,
        "units: MB = 10^6 bytes; MB/s = raw tensor bytes / time, for every path; "
        "round trip = median encode + median decode",
        "paths:",
        *(f"  {paths[p].label:<20} {paths[p].note}" for p in path_names),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", help=f"comma-separated subset of {','.join(models.MODEL_NAMES)}")
    ap.add_argument("--paths", help=f"comma-separated subset of {','.join(PATH_NAMES)}")
    ap.add_argument("--quick", action="store_true", help="~10M stand-in for the 100M model")
    ap.add_argument("--json", metavar="PATH", help="write every measurement to PATH as JSON")
    ap.add_argument("--profile", action="store_true", help="profile flwire on the big model")
    ap.add_argument(
        "--mem-subprocess",
        action="store_true",
        help="measure memory one fresh process per encode, as when VmHWM cannot be reset",
    )
    ap.add_argument("--mem-probe", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument("--mem-no-reset", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.mem_probe:
        paths = parse_list(args.paths, PATH_NAMES, "paths")
        mem_child(args.mem_probe, paths, reset=not args.mem_no_reset)
        return 0

    wall0 = time.perf_counter()
    model_names = parse_list(args.models, models.MODEL_NAMES, "models")
    path_names = parse_list(args.paths, PATH_NAMES, "paths")
    st = Settings(budget_s=0.3, slow_s=1.0, inner_s=0.02) if args.quick else Settings()
    reset = hwm_reset_works() and not args.mem_subprocess
    builders = models.builders(quick=args.quick)
    paths = all_paths()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    print(header(st, args.quick, reset, path_names))
    all_results: dict[str, dict[str, Result]] = {}
    model_info: dict[str, dict[str, Any]] = {}
    for model in model_names:
        t0 = time.perf_counter()
        sd = builders[model]()
        desc = models.describe(sd)
        log(f"[{model}] built in {time.perf_counter() - t0:.1f} s: {desc}")
        model_info[model] = {
            "description": desc,
            "tensors": len(sd),
            "parameters": sum(t.numel() for t in sd.values()),
            "raw_bytes": raw_size(sd),
        }
        t0 = time.perf_counter()
        firsts = first_calls(sd, path_names, reset, log)
        log(f"  first calls and memory, in a fresh process: {time.perf_counter() - t0:.1f} s")
        results = measure_model(sd, [paths[p] for p in path_names], st, firsts, log)
        all_results[model] = results
        print(f"\n== {model}: {desc} ==")
        print(model_tables(results))
        sys.stdout.flush()
        del sd
        gc.collect()
        malloc_trim()

    targets = evaluate_targets(all_results, "transformer100m")
    print(
        "\n== targets"
        + (" (QUICK: the 100M targets are checked on the ~10M stand-in)" if args.quick else "")
        + " =="
    )
    print(targets_block(targets) if targets else "(no target could be evaluated)")
    met = sum(t.met is True for t in targets)
    print(f"{met}/{len(targets)} met, {sum(t.met is False for t in targets)} missed")
    print(
        "verdicts use the medians; 'fastest samples' (min encode + min decode) shows what the "
        "code does when the machine leaves it alone. old_path has one cold sample on big models."
    )

    profile_text = None
    if args.profile:
        big = next((m for m in model_names if m.startswith("transformer")), model_names[0])
        sd = builders[big]()
        profile_text = profile_flwire(sd, big)
        print("\n" + profile_text)
        del sd

    wall = time.perf_counter() - wall0
    print(f"\nwall time {wall:.0f} s; load average at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "quick": args.quick,
            "flwire": library_version(),
            "host": {
                "machine": platform.machine(),
                "cores": os.cpu_count(),
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
                "numpy": np.__version__,
                "python": platform.python_version(),
            },
            "settings": {**asdict(st), "memory_hwm_reset": reset},
            "models": model_info,
            "results": {
                m: {
                    p: {
                        **asdict(r),
                        "round_trip_s": None if r.skipped else r.round_trip,
                        "encode_mbps": None if r.skipped else r.mbps(r.encode_s)[0],
                        "decode_mbps": None if r.skipped else r.mbps(r.decode_s)[0],
                    }
                    for p, r in rs.items()
                }
                for m, rs in all_results.items()
            },
            "targets": [asdict(t) for t in targets],
            "profile": profile_text,
            "wall_s": wall,
        }
        out.write_text(json.dumps(doc, indent=2))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
