/**
 * The known values produce-update writes, so that a test can compute the
 * aggregate independently (numpy): for the element of flat C-order index j,
 *   u_j = ((j * 2654435761) mod 2^32) / 2^32 - 0.5      (exact in float64)
 *   float64: V + u_j;  float32: float32(V + u_j);
 *   float16 / bfloat16: float32(V + u_j) rounded to nearest-even;
 *   integer dtypes: j mod 100;  bool: j mod 2;  other dtypes: zero bytes.
 * The sequence is not periodic over a tensor, so zstd leaves it near its raw size.
 */
import { Dtype } from "./gen/flwire/v1/tensor_pb.js";
import { dtypeWidth } from "./dtypes.js";
import { f32BitsToBf16, f32BitsToHalf, numberToF32Bits } from "./floats.js";

export function knownValue(j: number, v: number): number {
  return v + (Math.imul(j, 0x9e3779b1) >>> 0) / 2 ** 32 - 0.5;
}

export function knownRaw(dtype: Dtype, n: number, v: number): Uint8Array {
  const w = dtypeWidth(dtype)!;
  const out = new Uint8Array(n * w);
  const view = new DataView(out.buffer);
  for (let j = 0; j < n; j++) {
    const x = knownValue(j, v);
    switch (dtype) {
      case Dtype.FLOAT64: view.setFloat64(j * 8, x, true); break;
      case Dtype.FLOAT32: view.setFloat32(j * 4, x, true); break;
      case Dtype.FLOAT16: view.setUint16(j * 2, f32BitsToHalf(numberToF32Bits(Math.fround(x))), true); break;
      case Dtype.BFLOAT16: view.setUint16(j * 2, f32BitsToBf16(numberToF32Bits(Math.fround(x))), true); break;
      case Dtype.INT8: case Dtype.UINT8: out[j] = j % 100; break;
      case Dtype.INT16: case Dtype.UINT16: view.setUint16(j * 2, j % 100, true); break;
      case Dtype.INT32: case Dtype.UINT32: view.setUint32(j * 4, j % 100, true); break;
      case Dtype.INT64: case Dtype.UINT64: view.setBigUint64(j * 8, BigInt(j % 100), true); break;
      case Dtype.BOOL: out[j] = j % 2; break;
      default: break;
    }
  }
  return out;
}
