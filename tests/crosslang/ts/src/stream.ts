/**
 * Streamed transfers (spec section 14.5), read from the spec alone.
 * `StreamReader.add` takes the record values of the transfers' parts in the
 * order they arrive: it checks each part against its transfer, decodes each
 * chunk straight into its tensors' buffers as it arrives (a packed chunk
 * holds the elements of several tensors), and returns the
 * message once its seal checked out. A refusal is a FlwireError whose `check`
 * is the id of section 14.5 (STREAM_CHECKS); a refused transfer is given up,
 * and its later parts are skipped. `verifyStream` (signing.ts) verifies a
 * signed message's seal.
 */
import { type DescField, fromBinary } from "@bufbuild/protobuf";
import { reflect } from "@bufbuild/protobuf/reflect";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { blake3 } from "@noble/hashes/blake3.js";

import { crc32c } from "./crc32c.js";
import { dtypeWidth } from "./dtypes.js";
import { checkEnvelope } from "./envelope.js";
import { FlwireError, refuse } from "./errors.js";
import { type Envelope, EnvelopeSchema, type Signature } from "./gen/flwire/v1/messages_pb.js";
import { type Dtype, TensorMapSchema } from "./gen/flwire/v1/tensor_pb.js";
import { type StreamHead, StreamHeadSchema, type StreamSeal, StreamSealSchema, type TensorInfo } from "./gen/flwire/v1/transfer_pb.js";
import { checkTensorMap, DEFAULT_LIMITS, decodeValueInto, type Limits } from "./tensormap.js";
import { checkWireTypes } from "./wiretypes.js";

/** The check ids of section 14.5. */
export const STREAM_CHECKS = [
  "stream_part", "stream_gap", "stream_no_head", "stream_head", "chunk_tensor_index", "chunk_offset",
  "chunk_elements", "chunk_overrun", "chunk_packed", "chunk_decode", "stream_part_count",
  "stream_crc32c", "stream_incomplete", "stream_signed",
] as const;

/** The bounds of a reader: section 11's limits and flwire-python's stream defaults (section 14.5). */
export interface StreamBounds {
  limits: Limits;
  maxStreamBytes: bigint;
  maxPendingBytes: bigint;
  maxStreams: number;
}

export const DEFAULT_STREAM_BOUNDS: Readonly<StreamBounds> = {
  limits: DEFAULT_LIMITS,
  maxStreamBytes: 16n << 30n,
  maxPendingBytes: 32n << 30n,
  maxStreams: 64,
};

const PER_TRANSFER_BYTES = 4096n;
/** This reader's own bound: a tensor is held in one Uint8Array (Node's limit is 2^32 bytes or less). */
const MAX_TENSOR_BYTES = 2n ** 32n - 1n;
const MAX_ENDED = 10_000;
const MAX_ID_BYTES = 128;

export interface StreamTensor {
  name: string;
  dtype: Dtype;
  shape: bigint[];
  raw: Uint8Array;
}

/** A streamed transfer that checked out. */
export interface StreamMessage {
  transferId: string;
  envelope: Envelope;
  /** The body's field name, e.g. "client_update". */
  type: string;
  /** The head's tensors, in its order. */
  tensors: StreamTensor[];
  /** The seal's signature, and BLAKE3 of the parts before the seal (only when the head said signed). */
  signature?: Signature;
  digest?: Uint8Array;
  /** CRC-32C of the parts before the seal. */
  crc32c: number;
  parts: number;
}

/** A record value parsed as a StreamPart: exactly one of head, chunk and seal. */
export interface ParsedPart {
  transferId: string;
  index: number;
  head?: StreamHead;
  chunk?: { tensorIndex: number; elementOffset: bigint; elements: Uint8Array };
  seal?: StreamSeal;
}

const bad = (why: string): never => refuse("stream_part", why);

/** A 32-bit varint field; protobuf-es would keep the low 32 bits of a larger value. */
function uint32(r: BinaryReader, what: string): number {
  const v = BigInt(r.uint64());
  if (v >= 2n ** 32n) bad(`${what} ${v} does not fit 32 bits`);
  return Number(v);
}

/** A message field's bytes parsed with the generated schema, its wire types checked first. */
function parseItem<T>(what: string, bytes: Uint8Array, parse: () => T, schema: Parameters<typeof checkWireTypes>[0]): T {
  try {
    checkWireTypes(schema, bytes);
    return parse();
  } catch (e) {
    return bad(`${what}: ${(e as Error).message}`);
  }
}

