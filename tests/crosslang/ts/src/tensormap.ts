/**
 * Decoding a flwire.v1.TensorMap (spec sections 2.4, 9.1, 10 and 11): the
 * bytes are parsed with the generated @bufbuild/protobuf schema, then every
 * reader check is made, checks 1-9 for all tensors before anything is
 * allocated or decompressed for their data.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

import { crc32c } from "./crc32c.js";
import { dtypeWidth, unshuffleInto } from "./dtypes.js";
import { FlwireError, refuse } from "./errors.js";
import { type Frame, type Lz4Frame, walkFrames } from "./frames.js";
import { Codec, Dtype, Filter, Lossy, type Tensor, type TensorMap, TensorMapSchema } from "./gen/flwire/v1/tensor_pb.js";
import { checkLossy, type LossyParams, payloadShuffleWidth, reconstruct } from "./lossy.js";
import { decodeLz4Frame } from "./lz4.js";
import { checkWireTypes } from "./wiretypes.js";
import { decodeZstdFrame } from "./zstd.js";

/** The reader's limits (section 11), with flwire-python's defaults. */
export interface Limits {
  maxTensorBytes: bigint;
  maxTotalBytes: bigint;
  maxTensors: number;
  maxTensorsPerMib: number;
  maxRank: number;
  maxUnknownBytes: number;
  /** Decoded bytes per byte of a map (and of a stream's records, section 14.5); null: no bound. */
  maxExpansion: number | null;
  expansionFloorBytes: number;
}

export const DEFAULT_LIMITS: Readonly<Limits> = {
  maxTensorBytes: 2n ** 32n,
  maxTotalBytes: 2n ** 32n,
  maxTensors: 100_000,
  maxTensorsPerMib: 1024,
  maxRank: 64,
  maxUnknownBytes: 64 * 1024,
  maxExpansion: 100,
  expansionFloorBytes: 16 * 1024 * 1024,
};

export interface DecodedTensor {
  name: string;
  dtype: Dtype;
  shape: bigint[];
  codec: Codec;
  filter: Filter;
  rawSize: bigint;
  crc32c: number;
  lossy?: LossyParams;
  /** The raw bytes (a lossy tensor: its payload), decoded and un-shuffled. */
  raw: Uint8Array;
  /** The logical tensor's little-endian bytes: `raw` when lossless, else the reconstruction. */
  value: Uint8Array;
}

export interface DecodedMap {
  tensors: DecodedTensor[];
  metadata: Record<string, string>;
}

/** A tensor that passed checks 1-8: what checks 10-13 need to decode it. */
export interface Plan {
  t: Tensor;
  width: number;
  n: bigint;
  lossy?: LossyParams;
  frames?: Frame[];
}

/** `[protobuf]` refusals of the parser, and `[max_tensors]` counted over the top-level fields first. */
function parse(bytes: Uint8Array, limits: Limits): TensorMap {
  let entries = 0;
  try {
    const r = new BinaryReader(bytes);
    while (r.pos < r.len) {
      const [no, wt] = r.tag();
      if (wt === WireType.LengthDelimited && (no === 1 || no === 2)) entries++;
      r.skip(wt, no);
    }
  } catch (e) {
    refuse("protobuf", `TensorMap: ${(e as Error).message}`);
  }
  const perSize = Math.max(1024, Math.floor((bytes.length * limits.maxTensorsPerMib) / 2 ** 20));
  if (entries > limits.maxTensors || entries > perSize) {
    refuse("max_tensors", `${entries} tensors and metadata entries (limit ${Math.min(limits.maxTensors, perSize)} for a map of ${bytes.length} bytes)`);
  }
  checkWireTypes(TensorMapSchema, bytes);
  try {
    return fromBinary(TensorMapSchema, bytes);
  } catch (e) {
    refuse("protobuf", `TensorMap: ${(e as Error).message}`);
  }
}

function unknownBytes(m: { $unknown?: { data: Uint8Array }[] }): number {
  let n = 0;
  for (const u of m.$unknown ?? []) n += u.data.length + 1;
  return n;
}

