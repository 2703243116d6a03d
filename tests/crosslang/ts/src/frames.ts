/**
 * Walking zstd and LZ4 frames without decompressing anything (spec sections
 * 7.1-7.3 and check 7 of section 10, `[frames]`): every frame records its
 * content size, names no dictionary, holds blocks that can hold that content,
 * and the frames tile `data` exactly.
 */
import { refuse } from "./errors.js";

export interface Frame {
  /** Offsets of the frame in `data`: [start, end). */
  start: number;
  end: number;
  /** The content size its header records. */
  contentSize: number;
}

export const ZSTD_MAGIC = 0xfd2fb528;
export const LZ4_MAGIC = 0x184d2204;
const ZSTD_BLOCK_MAX = 128 * 1024;
const MAX_WINDOW = 2 ** 27;
const MIN_FRAME_CONTENT = 65536;

const u32le = (b: Uint8Array, i: number): number =>
  (b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24)) >>> 0;

function uintLE(b: Uint8Array, i: number, n: number): number {
  let v = 0;
  for (let k = n - 1; k >= 0; k--) v = v * 256 + b[i + k]!;
  return v; // exact up to 2^53; larger sizes fail the raw_size comparison anyway
}

/** One zstd frame starting at `pos` (section 7.2). */
function walkZstdFrame(data: Uint8Array, pos: number): Frame {
  const start = pos;
  if (pos + 5 > data.length || u32le(data, pos) !== ZSTD_MAGIC) {
    refuse("frames", `zstd frame at byte ${pos}: no zstd magic number`);
  }
  const fhd = data[pos + 4]!;
  pos += 5;
  const fcsFlag = fhd >>> 6;
  const singleSegment = (fhd >>> 5) & 1;
  const reserved = (fhd >>> 3) & 1;
  const checksum = (fhd >>> 2) & 1;
  const dictFlag = fhd & 3;
  if (reserved) refuse("frames", `zstd frame at byte ${start}: reserved header bit set`);
  if (!singleSegment) {
    if (pos + 1 > data.length) refuse("frames", `zstd frame at byte ${start}: header runs past the data`);
    const wd = data[pos]!;
    const exponent = wd >>> 3;
    const base = 2 ** (10 + exponent);
    const window = base + (base / 8) * (wd & 7);
    if (window > MAX_WINDOW) refuse("frames", `zstd frame at byte ${start}: window of ${window} bytes above 2^27`);
    pos += 1;
  }
  const dictSize = [0, 1, 2, 4][dictFlag]!;
  const fcsSize = fcsFlag === 0 ? (singleSegment ? 1 : 0) : [0, 2, 4, 8][fcsFlag]!;
  if (pos + dictSize + fcsSize > data.length) refuse("frames", `zstd frame at byte ${start}: header runs past the data`);
  if (dictSize > 0 && uintLE(data, pos, dictSize) !== 0) {
    refuse("frames", `zstd frame at byte ${start}: names dictionary ${uintLE(data, pos, dictSize)}`);
  }
  pos += dictSize;
  if (fcsSize === 0) refuse("frames", `zstd frame at byte ${start}: no Frame_Content_Size`);
  let contentSize = uintLE(data, pos, fcsSize);
  if (fcsSize === 2) contentSize += 256;
  pos += fcsSize;
  let capacity = 0;
  for (;;) {
    if (pos + 3 > data.length) refuse("frames", `zstd frame at byte ${start}: block header runs past the data`);
    const header = data[pos]! | (data[pos + 1]! << 8) | (data[pos + 2]! << 16);
    pos += 3;
    const last = header & 1;
    const type = (header >>> 1) & 3;
    const size = header >>> 3;
    if (size > ZSTD_BLOCK_MAX) refuse("frames", `zstd frame at byte ${start}: block of ${size} bytes above 128 KiB`);
    if (type === 0) { // raw
      pos += size;
      capacity += size;
    } else if (type === 1) { // RLE
      pos += 1;
      capacity += size;
    } else if (type === 2) { // compressed
      pos += size;
      capacity += ZSTD_BLOCK_MAX;
    } else {
      refuse("frames", `zstd frame at byte ${start}: reserved block type 3`);
    }
    if (pos > data.length) refuse("frames", `zstd frame at byte ${start}: block runs past the data`);
    if (last) break;
  }
  if (checksum) pos += 4;
  if (pos > data.length) refuse("frames", `zstd frame at byte ${start}: content checksum runs past the data`);
  if (contentSize > capacity) {
    refuse("frames", `zstd frame at byte ${start}: Frame_Content_Size ${contentSize} is more than its blocks can hold (${capacity})`);
  }
  return { start, end: pos, contentSize };
}