function parseChunk(b: Uint8Array): NonNullable<ParsedPart["chunk"]> {
  let tensorIndex = 0;
  let elementOffset = 0n;
  let elements: Uint8Array | undefined;
  try {
    const r = new BinaryReader(b);
    while (r.pos < r.len) {
      const [no, wt] = r.tag();
      if (no === 1 || no === 2) {
        if (wt !== WireType.Varint) bad(`chunk field ${no} is not a varint`);
        if (no === 1) tensorIndex = uint32(r, "tensor_index");
        else elementOffset = BigInt(r.uint64());
      } else if (no === 3) {
        if (wt !== WireType.LengthDelimited) bad("elements is not length-delimited");
        if (elements !== undefined) bad("the chunk gives its elements twice");
        elements = r.bytes();
      } else {
        r.skip(wt, no);
      }
    }
  } catch (e) {
    if (e instanceof FlwireError) throw e;
    bad(`chunk: ${(e as Error).message}`);
  }
  if (elements === undefined) bad("a chunk without elements");
  return { tensorIndex, elementOffset, elements: elements! };
}

/**
 * Walk a record value's fields by hand (`[stream_part]`): head, chunk and seal
 * occur exactly once in all (protobuf would merge a repeated message field),
 * a chunk's elements once, part_index and tensor_index fit 32 bits, the
 * transfer_id is 1 to 128 bytes of valid UTF-8, and the head is part 0, and
 * only it.
 */
export function parseStreamPart(b: Uint8Array): ParsedPart {
  let id: Uint8Array | undefined;
  let index = 0;
  let items = 0;
  let item: [number, Uint8Array] | undefined;
  try {
    const r = new BinaryReader(b);
    while (r.pos < r.len) {
      const [no, wt] = r.tag();
      if (no === 1 || (no >= 3 && no <= 5)) {
        if (wt !== WireType.LengthDelimited) bad(`field ${no} is not length-delimited`);
        const v = r.bytes();
        if (no === 1) id = v;
        else {
          items++;
          item = [no, v];
        }
      } else if (no === 2) {
        if (wt !== WireType.Varint) bad("part_index is not a varint");
        index = uint32(r, "part_index");
      } else {
        r.skip(wt, no);
      }
    }
  } catch (e) {
    if (e instanceof FlwireError) throw e;
    bad((e as Error).message);
  }
  if (id === undefined || id.length === 0 || id.length > MAX_ID_BYTES) bad(`transfer_id absent, empty or longer than ${MAX_ID_BYTES} bytes`);
  let transferId = "";
  try {
    transferId = new TextDecoder("utf-8", { fatal: true }).decode(id);
  } catch {
    bad("transfer_id is not valid UTF-8");
  }
  if (items !== 1 || item === undefined) return bad(`${items} of head, chunk and seal, where exactly one is allowed`);
  const [no, v] = item;
  const out: ParsedPart = { transferId, index };
  if (no === 3) out.head = parseItem("head", v, () => fromBinary(StreamHeadSchema, v), StreamHeadSchema);
  else if (no === 5) out.seal = parseItem("seal", v, () => fromBinary(StreamSealSchema, v), StreamSealSchema);
  else out.chunk = parseChunk(v);
  if ((index === 0) !== (out.head !== undefined)) bad(`part ${index} ${out.head ? "holds a head" : "holds no head"}: the head is part 0, and only it`);
  return out;
}

interface Slot {
  info: TensorInfo;
  width: number;
  numel: bigint;
  raw?: Uint8Array; // made at the tensor's first chunk
  filled: bigint; // the next element expected
}

interface Transfer {
  id: string;
  envelope: Envelope;
  type: string;
  tensors: Slot[];
  held: bigint; // the declared bytes, plus PER_TRANSFER_BYTES
  next: number;
  arrived: number; // bytes of the records taken, the head included
  decoded: number; // bytes the chunks decode to (a lossy chunk's k x width, not its payload's)
  crc: number;
  digest?: ReturnType<typeof blake3.create>; // of every part, for a signed head
}

const headRefusal = (why: string): never => refuse("stream_head", why);

