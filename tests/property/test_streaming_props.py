"""Property tests of streamed transfers (wire format section 14.5) through
Channel on the in-memory transport:

- any state dict, under any record limit, codec and filter, arrives bit-exact;
- with a lossy config, a cast or block int8 stream decodes to exactly what the
  message sent whole decodes to, and a top-k stream keeps each element exact or
  zero;
- a real stream with one of its records changed (a byte flipped, cut short,
  dropped, sent twice, swapped with the next) is either delivered bit-exact
  (the copy) or not delivered at all and reported, never delivered changed;
- hostile records carrying the ``flwire-stream`` header (arbitrary bytes, or
  parts built from random fields, some naming a real stream) never break the
  receive loop: each is settled, counted, and a real stream beside them is
  delivered bit-exact or reported dropped;
- StreamAssembler.add, fed any of those, raises nothing and ends holding
  nothing once the streams under way time out.
"""

from __future__ import annotations

import functools
from typing import Any

import blake3
import pytest
import torch
from helpers import pb_tensor, tensor_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import shapes, torch_tensors
from stream_tools import (
    TOPIC,
    FakeClock,
    Logged,
    Received,
    assert_same_weights,
    drain,
    logged,
    random_tensor,
    receiver,
    replay,
    run,
    started,
    stream_values,
    streamed,
)

from flwire import security
from flwire.exceptions import SerializationException
from flwire.messages import client_update, decode_message, heartbeat
from flwire.security import TrustStore, Verifier
from flwire.tensors import EncodeOptions, dtypes
from flwire.tensors.lossy import LossyConfig
from flwire.transport import Channel, InMemoryBroker
from flwire.transport.streaming import STREAM_HEADER, StreamAssembler
from flwire.transport.streaming.format import chunk_part, parse_part, seal_part
from flwire.transport.streaming.writer import head_envelope
from flwire.v1 import tensor_pb2, transfer_pb2

#: The profile's example count (tests/conftest.py: 60 in ci, more when thorough).
PROPS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: The changed-stream property's share: three times as many.
MANY = 3 * PROPS.max_examples
KEY = security.private_key_from_seed(b"\x07" * 32)
TRUST = TrustStore({"client-1": KEY.public_key()})
#: The smallest record limit the tests' messages stream into (head and chunk
#: overhead, the headers), and a spread above it.
LIMITS = st.integers(min_value=1400, max_value=6000)


# ----------------------------------------------------------------------------- round trips


state_dicts = st.dictionaries(
    st.text(max_size=10),
    torch_tensors(shape_strategy=shapes(max_rank=3, max_dim=9)),
    max_size=5,
)


@PROPS
@given(
    weights=state_dicts,
    limit=LIMITS,
    compression=st.sampled_from(["none", "zstd", "lz4"]),
    shuffle=st.booleans(),
    as_numpy=st.booleans(),
)
def test_any_state_dict_arrives_bit_exact(
    weights: dict[str, torch.Tensor],
    limit: int,
    compression: str,
    shuffle: bool,
    as_numpy: bool,
) -> None:
    msg = streamed(weights, compression=compression, shuffle=shuffle)

    async def main() -> tuple[Received, Channel, list[Logged]]:
        broker = InMemoryBroker()
        await Channel(await started(broker, limit)).send_message(TOPIC, msg)
        records = logged(broker)
        channel, got = receiver(broker)
        await drain(channel, got, broker)
        return got, channel, records

    got, channel, records = run(main())
    assert all(len(r.value) <= limit for r in records)
    (delivery,) = got.messages
    assert delivery.message is not None
    assert got.events == [] and channel.stats["bad_records"] == 0
    if as_numpy:
        arrays = delivery.message.tensors(as_numpy=True)
        assert list(arrays) == list(weights)
        for name, want in weights.items():
            got_array = arrays[name]
            assert got_array.shape == tuple(want.shape), name
            assert got_array.dtype.name == str(want.dtype).removeprefix("torch."), name
            assert got_array.tobytes() == _raw(want), name
    else:
        assert_same_weights(delivery.message.tensors(), weights)


def _raw(t: torch.Tensor) -> bytes:
    return tensor_bytes(t)


