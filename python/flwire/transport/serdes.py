"""flwire messages as confluent-kafka serializers: ``(obj, SerializationContext)`` callables.

    producer = SerializingProducer({..., "value.serializer": FlwireSerializer()})
    consumer = DeserializingConsumer({..., "value.deserializer": FlwireDeserializer()})

These send each message as one record, so they suit messages under the
broker's limit; use a Channel (or AsyncKafkaClient) for weights above it.
"""

from __future__ import annotations

from typing import Any

from flwire.messages import Message, decode_message


class FlwireSerializer:
    """Serializes a :class:`Message` (or passes bytes through) to its wire form."""

    def __call__(
        self, obj: Message | bytes | bytearray | memoryview | None, ctx: Any = None
    ) -> bytes | None:
        if obj is None:
            return None
        if isinstance(obj, Message):
            return obj.to_bytes()
        return bytes(obj)


class FlwireDeserializer:
    """Deserializes record values to validated :class:`Message` objects."""

    def __call__(self, data: bytes | None, ctx: Any = None) -> Message | None:
        if data is None:
            return None
        return decode_message(data)
