package io.flwire.crosslang;

import com.github.luben.zstd.Zstd;
import com.google.protobuf.ByteString;
import com.google.protobuf.CodedOutputStream;
import flwire.v1.TensorOuterClass.LossyEncoding;
import flwire.v1.TensorOuterClass.Tensor;
import flwire.v1.TensorOuterClass.TensorMap;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.List;
import java.util.Map;
import net.jpountz.lz4.LZ4Compressor;
import net.jpountz.lz4.LZ4Factory;
import net.jpountz.xxhash.XXHashFactory;

/**
 * Encodes a {@code flwire.v1.TensorMap} in the canonical form of spec section 2.3 (protobuf-java's
 * deterministic serialization of the generated classes, plus the alignment padding of rule 7),
 * with the tensor encoding of section 9 (filter, then codec in frames of 524,288 bytes).
 */
public final class TensorMapWriter {
  private TensorMapWriter() {}

  /** Frames are cut every this many bytes of filtered content (section 7.1). */
  public static final int FRAME_BYTES = 524_288;

  public static final int ALIGN = 64;

  /**
   * A tensor as it goes on the wire: data is Tensor.data (raw bytes, or the frames of codec), raw
   * bytes standing for the payload of a lossy tensor; lossy is null for a lossless tensor.
   */
  public record WireTensor(String name, int dtype, long[] shape, int codec, int filter,
      long rawSize, int crc32c, byte[] data, LossyEncoding lossy) {}

  /**
   * Section 9, steps 1 to 4: the wire form of a tensor with these raw bytes (or payload, with
   * elementWidth the payload's element width) under codec 0 (none), 1 (zstd) or 2 (LZ4).
   */
  public static WireTensor encodeTensor(String name, int dtype, long[] shape, byte[] raw,
      int codec, int level, boolean shuffle, LossyEncoding lossy) {
    int crc = TensorMapReader.crc32c(raw);
    if (codec != 0 && raw.length > 0) {
      int width = lossy != null ? Lossy.payloadElementWidth(lossy.getMethodValue())
          : Dtypes.width(dtype);
      boolean shuffled = shuffle && width > 1;
      byte[] filtered = shuffled ? TensorMapReader.shuffle(raw, width) : raw;
      byte[] frames = compress(codec, level, filtered);
      if (frames.length < raw.length) {
        return new WireTensor(name, dtype, shape, codec, shuffled ? 1 : 0, raw.length, crc,
            frames, lossy);
      }
    }
    return new WireTensor(name, dtype, shape, 0, 0, raw.length, crc, raw, lossy);
  }

  /** The frames of codec for these filtered bytes, one per 524,288 bytes (the last shorter). */
  public static byte[] compress(int codec, int level, byte[] filtered) {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    for (int at = 0; at < filtered.length; at += FRAME_BYTES) {
      int n = Math.min(FRAME_BYTES, filtered.length - at);
      byte[] piece = java.util.Arrays.copyOfRange(filtered, at, at + n);
      // Zstd.compress is ZSTD_compress: one frame whose header records its content size, no
      // checksum, no dictionary.
      byte[] frame = codec == Frames.CODEC_ZSTD ? Zstd.compress(piece, level) : lz4Frame(piece);
      out.writeBytes(frame);
    }
    return out.toByteArray();
  }

  /**
   * One LZ4 frame (section 7.3) of one block: version 01, independent blocks, content size, no
   * checksums or dictionary; the smallest block maximum that holds the piece; the block stored
   * when compressing does not make it smaller.
   */
  static byte[] lz4Frame(byte[] piece) {
    int id = 4;
    while ((1 << (8 + 2 * id)) < piece.length) {
      id++;
    }
    LZ4Compressor c = LZ4Factory.fastestInstance().fastCompressor();
    byte[] block = c.compress(piece);
    boolean stored = block.length >= piece.length;
    if (stored) {
      block = piece;
    }
    java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(15 + 4 + block.length + 4)
        .order(java.nio.ByteOrder.LITTLE_ENDIAN);
    b.putInt(0x184D2204).put((byte) 0x68).put((byte) (id << 4)).putLong(piece.length);
    int hc = (XXHashFactory.safeInstance().hash32().hash(b.array(), 4, 10, 0) >>> 8) & 0xff;
    b.put((byte) hc);
    b.putInt(block.length | (stored ? 0x80000000 : 0)).put(block).putInt(0);
    return b.array();
  }

