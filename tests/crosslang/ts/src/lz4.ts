/**
 * LZ4 frame decoding (spec 7.3, the LZ4 Frame Format 1.6.x and the LZ4 Block
 * Format), written from those descriptions: check 10 `[decompress]` writes
 * each frame into exactly its slice of the output and refuses a frame that
 * holds more or less than its Content Size, a wrong header checksum, and a
 * wrong block or content checksum.
 */
import { refuse } from "./errors.js";
import type { Lz4Frame } from "./frames.js";
import { xxh32 } from "./xxh32.js";

const u32le = (b: Uint8Array, i: number): number =>
  (b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24)) >>> 0;

/**
 * Decode one LZ4 block from `src` into `out` starting at `op`, writing at most
 * `limit` (an index into out). Matches may reach back to `windowStart`.
 * Returns the new output position.
 */
function decodeBlock(src: Uint8Array, out: Uint8Array, op: number, limit: number, windowStart: number): number {
  let ip = 0;
  const end = src.length;
  for (;;) {
    if (ip >= end) refuse("decompress", "LZ4 block ends inside a sequence");
    const token = src[ip++]!;
    let lit = token >>> 4;
    if (lit === 15) {
      let b: number;
      do {
        if (ip >= end) refuse("decompress", "LZ4 literal length runs past the block");
        b = src[ip++]!;
        lit += b;
      } while (b === 255);
    }
    if (ip + lit > end) refuse("decompress", "LZ4 literals run past the block");
    if (op + lit > limit) refuse("decompress", "LZ4 frame holds more than its Content Size (or a block more than the block maximum)");
    out.set(src.subarray(ip, ip + lit), op);
    ip += lit;
    op += lit;
    if (ip === end) return op; // the last sequence: literals only
    if (ip + 2 > end) refuse("decompress", "LZ4 match offset runs past the block");
    const offset = src[ip]! | (src[ip + 1]! << 8);
    ip += 2;
    if (offset === 0 || op - offset < windowStart) refuse("decompress", `LZ4 match offset ${offset} reaches before the window`);
    let len = (token & 15) + 4;
    if ((token & 15) === 15) {
      let b: number;
      do {
        if (ip >= end) refuse("decompress", "LZ4 match length runs past the block");
        b = src[ip++]!;
        len += b;
      } while (b === 255);
    }
    if (op + len > limit) refuse("decompress", "LZ4 frame holds more than its Content Size (or a block more than the block maximum)");
    let from = op - offset;
    if (offset >= len) {
      out.copyWithin(op, from, from + len);
      op += len;
    } else {
      for (let k = 0; k < len; k++) out[op++] = out[from++]!;
    }
  }
}

/** Decode the walked frame `f` of `data` into exactly `out` (out.length == f.contentSize). */
export function decodeLz4Frame(data: Uint8Array, f: Lz4Frame, out: Uint8Array): void {
  // Header checksum: XXH32 of FLG .. Content Size, second byte.
  const descStart = f.start + 4;
  const hc = data[descStart + 10]!;
  if (((xxh32(data.subarray(descStart, descStart + 10)) >>> 8) & 0xff) !== hc) {
    refuse("decompress", `LZ4 frame at byte ${f.start}: wrong header checksum`);
  }
  let pos = descStart + 11;
  let op = 0;
  for (;;) {
    const field = u32le(data, pos);
    pos += 4;
    if (field === 0) break;
    const stored = field >>> 31 === 1;
    const size = field & 0x7fffffff;
    const block = data.subarray(pos, pos + size);
    pos += size;
    if (f.blockChecksum) {
      if (xxh32(block) !== u32le(data, pos)) refuse("decompress", `LZ4 frame at byte ${f.start}: wrong block checksum`);
      pos += 4;
    }
    const limit = Math.min(out.length, op + f.blockMax);
    if (stored) {
      if (op + size > out.length) refuse("decompress", `LZ4 frame at byte ${f.start} holds more than its Content Size ${f.contentSize}`);
      out.set(block, op);
      op += size;
    } else {
      const blockStart = op;
      op = decodeBlock(block, out, op, limit, f.independent ? blockStart : 0);
    }
  }
  if (op !== out.length) refuse("decompress", `LZ4 frame at byte ${f.start} holds ${op} bytes, not its Content Size ${f.contentSize}`);
  if (f.contentChecksum && xxh32(out) !== u32le(data, pos)) {
    refuse("decompress", `LZ4 frame at byte ${f.start}: wrong content checksum`);
  }
}
