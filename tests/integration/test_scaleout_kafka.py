"""Scale-out aggregation on the real broker (flwire.aggregation.scaleout; wire
format section 14.4): aggregators in one consumer group fold the updates of
their partitions, a coordinator combines their partials.

Tolerance: every result is held to numpy's weighted average, computed here in
float64 from the known updates, within one float32 ulp per element; and one
aggregator's model to two aggregators' within one float32 ulp too. Why one ulp:
each product n_i * w_i of a float32 value and a count below 2^29 is exact in
float64, so one or two aggregators differ only in the order of the float64
additions (a few float64 ulps, about 2^-29 of a float32 ulp); the quotient, cast
to float32, then lands on the same float32 value except when it lies within
those few float64 ulps of a rounding boundary between two float32 values, where
it may round to the neighbour: one float32 ulp, never more.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flwire import messages
from flwire.aggregation.combine import RoundCombiner
from flwire.aggregation.scaleout import Aggregator, Coordinator
from flwire.tensors import EncodeOptions
from flwire.transport import Channel, KafkaTransport, TopicLayout

from .scaleout_aggregator import TRANSACTION_TIMEOUT_S, reference_state

REPO = Path(__file__).resolve().parents[2]
#: Client id -> (example count, delta?): six updates of 4.8 MB, 5 records each.
CLIENTS = {
    "client-1": (600, False),
    "client-2": (400, True),
    "client-3": (250, False),
    "client-4": (900, False),
    "client-5": (130, True),
    "client-6": (777, False),
}
NONE = EncodeOptions(compression="none")
#: These clients send their update as a streamed transfer (wire format 14.5),
#: the others as whole messages split into parts.
STREAMED = {"client-3", "client-6"}
STREAM = EncodeOptions(compression="none", stream=True)


def trained(client: str) -> dict[str, torch.Tensor]:
    """Known full weights of a client's update."""
    seed = int(client.rsplit("-", 1)[1])
    g = torch.Generator().manual_seed(seed)
    state = {
        name: value + 0.1 * torch.randn(value.shape, generator=g)
        for name, value in reference_state().items()
        if value.is_floating_point()
    }
    state["steps"] = torch.tensor(seed * 100, dtype=torch.int64)
    return state


def update(client: str) -> messages.Message:
    count, delta = CLIENTS[client]
    weights = trained(client)
    if delta:
        ref = reference_state()
        weights = {n: v - ref[n] if v.is_floating_point() else v for n, v in weights.items()}
    options = STREAM if client in STREAMED else NONE
    return messages.client_update(
        client, 1, weights, num_examples=count, delta=delta, options=options
    )


def expected() -> dict[str, np.ndarray]:
    """numpy's weighted average of the known updates (float64); the integer
    tensor: the heaviest contributor's."""
    counts = np.array([CLIENTS[c][0] for c in CLIENTS], dtype=np.float64)
    states = {c: trained(c) for c in CLIENTS}
    ref = reference_state()
    out: dict[str, np.ndarray] = {}
    for name, value in ref.items():
        if not value.is_floating_point():
            heaviest = max(CLIENTS, key=lambda c: CLIENTS[c][0])
            out[name] = states[heaviest][name].numpy()
            continue
        terms = []
        for c in CLIENTS:
            w = states[c][name].double().numpy()
            if CLIENTS[c][1]:  # sent as a delta: the aggregator adds it to the reference
                w = (states[c][name] - ref[name]).double().numpy() + ref[name].double().numpy()
            terms.append(w)
        out[name] = np.tensordot(counts, np.stack(terms), axes=1) / counts.sum()
    return out


def within_one_ulp(got: torch.Tensor, want: np.ndarray) -> bool:
    if not got.is_floating_point():
        return bool(np.array_equal(got.numpy(), want))
    ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    return bool(np.all(np.abs(got.double().numpy() - want) <= ulp))


def send_updates(bootstrap: str, layout: TopicLayout, partitions: int) -> None:
    async def go() -> None:
        transport = KafkaTransport(bootstrap, num_partitions=partitions)
        await transport.start()
        try:
            await transport.ensure_topics(layout.all)
            channel = Channel(transport)
            for client in CLIENTS:
                await channel.send_message(layout.updates, update(client))
        finally:
            await transport.stop()

    asyncio.run(go())


def create_topics(bootstrap: str, layout: TopicLayout, partitions: int) -> None:
    async def go() -> None:
        transport = KafkaTransport(bootstrap, num_partitions=partitions)
        await transport.start()
        try:
            await transport.ensure_topics(layout.all)
        finally:
            await transport.stop()

    asyncio.run(go())


