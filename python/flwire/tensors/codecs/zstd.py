"""Zstandard frames (RFC 8878): ``CODEC_ZSTD``."""

from __future__ import annotations

from typing import Any

import numpy as np
import zstandard

from flwire.exceptions import SerializationException
from flwire.tensors.codecs.base import FrameCodec
from flwire.v1 import tensor_pb2

#: The magic number every zstd frame starts with (RFC 8878, section 3.1.1).
ZSTD_MAGIC = 0xFD2FB528
#: Block types (RFC 8878, section 3.1.1.2.2).
BLOCK_RLE = 1
BLOCK_COMPRESSED = 2
BLOCK_RESERVED = 3
#: A block header is 3 bytes; an RLE block's content is 1 byte; the optional
#: frame checksum is 4.
BLOCK_HEADER_BYTES = 3
CHECKSUM_BYTES = 4
#: No block holds more than this (RFC 8878 Block_Maximum_Size), so a frame's
#: blocks bound what it can decompress to.
BLOCK_MAX_BYTES = 1 << 17


class ZstdCodec(FrameCodec):
    """zstd frames, level 1 by default (fast; 3-19 trade speed for size)."""

    name = "zstd"
    wire = tensor_pb2.CODEC_ZSTD
    default_level = 1
    #: Negative levels trade size for speed, down to zstd's ZSTD_minCLevel().
    levels = (-(1 << 17), zstandard.MAX_COMPRESSION_LEVEL)

    def compress(self, data: Any, level: int) -> bytes:
        cctx = self.per_thread(
            ("compress", level),
            lambda: zstandard.ZstdCompressor(
                level=level, write_content_size=True, write_checksum=False
            ),
        )
        return cctx.compress(data)

    def frame_end(self, data: memoryview, pos: int, tensor_name: str) -> tuple[int, int]:
        head = data[pos:]
        if len(head) < 4 or int.from_bytes(head[:4], "little") != ZSTD_MAGIC:
            raise SerializationException(
                f"tensor {tensor_name!r}: bytes at offset {pos} of its data are not a zstd "
                "frame (bad magic number; skippable frames are not allowed)"
            )
        try:
            size = zstandard.frame_content_size(head)
            pos += zstandard.frame_header_size(head)
            params = zstandard.get_frame_parameters(head)
        except zstandard.ZstdError as exc:
            raise SerializationException(
                f"tensor {tensor_name!r}: data is not a valid zstd frame ({exc})"
            ) from None
        if size < 0:
            raise SerializationException(
                f"tensor {tensor_name!r}: zstd frame does not record its content size "
                "(flwire writers always record it; refusing to decompress an unbounded frame)"
            )
        if params.dict_id:
            raise SerializationException(
                f"tensor {tensor_name!r}: zstd frame uses dictionary {params.dict_id} "
                "(dictionaries are not allowed)"
            )
        end = len(data)
        capacity = 0  # the most content the blocks walked so far can hold
        while True:
            if pos + BLOCK_HEADER_BYTES > end:
                raise SerializationException(
                    f"tensor {tensor_name!r}: zstd frame is truncated (its last block is missing)"
                )
            header = data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16)
            last, block_type, block_size = header & 1, (header >> 1) & 3, header >> 3
            if block_type == BLOCK_RESERVED or block_size > BLOCK_MAX_BYTES:
                raise SerializationException(f"tensor {tensor_name!r}: corrupt zstd block header")
            # Raw and RLE blocks state their regenerated size; a compressed one may
            # hold up to the maximum.
            capacity += BLOCK_MAX_BYTES if block_type == BLOCK_COMPRESSED else block_size
            pos += BLOCK_HEADER_BYTES + (1 if block_type == BLOCK_RLE else block_size)
            if last:
                break
        pos += CHECKSUM_BYTES if params.has_checksum else 0
        if pos > end:
            raise SerializationException(
                f"tensor {tensor_name!r}: zstd frame is truncated (it runs {pos - end} bytes "
                "past the end of the data)"
            )
        if size > capacity:
            raise SerializationException(
                f"tensor {tensor_name!r}: zstd frame declares {size} bytes of content, more than "
                "its blocks can hold"
            )
        return pos, int(size)

    def decompress_into(self, frame: memoryview, out: np.ndarray, tensor_name: str) -> None:
        view = memoryview(out.data).cast("B")
        filled = 0
        try:
            dctx = self.per_thread("decompress", zstandard.ZstdDecompressor)
            with dctx.stream_reader(frame, read_across_frames=False) as reader:
                while filled < len(view):
                    got = reader.readinto(view[filled:])
                    if got == 0:
                        break
                    filled += got
                extra = reader.read(1)
        except zstandard.ZstdError as exc:
            raise SerializationException(
                f"tensor {tensor_name!r}: corrupt zstd data ({exc})"
            ) from None
        self.short_output(tensor_name, filled, len(view), bool(extra))
