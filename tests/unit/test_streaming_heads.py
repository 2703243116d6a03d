"""Streamed transfers whose head breaks the rules, or that meet the reader's
bounds (wire format section 14.5), fed to a StreamAssembler part by part
(tests/stream_forge.py builds them by hand): a head whose envelope breaks the
message rules or whose tensors fail their checks is refused, naming why;
max_stream_bytes, max_streams, max_pending_bytes and part_timeout hold
without evicting the streams under way; records that are not stream parts end
no stream."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
import torch
from stream_forge import F32, Forge, W, elements, feed, given_up, outcome
from stream_tools import FakeClock, run, stream_values, streamed

from flwire.tensors import DecodeLimits
from flwire.transport.streaming import Failed, Finished, StreamAssembler
from flwire.transport.streaming.format import parse_part
from flwire.transport.streaming.reader import STREAM_COST, TENSOR_COST
from flwire.v1 import messages_pb2, transfer_pb2

# ----------------------------------------------------------------------------- heads


def _envelope(forge: Forge, change: Any) -> messages_pb2.Envelope:
    envelope = messages_pb2.Envelope()
    envelope.CopyFrom(forge.envelope)
    change(envelope)
    return envelope


def _heartbeat(forge: Forge) -> messages_pb2.Envelope:
    envelope = messages_pb2.Envelope()
    envelope.CopyFrom(forge.envelope)
    envelope.heartbeat.SetInParent()
    return envelope


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda e: e.schema_version.__setattr__("major", 2),
            r"^refused its head: invalid message .*reads major version 1 only",
        ),
        (
            lambda e: e.client_update.__setattr__("client_id", ""),
            r"^refused its head: invalid message .*client_update\.client_id",
        ),
        (
            lambda e: e.timestamp.__setattr__("seconds", 10**12),
            r"^refused its head: invalid message .*outside google\.protobuf\.Timestamp's range",
        ),
        (
            lambda e: e.__setattr__("message_id", "another-id"),
            r"^refused its head: the head's envelope has message_id 'another-id', not the "
            r"transfer_id",
        ),
        (
            lambda e: e.signature.__setattr__("key_id", "client-1"),
            r"^refused its head: the head's envelope is signed; a streamed message is signed "
            r"in its seal$",
        ),
        (
            lambda e: e.ClearField("client_update"),
            r"^refused its head: invalid message .*no body",
        ),
    ],
    ids=["schema_major", "no_client_id", "timestamp", "message_id", "signed_envelope", "no_body"],
)
def test_a_head_whose_envelope_breaks_the_rules_is_refused(change: Any, reason: str) -> None:
    forge = Forge()
    forge.envelope = _envelope(forge, change)
    drop = given_up(forge.valid(), reason)
    assert drop.tokens == [0]


def test_a_head_of_a_message_type_without_weights_is_refused() -> None:
    forge = Forge()
    forge.envelope = _heartbeat(forge)
    given_up(forge.valid(), r"^refused its head: a heartbeat message carries no weights to stream$")


def test_a_head_whose_envelope_carries_weights_is_refused() -> None:
    forge = Forge()
    envelope = messages_pb2.Envelope()
    envelope.CopyFrom(forge.envelope)
    envelope.client_update.weights.tensors.add(name="x")
    given_up(
        [forge.head(envelope=envelope)],
        r"^refused its head: the head's envelope carries weights of its own$",
    )


def _info(name: str, dtype: int, shape: list[int]) -> transfer_pb2.TensorInfo:
    return transfer_pb2.TensorInfo(name=name, dtype=dtype, shape=shape)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("infos", "reason", "limits"),
    [
        (
            [_info("w", 99, [3])],
            r"^refused its head: tensor 'w' has unknown dtype 99",
            None,
        ),
        (
            [_info("w", 0, [3])],
            r"^refused its head: tensor 'w' has unknown dtype 0",
            None,
        ),
        (
            [_info("w", F32.wire, [3]), _info("w", F32.wire, [2])],
            r"^refused its head: two tensors named 'w'$",
            None,
        ),
        (
            [_info("w", F32.wire, [1] * 9)],
            r"^refused its head: tensor 'w' has 9 dimensions, above DecodeLimits\.max_rank 8$",
            DecodeLimits(max_rank=8),
        ),
        (
            [_info(f"t{i}", F32.wire, [1]) for i in range(5)],
            r"^refused its head: 5 tensors, above DecodeLimits\.max_tensors 4$",
            DecodeLimits(max_tensors=4),
        ),
        (
            [_info("w", F32.wire, [0, 2**62, 2**62])],
            r"^refused its head: tensor 'w' has shape \[0, 4611686018427387904, "
            r"4611686018427387904\], whose strides overflow 64 bits$",
            None,
        ),
        (
            [_info("w", F32.wire, [0, 2**64 - 1])],
            r"whose strides overflow 64 bits$",
            None,
        ),
    ],
    ids=["unknown_dtype", "dtype_0", "same_name", "rank", "count", "span", "span_uint64"],
)
def test_a_head_with_bad_tensors_is_refused(
    infos: list[transfer_pb2.TensorInfo], reason: str, limits: DecodeLimits | None
) -> None:
    forge = Forge()
    head = forge.head(infos=infos)
    given_up([head, forge.seal(1, [head])], reason, limits=limits)


def test_a_head_of_many_empty_tensors_is_refused_for_their_declared_size() -> None:
    """The tensor count is bounded by what the tensors declare (at least 1 MiB
    counts), as a whole TensorMap's is by its size: a small head of many empty
    tensors would otherwise make the assembler keep about 300 bytes a tensor
    while its bounds counted none of them."""
    forge = Forge()
    many = [_info(f"t{i}", F32.wire, [0]) for i in range(1025)]
    head = forge.head(infos=many)
    given_up(
        [head, forge.seal(1, [head])],
        r"^refused its head: 1025 tensors declaring 0 bytes in all, above "
        r"DecodeLimits\.max_tensors_per_mib 1024 \(at least 1 MiB counts\)$",
    )
    # 1,024 empty tensors are within the cap, and the stream completes.
    head = forge.head(infos=many[:1024])
    finished, failed = outcome([head, forge.seal(1, [head])])
    assert failed == [] and len(finished[0].message.tensors(as_numpy=True)) == 1024
    # More tensors are allowed when they declare more: 2,048 over 2 MiB.
    big = [_info(f"t{i}", F32.wire, [256]) for i in range(2048)]
    head = forge.head(infos=big)
    _, failed = run(feed(StreamAssembler(threads=1), [head]))
    assert failed == []
    # And the per-tensor cost is counted while it is under way.
    asm = StreamAssembler(threads=1)
    run(feed(asm, [head]))
    assert asm.pending_bytes == 2048 * 1024 + STREAM_COST + 2048 * TENSOR_COST


def test_an_empty_tensor_with_a_huge_shape_is_not_handed_out_unusable() -> None:
    """A tensor without elements whose shape numpy and torch cannot make is
    refused at the head (before: the stream completed, then tensors() raised
    ValueError / RuntimeError)."""
    forge = Forge()
    head = forge.head(infos=[_info("w", F32.wire, [0, 2**40, 2**40])])
    finished, failed = outcome([head, forge.seal(1, [head])])
    assert finished == []
    assert "strides overflow 64 bits" in failed[0].reason


def test_a_head_above_max_stream_bytes_is_refused_and_the_rest_skipped() -> None:
    forge = Forge()
    values = forge.valid()
    finished, failed = outcome(values, max_stream_bytes=82)
    assert finished == []
    first, *rest = failed
    assert (
        first.reason
        == ("refused: declares at least 83 bytes of tensors, above max_stream_bytes 82")
        and first.total_bytes == 83
        and first.tokens == [0]
    )
    assert all(f.duplicate for f in rest) and len(rest) == 4


def test_a_head_declaring_exabytes_allocates_nothing() -> None:
    forge = Forge()
    head = forge.head(infos=[_info("w", F32.wire, [2**31, 2**31, 2**31])])
    finished, failed = outcome([head])
    assert finished == []
    assert failed[0].reason.startswith("refused: declares at least ")
    assert f"above max_stream_bytes {16 << 30}" in failed[0].reason  # the default, 16 GiB


def test_a_refusal_above_max_stream_bytes_says_where_it_stopped_counting() -> None:
    forge = Forge()
    infos = [_info(f"t{i}", F32.wire, [10]) for i in range(5)]  # 40 bytes each
    head = forge.head(infos=infos)
    (failed,) = outcome([head], max_stream_bytes=100)[1]
    assert failed.reason == (
        "refused: declares at least 120 bytes of tensors in its first 3 of 5, above "
        "max_stream_bytes 100"
    )


def test_a_chunk_that_fails_to_decode_is_named_by_its_tensor_and_elements() -> None:
    forge = Forge()
    values = forge.valid()
    tensor = elements(W[12:])
    tensor.crc32c ^= 1
    bad = forge.chunk(2, 0, 12, tensor)
    finished, failed = outcome([*values[:2], bad, *values[3:]])
    assert finished == []
    (given_up,) = [f for f in failed if not f.duplicate]
    assert given_up.reason.startswith("a chunk did not decode: tensor 'w[12:20]': CRC-32C")


# ----------------------------------------------------------------------------- bounds


def test_max_streams_refuses_a_new_head_and_keeps_those_under_way() -> None:
    async def main() -> tuple[list[Finished], list[Failed]]:
        forges = [Forge(f"client-{i}") for i in range(3)]
        streams = [f.valid() for f in forges]
        asm = StreamAssembler(threads=1, max_streams=2)
        # Heads of all three first, then the rest of each, interleaved.
        order = [(s, i) for i in range(5) for s in range(3)]
        finished, failed = [], []
        for s, i in order:
            done, dropped = await asm.add(streams[s][i], (s, i))
            finished += [done] if done else []
            failed += dropped
        assert asm.pending_streams == 0
        return finished, failed

    finished, failed = run(main())
    assert sorted(f.message.sender_id for f in finished) == ["client-0", "client-1"]
    refused = [f for f in failed if not f.duplicate]
    (refusal,) = refused
    assert refusal.tokens == [(2, 0)]
    # Each holds its 83 declared bytes, STREAM_COST and TENSOR_COST for each of its 2 tensors.
    held = 83 + STREAM_COST + 2 * TENSOR_COST
    assert refusal.reason.startswith(f"refused: 2 streams holding {2 * held} bytes under way")
    assert "(max_streams 2, max_pending_bytes" in refusal.reason
    assert sorted(f.tokens[0] for f in failed if f.duplicate) == [(2, i) for i in range(1, 5)]


def test_max_pending_bytes_refuses_a_head_that_would_pass_it() -> None:
    async def main() -> list[Failed]:
        one, two = Forge("client-1"), Forge("client-2")
        asm = StreamAssembler(
            threads=1, max_pending_bytes=2 * (83 + STREAM_COST + 2 * TENSOR_COST) - 1
        )
        _, first = await asm.add(one.head(), 1)
        _, second = await asm.add(two.head(), 2)
        assert first == [] and asm.pending_streams == 1
        # Once the first is done, there is room again.
        for token, value in enumerate(one.valid()[1:]):
            await asm.add(value, token)
        # The refused transfer's head sent again (its sender retries) starts it.
        _, third = await asm.add(two.head(), 3)
        assert third == [] and asm.pending_streams == 1
        # Its other parts, had they come after the refusal, would have been skipped.
        _, late = await asm.add(Forge("client-3").valid()[1], 4)
        return second + late

    refused, skipped = run(main())
    held = 83 + STREAM_COST + 2 * TENSOR_COST
    assert refused.reason.startswith(f"refused: 1 streams holding {held} bytes under way")
    assert skipped.reason.startswith("part 1 of a stream whose head was not received")


def test_a_stream_with_no_new_part_for_part_timeout_is_given_up() -> None:
    async def main() -> tuple[list[Failed], list[Failed], list[Failed], Any]:
        clock = FakeClock()
        forge = Forge()
        values = forge.valid()
        asm = StreamAssembler(threads=1, clock=clock, part_timeout=120)
        await asm.add(values[0], 0)
        await asm.add(values[1], 1)
        clock.advance(119)
        early = asm.expire()
        # A redelivered copy is not a new part: it does not put the timeout off.
        _, copy = await asm.add(values[1], 2)
        clock.advance(1)
        late = asm.expire()
        _, after = await asm.add(values[2], 3)
        return early, copy, late, (after, asm.pending_bytes)

    early, copy, late, (after, pending) = run(main())
    assert early == []
    assert copy[0].duplicate
    (drop,) = late
    assert drop.reason == "no new part for 120 s" and drop.tokens == [0, 1]
    assert drop.parts_received == 2 and drop.total_bytes == 83
    assert after[0].duplicate and after[0].reason == "part of an ended stream"
    assert pending == 0


def test_a_stream_given_up_while_its_seal_waits_for_decoding_ends_quietly() -> None:
    """expire() (the channel's periodic task) may run while the seal waits for
    the chunks' decoding: the seal then returns nothing, and the stream is
    reported once, by expire() (before: KeyError or CancelledError out of add)."""

    async def main() -> tuple[Any, list[Failed]]:
        clock = FakeClock()
        msg = streamed({"w": torch.arange(5000, dtype=torch.float32)})
        values = await stream_values(msg, 2048)
        asm = StreamAssembler(threads=1, clock=clock, part_timeout=10)
        for token, value in enumerate(values[:-1]):
            await asm.add(value, token)
        sealing = asyncio.ensure_future(asm.add(values[-1], "seal"))
        await asyncio.sleep(0)  # the seal is waiting for the decode jobs now
        clock.advance(10)
        expired = asm.expire()
        return await sealing, expired

    result, expired = run(main())
    assert result == (None, [])
    (drop,) = expired
    assert drop.tokens[-1] == "seal" and drop.reason == "no new part for 10 s"


def test_ended_ids_are_remembered_up_to_a_bound() -> None:
    async def main() -> list[Failed]:
        forges = [Forge() for _ in range(3)]
        asm = StreamAssembler(threads=1, remember_ended=2)
        for forge in forges:
            await feed(asm, forge.valid())
        # The first one is forgotten: its head starts it again (and it completes).
        done, failed = await asm.add(forges[0].valid()[0], "again")
        assert done is None and failed == [] and asm.holds(forges[0].id)
        _, skipped = await asm.add(forges[2].valid()[0], "copy")
        return skipped

    (skipped,) = run(main())
    assert skipped.duplicate


# ----------------------------------------------------------------------------- records


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", r"no transfer_id"),
        (b"\xff\xff\xff", r""),
        (transfer_pb2.StreamPart(transfer_id="x").SerializeToString(), r"holds 0 items"),
        (
            transfer_pb2.StreamPart(
                transfer_id="x", part_index=3, head=transfer_pb2.StreamHead()
            ).SerializeToString(),
            r"only part 0 may be a head",
        ),
        (
            transfer_pb2.StreamPart(
                transfer_id="x", seal=transfer_pb2.StreamSeal()
            ).SerializeToString(),
            r"part 0 must be the head",
        ),
        (
            transfer_pb2.StreamPart(transfer_id="x" * 129, part_index=1).SerializeToString(),
            r"transfer_id of 129 bytes, longer than 128",
        ),
    ],
    ids=["empty", "garbage", "no_item", "head_not_0", "part0_not_head", "long_id"],
)
def test_a_record_that_is_not_a_stream_part_ends_no_stream(value: bytes, reason: str) -> None:
    forge = Forge()
    values = forge.valid()
    finished, failed = outcome([values[0], value, *values[1:]])
    assert len(finished) == 1  # the stream under way is not touched
    (bad,) = failed
    assert bad.transfer_id == "" and not bad.duplicate and bad.tokens == [1]
    assert bad.reason.startswith("not a valid stream part: ")
    assert re.search(reason, bad.reason), bad.reason


def test_parse_part_reads_what_the_writer_wrote() -> None:
    forge = Forge()
    values = forge.valid()
    parts = [parse_part(v) for v in values]
    assert [p.index for p in parts] == [0, 1, 2, 3, 4]
    assert parts[0].head is not None and list(parts[0].head.tensors) == forge.infos
    assert parts[1].chunk is not None and parts[1].chunk.element_offset == 0
    assert parts[2].chunk is not None and parts[2].chunk.element_offset == 12
    assert parts[3].chunk is not None and parts[3].chunk.tensor_index == 1
    assert parts[4].seal is not None and parts[4].seal.part_count == 5
