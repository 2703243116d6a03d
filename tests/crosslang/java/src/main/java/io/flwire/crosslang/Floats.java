package io.flwire.crosslang;

/** IEEE 754 conversions on bit patterns (spec sections 4 and 9.1). */
final class Floats {
  private Floats() {}

  /** binary16 to binary32, exactly; NaNs keep their sign and payload bits. */
  static int float16ToFloat32(int h) {
    int sign = (h & 0x8000) << 16;
    int exp = (h >> 10) & 0x1f;
    int mant = h & 0x3ff;
    if (exp == 0x1f) {
      return sign | 0x7f800000 | mant << 13;
    }
    if (exp == 0) {
      if (mant == 0) {
        return sign;
      }
      int e = 127 - 14;
      while ((mant & 0x400) == 0) {
        mant <<= 1;
        e--;
      }
      return sign | e << 23 | (mant & 0x3ff) << 13;
    }
    return sign | (exp + 127 - 15) << 23 | mant << 13;
  }

  /**
   * binary32 to binary64, exactly. NaN payloads: Java's widening conversion keeps the payload
   * bits of a quiet NaN, and the golden vectors' widened NaNs are the quiet canonical ones.
   */
  static double float32ToFloat64(int f) {
    int exp = (f >>> 23) & 0xff;
    long sign = ((long) f >>> 31) << 63;
    long mant = f & 0x7fffffL;
    if (exp == 0xff) {
      return Double.longBitsToDouble(sign | 0x7ffL << 52 | mant << 29);
    }
    return Float.intBitsToFloat(f); // finite values widen exactly
  }

  /** binary32 to the nearest binary16, ties to even; beyond its range, infinity. */
  static int float32ToFloat16(int f) {
    int sign = (f >>> 16) & 0x8000;
    int exp = (f >>> 23) & 0xff;
    int mant = f & 0x7fffff;
    if (exp == 0xff) {
      return mant == 0 ? sign | 0x7c00 : sign | 0x7e00 | (mant >>> 13);
    }
    int sig = mant | 1 << 23;
    int e = exp - 127;
    if (exp == 0) {
      sig = mant;
      e = -126;
    }
    int shift = 13;
    if (e < -14) {
      shift = Math.min(13 - 14 - e, 25);
    }
    int q = sig >>> shift;
    int rest = sig & ((1 << shift) - 1);
    int half = 1 << (shift - 1);
    if (rest > half || (rest == half && (q & 1) == 1)) {
      q++;
    }
    int h = e >= -14 ? ((e + 14) << 10) + q : q;
    if (h >= 0x7c00) {
      h = 0x7c00;
    }
    return sign | h;
  }

  /** binary32 to the nearest bfloat16, ties to even. */
  static int float32ToBfloat16(int f) {
    if ((f & 0x7fffffff) > 0x7f800000) {
      return ((f >>> 16) | 0x40) & 0xffff;
    }
    return ((f + 0x7fff + ((f >>> 16) & 1)) >>> 16) & 0xffff;
  }
}