/** Checks 1-8 of section 10 (and 9.1's) for one tensor; nothing is allocated for its data. */
function plan(t: Tensor, limits: Limits, total: { bytes: bigint }): Plan {
  const name = t.name;
  const width = dtypeWidth(t.dtype);
  if (width === undefined) refuse("dtype", `tensor '${name}': dtype ${t.dtype} is not a known dtype other than 0`);
  if (t.shape.length > limits.maxRank) refuse("max_rank", `tensor '${name}': rank ${t.shape.length} above the limit ${limits.maxRank}`);
  let n = 1n;
  let strides = BigInt(width);
  for (const d of t.shape) {
    if (d < 0n) refuse("shape", `tensor '${name}': negative dimension ${d}`);
    n *= d;
    strides *= d > 1n ? d : 1n;
    if (strides >= 2n ** 63n) refuse("shape", `tensor '${name}': dimension product ${strides} not below 2^63`);
  }
  const w = BigInt(width);
  const lossy = t.lossy !== undefined && t.lossy.method !== Lossy.UNSPECIFIED
    ? { method: t.lossy.method as number, blockSize: t.lossy.blockSize, k: t.lossy.k }
    : undefined;
  const logical = n * w;
  if (lossy) {
    checkLossy(name, t.dtype, lossy, n, w, t.rawSize, t.filter);
  } else if (logical !== t.rawSize) {
    refuse("raw_size", `tensor '${name}': shape and dtype need ${logical} bytes, raw_size says ${t.rawSize}`);
  }
  if (logical > limits.maxTensorBytes || t.rawSize > limits.maxTensorBytes) {
    refuse("limits", `tensor '${name}': ${logical} decoded bytes above the per-tensor limit ${limits.maxTensorBytes}`);
  }
  total.bytes += logical;
  if (total.bytes > limits.maxTotalBytes) {
    refuse("limits", `tensor '${name}': ${total.bytes} decoded bytes in the map, above the per-map limit ${limits.maxTotalBytes}`);
  }
  if (t.codec !== Codec.UNSPECIFIED && t.codec !== Codec.ZSTD && t.codec !== Codec.LZ4) {
    refuse("codec", `tensor '${name}': unknown codec ${t.codec}`);
  }
  if (t.filter !== Filter.UNSPECIFIED && t.filter !== Filter.BYTE_SHUFFLE) refuse("filter", `tensor '${name}': unknown filter ${t.filter}`);
  const rawSize = Number(t.rawSize);
  let frames: Frame[] | undefined;
  if (t.codec === Codec.UNSPECIFIED) {
    if (t.data.length !== rawSize) refuse("data_size", `tensor '${name}': ${t.data.length} bytes of data for raw_size ${rawSize}`);
  } else {
    frames = t.codec === Codec.ZSTD ? walkFrames("zstd", t.data, rawSize) : walkFrames("lz4", t.data, rawSize);
  }
  if (rawSize === 0 && t.crc32c !== 0) refuse("empty_crc32c", `tensor '${name}': empty, but crc32c is ${t.crc32c}`);
  return lossy ? { t, width, n, lossy, frames } : { t, width, n, frames };
}

/**
 * Checks 10-13 of a planned tensor, its raw bytes (a lossy tensor's payload)
 * written into `out` (raw_size bytes, e.g. a slice of a larger buffer):
 * decompressed straight there, or un-shuffled there. After a refusal `out`
 * holds undefined bytes.
 */
export function decodeInto(p: Plan, out: Uint8Array): void {
  const { t } = p;
  const shuffleWidth = p.lossy ? payloadShuffleWidth(p.lossy, p.width) : p.width;
  const shuffled = t.filter === Filter.BYTE_SHUFFLE && shuffleWidth > 1;
  let filtered = shuffled ? new Uint8Array(out.length) : out;
  if (t.codec === Codec.UNSPECIFIED) {
    if (shuffled) filtered = t.data;
    else out.set(t.data);
  } else {
    let at = 0;
    for (const f of p.frames!) {
      const slice = filtered.subarray(at, at + f.contentSize);
      if (t.codec === Codec.ZSTD) decodeZstdFrame(t.data, f, slice);
      else decodeLz4Frame(t.data, f as Lz4Frame, slice);
      at += f.contentSize;
    }
  }
  if (shuffled) unshuffleInto(filtered, shuffleWidth, out);
  const crc = crc32c(out);
  if (crc !== t.crc32c) {
    refuse("crc32c", `tensor '${t.name}': CRC-32C of the raw bytes is ${crc.toString(16).padStart(8, "0")}, crc32c says ${t.crc32c.toString(16).padStart(8, "0")}`);
  }
  if (t.dtype === Dtype.BOOL) {
    const bad = out.findIndex((b) => b > 1);
    if (bad >= 0) refuse("bool", `tensor '${t.name}': bool byte ${out[bad]} at ${bad}`);
  }
}

