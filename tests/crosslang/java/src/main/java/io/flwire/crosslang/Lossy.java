package io.flwire.crosslang;

import flwire.v1.TensorOuterClass.Dtype;
import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/** Lossy tensors (spec section 9.1): the reader's checks, then the reconstruction. */
final class Lossy {
  private Lossy() {}

  static final int CAST_FLOAT16 = 1;
  static final int CAST_BFLOAT16 = 2;
  static final int BLOCK_INT8 = 3;
  static final int TOP_K = 4;

  /** A tensor's lossy encoding; method is never 0 (lossless). */
  record Encoding(int method, long blockSize, long k) {
    String methodName() {
      flwire.v1.TensorOuterClass.Lossy l = flwire.v1.TensorOuterClass.Lossy.forNumber(method);
      return l == null ? String.valueOf(method) : l.name();
    }
  }

  static boolean isCast(int method) {
    return method == CAST_FLOAT16 || method == CAST_BFLOAT16;
  }

  /** The element width a filter works on in a payload: 2 for casts, else bytes. */
  static int payloadElementWidth(int method) {
    return isCast(method) ? 2 : 1;
  }

  static int topKIndexWidth(long n) {
    return n < (1L << 32) ? 4 : 8;
  }

  /**
   * The checks of section 9.1 made before anything is allocated: method, dtype, the logical size
   * against the per-tensor limit, block_size and k, raw_size equal to the payload size, filter.
   */
  static void check(int dtype, long n, long rawSize, int filter, Encoding l, Limits lim) {
    String dname = Dtypes.name(dtype);
    switch (l.method()) {
      case CAST_FLOAT16, CAST_BFLOAT16 -> {
        if (dtype != Dtype.DTYPE_FLOAT32_VALUE && dtype != Dtype.DTYPE_FLOAT64_VALUE) {
          throw new FlwireException("lossy_dtype", l.methodName() + " of a " + dname
              + " tensor (casts apply to float32 and float64)");
        }
      }
      case BLOCK_INT8, TOP_K -> {
        if (!Dtypes.isFloating(dtype)) {
          throw new FlwireException("lossy_dtype", l.methodName() + " of a " + dname
              + " tensor (floating tensors only)");
        }
      }
      default -> throw new FlwireException("lossy_method", "lossy method " + l.method()
          + " is unknown to this reader; upgrade");
    }
    int w = Dtypes.width(dtype);
    BigInteger logical = BigInteger.valueOf(n).multiply(BigInteger.valueOf(w));
    if (logical.compareTo(BigInteger.valueOf(lim.maxTensorBytes())) > 0) {
      throw new FlwireException("limits", "decodes to " + logical
          + " bytes, above the per-tensor limit " + lim.maxTensorBytes());
    }
    BigInteger size;
    switch (l.method()) {
      case BLOCK_INT8 -> {
        if (l.blockSize() < 8) {
          throw new FlwireException("lossy_params", "block_size " + l.blockSize() + " (must be >= 8)");
        }
        long blocks = (n + l.blockSize() - 1) / l.blockSize();
        size = BigInteger.valueOf(blocks).multiply(BigInteger.valueOf(4)).add(BigInteger.valueOf(n));
        if (n > 0 && size.compareTo(logical) >= 0) {
          throw new FlwireException("lossy_not_smaller", "its payload of " + size
              + " bytes is not smaller than the tensor's " + logical + " raw bytes");
        }
      }
      case TOP_K -> {
        BigInteger k = new BigInteger(Long.toUnsignedString(l.k()));
        if (k.compareTo(BigInteger.valueOf(n / 8)) > 0) {
          throw new FlwireException("lossy_params", "top-k keeps k=" + k + " elements of a tensor of "
              + n + " elements (at most one in 8)");
        }
        size = k.multiply(BigInteger.valueOf(w + topKIndexWidth(n)));
      }
      default -> size = BigInteger.valueOf(2).multiply(BigInteger.valueOf(n));
    }
    if (!size.equals(new BigInteger(Long.toUnsignedString(rawSize)))) {
      throw new FlwireException("lossy_size", "the " + l.methodName() + " payload takes " + size
          + " bytes, raw_size is " + Long.toUnsignedString(rawSize));
    }
    if (filter != 0 && !isCast(l.method())) {
      throw new FlwireException("lossy_filter", "a " + l.methodName()
          + " payload must not be filtered (filter is " + filter + ")");
    }
  }

  /** Reconstructs the logical tensor (n elements of dtype) from a checked, decoded payload. */
  static byte[] reconstruct(int dtype, long n, Encoding l, byte[] payload) {
    ByteBuffer in = ByteBuffer.wrap(payload).order(ByteOrder.LITTLE_ENDIAN);
    int w = Dtypes.width(dtype);
    int count = Math.toIntExact(n);
    switch (l.method()) {
      case CAST_FLOAT16, CAST_BFLOAT16 -> {
        ByteBuffer out = ByteBuffer.allocate(count * w).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < count; i++) {
          int h = in.getShort(2 * i) & 0xffff;
          int f = l.method() == CAST_FLOAT16 ? Floats.float16ToFloat32(h) : h << 16;
          putFromFloat32(dtype, out, i, f);
        }
        return out.array();
      }
      case BLOCK_INT8 -> {
        int bs = (int) l.blockSize();
        int blocks = (int) ((n + bs - 1) / bs);
        ByteBuffer out = ByteBuffer.allocate(count * w).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < count; i++) {
          float scale = in.getFloat(4 * (i / bs));
          float x = (float) payload[4 * blocks + i] * scale; // one float32 multiplication
          putFromFloat32(dtype, out, i, Float.floatToRawIntBits(x));
        }
        return out.array();
      }
      default -> {
        int k = (int) l.k();
        int iw = topKIndexWidth(n);
        long previous = -1;
        for (int j = 0; j < k; j++) {
          long at = iw == 4 ? in.getInt(k * w + 4 * j) & 0xffffffffL : in.getLong(k * w + 8 * j);
          if (j > 0 && Long.compareUnsigned(at, previous) <= 0) {
            throw new FlwireException("topk_indices", "indices are not strictly ascending (index "
                + at + " at position " + j + " follows " + previous + ")");
          }
          if (Long.compareUnsigned(at, n) >= 0) {
            throw new FlwireException("topk_indices", "index " + Long.toUnsignedString(at)
                + " is out of range for " + n + " elements");
          }
          previous = at;
        }
        byte[] out = new byte[count * w]; // zeros: +0 in every float dtype
        for (int j = 0; j < k; j++) {
          long at = iw == 4 ? in.getInt(k * w + 4 * j) & 0xffffffffL : in.getLong(k * w + 8 * j);
          System.arraycopy(payload, j * w, out, (int) at * w, w);
        }
        return out;
      }
    }
  }

  /** Stores the float32 with bits f as element i, converted to dtype (section 9.1). */
  private static void putFromFloat32(int dtype, ByteBuffer out, int i, int f) {
    switch (dtype) {
      case Dtype.DTYPE_FLOAT32_VALUE -> out.putInt(4 * i, f);
      case Dtype.DTYPE_FLOAT64_VALUE -> out.putDouble(8 * i, Floats.float32ToFloat64(f));
      case Dtype.DTYPE_FLOAT16_VALUE -> out.putShort(2 * i, (short) Floats.float32ToFloat16(f));
      case Dtype.DTYPE_BFLOAT16_VALUE -> out.putShort(2 * i, (short) Floats.float32ToBfloat16(f));
      default -> throw new IllegalStateException("not a floating dtype: " + dtype);
    }
  }
}
