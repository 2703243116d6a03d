"""Timing one model on every path: warm-up, then interleaved rounds of batched encode and
decode samples; the path's check (bit-exact, or within a lossy bound) and zero-copy count
on the decoded tensors."""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from benchmarks.codec.fidelity import Check, zero_copy_count
from benchmarks.codec.memory import malloc_trim
from benchmarks.codec.paths import BenchPath, failure, skip_reason
from benchmarks.models import StateDict, raw_size
from benchmarks.tables import MB, fmt_time
from flwire import read_tensor_map
from flwire.v1 import tensor_pb2


@dataclass
class Settings:
    budget_s: float = 1.0  # stop adding timed runs after this much time per path...
    min_reps: int = 3  # ...but never fewer than this many
    max_reps: int = 5
    slow_s: float = 5.0  # a first call slower than this is the one measurement
    warm_sample_s: float = 0.25  # a warm-up encode this slow is also the first sample
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
    lossy: bool = False
    check: Check | None = None  # bit-exactness, or (lossy) the error against its bound
    zero_copy: int = 0
    stored_raw: int = 0  # tensors stored uncompressed (a codec found nothing to gain)
    tensors: int = 0
    peak_encode: int | None = None
    peak_decode: int | None = None
    skipped: str | None = None  # not applicable to this model, and why
    failed: str | None = None  # raised on this model: the exception
    first_call: dict[str, Any] | None = None  # the cold first call, in the memory process

    def mbps(self, samples: list[float]) -> tuple[float, float, float]:
        rates = sorted(self.raw_bytes / MB / s for s in samples)
        return statistics.median(rates), rates[0], rates[-1]

    @property
    def ran(self) -> bool:
        return not self.skipped and not self.failed and bool(self.encode_s)

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


Live = dict[str, tuple[BenchPath, Any, int, int]]  # name -> path, blob, calls per sample e/d


def use_first_call(res: Result, first: dict[str, Any] | None, st: Settings, may_stop: bool) -> None:
    """Take what the memory process measured on the path's cold first call: peaks and the
    check; and when that call was slower than st.slow_s and ``may_stop`` (anchors; flwire's
    paths are always timed warm, as a cold call in that process can be several times
    slower), it is the one sample."""
    if first and first.get("failed"):
        res.failed = first["failed"]
    if not first or "encode_s" not in first:
        return
    res.first_call = first
    res.peak_encode, res.peak_decode = first["encode_peak"], first["decode_peak"]
    res.check = Check(**first["check"])
    if may_stop and first["encode_s"] > st.slow_s:
        res.size, res.zero_copy = first["size"], first["zero_copy"]
        res.encode_s, res.decode_s = [first["encode_s"]], [first["decode_s"]]
        res.single_run = True


def warm_up(path: BenchPath, sd: StateDict, res: Result, st: Settings) -> Any:
    """One encode and one decode; checks the output (unless the first call did), counts
    zero-copy tensors and sizes the batches. Returns the blob to time decodes on, or None
    when the warm-up was too slow to repeat (it is then the one sample)."""
    gc.collect()
    t0 = time.perf_counter()
    blob = path.encode(sd)
    enc_s = time.perf_counter() - t0
    blob = path.handover(blob)
    res.size = len(memoryview(blob).cast("B"))
    gc.collect()
    t0 = time.perf_counter()
    out = path.decode(blob)
    dec_s = time.perf_counter() - t0
    if res.check is None:
        res.check = path.check(sd, out)
    res.zero_copy = zero_copy_count(blob, out)
    if path.subject:
        records = read_tensor_map(blob).records
        raw = tensor_pb2.CODEC_UNSPECIFIED
        res.stored_raw = sum(r.codec == raw and not r.lossy for r in records)
    del out
    if enc_s > st.warm_sample_s:  # one call per sample anyway: keep this one
        res.encode_s, res.decode_s = [enc_s], [dec_s]
    if enc_s > st.slow_s:
        res.single_run = True
        return None
    res.encode_inner, res.decode_inner = batch(enc_s, st), batch(dec_s, st)
    return blob


def timed_rounds(sd: StateDict, live: Live, results: dict[str, Result], st: Settings) -> None:
    """Round after round, each live path takes one encode and one decode sample, so that
    load from other work on the machine falls on all paths alike: until every path has
    st.min_reps samples, and on up to st.max_reps while under budget."""
    start = time.perf_counter()
    while True:
        within = time.perf_counter() - start < st.budget_s * len(live)
        goal = st.max_reps if within else st.min_reps
        todo = [n for n in live if len(results[n].encode_s) < goal]
        if not todo:
            return
        for name in todo:
            path, blob, n_enc, n_dec = live[name]
            results[name].encode_s.append(sample(partial(path.encode, sd), n_enc))
            results[name].decode_s.append(sample(partial(path.decode, blob), n_dec))


def measure_model(
    model: str,
    sd: StateDict,
    chosen: list[BenchPath],
    st: Settings,
    firsts: dict[str, dict[str, Any]],
    log: Callable[[str], None],
) -> dict[str, Result]:
    """Time every path on one model (see timed_rounds). ``firsts`` holds each path's first
    call, made in the memory process (see use_first_call)."""
    results: dict[str, Result] = {}
    live: Live = {}
    for path in chosen:
        res = Result(path.name, path.label, raw_size(sd), lossy=path.lossy, tensors=len(sd))
        results[path.name] = res
        res.skipped = skip_reason(path, model, sd)
        if res.skipped:
            continue
        use_first_call(res, firsts.get(path.name), st, may_stop=not path.subject)
        if res.single_run or res.failed:
            continue
        try:
            blob = warm_up(path, sd, res, st)
        except Exception as exc:  # a broken path is reported, the others still run
            res.failed = failure(exc)
            continue
        if blob is not None:
            live[path.name] = (path, blob, res.encode_inner, res.decode_inner)
        del blob
    timed_rounds(sd, live, results, st)
    live.clear()
    gc.collect()
    malloc_trim()
    for res in results.values():
        if res.ran:
            log(
                f"  {res.label:<20} encode {fmt_time(res.encode_med):>9}  "
                f"decode {fmt_time(res.decode_med):>9}  samples {len(res.encode_s)}"
            )
    return results