  /** Encodes the map: tensors in order, then metadata (deterministic order). */
  public static byte[] encode(List<WireTensor> tensors, Map<String, String> metadata) {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    for (WireTensor w : tensors) {
      Tensor t = tensor(w, out.size());
      writeField(out, 1, t.toByteArray());
    }
    if (!metadata.isEmpty()) {
      TensorMap m = TensorMap.newBuilder().putAllMetadata(metadata).build();
      out.writeBytes(CanonicalMaps.serialize(m));
    }
    return out.toByteArray();
  }

  /** protobuf-java's deterministic serialization (map entries sorted by key). */
  public static byte[] serialize(com.google.protobuf.MessageLite m) {
    byte[] b = new byte[m.getSerializedSize()];
    CodedOutputStream cos = CodedOutputStream.newInstance(b);
    cos.useDeterministicSerialization();
    try {
      m.writeTo(cos);
      cos.checkNoSpaceLeft();
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    return b;
  }

  private static void writeField(ByteArrayOutputStream out, int number, byte[] payload) {
    byte[] head = new byte[CodedOutputStream.computeTagSize(number)
        + CodedOutputStream.computeUInt32SizeNoTag(payload.length)];
    CodedOutputStream cos = CodedOutputStream.newInstance(head);
    try {
      cos.writeTag(number, 2);
      cos.writeUInt32NoTag(payload.length);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    out.writeBytes(head);
    out.writeBytes(payload);
  }

  /** The Tensor message of w, with the padding of rule 7 when it starts at start in the map. */
  static Tensor tensor(WireTensor w, long start) {
    Tensor.Builder b = Tensor.newBuilder().setName(w.name()).setDtypeValue(w.dtype())
        .setCodecValue(w.codec()).setFilterValue(w.filter()).setRawSize(w.rawSize())
        .setCrc32C(w.crc32c());
    for (long d : w.shape()) {
      b.addShape(d);
    }
    int head = b.build().getSerializedSize(); // fields 1 to 7
    b.setData(ByteString.copyFrom(w.data()));
    if (w.lossy() != null) {
      b.setLossy(w.lossy());
    }
    Tensor bare = b.build();
    if (w.codec() != 0 || w.rawSize() == 0) {
      return bare;
    }
    int p = padding(start, bare.getSerializedSize(), head, w.data().length);
    return p == 0 ? bare : b.setPadding(ByteString.copyFrom(new byte[p])).build();
  }

  /** Length of a LEN field's key (field numbers below 16) and varint length prefix. */
  static int lenField(int payload) {
    return 1 + CodedOutputStream.computeUInt32SizeNoTag(payload) + payload;
  }

  /**
   * Rule 7: the payload length of the shortest padding field (0: none) that puts the first data
   * byte of a Tensor, whose key is at start and whose encoding without padding is size bytes with
   * head bytes of fields 1 to 7, at a multiple of 64.
   */
  static int padding(long start, int size, int head, int dataLen) {
    for (int p = 0; ; p++) {
      int field = p == 0 ? 0 : lenField(p);
      int len = size + field;
      long offset = start + 1 + CodedOutputStream.computeUInt32SizeNoTag(len) + head + field
          + 1 + CodedOutputStream.computeUInt32SizeNoTag(dataLen);
      if (offset % ALIGN == 0) {
        return p;
      }
    }
  }
}
