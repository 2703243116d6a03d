"""Streamed transfers (wire format section 14.5): a message's weights of any
size, sent as they are encoded and decoded as they arrive.

    msg = client_update("client-1", round_id=3, weights=model.state_dict(),
                        num_examples=n, options=EncodeOptions(stream=True))
    await channel.send_message(topic, msg)          # head, chunks, seal
    async for delivery in channel.receive([topic], "server"):
        state = delivery.message.tensors()          # decoded as the chunks came

Modules: :mod:`.format` (the records), :mod:`.writer`, :mod:`.reader` (their
worker threads are the tensor codec's, :func:`flwire.tensors.parallel.executor`).
"""

from flwire.transport.streaming.format import STREAM_HEADER
from flwire.transport.streaming.reader import Failed, Finished, StreamAssembler
from flwire.transport.streaming.writer import StreamWriter

__all__ = ["STREAM_HEADER", "Failed", "Finished", "StreamAssembler", "StreamWriter"]
