/**
 * IEEE conversions on bit patterns for the lossy reconstructions of spec
 * section 9.1: binary16 and bfloat16 widened exactly, float32 narrowed to
 * binary16 and bfloat16 with round-to-nearest-even. NaN signs and payloads
 * are kept by working on bits (a JS number may lose a NaN's sign).
 */

const f32 = new Float32Array(1);
const f32u = new Uint32Array(f32.buffer);
const f64 = new Float64Array(1);
const f64u = new BigUint64Array(f64.buffer);

/** binary16 bits -> binary32 bits, exactly. */
export function halfToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  let man = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (man << 13)) >>> 0;
  if (exp === 0) {
    if (man === 0) return sign >>> 0;
    let e = 127 - 15 + 1;
    while ((man & 0x400) === 0) {
      man <<= 1;
      e--;
    }
    return (sign | (e << 23) | ((man & 0x3ff) << 13)) >>> 0;
  }
  return (sign | ((exp - 15 + 127) << 23) | (man << 13)) >>> 0;
}

/** bfloat16 bits -> binary32 bits, exactly. */
export function bf16ToF32Bits(b: number): number {
  return (b << 16) >>> 0;
}

/** binary32 bits -> binary64 bits, exactly (NaN payloads shifted into place). */
export function f32BitsToF64Bits(b: number): bigint {
  const exp = (b >>> 23) & 0xff;
  if (exp === 0xff) {
    const sign = BigInt(b >>> 31) << 63n;
    return sign | (0x7ffn << 52n) | (BigInt(b & 0x7fffff) << 29n);
  }
  f32u[0] = b;
  f64[0] = f32[0]!;
  return f64u[0]!;
}

/** binary32 bits -> binary16 bits, round to nearest, ties to even; overflow to infinity. */
export function f32BitsToHalf(b: number): number {
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let man = b & 0x7fffff;
  if (exp === 0xff) return man ? sign | 0x7e00 | (man >>> 13) : sign | 0x7c00;
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    man |= 0x800000;
    const shift = 14 - e;
    let hm = man >>> shift;
    const rem = man & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (hm & 1) === 1)) hm++;
    return sign | hm;
  }
  let out = sign | (e << 10) | (man >>> 13);
  const rem = man & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (out & 1) === 1)) out++;
  return out;
}

/** binary32 bits -> bfloat16 bits, round to nearest, ties to even. */
export function f32BitsToBf16(b: number): number {
  if (((b >>> 23) & 0xff) === 0xff && (b & 0x7fffff) !== 0) return ((b >>> 16) & 0x8000) | 0x7fc0;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** The bits of a number that is exactly a binary32 value. */
export function numberToF32Bits(x: number): number {
  f32[0] = x;
  return f32u[0]!;
}

export function f32BitsToNumber(b: number): number {
  f32u[0] = b;
  return f32[0]!;
}
