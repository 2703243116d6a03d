package io.flwire.crosslang;

import com.google.protobuf.ByteString;
import com.google.protobuf.InvalidProtocolBufferException;
import flwire.v1.TensorOuterClass.Tensor;
import flwire.v1.TensorOuterClass.TensorMap;
import java.math.BigInteger;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.zip.CRC32C;

/**
 * Decodes an encoded {@code flwire.v1.TensorMap} (spec sections 2 to 11): stock protobuf-java
 * parses it, then every check of section 10 is made in its order, checks 1 to 9 for every tensor
 * before anything is allocated or decompressed for data. Never returns a partial result.
 */
public final class TensorMapReader {
  private TensorMapReader() {}

  private static final BigInteger TWO_63 = BigInteger.ONE.shiftLeft(63);

  /**
   * One decoded tensor: its fields as on the wire and its raw little-endian bytes. For a lossy
   * tensor, rawSize and crc32c are the payload's (as on the wire), payload is the decoded payload
   * and raw the reconstructed logical tensor; for a lossless one lossy and payload are null.
   */
  public record DecodedTensor(
      String name, int dtype, long[] shape, int codec, int filter, long rawSize, int crc32c,
      byte[] raw, Lossy.Encoding lossy, byte[] payload) {}

  /** A decoded map: tensors in wire order, metadata (its order carries no meaning). */
  public record DecodedMap(List<DecodedTensor> tensors, Map<String, String> metadata) {}

  public static DecodedMap decode(byte[] b) {
    return decode(b, 0, b.length, Limits.DEFAULT);
  }

  public static DecodedMap decode(byte[] b, Limits lim) {
    return decode(b, 0, b.length, lim);
  }

  /** Decodes b[off : off + len). */
  public static DecodedMap decode(byte[] b, int off, int len, Limits lim) {
    TensorMap pb;
    try {
      pb = TensorMap.parseFrom(ByteString.copyFrom(b, off, len));
    } catch (InvalidProtocolBufferException e) {
      throw new FlwireException("protobuf", e.getMessage(), e);
    }
    return decode(pb, len, lim);
  }

  /** Decodes a parsed map that took size bytes on the wire. */
  public static DecodedMap decode(TensorMap pb, long size, Limits lim) {
    List<List<Frames.Frame>> frames = check(pb, size, lim);
    // Checks 10 to 13.
    int count = pb.getTensorsCount();
    List<DecodedTensor> out = new ArrayList<>(count);
    for (int i = 0; i < count; i++) {
      Tensor t = pb.getTensors(i);
      try {
        out.add(decodeData(t, frames.get(i)));
      } catch (FlwireException e) {
        throw e.inTensor(i, t.getName());
      }
    }
    return new DecodedMap(out, new TreeMap<>(pb.getMetadataMap()));
  }

  /**
   * The checks of a parsed map that took size bytes on the wire before anything is allocated or
   * decompressed for data: the map's limits and checks 1 to 9 of every tensor. Returns each
   * tensor's walked frames (null for an uncompressed tensor), for {@link #decodeInto}.
   */
  static List<List<Frames.Frame>> check(TensorMap pb, long size, Limits lim) {
    return check(pb, size, lim, true);
  }