@st.composite
def finite_tensors(draw: Any) -> torch.Tensor:
    """A float (or int32) tensor of finite values that every lossy method carries."""
    dtype = draw(
        st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32])
    )
    shape = draw(shapes(max_rank=2, max_dim=40))
    count = 1
    for d in shape:
        count *= d
    values = draw(
        st.lists(st.floats(-1000, 1000, allow_nan=False, width=32), min_size=count, max_size=count)
    )
    return torch.tensor(values, dtype=torch.float64).reshape(shape).to(dtype)


lossy_state_dicts = st.dictionaries(st.text(max_size=10), finite_tensors(), max_size=4)
lossy_configs = st.one_of(
    st.builds(LossyConfig, st.sampled_from(["float16", "bfloat16"]), min_elements=st.just(0)),
    st.builds(
        LossyConfig,
        st.just("int8"),
        block_size=st.sampled_from([8, 16, 64]),
        min_elements=st.integers(0, 64),
    ),
    st.builds(
        LossyConfig,
        st.just("topk"),
        topk_fraction=st.sampled_from([0.01, 0.05, 0.125]),
        topk_k=st.none() | st.integers(1, 20),
        min_elements=st.integers(0, 64),
    ),
)


@PROPS
@given(
    weights=lossy_state_dicts,
    lossy=lossy_configs,
    limit=LIMITS,
    compression=st.sampled_from(["none", "zstd"]),
    shuffle=st.booleans(),
)
def test_a_lossy_stream_decodes_as_the_whole_message_does(
    weights: dict[str, torch.Tensor],
    lossy: LossyConfig,
    limit: int,
    compression: str,
    shuffle: bool,
) -> None:
    msg = streamed(weights, compression=compression, shuffle=shuffle, lossy=lossy)
    whole = client_update(
        "client-1",
        1,
        weights,
        num_examples=7,
        options=EncodeOptions(compression=compression, shuffle=shuffle, lossy=lossy),
    )
    want = decode_message(whole.to_bytes()).tensors(as_numpy=True)

    async def main() -> tuple[Received, list[Logged]]:
        broker = InMemoryBroker()
        await Channel(await started(broker, limit)).send_message(TOPIC, msg)
        records = logged(broker)
        channel, got = receiver(broker)
        await drain(channel, got, broker)
        return got, records

    got, records = run(main())
    assert all(len(r.value) <= limit for r in records)
    (delivery,) = got.messages
    assert delivery.message is not None and got.events == []
    arrays = delivery.message.tensors(as_numpy=True)
    assert list(arrays) == list(weights)
    for name, tensor in weights.items():
        out, ref = arrays[name], want[name]
        assert out.shape == ref.shape and out.dtype == ref.dtype, name
        if lossy.method != "topk":
            assert out.tobytes() == ref.tobytes(), name  # the same blocks, the same rounding
            continue
        # Top-k keeps the largest of each chunk: each element exact or +0.
        exact = tensor_bytes(tensor)
        width = out.dtype.itemsize
        for i in range(out.size):
            value = out.tobytes()[i * width : (i + 1) * width]
            assert value in (exact[i * width : (i + 1) * width], bytes(width)), (name, i)


# ----------------------------------------------------------------------------- changed streams


WEIGHTS = {
    "w": random_tensor(torch.float32, (1500,), 11),
    "h": random_tensor(torch.bfloat16, (900,), 12, compressible=True),
    "s": torch.tensor(7, dtype=torch.int16),
}


#: A stream with lossy chunks: "w" cast to bfloat16 (finite values, which the
#: cast carries), the rest exact.
LOSSY = LossyConfig("bfloat16", min_elements=100)
LOSSY_WEIGHTS = {**WEIGHTS, "w": torch.linspace(-3.0, 3.0, 1500)}


def _expected(lossy: bool) -> dict[str, torch.Tensor]:
    """The tensors the stream of :func:`_base` decodes to."""
    if not lossy:
        return WEIGHTS
    return {**LOSSY_WEIGHTS, "w": LOSSY_WEIGHTS["w"].to(torch.bfloat16).to(torch.float32)}


