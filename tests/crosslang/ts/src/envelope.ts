/**
 * Envelopes (spec section 14): parsed with the generated schema, checked
 * (known major version, a body, bounded ids, a timestamp in range, extension
 * keys, the rules of options.proto read from the descriptors, section 14.2),
 * and their weights' TensorMap decoded from its own bytes in the envelope.
 * Writing (encodeEnvelope): canonical field order and the Envelope.padding
 * field that puts the TensorMap at a multiple of 64.
 */
import { type DescMessage, clone, create, fromBinary, getOption, hasOption, toBinary } from "@bufbuild/protobuf";
import { reflect } from "@bufbuild/protobuf/reflect";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

import { varintLen } from "./encode.js";
import { refuse } from "./errors.js";
import { type Envelope, EnvelopeSchema } from "./gen/flwire/v1/messages_pb.js";
import { field as fieldRules } from "./gen/flwire/v1/options_pb.js";
import { checkWireTypes } from "./wiretypes.js";
import { type DecodedMap, DEFAULT_LIMITS, type Limits, decodeTensorMap } from "./tensormap.js";

const utf8 = new TextEncoder();
const MIN_SECONDS = -62_135_596_800n;
const MAX_SECONDS = 253_402_300_799n;

/** The body's field name (the Kafka header flwire-type), e.g. "client_update". */
export function bodyType(env: Envelope): string {
  const f = EnvelopeSchema.fields.find((x) => x.localName === env.body.case);
  if (f === undefined) refuse("envelope", "the envelope has no body");
  return f.name;
}

interface BodyField {
  number: number;
  schema: DescMessage;
  weightsNumber?: number;
}

function bodyField(env: Envelope): BodyField {
  const f = EnvelopeSchema.fields.find((x) => x.localName === env.body.case);
  if (f === undefined || f.message === undefined) refuse("envelope", "the envelope has no body");
  const w = f.message.fields.find((x) => x.name === "weights");
  return w ? { number: f.number, schema: f.message, weightsNumber: w.number } : { number: f.number, schema: f.message };
}

/**
 * The rules of options.proto (section 14.2) on a body: required fields,
 * non-negative integers. Field number `present` counts as set whatever it holds.
 */
function checkRules(schema: DescMessage, msg: object, path: string, present?: number): void {
  const r = reflect(schema, msg as never);
  for (const f of schema.fields) {
    if (!hasOption(f, fieldRules)) continue;
    const rules = getOption(f, fieldRules);
    const at = `${path}.${f.name}`;
    if (rules.required && !r.isSet(f) && f.number !== present) {
      refuse("envelope", `${at}: required`);
    }
    if (rules.nonNegative && f.fieldKind === "scalar") {
      const v = r.get(f) as unknown;
      if ((typeof v === "bigint" && v < 0n) || (typeof v === "number" && v < 0)) refuse("envelope", `${at}: non_negative`);
    }
  }
}

/** [start, end) of the last occurrence of length-delimited field `no` in `bytes`. */
function fieldRange(bytes: Uint8Array, no: number): [number, number] | undefined {
  const r = new BinaryReader(bytes);
  let found: [number, number] | undefined;
  while (r.pos < r.len) {
    const [n, wt] = r.tag();
    if (n === no && wt === WireType.LengthDelimited) {
      const len = r.uint32();
      found = [r.pos, r.pos + len];
      r.pos += len;
    } else {
      r.skip(wt, n);
    }
  }
  return found;
}

export interface DecodedEnvelope {
  envelope: Envelope;
  type: string;
  /** Where the weights' TensorMap starts in the envelope, and what it decodes to. */
  weightsOffset?: number;
  weights?: DecodedMap;
}