const LZ4_BLOCK_MAX: Record<number, number> = { 4: 1 << 16, 5: 1 << 18, 6: 1 << 20, 7: 1 << 22 };

export interface Lz4Frame extends Frame {
  blockMax: number;
  independent: boolean;
  blockChecksum: boolean;
  contentChecksum: boolean;
}

/** One LZ4 frame starting at `pos` (section 7.3). The header checksum is left to the decoder. */
export function walkLz4Frame(data: Uint8Array, pos: number): Lz4Frame {
  const start = pos;
  if (pos + 4 > data.length || u32le(data, pos) !== LZ4_MAGIC) {
    refuse("frames", `LZ4 frame at byte ${pos}: no LZ4 magic number`);
  }
  pos += 4;
  if (pos + 2 > data.length) refuse("frames", `LZ4 frame at byte ${start}: descriptor runs past the data`);
  const flg = data[pos]!;
  const bd = data[pos + 1]!;
  pos += 2;
  if (flg >>> 6 !== 1) refuse("frames", `LZ4 frame at byte ${start}: version ${flg >>> 6}, not 01`);
  if (flg & 2) refuse("frames", `LZ4 frame at byte ${start}: reserved FLG bit 1 set`);
  if (flg & 1) refuse("frames", `LZ4 frame at byte ${start}: names a dictionary`);
  if (!(flg & 8)) refuse("frames", `LZ4 frame at byte ${start}: no Content Size`);
  if (bd & 0x8f) refuse("frames", `LZ4 frame at byte ${start}: reserved BD bits set`);
  const blockMax = LZ4_BLOCK_MAX[(bd >>> 4) & 7];
  if (blockMax === undefined) refuse("frames", `LZ4 frame at byte ${start}: block maximum size id ${(bd >>> 4) & 7}`);
  if (pos + 9 > data.length) refuse("frames", `LZ4 frame at byte ${start}: descriptor runs past the data`);
  const contentSize = uintLE(data, pos, 8);
  pos += 9; // content size, HC
  const blockChecksum = (flg & 0x10) !== 0;
  const contentChecksum = (flg & 4) !== 0;
  let capacity = 0;
  for (;;) {
    if (pos + 4 > data.length) refuse("frames", `LZ4 frame at byte ${start}: no end mark`);
    const field = u32le(data, pos);
    pos += 4;
    if (field === 0) break;
    const stored = field >>> 31 === 1;
    const size = field & 0x7fffffff;
    if (size > blockMax) refuse("frames", `LZ4 frame at byte ${start}: block of ${size} bytes above the block maximum ${blockMax}`);
    pos += size + (blockChecksum ? 4 : 0);
    if (pos > data.length) refuse("frames", `LZ4 frame at byte ${start}: block runs past the data`);
    capacity += stored ? size : Math.min(blockMax, 255 * size + 64);
  }
  if (contentChecksum) pos += 4;
  if (pos > data.length) refuse("frames", `LZ4 frame at byte ${start}: content checksum runs past the data`);
  if (contentSize > capacity) {
    refuse("frames", `LZ4 frame at byte ${start}: Content Size ${contentSize} is more than its blocks can hold (${capacity})`);
  }
  return { start, end: pos, contentSize, blockMax, independent: (flg & 0x20) !== 0, blockChecksum, contentChecksum };
}

/** All frames of a compressed tensor's data (section 7.1); their sizes add up to rawSize. */
export function walkFrames(codec: "zstd", data: Uint8Array, rawSize: number): Frame[];
export function walkFrames(codec: "lz4", data: Uint8Array, rawSize: number): Lz4Frame[];
export function walkFrames(codec: "zstd" | "lz4", data: Uint8Array, rawSize: number): Frame[] {
  const frames: Frame[] = [];
  let pos = 0;
  let total = 0;
  if (data.length === 0) refuse("frames", "compressed data holds no frame");
  while (pos < data.length) {
    const f = codec === "zstd" ? walkZstdFrame(data, pos) : walkLz4Frame(data, pos);
    if (frames.length > 0 && frames[frames.length - 1]!.contentSize < MIN_FRAME_CONTENT) {
      refuse("frames", `a frame before the last holds ${frames[frames.length - 1]!.contentSize} bytes (at least 65,536 needed)`);
    }
    frames.push(f);
    total += f.contentSize;
    if (total > rawSize) refuse("frames", `frame content sizes add up to more than raw_size ${rawSize}`);
    pos = f.end;
  }
  if (total !== rawSize) refuse("frames", `frame content sizes add up to ${total}, not raw_size ${rawSize}`);
  return frames;
}
