"""Scale-out aggregators read streamed updates (wire format section 14.5) as well
as whole and split ones: folded once their seal checks out, offsets kept below
a stream still under way, a broken stream given up on with its offsets moving
on, a signed stream verified. Before this, an aggregator took a stream's head
for an undecodable message and the update was lost."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from scaleout_tools import (
    COUNTS,
    REFERENCE,
    TOPIC,
    TP,
    intake,
    key_of,
    keyed,
    offsets_of,
    read_again_after_an_abort,
    records,
    weights,
)

from flwire import messages as m
from flwire import security
from flwire.aggregation import StreamingFedAvg
from flwire.aggregation.intake import FoldedEntry, decode_metadata
from flwire.tensors import EncodeOptions
from flwire.transport.base import Record
from flwire.transport.streaming import STREAM_HEADER, StreamAssembler, StreamWriter

Rec = tuple[bytes, list[tuple[str, bytes]]]
#: Cuts the 40x30 float32 test tensor into several chunks.
LIMIT = 1500


def streamed(client: str, *, sign: bool = False, round_id: int = 1) -> m.Message:
    msg = m.client_update(
        client,
        round_id,
        weights(client),
        num_examples=COUNTS[client],
        options=EncodeOptions(stream=True, compression="zstd"),
    )
    if sign:
        security.sign_in_place(msg, client, key(client))
    return msg


def key(client: str) -> Ed25519PrivateKey:
    return security.private_key_from_seed(bytes([ord(client)]) * 32)


def stream_records(msg: m.Message) -> list[Rec]:
    async def values() -> list[bytes]:
        return [bytes(v) async for v in StreamWriter(msg, LIMIT, threads=1).parts()]

    return keyed(
        msg.body.client_id,
        [(v, [(STREAM_HEADER, str(i).encode())]) for i, v in enumerate(asyncio.run(values()))],
    )


def log_of(*parts: list[Rec]) -> list[Record]:
    flat = [rec for part in parts for rec in part]
    return [Record(TOPIC, 0, offset, key_of(v), v, h) for offset, (v, h) in enumerate(flat)]


def expected_average(clients: str) -> np.ndarray:
    n = np.array([COUNTS[c] for c in clients], dtype=np.float64)
    stacked = np.stack([weights(c)["w"].double().numpy() for c in clients])
    return np.tensordot(n, stacked, 1) / n.sum()


def test_streamed_and_split_updates_fold_alike() -> None:
    stream_a, stream_c = stream_records(streamed("a")), stream_records(streamed("c"))
    assert len(stream_a) > 3  # head, several chunks, seal
    # a's stream is cut by b's split update and c's stream: a is under way below them.
    log = log_of(stream_a[:2], records("b"), stream_c, stream_a[2:])
    it = intake()
    try:
        for record in log[: len(log) - len(stream_a) + 2]:
            it.add(record)
        assert set(it.folds[1].counts) == {"b", "c"}
        point = it.commit_point()
        assert point is not None
        offset, text = point[TP]
        assert offset == 0  # a's head is not handled yet
        last_b = 2 + len(records("b")) - 1
        assert decode_metadata(text) == [
            FoldedEntry(1, "b", last_b),
            FoldedEntry(1, "c", last_b + len(stream_c)),
        ]
        for record in log[len(log) - len(stream_a) + 2 :]:
            it.add(record)
        assert set(it.folds[1].counts) == {"a", "b", "c"}
        assert offsets_of(it.commit_point()) == {TP: len(log)}
        assert it.stats["folded"] == 3 and it.stats["dropped_transfers"] == 0
        got = it.folds[1].result()
    finally:
        it.close()
    # The same fold as from the whole messages, bit for bit.
    whole = StreamingFedAvg(REFERENCE)
    for c in "bca":
        whole.add(c, weights(c), COUNTS[c])
    want = whole.result()
    assert torch.equal(got["w"], want["w"]) and torch.equal(got["steps"], want["steps"])
    assert np.allclose(got["w"].double().numpy(), expected_average("abc"), rtol=1e-6)


@pytest.mark.parametrize("damage", ["flip a chunk byte", "drop a chunk", "drop the seal"])
def test_a_broken_stream_is_given_up_on_and_its_offsets_move_on(damage: str) -> None:
    stream_a = stream_records(streamed("a"))
    if damage == "flip a chunk byte":
        value, headers = stream_a[2]
        flipped = bytearray(value)
        flipped[-5] ^= 0x40
        stream_a[2] = keyed("a", [(bytes(flipped), headers)])[0]
    elif damage == "drop a chunk":
        del stream_a[2]
    else:
        del stream_a[-1]
    log = log_of(stream_a, records("b"))
    it = intake(part_timeout_s=0.001 if damage == "drop the seal" else 120.0)
    try:
        for record in log:
            it.add(record)
        time.sleep(0.01)
        it.expire()  # a stream without its seal waits until its part timeout
        assert set(it.folds[1].counts) == {"b"}
        assert it.stats["dropped_transfers"] == 1
        # Nothing of a stays below the commit: the partition is not held up forever.
        assert offsets_of(it.commit_point()) == {TP: len(log)}
    finally:
        it.close()


def test_a_stream_read_again_after_an_abort_is_folded_again() -> None:
    log = log_of(stream_records(streamed("a")))
    it = intake()
    try:
        for record in log:
            it.add(record)
        assert set(it.folds[1].counts) == {"a"}
        read_again_after_an_abort(it, log)
        assert set(it.folds[1].counts) == {"a"}
        assert it.stats["folded"] == 2 and it.stats["duplicate_parts"] == 0
        assert offsets_of(it.commit_point()) == {TP: len(log)}
    finally:
        it.close()


def test_signed_streams_are_verified_and_unknown_or_unsigned_ones_refused() -> None:
    """a signs with a trusted key (folded), b with a key the trust store does not
    hold, c not at all: both refused after their seal, their offsets moving on."""
    trust = security.TrustStore({"a": key("a").public_key()})
    log = log_of(
        stream_records(streamed("b", sign=True)),
        stream_records(streamed("a", sign=True)),
        stream_records(streamed("c")),
    )
    verifier = security.Verifier(trust)
    it = intake(verifier=verifier)
    try:
        for record in log:
            it.add(record)
        assert set(it.folds[1].counts) == {"a"}
        assert verifier.refusals == {"unknown_key": 1, "unsigned": 1}
        assert it.stats["unverified"] == 2
        assert offsets_of(it.commit_point()) == {TP: len(log)}
        # Read again after an abort: folded again (no "replay" refusal).
        read_again_after_an_abort(it, log)
        assert set(it.folds[1].counts) == {"a"}
        assert "replay" not in verifier.refusals
    finally:
        it.close()


def test_a_signed_stream_with_a_chunk_changed_after_signing_is_never_folded() -> None:
    """The stream is given up on (its chunk's CRC-32C catches the change first)
    and nothing of it reaches a fold."""
    trust = security.TrustStore({"a": key("a").public_key()})
    stream_a = stream_records(streamed("a", sign=True))
    value, headers = stream_a[1]
    changed = bytearray(value)
    changed[-5] ^= 0x01
    stream_a[1] = keyed("a", [(bytes(changed), headers)])[0]
    verifier = security.Verifier(trust)
    it = intake(verifier=verifier)
    try:
        for record in log_of(stream_a):
            it.add(record)
        assert not it.folds
        assert it.stats["dropped_transfers"] == 1
        assert offsets_of(it.commit_point()) == {TP: len(stream_a)}
    finally:
        it.close()


def test_stream_bounds_come_from_the_assembler_factory() -> None:
    stream_a = stream_records(streamed("a"))
    it = intake(stream_assembler=lambda: StreamAssembler(max_stream_bytes=100))
    try:
        for record in log_of(stream_a):
            it.add(record)
        assert not it.folds
        assert it.stats["dropped_transfers"] + it.stats["bad_parts"] >= 1
        assert offsets_of(it.commit_point()) == {TP: len(stream_a)}
    finally:
        it.close()