/** The body's TensorMap field (weights; a PartialAggregate's sums). */
function tensorMapField(env: Envelope): DescField | undefined {
  const f = EnvelopeSchema.fields.find((x) => x.localName === env.body.case);
  return f?.message?.fields.find((x) => x.fieldKind === "message" && x.message.typeName === TensorMapSchema.typeName);
}

function rethrowAs(check: string, e: unknown): never {
  if (e instanceof FlwireError) refuse(check, e.message);
  throw e;
}

export class StreamReader {
  private readonly open = new Map<string, Transfer>();
  private readonly ended = new Set<string>();
  private pendingBytes = 0n;
  /** Parts skipped: copies of parts already taken, parts of transfers that ended. */
  skipped = 0;

  constructor(private readonly bounds: StreamBounds = DEFAULT_STREAM_BOUNDS) {}

  /** Transfers under way. */
  pending(): number {
    return this.open.size;
  }

  /**
   * Take one record value: the message when it was a seal that checked out,
   * undefined when the part was taken or skipped; a refusal is thrown.
   */
  add(value: Uint8Array): StreamMessage | undefined {
    const p = parseStreamPart(value); // a bad record ends no transfer: its id cannot be trusted
    if (this.ended.has(p.transferId)) {
      this.skipped++;
      return undefined;
    }
    const t = this.open.get(p.transferId);
    if (t === undefined) {
      if (p.head === undefined) {
        this.end(p.transferId);
        refuse("stream_no_head", `part ${p.index} of ${p.transferId}, whose head this reader did not see`);
      }
      let started: Transfer;
      try {
        started = this.start(p.transferId, p.head!);
      } catch (e) {
        this.end(p.transferId);
        throw e;
      }
      this.take(started, value);
      this.open.set(started.id, started);
      this.pendingBytes += started.held;
      return undefined;
    }
    if (p.index < t.next) {
      this.skipped++; // a redelivered copy, whatever its bytes
      return undefined;
    }
    if (p.index > t.next) this.giveUp(t, "stream_gap", `part ${p.index} of ${t.id} where part ${t.next} was expected`);
    t.next++;
    if (p.chunk !== undefined) {
      this.take(t, value);
      try {
        this.chunk(t, p.chunk);
      } catch (e) {
        if (!(e instanceof FlwireError)) throw e;
        this.giveUp(t, e.check, `part ${p.index}: ${e.message.replace(/^\[[a-z0-9_]+\] /, "")}`);
      }
      return undefined;
    }
    return this.seal(t, p.seal!);
  }

  private take(t: Transfer, value: Uint8Array): void {
    t.arrived += value.length;
    t.crc = crc32c(value, t.crc);
    t.digest?.update(value);
  }

  private end(id: string): void {
    this.ended.add(id);
    if (this.ended.size > MAX_ENDED) this.ended.delete(this.ended.values().next().value!);
  }

  /** Give the transfer up (its buffers go with it) and throw the refusal. */
  private giveUp(t: Transfer, check: string, why: string): never {
    this.open.delete(t.id);
    this.pendingBytes -= t.held;
    this.end(t.id);
    return refuse(check, why);
  }

