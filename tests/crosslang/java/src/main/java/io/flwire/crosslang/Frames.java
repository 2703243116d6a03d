package io.flwire.crosslang;

import com.github.luben.zstd.Zstd;
import net.jpountz.xxhash.XXHash32;
import net.jpountz.xxhash.XXHashFactory;

/**
 * The frames of a compressed tensor (spec sections 7.1 to 7.3): walked without decompressing
 * anything (check 7, {@code [frames]}), then decompressed each into its own slice of one buffer of
 * exactly raw_size bytes (check 10, {@code [decompress]}).
 *
 * <p>zstd frames are decoded by zstd-jni (libzstd). LZ4 blocks are decoded by {@link Lz4Block}:
 * lz4-java's {@code LZ4FrameInputStream} refuses linked blocks (B.Indep = 0), which section 7.3
 * allows, and its block decompressors take no preceding-block dictionary. The LZ4 header
 * checksum is lz4-java's XXH32.
 */
final class Frames {
  private Frames() {}

  static final int CODEC_ZSTD = 1;
  static final int CODEC_LZ4 = 2;

  private static final int ZSTD_MAGIC = 0xFD2FB528;
  private static final int MAX_WINDOW_LOG = 27;
  private static final int ZSTD_BLOCK_MAX = 128 << 10;
  static final int MIN_FRAME_CONTENT = 64 << 10;
  private static final int LZ4_MAGIC = 0x184D2204;
  private static final XXHash32 XXH32 = XXHashFactory.safeInstance().hash32();

  /** One frame found by a walk: where it starts and ends in data, and its content size. */
  record Frame(int start, int end, long contentSize, int flg, long blockMax) {}

  /**
   * Check 7: data is one or more frames of the codec, each recording its content size, without a
   * dictionary, within data; their content sizes add up to rawSize; every frame but the last holds
   * at least 64 KiB; nothing follows the last one. Returns the frames.
   */
  static java.util.List<Frame> check(int codec, byte[] data, int off, int len, long rawSize) {
    java.util.List<Frame> frames = new java.util.ArrayList<>();
    long total = 0;
    int pos = off;
    int end = off + len;
    while (pos < end || frames.isEmpty()) {
      Frame f = codec == CODEC_ZSTD ? zstdFrame(data, pos, end) : lz4Frame(data, pos, end);
      if (!frames.isEmpty() && frames.get(frames.size() - 1).contentSize() < MIN_FRAME_CONTENT) {
        throw new FlwireException("frames", "frame " + (frames.size() - 1) + " holds "
            + frames.get(frames.size() - 1).contentSize()
            + " bytes and is not the last; every frame but the last holds at least 65536");
      }
      frames.add(f);
      total += f.contentSize();
      if (total > rawSize || total < 0) {
        break;
      }
      pos = f.end();
    }
    if (total != rawSize) {
      throw new FlwireException("frames", "the frames' content sizes add up to "
          + Long.toUnsignedString(total) + ", raw_size is " + rawSize);
    }
    return frames;
  }

  private static int u8(byte[] b, int i) {
    return b[i] & 0xff;
  }

  static int le32(byte[] b, int i) {
    return u8(b, i) | u8(b, i + 1) << 8 | u8(b, i + 2) << 16 | u8(b, i + 3) << 24;
  }

  static long le64(byte[] b, int i) {
    return (le32(b, i) & 0xffffffffL) | ((long) le32(b, i + 4)) << 32;
  }

