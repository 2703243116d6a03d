"""flwire messages as confluent-kafka serializers: ``(obj, SerializationContext)`` callables.

    producer = SerializingProducer({..., "value.serializer": FlwireSerializer()})
    consumer = DeserializingConsumer({..., "value.deserializer": FlwireDeserializer()})

These send each message as one record, so they suit messages under the
broker's limit; use a Channel (or AsyncKafkaClient) for weights above it. A
record that is one part of a split message (header ``flwire-part``, written by
a Channel) is refused by the deserializer with an error that says so, and so
is a part of a streamed transfer (header ``flwire-stream``): only
``Channel.receive`` (or ``AsyncKafkaClient.subscribe_to_topic``) reassembles
parts and decodes streams. Like confluent-kafka's own serializers, the serializer refuses values
of other types (``SerializationError`` in confluent-kafka's producer, which
wraps the ``SerializationException`` raised here).
"""

from __future__ import annotations

from typing import Any

from flwire.exceptions import CommunicationException, SerializationException
from flwire.messages import Message, decode_message
from flwire.transport.base import last_header
from flwire.transport.chunking import PART_HEADER, parse_part
from flwire.transport.streaming import STREAM_HEADER
from flwire.transport.streaming.format import parse_part as parse_stream_part


class FlwireSerializer:
    """Serializes a :class:`Message` (or passes bytes through) to its wire form."""

    def __call__(
        self, obj: Message | bytes | bytearray | memoryview | None, ctx: Any = None
    ) -> bytes | None:
        if obj is None:
            return None
        if isinstance(obj, Message):
            return obj.to_bytes()
        if isinstance(obj, bytes | bytearray | memoryview):
            return bytes(obj)
        raise SerializationException(
            f"FlwireSerializer takes a flwire Message or bytes, not {type(obj).__name__}"
        )


class FlwireDeserializer:
    """Deserializes record values to validated :class:`Message` objects."""

    def __call__(self, data: bytes | None, ctx: Any = None) -> Message | None:
        if data is None:
            return None
        headers = getattr(ctx, "headers", None) or []
        if last_header(list(headers), PART_HEADER) is not None:
            raise SerializationException(_PART_REFUSED)
        if last_header(list(headers), STREAM_HEADER) is not None:
            raise SerializationException(_STREAM_REFUSED)
        try:
            return decode_message(data)
        except SerializationException:
            # No headers in the context: recognise the part itself.
            refusal = _part_refusal(data)
            if refusal is not None:
                raise SerializationException(refusal) from None
            raise


_PART_REFUSED = (
    "this record is one part of a message split above the record limit; "
    "FlwireDeserializer reads whole messages only: receive with "
    "flwire.transport.Channel.receive (or AsyncKafkaClient.subscribe_to_topic), "
    "which reassembles parts"
)


_STREAM_REFUSED = (
    "this record is one part of a streamed transfer (a model sent with "
    "EncodeOptions(stream=True)); FlwireDeserializer reads whole messages only: receive "
    "with flwire.transport.Channel.receive (or AsyncKafkaClient.subscribe_to_topic), "
    "which decodes streams"
)


def _part_refusal(data: bytes) -> str | None:
    """Why ``data``, not a message, is refused when it parses as a transfer part
    or a stream part; None when it is neither."""
    for parse, refusal in ((parse_part, _PART_REFUSED), (parse_stream_part, _STREAM_REFUSED)):
        try:
            parse(data)
        except (SerializationException, CommunicationException):
            continue
        return refusal
    return None
