"""Streamed transfers (wire format section 14.5) through Channel.send_message and
Channel.receive on the in-memory transport: every dtype, codec and filter,
empty and 0-d tensors, many tiny tensors, tensors far larger than a record,
odd record limits, torch and numpy in and out, ``expect=`` layouts, the
records written and the counters kept."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
from helpers import EXPECTED_TORCH_DTYPES, INFO_BY_TORCH, TORCH_DTYPES, tensor_bytes
from stream_tools import (
    SMALL_LIMIT,
    TOPIC,
    Received,
    assert_same_weights,
    drain,
    logged,
    random_tensor,
    receiver,
    run,
    same_bits,
    started,
    stream_index,
    stream_values,
    streamed,
)

from flwire.exceptions import CommunicationException, SerializationException
from flwire.messages import Message, decode_message
from flwire.tensors import EncodeOptions
from flwire.tensors import schema as s
from flwire.tensors.decode import read_chunk
from flwire.tensors.lossy import LossyConfig
from flwire.transport import Channel, Delivery, InMemoryBroker
from flwire.transport.chunking import PART_HEADER
from flwire.transport.headers import MESSAGE_ID
from flwire.transport.streaming import STREAM_HEADER, StreamWriter
from flwire.transport.streaming.format import CHUNK_OVERHEAD, parse_part
from flwire.transport.streaming.writer import PACKED_TENSOR_OVERHEAD
from flwire.v1 import tensor_pb2

CODECS = ["none", "zstd", "lz4"]
CODEC_WIRE = {
    "none": tensor_pb2.CODEC_UNSPECIFIED,
    "zstd": tensor_pb2.CODEC_ZSTD,
    "lz4": tensor_pb2.CODEC_LZ4,
}


def _every_dtype(seed: int = 0) -> dict[str, torch.Tensor]:
    """One tensor of every wire dtype, each larger than a 4 KiB record, half of
    them compressible; their element counts are not multiples of a run."""
    out = {}
    for i, dtype in enumerate(TORCH_DTYPES):
        shape = (7, 331 + i) if i % 3 else (2, 3, 401)
        out[f"t{i}.{dtype}"] = random_tensor(dtype, shape, seed + i, compressible=i % 2 == 0)
    return out


async def _round_trip(
    msg: Message, limit: int = SMALL_LIMIT, **channel_args
) -> tuple[Channel, Channel, Received, InMemoryBroker]:
    """Stream ``msg`` into a fresh broker and receive it; (sender, receiver,
    what was received, broker)."""
    broker = InMemoryBroker()
    sender = Channel(await started(broker, limit))
    await sender.send_message(TOPIC, msg)
    channel, got = receiver(broker, **channel_args)
    await drain(channel, got, broker)
    return sender, channel, got, broker


def _one(got: Received) -> Delivery:
    (delivery,) = got.messages
    assert delivery.message is not None
    return delivery


# ----------------------------------------------------------------------------- dtypes and codecs


def test_the_dtype_list_is_complete() -> None:
    assert set(TORCH_DTYPES) == EXPECTED_TORCH_DTYPES


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("codec", CODECS)
def test_every_dtype_round_trips_bit_exact(codec: str, shuffle: bool) -> None:
    weights = _every_dtype()
    msg = streamed(weights, compression=codec, shuffle=shuffle)
    _, channel, got, broker = run(_round_trip(msg))
    delivery = _one(got)
    assert delivery.message is not None
    assert_same_weights(delivery.message.tensors(), weights)
    # Each chunk is a TensorMap with the codec asked for (where it made the
    # chunk smaller) and the filter asked for (on multi-byte dtypes).
    codecs_seen, filters_seen = set(), set()
    for rec in logged(broker)[1:-2]:  # between the head and the seal (and the end marker)
        part = parse_part(rec.value)
        assert part.chunk is not None
        for tensor in read_chunk(part.chunk.elements):
            codecs_seen.add(tensor.codec)
            filters_seen.add(tensor.filter)
    if codec == "none":
        assert codecs_seen == {s.CODEC_NONE}
    else:
        assert CODEC_WIRE[codec] in codecs_seen
    # (the filter applies to compressed data only)
    assert (s.FILTER_BYTE_SHUFFLE in filters_seen) == (shuffle and codec != "none")
    assert got.events == [] and channel.stats["dropped_transfers"] == 0


def test_numpy_output_of_every_dtype() -> None:
    weights = _every_dtype(seed=5)
    msg = streamed(weights, compression="zstd", shuffle=True)
    _, _, got, _ = run(_round_trip(msg))
    message = _one(got).message
    assert message is not None
    held = {n: t for n, t in weights.items() if INFO_BY_TORCH[t.dtype].numpy_dtype is not None}
    others = set(weights) - set(held)
    if others:
        # A dtype numpy cannot hold (ml_dtypes missing or too old) is refused by name.
        with pytest.raises(SerializationException, match="numpy cannot represent"):
            message.tensors(as_numpy=True)
        return
    arrays = message.tensors(as_numpy=True)
    for name, want in weights.items():
        got_array = arrays[name]
        assert isinstance(got_array, np.ndarray), name
        assert got_array.shape == tuple(want.shape), name
        assert got_array.tobytes() == tensor_bytes(want), name
        assert got_array.dtype.name == str(want.dtype).removeprefix("torch."), name


def test_numpy_inputs_round_trip_to_torch_and_numpy() -> None:
    rng = np.random.default_rng(3)
    big_endian = rng.standard_normal(900).astype(">f8")
    weights = {
        "f32": rng.standard_normal((33, 47)).astype(np.float32),
        "i64": rng.integers(-(2**62), 2**62, size=1200, dtype=np.int64),
        "u16": rng.integers(0, 2**16, size=(5, 301), dtype=np.uint16),
        "bool": rng.integers(0, 2, size=999).astype(bool),
        "c128": (rng.standard_normal(700) + 1j * rng.standard_normal(700)).astype(np.complex128),
        "strided": rng.standard_normal((40, 60)).astype(np.float32)[::3, ::2],
        "be": big_endian,
        "scalar": np.float64(2.5),
    }
    msg = streamed(weights, compression="lz4", shuffle=True)
    _, _, got, _ = run(_round_trip(msg))
    message = _one(got).message
    assert message is not None
    arrays = message.tensors(as_numpy=True)
    assert list(arrays) == list(weights)
    for name, want in weights.items():
        want_le = np.asarray(want).astype(np.asarray(want).dtype.newbyteorder("<"))
        assert arrays[name].dtype == want_le.dtype, name
        assert arrays[name].shape == want_le.shape, name
        assert arrays[name].tobytes() == want_le.tobytes(), name
    tensors = message.tensors()
    assert isinstance(tensors["f32"], torch.Tensor)
    assert tensors["f32"].numpy().tobytes() == weights["f32"].tobytes()
    assert tensors["be"].dtype == torch.float64
    assert tensors["be"].numpy().tobytes() == big_endian.astype("<f8").tobytes()


def test_mixed_torch_and_numpy_inputs_keep_their_order() -> None:
    a = np.linspace(0, 1, 3000, dtype=np.float32)
    weights = {
        "b": torch.arange(5000, dtype=torch.int32),
        "a": a,
        "c": torch.ones(2, 2, dtype=torch.bfloat16),
    }
    _, _, got, _ = run(_round_trip(streamed(weights, compression="zstd")))
    message = _one(got).message
    assert message is not None
    out = message.tensors()
    assert list(out) == ["b", "a", "c"]
    assert same_bits(out["b"], weights["b"])
    assert out["a"].numpy().tobytes() == a.tobytes()
    assert same_bits(out["c"], weights["c"])


# ----------------------------------------------------------------------------- shapes and sizes


def test_empty_tensors_and_scalars() -> None:
    weights = {
        "empty": torch.empty(0),
        "empty_3d": torch.empty(3, 0, 2, dtype=torch.float64),
        "scalar": torch.tensor(-0.0),
        "scalar_bool": torch.tensor(True),
        "scalar_i8": torch.tensor(-128, dtype=torch.int8),
        "after": torch.arange(10, dtype=torch.int16),
    }
    sender, _, got, broker = run(_round_trip(streamed(weights, compression="zstd", shuffle=True)))
    message = _one(got).message
    assert message is not None
    out = message.tensors()
    assert_same_weights(out, weights)
    assert out["scalar"].shape == () and torch.signbit(out["scalar"])
    # The empty tensors have no chunk: head, one chunk packing the four others
    # (tensors 2 to 5, whole), seal.
    records = logged(broker)[:-1]
    assert len(records) == 1 + 1 + 1
    chunk = parse_part(records[1].value).chunk
    assert chunk is not None and chunk.tensor_index == 2
    assert [t.numel for t in read_chunk(chunk.elements)] == [1, 1, 1, 10]
    assert sender.stats["sent_parts"] == 3


def test_only_empty_tensors() -> None:
    weights = {"a": torch.empty(0, 5), "b": np.empty((2, 0), dtype=np.uint8)}
    _, _, got, broker = run(_round_trip(streamed(weights)))
    message = _one(got).message
    assert message is not None
    out = message.tensors(as_numpy=True)
    assert out["a"].shape == (0, 5) and out["a"].dtype == np.float32
    assert out["b"].shape == (2, 0) and out["b"].dtype == np.uint8
    assert len(logged(broker)) == 2 + 1  # head, seal (and the end marker)


def test_many_tiny_tensors() -> None:
    weights = {
        f"layer{i}.{kind}": random_tensor(dtype, shape, i)
        for i in range(400)
        for kind, dtype, shape in [("w", torch.float16, (3,)), ("b", torch.int8, ())]
    }
    sender, channel, got, _ = run(_round_trip(streamed(weights), limit=64 << 10))
    message = _one(got).message
    assert message is not None
    assert_same_weights(message.tensors(), weights)
    # Packed: a chunk holds as many whole tensors as fit in its record, each with
    # PACKED_TENSOR_OVERHEAD bytes of room for its header.
    chunks = -(-len(weights) * (PACKED_TENSOR_OVERHEAD + 6) // ((64 << 10) - 2048))
    assert 1 + 2 + 1 <= sender.stats["sent_parts"] <= 1 + chunks + 1
    assert channel.stats["received_parts"] == sender.stats["sent_parts"]


def test_a_tensor_far_larger_than_a_record() -> None:
    big = random_tensor(torch.float32, (512, 1030), seed=9)  # 2 MiB, ~530 records of 4 KiB
    weights = {"big": big, "tail": torch.arange(3, dtype=torch.int64)}
    _, _, got, broker = run(_round_trip(streamed(weights, compression="lz4")))
    message = _one(got).message
    assert message is not None
    assert_same_weights(message.tensors(), weights)
    records = logged(broker)[:-1]
    assert len(records) > 500
    assert all(len(r.value) <= SMALL_LIMIT for r in records)
    # The runs of a tensor are contiguous, in order, and cover it once; the tail
    # of "big" and all of "tail" share the last chunk (packed).
    offsets: dict[int, int] = {}
    for rec in records[1:-1]:
        chunk = parse_part(rec.value).chunk
        assert chunk is not None
        assert chunk.element_offset == offsets.get(chunk.tensor_index, 0)
        for k, tensor in enumerate(read_chunk(chunk.elements)):
            start = chunk.element_offset if k == 0 else 0
            offsets[chunk.tensor_index + k] = start + tensor.numel
    assert offsets == {0: big.numel(), 1: 3}
    assert parse_part(records[-2].value).chunk.tensor_index == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("limit", [1400, 1401, 1777, 2053, 4099, 65537])
def test_odd_record_limits(limit: int) -> None:
    weights = {
        "c128": random_tensor(torch.complex128, (97,), 1),
        "f16": random_tensor(torch.float16, (1001,), 2),
        "u8": random_tensor(torch.uint8, (3333,), 3),
    }
    _, _, got, broker = run(_round_trip(streamed(weights, compression="zstd"), limit=limit))
    message = _one(got).message
    assert message is not None
    assert_same_weights(message.tensors(), weights)
    records = logged(broker)[:-1]
    assert all(len(r.value) <= limit for r in records)
    assert [stream_index(r) for r in records] == list(range(len(records)))
    # A tensor is cut into runs of one size (the last one shorter), as large as
    # the record allows once the chunk's overhead is taken off.
    runs: dict[int, list[int]] = {}
    for rec in records[1:-1]:
        chunk = parse_part(rec.value).chunk
        assert chunk is not None
        for k, tensor in enumerate(read_chunk(chunk.elements)):
            runs.setdefault(chunk.tensor_index + k, []).append(tensor.raw_size)
    for index, sizes in runs.items():
        assert len(set(sizes[:-1])) <= 1 and sizes[-1] <= sizes[0], index
        if len(sizes) > 1:
            assert limit - CHUNK_OVERHEAD - 300 <= sizes[0] <= limit - CHUNK_OVERHEAD, index


def test_a_record_limit_too_small_to_stream_into_is_refused_before_sending() -> None:
    async def main() -> tuple[InMemoryBroker, Channel]:
        broker = InMemoryBroker()
        channel = Channel(await started(broker, CHUNK_OVERHEAD))
        with pytest.raises(SerializationException, match="too small to stream a message into"):
            await channel.send_message(TOPIC, streamed({"a": torch.ones(10)}))
        return broker, channel

    broker, channel = run(main())
    assert logged(broker) == []
    assert channel.stats["sent_streams"] == 0


def test_a_head_larger_than_a_record_is_refused_naming_it() -> None:
    names = {f"a.rather.long.module.path.layer{i:04d}.weight": torch.ones(1) for i in range(200)}

    async def main() -> tuple[InMemoryBroker, Channel, BaseException]:
        broker = InMemoryBroker()
        channel = Channel(await started(broker, SMALL_LIMIT))
        with pytest.raises((SerializationException, CommunicationException)) as info:
            await channel.send_message(TOPIC, streamed(names))
        return broker, channel, info.value

    broker, _, error = run(main())
    assert isinstance(error, SerializationException)
    assert "head" in str(error) and "200 tensors" in str(error)
    assert logged(broker) == []  # nothing half-sent
    # StreamWriter itself says so before the first record.
    with pytest.raises(SerializationException, match="head"):
        run(stream_values(streamed(names), SMALL_LIMIT))


# ----------------------------------------------------------------------------- the API


def test_records_headers_and_counters() -> None:
    weights = {"w": random_tensor(torch.float32, (3000,), 4), "b": torch.ones(3)}
    msg = streamed(weights, compression="zstd")
    sender, channel, got, broker = run(_round_trip(msg))
    records = logged(broker)[:-1]
    delivery = _one(got)
    # The sender's key, the message's headers plus the part index, no part header.
    for i, rec in enumerate(records):
        assert rec.key == b"client-1"
        headers = dict(rec.headers)
        assert headers[STREAM_HEADER] == str(i).encode()
        assert headers[MESSAGE_ID] == msg.message_id.encode()
        assert PART_HEADER not in headers
        assert parse_part(rec.value).transfer_id == msg.message_id
    total = sum(len(r.value) for r in records)
    assert sender.stats["sent"] == 1 and sender.stats["sent_streams"] == 1
    assert sender.stats["sent_parts"] == len(records)
    assert sender.stats["bytes_sent"] == total
    assert channel.stats["received_streams"] == 1
    assert channel.stats["received"] == 2  # the stream and the end marker
    assert channel.stats["received_parts"] == len(records)
    assert channel.stats["bytes_received"] == total + len(b"end")
    for counter in ("bad_records", "dropped_transfers", "duplicates", "refused"):
        assert channel.stats[counter] == 0, counter
    # The delivery: no payload, the message decoded, the stream header gone.
    assert delivery.payload is None
    assert delivery.transfer_id == msg.message_id == delivery.id
    assert delivery.header(STREAM_HEADER) is None
    assert delivery.message_id == msg.message_id
    assert delivery.key == b"client-1"
    message = delivery.message
    assert message is not None
    assert message.type == "client_update" and message.sender_id == "client-1"
    assert message.body.round_id == 1 and message.body.num_examples == 7
    assert message.message_id == msg.message_id
    assert message.weights_nbytes == sum(t.numel() * t.element_size() for t in weights.values())
    # Every record was settled by done().
    assert broker.committed[("g", TOPIC)] == len(records) + 1


def test_send_message_returns_the_bytes_of_its_records() -> None:
    async def main() -> tuple[int, InMemoryBroker]:
        broker = InMemoryBroker()
        channel = Channel(await started(broker))
        sent = await channel.send_message(TOPIC, streamed({"x": torch.zeros(5000)}))
        return sent, broker

    sent, broker = run(main())
    assert sent == sum(len(r.value) for r in logged(broker))


def test_records_match_stream_writer() -> None:
    msg = streamed({"x": random_tensor(torch.float64, (900,), 2)}, compression="zstd")
    values = run(stream_values(msg, 2000))
    parts = [parse_part(v) for v in values]
    assert parts[0].head is not None and parts[-1].seal is not None
    assert [p.index for p in parts] == list(range(len(values)))
    assert parts[-1].seal.part_count == len(values)
    assert all(p.chunk is not None for p in parts[1:-1])
    # A writer's record values stay within what it was given.
    assert all(len(v) <= 2000 for v in values)


def test_progress_reports_reach_the_totals() -> None:
    sent: list[tuple[str, str, int, int]] = []
    received: list[tuple[str, str, int, int]] = []
    weights = {"w": random_tensor(torch.float32, (5000,), 1)}
    msg = streamed(weights)

    async def main() -> None:
        broker = InMemoryBroker()
        channel = Channel(await started(broker), on_progress=lambda *a: sent.append(a))
        await channel.send_message(TOPIC, msg)
        rx, got = receiver(broker, on_progress=lambda *a: received.append(a))
        await drain(rx, got, broker)

    run(main())
    total = 5000 * 4
    for progress, direction in ((sent, "send"), (received, "receive")):
        assert progress, direction
        assert {p[0] for p in progress} == {direction}
        assert {p[1] for p in progress} == {msg.message_id}
        assert {p[3] for p in progress} == {total}
        done = [p[2] for p in progress]
        assert done == sorted(done) and done[-1] == total


def test_expect_checks_the_layout() -> None:
    weights = {"w": torch.zeros(4, 3), "b": torch.zeros(3, dtype=torch.float64)}
    _, _, got, _ = run(_round_trip(streamed(weights)))
    message = _one(got).message
    assert message is not None
    out = message.tensors(expect=weights)
    assert_same_weights(out, weights)
    arrays = message.tensors(as_numpy=True, expect={k: v.numpy() for k, v in weights.items()})
    assert arrays["w"].shape == (4, 3)
    with pytest.raises(SerializationException, match=r"'w' is float32 \[4, 3\].*float32 \[3, 4\]"):
        message.tensors(expect={"w": torch.zeros(3, 4), "b": weights["b"]})
    with pytest.raises(SerializationException, match=r"'b' is float64 \[3\].*float32 \[3\]"):
        message.tensors(expect={"w": weights["w"], "b": torch.zeros(3)})
    with pytest.raises(SerializationException, match="'b' is not in the expected layout"):
        message.tensors(expect={"w": weights["w"]})
    with pytest.raises(SerializationException, match=r"1 tensor.*missing: 'extra'"):
        message.tensors(expect={**weights, "extra": torch.zeros(1)})


def test_received_tensors_share_the_receivers_buffers() -> None:
    _, _, got, _ = run(_round_trip(streamed({"w": torch.arange(6, dtype=torch.float32)})))
    message = _one(got).message
    assert message is not None
    first = message.tensors()["w"]
    first += 1
    # Handed over: a second call sees the same memory.
    assert torch.equal(message.tensors()["w"], torch.arange(1, 7, dtype=torch.float32))
    assert message.tensors(as_numpy=True)["w"].tolist() == [1, 2, 3, 4, 5, 6]


def test_a_streamed_message_encodes_whole_on_request() -> None:
    weights = {"w": random_tensor(torch.bfloat16, (3, 5), 1), "i": torch.arange(4)}
    msg = streamed(weights, compression="zstd")
    # Built with stream=True: unencoded until asked, then a normal message.
    assert msg.sources is not None and msg.has_weights
    decoded = decode_message(msg.to_bytes())
    assert_same_weights(decoded.tensors(), weights)
    # A received stream's message can be sent again whole, or streamed again.
    _, _, got, _ = run(_round_trip(streamed(weights)))
    message = _one(got).message
    assert message is not None
    assert_same_weights(decode_message(message.to_bytes()).tensors(), weights)
    values = run(stream_values(message))
    assert parse_part(values[0]).transfer_id == message.message_id


def test_stream_writer_refuses_an_encoded_message() -> None:
    encoded = streamed({"w": torch.ones(2)})
    plain = decode_message(encoded.to_bytes())
    with pytest.raises(SerializationException, match=r"EncodeOptions\(stream=True\)"):
        StreamWriter(plain, SMALL_LIMIT)


def test_a_lossy_stream_casts_each_chunk_and_keeps_the_rest_exact() -> None:
    weights = {
        "w": random_tensor(torch.float32, (4000,), 3),
        "b": torch.linspace(-1, 1, 10),
        "steps": torch.arange(3),
    }
    finite = {k: torch.nan_to_num(v, nan=0.0, posinf=1.0, neginf=-1.0) for k, v in weights.items()}
    finite["w"] = finite["w"].clamp(-1e4, 1e4)
    lossy = LossyConfig("bfloat16", min_elements=100)
    _, _, got, broker = run(_round_trip(streamed(finite, lossy=lossy)))
    records = logged(broker)
    message = _one(got).message
    assert message is not None
    tensors = message.tensors()
    assert torch.equal(tensors["w"], finite["w"].to(torch.bfloat16).to(torch.float32))
    assert torch.equal(tensors["b"], finite["b"]) and torch.equal(tensors["steps"], finite["steps"])
    # Cast chunks hold twice the elements of raw ones: about half the records.
    _, _, _, exact = run(_round_trip(streamed(finite)))
    assert len(records) < 0.6 * len(logged(exact)) + 2


def test_a_normal_message_still_goes_in_parts() -> None:
    weights = {"w": random_tensor(torch.float32, (3000,), 2)}
    from flwire.messages import client_update

    msg = client_update("client-1", 1, weights, options=EncodeOptions(compression="none"))
    sender, channel, got, broker = run(_round_trip(msg))
    records = logged(broker)[:-1]
    assert all(dict(r.headers).get(STREAM_HEADER) is None for r in records)
    assert sender.stats["sent_streams"] == 0 and channel.stats["received_streams"] == 0
    (delivery,) = got.messages
    assert delivery.payload is not None
    assert_same_weights(decode_message(delivery.payload).tensors(), weights)


def test_two_streams_sent_at_once_both_arrive() -> None:
    """Two senders stream at once into one topic (their sends interleave on the
    event loop); each message arrives whole."""
    a = {"w": random_tensor(torch.float32, (4000,), 1)}
    b = {"w": random_tensor(torch.int64, (2500,), 2), "x": torch.ones(3)}

    async def main() -> Received:
        broker = InMemoryBroker()
        one = Channel(await started(broker), max_in_flight=2)
        two = Channel(await started(broker), max_in_flight=2)
        await asyncio.gather(
            one.send_message(TOPIC, streamed(a, sender="client-1")),
            two.send_message(TOPIC, streamed(b, sender="client-2", compression="zstd")),
        )
        keys = [r.key or b"" for r in logged(broker)]
        assert keys != sorted(keys), "the two streams did not interleave"
        channel, got = receiver(broker)
        return await drain(channel, got, broker)

    got = run(main())
    by_sender = {d.message.sender_id: d.message for d in got.messages if d.message}
    assert_same_weights(by_sender["client-1"].tensors(), a)
    assert_same_weights(by_sender["client-2"].tensors(), b)


def test_decoding_a_streamed_deliverys_missing_payload_says_where_the_message_is() -> None:
    with pytest.raises(SerializationException, match=r"delivery\.message"):
        decode_message(None)


def test_a_lossy_value_refused_is_refused_before_the_first_record() -> None:
    """An outside review: a float16 overflow halfway through a tensor failed the
    send after 63 records, leaving every receiver a stream it held until its part
    timeout, and named tensor '' at an index inside the chunk."""
    weights = {"big.weight": torch.zeros(300_000), "b": torch.zeros(10)}
    weights["big.weight"][250_000] = 70_000.0
    msg = streamed(weights, lossy=LossyConfig("float16"))

    async def main() -> InMemoryBroker:
        broker = InMemoryBroker()
        sender = Channel(await started(broker, SMALL_LIMIT))
        with pytest.raises(SerializationException) as info:
            await sender.send_message(TOPIC, msg)
        assert str(info.value).startswith(
            "tensor 'big.weight': value 70000.0 at flat index 250000 overflows float16"
        )
        return broker

    broker = run(main())
    assert logged(broker) == []


def test_top_k_chunks_keep_their_share_of_the_tensors_k() -> None:
    """The shares add up to the tensor's K: with topk_k, ceil per chunk kept 105
    of 100, and a fraction of 1/8 sent most chunks exact (each just over 1 in 8)."""
    from flwire.transport.streaming.writer import chunk_lossy

    numel, run = 2_000_000, 249_743  # about a 1 MB record's float32 elements
    bounds = [(a, min(a + run, numel)) for a in range(0, numel, run)]
    for config, want in [
        (LossyConfig("topk", topk_k=100), 100),
        (LossyConfig("topk", topk_fraction=0.125), 250_000),
        (LossyConfig("topk", topk_fraction=0.01), 20_000),
    ]:
        chunks = [chunk_lossy(config, numel, a, b) for a, b in bounds]
        ks = [c.k_for(b - a) for c, (a, b) in zip(chunks, bounds, strict=True) if c is not None]
        assert len(ks) == len(bounds), config  # no chunk goes exact
        # Exactly K, but where a share is held to one in 8 of its chunk (at 1/8).
        assert want - len(bounds) <= sum(ks) <= want, config
        assert sum(ks) == want or config.topk_fraction == 0.125
        assert all(8 * k <= b - a for k, (a, b) in zip(ks, bounds, strict=True))
    # A chunk of fewer than 8 elements goes exact.
    assert chunk_lossy(LossyConfig("topk"), numel, numel - 7, numel) is None


def test_a_top_k_chunk_is_reconstructed_in_its_own_place() -> None:
    """Zeros and the kept values, straight into the tensor's memory: no second
    buffer of the chunk's size (an outside review measured 2x the tensor)."""
    import numpy as np

    from flwire.tensors import dtypes
    from flwire.tensors.lossy import LossyParams, scatter_top_k_into
    from flwire.v1 import tensor_pb2

    values = np.array([5.0, -7.0], dtype="<f4")
    payload = np.frombuffer(values.tobytes() + np.array([3, 40], "<u4").tobytes(), np.uint8)
    out = np.full(64 * 4, 0xFF, dtype=np.uint8)  # whatever the memory held
    params = LossyParams(tensor_pb2.LOSSY_TOP_K, k=2)
    scatter_top_k_into("w", dtypes.from_numpy(np.dtype("<f4"), "w"), params, payload, out)
    got = out.view("<f4")
    assert got[3] == 5.0 and got[40] == -7.0
    assert np.count_nonzero(got) == 2


def test_a_record_limit_too_small_to_stream_into_says_what_a_chunk_needs() -> None:
    msg = streamed({"w": torch.zeros(10)})
    with pytest.raises(SerializationException, match=r"a chunk needs \d+ bytes at least"):
        StreamWriter(msg, 600)
