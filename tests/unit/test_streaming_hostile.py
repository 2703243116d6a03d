"""Streamed transfers that break the rules (wire format section 14.5), fed to a
StreamAssembler part by part: each is given up on (or skipped) with a reason
naming what is wrong, never handed out, and its bounds hold. Parts are built
by hand with flwire.streaming.format and TensorMaps built with the generated
classes (helpers.pb_tensor), not with the writer under test."""

from __future__ import annotations

import asyncio
import gc
import re
from typing import Any

import crc32c
import numpy as np
import pytest
import torch
from helpers import pb_tensor
from stream_tools import FakeClock, run, stream_values, streamed

from flwire.streaming import Failed, Finished, StreamAssembler
from flwire.streaming.format import chunk_part, head_part, parse_part, seal_part
from flwire.streaming.reader import STREAM_COST
from flwire.streaming.writer import head_envelope, tensor_infos
from flwire.tensors import DecodeLimits, dtypes
from flwire.v1 import messages_pb2, tensor_pb2, transfer_pb2

F32 = dtypes.FLOAT32
W = np.arange(20, dtype=np.float32)  # the one tensor "w" of the forged streams


class Forge:
    """Hand-built parts of one stream: a client update with tensor "w" (20
    float32 elements) and tensor "b" (3 bool elements)."""

    def __init__(self, sender: str = "client-1") -> None:
        self.msg = streamed({"w": W, "b": np.array([True, False, True])}, sender=sender)
        self.id = self.msg.message_id
        self.envelope = head_envelope(self.msg)
        assert self.msg.sources is not None
        self.infos = tensor_infos(self.msg.sources)

    def head(
        self,
        *,
        envelope: messages_pb2.Envelope | None = None,
        infos: list[transfer_pb2.TensorInfo] | None = None,
        signed: bool = False,
    ) -> bytes:
        return head_part(
            self.id,
            envelope if envelope is not None else self.envelope,
            self.infos if infos is None else infos,
            signed=signed,
        )

    def chunk(
        self, index: int, tensor_index: int, offset: int, *tensors: tensor_pb2.Tensor
    ) -> bytes:
        elements = tensor_pb2.TensorMap(tensors=list(tensors)).SerializeToString()
        return chunk_part(self.id, index, tensor_index, offset, [elements])

    def seal(
        self,
        index: int,
        earlier: list[bytes],
        *,
        part_count: int | None = None,
        crc: int | None = None,
    ) -> bytes:
        if part_count is None and crc is None:
            return seal_part(self.id, index, crc32c.crc32c(b"".join(earlier)))
        seal = transfer_pb2.StreamSeal(
            part_count=index + 1 if part_count is None else part_count,
            stream_crc32c=crc32c.crc32c(b"".join(earlier)) if crc is None else crc,
        )
        part = transfer_pb2.StreamPart(transfer_id=self.id, part_index=index, seal=seal)
        return part.SerializeToString()

    def valid(self) -> list[bytes]:
        """A whole valid stream: head, "w" in two chunks, "b" in one, seal."""
        values = [
            self.head(),
            self.chunk(1, 0, 0, elements(W[:12])),
            self.chunk(2, 0, 12, elements(W[12:])),
            self.chunk(3, 1, 0, elements(np.array([1, 0, 1], dtype=np.uint8), dtype="bool")),
        ]
        return [*values, self.seal(4, values)]


def elements(
    array: np.ndarray, *, dtype: str | None = None, name: str = "", **kw: Any
) -> tensor_pb2.Tensor:
    """An encoded 1-D tensor holding ``array``'s bytes (as ``dtype``)."""
    info = dtypes.BY_NAME[dtype or array.dtype.name]
    count = array.nbytes // info.itemsize
    return pb_tensor(name, info, (count,), array.tobytes(), **kw)


async def feed(asm: StreamAssembler, values: list[bytes]) -> tuple[list[Finished], list[Failed]]:
    """Add ``values`` in order (token = position); what finished and failed."""
    finished: list[Finished] = []
    failed: list[Failed] = []
    for token, value in enumerate(values):
        done, dropped = await asm.add(value, token)
        if done is not None:
            finished.append(done)
        failed.extend(dropped)
    return finished, failed


def outcome(values: list[bytes], **assembler_args: Any) -> tuple[list[Finished], list[Failed]]:
    asm = StreamAssembler(threads=1, **assembler_args)
    result = run(feed(asm, values))
    assert asm.pending_streams == 0 and asm.pending_bytes == 0
    return result


