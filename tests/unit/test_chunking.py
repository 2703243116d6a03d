"""Chunked transfers: split_payload, parse_part and the Reassembler.

Round trips (in order, reversed, shuffled, with duplicates, several transfers
interleaved), hostile or inconsistent parts, the memory cap and the timeout.
"""

from __future__ import annotations

import logging
import random
import tracemalloc
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flwire._protowire import crc32c
from flwire.exceptions import CommunicationException, SerializationException
from flwire.transport.chunking import (
    CORRUPTED,
    DUPLICATE_PART,
    LATE_DUPLICATE,
    MAX_COPIES,
    PART_COST,
    PART_OVERHEAD,
    SPARE_COPY,
    TRANSFER_COST,
    Completed,
    Dropped,
    Part,
    Reassembler,
    parse_part,
    split_payload,
)
from flwire.v1 import transfer_pb2

# Keep each example below a few hundred parts so the suite stays fast.
MAX_PARTS = 300
MAX_SIZE = 3 << 20


def _payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _encode_part(**fields) -> bytes:
    return transfer_pb2.TransferPart(**fields).SerializeToString()


def _parts(payload: bytes | bytearray | memoryview, transfer_id: str, limit: int) -> list[bytes]:
    return [p for p, _, _ in split_payload(payload, transfer_id, limit)]


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@st.composite
def payload_and_limit(draw) -> tuple[bytes, int]:
    limit = draw(st.one_of(st.integers(600, 100_000), st.integers(20_000, 100_000)))
    chunk = limit - PART_OVERHEAD
    largest = min(MAX_SIZE, chunk * MAX_PARTS)
    size = draw(
        st.one_of(
            st.integers(1, min(largest, 3 * chunk + 1)),  # a few parts, exact boundaries
            st.integers(1, largest),
            st.integers(largest // 2, largest),  # up to a few MB
        )
    )
    seed = draw(st.integers(0, 2**32 - 1))
    return _payload(size, seed), limit


def _order(count: int, mode: str, rnd: random.Random, dups: int) -> list[int]:
    """Part indices in the given order, with ``dups`` duplicates of parts already
    seen inserted before the last new part (so they land while the transfer is
    still pending)."""
    order = list(range(count))
    if mode == "reversed":
        order.reverse()
    elif mode == "shuffled":
        rnd.shuffle(order)
    if count < 2:
        return order
    for _ in range(dups):
        last_new = max(order.index(i) for i in range(count))  # position of the completing part
        pos = rnd.randint(1, last_new)
        order.insert(pos, rnd.choice(order[:pos]))
    return order


# ----------------------------------------------------------------------------- split_payload


@given(payload_and_limit())
def test_split_parts_fit_the_limit_and_cover_the_payload(case):
    payload, limit = case
    parts = list(split_payload(payload, "transfer-1", limit))
    count = parts[0][2]
    chunk = limit - PART_OVERHEAD - len("transfer-1")
    assert count == max(1, -(-len(payload) // chunk))
    assert [i for _, i, _ in parts] == list(range(count))
    assert all(c == count for _, _, c in parts)
    assert all(len(p) <= limit for p, _, _ in parts)
    decoded = [parse_part(p) for p, _, _ in parts]
    assert b"".join(bytes(d.data) for d in decoded) == payload
    checksum = crc32c(payload)
    for index, part in enumerate(decoded):
        assert part.transfer_id == "transfer-1"
        assert (part.index, part.count, part.total_size) == (index, count, len(payload))
        assert part.crc == checksum
        assert bytes(part.data) == payload[part.offset : part.offset + len(part.data)]


def test_empty_payloads_and_empty_parts_are_refused():
    """Only payloads above a record limit are split, so every part carries data:
    an empty part (e.g. one truncated before its data) is refused."""
    with pytest.raises(CommunicationException, match="nothing to split"):
        list(split_payload(b"", "empty", 600))
    (part_bytes, _, _), *_ = split_payload(b"x" * 1000, "t", 600)
    data_len = len(parse_part(part_bytes).data)
    assert data_len < 128  # so the data field's key and length take 2 bytes
    head = part_bytes[: len(part_bytes) - data_len - 2]  # cut just before the data field
    with pytest.raises(SerializationException, match="empty"):
        parse_part(head)


def test_split_accepts_any_buffer():
    payload = bytearray(_payload(5000, 1))
    from_bytes = _parts(bytes(payload), "t", 1000)
    assert _parts(payload, "t", 1000) == from_bytes
    assert _parts(memoryview(payload), "t", 1000) == from_bytes


@pytest.mark.parametrize("limit", [0, 100, PART_OVERHEAD])
def test_split_refuses_a_limit_too_small(limit):
    with pytest.raises(CommunicationException):
        list(split_payload(b"abc", "t", limit))


def test_split_parts_fit_the_limit_with_a_long_transfer_id():
    """split_payload promises parts of at most ``max_record_bytes`` whatever the
    length of the transfer id (a caller chooses it: Channel.send(transfer_id=...)),
    and refuses clearly when the id leaves no room for data."""
    limit = 1000
    parts = _parts(_payload(5000, 2), "i" * 300, limit)
    assert max(len(p) for p in parts) <= limit
    with pytest.raises(CommunicationException, match="too small"):
        _parts(_payload(5000, 2), "i" * 600, limit)


# ----------------------------------------------------------------------------- round trips


@given(
    payload_and_limit(),
    st.sampled_from(["in_order", "reversed", "shuffled"]),
    st.integers(0, 8),
    st.randoms(use_true_random=False),
)
def test_reassembly_round_trip(case, mode, dups, rnd):
    payload, limit = case
    parts = _parts(payload, "tid", limit)
    order = _order(len(parts), mode, rnd, dups)
    reassembler = Reassembler()
    completed: list[Completed] = []
    duplicate_tokens: list[int] = []
    for position, index in enumerate(order):
        done, dropped = reassembler.add(parse_part(parts[index]), token=position)
        # A second copy of a part comes back at once, with its token (nothing to hold).
        assert all(d.reason == DUPLICATE_PART for d in dropped)
        duplicate_tokens += [t for d in dropped for t in d.tokens]
        # What it holds is what arrived: data, plus a fixed cost per part and transfer.
        held = sum(len(parse_part(parts[i]).data) for i in set(order[: position + 1]))
        if done is None:
            assert reassembler.pending_bytes == held + TRANSFER_COST + PART_COST * len(
                set(order[: position + 1])
            )
        else:
            completed.append(done)
    assert len(completed) == 1
    (result,) = completed
    assert result.transfer_id == "tid"
    assert bytes(result.payload) == payload
    assert sorted(result.tokens + duplicate_tokens) == list(range(len(order)))
    assert len(result.tokens) == len(parts)
    assert reassembler.duplicates == len(order) - len(parts)
    assert reassembler.pending_bytes == 0
    assert reassembler.progress("tid") == (0, 0)


@given(
    st.lists(st.tuples(st.integers(1, 20_000), st.integers(0, 2**32 - 1)), min_size=2, max_size=6),
    st.integers(600, 5_000),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_interleaved_transfers_complete_independently(specs, limit, shuffle_each, rnd):
    payloads = {f"t{i}": _payload(size, seed) for i, (size, seed) in enumerate(specs)}
    queues = {}
    for tid, payload in payloads.items():
        parts = _parts(payload, tid, limit)
        if shuffle_each:
            rnd.shuffle(parts)
        queues[tid] = parts
    reassembler = Reassembler()
    results: dict[str, bytes] = {}
    while queues:
        tid = rnd.choice(sorted(queues))
        part = queues[tid].pop(0)
        if not queues[tid]:
            del queues[tid]
        done, dropped = reassembler.add(parse_part(part))
        assert dropped == []
        if done is not None:
            assert done.transfer_id not in results
            results[done.transfer_id] = bytes(done.payload)
    assert results == payloads
    assert reassembler.pending_bytes == 0


def test_progress_counts_received_bytes():
    payload = _payload(10_000, 3)
    parts = [parse_part(p) for p in _parts(payload, "p", 2000)]
    reassembler = Reassembler()
    assert reassembler.progress("p") == (0, 0)
    filled = 0
    for part in parts[:-1]:
        reassembler.add(part)
        filled += len(part.data)
        assert reassembler.progress("p") == (filled, len(payload))
    reassembler.add(parts[0])  # duplicate: no progress
    assert reassembler.progress("p") == (filled, len(payload))
    done, _ = reassembler.add(parts[-1])
    assert done is not None and reassembler.progress("p") == (0, 0)


def test_payload_is_a_view_on_the_reassembly_buffer():
    payload = _payload(3000, 4)
    reassembler = Reassembler()
    done = None
    for p in _parts(payload, "v", 1000):
        done, _ = reassembler.add(parse_part(p))
    assert done is not None
    assert isinstance(done.payload, memoryview)
    assert done.payload.nbytes == len(payload)


# ----------------------------------------------------------------------------- bad input


def test_part_index_at_or_above_count_is_refused():
    for index, count in [(3, 3), (7, 3), (0, 0)]:
        raw = _encode_part(
            transfer_id="t", part_index=index, part_count=count, total_size=4, data=b"abcd"
        )
        with pytest.raises(SerializationException):
            parse_part(raw)


def test_part_without_transfer_id_is_refused():
    with pytest.raises(SerializationException):
        parse_part(_encode_part(part_index=0, part_count=1, total_size=1, data=b"x"))


@pytest.mark.parametrize(
    ("offset", "data", "total"), [(0, b"abcde", 4), (3, b"ab", 4), (2**40, b"", 0)]
)
def test_part_data_past_the_payload_size_is_refused(offset, data, total):
    raw = _encode_part(
        transfer_id="t", part_index=0, part_count=2, total_size=total, offset=offset, data=data
    )
    with pytest.raises(SerializationException):
        parse_part(raw)


@pytest.mark.parametrize("field", ["part_count", "total_size", "payload_crc32c"])
def test_part_disagreeing_with_earlier_parts_is_refused_without_harm(field):
    payload = _payload(3000, 5)
    raw = _parts(payload, "t", 1000)
    good = [parse_part(p) for p in raw]
    reassembler = Reassembler()
    assert reassembler.add(good[0]) == (None, [])
    second = good[1]
    fields: dict[str, Any] = {
        "transfer_id": "t",
        "part_index": second.index,
        "part_count": second.count,
        "total_size": second.total_size,
        "offset": second.offset,
        "payload_crc32c": second.crc,
        "data": bytes(second.data),
    }
    fields[field] += 1
    with pytest.raises(SerializationException, match="disagrees"):
        reassembler.add(parse_part(_encode_part(**fields)))
    # The bad part changed nothing: the good parts still complete the payload.
    done = None
    for part in good[1:]:
        done, _ = reassembler.add(part)
    assert done is not None and bytes(done.payload) == payload
    assert reassembler.pending_bytes == 0


@pytest.mark.parametrize("total", [2**31, 2**40, 2**64 - 1])
def test_a_declared_size_of_2_gib_or_more_is_refused(total):
    raw = _encode_part(transfer_id="big", part_index=0, part_count=2, total_size=total, data=b"x")
    with pytest.raises(SerializationException, match="2 GiB or more"):
        parse_part(raw)


def test_a_declared_size_allocates_nothing():
    """Before: an 18-byte part declaring 2 GiB made the receiver allocate and zero
    2 GiB at once. Now what a transfer holds is what arrived."""
    raw = _encode_part(
        transfer_id="big", part_index=0, part_count=2, total_size=2**31 - 1, data=b"x"
    )
    reassembler = Reassembler()
    tracemalloc.start()
    try:
        assert reassembler.add(parse_part(raw)) == (None, [])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert reassembler.pending_bytes == 1 + PART_COST + TRANSFER_COST
    assert reassembler.progress("big") == (1, 2**31 - 1)


def test_declared_size_just_above_the_payload_limit_is_refused():
    reassembler = Reassembler(max_payload_bytes=10_000)
    at_limit = _encode_part(transfer_id="a", part_count=2, total_size=10_000, data=b"x")
    above = _encode_part(transfer_id="b", part_count=2, total_size=10_001, data=b"x")
    assert reassembler.add(parse_part(at_limit)) == (None, [])
    with pytest.raises(CommunicationException):
        reassembler.add(parse_part(above))
    assert reassembler.pending_bytes == 1 + PART_COST + TRANSFER_COST


def _clocked(**kwargs: Any) -> tuple[Reassembler, list[float]]:
    now = [0.0]
    return Reassembler(clock=lambda: now[0], **kwargs), now


@pytest.mark.parametrize("corrupt_index", [0, 1, 2])
def test_corrupted_data_is_reported_at_the_timeout(corrupt_index):
    """Parts that never match the CRC-32C keep the transfer open (a good copy may
    follow), then its timeout reports it as corrupted, with every token."""
    payload = _payload(2500, 6)
    raw = _parts(payload, "c", 1000)
    assert len(raw) == 6
    bad = bytearray(raw[corrupt_index])
    bad[-1] ^= 0x01  # the last byte is payload data
    raw[corrupt_index] = bytes(bad)
    reassembler, now = _clocked(part_timeout=30)
    for i, part in enumerate(raw):
        assert reassembler.add(parse_part(part), token=i) == (None, [])
    assert reassembler.holds("c")
    now[0] = 29.0
    assert reassembler.expire() == []
    now[0] = 30.0
    dropped = reassembler.expire()
    assert [d.reason for d in dropped] == [CORRUPTED] and "CRC" in CORRUPTED
    assert sorted(dropped[0].tokens) == list(range(len(raw)))
    assert (dropped[0].parts_received, dropped[0].parts_total) == (6, 6)
    assert reassembler.pending_bytes == 0
    # Late copies of its parts do not start it again.
    assert [d.reason for d in reassembler.add(parse_part(raw[0]))[1]] == [LATE_DUPLICATE]


@pytest.mark.parametrize("forged_index", [0, 3, 5])
def test_a_forged_part_does_not_end_the_real_transfer(forged_index):
    """Issue 13: a part built from the real message's visible fields, with other
    bytes, arrived before the real one and ended the transfer as corrupted; the
    real parts were then thrown away as late duplicates."""
    payload = _payload(2500, 6)
    raw = _parts(payload, "f", 1000)
    bad = bytearray(raw[forged_index])
    bad[-10:] = bytes(10)
    reassembler = Reassembler()
    order = [bytes(bad)] + [p for i, p in enumerate(raw) if i != forged_index]
    results = [reassembler.add(parse_part(p), token=i) for i, p in enumerate(order)]
    assert all(r == (None, []) for r in results)  # all in, the CRC fails: kept open
    completed, dropped = reassembler.add(parse_part(raw[forged_index]), token="real")
    assert dropped == [] and completed is not None
    assert bytes(completed.payload) == payload
    assert sorted(map(str, completed.tokens)) == sorted([*map(str, range(6)), "real"])
    assert reassembler.pending_bytes == 0 and not reassembler.holds("f")


def test_a_forged_copy_after_the_real_part_is_not_used():
    payload = _payload(2500, 6)
    raw = _parts(payload, "g", 1000)
    bad = bytearray(raw[2])
    bad[-1] ^= 0xFF
    reassembler = Reassembler()
    for p in [raw[0], raw[1], raw[2], bytes(bad), raw[3], raw[4]]:
        assert reassembler.add(parse_part(p)) == (None, [])
    completed, dropped = reassembler.add(parse_part(raw[5]))
    assert dropped == [] and completed is not None and bytes(completed.payload) == payload


def test_differing_copies_are_bounded():
    """Copies beyond MAX_COPIES of one part, or beyond the payload's size in all,
    are handed back at once and hold nothing; one that completes the payload is
    still taken."""
    payload = _payload(2500, 6)
    raw = _parts(payload, "h", 1000)
    reassembler = Reassembler()
    reassembler.add(parse_part(raw[0]))
    base = reassembler.pending_bytes
    spare = 0
    for n in range(20):
        forged = bytearray(raw[1])
        forged[-4:] = n.to_bytes(4, "little")
        _, dropped = reassembler.add(parse_part(bytes(forged)), token=n)
        spare += sum(d.reason == SPARE_COPY for d in dropped)
    assert spare == 20 - MAX_COPIES
    part_size = len(parse_part(raw[1]).data)
    assert reassembler.pending_bytes == base + MAX_COPIES * (part_size + PART_COST)
    for p in raw[2:]:
        assert reassembler.add(parse_part(p)) == (None, [])
    completed, dropped = reassembler.add(parse_part(raw[1]), token="real")
    assert dropped == [] and completed is not None and bytes(completed.payload) == payload
    assert "real" in completed.tokens and reassembler.pending_bytes == 0


@pytest.mark.parametrize("real_part_follows", [True, False])
def test_overlapping_parts_never_complete(real_part_follows):
    payload = _payload(2000, 7)
    good = [parse_part(p) for p in _parts(payload, "o", 1001 + PART_OVERHEAD)]  # 2 x 1000
    assert len(good) == 2
    overlapping = _encode_part(
        transfer_id="o",
        part_index=1,
        part_count=2,
        total_size=len(payload),
        offset=0,  # should be 1000: overwrites part 0 and leaves a hole
        payload_crc32c=good[0].crc,
        data=payload[:1000],
    )
    reassembler, now = _clocked(part_timeout=10)
    reassembler.add(good[0])
    assert reassembler.add(parse_part(overlapping)) == (None, [])
    if real_part_follows:
        completed, dropped = reassembler.add(good[1])
        assert dropped == [] and completed is not None and bytes(completed.payload) == payload
        return
    now[0] = 10.0
    assert [d.reason for d in reassembler.expire()] == [CORRUPTED]


def _parse_or_error(raw: bytes) -> Part | None:
    try:
        part = parse_part(raw)
    except (SerializationException, CommunicationException):
        return None
    assert part.transfer_id and part.count >= 1 and 0 <= part.index < part.count
    assert part.offset + len(part.data) <= part.total_size
    return part


@given(st.binary(max_size=300))
def test_garbage_bytes_raise_only_flwire_exceptions(raw):
    part = _parse_or_error(raw)
    if part is not None:
        try:
            Reassembler(max_payload_bytes=1 << 20).add(part)
        except (SerializationException, CommunicationException):
            pass


@given(st.data())
def test_mutated_parts_raise_only_flwire_exceptions(data):
    payload = _payload(data.draw(st.integers(1, 3000)), 8)
    raw = _parts(payload, "m", 1000)
    reassembler = Reassembler(max_payload_bytes=1 << 20)
    for original in raw:
        buf = bytearray(original)
        for _ in range(data.draw(st.integers(0, 3))):
            if not buf:
                break
            pos = data.draw(st.integers(0, len(buf) - 1))
            buf[pos] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(0, len(buf)))
        part = _parse_or_error(bytes(buf[:cut]))
        if part is None:
            continue
        try:
            done, _ = reassembler.add(part)
        except (SerializationException, CommunicationException):
            continue
        if done is not None:  # only the genuine payload can pass the CRC
            assert done.transfer_id != "m" or bytes(done.payload) == payload


def test_parse_part_refuses_wrong_wire_types():
    # transfer_id (field 1) as a varint
    with pytest.raises(SerializationException):
        parse_part(bytes([0x08, 0x01]))
    # part_count (field 3) as length-delimited
    with pytest.raises(SerializationException):
        parse_part(bytes([0x0A, 0x01, 0x61, 0x1A, 0x01, 0x00]))


def test_parse_part_refuses_invalid_utf8_transfer_id():
    raw = bytes([0x0A, 0x02, 0xFF, 0xFE, 0x18, 0x01])
    with pytest.raises(SerializationException):
        parse_part(raw)


# ----------------------------------------------------------------------------- memory cap


def test_new_transfers_evict_the_legacyest_and_log_it(caplog):
    heads = {
        tid: parse_part(_parts(_payload(2000, i), tid, 1000)[0])
        for i, tid in enumerate(["a", "b", "c", "d"])
    }
    one = heads["a"].data.nbytes + PART_COST + TRANSFER_COST  # what a head holds
    whole = 2000 + TRANSFER_COST + PART_COST * heads["a"].count  # a whole transfer
    cap = max(2 * one, whole) + 1
    assert 3 * one > cap  # two heads fit, three do not
    reassembler = Reassembler(max_pending_bytes=cap)
    with caplog.at_level(logging.ERROR, logger="flwire.transport.chunking"):
        assert reassembler.add(heads["a"], token="a0") == (None, [])
        assert reassembler.add(heads["b"], token="b0") == (None, [])
        assert reassembler.pending_bytes == 2 * one
        done, dropped = reassembler.add(heads["c"], token="c0")
        assert done is None
        assert [(d.transfer_id, d.tokens) for d in dropped] == [("a", ["a0"])]
        assert all(isinstance(d, Dropped) and "memory cap" in d.reason for d in dropped)
        assert reassembler.pending_bytes == 2 * one <= cap
        _, dropped = reassembler.add(heads["d"], token="d0")
        assert [d.transfer_id for d in dropped] == ["b"]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "transfer a" in messages[0] and "memory cap" in messages[0]
    assert "transfer b" in messages[1]
    assert reassembler.progress("a") == (0, 0)
    assert reassembler.progress("c") == (heads["c"].data.nbytes, 2000)


@given(
    st.lists(st.integers(1, 10_000), min_size=1, max_size=30),
    # Room for the largest transfer whole: 10,000 bytes in 7 parts, plus their costs.
    st.integers(13_000, 30_000),
    st.randoms(use_true_random=False),
)
def test_pending_bytes_never_exceed_the_cap(sizes, cap, rnd):
    reassembler = Reassembler(max_pending_bytes=cap)
    pending: list[str] = []  # started, not completed nor dropped, oldest first
    dropped_ids: list[str] = []
    all_parts = {}
    for i, size in enumerate(sizes):
        all_parts[f"t{i}"] = [parse_part(p) for p in _parts(_payload(size, i), f"t{i}", 2000)]
    for tid, parts in all_parts.items():
        # start the transfer with its first part, and sometimes finish it
        finish = rnd.random() < 0.3
        for part in parts if finish else parts[:1]:
            done, dropped = reassembler.add(part)
            dropped_ids.extend(d.transfer_id for d in dropped)
            for d in dropped:
                assert d.transfer_id == pending.pop(0)  # the oldest goes first
            assert reassembler.pending_bytes <= cap
            if done is not None:
                assert done.transfer_id == tid
        if not finish and len(parts) > 1:
            pending.append(tid)
    expected = sum(all_parts[t][0].data.nbytes + PART_COST + TRANSFER_COST for t in pending)
    assert reassembler.pending_bytes == expected


def test_single_transfer_above_the_pending_cap_is_not_buffered():
    reassembler = Reassembler(max_pending_bytes=1000, max_payload_bytes=1 << 20)
    head = parse_part(_parts(_payload(5000, 9), "big", 1000)[0])
    try:
        reassembler.add(head)
    except (CommunicationException, SerializationException):
        pass
    assert reassembler.pending_bytes <= reassembler.max_pending_bytes


def test_late_duplicate_of_a_completed_transfer_is_not_buffered():
    parts = [parse_part(p) for p in _parts(_payload(3000, 10), "late", 1000)]
    reassembler = Reassembler()
    for part in parts:
        done, _ = reassembler.add(part)
    assert done is not None
    reassembler.add(parts[0])
    assert reassembler.pending_bytes == 0


# ----------------------------------------------------------------------------- timeout


def test_expire_drops_a_transfer_missing_a_part():
    clock = FakeClock()
    reassembler = Reassembler(part_timeout=30.0, clock=clock)
    parts = [parse_part(p) for p in _parts(_payload(3000, 11), "slow", 1000)]
    assert len(parts) == 7
    for i, part in enumerate(parts[:-2]):
        reassembler.add(part, token=i)
    clock.now += 29.9
    assert reassembler.expire() == []
    clock.now += 0.1
    (dropped,) = reassembler.expire()
    assert dropped.transfer_id == "slow"
    assert dropped.tokens == [0, 1, 2, 3, 4]
    assert "missing" in dropped.reason and "2 of 7" in dropped.reason
    assert reassembler.pending_bytes == 0
    assert reassembler.expire() == []


def test_a_new_part_resets_the_timeout_and_expire_keeps_fresh_transfers():
    clock = FakeClock()
    reassembler = Reassembler(part_timeout=10.0, clock=clock)
    a = [parse_part(p) for p in _parts(_payload(3000, 12), "a", 1000)]
    b = [parse_part(p) for p in _parts(_payload(3000, 13), "b", 1000)]
    reassembler.add(a[0])
    clock.now += 6
    reassembler.add(b[0])
    clock.now += 6  # a idle for 12 s, b for 6 s
    assert [d.transfer_id for d in reassembler.expire()] == ["a"]
    reassembler.add(b[1])  # b active again
    clock.now += 9
    assert reassembler.expire() == []
    clock.now += 1
    assert [d.transfer_id for d in reassembler.expire()] == ["b"]


def test_a_transfer_completes_after_another_expires(caplog):
    clock = FakeClock()
    reassembler = Reassembler(part_timeout=5.0, clock=clock)
    payload = _payload(2000, 14)
    parts = [parse_part(p) for p in _parts(payload, "x", 1000)]
    reassembler.add(parts[0])
    clock.now += 5
    with caplog.at_level(logging.ERROR, logger="flwire.transport.chunking"):
        assert len(reassembler.expire()) == 1
    assert any("missing" in r.getMessage() for r in caplog.records)
    done = None
    for part in parts:  # redelivered from the start
        done, _ = reassembler.add(part)
    assert done is not None and bytes(done.payload) == payload


def test_payload_limit_also_bounds_completed_sizes():
    payload = _payload(5000, 15)
    reassembler = Reassembler(max_payload_bytes=4999)
    with pytest.raises(CommunicationException):
        reassembler.add(parse_part(_parts(payload, "z", 1000)[0]))
