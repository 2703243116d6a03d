"""What the benchmark's server side records and checks, the same for flwire and the old path
(the weights it should decode, one record per round of scenario A and one for scenario B),
and the per-path figures summed up from the server's and the clients' records."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from benchmarks.e2e.wire import big_model, clock, log, perturb
from benchmarks.models import StateDict


class Expected:
    """What the server should decode: the global CNN + the perturbation, and the big model
    (built on first use, after its transfer has been timed)."""

    def __init__(self, base: StateDict, big: str) -> None:
        self.update = perturb(base)
        self._big_size = big
        self._big: StateDict | None = None

    @property
    def big(self) -> StateDict:
        if self._big is None:
            self._big = big_model(self._big_size)
        return self._big


def same(got: StateDict, want: StateDict) -> bool:
    """Bit-exact: the same names, dtypes, shapes and values."""
    return got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


@dataclass
class RoundLog:
    """One round of scenario A as the server saw it; times on clock(), relative to start."""

    phase: str
    round: int
    warmup: bool
    start: float = field(default_factory=clock)
    global_encode_s: float = 0.0
    global_message_bytes: int = 0
    broadcast_acked_s: float = 0.0
    broadcast_records: int = 1
    broadcast_bytes: int = 0
    updates_bytes_received: int = 0
    update_decode_s: list[float] = field(default_factory=list)
    update_arrivals_s: list[float] = field(default_factory=list)
    #: How long each ``await delivery.done()`` of the round took (flwire only).
    done_s: list[float] = field(default_factory=list)
    #: The longest step of each of those ``done()`` calls: how long it held the event loop.
    done_hold_s: list[float] = field(default_factory=list)
    updates: dict[str, StateDict] = field(default_factory=dict)

    def broadcast_done(self, encode_s: float, message_bytes: int) -> None:
        """The global update (``message_bytes``, encoded in ``encode_s``) is acknowledged."""
        self.broadcast_acked_s = clock() - self.start
        self.global_encode_s = encode_s
        self.global_message_bytes = message_bytes

    def arrived(self) -> None:
        self.update_arrivals_s.append(clock() - self.start)

    def decoded(self, client_id: str, tensors: StateDict, decode_s: float) -> None:
        self.updates[client_id] = tensors
        self.update_decode_s.append(decode_s)

    def finish(self, expected: Expected) -> dict[str, Any]:
        """The round's record (JSON-able), once every update is in; logs its wall time."""
        end = clock()
        record = {k: v for k, v in vars(self).items() if k not in ("phase", "updates")}
        record.update(
            end=end,
            wall_s=end - self.start,
            exact=all(same(t, expected.update) for t in self.updates.values()),
        )
        self.updates.clear()
        warm = " (warm-up)" if self.warmup else ""
        log(f"{self.phase} round {self.round}{warm}: {end - self.start:.2f} s")
        return record


def big_result(
    phase: str,
    start: float,
    decode_s: float,
    records: int,
    nbytes: int,
    tensors: StateDict,
    expected: Expected,
) -> dict[str, Any]:
    """Scenario B's record: from the client's encode ``start`` (clock()) to now, decoded."""
    end = clock()
    log(f"{phase} big model: {end - start:.2f} s")
    return {
        "start": start,
        "end": end,
        "total_s": end - start,
        "decode_s": decode_s,
        "records_received": records,
        "bytes_received": nbytes,
        "exact": same(tensors, expected.big),
    }


# ----------------------------------------------------------------------------- summary


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
    if all(r.get("done_s") for r in rounds):
        out["done_s"] = [x for r in rounds for x in r["done_s"]]
        out["done_max_s"] = [max(r["done_s"]) for r in rounds]
        out["done_hold_max_s"] = [max(r["done_hold_s"]) for r in rounds]
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