def given_up(values: list[bytes], reason: str, **assembler_args: Any) -> Failed:
    """Feed ``values``: nothing finishes, one failure is not a skipped copy, and
    its reason matches ``reason``; that failure."""
    finished, failed = outcome(values, **assembler_args)
    assert finished == []
    real = [f for f in failed if not f.duplicate]
    assert len(real) == 1, failed
    assert re.search(reason, real[0].reason), real[0].reason
    return real[0]


# ----------------------------------------------------------------------------- the valid stream


def test_the_forged_stream_is_valid() -> None:
    forge = Forge()
    finished, failed = outcome(forge.valid())
    assert failed == []
    (done,) = finished
    assert done.transfer_id == forge.id and done.tokens == [0, 1, 2, 3, 4]
    assert done.signature is None and done.digest is None
    out = done.message.tensors(as_numpy=True)
    assert out["w"].tobytes() == W.tobytes()
    assert out["b"].tolist() == [True, False, True]


def test_pending_bytes_and_progress_follow_a_stream() -> None:
    async def main() -> None:
        forge = Forge()
        values = forge.valid()
        asm = StreamAssembler(threads=1)
        await asm.add(values[0], 0)
        declared = 20 * 4 + 3
        assert asm.pending_streams == 1 and asm.holds(forge.id)
        assert asm.pending_bytes == declared + STREAM_COST
        assert asm.progress(forge.id) == (0, declared)
        await asm.add(values[1], 1)
        assert asm.progress(forge.id) == (12 * 4, declared)
        for token, value in enumerate(values[2:], 2):
            await asm.add(value, token)
        assert asm.pending_bytes == 0 and not asm.holds(forge.id)
        assert asm.progress(forge.id) == (0, 0)

    run(main())


# ----------------------------------------------------------------------------- order of parts


def test_a_chunk_before_its_head_is_skipped_and_its_stream_too() -> None:
    forge = Forge()
    values = forge.valid()
    finished, failed = outcome([values[1], *values])
    assert finished == []
    first, *rest = failed
    assert not first.duplicate and first.tokens == [0]
    assert first.reason == "part 1 of a stream whose head was not received"
    # The rest of it (its head included) is skipped as parts of an ended stream.
    assert [f.tokens for f in rest] == [[1], [2], [3], [4], [5]]
    assert all(f.duplicate and f.reason == "part of an ended stream" for f in rest)


def test_a_gap_gives_the_stream_up_with_every_token() -> None:
    forge = Forge()
    values = forge.valid()
    drop = given_up(
        [values[0], values[2], values[3], values[4]],
        r"^part 2 arrived where part 1 was expected \(parts lost\)$",
    )
    assert drop.tokens == [0, 1] and drop.parts_received == 1 and drop.total_bytes == 83


def test_redelivered_parts_are_skipped_whatever_their_bytes() -> None:
    forge = Forge()
    values = forge.valid()
    other = forge.chunk(1, 0, 0, elements(np.ones(12, dtype=np.float32)))
    stream = [values[0], values[1], values[0], other, values[1], *values[2:]]
    finished, failed = outcome(stream)
    (done,) = finished
    assert done.message.tensors(as_numpy=True)["w"].tobytes() == W.tobytes()
    assert [f.tokens for f in failed] == [[2], [3], [4]]
    assert all(f.duplicate and f.reason == "a part already received" for f in failed)
    # The seal's tokens are those of the parts used; the copies came back at once.
    assert done.tokens == [0, 1, 5, 6, 7]


def test_a_second_seal_is_a_copy() -> None:
    forge = Forge()
    values = forge.valid()
    finished, failed = outcome([*values, values[-1], values[0]])
    assert len(finished) == 1
    assert [(f.tokens, f.duplicate) for f in failed] == [([5], True), ([6], True)]


