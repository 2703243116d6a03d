"""flwire weight-serialization benchmark.

For each model x path: encoded size (and its ratio to the raw tensor bytes), encode and
decode throughput in MB/s of raw bytes (median of N timed runs after a warm-up, min-max
shown), round-trip time, bit-exactness, zero-copy decoding and peak extra memory (RSS
high-water mark). Then the project's targets, MET or MISSED.

    make bench                                  # everything (~5 minutes on 2 busy cores)
    make bench BENCH_ARGS="--quick"             # ~10M stand-in for the 100M model
    .venv/bin/python -m benchmarks.codec --models mlp,cnn --paths flwire_zstd,legacy_path
    .venv/bin/python -m benchmarks.codec --json bench-results/run.json --profile

Run it from the repository root.
MB = 10^6 bytes throughout. Throughput is raw tensor bytes / time, for every path.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import models
from benchmarks.codec.measure import Result, Settings, measure_model
from benchmarks.codec.memory import first_calls, hwm_reset_works, malloc_trim, mem_child
from benchmarks.codec.paths import PATH_NAMES, all_paths, skip_reason
from benchmarks.codec.profiling import profile_flwire
from benchmarks.codec.report import evaluate_targets, model_tables, targets_block
from benchmarks.models import StateDict, raw_size
from benchmarks.tables import host_info, host_line, library_version


def parse_list(value: str | None, allowed: tuple[str, ...], what: str) -> list[str]:
    if not value:
        return list(allowed)
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)} (choose from {', '.join(allowed)})")
    return items


def single_dtype(sd: StateDict) -> str:
    """The one dtype of every tensor ('float32', 'bfloat16', ...), or 'mixed'."""
    found = {str(t.dtype).removeprefix("torch.") for t in sd.values()}
    return found.pop() if len(found) == 1 else "mixed"


def header(
    st: Settings, quick: bool, reset: bool, path_names: list[str], host: dict[str, Any]
) -> str:
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
        host_line(host),
        "timing: the first call of each path runs in a fresh process that also measures "
        f"memory; if an anchor's encode took > {st.slow_s:g} s there, that cold call is its "
        "one sample (marked *). Otherwise (and always for flwire), here: 1 warm-up "
        "encode+decode per path (also the first sample when its encode took > "
        f"{st.warm_sample_s:g} s), then rounds in which every path "
        "takes one encode and one decode sample in turn (interleaved, so load spikes hit all "
        f"paths alike); {st.min_reps}-{st.max_reps} samples (more while under "
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
    # Move everything imported so far (torch alone: ~10^5 objects) out of the collector's
    # reach: the gc.collect() before each timed sample then costs ~1 ms instead of ~100.
    gc.freeze()

    if args.mem_probe:
        probed = parse_list(args.paths, PATH_NAMES, "paths")
        mem_child(args.mem_probe, probed, reset=not args.mem_no_reset)
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

    host = host_info()
    print(header(st, args.quick, reset, path_names, host))
    all_results: dict[str, dict[str, Result]] = {}
    model_info: dict[str, dict[str, Any]] = {}
    dtypes: dict[str, str] = {}
    for model in model_names:
        model0 = t0 = time.perf_counter()
        sd = builders[model]()
        desc = models.describe(sd)
        log(f"[{model}] built in {time.perf_counter() - t0:.1f} s: {desc}")
        model_info[model] = {
            "description": desc,
            "tensors": len(sd),
            "parameters": sum(t.numel() for t in sd.values()),
            "raw_bytes": raw_size(sd),
        }
        dtypes[model] = single_dtype(sd)
        runnable = [p for p in path_names if skip_reason(paths[p], model, sd) is None]
        t0 = time.perf_counter()
        firsts = first_calls(sd, runnable, reset, log)
        log(f"  first calls and memory, in a fresh process: {time.perf_counter() - t0:.1f} s")
        results = measure_model(model, sd, [paths[p] for p in path_names], st, firsts, log)
        all_results[model] = results
        print(f"\n== {model}: {desc} ==")
        print(model_tables(results))
        sys.stdout.flush()
        del sd
        gc.collect()
        malloc_trim()
        log(f"[{model}] done in {time.perf_counter() - model0:.0f} s")

    targets = evaluate_targets(all_results, "transformer100m", dtypes)
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
        "code does when the machine leaves it alone. legacy_path has one cold sample on big models."
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
            "host": host,
            "settings": {**asdict(st), "memory_hwm_reset": reset},
            "models": model_info,
            "results": {
                m: {
                    p: {
                        **asdict(r),
                        "round_trip_s": r.round_trip if r.ran else None,
                        "encode_mbps": r.mbps(r.encode_s)[0] if r.ran else None,
                        "decode_mbps": r.mbps(r.decode_s)[0] if r.ran else None,
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
