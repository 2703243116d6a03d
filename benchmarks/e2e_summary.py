"""The end-to-end benchmark's per-path figures, from the server's and the clients' records:
scenario A over the timed rounds (warm-up left out) and scenario B."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def med(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def summarize(server: dict[str, Any], clients: dict[str, Any], phase: str) -> dict[str, Any]:
    """Per-path figures of scenario A (timed rounds only) and B."""
    rounds = [r for r in server["rounds"] if not r["warmup"]]
    timed = {r["round"] for r in rounds}
    per_client = [cr for c in clients.values() for cr in c[phase]["rounds"] if cr["round"] in timed]
    by_round: dict[int, list[dict[str, Any]]] = {}
    for cr in per_client:
        by_round.setdefault(cr["round"], []).append(cr)

    def updates(r: dict[str, Any], key: str) -> int:
        return sum(cr[key] for cr in by_round[r["round"]])

    n_clients = len(clients)
    out: dict[str, Any] = {
        "round_wall_s": [r["wall_s"] for r in rounds],
        "rounds": len(rounds),
        "records_per_round": med([r["broadcast_records"] + updates(r, "records") for r in rounds]),
        "bytes_produced_per_round": med(
            [r["broadcast_bytes"] + updates(r, "bytes") for r in rounds]
        ),
        "bytes_fetched_per_round": med(
            [r["broadcast_bytes"] * n_clients + updates(r, "bytes") for r in rounds]
        ),
        "global_message_bytes": rounds[0]["global_message_bytes"],
        "update_message_bytes": med([cr["bytes"] for cr in per_client]),
        "global_encode_s": [r["global_encode_s"] for r in rounds],
        "global_decode_s": [cr["decode_s"] for cr in per_client],
        "update_encode_s": [cr["encode_s"] for cr in per_client],
        "update_decode_s": [x for r in rounds for x in r["update_decode_s"]],
        "fanout_s": [
            max(cr["arrived"] for cr in by_round[r["round"]]) - r["start"] for r in rounds
        ],
        "exact": all(r["exact"] for r in rounds),
        "clients_ready_s": server["clients_ready_s"],
    }
    big = _big(server.get("big"), clients["c0"][phase].get("big"))
    if big is not None:
        out["big"] = big
    return out


def _big(received: dict[str, Any] | None, sent: dict[str, Any] | None) -> dict[str, Any] | None:
    """Scenario B: what the server received joined with what client c0 sent; None if not run."""
    if not received or not sent:
        return None
    if "failed" in received:
        return {
            "failed": received["failed"],
            "encode_s": sent["encode_s"],
            "message_bytes": sent["message_bytes"],
            "records_sent": None,
        }
    return {
        **received,
        "encode_s": sent["encode_s"],
        "transfer_s": received["total_s"] - sent["encode_s"] - received["decode_s"],
        "message_bytes": sent["message_bytes"],
        "records_sent": sent["records"],
        "bytes_sent": sent["bytes"],
    }
