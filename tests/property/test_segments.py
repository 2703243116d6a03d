"""A payload given as pieces (a message's buffers) is split into exactly the parts
of its concatenation, and Channel.send_message never joins a message it splits."""

from __future__ import annotations

import asyncio

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from flwire import messages
from flwire._protowire import Segments
from flwire.messages import Message
from flwire.transport import Channel, InMemoryBroker, InMemoryTransport
from flwire.transport.chunking import split_payload

PIECES = st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=8).filter(
    lambda p: sum(map(len, p)) > 0
)


@settings(max_examples=200, deadline=None)
@given(
    pieces=PIECES, limit=st.integers(560, 900), start=st.integers(0, 2000), size=st.integers(0, 900)
)
def test_pieces_split_like_their_concatenation(pieces, limit, start, size) -> None:
    whole = b"".join(pieces)
    segs = Segments(pieces)
    assert len(segs) == len(whole) and segs.join() == whole
    assert b"".join(segs.pieces(start, start + size)) == whole[start : start + size]
    from_pieces = list(split_payload(segs, "t", limit))
    assert from_pieces == list(split_payload(whole, "t", limit))


def test_send_message_splits_without_joining_the_message(monkeypatch) -> None:
    def no_join(self: Message) -> bytes:
        raise AssertionError("the message was joined before it was split")

    msg = messages.client_update("c", 1, {"w": np.arange(40_000, dtype=np.float32)}, num_examples=1)
    blob = msg.to_bytes()

    async def main() -> bytes:
        transport = InMemoryTransport(InMemoryBroker(), max_record_bytes=16_384)
        await transport.start()
        channel = Channel(transport)
        monkeypatch.setattr(Message, "to_bytes", no_join)
        size = await channel.send_message("t", msg)
        monkeypatch.undo()
        assert size == len(blob) and channel.stats["sent_parts"] > 1
        async for delivery in channel.receive(["t"], "g", dedupe=False):
            await delivery.done()
            return bytes(delivery.payload)
        raise AssertionError("nothing received")

    assert asyncio.run(main()) == blob