@contextmanager
def aggregators(
    bootstrap: str, layout: TopicLayout, ids: list[str], **kwargs: object
) -> Iterator[list[Aggregator]]:
    """Aggregators running in threads until the block ends."""
    reference = reference_state()
    stop = threading.Event()
    running = [
        Aggregator(
            {"bootstrap.servers": bootstrap},
            layout,
            agg_id,
            lambda r: reference if r == 1 else None,
            options=NONE,
            **kwargs,  # type: ignore[arg-type]
        )
        for agg_id in ids
    ]
    errors: list[BaseException] = []

    def run(agg: Aggregator) -> None:
        try:
            agg.run(stop)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(a,), daemon=True) for a in running]
    for t in threads:
        t.start()
    try:
        yield running
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not errors, errors


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def combine(
    bootstrap: str, layout: TopicLayout, timeout: float
) -> tuple[RoundCombiner, Coordinator]:
    coordinator = Coordinator({"bootstrap.servers": bootstrap}, layout)
    try:
        return coordinator.collect(
            1, reference_state(), list(CLIENTS), max_wait_s=timeout, min_clients=len(CLIENTS)
        ), coordinator
    finally:
        coordinator.close()


def test_one_and_two_aggregators_give_the_same_model(bootstrap: str, job_id: str) -> None:
    started = time.monotonic()
    one, two = TopicLayout(f"{job_id}-one"), TopicLayout(f"{job_id}-two")
    send_updates(bootstrap, one, partitions=2)
    with aggregators(bootstrap, one, ["solo"]):
        single, _ = combine(bootstrap, one, 40)
    create_topics(bootstrap, two, partitions=2)
    with aggregators(bootstrap, two, ["agg-a", "agg-b"]) as pair:
        wait_until(lambda: all(len(a.partitions) == 1 for a in pair), 30)
        send_updates(bootstrap, two, partitions=2)
        double, coordinator = combine(bootstrap, two, 40)
    assert single.clients == double.clients == {c: n for c, (n, _) in CLIENTS.items()}
    assert set(single.aggregators) == {"solo"}
    # Both aggregators folded: the six client keys land in both partitions.
    assert set(double.aggregators) == {"agg-a", "agg-b"}, double.aggregators
    assert sum(a.stats["folded"] for a in pair) == len(CLIENTS)
    assert coordinator.stats["overlapping"] == coordinator.stats["refused"] == 0
    want = expected()
    a, b = single.result(), double.result()
    for name, value in want.items():
        assert within_one_ulp(a[name], value), name
        assert within_one_ulp(b[name], value), name
        if a[name].is_floating_point():
            spacing = np.spacing(np.abs(b[name].numpy()))
            assert np.all(np.abs(a[name].numpy() - b[name].numpy()) <= spacing), name
    assert int(a["steps"]) == int(b["steps"]) == 400  # client-4: the most examples
    print(f"one vs two aggregators: {time.monotonic() - started:.1f} s")


