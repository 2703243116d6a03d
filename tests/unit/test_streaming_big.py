"""A model above protobuf's 2 GiB per message travels as a streamed transfer
through the in-memory transport, with the sender's and the receiver's memory
measured against the bounds of issue 15 (sender: at most 0.25x the model
beyond it and the records the transport stores; receiver: at most 1.25x the
model in all).

Runs in a fresh process so that its peak RSS (VmHWM, reset between the two
phases) holds only this transfer. About 7 GB of memory at the peak: the model,
the records the in-memory broker keeps, and the received tensors.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import asyncio, json, os
from pathlib import Path
import numpy as np
from flwire._protowire import crc32c
from flwire.messages import client_update
from flwire.tensors import EncodeOptions
from flwire.transport import Channel
from flwire.transport.memory import InMemoryTransport

def kb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)

def reset_peak():
    Path("/proc/self/clear_refs").write_text("5")

rng = np.random.default_rng(3)
block = rng.integers(0, 256, 1 << 20, dtype=np.uint8)
# One tensor of 2 GiB + 64 MiB (above what one protobuf message may hold), and two small ones.
big = np.tile(block, 2048 + 64).view(np.float32).reshape(-1, 1024)
state = {
    "big": big,
    "bias": rng.standard_normal(1000).astype(np.float16),
    "steps": np.arange(7, dtype=np.int64),
}
model = sum(v.nbytes for v in state.values())

async def main():
    transport = InMemoryTransport()
    await transport.start()
    channel = Channel(transport)
    msg = client_update("c1", round_id=1, weights=state, num_examples=5,
                        options=EncodeOptions(stream=True, compression="none"))
    reset_peak()
    before = kb("VmRSS")
    await channel.send_message("updates", msg)
    send_growth = kb("VmHWM") - before
    stored = sum(len(r.value) for r in transport.broker.topics["updates"])
    del msg
    reset_peak()
    before = kb("VmRSS")
    async for delivery in channel.receive(["updates"], "server", dedupe=False):
        got = delivery.message.tensors(as_numpy=True)
        recv_growth = kb("VmHWM") - before
        same = set(got) == set(state) and all(
            got[k].dtype == v.dtype and got[k].shape == v.shape
            and crc32c(got[k].view(np.uint8).reshape(-1)) == crc32c(v.view(np.uint8).reshape(-1))
            for k, v in state.items()
        )
        await delivery.done()
        break
    print(json.dumps({
        "model": model, "stored": stored, "send_growth": send_growth,
        "recv_growth": recv_growth, "same": same,
        "records": channel.stats["sent_parts"], "streams": channel.stats["received_streams"],
    }))

asyncio.run(main())
"""


def test_a_model_above_2_gib_streams_through_the_in_memory_transport_within_memory_bounds() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "python"), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["model"] > 2 << 30
    assert got["same"], "the received tensors differ from those sent"
    assert got["streams"] == 1
    # Every record fits the 1 MB default limit.
    assert got["records"] > got["model"] // 1_000_000
    # Sender: what the transport stores (the records themselves), plus at most 0.25x.
    assert got["send_growth"] <= got["stored"] + 0.25 * got["model"], got
    # Receiver: at most 1.25x the model in all.
    assert got["recv_growth"] <= 1.25 * got["model"], got
