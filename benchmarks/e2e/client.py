"""One FL client of the end-to-end Kafka benchmark, in its own process (started by the
server, ``python -m benchmarks.e2e``; not meant to be run by hand).

    python -m benchmarks.e2e.client BOOTSTRAP CLIENT_ID PLAN_JSON RESULT_PATH

It runs the phases of PLAN_JSON in order (a list of {name, kind, job, options}). A flwire
phase: registers on the control topic, then for each global update on the
broadcast topic decodes it, perturbs the weights and sends a client update; on a
training_start naming it, sends the big model (scenario B); on shutdown, stops. An old phase
does the same with the old JSON/base64 messages over a plain confluent-kafka producer and
consumer. Then it writes its timings to RESULT_PATH (JSON). It exits by itself if its parent dies.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import legacy
from benchmarks.e2e.wire import (
    BIG_ROUND,
    LegacyProducer,
    RecordTooLarge,
    big_model,
    clock,
    flwire_transport,
    legacy_consumer,
    legacy_poll,
    perturb,
)
from benchmarks.models import StateDict
from flwire import messages as m
from flwire.transport import Channel, TopicLayout, message_headers

log = logging.getLogger("e2e-client")


def _new_phase() -> dict[str, Any]:
    return {"rounds": [], "big": None}


class Client:
    def __init__(self, bootstrap: str, client_id: str) -> None:
        self.bootstrap = bootstrap
        self.client_id = client_id
        self._big: StateDict | None = None
        self.result: dict[str, Any] = {"client_id": client_id, "pid": os.getpid()}

    def big(self, size: str) -> StateDict:
        if self._big is None:
            self._big = big_model(size)
        return self._big

    # ------------------------------------------------------------------------- flwire

    async def flwire_phase(self, job: str, options: dict[str, Any]) -> dict[str, Any]:
        layout = TopicLayout(job)
        out = _new_phase()
        transport = flwire_transport(self.bootstrap, options)
        await transport.start()
        channel = Channel(transport)
        cid = self.client_id

        async def send(msg: m.Message, blob: bytes) -> tuple[int, int]:
            """Send one update; (records, bytes) it took (record values)."""
            before = dict(channel.stats)
            await channel.send(
                layout.updates,
                blob,
                key=cid.encode(),
                headers=message_headers(msg),
                transfer_id=msg.message_id,
            )
            parts = channel.stats["sent_parts"] - before["sent_parts"]
            return parts or 1, channel.stats["bytes_sent"] - before["bytes_sent"]

        try:
            await channel.send_message(layout.control, m.client_registration(cid))
            async for delivery in channel.receive([layout.broadcast], layout.client_group(cid)):
                arrived = clock()
                t0 = time.perf_counter()
                msg = m.decode_message(delivery.payload)
                if msg.type == "shutdown":
                    await delivery.done()
                    break
                if msg.type == "global_update":
                    state = msg.tensors()
                    t1 = time.perf_counter()
                    trained = perturb(state)
                    t2 = time.perf_counter()
                    update = m.client_update(
                        cid, msg.body.round_id, trained, {"loss": 0.5}, num_examples=600
                    )
                    blob = update.to_bytes()
                    t3 = time.perf_counter()
                    records, nbytes = await send(update, blob)
                    out["rounds"].append(
                        {
                            "round": msg.body.round_id,
                            "arrived": arrived,
                            "decode_s": t1 - t0,
                            "encode_s": t3 - t2,
                            "sent": clock(),
                            "records": records,
                            "bytes": nbytes,
                        }
                    )
                elif msg.type == "training_start" and cid in msg.body.client_ids:
                    size = msg.body.config["big_model"].string_value
                    state = self.big(size)
                    start = clock()
                    t0 = time.perf_counter()
                    update = m.client_update(cid, BIG_ROUND, state, {"t_start": start})
                    blob = update.to_bytes()
                    encode_s = time.perf_counter() - t0
                    records, nbytes = await send(update, blob)
                    out["big"] = {
                        "start": start,
                        "encode_s": encode_s,
                        "sent": clock(),
                        "records": records,
                        "bytes": nbytes,
                        "message_bytes": len(blob),
                    }
                await delivery.done()
        finally:
            await transport.stop()
        return out

    # ------------------------------------------------------------------------- old path

    def legacy_phase(self, job: str) -> dict[str, Any]:
        layout = TopicLayout(job)
        out = _new_phase()
        cid = self.client_id
        producer = LegacyProducer(self.bootstrap)
        consumer = legacy_consumer(self.bootstrap, layout.client_group(cid), [layout.broadcast])
        try:
            producer.send(
                layout.control,
                legacy.message("client_registration", cid, {"client_id": cid}),
                cid,
            )
            while True:
                record = legacy_poll(consumer, 0.2)
                if record is None:
                    continue
                arrived = clock()
                t0 = time.perf_counter()
                message = legacy.parse(record.value())
                kind, payload = message["type"], message["payload"]
                if kind == "shutdown":
                    break
                if kind == "global_update":
                    state = legacy.weights_of(message)
                    t1 = time.perf_counter()
                    trained = perturb(state)
                    t2 = time.perf_counter()
                    value = legacy.message(
                        "client_update",
                        cid,
                        {
                            "client_id": cid,
                            "round_id": payload["round_id"],
                            "weights": legacy.serialize_weights(trained),
                            "metrics": {"loss": 0.5},
                            "num_samples": 600,
                        },
                    )
                    t3 = time.perf_counter()
                    producer.send(layout.updates, value, cid)
                    out["rounds"].append(
                        {
                            "round": payload["round_id"],
                            "arrived": arrived,
                            "decode_s": t1 - t0,
                            "encode_s": t3 - t2,
                            "sent": clock(),
                            "records": 1,
                            "bytes": len(value),
                        }
                    )
                elif kind == "training_start" and cid in payload.get("client_ids", []):
                    state = self.big(payload["config"]["big_model"])
                    start = clock()
                    t0 = time.perf_counter()
                    value = legacy.message(
                        "client_update",
                        cid,
                        {
                            "client_id": cid,
                            "round_id": BIG_ROUND,
                            "weights": legacy.serialize_weights(state),
                            "metrics": {"t_start": start},
                        },
                    )
                    encode_s = time.perf_counter() - t0
                    out["big"] = {
                        "start": start,
                        "encode_s": encode_s,
                        "records": 1,
                        "bytes": len(value),
                        "message_bytes": len(value),
                    }
                    try:
                        producer.send(layout.updates, value, cid)
                    except RecordTooLarge as exc:
                        # Tell the server, so that it stops waiting.
                        out["big"].update(failed=str(exc), records=0, bytes=0)
                        notice = {"client_id": cid, "round_id": BIG_ROUND, "error": str(exc)}
                        del value
                        producer.send(layout.updates, legacy.message("error", cid, notice), cid)
                    out["big"]["sent"] = clock()
                    value = b""
        finally:
            consumer.close()
        return out


def _exit_with_parent() -> None:
    """The server may die without stopping us (SIGKILL): then exit too."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
    )
    bootstrap, client_id, plan, result_path = argv[:4]
    _exit_with_parent()
    client = Client(bootstrap, client_id)
    for phase in json.loads(plan):
        if phase["kind"] == "flwire":
            result = asyncio.run(client.flwire_phase(phase["job"], phase["options"]))
        else:
            result = client.legacy_phase(phase["job"])
        client.result[phase["name"]] = result
    Path(result_path).write_text(json.dumps(client.result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