export function decodeEnvelope(bytes: Uint8Array, limits: Limits = DEFAULT_LIMITS): DecodedEnvelope {
  let env: Envelope;
  checkWireTypes(EnvelopeSchema, bytes);
  try {
    env = fromBinary(EnvelopeSchema, bytes);
  } catch (e) {
    refuse("protobuf", `Envelope: ${(e as Error).message}`);
  }
  const type = checkEnvelope(env);
  const bf = bodyField(env);
  const out: DecodedEnvelope = { envelope: env, type };
  if (bf.weightsNumber !== undefined) {
    const body = fieldRange(bytes, bf.number)!;
    const inner = fieldRange(bytes.subarray(body[0], body[1]), bf.weightsNumber);
    if (inner) {
      out.weightsOffset = body[0] + inner[0];
      out.weights = decodeTensorMap(bytes.subarray(body[0] + inner[0], body[0] + inner[1]), limits);
    }
  }
  return out;
}

/**
 * The checks of sections 14 and 14.2 on a parsed envelope (a known major
 * version, a body, bounded ids, a timestamp in range, extension keys, custom
 * type names, the body's field rules); body field number `present` counts as
 * set (a streamed transfer's head has its weights field absent, section 14.5).
 * Returns the body's field name.
 */
export function checkEnvelope(env: Envelope, present?: number): string {
  if (env.schemaVersion === undefined || env.schemaVersion.major !== 1) {
    refuse("envelope", `schema_version major ${env.schemaVersion?.major ?? "absent"}: this reader knows major 1`);
  }
  if (env.messageId === "") refuse("envelope", "message_id: required");
  if (utf8.encode(env.messageId).length > 128) refuse("envelope", "message_id longer than 128 UTF-8 bytes");
  if (utf8.encode(env.senderId).length > 128) refuse("envelope", "sender_id longer than 128 UTF-8 bytes");
  const ts = env.timestamp;
  if (ts && (ts.seconds < MIN_SECONDS || ts.seconds > MAX_SECONDS || ts.nanos < 0 || ts.nanos > 999_999_999)) {
    refuse("envelope", "timestamp out of the range of google.protobuf.Timestamp");
  }
  const type = bodyType(env);
  const bf = bodyField(env);
  const bodyNames = new Set(bf.schema.fields.map((f) => f.name));
  for (const key of Object.keys(env.extensions)) {
    if (bodyNames.has(key) || key === "weights") refuse("envelope", `extension key '${key}' names a field of the body`);
  }
  if (env.body.case === "custom") {
    const bodies = new Set(EnvelopeSchema.oneofs[0]!.fields.map((f) => f.name));
    if (bodies.has(env.body.value.type)) refuse("envelope", `custom message type '${env.body.value.type}' names a body field`);
  }
  checkRules(bf.schema, env.body.value!, type, present);
  return type;
}

/**
 * The envelope's bytes in canonical form (section 14): fields in field-number
 * order, the body last (the signature, if any, is appended by the signer), and
 * the shortest padding field that makes the weights' TensorMap start at a
 * multiple of 64. `env.padding` and `env.signature` are replaced.
 */
export function encodeEnvelope(env: Envelope): Uint8Array {
  const e = clone(EnvelopeSchema, env);
  e.padding = new Uint8Array(0);
  e.signature = undefined;
  const bf = bodyField(e);
  if (bf.weightsNumber === undefined || !(reflect(bf.schema, e.body.value as never).isSet(bf.schema.fields.find((f) => f.number === bf.weightsNumber)!))) {
    return toBinary(EnvelopeSchema, e);
  }
  const prefix = toBinary(EnvelopeSchema, create(EnvelopeSchema, { ...e, body: { case: undefined } })).length;
  const body = toBinary(bf.schema, e.body.value as never);
  const before = clone(bf.schema, e.body.value as never);
  const rb = reflect(bf.schema, before);
  for (const f of bf.schema.fields) if (f.number >= bf.weightsNumber) rb.clear(f);
  const beforeLen = toBinary(bf.schema, before).length;
  const weights = fieldRange(body, bf.weightsNumber)!;
  const mapLen = weights[1] - weights[0];
  const head = prefix + varintLen((bf.number << 3) | 2) + varintLen(body.length) + beforeLen + varintLen((bf.weightsNumber << 3) | 2) + varintLen(mapLen);
  for (let q = 0; ; q++) {
    const pad = q === 0 ? 0 : 1 + varintLen(q) + q;
    if ((head + pad) % 64 === 0) {
      e.padding = new Uint8Array(q);
      return toBinary(EnvelopeSchema, e);
    }
  }
}