# ----------------------------------------------------------------------------- chunks


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (
            lambda f: f.chunk(1, 2, 0, elements(W[:3])),
            r"^part 1: tensor_index 2 of 2 tensors$",
        ),
        (
            lambda f: f.chunk(1, 0, 3, elements(W[3:6])),
            r"^part 1: a chunk of tensor 'w' starts at element 3, where 0 was expected$",
        ),
        (
            lambda f: f.chunk(1, 0, 0, elements(np.zeros(21, dtype=np.float32))),
            r"^part 1: a chunk of 21 elements of tensor 'w', which has room for 20 more$",
        ),
        (
            lambda f: f.chunk(1, 0, 0, elements(np.zeros(4, dtype=np.int32))),
            r"^a chunk holds int32 elements, but its tensor is float32$",
        ),
        (
            lambda f: f.chunk(1, 0, 0, elements(W[:4], name="w")),
            r"^a chunk's tensor is named 'w'; it must be unnamed$",
        ),
        (
            lambda f: f.chunk(1, 0, 0, elements(W[:2]), elements(W[2:4], name="x")),
            r"^a chunk holds 2 tensors, not 1$",
        ),
        (
            lambda f: f.chunk(1, 0, 0, elements(W[:2]), elements(W[2:4])),
            r"^TensorMap holds two tensors with the same name$",
        ),
        (
            lambda f: f.chunk(1, 0, 0),
            r"^a chunk holds 0 tensors, not 1$",
        ),
        (
            lambda f: f.chunk(1, 0, 0, pb_tensor("", F32, (2, 2), W[:4].tobytes())),
            r"^a chunk's tensor has shape \[2, 2\], not 1-D with elements$",
        ),
        (
            lambda f: f.chunk(1, 0, 0, pb_tensor("", F32, (0,), b"")),
            r"^a chunk's tensor has shape \[0\], not 1-D with elements$",
        ),
        (
            lambda f: f.chunk(1, 0, 0, _lossy_elements(W[:8])),
            r"lossy-encoded, which streams do not use",
        ),
        (
            lambda f: f.chunk(1, 0, 0, _bad_crc(elements(W[:4]))),
            r"^tensor #0: shape \[4\] of float32 needs 16 bytes, but raw_size says 20$",
        ),
    ],
    ids=[
        "tensor_index_out_of_range",
        "offset_not_contiguous",
        "more_elements_than_room",
        "wrong_dtype",
        "named",
        "two_tensors",
        "two_unnamed_tensors",
        "no_tensor",
        "not_1d",
        "no_elements",
        "lossy",
        "raw_size_wrong",
    ],
)
def test_a_bad_chunk_gives_the_stream_up(make: Any, reason: str) -> None:
    forge = Forge()
    head = forge.head()
    bad = make(forge)
    drop = given_up([head, bad, forge.seal(2, [head, bad])], reason)
    # Given up at the bad chunk: the head's and the chunk's tokens; the seal then
    # is a part of an ended stream.
    assert drop.tokens == [0, 1]
    assert drop.parts_received == 2


def _lossy_elements(array: np.ndarray) -> tensor_pb2.Tensor:
    payload = array.astype(np.float16).tobytes()
    t = pb_tensor("", F32, (array.size,), b"")
    t.raw_size = len(payload)
    t.crc32c = crc32c.crc32c(payload)
    t.data = payload
    t.lossy.method = tensor_pb2.LOSSY_CAST_FLOAT16
    return t


def _bad_crc(t: tensor_pb2.Tensor) -> tensor_pb2.Tensor:
    t.raw_size += 4
    return t


def test_an_overlapping_chunk_gives_the_stream_up() -> None:
    forge = Forge()
    head = forge.head()
    first = forge.chunk(1, 0, 0, elements(W[:10]))
    again = forge.chunk(2, 0, 5, elements(W[5:15]))
    drop = given_up(
        [head, first, again],
        r"^part 2: a chunk of tensor 'w' starts at element 5, where 10 was expected$",
    )
    assert drop.tokens == [0, 1, 2]


@pytest.mark.parametrize(
    ("tensor", "reason"),
    [
        (
            pb_tensor("", F32, (4,), W[:4].tobytes()),
            None,
        ),
    ],
)
def test_a_chunk_whose_data_does_not_match_its_crc_fails_at_the_seal(
    tensor: tensor_pb2.Tensor, reason: str | None
) -> None:
    forge = Forge()
    tensor.crc32c ^= 1
    head = forge.head()
    bad = forge.chunk(1, 0, 0, tensor)
    rest = forge.chunk(2, 0, 4, elements(W[4:]))
    bools = forge.chunk(3, 1, 0, elements(np.array([1, 1, 0], dtype=np.uint8), dtype="bool"))
    values = [head, bad, rest, bools]
    drop = given_up(
        [*values, forge.seal(4, values)],
        r"^a chunk did not decode: tensor '': CRC-32C of the decoded bytes is 0x[0-9a-f]{8}, "
        r"the sender recorded",
    )
    assert drop.tokens == [0, 1, 2, 3, 4]


def test_bool_bytes_other_than_0_and_1_fail_at_the_seal() -> None:
    forge = Forge()
    head = forge.head()
    values = [
        head,
        forge.chunk(1, 0, 0, elements(W)),
        forge.chunk(2, 1, 0, elements(np.array([1, 2, 0], dtype=np.uint8), dtype="bool")),
    ]
    given_up(
        [*values, forge.seal(3, values)],
        r"^a chunk did not decode: tensor '': bool tensor holds bytes other than 0 and 1$",
    )


