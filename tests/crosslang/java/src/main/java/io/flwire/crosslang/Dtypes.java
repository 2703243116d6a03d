package io.flwire.crosslang;

import flwire.v1.TensorOuterClass.Dtype;

/** The dtypes of spec section 4: their widths, by enum value. */
public final class Dtypes {
  private Dtypes() {}

  // Index: the Dtype value; 0 = not a valid dtype (DTYPE_UNSPECIFIED).
  private static final int[] WIDTHS = {
    0, 4, 8, 2, 2, 1, 1, 1, 2, 4, 8, 1, 2, 4, 8, 1, 8, 16, 4, 1, 1, 1
  };

  /** Width in bytes of one element of the dtype with this enum value, or 0 if it is invalid. */
  public static int width(int dtype) {
    return dtype > 0 && dtype < WIDTHS.length ? WIDTHS[dtype] : 0;
  }

  /** The enum name of a valid dtype value, e.g. "DTYPE_FLOAT32". */
  public static String name(int dtype) {
    Dtype d = Dtype.forNumber(dtype);
    if (d == null || width(dtype) == 0) {
      throw new IllegalArgumentException("not a dtype: " + dtype);
    }
    return d.name();
  }

  public static boolean isFloating(int dtype) {
    return dtype == Dtype.DTYPE_FLOAT32_VALUE || dtype == Dtype.DTYPE_FLOAT64_VALUE
        || dtype == Dtype.DTYPE_FLOAT16_VALUE || dtype == Dtype.DTYPE_BFLOAT16_VALUE;
  }
}