  /** Check a head (`[stream_head]`) and open its transfer. */
  private start(transferId: string, h: StreamHead): Transfer {
    const env = h.envelope;
    if (env === undefined) return headRefusal("no envelope");
    const weights = tensorMapField(env);
    let type: string;
    try {
      type = checkEnvelope(env, weights?.number); // the weights counted as present
    } catch (e) {
      return rethrowAs("stream_head", e);
    }
    if (weights === undefined) headRefusal(`a ${type} carries no weights`);
    const bodySchema = EnvelopeSchema.fields.find((x) => x.localName === env.body.case)!.message!;
    if (reflect(bodySchema, env.body.value as never).isSet(weights!)) headRefusal(`the head's ${type} has its ${weights!.name} field`);
    if (env.signature !== undefined) headRefusal("the head's envelope is signed: a stream is signed in its seal");
    if (env.messageId !== transferId) headRefusal(`message_id ${env.messageId} is not the transfer_id ${transferId}`);
    const { limits, maxStreamBytes, maxPendingBytes, maxStreams } = this.bounds;
    if (h.tensors.length > limits.maxTensors) headRefusal(`${h.tensors.length} tensors, above max_tensors ${limits.maxTensors}`);
    const names = new Set<string>();
    let declared = 0n;
    const tensors = h.tensors.map((info, i): Slot => {
      const what = `tensor ${i} ('${info.name}')`;
      const width = dtypeWidth(info.dtype);
      if (width === undefined) headRefusal(`${what}: dtype ${info.dtype}`);
      if (names.has(info.name)) headRefusal(`${what}: a second tensor of that name`);
      names.add(info.name);
      if (info.shape.length > limits.maxRank) headRefusal(`${what}: rank ${info.shape.length}, above max_rank ${limits.maxRank}`);
      // Check 2 of section 10: product(max(d, 1)) x width below 2^63.
      let span = BigInt(width!);
      let numel = 1n;
      for (const d of info.shape) {
        span *= d > 1n ? d : 1n;
        if (span >= 2n ** 63n) headRefusal(`${what}: shape [${info.shape.join(", ")}] overflows: strides of 2^63 bytes or more`);
        numel *= d;
      }
      const size = numel * BigInt(width!);
      if (size > MAX_TENSOR_BYTES) headRefusal(`${what}: ${size} bytes, above this reader's ${MAX_TENSOR_BYTES} per tensor`);
      declared += size;
      if (declared > maxStreamBytes) headRefusal(`the tensors declare more than max_stream_bytes ${maxStreamBytes}`);
      return { info, width: width!, numel, filled: 0n };
    });
    if (this.open.size >= maxStreams) headRefusal(`${this.open.size} transfers under way, max_streams ${maxStreams}`);
    const held = declared + PER_TRANSFER_BYTES;
    if (this.pendingBytes + held > maxPendingBytes) headRefusal(`the transfers under way would hold more than max_pending_bytes ${maxPendingBytes}`);
    const t: Transfer = { id: transferId, envelope: env, type: type!, tensors, held, next: 1, arrived: 0, decoded: 0, crc: 0 };
    if (h.signed) t.digest = blake3.create();
    return t;
  }

  /**
   * Check a chunk against its transfer, then decode it straight into its
   * tensors. Its first Tensor holds elements of tensor `tensor_index` from
   * `element_offset`; the i-th after it (a packed chunk) elements of tensor
   * `tensor_index + i` from its element 0, and every one but the last the
   * rest of its tensor (`[chunk_packed]`). Every Tensor is checked before any
   * buffer is made or anything decoded.
   */
  private chunk(t: Transfer, c: NonNullable<ParsedPart["chunk"]>): void {
    const first = t.tensors[c.tensorIndex];
    if (first === undefined) refuse("chunk_tensor_index", `tensor_index ${c.tensorIndex} of ${t.tensors.length} tensors`);
    if (c.elementOffset !== first!.filled) refuse("chunk_offset", `'${first!.info.name}' at element ${c.elementOffset}, where ${first!.filled} is expected`);
    let checked: ReturnType<typeof checkTensorMap>;
    try {
      // Checks 1 to 8 of every Tensor; not 9 (unique names): a chunk's Tensors are all unnamed.
      checked = checkTensorMap(c.elements, this.bounds.limits, { uniqueNames: false });
    } catch (e) {
      return rethrowAs("chunk_elements", e);
    }
    const e = checked.map.tensors;
    if (e.length === 0) refuse("chunk_elements", "no tensors, where one or more are expected");
    const places = e.map((x, j) => {
      const i = c.tensorIndex + j;
      const packed = j === 0 ? "" : ` (the chunk's tensor ${j + 1} of ${e.length}, packed)`;
      const s = t.tensors[i];
      if (s === undefined) refuse("chunk_tensor_index", `tensor_index ${i} of ${t.tensors.length} tensors${packed}`);
      const name = `'${s!.info.name}'`;
      const offset = j === 0 ? c.elementOffset : 0n;
      if (offset !== s!.filled) refuse("chunk_offset", `${name} at element ${offset}, where ${s!.filled} is expected${packed}`);
      // Lossless or lossy: a lossy Tensor passed section 9.1's checks in checkTensorMap (its
      // dtype is the tensor's logical dtype, its raw_size and CRC-32C its payload's).
      if (x.name !== "" || x.dtype !== s!.info.dtype || x.shape.length !== 1 || x.shape[0]! < 1n) {
        refuse("chunk_elements", `'${x.name}' of dtype ${x.dtype}, shape [${x.shape.join(", ")}]${packed}: not an unnamed 1-D tensor of ${name}'s dtype ${s!.info.dtype} with elements`);
      }
      const k = x.shape[0]!;
      const left = s!.numel - s!.filled;
      if (k > left) refuse("chunk_overrun", `${k} elements at element ${s!.filled} of ${name}, which has ${s!.numel}${packed}`);
      if (j < e.length - 1 && k !== left) {
        refuse("chunk_packed", `${k} of the ${left} elements left of ${name}, followed by another tensor in the chunk${packed}: every tensor of a chunk but its last must end its tensor`);
      }
      return { s: s!, k, plan: checked.plans[j]! };
    });
    // The expansion bound counts every Tensor's decoded size (a lossy one's k x width).
    this.checkExpansion(t, places.reduce((n, p) => n + Number(p.k) * p.s.width, 0));
    for (const { s, k, plan } of places) {
      s.raw ??= new Uint8Array(Number(s.numel) * s.width);
      const at = Number(s.filled) * s.width;
      try {
        // A lossy Tensor's k elements are its reconstruction (section 9.1), written at the tensor's next element.
        decodeValueInto(plan, s.raw.subarray(at, at + Number(k) * s.width));
      } catch (err) {
        const decode = err instanceof FlwireError && ["decompress", "crc32c", "bool", "topk_indices"].includes(err.check);
        rethrowAs(decode ? "chunk_decode" : "chunk_elements", err);
      }
      s.filled += k;
    }
  }