def test_compressed_chunks_decode() -> None:
    forge = Forge()
    values = [
        forge.head(),
        forge.chunk(1, 0, 0, elements(W[:7], zstd_level=3, shuffle=True)),
        forge.chunk(2, 0, 7, elements(W[7:], zstd_level=1, zstd_checksum=True)),
        forge.chunk(3, 1, 0, elements(np.array([0, 0, 1], dtype=np.uint8), dtype="bool")),
    ]
    finished, failed = outcome([*values, forge.seal(4, values)])
    assert failed == []
    (done,) = finished
    assert done.message.tensors(as_numpy=True)["w"].tobytes() == W.tobytes()


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
def test_a_corrupt_zstd_frame_gives_the_stream_up(
    where: float, caplog: pytest.LogCaptureFixture
) -> None:
    forge = Forge()
    compressed = elements(W, zstd_level=3)
    data = bytearray(compressed.data)
    data[int(len(data) * where)] ^= 0xFF
    compressed.data = bytes(data)
    values = [
        forge.head(),
        forge.chunk(1, 0, 0, compressed),
        forge.chunk(2, 1, 0, elements(np.array([0, 0, 1], dtype=np.uint8), dtype="bool")),
    ]
    # Refused when the chunk is read (a frame header) or when it is decoded.
    drop = given_up([*values, forge.seal(3, values)], r"tensor '': corrupt zstd")
    assert drop.tokens[:2] == [0, 1]
    gc.collect()
    # The decode job's error was taken, not left to asyncio's "never retrieved".
    assert not [r for r in caplog.records if r.name == "asyncio"]


# ----------------------------------------------------------------------------- seals


def test_a_seal_with_the_wrong_part_count() -> None:
    forge = Forge()
    values = forge.valid()
    seal = forge.seal(4, values[:-1], part_count=7)
    drop = given_up([*values[:-1], seal], r"^the seal counts 7 parts; 5 arrived$")
    assert drop.tokens == [0, 1, 2, 3, 4] and drop.parts_received == 5


def test_a_seal_with_the_wrong_crc() -> None:
    forge = Forge()
    values = forge.valid()
    good = crc32c.crc32c(b"".join(values[:-1]))
    seal = forge.seal(4, values[:-1], crc=good ^ 0x80)
    given_up(
        [*values[:-1], seal],
        rf"^CRC-32C of the parts is {good:#010x}, the seal says {good ^ 0x80:#010x} "
        r"\(corrupted parts\?\)$",
    )


def test_a_seal_before_every_element_arrived() -> None:
    forge = Forge()
    values = forge.valid()
    early = [values[0], values[1], values[3]]  # "w" lacks its last 8 elements
    early[2] = forge.chunk(2, 1, 0, elements(np.array([1, 0, 1], dtype=np.uint8), dtype="bool"))
    given_up([*early, forge.seal(3, early)], r"^tensor 'w' got 12 of its 20 elements$")


def test_a_seal_straight_after_the_head() -> None:
    forge = Forge()
    head = forge.head()
    given_up([head, forge.seal(1, [head])], r"^tensor 'w' got 0 of its 20 elements$")


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
        first.reason == ("refused: declares 83 bytes of tensors, above max_stream_bytes 82")
        and first.total_bytes == 83
        and first.tokens == [0]
    )
    assert all(f.duplicate for f in rest) and len(rest) == 4


def test_a_head_declaring_exabytes_allocates_nothing() -> None:
    forge = Forge()
    head = forge.head(infos=[_info("w", F32.wire, [2**31, 2**31, 2**31])])
    finished, failed = outcome([head])
    assert finished == []
    assert failed[0].reason.startswith("refused: declares ")
    assert "above max_stream_bytes 68719476736" in failed[0].reason


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
    assert refusal.reason.startswith("refused: 2 streams holding 8358 bytes under way already")
    assert "(max_streams 2, max_pending_bytes" in refusal.reason
    assert sorted(f.tokens[0] for f in failed if f.duplicate) == [(2, i) for i in range(1, 5)]


def test_max_pending_bytes_refuses_a_head_that_would_pass_it() -> None:
    async def main() -> list[Failed]:
        one, two = Forge("client-1"), Forge("client-2")
        asm = StreamAssembler(threads=1, max_pending_bytes=2 * (83 + STREAM_COST) - 1)
        _, first = await asm.add(one.head(), 1)
        _, second = await asm.add(two.head(), 2)
        assert first == [] and asm.pending_streams == 1
        # Once the first is done, there is room again.
        for token, value in enumerate(one.valid()[1:]):
            await asm.add(value, token)
        _, third = await asm.add(two.head(), 3)
        assert asm.pending_streams == 0  # two's id was remembered as ended: skipped
        return second + third

    refused, skipped = run(main())
    assert refused.reason.startswith("refused: 1 streams holding 4179 bytes under way already")
    assert skipped.duplicate


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