def test_a_killed_aggregator_s_updates_count_exactly_once(bootstrap: str, job_id: str) -> None:
    """Aggregator A dies inside a transaction (its partial written, not committed);
    its partition moves to B, which folds A's updates again: each counts once."""
    started = time.monotonic()
    layout = TopicLayout(job_id)
    create_topics(bootstrap, layout, partitions=2)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with aggregators(bootstrap, layout, ["agg-b"]) as (survivor,):
        dying = subprocess.Popen(
            [
                *(sys.executable, "-m", "tests.integration.scaleout_aggregator"),
                *(bootstrap, job_id, "agg-a", "--hang-in-transaction"),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            lines = []
            assert dying.stdout is not None
            deadline = time.monotonic() + 30
            # Both in the group, one partition each: then the updates go out.
            while time.monotonic() < deadline:
                line = dying.stdout.readline()
                lines.append(line)
                if "now folds" in line and line.count("[") == 1:
                    break
            else:
                raise AssertionError("agg-a never got one partition:\n" + "".join(lines))
            send_updates(bootstrap, layout, partitions=2)
            in_transaction: list[str] = []
            while time.monotonic() < deadline + 30:
                line = dying.stdout.readline()
                lines.append(line)
                if line.startswith("IN-TRANSACTION"):
                    in_transaction = line.split()[1:]
                    break
            assert in_transaction, "agg-a never folded:\n" + "".join(lines)
        finally:
            dying.send_signal(signal.SIGKILL)
            dying.wait(10)
        killed_at = time.monotonic()
        combiner, coordinator = combine(bootstrap, layout, 45)
    # agg-a's partial was written inside its transaction, which was never committed:
    # read_committed hides it, and agg-b folded those updates again.
    assert combiner.clients == {c: n for c, (n, _) in CLIENTS.items()}
    assert set(in_transaction) < set(CLIENTS)
    assert set(combiner.aggregators) == {"agg-b"}
    assert survivor.stats["folded"] == len(CLIENTS)
    assert coordinator.stats["overlapping"] == coordinator.stats["refused"] == 0
    result = combiner.result()
    for name, value in expected().items():
        assert within_one_ulp(result[name], value), name
    print(
        f"agg-a folded {in_transaction} in its transaction; combined "
        f"{time.monotonic() - killed_at:.1f} s after the kill "
        f"(transaction timeout {TRANSACTION_TIMEOUT_S:g} s); "
        f"test {time.monotonic() - started:.1f} s"
    )


def test_flwire_aggregator_processes_read_the_global_model_from_the_broadcast(
    bootstrap: str, job_id: str, tmp_path: Path
) -> None:
    """Two ``flwire aggregator`` processes with a trust store: each reads round 1's
    global model from the broadcast topic (an unsigned forgery of it, sent first,
    is refused), folds the signed updates of its partition (deltas added to that
    model), and stops on SIGTERM after committing. The coordinator's model is
    numpy's average within one float32 ulp."""
    from flwire import security

    def key(name: str) -> Ed25519PrivateKey:
        return security.private_key_from_seed(name.encode().ljust(32, b"\0")[:32])

    senders = ["server", *CLIENTS]
    trust = tmp_path / "trust.csv"
    trust.write_text(
        "".join(f"{s},{security.public_key_base64(key(s).public_key())}\n" for s in senders)
    )
    layout = TopicLayout(job_id)
    create_topics(bootstrap, layout, partitions=2)

    async def broadcast() -> None:
        transport = KafkaTransport(bootstrap)
        await transport.start()
        try:
            channel = Channel(transport)
            forged = messages.global_update(
                1, {n: torch.full_like(v, 7) for n, v in reference_state().items()}
            )
            await channel.send_message(layout.broadcast, forged)  # unsigned: refused
            real = messages.global_update(1, reference_state())
            security.sign_in_place(real, "server", key("server"))
            await channel.send_message(layout.broadcast, real)
        finally:
            await transport.stop()

    asyncio.run(broadcast())
    env = {**os.environ, "PYTHONPATH": str(REPO / "python")}
    procs = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "flwire.cli", "aggregator"),
                *("--bootstrap-servers", bootstrap, "--job", job_id, "--id", agg_id),
                *("--trust", str(trust)),
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for agg_id in ("agg-x", "agg-y")
    ]
    firsts: list[str] = []
    try:
        # Each says its first line once it is set up and Ctrl-C / SIGTERM stop it
        # cleanly (a process still importing torch when the round is over would
        # die of the SIGTERM below, exit -15).
        for proc in procs:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 120)
            assert ready, "an aggregator said nothing within 120 s"
            firsts.append(proc.stdout.readline())
            assert ": folding " in firsts[-1], firsts[-1]

        async def send_signed() -> None:
            transport = KafkaTransport(bootstrap, num_partitions=2)
            await transport.start()
            try:
                channel = Channel(transport)
                for client in CLIENTS:
                    msg = update(client)
                    security.sign_in_place(msg, client, key(client))
                    await channel.send_message(layout.updates, msg)
            finally:
                await transport.stop()

        asyncio.run(send_signed())
        combiner, coordinator = combine(bootstrap, layout, 60)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        outputs = [proc.communicate(timeout=60)[0] for proc in procs]
        outputs = [first + rest for first, rest in zip(firsts, outputs, strict=False)]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert combiner.clients == {c: n for c, (n, _) in CLIENTS.items()}, outputs
    assert coordinator.stats["overlapping"] == coordinator.stats["refused"] == 0
    result = combiner.result()
    for name, value in expected().items():
        assert within_one_ulp(result[name], value), name
    text = "".join(outputs)
    assert text.count("folded the update of") == len(CLIENTS), text
    assert "(global models) refused a message claiming to be from 'server' (unsigned)" in text, text
    assert "Traceback" not in text, text
    for agg_id, out in zip(("agg-x", "agg-y"), outputs, strict=True):
        assert out.rstrip().splitlines()[-1].startswith(f"{agg_id}: stopped ("), out
