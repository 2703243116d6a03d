"""Signed streamed transfers (wire format sections 14.3 and 14.5): the seal
carries an Ed25519 signature of the BLAKE3 digest of every record before it.
Signed with sign_in_place and received through Channel.receive(verifier=...):
admitted when it verifies; refused, with its reason, when unsigned (signatures
required), signed by an unknown or another key, or changed (even with the
stream's CRC-32C fixed up); a seal whose signature the head did not announce
(or the reverse) ends the transfer."""

from __future__ import annotations

import struct
import time
from typing import Any

import blake3
import crc32c
import numpy as np
import pytest
import torch
from stream_tools import (
    TOPIC,
    Logged,
    Received,
    assert_same_weights,
    consume,
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
from flwire.exceptions import SenderMismatchError, SignatureError
from flwire.messages import Message
from flwire.security import TrustStore, Verifier
from flwire.security.signing import StreamSigner, verify_stream
from flwire.tensors import encode_tensor_map
from flwire.tensors.decode import read_chunk
from flwire.transport import Channel, InMemoryBroker
from flwire.transport.streaming import StreamAssembler
from flwire.transport.streaming.format import chunk_part, head_part, parse_part, seal_part
from flwire.v1 import transfer_pb2

KEYS = {
    name: security.private_key_from_seed(bytes([i + 1]) * 32)
    for i, name in enumerate(["client-1", "client-2", "mallory"])
}
WEIGHTS = {
    "w": random_tensor(torch.float32, (3000,), 1),
    "b": random_tensor(torch.bfloat16, (7,), 2),
}


def _trust(*names: str) -> TrustStore:
    return TrustStore({n: KEYS[n].public_key() for n in names})


def _signed(sender: str = "client-1", key: str | None = None, **kw: Any) -> Message:
    msg = streamed(WEIGHTS, sender=sender, compression="zstd", **kw)
    security.sign_in_place(msg, key or sender, KEYS[key or sender])
    return msg


async def _stream_records(msg: Message) -> list[Logged]:
    """The records ``msg`` streams as (key, value, headers)."""
    broker = InMemoryBroker()
    await Channel(await started(broker)).send_message(TOPIC, msg)
    return logged(broker)


async def _receive(
    records: list[Logged], verifier: Verifier | None, **channel_args: Any
) -> tuple[Channel, Received, InMemoryBroker]:
    """Write ``records``, then receive until a message is handed out, refused
    or dropped."""
    broker = InMemoryBroker()
    await replay(broker, records)
    channel, got = receiver(broker, **channel_args)

    def settled() -> bool:
        stats = channel.stats
        return bool(got.deliveries) or stats["refused"] > 0 or stats["dropped_transfers"] > 0

    await consume(channel, got, settled, verifier=verifier)
    return channel, got, broker


def _refused(records: list[Logged], verifier: Verifier) -> tuple[Channel, InMemoryBroker]:
    channel, got, broker = run(_receive(records, verifier))
    assert got.deliveries == [] and got.events == []
    assert channel.stats["refused"] == 1 and channel.stats["received_streams"] == 1
    return channel, broker


def _with_value(records: list[Logged], index: int, value: bytes) -> list[Logged]:
    out = list(records)
    out[index] = Logged(records[index].key, value, records[index].headers)
    return out


def _refit_seal(records: list[Logged]) -> list[Logged]:
    """The records with the seal's CRC-32C fixed up for what comes before it,
    its signature kept (what a forger who cannot sign would do)."""
    seal = parse_part(records[-1].value)
    assert seal.seal is not None
    values = [r.value for r in records[:-1]]
    fixed = seal_part(
        seal.transfer_id, seal.index, crc32c.crc32c(b"".join(values)), seal.seal.signature
    )
    return _with_value(records, len(records) - 1, fixed)


# ----------------------------------------------------------------------------- admitted


def test_a_signed_stream_is_admitted() -> None:
    msg = _signed()
    records = run(_stream_records(msg))
    verifier = Verifier(_trust("client-1"))
    channel, got, broker = run(_receive(records, verifier))
    (delivery,) = got.deliveries
    assert delivery.message is not None
    assert delivery.message.message_id == msg.message_id
    assert_same_weights(delivery.message.tensors(), WEIGHTS)
    assert channel.stats["refused"] == 0 and not verifier.refusals
    # The head announced it, the seal carries it, under the sender's key id.
    head, seal = parse_part(records[0].value), parse_part(records[-1].value)
    assert head.head is not None and head.head.signed
    assert seal.seal is not None and seal.seal.signature.key_id == "client-1"
    assert broker.committed[("g", TOPIC)] == len(records)


def test_the_seal_signs_the_blake3_of_the_records_under_the_stream_domain() -> None:
    """Checked with blake3 and the public key directly, as section 14.5 says:
    domain, uint32le algorithm, key id length and bytes, BLAKE3-256 of the
    record values before the seal."""
    msg = _signed()
    values = run(stream_values(msg))
    seal = parse_part(values[-1]).seal
    assert seal is not None
    digest = blake3.blake3(b"".join(values[:-1])).digest(length=32)
    signed = (
        b"flwire.v1 stream signature\x00" + struct.pack("<I", 1) + bytes([8]) + b"client-1" + digest
    )
    KEYS["client-1"].public_key().verify(seal.signature.signature, signed)  # raises if not
    assert verify_stream(seal.signature, digest, _trust("client-1")) == "client-1"
    # The assembler hands out the same digest with the signature.
    asm = StreamAssembler(threads=1)

    async def feed() -> Any:
        for i, value in enumerate(values):
            done, failed = await asm.add(value, i)
            assert failed == []
        return done

    done = run(feed())
    assert done.digest == digest and done.signature == seal.signature


def test_a_signed_stream_without_a_verifier_is_delivered() -> None:
    records = run(_stream_records(_signed()))
    _, got, _ = run(_receive(records, None))
    (delivery,) = got.deliveries
    assert delivery.message is not None
    assert_same_weights(delivery.message.tensors(), WEIGHTS)


def test_an_unsigned_stream_is_admitted_when_signatures_are_optional() -> None:
    records = run(_stream_records(streamed(WEIGHTS)))
    verifier = Verifier(_trust("client-1"), require_signatures=False)
    _, got, _ = run(_receive(records, verifier))
    assert len(got.deliveries) == 1 and not verifier.refusals


def test_sign_in_place_refuses_another_senders_key_and_a_second_signature() -> None:
    msg = streamed(WEIGHTS, sender="client-1")
    with pytest.raises(SenderMismatchError):
        security.sign_in_place(msg, "client-2", KEYS["client-2"])
    security.sign_in_place(msg, "client-1", KEYS["client-1"])
    with pytest.raises(Exception, match="signed already"):
        security.sign_in_place(msg, "client-1", KEYS["client-1"])


# ----------------------------------------------------------------------------- refused


def test_an_unsigned_stream_is_refused_when_signatures_are_required() -> None:
    records = run(_stream_records(streamed(WEIGHTS)))
    verifier = Verifier(_trust("client-1"))
    _, broker = _refused(records, verifier)
    assert verifier.refusals == {"unsigned": 1}
    assert broker.committed[("g", TOPIC)] == len(records)  # settled, not redelivered


def test_a_stream_signed_by_an_unknown_key_is_refused() -> None:
    records = run(_stream_records(_signed("mallory")))
    verifier = Verifier(_trust("client-1"))
    _refused(records, verifier)
    assert verifier.refusals == {"unknown_key": 1}


def test_a_stream_signed_with_another_senders_key_is_refused() -> None:
    """client-2 signs a stream that says it is client-1's (built by hand:
    sign_in_place refuses to)."""
    msg = streamed(WEIGHTS, sender="client-1")
    values = run(stream_values(msg))
    signer = StreamSigner("client-2", KEYS["client-2"])
    head = parse_part(values[0])
    assert head.head is not None
    head.head.signed = True
    new_head = transfer_pb2.StreamPart(transfer_id=head.transfer_id, head=head.head)
    forged = [new_head.SerializeToString(), *values[1:-1]]
    for value in forged:
        signer.update(value)
    seal = seal_part(msg.message_id, len(forged), crc32c.crc32c(b"".join(forged)), signer.finish())
    records = [Logged(b"client-1", v, [("flwire-stream", b"0")]) for v in [*forged, seal]]
    verifier = Verifier(_trust("client-1", "client-2"))
    _refused(records, verifier)
    assert verifier.refusals == {"sender_mismatch": 1}


def test_a_stale_signed_stream_is_refused() -> None:
    msg = streamed(WEIGHTS)
    msg.envelope.timestamp.FromSeconds(int(time.time()) - 3600)
    security.sign_in_place(msg, "client-1", KEYS["client-1"])
    records = run(_stream_records(msg))
    verifier = Verifier(_trust("client-1"))
    _refused(records, verifier)
    assert verifier.refusals == {"timestamp": 1}


@pytest.mark.parametrize("part", ["head", "chunk", "last_chunk"])
def test_a_changed_part_with_its_crc_fixed_up_is_refused(part: str) -> None:
    """A forger rewrites a part and fixes the seal's CRC-32C: the transfer
    completes, and the signature refuses it."""
    msg = _signed()
    records = run(_stream_records(msg))
    # The last chunk of one tensor (a packed chunk's forgery would need its
    # other tensors re-encoded too).
    singles = [
        i
        for i, r in enumerate(records[1:-1], 1)
        if len(read_chunk(parse_part(r.value).chunk.elements)) == 1  # type: ignore[union-attr]
    ]
    index = {"head": 0, "chunk": 1, "last_chunk": singles[-1]}[part]
    parsed = parse_part(records[index].value)
    if parsed.head is not None:
        parsed.head.envelope.client_update.num_examples += 1
        value = transfer_pb2.StreamPart(
            transfer_id=parsed.transfer_id, head=parsed.head
        ).SerializeToString()
    else:
        chunk = parsed.chunk
        assert chunk is not None
        (rec,) = read_chunk(chunk.elements)
        source = msg.sources[chunk.tensor_index]  # type: ignore[index]
        width = source.dtype.itemsize
        start = chunk.element_offset
        changed = source.raw[start * width : (start + rec.numel) * width].copy()
        changed[0] ^= 0x01
        array = changed.view(np.uint8)
        elements = encode_tensor_map(
            {"": torch.from_numpy(array.copy()).view(getattr(torch, source.dtype.name))},
            compression="none",
        )
        value = chunk_part(parsed.transfer_id, parsed.index, chunk.tensor_index, start, [elements])
    forged = _refit_seal(_with_value(records, index, value))
    verifier = Verifier(_trust("client-1"))
    _refused(forged, verifier)
    assert verifier.refusals == {"bad_signature": 1}


@pytest.mark.parametrize("where", ["head", "chunk", "seal_signature"])
def test_a_changed_byte_in_a_signed_stream_is_never_delivered(where: str) -> None:
    records = run(_stream_records(_signed()))
    index = {"head": 0, "chunk": 2, "seal_signature": len(records) - 1}[where]
    value = bytearray(records[index].value)
    # The last bytes of the seal are its signature's; elsewhere, the middle.
    position = len(value) - 3 if where == "seal_signature" else len(value) // 2
    value[position] ^= 0x20
    changed = _with_value(records, index, bytes(value))
    verifier = Verifier(_trust("client-1"))
    channel, got, _ = run(_receive(changed, verifier))
    assert got.deliveries == []
    if where == "seal_signature":
        assert verifier.refusals == {"bad_signature": 1}
    else:
        # Caught before the signature: the transfer is given up on, reported.
        assert channel.stats["dropped_transfers"] == 1
        (event,) = got.dropped
        assert event.transfer_id == parse_part(records[0].value).transfer_id


# ----------------------------------------------------------------------------- head vs seal


def _parts_signed_mismatch(head_signed: bool) -> list[bytes]:
    msg = streamed({"w": np.arange(10, dtype=np.float32)})
    values = run(stream_values(msg))
    head = parse_part(values[0]).head
    assert head is not None
    new_head = head_part(msg.message_id, head.envelope, list(head.tensors), signed=head_signed)
    body = [new_head, *values[1:-1]]
    signature = None
    if not head_signed:
        signer = StreamSigner("client-1", KEYS["client-1"])
        for value in body:
            signer.update(value)
        signature = signer.finish()
    seal = seal_part(msg.message_id, len(body), crc32c.crc32c(b"".join(body)), signature)
    return [*body, seal]


@pytest.mark.parametrize(
    ("head_signed", "reason"),
    [
        (True, "the head announced a signature the seal does not carry"),
        (False, "the seal carries a signature the head did not announce"),
    ],
)
def test_head_and_seal_must_agree_on_a_signature(head_signed: bool, reason: str) -> None:
    values = _parts_signed_mismatch(head_signed)
    asm = StreamAssembler(threads=1)

    async def feed() -> list[Any]:
        out = []
        for i, value in enumerate(values):
            out.append(await asm.add(value, i))
        return out

    results = run(feed())
    assert all(done is None for done, _ in results)
    failures = [f for _, failed in results for f in failed]
    (failure,) = failures
    assert failure.reason == reason and failure.tokens == list(range(len(values)))
    # Over a channel (signatures not even required): dropped and reported.
    records = [Logged(b"client-1", v, [("flwire-stream", b"0")]) for v in values]
    channel, got, _ = run(_receive(records, None))
    assert got.deliveries == [] and channel.stats["dropped_transfers"] == 1
    (event,) = got.dropped
    assert event.reason == reason


def test_verify_stream_refuses_what_is_not_signed_or_not_trusted() -> None:
    digest = bytes(32)
    with pytest.raises(SignatureError, match="the streamed message is not signed"):
        verify_stream(None, None, _trust("client-1"))
    assert verify_stream(None, None, _trust("client-1"), required=False) is None
    signer = StreamSigner("mallory", KEYS["mallory"])
    signature = signer.finish()
    with pytest.raises(SignatureError, match="signed with unknown key 'mallory'"):
        verify_stream(signature, digest, _trust("client-1"))
    with pytest.raises(SignatureError, match="does not verify"):
        verify_stream(signature, digest, _trust("mallory"))  # another digest