  /**
   * {@link #check(TensorMap, long, Limits)}, check 9 (unique names) made only when uniqueNames:
   * a streamed chunk's tensors are all unnamed (section 14.5), which its reader checks itself.
   */
  static List<List<Frames.Frame>> check(TensorMap pb, long size, Limits lim,
      boolean uniqueNames) {
    int count = pb.getTensorsCount();
    if (count > lim.maxTensors()) {
      throw new FlwireException("max_tensors", count + " tensors, the limit is " + lim.maxTensors());
    }
    if (lim.maxTensorsPerMiB() > 0) {
      long limit = Math.max(size, 1L << 20) * lim.maxTensorsPerMiB() >> 20;
      long entries = count + (long) pb.getMetadataCount();
      if (entries > limit) {
        throw new FlwireException("max_tensors", entries + " tensors and metadata entries in "
            + size + " bytes, the limit is " + limit + " (" + lim.maxTensorsPerMiB() + " per MiB)");
      }
    }
    if (lim.maxUnknownBytes() > 0) {
      long unknown = pb.getUnknownFields().getSerializedSize();
      for (Tensor t : pb.getTensorsList()) {
        unknown += t.getUnknownFields().getSerializedSize();
      }
      if (unknown > lim.maxUnknownBytes()) {
        throw new FlwireException("max_unknown_bytes", unknown
            + " bytes of unknown fields, the limit is " + lim.maxUnknownBytes());
      }
    }
    // Checks 1 to 9, before anything is allocated for data.
    Map<String, Integer> seen = new HashMap<>();
    long[] total = {0};
    List<List<Frames.Frame>> frames = new ArrayList<>();
    for (int i = 0; i < count; i++) {
      Tensor t = pb.getTensors(i);
      try {
        frames.add(checkHeader(t, lim, total));
        Integer j = uniqueNames ? seen.putIfAbsent(t.getName(), i) : null;
        if (j != null) {
          throw new FlwireException("unique_names", "duplicate tensor name, also tensor " + j);
        }
      } catch (FlwireException e) {
        throw e.inTensor(i, t.getName());
      }
    }
    if (lim.maxExpansion() > 0) {
      double allowed = Math.max((double) lim.expansionFloorBytes(), lim.maxExpansion() * size);
      if (total[0] > allowed) {
        throw new FlwireException("max_expansion", "a map of " + size + " bytes declares "
            + total[0] + " decoded bytes, more than max(" + lim.expansionFloorBytes() + ", "
            + lim.maxExpansion() + " x its size)");
      }
    }
    return frames;
  }

  static Lossy.Encoding lossyOf(Tensor t) {
    if (!t.hasLossy() || t.getLossy().getMethodValue() == 0) {
      return null;
    }
    return new Lossy.Encoding(t.getLossy().getMethodValue(),
        Integer.toUnsignedLong(t.getLossy().getBlockSize()), t.getLossy().getK());
  }

  private static long numel(List<Long> shape) {
    long n = 1;
    for (long d : shape) {
      n *= d;
    }
    return n;
  }

  /** Checks 1 to 8 of section 10; total accumulates decoded sizes for the per-map limit. */
  private static List<Frames.Frame> checkHeader(Tensor t, Limits lim, long[] total) {
    int dtype = t.getDtypeValue();
    int width = Dtypes.width(dtype);
    if (width == 0) {
      throw new FlwireException("dtype", "dtype " + dtype + " is unspecified or unknown");
    }
    List<Long> shape = t.getShapeList();
    if (shape.size() > lim.maxRank()) {
      throw new FlwireException("max_rank", "rank " + shape.size() + " above the limit "
          + lim.maxRank());
    }
    BigInteger bound = BigInteger.valueOf(width);
    for (int k = 0; k < shape.size(); k++) {
      long d = shape.get(k);
      if (d < 0) {
        throw new FlwireException("shape", "dimension " + k + " is " + d);
      }
      bound = bound.multiply(BigInteger.valueOf(Math.max(d, 1)));
      if (bound.compareTo(TWO_63) >= 0) {
        throw new FlwireException("shape", "product of dimensions " + shape + " times width "
            + width + " is 2^63 or more");
      }
    }
    long raw = t.getRawSize();
    long n = numel(shape); // no overflow after check 2
    long logical = n * width;
    Lossy.Encoding lossy = lossyOf(t);
    if (lossy != null) {
      Lossy.check(dtype, n, raw, t.getFilterValue(), lossy, lim);
    } else if (logical != raw) {
      throw new FlwireException("raw_size", "shape " + shape + " of " + Dtypes.name(dtype)
          + " (width " + width + ") needs " + logical + " bytes, raw_size is "
          + Long.toUnsignedString(raw));
    }
    if (Long.compareUnsigned(raw, lim.maxTensorBytes()) > 0) {
      throw new FlwireException("limits", "raw_size " + Long.toUnsignedString(raw)
          + " above the per-tensor limit " + lim.maxTensorBytes());
    }
    total[0] += logical;
    if (total[0] > lim.maxTotalBytes() || total[0] < 0) {
      throw new FlwireException("limits", "total decoded size of the map above the limit "
          + lim.maxTotalBytes());
    }
    int codec = t.getCodecValue();
    if (codec < 0 || codec > 2) {
      throw new FlwireException("codec", "codec " + codec + " is unknown");
    }
    if (t.getFilterValue() < 0 || t.getFilterValue() > 1) {
      throw new FlwireException("filter", "filter " + t.getFilterValue() + " is unknown");
    }
    ByteString data = t.getData();
    List<Frames.Frame> frames = null;
    if (codec == 0) {
      if (data.size() != raw) {
        throw new FlwireException("data_size", data.size() + " bytes of data, raw_size is "
            + Long.toUnsignedString(raw));
      }
    } else {
      byte[] d = data.toByteArray();
      frames = Frames.check(codec, d, 0, d.length, raw);
    }
    if (raw == 0 && t.getCrc32C() != 0) {
      throw new FlwireException("empty_crc32c", String.format("crc32c 0x%08x for no bytes",
          t.getCrc32C()));
    }
    return frames;
  }