@functools.cache
def _base(signed: bool, lossy: bool = False) -> tuple[Logged, ...]:
    """The records of one real stream (about ten), signed or not, lossy or not."""
    msg = streamed(
        LOSSY_WEIGHTS if lossy else WEIGHTS,
        compression="zstd",
        shuffle=True,
        lossy=LOSSY if lossy else None,
    )
    if signed:
        security.sign_in_place(msg, "client-1", KEY)

    async def main() -> list[Logged]:
        broker = InMemoryBroker()
        await Channel(await started(broker, 2000)).send_message(TOPIC, msg)
        return logged(broker)

    return tuple(run(main()))


def _transfer_id(records: tuple[Logged, ...] | list[Logged]) -> str:
    return dict(records[0].headers)["flwire-message-id"].decode()


@st.composite
def changes(draw: Any, records: tuple[Logged, ...]) -> tuple[str, list[Logged]]:
    """A kind of change and the records with it applied to one of them."""
    kind = draw(st.sampled_from(["flip", "flip", "flip", "truncate", "drop", "duplicate", "swap"]))
    out = list(records)
    last = len(out) - 1
    top = last - 1 if kind == "swap" else last
    # The head and the seal (which no chunk check covers) as often as the rest.
    i = draw(st.sampled_from([0, top]) | st.integers(0, top))
    rec = out[i]
    if kind == "flip":
        pos = draw(st.integers(0, len(rec.value) - 1))
        mask = draw(st.integers(1, 255))
        value = bytearray(rec.value)
        value[pos] ^= mask
        out[i] = Logged(rec.key, bytes(value), rec.headers)
    elif kind == "truncate":
        size = draw(st.integers(0, len(rec.value) - 1))
        out[i] = Logged(rec.key, rec.value[:size], rec.headers)
    elif kind == "drop":
        del out[i]
    elif kind == "duplicate":
        at = draw(st.integers(i + 1, len(out)))
        out.insert(at, rec)
    else:
        out[i], out[i + 1] = out[i + 1], out[i]
    return kind, out


@settings(PROPS, max_examples=MANY)
@given(data=st.data(), signed=st.booleans(), lossy=st.booleans())
def test_a_changed_stream_is_delivered_unchanged_or_not_at_all(
    data: Any, signed: bool, lossy: bool
) -> None:
    base = _base(signed, lossy)
    kind, records = data.draw(changes(base))
    ident = _transfer_id(base)
    verifier = Verifier(TRUST) if signed else None

    async def main() -> tuple[Received, Channel, InMemoryBroker]:
        broker = InMemoryBroker()
        await replay(broker, records)
        clock = FakeClock()
        channel, got = receiver(broker, streams=StreamAssembler(clock=clock, threads=1))
        await drain(
            channel, got, broker, expire_with=clock, verifier=verifier, marker=_signed_marker
        )
        return got, channel, broker

    got, channel, broker = run(main())
    delivered = got.messages
    if kind == "duplicate":
        (delivery,) = delivered
        assert delivery.message is not None
        assert_same_weights(delivery.message.tensors(), _expected(lossy))
        assert channel.stats["duplicates"] == 1 and got.dropped == []
    else:
        assert delivered == [], kind
        reported = {e.transfer_id for e in got.dropped}
        refused = channel.stats["refused"]
        assert ident in reported or refused == 1, (kind, got.events, channel.stats)
    # Every record was settled: the offsets moved past all of them.
    assert broker.committed[("g", TOPIC)] == len(broker.topics[TOPIC])


def _signed_marker() -> bytes:
    """An end marker a verifying receiver admits: a signed heartbeat."""
    return security.sign_message(heartbeat("client-1"), "client-1", KEY)


async def _assemble(values: list[bytes]) -> tuple[list[Any], set[str]]:
    """Feed ``values`` to an assembler, then time out what is under way: the
    messages finished, and the transfer ids given up on."""
    clock = FakeClock()
    asm = StreamAssembler(clock=clock, threads=1)
    finished, dropped = [], set()
    for token, value in enumerate(values):
        done, failed = await asm.add(value, token)
        finished += [done.message] if done is not None else []
        dropped |= {f.transfer_id for f in failed if not f.duplicate}
    clock.advance(asm.part_timeout)
    dropped |= {f.transfer_id for f in asm.expire()}
    assert asm.pending_bytes == 0
    return finished, dropped


