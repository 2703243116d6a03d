"""The old path's server side of the end-to-end benchmark: JSON messages with
base64(gzip-9(pickle)) weights, one record each, over a plain confluent-kafka producer and
consumer (e2e_wire). The same scenarios and records as e2e_flwire."""

from __future__ import annotations

import time
from typing import Any

from e2e_phase import ServerPhase
from e2e_results import RoundLog, big_result
from e2e_settings import log
from e2e_wire import (
    BIG_ROUND,
    OldProducer,
    StateDict,
    old_consumer,
    old_message,
    old_parse,
    old_poll,
    old_state,
    old_weights,
)


class OldServer:
    """One old-path phase of the plan, server side."""

    def __init__(self, ph: ServerPhase, bootstrap: str) -> None:
        self.ph = ph
        self.producer = OldProducer(bootstrap)
        self.consumer = old_consumer(
            bootstrap, ph.layout.server_group(), [ph.layout.updates, ph.layout.control]
        )

    def _next(self, what: str) -> Any:
        since = time.monotonic()
        while True:
            record = old_poll(self.consumer, 0.2)
            if record is not None:
                return record
            self.ph.clients.still_waiting(self.ph.name, what, since, self.ph.st.wait_s)

    def _broadcast(self, kind: str, payload: dict[str, Any]) -> bytes:
        value = old_message(kind, "server", payload)
        self.producer.send(self.ph.layout.broadcast, value, "server")
        return value

    def register(self) -> float:
        """Wait until every client has registered; the seconds that took."""
        t0 = time.monotonic()
        registered: set[str] = set()
        while len(registered) < len(self.ph.clients.ids):
            message = old_parse(self._next("client registrations").value())
            if message["type"] == "client_registration":
                registered.add(message["payload"]["client_id"])
        return time.monotonic() - t0

    def round(self, r: int, base: StateDict) -> dict[str, Any]:
        """Scenario A: broadcast the global weights, take in every client's update."""
        rec = RoundLog(self.ph.name, r, warmup=r < self.ph.st.warmup)
        t0 = time.perf_counter()
        value = old_message(
            "global_update",
            "server",
            {"round_id": r, "weights": old_weights(base), "config": {"learning_rate": 0.01}},
        )
        encode_s = time.perf_counter() - t0
        self.producer.send(self.ph.layout.broadcast, value, "server")
        rec.broadcast_done(encode_s, len(value))
        rec.broadcast_bytes = len(value)
        while len(rec.updates) < len(self.ph.clients.ids):
            record = self._next(f"client updates of round {r}")
            rec.arrived()
            t0 = time.perf_counter()
            message = old_parse(record.value())
            payload = message["payload"]
            if message["type"] == "client_update" and payload["round_id"] == r:
                tensors = old_state(message)
                rec.decoded(payload["client_id"], tensors, time.perf_counter() - t0)
                rec.updates_bytes_received += len(record.value())
        return rec.finish(self.ph.expected)

    def big(self) -> dict[str, Any]:
        """Scenario B: ask the first client for the big model; time it until decoded, or
        record why the client could not send it."""
        self._broadcast(
            "training_start",
            {
                "round_id": BIG_ROUND,
                "config": {"big_model": self.ph.st.big},
                "client_ids": [self.ph.clients.ids[0]],
            },
        )
        while True:
            record = self._next("the big model")
            t0 = time.perf_counter()
            value = record.value()
            message = old_parse(value)
            if message["type"] in ("client_update", "error"):
                if message["payload"]["round_id"] == BIG_ROUND:
                    break
        payload = message["payload"]
        if message["type"] == "error":
            log(f"{self.ph.name} big model: not sent: {payload['error']}")
            return {"failed": payload["error"]}
        tensors = old_state(message)
        decode_s = time.perf_counter() - t0
        start = payload["metrics"]["t_start"]
        return big_result(self.ph.name, start, decode_s, 1, len(value), tensors, self.ph.expected)

    def run(self, base: StateDict) -> dict[str, Any]:
        """Registrations, warm-up and timed rounds, the big model if planned, shutdown."""
        out: dict[str, Any] = {"rounds": [], "big": None}
        try:
            out["clients_ready_s"] = self.register()
            for r in range(self.ph.st.warmup + self.ph.st.rounds):
                out["rounds"].append(self.round(r, base))
            if self.ph.with_big:
                out["big"] = self.big()
            self._broadcast("shutdown", {"reason": "done"})
        finally:
            self.consumer.close()
        return out


def old_server(ph: ServerPhase, bootstrap: str, base: StateDict) -> dict[str, Any]:
    """Run one old-path phase of the plan against the clients; the server's measurements."""
    return OldServer(ph, bootstrap).run(base)
