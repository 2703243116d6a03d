"""Streamed transfers that break the rules (wire format section 14.5): parts
out of order, bad chunks and bad seals, fed to a StreamAssembler part by part
(tests/stream_forge.py builds them by hand): each is given up on (or skipped)
with a reason naming what is wrong, and never handed out. Heads, bounds and
records that are not parts: test_streaming_heads.py."""

from __future__ import annotations

import gc
from typing import Any

import crc32c
import numpy as np
import pytest
from helpers import pb_tensor
from stream_forge import F32, Forge, W, elements, feed, given_up, outcome
from stream_tools import run

from flwire.tensors import DecodeLimits
from flwire.transport.streaming import StreamAssembler
from flwire.transport.streaming.reader import STREAM_COST, TENSOR_COST
from flwire.v1 import tensor_pb2, transfer_pb2

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
        assert asm.pending_bytes == declared + STREAM_COST + 2 * TENSOR_COST  # w and b
        assert asm.progress(forge.id) == (0, declared)
        await asm.add(values[1], 1)
        assert asm.progress(forge.id) == (12 * 4, declared)
        for token, value in enumerate(values[2:], 2):
            await asm.add(value, token)
        assert asm.pending_bytes == 0 and not asm.holds(forge.id)
        assert asm.progress(forge.id) == (0, 0)

    run(main())


# ----------------------------------------------------------------------------- order of parts


def test_a_chunk_before_its_head_is_skipped_and_its_head_starts_it_again() -> None:
    forge = Forge()
    values = forge.valid()
    finished, failed = outcome([values[1], *values])
    first, *rest = failed
    assert not first.duplicate and first.tokens == [0]
    assert first.reason == "part 1 of a stream whose head was not received"
    assert rest == []
    # The head that follows starts the transfer (as a sender's retry does), whole.
    assert len(finished) == 1 and finished[0].tokens == [1, 2, 3, 4, 5]