@pytest.mark.parametrize(("signed", "lossy"), [(False, False), (True, False), (False, True)])
def test_every_byte_flip_in_a_head_seal_or_chunk_header_is_caught(
    signed: bool, lossy: bool
) -> None:
    """Exhaustively, for the bytes no chunk's own CRC-32C covers: the head, the
    seal, and the first 80 bytes (its fields and tensor header) and the last 16
    (a lossy chunk's ``lossy`` field, after its data) of the first, a middle and
    the last chunk."""
    values = [r.value for r in _base(signed, lossy)]
    ident = _transfer_id(_base(signed, lossy))
    flips = [(0, p) for p in range(len(values[0]))]
    flips += [(len(values) - 1, p) for p in range(len(values[-1]))]
    chunks = sorted({1, len(values) // 2, len(values) - 2})
    flips += [(i, p) for i in chunks for p in range(min(80, len(values[i])))]
    flips += [(i, p) for i in chunks for p in range(max(80, len(values[i]) - 16), len(values[i]))]

    async def main() -> list[tuple[int, int, str]]:
        escaped = []
        for i, p in flips:
            changed = list(values)
            value = bytearray(values[i])
            value[p] ^= 0x10
            changed[i] = bytes(value)
            finished, dropped = await _assemble(changed)
            verifier = Verifier(TRUST, timestamp_window_s=None)
            admitted = [m for m in finished if not signed or _admitted(verifier, m, changed)]
            if admitted:
                escaped.append((i, p, "delivered"))
            elif not finished and ident not in dropped:
                escaped.append((i, p, "not reported"))
        return escaped

    assert run(main(), timeout=120) == []


def _admitted(verifier: Verifier, msg: Any, values: list[bytes]) -> bool:
    """Whether a finished signed stream verifies (its digest recomputed)."""
    seal = parse_part(values[-1]).seal
    assert seal is not None
    digest = blake3.blake3(b"".join(values[:-1])).digest(length=32)
    return verifier.admit_streamed(msg, seal.signature, digest) is not None


# ----------------------------------------------------------------------------- hostile records


def _envelope_for(ident: str) -> Any:
    msg = streamed({"w": torch.zeros(2)})
    envelope = head_envelope(msg)
    envelope.message_id = ident
    return envelope


@st.composite
def forged_parts(draw: Any, ids: list[str]) -> bytes:
    """A StreamPart built from random fields: a head, chunk or seal of one of
    ``ids`` at a small index, with plausible or arbitrary contents."""
    ident = draw(st.sampled_from(ids))
    kind = draw(st.sampled_from(["head", "chunk", "seal", "bytes"]))
    if kind == "bytes":
        return bytes(draw(st.binary(max_size=64)))
    index = draw(st.integers(0, 6))
    if kind == "head":
        infos = draw(
            st.lists(
                st.builds(
                    transfer_pb2.TensorInfo,
                    name=st.sampled_from(["w", "b", "", "x"]),
                    dtype=st.integers(0, 24),
                    shape=st.lists(
                        st.integers(0, 5) | st.sampled_from([2**40, 2**63, 2**64 - 1]),
                        max_size=3,
                    ),
                ),
                max_size=3,
            )
        )
        head = transfer_pb2.StreamHead(
            envelope=_envelope_for(draw(st.sampled_from([ident, "other"]))),
            tensors=infos,
            signed=draw(st.booleans()),
        )
        return transfer_pb2.StreamPart(
            transfer_id=ident, part_index=index, head=head
        ).SerializeToString()
    if kind == "chunk":
        info = dtypes.BY_WIRE[draw(st.sampled_from([1, 2, 4, 10, 17]))]
        count = draw(st.integers(0, 6))
        raw = draw(st.binary(min_size=count * info.itemsize, max_size=count * info.itemsize))
        tensor = pb_tensor(
            draw(st.sampled_from(["", "w"])),
            info,
            (count,),
            raw,
            zstd_level=draw(st.sampled_from([None, 1])),
        )
        if draw(st.booleans()):
            tensor.crc32c ^= draw(st.integers(0, 1))
        elements = tensor_pb2.TensorMap(tensors=[tensor]).SerializeToString()
        if draw(st.booleans()):
            elements = draw(st.binary(max_size=40))
        return chunk_part(
            ident, max(index, 1), draw(st.integers(0, 3)), draw(st.integers(0, 8)), [elements]
        )
    return seal_part(ident, max(index, 1), draw(st.integers(0, 2**32 - 1)))


@PROPS
@given(data=st.data())
def test_hostile_records_never_break_the_receive_loop(data: Any) -> None:
    base = _base(False)
    ident = _transfer_id(base)
    hostile = data.draw(st.lists(forged_parts([ident, "a", "b" * 128]), max_size=8))
    indexes = data.draw(
        st.lists(st.text(max_size=4) | st.sampled_from(["0", "1", "99"]), min_size=len(hostile))
    )
    # Each hostile record goes somewhere among the real stream's records.
    slots = data.draw(
        st.lists(st.integers(0, len(base)), min_size=len(hostile), max_size=len(hostile))
    )
    records = list(base)
    for value, slot, header in sorted(
        zip(hostile, slots, indexes, strict=False), key=lambda x: -x[1]
    ):
        records.insert(slot, Logged(b"k", value, [(STREAM_HEADER, header.encode())]))

    async def main() -> tuple[Received, Channel, InMemoryBroker]:
        broker = InMemoryBroker()
        await replay(broker, records)
        clock = FakeClock()
        channel, got = receiver(broker, streams=StreamAssembler(clock=clock, threads=1))
        await drain(channel, got, broker, expire_with=clock)
        return got, channel, broker

    got, channel, broker = run(main())
    stats = channel.stats
    # The real stream: whole, or reported; nothing else handed out.
    for delivery in got.messages:
        assert delivery.message is not None
        assert delivery.message.message_id == ident
        assert_same_weights(delivery.message.tensors(), WEIGHTS)
    if not got.messages:
        assert ident in {e.transfer_id for e in got.dropped}
    assert len(got.messages) <= 1
    # Every hostile record was counted as something, and every record settled.
    if hostile:
        assert stats["bad_records"] + stats["dropped_transfers"] + stats["duplicates"] >= 1
    assert stats["received_parts"] == len(records)
    assert broker.committed[("g", TOPIC)] == len(broker.topics[TOPIC])
    assert channel.streams.pending_streams == 0 and channel.streams.pending_bytes == 0


@PROPS
@given(value=st.binary(max_size=300))
def test_parse_part_returns_a_part_or_raises_serialization_exception(value: bytes) -> None:
    try:
        part = parse_part(value)
    except SerializationException as exc:
        assert str(exc)
        return
    items = [part.head, part.chunk, part.seal]
    assert sum(item is not None for item in items) == 1
    assert part.transfer_id and (part.index == 0) == (part.head is not None)


@PROPS
@given(
    values=st.lists(
        st.binary(max_size=200) | forged_parts(["a", "b"]),
        max_size=12,
    )
)
def test_the_assembler_takes_any_record_values(values: list[bytes]) -> None:
    async def main() -> StreamAssembler:
        clock = FakeClock()
        asm = StreamAssembler(clock=clock, threads=1)
        for token, value in enumerate(values):
            done, failed = await asm.add(value, token)
            for f in failed:
                assert f.tokens and f.reason
            if done is not None:
                done.message.tensors(as_numpy=True)
        clock.advance(asm.part_timeout)
        asm.expire()
        return asm

    asm = run(main())
    assert asm.pending_streams == 0 and asm.pending_bytes == 0


@PROPS
@given(limit=LIMITS, data=st.data())
def test_stream_writer_records_fit_their_limit_and_reassemble(limit: int, data: Any) -> None:
    """The writer alone: every record value within ``limit``, and the values,
    fed to an assembler in order, give the state dict back."""
    weights = data.draw(state_dicts)
    msg = streamed(weights, compression=data.draw(st.sampled_from(["none", "zstd", "lz4"])))

    async def main() -> Any:
        values = await stream_values(msg, limit)
        assert all(len(v) <= limit for v in values)
        asm = StreamAssembler(threads=1)
        done = None
        for token, value in enumerate(values):
            done, failed = await asm.add(value, token)
            assert failed == []
        return done, len(values)

    done, count = run(main())
    assert done is not None and done.tokens == list(range(count))
    assert_same_weights(done.message.tensors(), weights)