  public static int crc32c(byte[] b) {
    return crc32c(b, 0, b.length);
  }

  public static int crc32c(byte[] b, int off, int len) {
    CRC32C c = new CRC32C();
    c.update(b, off, len);
    return (int) c.getValue();
  }

  /**
   * Byte shuffle of section 6 undone into out[off : off + in.length): byte j*n+i of in is byte j
   * of element i.
   */
  static void unshuffleInto(byte[] in, int width, byte[] out, int off) {
    int n = in.length / width;
    for (int j = 0; j < width; j++) {
      for (int i = 0; i < n; i++) {
        out[off + i * width + j] = in[j * n + i];
      }
    }
  }

  /** Byte shuffle of section 6: output byte j*n+i is byte j of element i. */
  static byte[] shuffle(byte[] in, int width) {
    if (width <= 1) {
      return in.clone();
    }
    int n = in.length / width;
    byte[] out = new byte[in.length];
    for (int j = 0; j < width; j++) {
      for (int i = 0; i < n; i++) {
        out[j * n + i] = in[i * width + j];
      }
    }
    return out;
  }

  /**
   * Checks 10 to 13, then the reconstruction of a lossy tensor (section 9.1; also a lossy chunk of
   * a streamed transfer, section 14.5).
   */
  static DecodedTensor decodeData(Tensor t, List<Frames.Frame> frames) {
    Lossy.Encoding lossy = lossyOf(t);
    int width = lossy != null ? Lossy.payloadElementWidth(lossy.method())
        : Dtypes.width(t.getDtypeValue());
    byte[] raw = new byte[Math.toIntExact(t.getRawSize())];
    decodeInto(t, frames, width, raw, 0);
    long[] shape = t.getShapeList().stream().mapToLong(Long::longValue).toArray();
    byte[] payload = null;
    if (lossy != null) {
      payload = raw;
      raw = Lossy.reconstruct(t.getDtypeValue(), numel(t.getShapeList()), lossy, payload);
    }
    return new DecodedTensor(t.getName(), t.getDtypeValue(), shape, t.getCodecValue(),
        t.getFilterValue(), t.getRawSize(), t.getCrc32C(), raw, lossy, payload);
  }

  /**
   * Checks 10 to 13 of a tensor that passed checks 1 to 9 ({@link #check}), its raw bytes (a
   * lossy tensor's payload) written into dst[off : off + raw_size): decompressed straight there,
   * or un-shuffled there from the decompressed bytes (elements of shuffleWidth bytes). On a
   * refusal that slice holds undefined bytes.
   */
  static void decodeInto(Tensor t, List<Frames.Frame> frames, int shuffleWidth, byte[] dst,
      int off) {
    int n = Math.toIntExact(t.getRawSize());
    if (t.getFilterValue() == 1 && shuffleWidth > 1) {
      byte[] filtered = frames == null ? t.getData().toByteArray()
          : Frames.decompress(t.getCodecValue(), t.getData().toByteArray(), frames, n);
      unshuffleInto(filtered, shuffleWidth, dst, off);
    } else if (frames == null) {
      t.getData().copyTo(dst, off);
    } else {
      Frames.decompressInto(t.getCodecValue(), t.getData().toByteArray(), frames, dst, off);
    }
    int crc = crc32c(dst, off, n);
    if (crc != t.getCrc32C()) {
      throw new FlwireException("crc32c", String.format(
          "the raw bytes have CRC-32C 0x%08x, crc32c is 0x%08x", crc, t.getCrc32C()));
    }
    if (t.getDtypeValue() == flwire.v1.TensorOuterClass.Dtype.DTYPE_BOOL_VALUE) {
      for (int k = 0; k < n; k++) {
        if ((dst[off + k] & 0xff) > 1) {
          throw new FlwireException("bool", String.format("byte %d is 0x%02x", k,
              dst[off + k] & 0xff));
        }
      }
    }
  }
}
