/**
 * Writing a TensorMap in the canonical form of spec section 2.3: the fields of
 * each Tensor in field-number order (protobuf-es serializes them so), proto3
 * defaults omitted, packed shape, metadata entries ordered by the UTF-8 bytes
 * of their keys, and the alignment padding of rule 7 computed here.
 */
import { create, toBinary } from "@bufbuild/protobuf";

import { crc32c } from "./crc32c.js";
import { dtypeWidth, shuffle } from "./dtypes.js";
import {
  Codec, Dtype, Filter, type LossyEncoding, LossyEncodingSchema, type Tensor, TensorMapSchema, TensorSchema,
} from "./gen/flwire/v1/tensor_pb.js";
import { compressZstdFrame } from "./zstd.js";

/** A tensor as it goes on the wire, before padding. */
export interface WireTensor {
  name: string;
  dtype: Dtype;
  shape: bigint[];
  codec: Codec;
  filter: Filter;
  rawSize: bigint;
  crc32c: number;
  data: Uint8Array;
  lossy?: { method: number; blockSize: number; k: bigint };
}

export const FRAME_CONTENT = 524_288;

export const varintLen = (v: number): number => {
  let n = 1;
  while (v >= 128) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
};

/**
 * Section 9, steps 2-4, for zstd or none: the CRC-32C of the raw bytes, then,
 * when compressing, the (shuffled) bytes cut every 524,288 bytes into zstd
 * frames, kept only when strictly smaller than raw_size.
 */
export interface EncodeOptions {
  compression: "none" | "zstd";
  level?: number;
  shuffle?: boolean;
}

/**
 * `raw` is the tensor's raw bytes, or a lossy tensor's payload (section 9.1)
 * with `shuffleWidth` its element width (2 for the casts).
 */
export function toWire(name: string, dtype: Dtype, shape: bigint[], raw: Uint8Array, opts: EncodeOptions, shuffleWidth?: number): WireTensor {
  const width = shuffleWidth ?? dtypeWidth(dtype)!;
  const base = { name, dtype, shape, rawSize: BigInt(raw.length), crc32c: crc32c(raw) };
  if (opts.compression === "zstd" && raw.length > 0) {
    const shuffled = opts.shuffle === true && width > 1;
    const filtered = shuffled ? shuffle(raw, width) : raw;
    const frames: Uint8Array[] = [];
    let size = 0;
    for (let at = 0; at < filtered.length; at += FRAME_CONTENT) {
      const f = compressZstdFrame(filtered.subarray(at, at + FRAME_CONTENT), opts.level ?? 1);
      frames.push(f);
      size += f.length;
    }
    if (size < raw.length) {
      const data = new Uint8Array(size);
      let at = 0;
      for (const f of frames) {
        data.set(f, at);
        at += f.length;
      }
      return { ...base, codec: Codec.ZSTD, filter: shuffled ? Filter.BYTE_SHUFFLE : Filter.UNSPECIFIED, data };
    }
  }
  return { ...base, codec: Codec.UNSPECIFIED, filter: Filter.UNSPECIFIED, data: raw };
}

function tensorMessage(w: WireTensor, padding: number): Tensor {
  const t = create(TensorSchema, {
    name: w.name, dtype: w.dtype, shape: w.shape, codec: w.codec, filter: w.filter,
    rawSize: w.rawSize, crc32c: w.crc32c, padding: new Uint8Array(padding), data: w.data,
  });
  if (w.lossy && w.lossy.method !== 0) t.lossy = create(LossyEncodingSchema, w.lossy) as LossyEncoding;
  return t;
}

/** Rule 7: the shortest zero-filled padding payload (0 = no field) that puts `data` at a multiple of 64 from the map's start. */
export function paddingFor(w: WireTensor, start: number): number {
  if (w.codec !== Codec.UNSPECIFIED || w.data.length === 0) return 0;
  const fields17 = toBinary(TensorSchema, tensorMessage({ ...w, data: new Uint8Array(0), lossy: undefined }, 0)).length;
  const dataField = 1 + varintLen(w.data.length) + w.data.length;
  const lossyLen = w.lossy && w.lossy.method !== 0 ? toBinary(LossyEncodingSchema, create(LossyEncodingSchema, w.lossy)).length : -1;
  const lossyField = lossyLen < 0 ? 0 : 1 + varintLen(lossyLen) + lossyLen;
  for (let q = 0; ; q++) {
    const padField = q === 0 ? 0 : 1 + varintLen(q) + q;
    const body = fields17 + padField + dataField + lossyField;
    const offset = start + 1 + varintLen(body) + fields17 + padField + 1 + varintLen(w.data.length);
    if (offset % 64 === 0) return q;
  }
}

const utf8 = new TextEncoder();

/** The canonical TensorMap bytes of section 2.3. */
export function encodeTensorMap(tensors: WireTensor[], metadata: Record<string, string> = {}): Uint8Array {
  const out: Tensor[] = [];
  let start = 0;
  for (const w of tensors) {
    const t = tensorMessage(w, paddingFor(w, start));
    const len = toBinary(TensorSchema, t).length;
    start += 1 + varintLen(len) + len;
    out.push(t);
  }
  const keys = Object.keys(metadata).sort((a, b) => Buffer.compare(utf8.encode(a), utf8.encode(b)));
  const sorted: Record<string, string> = {};
  for (const k of keys) sorted[k] = metadata[k]!;
  return toBinary(TensorMapSchema, create(TensorMapSchema, { tensors: out, metadata: sorted }));
}
