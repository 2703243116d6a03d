/**
 * The known values produce-update writes (the contract of
 * tests/integration/test_crosslang_live.py, which computes them with numpy):
 * for tensor j (0-based, in the global model's order) and its element of flat
 * C-order index i,
 *   h = ((i + 1) * 2654435761 + j * 40503) mod 2^32
 *   float32, float64: ((h >> 8) - 2^23) / 256
 *   float16: ((h >> 21) - 1024) / 16          (exact in binary16)
 *   bfloat16: the float16 value, rounded to nearest-even
 *   int64, uint64: h;  other integer dtypes: h's low bytes;  bool: h & 1;
 *   other dtypes: zero bytes.
 */
import { dtypeWidth } from "./dtypes.js";
import { f32BitsToBf16, f32BitsToHalf, numberToF32Bits } from "./floats.js";
import { Dtype } from "./gen/flwire/v1/tensor_pb.js";

export function knownHash(j: number, i: number): number {
  return (Math.imul(i + 1, 2654435761) + j * 40503) >>> 0;
}

export function knownRaw(j: number, dtype: Dtype, n: number): Uint8Array {
  const w = dtypeWidth(dtype)!;
  const out = new Uint8Array(n * w);
  const view = new DataView(out.buffer);
  for (let i = 0; i < n; i++) {
    const h = knownHash(j, i);
    const wide = ((h >>> 8) - 2 ** 23) / 256;
    const half = ((h >>> 21) - 1024) / 16;
    switch (dtype) {
      case Dtype.FLOAT64: view.setFloat64(i * 8, wide, true); break;
      case Dtype.FLOAT32: view.setFloat32(i * 4, wide, true); break;
      case Dtype.FLOAT16: view.setUint16(i * 2, f32BitsToHalf(numberToF32Bits(half)), true); break;
      case Dtype.BFLOAT16: view.setUint16(i * 2, f32BitsToBf16(numberToF32Bits(half)), true); break;
      case Dtype.INT64: case Dtype.UINT64: view.setBigUint64(i * 8, BigInt(h), true); break;
      case Dtype.INT32: case Dtype.UINT32: view.setUint32(i * 4, h, true); break;
      case Dtype.INT16: case Dtype.UINT16: view.setUint16(i * 2, h & 0xffff, true); break;
      case Dtype.INT8: case Dtype.UINT8: out[i] = h & 0xff; break;
      case Dtype.BOOL: out[i] = h & 1; break;
      default: break;
    }
  }
  return out;
}
