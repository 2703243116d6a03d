"""What the benchmark's server side records and checks, the same for flwire and the old path:
the weights it should decode, one record per round of scenario A and one for scenario B."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from e2e_settings import log
from e2e_wire import StateDict, big_model, clock, perturb


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


def raw_bytes(state: StateDict) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


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
