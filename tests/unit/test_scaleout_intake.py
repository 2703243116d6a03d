"""Scale-out without a broker: what an aggregator folds and may commit
(flwire.aggregation.intake), and how the coordinator combines partials
(flwire.aggregation.combine); wire format section 14.4."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scaleout_tools import (
    COUNTS,
    REFERENCE,
    TOPIC,
    TP,
    intake,
    interleave,
    key_of,
    keyed,
    offsets_of,
    read_again_after_an_abort,
    records,
    weights,
)

from flwire import messages as m
from flwire.aggregation import StreamingFedAvg
from flwire.aggregation.combine import RoundCombiner
from flwire.aggregation.intake import (
    MAX_METADATA_BYTES,
    FoldedEntry,
    decode_metadata,
    encode_metadata,
)
from flwire.aggregation.partial import to_partial
from flwire.exceptions import CommunicationException
from flwire.transport.base import Record
from flwire.transport.chunking import MAX_MEMORY_BYTES, PART_HEADER, split_payload

#: The intake's reassembler: its default, and one that spills every part to disk.
MEMORY_CAPS = [MAX_MEMORY_BYTES, 0]


@pytest.mark.parametrize("memory", MEMORY_CAPS)
def test_offsets_stay_below_an_incomplete_update_and_metadata_names_what_is_above(
    memory: int,
) -> None:
    log = interleave(records("a"), records("b"), records("c"))
    parts_a = len(records("a"))
    assert parts_a > 2
    first = intake(max_memory_bytes=memory)
    # Everything up to a's second part: b and c are complete and folded, a is not.
    for record in log[: len(log) - parts_a + 1]:
        first.add(record)
    assert set(first.folds[1].counts) == {"b", "c"}
    point = first.commit_point()
    assert point is not None
    offset, text = point[TP]
    assert offset == 0  # a's first part is not handled yet
    entries = decode_metadata(text)
    last_b = len(records("b"))
    assert entries == [
        FoldedEntry(1, "b", last_b),
        FoldedEntry(1, "c", last_b + len(records("c"))),
    ]
    committed_partial = to_partial(first.folds[1], "agg-1", 1)
    first.committed(point)
    assert not first.folds

    # Parts past the cap waited on disk (the incomplete update a's first part still does).
    assert (first.reassembler.spilled_bytes > 0) == (memory == 0)

    # The aggregator dies; another reads the partition again from offset 0.
    second = intake(max_memory_bytes=memory)
    second.assigned(TP, text)
    for record in log:
        second.add(record)
    assert set(second.folds[1].counts) == {"a"}  # b and c were committed already
    assert second.stats["skipped"] == 2
    final = second.commit_point()
    assert final is not None
    # Every record handled: the metadata names no update above the offset, only the
    # open round's updates folded below it (a copy re-read later is skipped).
    assert final[TP][0] == len(log)
    assert all(e.last_offset < len(log) for e in decode_metadata(final[TP][1]))
    assert {e.client_id for e in decode_metadata(final[TP][1])} == {"a", "b", "c"}

    # The coordinator gets every client once.
    combiner = RoundCombiner(1, REFERENCE, ["a", "b", "c"])
    assert combiner.add(m.decode_message(committed_partial.to_bytes()))
    assert combiner.add(m.decode_message(to_partial(second.folds[1], "agg-2", 1).to_bytes()))
    assert combiner.covered()
    n = np.array([COUNTS[c] for c in "abc"], dtype=np.float64)
    want = np.tensordot(n, np.stack([weights(c)["w"].double().numpy() for c in "abc"]), 1)
    want /= n.sum()
    got = combiner.result()["w"].double().numpy()
    assert np.all(np.abs(got - want) <= np.spacing(np.abs(want).astype(np.float32)))
    assert int(combiner.result()["steps"]) == ord("a")  # a has the most examples


@pytest.mark.parametrize("memory", MEMORY_CAPS)
def test_after_an_abort_the_records_are_folded_again_and_the_offsets_follow(memory: int) -> None:
    parts_b = len(records("b"))
    log = [
        Record(TOPIC, 0, offset, key_of(v), v, h)
        for offset, (v, h) in enumerate(records("b") + records("a"))
    ]
    first = intake(max_memory_bytes=memory)
    for record in log:
        first.add(record)
    point = first.commit_point()
    assert point is not None and point[TP][0] == len(log)
    first.reset()  # the transaction aborted: nothing of it counts
    assert not first.folds and not first.dirty()
    first.assigned(TP, None)
    for record in log[:parts_b]:  # read again from the committed offset (none: the start)
        first.add(record)
    again = first.commit_point()
    # Only b is folded again: the offset is the end of b, not the aborted one (which
    # would lose a, not folded again yet).
    assert offsets_of(again) == {TP: parts_b}
    assert set(first.folds[1].counts) == {"b"}
    for record in log[parts_b:]:
        first.add(record)
    assert set(first.folds[1].counts) == {"a", "b"}
    assert offsets_of(first.commit_point()) == {TP: len(log)}


def test_updates_that_do_not_count_still_move_the_offsets() -> None:
    other = m.evaluation_result("a", 1, {"accuracy": 0.5}, num_examples=10)
    late = records("b", round_id=7)  # no global model for round 7
    log = [Record(TOPIC, 0, 0, b"a", other.to_bytes(), [])]
    log += [Record(TOPIC, 0, 1 + i, b"b", v, h) for i, (v, h) in enumerate(late)]
    log.append(Record(TOPIC, 0, len(log), b"x", b"\x00not a message", []))
    it = intake()
    for record in log:
        it.add(record)
    assert it.stats["other"] == it.stats["refused"] == it.stats["undecodable"] == 1
    assert not it.folds
    assert offsets_of(it.commit_point()) == {TP: len(log)}


def test_a_second_update_of_a_client_is_folded_once() -> None:
    log = interleave(records("a"), records("a"))  # sent twice (two message ids)
    it = intake()
    for record in log:
        it.add(record)
    assert it.folds[1].counts == {"a": COUNTS["a"]}
    assert it.stats["skipped"] == 1


def test_a_verifier_refuses_unsigned_and_forged_updates_and_still_folds_records_read_again() -> (
    None
):
    """With the clients' keys: an unsigned update and one signed by a key the trust
    store does not hold are refused before they are read (their offsets move on);
    a signed one is folded, and folded again when read again after an abort (the
    intake's own bookkeeping, not the verifier's replay store, decides that)."""
    from flwire import security

    keys = {c: security.private_key_from_seed(bytes([ord(c)]) * 32) for c in "ab"}
    trust = security.TrustStore({"a": keys["a"].public_key()})

    def signed(client: str, key: str) -> list[tuple[bytes, list[tuple[str, bytes]]]]:
        msg = m.client_update(client, 1, weights(client), num_examples=COUNTS[client])
        blob = security.sign_message(msg, key, keys[key]) if key == client else msg.to_bytes()
        if key != client:  # signed by a, in b's name and sender: a forgery
            msg.envelope.sender_id = key
            blob = security.sign_envelope(msg.to_bytes(), key, keys[key])
        return keyed(
            client,
            [
                (part, [(PART_HEADER, f"{i}/{n}".encode())])
                for part, i, n in split_payload(blob, msg.message_id, 1500)
            ],
        )

    unsigned = records("b")
    log = [
        Record(TOPIC, 0, offset, key_of(v), v, h)
        for offset, (v, h) in enumerate(unsigned + signed("b", "a") + signed("a", "a"))
    ]
    verifier = security.Verifier(trust)
    it = intake(verifier=verifier)
    for record in log:
        it.add(record)
    assert set(it.folds[1].counts) == {"a"}
    assert verifier.refusals == {"unsigned": 1, "sender_mismatch": 1}
    assert it.stats["unverified"] == 2
    assert offsets_of(it.commit_point()) == {TP: len(log)}
    read_again_after_an_abort(it, log)
    assert set(it.folds[1].counts) == {"a"}  # read again: folded again, no "replay"
    assert "replay" not in verifier.refusals


def test_commit_metadata_round_trip_and_bounds() -> None:
    entries = [FoldedEntry(2, "client-é", 17), FoldedEntry(1, "b", 9)]
    text = encode_metadata(entries)
    assert text.startswith("flwire-folded/1 ")
    assert decode_metadata(text) == sorted(entries)
    assert encode_metadata([]) == "" and decode_metadata("") == decode_metadata(None) == []
    assert decode_metadata("someone else's") == []
    with pytest.raises(CommunicationException, match="unreadable flwire commit metadata"):
        decode_metadata("flwire-folded/1 [[1, 2]]")
    # Too many updates folded above an incomplete one: the commit waits.
    it = intake()
    it.assigned(TP, None)
    it.add(Record(TOPIC, 0, 0, b"a", records("a")[0][0], records("a")[0][1]))
    many = [FoldedEntry(1, f"client-{i:04}", 10 + i) for i in range(200)]
    assert len(encode_metadata(many)) > MAX_METADATA_BYTES
    it.assigned(TP, encode_metadata(many))
    for offset, (value, headers) in enumerate(records("b"), start=1):
        it.add(Record(TOPIC, 0, offset, b"b", value, headers))
    assert it.commit_point() is None


def test_the_combiner_refuses_overlaps_and_other_rounds_and_counts_them() -> None:
    def partial(clients: str, round_id: int = 1) -> m.Message:
        fold = StreamingFedAvg(REFERENCE)
        for c in clients:
            fold.add(c, weights(c), COUNTS[c])
        return m.decode_message(to_partial(fold, f"agg-{clients}", round_id).to_bytes())

    combiner = RoundCombiner(1, REFERENCE, ["a", "b", "c", "d"])
    assert combiner.add(partial("ab"))
    assert not combiner.covered() and combiner.missing() == ["c", "d"]
    assert not combiner.add(partial("bc"))  # b is merged already: nothing of it counts
    assert not combiner.add(partial("cd", round_id=2))
    assert combiner.stats == {"merged": 1, "overlapping": 1, "refused": 1}
    assert "merged already: ['b']" in combiner.refusals[0]
    assert combiner.clients == {"a": 300, "b": 200}
    assert combiner.add(partial("cd"))
    assert combiner.covered()
    assert combiner.aggregators == {"agg-ab": 1, "agg-cd": 1}
    expected = StreamingFedAvg(REFERENCE)
    for c in "abcd":
        expected.add(c, weights(c), COUNTS[c])
    assert torch.equal(combiner.result()["w"], expected.result()["w"])
