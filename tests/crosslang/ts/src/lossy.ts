/** Lossy payloads (spec section 9.1): their sizes, checks and reconstructions. */
import { refuse } from "./errors.js";
import { Dtype, Lossy } from "./gen/flwire/v1/tensor_pb.js";
import {
  bf16ToF32Bits, f32BitsToBf16, f32BitsToF64Bits, f32BitsToHalf, f32BitsToNumber,
  halfToF32Bits, numberToF32Bits,
} from "./floats.js";

export interface LossyParams {
  method: number;
  blockSize: number;
  k: bigint;
}

/** The payload size of the table in section 9.1, for n elements of width w. */
export function payloadSize(p: LossyParams, n: bigint, w: bigint): bigint {
  switch (p.method) {
    case Lossy.CAST_FLOAT16:
    case Lossy.CAST_BFLOAT16:
      return 2n * n;
    case Lossy.BLOCK_INT8: {
      const b = BigInt(p.blockSize);
      return 4n * ((n + b - 1n) / b) + n;
    }
    case Lossy.TOP_K:
      return p.k * (w + (n < 2n ** 32n ? 4n : 8n));
    default:
      throw new Error(`no payload size for method ${p.method}`);
  }
}

/**
 * Checks of section 9.1 made before allocating anything: `[lossy_method]`,
 * `[lossy_dtype]`, `[lossy_params]`, `[lossy_not_smaller]`, `[lossy_size]`,
 * `[lossy_filter]`. (`[limits]` is the caller's, with the logical size.)
 */
export function checkLossy(name: string, dtype: number, p: LossyParams, n: bigint, w: bigint, rawSize: bigint, filter: number): void {
  if (p.method < 1 || p.method > 4) refuse("lossy_method", `tensor '${name}': unknown lossy method ${p.method}`);
  const float = dtype === Dtype.FLOAT32 || dtype === Dtype.FLOAT64 || dtype === Dtype.FLOAT16 || dtype === Dtype.BFLOAT16;
  if (!float) refuse("lossy_dtype", `tensor '${name}': lossy method ${p.method} on a non-float dtype ${dtype}`);
  if ((p.method === Lossy.CAST_FLOAT16 || p.method === Lossy.CAST_BFLOAT16) && w === 2n) {
    refuse("lossy_dtype", `tensor '${name}': a cast of a 16-bit dtype ${dtype}`);
  }
  if (p.method === Lossy.BLOCK_INT8 && p.blockSize < 8) {
    refuse("lossy_params", `tensor '${name}': block int8 with block_size ${p.blockSize} (at least 8)`);
  }
  if (p.method === Lossy.TOP_K && 8n * p.k > n) {
    refuse("lossy_params", `tensor '${name}': top-k keeps ${p.k} of ${n} elements (at most one in 8)`);
  }
  if (p.method === Lossy.BLOCK_INT8 && n > 0n && payloadSize(p, n, w) >= n * w) {
    refuse("lossy_not_smaller", `tensor '${name}': block int8 payload of ${payloadSize(p, n, w)} bytes is not smaller than ${n * w}`);
  }
  const want = payloadSize(p, n, w);
  if (rawSize !== want) refuse("lossy_size", `tensor '${name}': raw_size ${rawSize}, but the lossy payload needs ${want}`);
  if ((p.method === Lossy.BLOCK_INT8 || p.method === Lossy.TOP_K) && filter !== 0) {
    refuse("lossy_filter", `tensor '${name}': lossy method ${p.method} with filter ${filter}`);
  }
}

/** The width of the elements the filter shuffles in a lossy payload. */
export function payloadShuffleWidth(p: LossyParams, dtypeWidth: number): number {
  return p.method === Lossy.CAST_FLOAT16 || p.method === Lossy.CAST_BFLOAT16 ? 2 : p.method === Lossy.BLOCK_INT8 ? 1 : dtypeWidth;
}

function writeF32BitsAs(dtype: number, bits: number, out: DataView, i: number): void {
  switch (dtype) {
    case Dtype.FLOAT32:
      out.setUint32(i * 4, bits, true);
      break;
    case Dtype.FLOAT64:
      out.setBigUint64(i * 8, f32BitsToF64Bits(bits), true);
      break;
    case Dtype.FLOAT16:
      out.setUint16(i * 2, f32BitsToHalf(bits), true);
      break;
    case Dtype.BFLOAT16:
      out.setUint16(i * 2, f32BitsToBf16(bits), true);
      break;
    default:
      throw new Error(`dtype ${dtype} is not a float dtype`);
  }
}

/** `[topk_indices]`: strictly ascending and below n, checked before the output is allocated. */
function topkIndices(name: string, payload: Uint8Array, k: number, w: number, n: bigint): bigint[] {
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const wide = n >= 2n ** 32n;
  const base = k * w;
  const out: bigint[] = [];
  let prev = -1n;
  for (let i = 0; i < k; i++) {
    const idx = wide ? view.getBigUint64(base + i * 8, true) : BigInt(view.getUint32(base + i * 4, true));
    if (idx <= prev) refuse("topk_indices", `tensor '${name}': top-k indices not strictly ascending (${prev}, ${idx})`);
    if (idx >= n) refuse("topk_indices", `tensor '${name}': top-k index ${idx} not below ${n}`);
    out.push(idx);
    prev = idx;
  }
  return out;
}

/** Reconstruct the logical tensor (n elements of dtype) from its decoded payload. */
export function reconstruct(name: string, dtype: number, p: LossyParams, payload: Uint8Array, n: number, w: number): Uint8Array {
  const pv = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  if (p.method === Lossy.TOP_K) {
    const k = Number(p.k);
    const idx = topkIndices(name, payload, k, w, BigInt(n));
    const out = new Uint8Array(n * w);
    for (let i = 0; i < k; i++) out.set(payload.subarray(i * w, (i + 1) * w), Number(idx[i]!) * w);
    return out;
  }
  const out = new Uint8Array(n * w);
  const ov = new DataView(out.buffer);
  if (p.method === Lossy.CAST_FLOAT16 || p.method === Lossy.CAST_BFLOAT16) {
    for (let i = 0; i < n; i++) {
      const h = pv.getUint16(i * 2, true);
      writeF32BitsAs(dtype, p.method === Lossy.CAST_FLOAT16 ? halfToF32Bits(h) : bf16ToF32Bits(h), ov, i);
    }
    return out;
  }
  // Block int8: ceil(n/B) float32 scales, then n int8 values; x = float32(q * scale).
  const b = p.blockSize;
  const blocks = Math.ceil(n / b);
  for (let i = 0; i < n; i++) {
    const scale = f32BitsToNumber(pv.getUint32(Math.floor(i / b) * 4, true));
    const q = pv.getInt8(blocks * 4 + i);
    writeF32BitsAs(dtype, numberToF32Bits(Math.fround(q * scale)), ov, i);
  }
  return out;
}