  /** Walks the zstd frame at data[start:end) (RFC 8878 section 3.1.1; spec section 7.2). */
  private static Frame zstdFrame(byte[] data, int start, int end) {
    if (end - start < 4 || le32(data, start) != ZSTD_MAGIC) {
      throw new FlwireException("frames", "data at offset " + (start)
          + " does not start with the zstd magic number 28 b5 2f fd");
    }
    int pos = start + 4;
    if (pos >= end) {
      throw new FlwireException("frames", "truncated zstd frame header");
    }
    int fhd = u8(data, pos++);
    int fcsFlag = fhd >> 6;
    boolean singleSegment = (fhd & 0x20) != 0;
    boolean hasChecksum = (fhd & 0x04) != 0;
    int dictIdSize = new int[] {0, 1, 2, 4}[fhd & 3];
    int fcsSize = new int[] {0, 2, 4, 8}[fcsFlag];
    if (fcsFlag == 0 && singleSegment) {
      fcsSize = 1;
    }
    if ((fhd & 0x08) != 0) {
      throw new FlwireException("frames", "reserved bit of the zstd frame header descriptor is set");
    }
    if (fcsSize == 0) {
      throw new FlwireException("frames", "the zstd frame header does not record Frame_Content_Size");
    }
    if (!singleSegment) {
      if (pos >= end) {
        throw new FlwireException("frames", "truncated zstd frame header");
      }
      int wd = u8(data, pos++);
      int windowLog = (wd >> 3) + 10;
      if (windowLog > MAX_WINDOW_LOG || (windowLog == MAX_WINDOW_LOG && (wd & 7) != 0)) {
        throw new FlwireException("frames", "zstd window above 2^27 bytes");
      }
    }
    if (pos + dictIdSize + fcsSize > end) {
      throw new FlwireException("frames", "truncated zstd frame header");
    }
    long dictId = 0;
    for (int k = dictIdSize - 1; k >= 0; k--) {
      dictId = dictId << 8 | u8(data, pos + k);
    }
    pos += dictIdSize;
    if (dictId != 0) {
      throw new FlwireException("frames", "the zstd frame needs dictionary " + dictId);
    }
    long fcs = 0;
    for (int k = fcsSize - 1; k >= 0; k--) {
      fcs = fcs << 8 | u8(data, pos + k);
    }
    if (fcsSize == 2) {
      fcs += 256;
    }
    pos += fcsSize;
    if (fcs < 0) {
      throw new FlwireException("frames", "Frame_Content_Size of 2^63 bytes or more");
    }
    long capacity = 0;
    while (true) {
      if (pos + 3 > end) {
        throw new FlwireException("frames", "truncated zstd block header at offset " + (pos - start));
      }
      int bh = u8(data, pos) | u8(data, pos + 1) << 8 | u8(data, pos + 2) << 16;
      pos += 3;
      boolean last = (bh & 1) != 0;
      int size = bh >>> 3;
      if (size > ZSTD_BLOCK_MAX) {
        throw new FlwireException("frames", "zstd block of " + size + " bytes, above 128 KiB");
      }
      switch ((bh >> 1) & 3) {
        case 0 -> capacity += size; // raw
        case 1 -> { // RLE: one byte on the wire
          capacity += size;
          size = 1;
        }
        case 2 -> capacity += ZSTD_BLOCK_MAX; // compressed
        default -> throw new FlwireException("frames", "reserved zstd block type");
      }
      if ((long) pos + size > end) {
        throw new FlwireException("frames", "zstd block runs past the end of data");
      }
      pos += size;
      if (last) {
        break;
      }
    }
    if (hasChecksum) {
      pos += 4;
      if (pos > end) {
        throw new FlwireException("frames", "truncated zstd content checksum");
      }
    }
    if (fcs > capacity) {
      throw new FlwireException("frames", "Frame_Content_Size " + fcs
          + " is more than its blocks can hold (" + capacity + ")");
    }
    return new Frame(start, pos, fcs, 0, 0);
  }

  /** Walks the LZ4 frame at data[start:end) (spec section 7.3). */
  private static Frame lz4Frame(byte[] data, int start, int end) {
    if (end - start < 4 || le32(data, start) != LZ4_MAGIC) {
      throw new FlwireException("frames", "data at offset " + start
          + " does not start with the LZ4 magic number 04 22 4d 18");
    }
    if (end - start < 7) {
      throw new FlwireException("frames", "truncated LZ4 frame header");
    }
    int flg = u8(data, start + 4);
    int bd = u8(data, start + 5);
    if ((flg & 0xC0) != 0x40) {
      throw new FlwireException("frames", "LZ4 frame version " + (flg >> 6) + ", not 01");
    }
    if ((flg & 0x02) != 0 || (bd & 0x8F) != 0) {
      throw new FlwireException("frames", "reserved bits of the LZ4 frame descriptor are set");
    }
    int id = bd >> 4;
    if (id < 4) {
      throw new FlwireException("frames", "LZ4 block maximum size id " + id + " (must be 4 to 7)");
    }
    long blockMax = 1L << (8 + 2 * id);
    if ((flg & 0x01) != 0) {
      throw new FlwireException("frames", "the LZ4 frame has a dictionary id");
    }
    if ((flg & 0x08) == 0) {
      throw new FlwireException("frames", "the LZ4 frame header does not record its content size");
    }
    if (end - start < 15) {
      throw new FlwireException("frames", "truncated LZ4 frame header");
    }
    long size = le64(data, start + 6);
    int pos = start + 15;
    long capacity = 0;
    while (true) {
      if (end - pos < 4) {
        throw new FlwireException("frames", "truncated LZ4 frame (no end mark)");
      }
      int field = le32(data, pos);
      pos += 4;
      if (field == 0) {
        break;
      }
      long n = field & 0x7fffffffL;
      if (n > blockMax) {
        throw new FlwireException("frames", "LZ4 block of " + n
            + " bytes, above the frame's block maximum size " + blockMax);
      }
      capacity += field < 0 ? n : Math.min(blockMax, n * 255 + 64);
      long step = n + ((flg & 0x10) != 0 ? 4 : 0);
      if (step > end - pos) {
        throw new FlwireException("frames", "LZ4 block runs past the end of data");
      }
      pos += (int) step;
    }
    if ((flg & 0x04) != 0) {
      if (end - pos < 4) {
        throw new FlwireException("frames", "truncated LZ4 content checksum");
      }
      pos += 4;
    }
    if (size < 0 || size > capacity) {
      throw new FlwireException("frames", "the LZ4 frame declares " + Long.toUnsignedString(size)
          + " bytes of content, more than its blocks can hold (" + capacity + ")");
    }
    return new Frame(start, pos, size, flg, blockMax);
  }

