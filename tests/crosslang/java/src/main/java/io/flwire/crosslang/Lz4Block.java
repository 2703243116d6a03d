package io.flwire.crosslang;

/**
 * The LZ4 block format (sequences of a token, literals, an offset and a match length): decodes
 * one block into out, never writing at or past {@code limit} and never reading a match from
 * before {@code windowStart} (the block's start for independent blocks, the frame's for linked
 * ones).
 */
final class Lz4Block {
  private Lz4Block() {}

  /** Decodes src[pos : pos + n) into out from index o; returns the index after the output. */
  static int decode(byte[] src, int pos, int n, byte[] out, int windowStart, int o, int limit) {
    int end = pos + n;
    while (true) {
      if (pos >= end) {
        throw bad("block ends without its last sequence");
      }
      int token = src[pos++] & 0xff;
      int lit = token >>> 4;
      if (lit == 15) {
        int b;
        do {
          if (pos >= end) {
            throw bad("truncated literal length");
          }
          b = src[pos++] & 0xff;
          lit += b;
        } while (b == 255);
      }
      if (lit > end - pos) {
        throw bad("literals run past the end of the block");
      }
      if (lit > limit - o) {
        throw bad("block decodes to more than the frame's content size or the block maximum");
      }
      System.arraycopy(src, pos, out, o, lit);
      pos += lit;
      o += lit;
      if (pos == end) {
        return o; // the last sequence: literals only
      }
      if (end - pos < 2) {
        throw bad("truncated match offset");
      }
      int offset = (src[pos] & 0xff) | (src[pos + 1] & 0xff) << 8;
      pos += 2;
      if (offset == 0 || offset > o - windowStart) {
        throw bad("match offset " + offset + " reaches before the start of its window");
      }
      int len = token & 15;
      if (len == 15) {
        int b;
        do {
          if (pos >= end) {
            throw bad("truncated match length");
          }
          b = src[pos++] & 0xff;
          len += b;
        } while (b == 255);
      }
      len += 4;
      if (len > limit - o) {
        throw bad("block decodes to more than the frame's content size or the block maximum");
      }
      for (int k = 0; k < len; k++, o++) { // overlapping copies repeat bytes, byte by byte
        out[o] = out[o - offset];
      }
    }
  }

  private static FlwireException bad(String why) {
    return new FlwireException("decompress", "invalid LZ4 block: " + why);
  }
}