/**
 * The logical elements of a planned tensor (n x width bytes) written into
 * `out`: a lossless tensor's raw bytes decoded straight there (decodeInto); a
 * lossy tensor's payload decoded into a buffer of its own, then reconstructed
 * there (section 9.1, `[topk_indices]`). A streamed chunk (section 14.5) is
 * decoded this way into its slice of its tensor.
 */
export function decodeValueInto(p: Plan, out: Uint8Array): void {
  if (!p.lossy) {
    decodeInto(p, out);
    return;
  }
  const payload = new Uint8Array(Number(p.t.rawSize));
  decodeInto(p, payload);
  out.set(reconstruct(p.t.name, p.t.dtype, p.lossy, payload, Number(p.n), p.width));
}

/** Checks 10-13 into a buffer of its own; then the lossy reconstruction. */
function decodeData(p: Plan): DecodedTensor {
  const { t } = p;
  const raw = new Uint8Array(Number(t.rawSize));
  decodeInto(p, raw);
  const value = p.lossy ? reconstruct(t.name, t.dtype, p.lossy, raw, Number(p.n), p.width) : raw;
  const out: DecodedTensor = {
    name: t.name, dtype: t.dtype, shape: t.shape, codec: t.codec, filter: t.filter,
    rawSize: t.rawSize, crc32c: t.crc32c, raw, value,
  };
  if (p.lossy) out.lossy = p.lossy;
  return out;
}

/** Decode a TensorMap, or throw FlwireError naming the check that failed (`options`: checkTensorMap's). */
export function decodeTensorMap(bytes: Uint8Array, limits: Limits = DEFAULT_LIMITS, options: { uniqueNames?: boolean } = {}): DecodedMap {
  const { map, plans } = checkTensorMap(bytes, limits, options);
  return { tensors: plans.map(decodeData), metadata: { ...map.metadata } };
}

/**
 * Parse a TensorMap and make every check that comes before decoding any data
 * (the map's limits, checks 1-9 of every tensor); decodeInto does the rest.
 * `uniqueNames: false` leaves out check 9 (unique names): a streamed chunk's
 * tensors are all unnamed (section 14.5), and its reader checks that.
 */
export function checkTensorMap(
  bytes: Uint8Array,
  limits: Limits = DEFAULT_LIMITS,
  { uniqueNames = true }: { uniqueNames?: boolean } = {},
): { map: TensorMap; plans: Plan[] } {
  const m = parse(bytes, limits);
  let unknown = unknownBytes(m);
  const total = { bytes: 0n };
  const names = new Set<string>();
  const plans: Plan[] = [];
  for (const t of m.tensors) {
    unknown += unknownBytes(t) + (t.lossy ? unknownBytes(t.lossy) : 0);
    if (unknown > limits.maxUnknownBytes) refuse("max_unknown_bytes", `${unknown} bytes of unknown fields, above ${limits.maxUnknownBytes}`);
    plans.push(plan(t, limits, total));
    if (uniqueNames && names.has(t.name)) refuse("unique_names", `two tensors are named '${t.name}'`);
    names.add(t.name);
  }
  const allowed = limits.maxExpansion === null ? Infinity : Math.max(limits.expansionFloorBytes, limits.maxExpansion * bytes.length);
  if (Number.isFinite(allowed) && total.bytes > BigInt(Math.floor(allowed))) {
    refuse("max_expansion", `a map of ${bytes.length} bytes declares ${total.bytes} decoded bytes (at most ${allowed})`);
  }
  return { map: m, plans };
}

export { FlwireError };
