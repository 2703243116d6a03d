"""Timing one model on every path: warm-up, then interleaved rounds of batched encode and
decode samples; bit-exactness and zero-copy checks on the decoded tensors."""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from memory import malloc_trim
from paths import BenchPath, StateDict
from report import MB, fmt_time


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
