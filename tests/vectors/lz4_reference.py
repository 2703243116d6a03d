"""An independent reading and writing of LZ4 frames, in pure Python.

Written from the LZ4 Frame Format Description (version 1.6.x) and the LZ4
Block Format Description alone, sharing no code with flwire's codec or with
liblz4, so that tests can check what flwire writes and what it accepts against
the formats themselves:

* :func:`parse_frame` / :func:`split_frames` walk frames field by field and
  refuse anything the frame format does not allow;
* :func:`decompress_frame` decodes one, checking the header checksum, block
  and content checksums, the block maximum size and the content size;
* :func:`build_frame` writes frames with any header and block layout (blocks
  stored uncompressed, or compressed as literal-only LZ4 sequences), so that
  tests can make the frames other writers, or hostile ones, would send.

It is slow (a few MB/s): meant for golden vectors and property tests only.
The golden-vector generator and the conformance runners import it by path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAGIC = 0x184D2204
#: Skippable frames use the 16 magic numbers 0x184D2A50 to 0x184D2A5F.
SKIPPABLE_MAGIC_BASE = 0x184D2A50
#: The legacy frame format (lz4 command line tool before v1.6 frames).
LEGACY_MAGIC = 0x184C2102
#: Block Maximum Size by its 3-bit id in the BD byte.
BLOCK_MAX = {4: 1 << 16, 5: 1 << 18, 6: 1 << 20, 7: 1 << 22}
#: Linked blocks may refer back this far into earlier blocks of the frame.
WINDOW = 1 << 16
UNCOMPRESSED_BIT = 1 << 31
MIN_MATCH = 4

_M32 = 0xFFFFFFFF
_P1, _P2, _P3, _P4, _P5 = 2654435761, 2246822519, 3266489917, 668265263, 374761393


class FrameError(ValueError):
    """The bytes are not a valid LZ4 frame."""


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def _le32(data: bytes | memoryview, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "little")


def xxh32(data: bytes, seed: int = 0) -> int:
    """XXH32 of ``data`` (the checksum of the LZ4 frame format)."""
    n, i = len(data), 0
    if n >= 16:
        v = [
            (seed + _P1 + _P2) & _M32,
            (seed + _P2) & _M32,
            seed & _M32,
            (seed - _P1) & _M32,
        ]
        while i + 16 <= n:
            for lane in range(4):
                v[lane] = (_rotl((v[lane] + _le32(data, i) * _P2) & _M32, 13) * _P1) & _M32
                i += 4
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & _M32
    else:
        h = (seed + _P5) & _M32
    h = (h + n) & _M32
    while i + 4 <= n:
        h = (_rotl((h + _le32(data, i) * _P3) & _M32, 17) * _P4) & _M32
        i += 4
    while i < n:
        h = (_rotl((h + data[i] * _P5) & _M32, 11) * _P1) & _M32
        i += 1
    h ^= h >> 15
    h = (h * _P2) & _M32
    h ^= h >> 13
    h = (h * _P3) & _M32
    h ^= h >> 16
    return h


def header_checksum(descriptor: bytes) -> int:
    """The HC byte: the second byte of XXH32 of FLG .. Dict-ID."""
    return (xxh32(descriptor) >> 8) & 0xFF


@dataclass(frozen=True)
class Block:
    """One data block: its bytes on the wire, stored or LZ4-compressed."""

    compressed: bool
    payload: bytes
    checksum: int | None  # XXH32 of the block's wire bytes, when FLG.B.Checksum


@dataclass(frozen=True)
class Frame:
    """One LZ4 frame, as found at ``data[start:end]``."""

    start: int
    end: int
    block_independent: bool
    has_block_checksum: bool
    has_content_checksum: bool
    content_size: int | None  # None when FLG.C.Size is not set
    dict_id: int | None  # None when FLG.DictID is not set
    block_max_id: int
    header_checksum: int  # the HC byte as written
    descriptor: bytes  # FLG .. Dict-ID, what HC covers
    blocks: tuple[Block, ...]
    content_checksum: int | None

    @property
    def block_max(self) -> int:
        return BLOCK_MAX[self.block_max_id]

    @property
    def header_checksum_ok(self) -> bool:
        return header_checksum(self.descriptor) == self.header_checksum


def parse_frame(data: bytes, pos: int = 0) -> Frame:
    """Walk the frame that starts at ``data[pos]``: header, blocks, end mark and
    optional content checksum. Raises FrameError for a skippable or legacy
    frame, an unknown version, set reserved bits, a block maximum size id
    outside 4..7, a block above the block maximum size, or truncation. Does
    not decompress, nor check HC (see :func:`decompress_frame`)."""
    start = pos
    if len(data) - pos < 4:
        raise FrameError(f"offset {pos}: no room for a magic number")
    magic = _le32(data, pos)
    if SKIPPABLE_MAGIC_BASE <= magic <= SKIPPABLE_MAGIC_BASE + 15:
        raise FrameError(f"offset {pos}: a skippable frame")
    if magic == LEGACY_MAGIC:
        raise FrameError(f"offset {pos}: a legacy-format frame")
    if magic != MAGIC:
        raise FrameError(f"offset {pos}: magic number {magic:#010x}")
    pos += 4
    if len(data) - pos < 2:
        raise FrameError("truncated frame descriptor")
    flg, bd = data[pos], data[pos + 1]
    if flg >> 6 != 0b01:
        raise FrameError(f"version {flg >> 6}")
    if flg & 0x02 or bd & 0x8F:
        raise FrameError("reserved bits set")
    block_max_id = (bd >> 4) & 0x07
    if block_max_id not in BLOCK_MAX:
        raise FrameError(f"block maximum size id {block_max_id}")
    has_size, has_dict = bool(flg & 0x08), bool(flg & 0x01)
    descriptor_len = 2 + (8 if has_size else 0) + (4 if has_dict else 0)
    if len(data) - pos < descriptor_len + 1:
        raise FrameError("truncated frame descriptor")
    descriptor = bytes(data[pos : pos + descriptor_len])
    at = 2
    content_size = dict_id = None
    if has_size:
        content_size = int.from_bytes(descriptor[at : at + 8], "little")
        at += 8
    if has_dict:
        dict_id = int.from_bytes(descriptor[at : at + 4], "little")
    hc = data[pos + descriptor_len]
    pos += descriptor_len + 1
    has_block_checksum = bool(flg & 0x10)
    blocks = []
    while True:
        if len(data) - pos < 4:
            raise FrameError("truncated: no end mark")
        field = _le32(data, pos)
        pos += 4
        if field == 0:
            break
        size = field & ~UNCOMPRESSED_BIT
        if size > BLOCK_MAX[block_max_id]:
            raise FrameError(f"block of {size} bytes above the block maximum size")
        end = pos + size + (4 if has_block_checksum else 0)
        if end > len(data):
            raise FrameError("truncated block")
        checksum = _le32(data, pos + size) if has_block_checksum else None
        blocks.append(Block(not field & UNCOMPRESSED_BIT, bytes(data[pos : pos + size]), checksum))
        pos = end
    content_checksum = None
    if flg & 0x04:
        if len(data) - pos < 4:
            raise FrameError("truncated content checksum")
        content_checksum = _le32(data, pos)
        pos += 4
    return Frame(
        start=start,
        end=pos,
        block_independent=bool(flg & 0x20),
        has_block_checksum=has_block_checksum,
        has_content_checksum=content_checksum is not None,
        content_size=content_size,
        dict_id=dict_id,
        block_max_id=block_max_id,
        header_checksum=hc,
        descriptor=descriptor,
        blocks=tuple(blocks),
        content_checksum=content_checksum,
    )


def split_frames(data: bytes) -> list[Frame]:
    """Every frame of ``data``, back to back, the last one ending at its end."""
    frames: list[Frame] = []
    pos = 0
    while pos < len(data):
        frames.append(parse_frame(data, pos))
        pos = frames[-1].end
    return frames


def decompress_block(src: bytes, history: bytes, limit: int) -> bytes:
    """Decode one LZ4 compressed block (sequences of token, literals, offset and
    match) whose matches may reach back into ``history``; refuse output above
    ``limit`` bytes."""
    out = bytearray(history)
    base, i, n = len(history), 0, len(src)
    while True:
        if i >= n:
            raise FrameError("block ends inside a sequence")
        token = src[i]
        i += 1
        literals = token >> 4
        if literals == 15:
            while True:
                if i >= n:
                    raise FrameError("block ends inside a literal length")
                literals += src[i]
                i += 1
                if src[i - 1] != 255:
                    break
        if i + literals > n:
            raise FrameError("literals run past the block")
        out += src[i : i + literals]
        i += literals
        if len(out) - base > limit:
            raise FrameError("block decodes to more than its limit")
        if i == n:  # the last sequence holds literals only
            return bytes(out[base:])
        if i + 2 > n:
            raise FrameError("block ends inside an offset")
        offset = src[i] | src[i + 1] << 8
        i += 2
        if offset == 0 or offset > len(out):
            raise FrameError(f"match offset {offset} reaches before the data")
        length = token & 15
        if length == 15:
            while True:
                if i >= n:
                    raise FrameError("block ends inside a match length")
                length += src[i]
                i += 1
                if src[i - 1] != 255:
                    break
        length += MIN_MATCH
        if len(out) - base + length > limit:
            raise FrameError("block decodes to more than its limit")
        first = len(out) - offset
        if offset >= length:
            out += out[first : first + length]
        else:  # the match overlaps its own output: it repeats the last `offset` bytes
            pattern = bytes(out[first:])
            out += (pattern * (length // offset + 1))[:length]


def decompress_frame(frame: Frame) -> bytes:
    """The content of a parsed frame. Raises FrameError for a wrong header
    checksum, a block or content checksum that does not match, a block that
    decodes to more than the block maximum size, a dictionary (this decoder
    has none), or a content size that disagrees with the blocks."""
    if not frame.header_checksum_ok:
        raise FrameError("header checksum")
    if frame.dict_id is not None:
        raise FrameError(f"needs dictionary {frame.dict_id}")
    out = bytearray()
    for block in frame.blocks:
        if block.checksum is not None and xxh32(block.payload) != block.checksum:
            raise FrameError("block checksum")
        if not block.compressed:
            piece = block.payload
        else:
            history = b"" if frame.block_independent else bytes(out[-WINDOW:])
            piece = decompress_block(block.payload, history, frame.block_max)
        if len(piece) > frame.block_max:
            raise FrameError("block above the block maximum size")
        out += piece
    if frame.content_size is not None and frame.content_size != len(out):
        raise FrameError(f"content size {frame.content_size}, the blocks hold {len(out)}")
    if frame.content_checksum is not None and xxh32(bytes(out)) != frame.content_checksum:
        raise FrameError("content checksum")
    return bytes(out)


def decompress_all(data: bytes) -> bytes:
    """The contents of every frame of ``data``, concatenated."""
    return b"".join(decompress_frame(f) for f in split_frames(data))


def literal_block(content: bytes) -> bytes:
    """``content`` as one compressed block of a single literal-only sequence
    (valid LZ4: the last sequence of a block has literals only)."""
    n = len(content)
    if n < 15:
        return bytes([n << 4]) + content
    rest, ext = n - 15, bytearray()
    while rest >= 255:
        ext.append(255)
        rest -= 255
    ext.append(rest)
    return bytes([0xF0]) + bytes(ext) + content


def build_frame(
    content: bytes,
    *,
    block_max_id: int = 6,
    block_sizes: Sequence[int] | None = None,
    compressed: bool = False,
    content_size: int | bool | None = True,
    dict_id: int | None = None,
    block_checksum: bool = False,
    content_checksum: bool = False,
    version: int = 1,
    flg_extra: int = 0,
    bd_extra: int = 0,
    header_checksum_xor: int = 0,
) -> bytes:
    """A frame of ``content``, laid out as asked.

    ``block_sizes``: content bytes per block (default: pieces of the block
    maximum size, or half of it for compressed blocks). Blocks are stored
    uncompressed, or with ``compressed`` as literal-only sequences.
    ``content_size``: True records ``len(content)``, an int records that value,
    None or False records none. ``flg_extra`` /
    ``bd_extra`` are ORed into FLG / BD (reserved bits); ``header_checksum_xor``
    spoils HC. Nothing is checked: hostile frames are the point.
    """
    flg = version << 6 | 0x20  # independent blocks
    flg |= 0x10 if block_checksum else 0
    flg |= 0x04 if content_checksum else 0
    size: int | None = None
    if content_size is True:
        size = len(content)
    elif content_size is not False and content_size is not None:
        size = content_size
    if size is not None:
        flg |= 0x08
    if dict_id is not None:
        flg |= 0x01
    descriptor = bytes([flg | flg_extra, (block_max_id << 4 | bd_extra) & 0xFF])
    if size is not None:
        descriptor += size.to_bytes(8, "little")
    if dict_id is not None:
        descriptor += dict_id.to_bytes(4, "little")
    out = bytearray(MAGIC.to_bytes(4, "little") + descriptor)
    out.append(header_checksum(descriptor) ^ header_checksum_xor)
    # A literal-only block is a little longer than its content: keep it within the maximum.
    step = BLOCK_MAX.get(block_max_id, 1 << 16) // (2 if compressed else 1)
    sizes = list(block_sizes) if block_sizes is not None else [step] * (len(content) // step)
    if block_sizes is None and len(content) % step:
        sizes.append(len(content) % step)
    at = 0
    for n in sizes:
        piece = content[at : at + n]
        at += n
        wire = literal_block(piece) if compressed else piece
        flag = 0 if compressed else UNCOMPRESSED_BIT
        out += (len(wire) | flag).to_bytes(4, "little") + wire
        if block_checksum:
            out += xxh32(wire).to_bytes(4, "little")
    out += bytes(4)  # end mark
    if content_checksum:
        out += xxh32(content).to_bytes(4, "little")
    return bytes(out)