def test_parts_after_a_skipped_chunk_are_skipped_until_a_head() -> None:
    forge = Forge()
    values = forge.valid()
    finished, failed = outcome([values[1], values[2], values[3]])
    assert finished == []
    assert [f.duplicate for f in failed] == [False, True, True]
    assert all(f.reason == "part of an ended stream" for f in failed[1:])


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
            r"^part 1: tensor 'w' from element 0: "
            r"a chunk holds int32 elements, but its tensor is float32$",
        ),
        (
            lambda f: f.chunk(1, 0, 0, elements(W[:4], name="w")),
            r"^part 1: tensor 'w' from element 0: "
            r"a chunk's tensor is named 'w'; it must be unnamed$",
        ),
        (
            lambda f: f.chunk(1, 0, 0, elements(W[:2]), elements(W[2:4], name="x")),
            r"^part 1: tensor 'w' from element 0: "
            r"a chunk's tensor is named 'x'; it must be unnamed$",
        ),
        (
            # Packed: a tensor followed by another in a chunk must end its tensor.
            lambda f: f.chunk(1, 0, 0, elements(W[:2]), elements(W[2:4])),
            r"^part 1: a packed chunk's tensor 1 of 2 holds 2 of the 20 elements left of "
            r"tensor 'w'; every tensor of a chunk but its last must end its tensor$",
        ),
        (
            lambda f: f.chunk(1, 0, 0),
            r"^part 1: tensor 'w' from element 0: a chunk holds no tensor$",
        ),
        (
            lambda f: f.chunk(1, 0, 0, pb_tensor("", F32, (2, 2), W[:4].tobytes())),
            r"^part 1: tensor 'w' from element 0: "
            r"a chunk's tensor has shape \[2, 2\], not 1-D with elements$",
        ),
        (
            lambda f: f.chunk(1, 0, 0, pb_tensor("", F32, (0,), b"")),
            r"^part 1: tensor 'w' from element 0: "
            r"a chunk's tensor has shape \[0\], not 1-D with elements$",
        ),
        (
            lambda f: f.chunk(1, 0, 0, _lossy_elements(W[:8], extra=2)),
            r"^part 1: tensor 'w' from element 0: the float16 lossy payload of shape \[8\] "
            r"of float32 takes 16 bytes, but raw_size says 18$",
        ),
        (
            lambda f: f.chunk(1, 0, 0, _lossy_elements(W[:8], method=99)),
            r"^part 1: tensor 'w' from element 0 uses unknown lossy method 99",
        ),
        (
            lambda f: f.chunk(1, 0, 0, _bad_crc(elements(W[:4]))),
            r"^part 1: tensor 'w' from element 0: "
            r"shape \[4\] of float32 needs 16 bytes, but raw_size says 20$",
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
        "lossy_payload_size",
        "lossy_method_unknown",
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


def _lossy_elements(
    array: np.ndarray, *, extra: int = 0, method: int = tensor_pb2.LOSSY_CAST_FLOAT16
) -> tensor_pb2.Tensor:
    """``array`` cast to float16, as a lossy chunk (its payload ``extra`` bytes
    longer; ``method`` as recorded)."""
    payload = array.astype(np.float16).tobytes() + bytes(extra)
    t = pb_tensor("", F32, (array.size,), b"")
    t.raw_size = len(payload)
    t.crc32c = crc32c.crc32c(payload)
    t.data = payload
    t.lossy.method = method  # type: ignore[assignment]  # an unknown one, on purpose
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
        r"^a chunk did not decode: tensor 'w\[0:4\]': CRC-32C of the decoded bytes is "
        r"0x[0-9a-f]{8}, "
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
        r"^a chunk did not decode: tensor 'b\[0:3\]': bool tensor holds bytes other than 0 "
        r"and 1$",
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
    drop = given_up(
        [*values, forge.seal(3, values)],
        r"^(part 1: tensor 'w' from element 0|a chunk did not decode: tensor 'w\[0:20\]'): "
        r"corrupt zstd",
    )
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


# ----------------------------------------------------------------------------- the host's refusals


def test_a_tensor_whose_memory_is_refused_gives_its_stream_up(monkeypatch: Any) -> None:
    """A host that refuses a tensor's memory (MemoryError from buffers.empty, as
    on a machine with less memory than max_stream_bytes) ends that stream,
    reported with the cause and the fix; the assembler goes on with the next."""
    from flwire.tensors import buffers

    real_empty = buffers.empty
    refusals: list[int] = []

    def refuse_w(nbytes: int) -> np.ndarray:
        if nbytes == W.nbytes and not refusals:
            refusals.append(nbytes)
            raise MemoryError(f"cannot map {nbytes} bytes for a streamed tensor")
        return real_empty(nbytes)

    monkeypatch.setattr(buffers, "empty", refuse_w)
    one, two = Forge("client-1"), Forge("client-2")
    asm = StreamAssembler(threads=1)
    finished, failed = run(feed(asm, [*one.valid(), *two.valid()]))
    assert refusals == [W.nbytes]
    real = [f for f in failed if not f.duplicate]
    (refused,) = real
    assert refused.transfer_id == one.id and refused.tokens == [0, 1]
    assert refused.reason == (
        f"part 1: no memory for tensor 0's buffer (cannot map {W.nbytes} bytes for a streamed "
        "tensor); lower StreamAssembler(max_stream_bytes=, max_pending_bytes=) to what this "
        "host can hold"
    )
    # The rest of the first stream is skipped; the second one arrives whole.
    assert [f.transfer_id for f in failed if f.duplicate] == [one.id] * 3
    (done,) = finished
    assert done.transfer_id == two.id
    assert done.message.tensors(as_numpy=True)["w"].tobytes() == W.tobytes()
    assert asm.pending_streams == 0 and asm.pending_bytes == 0


def test_a_chunk_whose_decode_runs_out_of_memory_gives_its_stream_up(monkeypatch: Any) -> None:
    from flwire.transport.streaming import reader

    def out_of_memory(rec: Any, out: np.ndarray) -> int | None:
        raise MemoryError("no room for the decompressor")

    monkeypatch.setattr(reader, "decode_elements_into", out_of_memory)
    forge = Forge()
    given_up(forge.valid(), r"^a chunk did not decode: no room for the decompressor$")


def test_a_strided_record_value_is_read_as_its_bytes() -> None:
    """A bytes-like value that is not contiguous (a strided numpy view) is read
    as the bytes it holds, as parse_part reads it, rather than raising."""
    forge = Forge()
    values: list[Any] = []  # bytes-like, as a transport may hand them over
    for value in forge.valid():
        spaced = np.zeros(2 * len(value), dtype=np.uint8)
        spaced[::2] = np.frombuffer(value, dtype=np.uint8)
        values.append(spaced[::2])
    assert not values[1].flags.c_contiguous
    finished, failed = outcome(values)
    assert failed == []
    assert finished[0].message.tensors(as_numpy=True)["w"].tobytes() == W.tobytes()


# ----------------------------------------------------------------------------- expansion


def _zeros_stream() -> tuple[Forge, list[bytes]]:
    """A stream of one 20 MiB float32 tensor of zeros in two zstd chunks of a
    few hundred bytes each."""
    forge = Forge()
    n = 5 << 20
    infos = [transfer_pb2.TensorInfo(name="w", dtype=F32.wire, shape=[n])]  # type: ignore[arg-type]
    head = forge.head(infos=infos)
    zeros = np.zeros(n // 2, dtype=np.float32)
    values = [
        head,
        forge.chunk(1, 0, 0, elements(zeros, zstd_level=3)),
        forge.chunk(2, 0, n // 2, elements(zeros, zstd_level=3)),
    ]
    return forge, [*values, forge.seal(3, values)]


def test_chunks_that_decode_past_max_expansion_are_refused_before_decoding() -> None:
    """Like a whole TensorMap (section 11), a stream's chunks may decode to at
    most max(expansion_floor_bytes, max_expansion x the bytes of its records):
    a few compressed records cannot fill gigabytes of tensor memory."""
    _, values = _zeros_stream()
    assert sum(len(v) for v in values) < 20_000  # 20 MiB of zeros in a few kB
    # Each chunk alone is within the floor (16 MiB) of its own TensorMap's check,
    # and the first within the stream's; the second takes the stream past it.
    drop = given_up(
        values,
        r"^part 2: the stream's chunks decode to 20971520 bytes from \d+ bytes of records, "
        r"over 100 times their size \(DecodeLimits\.max_expansion; pass "
        r"StreamAssembler\(limits=\) a higher one, or None",
    )
    assert drop.tokens == [0, 1, 2]


def test_a_stream_of_zeros_arrives_when_the_expansion_check_is_off() -> None:
    _, values = _zeros_stream()
    finished, failed = outcome(values, limits=DecodeLimits(max_expansion=None))
    assert failed == []
    w = finished[0].message.tensors(as_numpy=True)["w"]
    assert w.shape == (5 << 20,) and not w.any()
