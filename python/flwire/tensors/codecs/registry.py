"""The one registry of frame codecs, by name and by wire enum value."""

from __future__ import annotations

from flwire.exceptions import SerializationException
from flwire.tensors.codecs.base import FrameCodec

_BY_NAME: dict[str, FrameCodec] = {}
_BY_WIRE: dict[int, FrameCodec] = {}

#: The name of "no codec" (``CODEC_UNSPECIFIED``): data stored as it is.
NONE = "none"


def register(codec: FrameCodec) -> FrameCodec:
    """Add a codec; its name and wire value must both be new."""
    if codec.name in _BY_NAME or codec.name == NONE or codec.wire in _BY_WIRE or not codec.wire:
        raise ValueError(f"codec {codec.name!r} (wire value {codec.wire}) is already taken")
    _BY_NAME[codec.name] = codec
    _BY_WIRE[codec.wire] = codec
    return codec


def by_name(name: str) -> FrameCodec:
    """The codec called ``name``; SerializationException listing the known ones."""
    codec = _BY_NAME.get(name)
    if codec is None:
        raise SerializationException(
            f"unknown compression {name!r}; use one of {', '.join(compression_names())}"
        )
    return codec


def by_wire(value: int) -> FrameCodec | None:
    """The codec with ``flwire.v1.Codec`` value ``value``, or None."""
    return _BY_WIRE.get(value)


def names() -> tuple[str, ...]:
    """Names of the registered frame codecs, in registration order."""
    return tuple(_BY_NAME)


def compression_names() -> tuple[str, ...]:
    """Every value ``EncodeOptions.compression`` accepts: the codecs and ``"none"``."""
    return (*_BY_NAME, NONE)
