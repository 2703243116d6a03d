"""The end-to-end benchmark's printed report: what the two paths are, and the side-by-side
tables of scenarios A and B."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.e2e.results import med
from benchmarks.e2e.wire import LEGACY_RECORD_LIMIT
from benchmarks.tables import MB, fmt_time, table
from flwire.transport import DEFAULT_MAX_RECORD_BYTES

Summary = dict[str, Any]


def paths_line(flwire_options: dict[str, Any]) -> str:
    tuned = f"TUNED: {flwire_options}; " if flwire_options else "SDK defaults; "
    return (
        f"flwire: Channel over KafkaTransport, default {DEFAULT_MAX_RECORD_BYTES / MB:g} MB "
        f"record limit (bigger messages in parts), {tuned}old: JSON + base64(gzip-9(pickle)), "
        "one record per message, plain confluent-kafka, broker limit raised to "
        f"{LEGACY_RECORD_LIMIT / 2**20:.0f} MiB. Both on one broker, one path after the other. "
        "Bytes = record values."
    )


def spread(xs: Sequence[float]) -> str:
    """Median [min-max] of several timings."""
    if len(xs) == 1:
        return fmt_time(xs[0])
    lo, hi = min(xs), max(xs)
    if hi >= 1:
        return f"{fmt_time(med(xs))} [{lo:.2f}-{hi:.2f}]"
    digits = 2 if hi < 0.01 else 0
    return f"{fmt_time(med(xs))} [{lo * 1e3:.{digits}f}-{hi * 1e3:.{digits}f} ms]"


def ratio(legacy: float | None, new: float | None, digits: int = 1) -> str:
    if not legacy or not new:
        return "-"
    return f"{legacy / new:.{digits}f}x"


def _typical(v: Any) -> float | None:
    return med(v) if isinstance(v, list) else v


def _mb(digits: int) -> Callable[[float], str]:
    return lambda x: f"{x / MB:.{digits}f}"


def _exact(s: Summary | None) -> str:
    return "-" if s is None else ("yes" if s["exact"] else "NO")


def _headers(legacy_records: str) -> list[list[str]]:
    return [
        ["", "flwire", "old JSON/base64", "old /"],
        ["", "1 MB records, parts", legacy_records, "flwire"],
    ]


def _cells(
    fl: Summary,
    legacy: Summary | None,
    key: str,
    fmt: Callable[[Any], str],
    digits: int = 1,
    missing: str = "-",
) -> list[str]:
    """flwire's value, the old path's (or ``missing``), and old / flwire."""
    o = legacy.get(key) if legacy else None
    shown = missing if o is None else fmt(o)
    return [fmt(fl[key]), shown, ratio(_typical(o), _typical(fl[key]), digits)]


def table_a(fl: Summary, legacy: Summary | None, clients: int, warmup: int, cnn_raw: int) -> str:
    """Scenario A: one FL round, flwire against the old path."""

    def row(label: str, key: str, fmt: Callable[[Any], str], digits: int = 1) -> list[str]:
        return [label, *_cells(fl, legacy, key, fmt, digits)]

    rows = [
        row("round wall time, median [min-max]", "round_wall_s", spread),
        row(f"  global update at all {clients} clients", "fanout_s", spread),
        [*row("records produced per round", "records_per_round", lambda x: f"{x:.0f}")[:3], ""],
        row("MB produced per round (1 + N msgs)", "bytes_produced_per_round", _mb(1), 2),
        row("MB fetched per round (N + N msgs)", "bytes_fetched_per_round", _mb(1), 2),
        row("global update message, MB", "global_message_bytes", _mb(2), 2),
        row("global update encode (server)", "global_encode_s", spread),
        row("global update decode (each client)", "global_decode_s", spread),
        row("client update encode (each client)", "update_encode_s", spread),
        row("client update decode (server)", "update_decode_s", spread),
        row("every delivery.done() of the rounds (server)", "done_s", spread),
        row("longest delivery.done() of a round (server)", "done_max_s", spread),
        row("  longest it held the event loop", "done_hold_max_s", spread),
        ["bit-exact", _exact(fl), _exact(legacy), ""],
    ]
    title = (
        f"scenario A: one FL round, {clients} clients (one OS process each) + server, SimpleCNN "
        f"({cnn_raw / MB:.1f} MB float32), {fl['rounds']} timed rounds after {warmup} warm-up"
    )
    return f"{title}\n{table(_headers('1 record per msg'), rows)}"


def table_b(fb: Summary, ob: Summary | None, big_desc: str) -> str:
    """Scenario B: one big update, flwire against the old path (which may not get through)."""
    failed = bool(ob and "failed" in ob)
    shown = None if failed else ob
    missing = "not sent" if failed else "-"

    def row(label: str, key: str, fmt: Callable[[Any], str], digits: int = 1) -> list[str]:
        return [label, *_cells(fb, ob, key, fmt, digits, missing)]

    def rate(s: Summary | None) -> str:
        return "-" if s is None else f"{fb['raw_bytes'] / MB / s['total_s']:.0f}"

    rows = [
        row("message, MB", "message_bytes", _mb(1), 2),
        [*row("records", "records_sent", str)[:3], ""],
        row("encode (client)", "encode_s", fmt_time),
        row("send -> broker -> receive", "transfer_s", fmt_time),
        row("decode (server)", "decode_s", fmt_time),
        row("total: encode start -> decoded", "total_s", fmt_time),
        ["raw MB/s end to end", rate(fb), rate(shown), ""],
        ["bit-exact", _exact(fb), _exact(shown), ""],
    ]
    text = f"scenario B: one update client -> server, {big_desc}, once\n"
    text += table(_headers("1 record"), rows)
    if not ob:
        text += "\n  note: old path of scenario B not run (--no-legacy-big)"
    elif failed:
        text += (
            f"\n  note: the old message could not be sent:\n    {ob['failed']}.\n  Kafka 4.4 "
            "gives no reply to a produce request above 256 MiB (probed: 256 MiB - 200 kB\n"
            "  stored, 256 MiB + 200 kB never answered), so no broker setting lets this "
            "one-record\n  message through; flwire's 1 MB parts pass the default limit."
        )
    return text


def tables(
    summary: dict[str, Summary], clients: int, warmup: int, cnn_raw: int, big_desc: str | None
) -> str:
    """Both scenarios' tables (B only when it ran)."""
    fl, legacy = summary["flwire"], summary.get("old")
    text = table_a(fl, legacy, clients, warmup, cnn_raw)
    if fl.get("big") and big_desc:
        text += "\n\n" + table_b(fl["big"], legacy.get("big") if legacy else None, big_desc)
    return text
