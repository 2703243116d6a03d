"""The printed report: per-model tables, and the project's targets, MET or MISSED."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from measure import Result

MB = 1e6


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
