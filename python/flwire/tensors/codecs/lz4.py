"""LZ4 frames (the LZ4 Frame Format, version 1.6.x): ``CODEC_LZ4``.

For fast networks, where decode speed matters more than size: LZ4 decodes
several times faster than zstd and compresses less. Writers record the content
size in every frame header and write no dictionary id; readers refuse frames
without a content size, with a dictionary id, or skippable frames, exactly as
for zstd (wire format, section 7).
"""

from __future__ import annotations

from typing import Any

import lz4.frame
import numpy as np

from flwire.exceptions import SerializationException
from flwire.tensors.codecs.base import FrameCodec
from flwire.v1 import tensor_pb2

#: The magic number every LZ4 frame starts with.
LZ4_MAGIC = 0x184D2204
#: FLG byte: version (bits 7-6, must be 01), block independence, block
#: checksum, content size, content checksum, reserved (must be 0), dictionary id.
FLG_VERSION_MASK, FLG_VERSION = 0xC0, 0x40
FLG_BLOCK_CHECKSUM = 0x10
FLG_CONTENT_SIZE = 0x08
FLG_CONTENT_CHECKSUM = 0x04
FLG_RESERVED = 0x02
FLG_DICT_ID = 0x01
#: BD byte: block maximum size id in bits 6-4; every other bit is reserved.
BD_RESERVED = 0x8F
BLOCK_MAX_BYTES = {4: 1 << 16, 5: 1 << 18, 6: 1 << 20, 7: 1 << 22}
#: A block size field's high bit marks an uncompressed block.
BLOCK_UNCOMPRESSED = 0x80000000
#: Magic, FLG, BD, the 8-byte content size and the header checksum byte.
HEADER_BYTES = 4 + 1 + 1 + 8 + 1
WORD = 4
#: A compressed LZ4 block expands at most this much per byte (each length byte
#: adds at most 255), plus a little for its first sequence: a frame declaring
#: more content than its blocks can hold is refused before anything is allocated.
MAX_EXPANSION = 255
EXPANSION_SLACK = 64


class Lz4Codec(FrameCodec):
    """LZ4 frames, fast mode (level 0) by default; one block per 512 KiB frame."""

    name = "lz4"
    wire = tensor_pb2.CODEC_LZ4
    default_level = 0
    #: Negative levels are LZ4's fast acceleration (faster, larger), up to its
    #: LZ4_ACCELERATION_MAX; 3 and above are LZ4-HC.
    levels = (-65537, lz4.frame.COMPRESSIONLEVEL_MAX)

    def compress(self, data: Any, level: int) -> bytes:
        return bytes(
            lz4.frame.compress(
                data,
                compression_level=level,
                block_size=lz4.frame.BLOCKSIZE_MAX1MB,
                content_checksum=False,
                block_checksum=False,
                store_size=True,
            )
        )

    def _refuse(self, tensor_name: str, why: str) -> SerializationException:
        return SerializationException(f"tensor {tensor_name!r}: {why}")

    def frame_end(self, data: memoryview, pos: int, tensor_name: str) -> tuple[int, int]:
        end = len(data)
        if end - pos < WORD or int.from_bytes(data[pos : pos + WORD], "little") != LZ4_MAGIC:
            raise self._refuse(
                tensor_name,
                f"bytes at offset {pos} of its data are not an LZ4 frame "
                "(bad magic number; skippable frames are not allowed)",
            )
        if end - pos < HEADER_BYTES - 8:
            raise self._refuse(tensor_name, "LZ4 frame header is truncated")
        flg, bd = data[pos + 4], data[pos + 5]
        if flg & FLG_VERSION_MASK != FLG_VERSION or flg & FLG_RESERVED or bd & BD_RESERVED:
            raise self._refuse(tensor_name, "LZ4 frame header has an unknown version or flags")
        if bd >> 4 not in BLOCK_MAX_BYTES:
            raise self._refuse(tensor_name, f"LZ4 frame has invalid block size id {bd >> 4}")
        if flg & FLG_DICT_ID:
            raise self._refuse(tensor_name, "LZ4 frame uses a dictionary (not allowed)")
        if not flg & FLG_CONTENT_SIZE:
            raise self._refuse(
                tensor_name,
                "LZ4 frame does not record its content size (flwire writers always record "
                "it; refusing to decompress an unbounded frame)",
            )
        if end - pos < HEADER_BYTES:
            raise self._refuse(tensor_name, "LZ4 frame header is truncated")
        size = int.from_bytes(data[pos + 6 : pos + 14], "little")
        block_max = BLOCK_MAX_BYTES[bd >> 4]
        block_extra = WORD if flg & FLG_BLOCK_CHECKSUM else 0
        pos += HEADER_BYTES
        capacity = 0  # the most content the blocks walked so far can hold
        while True:
            if end - pos < WORD:
                raise self._refuse(tensor_name, "LZ4 frame is truncated (no end mark)")
            field = int.from_bytes(data[pos : pos + WORD], "little")
            pos += WORD
            if field == 0:
                break
            block_size = field & ~BLOCK_UNCOMPRESSED
            if block_size > block_max:
                raise self._refuse(
                    tensor_name,
                    f"LZ4 block of {block_size} bytes is above the frame's block size {block_max}",
                )
            if field & BLOCK_UNCOMPRESSED:
                capacity += block_size
            else:
                capacity += min(block_max, block_size * MAX_EXPANSION + EXPANSION_SLACK)
            pos += block_size + block_extra
        pos += WORD if flg & FLG_CONTENT_CHECKSUM else 0
        if pos > end:
            raise self._refuse(
                tensor_name,
                f"LZ4 frame is truncated (it runs {pos - end} bytes past the end of the data)",
            )
        if size > capacity:
            raise self._refuse(
                tensor_name,
                f"LZ4 frame declares {size} bytes of content, more than its blocks can hold",
            )
        return pos, size

    def decompress_into(self, frame: memoryview, out: np.ndarray, tensor_name: str) -> None:
        ctx = self.per_thread("decompress", lz4.frame.create_decompression_context)
        expected = out.nbytes
        try:
            result, used, ended = lz4.frame.decompress_chunk(ctx, frame, max_length=expected + 1)
        except RuntimeError as exc:
            raise self._refuse(tensor_name, f"corrupt LZ4 data ({exc})") from None
        finally:
            lz4.frame.reset_decompression_context(ctx)
        self.short_output(tensor_name, min(len(result), expected), expected, len(result) > expected)
        if not ended or used != len(frame):  # frame_end walked it: only a liblz4 surprise
            raise self._refuse(tensor_name, "LZ4 frame did not end where its blocks end")
        out[:] = np.frombuffer(result, dtype=np.uint8)