  /**
   * Section 14.5's stream-wide expansion bound (a SHOULD; flwire-python's
   * `_check_expansion`), checked before a chunk is allocated for or decoded:
   * what the transfer's chunks decode to, this one's `bytes` (its logical
   * size) included, is at most max(expansion_floor_bytes, max_expansion x the
   * bytes of its records so far, the head and this chunk's included), as a
   * whole TensorMap's is by its size (section 11), so that a few compressed
   * records cannot fill gigabytes of tensor memory. A `maxExpansion` of null
   * turns it off. Refused as `[chunk_elements]` (a limit of section 11 on the
   * chunk), which gives the transfer up.
   */
  private checkExpansion(t: Transfer, bytes: number): void {
    t.decoded += bytes;
    const { maxExpansion, expansionFloorBytes } = this.bounds.limits;
    if (maxExpansion === null) return;
    const allowed = Math.max(expansionFloorBytes, maxExpansion * t.arrived);
    if (t.decoded > allowed) {
      refuse(
        "chunk_elements",
        `the stream's chunks decode to ${t.decoded} bytes from ${t.arrived} bytes of records, over ${maxExpansion} times their size ` +
          `(max_expansion; at most ${Math.floor(allowed)} bytes, expansion_floor_bytes ${expansionFloorBytes})`,
      );
    }
  }

  /** Check the seal against what arrived and hand the message out. */
  private seal(t: Transfer, seal: StreamSeal): StreamMessage {
    if (seal.partCount !== t.next) this.giveUp(t, "stream_part_count", `the seal counts ${seal.partCount} parts, ${t.next} arrived`);
    const hex = (n: number): string => n.toString(16).padStart(8, "0");
    if (seal.streamCrc32c !== t.crc) this.giveUp(t, "stream_crc32c", `the parts have CRC-32C ${hex(t.crc)}, the seal says ${hex(seal.streamCrc32c)}`);
    for (const s of t.tensors) {
      if (s.filled !== s.numel) this.giveUp(t, "stream_incomplete", `'${s.info.name}' got ${s.filled} of its ${s.numel} elements`);
    }
    if ((seal.signature !== undefined) !== (t.digest !== undefined)) {
      this.giveUp(t, "stream_signed", `the seal ${seal.signature ? "carries" : "lacks"} a signature, the head says signed = ${t.digest !== undefined}`);
    }
    this.open.delete(t.id);
    this.pendingBytes -= t.held;
    this.end(t.id);
    const out: StreamMessage = {
      transferId: t.id, envelope: t.envelope, type: t.type, crc32c: t.crc, parts: t.next,
      tensors: t.tensors.map((s) => ({ name: s.info.name, dtype: s.info.dtype, shape: s.info.shape, raw: s.raw ?? new Uint8Array(0) })),
    };
    if (seal.signature !== undefined && t.digest !== undefined) {
      out.signature = seal.signature;
      out.digest = t.digest.digest();
    }
    return out;
  }
}
