/** Dtypes, codecs, filters and lossy methods of spec sections 4, 6, 7 and 9.1. */
import { Codec, Dtype, Filter, Lossy } from "./gen/flwire/v1/tensor_pb.js";

const WIDTHS: Record<number, number> = {
  [Dtype.FLOAT32]: 4, [Dtype.FLOAT64]: 8, [Dtype.FLOAT16]: 2, [Dtype.BFLOAT16]: 2,
  [Dtype.FLOAT8_E4M3FN]: 1, [Dtype.FLOAT8_E5M2]: 1, [Dtype.INT8]: 1, [Dtype.INT16]: 2,
  [Dtype.INT32]: 4, [Dtype.INT64]: 8, [Dtype.UINT8]: 1, [Dtype.UINT16]: 2,
  [Dtype.UINT32]: 4, [Dtype.UINT64]: 8, [Dtype.BOOL]: 1, [Dtype.COMPLEX64]: 8,
  [Dtype.COMPLEX128]: 16, [Dtype.COMPLEX32]: 4, [Dtype.FLOAT8_E4M3FNUZ]: 1,
  [Dtype.FLOAT8_E5M2FNUZ]: 1, [Dtype.FLOAT8_E8M0FNU]: 1,
};

/** The width in bytes of one element, or undefined for DTYPE_UNSPECIFIED and unknown values. */
export function dtypeWidth(dtype: number): number | undefined {
  return WIDTHS[dtype];
}

/** The enum value's name exactly as in tensor.proto ("DTYPE_FLOAT32"). */
export function dtypeName(dtype: number): string {
  const n = Dtype[dtype];
  if (n === undefined) throw new Error(`unknown dtype ${dtype}`);
  return `DTYPE_${n}`;
}

export function dtypeFromName(name: string): Dtype {
  const v = (Dtype as unknown as Record<string, number>)[name.replace(/^DTYPE_/, "")];
  if (v === undefined) throw new Error(`unknown dtype name ${name}`);
  return v as Dtype;
}

export function codecName(codec: number): string {
  const n = Codec[codec];
  if (n === undefined) throw new Error(`unknown codec ${codec}`);
  return `CODEC_${n}`;
}

export function filterName(filter: number): string {
  const n = Filter[filter];
  if (n === undefined) throw new Error(`unknown filter ${filter}`);
  return `FILTER_${n}`;
}

export function lossyName(method: number): string {
  const n = Lossy[method];
  if (n === undefined) throw new Error(`unknown lossy method ${method}`);
  return `LOSSY_${n}`;
}

export const FLOAT_DTYPES: ReadonlySet<number> = new Set([
  Dtype.FLOAT32, Dtype.FLOAT64, Dtype.FLOAT16, Dtype.BFLOAT16,
]);

/** Byte shuffle (spec section 6): byte j of element i goes to j*n + i. */
export function shuffle(raw: Uint8Array, width: number): Uint8Array {
  if (width <= 1) return raw;
  const n = raw.length / width;
  const out = new Uint8Array(raw.length);
  for (let j = 0; j < width; j++) {
    const base = j * n;
    for (let i = 0; i < n; i++) out[base + i] = raw[i * width + j]!;
  }
  return out;
}

/** The inverse of shuffle: byte j*n + i goes back to i*width + j. */
export function unshuffle(filtered: Uint8Array, width: number): Uint8Array {
  if (width <= 1) return filtered;
  return unshuffleInto(filtered, width, new Uint8Array(filtered.length));
}

/** unshuffle into `out` (of filtered.length bytes, e.g. a slice of a larger buffer); returns `out`. */
export function unshuffleInto(filtered: Uint8Array, width: number, out: Uint8Array): Uint8Array {
  const n = filtered.length / width;
  for (let j = 0; j < width; j++) {
    const base = j * n;
    for (let i = 0; i < n; i++) out[i * width + j] = filtered[base + i]!;
  }
  return out;
}
