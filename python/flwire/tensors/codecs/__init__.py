"""Frame codecs: the compressions a tensor's data may use, behind one registry.

Each codec (:class:`FrameCodec`) has a name, a ``flwire.v1.Codec`` value, and
knows how to compress a frame, walk a frame's headers without decompressing
it, and decompress a frame into a buffer of its declared size. zstd and LZ4
are registered here; the frame rules they share are in :mod:`.base`.
"""

from flwire.tensors.codecs.base import FRAME_BYTES, MIN_FRAME_BYTES, Frame, FrameCodec, frame_bounds
from flwire.tensors.codecs.lz4 import Lz4Codec
from flwire.tensors.codecs.registry import (
    NONE,
    by_name,
    by_wire,
    compression_names,
    names,
    register,
)
from flwire.tensors.codecs.zstd import ZstdCodec

ZSTD = register(ZstdCodec())
LZ4 = register(Lz4Codec())

__all__ = [
    "FRAME_BYTES",
    "LZ4",
    "MIN_FRAME_BYTES",
    "NONE",
    "ZSTD",
    "Frame",
    "FrameCodec",
    "Lz4Codec",
    "ZstdCodec",
    "by_name",
    "by_wire",
    "compression_names",
    "frame_bounds",
    "names",
    "register",
]