  /** Check 10: decompresses the (checked) frames into exactly rawSize bytes. */
  static byte[] decompress(int codec, byte[] data, java.util.List<Frame> frames, long rawSize) {
    byte[] out = new byte[Math.toIntExact(rawSize)];
    decompressInto(codec, data, frames, out, 0);
    return out;
  }

  /**
   * Check 10 into a slice of a larger buffer: the (checked) frames fill out[start : start + the
   * sum of their content sizes) exactly (a streamed chunk's elements, straight into its tensor).
   */
  static void decompressInto(int codec, byte[] data, java.util.List<Frame> frames, byte[] out,
      int start) {
    int at = start;
    for (Frame f : frames) {
      int n = (int) f.contentSize();
      if (codec == CODEC_ZSTD) {
        long got;
        try {
          got = Zstd.decompressByteArray(out, at, n, data, f.start(), f.end() - f.start());
        } catch (com.github.luben.zstd.ZstdException e) {
          throw new FlwireException("decompress", "zstd frame at offset " + f.start() + ": "
              + e.getMessage(), e);
        }
        if (Zstd.isError(got)) {
          throw new FlwireException("decompress", "zstd frame at offset " + f.start() + ": "
              + Zstd.getErrorName(got));
        }
        if (got != n) {
          throw new FlwireException("decompress", "zstd frame at offset " + f.start() + " holds "
              + got + " bytes, its header declares " + n);
        }
      } else {
        lz4Decode(data, f, out, at);
      }
      at += n;
    }
  }

  /** Decodes one LZ4 frame into out[at : at + contentSize), which it must fill exactly. */
  private static void lz4Decode(byte[] data, Frame f, byte[] out, int at) {
    int flg = f.flg();
    int hc = u8(data, f.start() + 14);
    int want = (XXH32.hash(data, f.start() + 4, 10, 0) >>> 8) & 0xff;
    if (hc != want) {
      throw new FlwireException("decompress", "LZ4 header checksum 0x" + Integer.toHexString(hc)
          + ", the header's XXH32 gives 0x" + Integer.toHexString(want));
    }
    boolean independent = (flg & 0x20) != 0;
    int limit = at + (int) f.contentSize();
    int pos = f.start() + 15;
    int o = at;
    while (true) {
      int field = le32(data, pos);
      pos += 4;
      if (field == 0) {
        break;
      }
      int n = field & 0x7fffffff;
      int blockEnd = Math.min(limit, (int) Math.min((long) o + f.blockMax(), Integer.MAX_VALUE));
      if ((flg & 0x10) != 0 && XXH32.hash(data, pos, n, 0) != le32(data, pos + n)) {
        throw new FlwireException("decompress", "LZ4 block checksum mismatch");
      }
      if (field < 0) {
        if (n > blockEnd - o) {
          throw new FlwireException("decompress", "LZ4 stored block holds more than the frame's "
              + "content size or the block maximum");
        }
        System.arraycopy(data, pos, out, o, n);
        o += n;
      } else {
        o = Lz4Block.decode(data, pos, n, out, independent ? o : at, o, blockEnd);
      }
      pos += n + ((flg & 0x10) != 0 ? 4 : 0);
    }
    if (o != limit) {
      throw new FlwireException("decompress", "LZ4 frame at offset " + f.start() + " holds "
          + (o - at) + " bytes, its header declares " + f.contentSize());
    }
    if ((flg & 0x04) != 0 && XXH32.hash(out, at, o - at, 0) != le32(data, pos)) {
      throw new FlwireException("decompress", "LZ4 content checksum mismatch");
    }
  }
}
