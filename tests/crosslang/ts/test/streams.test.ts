/**
 * The streamed transfers of tests/vectors/messages (stream*.json) and the
 * stream refusals (manifest.json, "stream_refusals"), read with the
 * StreamReader of src/stream.ts (spec section 14.5). Each result is printed as
 * one line ("STREAM ..." and "STREAM-REFUSAL ..."), which
 * tests/conformance/test_crosslang_ts.py compares with what the vectors' .json
 * and the manifest say (it runs this file with node directly, so that the
 * lines reach stdout as they are).
 */
import assert from "node:assert/strict";
import { test } from "node:test";

import { equals, fromBinary, toJson } from "@bufbuild/protobuf";
import { blake3 } from "@noble/hashes/blake3.js";

import { crc32c } from "../src/crc32c.js";
import { codecName, dtypeName, dtypeWidth, filterName, lossyName } from "../src/dtypes.js";
import { FlwireError } from "../src/errors.js";
import { EnvelopeSchema } from "../src/gen/flwire/v1/messages_pb.js";
import { TensorMapSchema } from "../src/gen/flwire/v1/tensor_pb.js";
import { recordHeaders } from "../src/kafka_headers.js";
import { streamPayload, verifyStream } from "../src/signing.js";
import { DEFAULT_STREAM_BOUNDS, parseStreamPart, STREAM_CHECKS, type StreamBounds, type StreamMessage, StreamReader } from "../src/stream.js";
import { DEFAULT_LIMITS, decodeTensorMap } from "../src/tensormap.js";
import { checkedFile, type FileEntry, fromHex, hex, manifest, readVector } from "./util.js";

interface StreamJson {
  name: string;
  transfer_id: string;
  part_count: number;
  stream_crc32c: string;
  signed: boolean;
  envelope: {
    type: string; message_id: string; sender_id: string; timestamp: { seconds: number; nanos: number };
    schema_version: { major: number; minor: number }; headers: Record<string, string>; body: Record<string, unknown>;
  };
  tensors: { name: string; dtype: string; shape: number[]; raw_size: number; crc32c: string; raw_hex: string }[];
  parts: ({
    index: number; kind: string; size: number; path: string; headers: Record<string, string>;
    /** A packed chunk's Tensors after its first, each described as the first is. */
    packed?: ChunkTensorJson[];
  } & Partial<ChunkTensorJson>)[];
  signature?: { key_id: string; public_key_hex: string; signed_length: number; digest_hex: string; signed_payload_hex: string; signature_hex: string };
}

/** What a stream's .json says of a chunk's Tensor. */
interface ChunkTensorJson {
  tensor_index: number; element_offset: number; element_count: number; codec: string; filter: string; raw_size: number; crc32c: string;
  /** A lossy one (section 9.1): its method and parameters; raw_size and crc32c are then its payload's, decoded_size its k elements'. */
  lossy?: { method: string; block_size: number; k: number };
  decoded_size?: number;
}

interface StreamRefusal {
  name: string;
  check: string;
  description: string;
  trust?: Record<string, string>;
  parts: FileEntry[];
}

const STREAM_HEADER = "flwire-stream";
const crcHex = (n: number): string => n.toString(16).padStart(8, "0");

/** The streams' .json, each part's file checked against the manifest. */
function streams(): StreamJson[] {
  const out: StreamJson[] = [];
  for (const m of manifest().messages.filter((x) => x.message === "flwire.v1.StreamPart")) {
    const want = JSON.parse(Buffer.from(checkedFile(m.files["json"]!)).toString("utf8")) as StreamJson;
    want.parts.forEach((p, k) => {
      const f = m.files[`part${k}`];
      assert.ok(f !== undefined && f.path === p.path, `${want.name}: part${k} in the manifest`);
      checkedFile(f);
    });
    out.push(want);
  }
  assert.ok(out.length >= 2, `${out.length} streamed transfers in the manifest`);
  return out;
}

const values = (s: StreamJson): Uint8Array[] => s.parts.map((p) => readVector(p.path));

/** What a new reader makes of values in order: the message, and the first refusal. */
function read(vs: Uint8Array[], bounds: StreamBounds = DEFAULT_STREAM_BOUNDS): { message?: StreamMessage; refusal?: FlwireError; reader: StreamReader } {
  const reader = new StreamReader(bounds);
  let message: StreamMessage | undefined;
  let refusal: FlwireError | undefined;
  for (const v of vs) {
    try {
      message = reader.add(v) ?? message;
    } catch (e) {
      assert.ok(e instanceof FlwireError, String(e));
      refusal ??= e;
    }
  }
  return message ? (refusal ? { message, refusal, reader } : { message, reader }) : refusal ? { refusal, reader } : { reader };
}

const checkOf = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof FlwireError, String(e));
    return e.check;
  }
  return "accepted";
};

const trustOf = (keys: Record<string, string>): Map<string, Uint8Array> => new Map(Object.entries(keys).map(([k, v]) => [k, fromHex(v)]));

for (const want of streams()) {
  test(`${want.name}: read to its .json`, () => {
    const vs = values(want);
    assert.equal(vs.length, want.part_count);
    // Every part but the seal returns nothing; the seal returns the message.
    const r = new StreamReader();
    let msg: StreamMessage | undefined;
    vs.forEach((v, k) => {
      msg = r.add(v);
      assert.equal(msg !== undefined, k === vs.length - 1, `a message after part ${k}`);
      const { [STREAM_HEADER]: index, ...rest } = want.parts[k]!.headers;
      assert.equal(index, String(k));
      assert.deepEqual(rest, want.envelope.headers);
    });
    assert.equal(r.pending(), 0);
    const m = msg!;
    assert.equal(m.transferId, want.transfer_id);
    assert.equal(m.parts, want.part_count);
    // Section 14.5: the CRC-32C of the record values of parts 0 to n-2.
    const r0 = Buffer.concat(vs.slice(0, -1));
    assert.equal(crcHex(crc32c(r0)), want.stream_crc32c);
    assert.equal(m.crc32c, crc32c(r0));
    // The head's envelope; its body (no weights) in protobuf's JSON mapping.
    const env = m.envelope;
    assert.equal(m.type, want.envelope.type);
    assert.deepEqual(
      [env.messageId, env.senderId, Number(env.timestamp!.seconds), env.timestamp!.nanos, env.schemaVersion!.major, env.schemaVersion!.minor],
      [want.envelope.message_id, want.envelope.sender_id, want.envelope.timestamp.seconds, want.envelope.timestamp.nanos, want.envelope.schema_version.major, want.envelope.schema_version.minor],
    );
    assert.equal(env.messageId, want.transfer_id);
    assert.deepEqual(recordHeaders(env, m.type), want.envelope.headers);
    const body = toJson(EnvelopeSchema, env, { useProtoFieldName: true }) as Record<string, unknown>;
    assert.deepEqual(body[m.type], want.envelope.body);
    // The tensors, in the head's order.
    assert.equal(m.tensors.length, want.tensors.length);
    m.tensors.forEach((t, i) => {
      const w = want.tensors[i]!;
      assert.deepEqual(
        [t.name, dtypeName(t.dtype), t.shape.map(Number), t.raw.length, crcHex(crc32c(t.raw)), hex(t.raw)],
        [w.name, w.dtype, w.shape, w.raw_size, w.crc32c, w.raw_hex],
      );
      console.log(`STREAM ${want.name} tensor ${t.name} ${dtypeName(t.dtype)} [${t.shape.join(",")}] ${hex(t.raw)}`);
    });
    // What .json says of each part and chunk, and of each Tensor of a packed chunk (the i-th
    // after the first holds tensor tensor_index + i from its element 0, all but the last to its
    // end); one tensor takes several chunks, of two codecs (a lossy stream: lossy chunks, and
    // lossless ones).
    const perTensor = new Map<number, number>();
    const codecs = new Set<string>();
    const kinds = new Set<string>();
    vs.forEach((v, k) => {
      const p = parseStreamPart(v);
      const w = want.parts[k]!;
      assert.deepEqual([p.head ? "head" : p.chunk ? "chunk" : "seal", p.index, v.length], [w.kind, w.index, w.size]);
      if (!p.chunk) return;
      const cs = decodeTensorMap(p.chunk.elements, DEFAULT_LIMITS, { uniqueNames: false }).tensors;
      const ws = [w as ChunkTensorJson, ...(w.packed ?? [])];
      assert.equal(cs.length, ws.length, `${want.name} part ${k}: tensors in the chunk`);
      cs.forEach((c, j) => {
        const wj = ws[j]!;
        const where = `${want.name} part ${k} tensor ${j}`;
        const index = p.chunk!.tensorIndex + j;
        const offset = j === 0 ? Number(p.chunk!.elementOffset) : 0;
        assert.deepEqual(
          [c.name, index, offset, Number(c.shape[0]), codecName(c.codec), filterName(c.filter), Number(c.rawSize), crcHex(c.crc32c)],
          ["", wj.tensor_index, wj.element_offset, wj.element_count, wj.codec, wj.filter, wj.raw_size, wj.crc32c],
          where,
        );
        const t = m.tensors[index]!;
        const width = dtypeWidth(t.dtype)!;
        if (j < cs.length - 1) assert.equal(offset + wj.element_count, t.raw.length / width, `${where}: packed, it ends its tensor`);
        // Its elements (a lossy one's reconstruction) are what the tensor holds from its offset.
        const at = offset * width;
        assert.equal(hex(t.raw.subarray(at, at + c.value.length)), hex(c.value), `${where}: in its tensor`);
        if (wj.lossy) {
          assert.ok(c.lossy, `${where}: lossy`);
          assert.deepEqual(
            [lossyName(c.lossy.method), c.lossy.blockSize, Number(c.lossy.k), c.value.length],
            [wj.lossy.method, wj.lossy.block_size, wj.lossy.k, wj.decoded_size],
            where,
          );
        } else {
          assert.equal(c.lossy, undefined, `${where}: lossless`);
          assert.equal(wj.decoded_size ?? wj.raw_size, wj.raw_size);
        }
        perTensor.set(index, (perTensor.get(index) ?? 0) + 1);
        codecs.add(codecName(c.codec));
        kinds.add(wj.lossy ? "lossy" : "lossless");
      });
    });
    assert.ok(Math.max(...perTensor.values()) >= 2, "a tensor in several chunks");
    if (kinds.has("lossy")) assert.equal(kinds.size, 2, `${want.name}: lossy and lossless chunks`);
    else assert.ok(codecs.size >= 2, `chunk codecs ${[...codecs]}`);
    if (!want.signed) {
      assert.equal(m.signature, undefined);
      assert.equal(m.digest, undefined);
      assert.equal(checkOf(() => verifyStream(m, new Map())), "unsigned");
      console.log(`STREAM ${want.name} unsigned`);
      return;
    }
    // D, M and the signature as .json gives them; verified under the test key, not another.
    const s = want.signature!;
    assert.equal(r0.length, s.signed_length);
    const d = blake3(r0);
    assert.equal(hex(d), s.digest_hex);
    assert.equal(hex(m.digest!), s.digest_hex);
    assert.equal(hex(streamPayload(1, s.key_id, d)), s.signed_payload_hex);
    assert.equal(hex(m.signature!.signature), s.signature_hex);
    const key = fromHex(s.public_key_hex);
    const id = verifyStream(m, new Map([[s.key_id, key]]));
    assert.equal(id, s.key_id);
    const other = fromHex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"); // RFC 8032 TEST 2
    assert.equal(checkOf(() => verifyStream(m, new Map([[s.key_id, other]]))), "bad_signature");
    assert.equal(checkOf(() => verifyStream(m, new Map([["client-8", key]]))), "unknown_key");
    console.log(`STREAM ${want.name} verified ${id}`);
  });
}

const refusals = (manifest() as unknown as { stream_refusals: StreamRefusal[] }).stream_refusals;

/** The check that refused a stream refusal's parts (or, read whole, its signature), or "". */
function refusedFor(rf: StreamRefusal): string {
  const got = read(rf.parts.map(checkedFile));
  assert.equal(got.reader.pending(), 0, `${rf.name}: transfers left under way`);
  if (got.message !== undefined) {
    assert.equal(got.refusal, undefined, `${rf.name}: a message and a refusal`);
    const check = checkOf(() => verifyStream(got.message!, trustOf(rf.trust ?? {})));
    return check === "accepted" ? "" : check;
  }
  assert.ok(got.refusal !== undefined, `${rf.name}: neither a message nor a refusal`);
  return got.refusal.check;
}

test("every stream refusal is refused for the check the manifest names", () => {
  assert.ok(refusals.length >= 20, `${refusals.length} stream refusals`);
  const failed: string[] = [];
  for (const rf of refusals) {
    const check = refusedFor(rf);
    console.log(`STREAM-REFUSAL ${rf.name} ${check}`);
    if (check !== rf.check) failed.push(`${rf.name}: refused for '${check}', the manifest says '${rf.check}'`);
  }
  assert.deepEqual(failed, []);
  const ids = [...STREAM_CHECKS, "unsigned", "bad_signature", "unknown_key", "sender_mismatch"].sort();
  assert.deepEqual([...new Set(refusals.map((r) => r.check))].sort(), ids, "every check has a stream refusal");
});

test("redelivered parts are skipped: every part twice, one message", () => {
  for (const want of streams()) {
    const r = new StreamReader();
    const vs = values(want);
    const got = vs.flatMap((v) => [r.add(v), r.add(v)]).filter((m) => m !== undefined);
    assert.equal(got.length, 1, want.name);
    assert.equal(r.skipped, want.part_count);
    assert.equal(r.add(vs[0]!), undefined, "the head again, after the seal");
    assert.equal(r.skipped, want.part_count + 1);
    assert.equal(r.pending(), 0);
  }
});

test("a part lost: the transfer is given up at the next one, its later parts skipped", () => {
  const vs = values(streams()[0]!);
  const r = new StreamReader();
  r.add(vs[0]!);
  r.add(vs[1]!);
  assert.equal(checkOf(() => r.add(vs[3]!)), "stream_gap");
  assert.equal(r.pending(), 0);
  for (const v of vs) assert.equal(r.add(v), undefined);
  assert.equal(r.skipped, vs.length);
});

/** The record value with the last byte of its chunk's j-th Tensor's data (as stored) changed. */
function corruptTensor(v: Uint8Array, j: number): Uint8Array {
  const data = fromBinary(TensorMapSchema, parseStreamPart(v).chunk!.elements).tensors[j]!.data;
  const at = Buffer.from(v).indexOf(Buffer.from(data));
  assert.ok(data.length > 0 && at > 0);
  const bad = new Uint8Array(v);
  bad[at + data.length - 1]! ^= 0xff;
  return bad;
}

test("packed chunks (section 14.5): every Tensor of a chunk is checked before any of it is decoded", () => {
  const packed = streams().filter((w) => w.parts.some((p) => (p.packed ?? []).length > 0));
  assert.ok(packed.length >= 1, "a stream with packed chunks");
  // A packed chunk whose first or last Tensor's data is corrupted is refused when it is decoded.
  for (const want of packed) {
    const vs = values(want);
    for (const k of want.parts.flatMap((p) => ((p.packed ?? []).length > 0 ? [p.index] : []))) {
      for (const j of [0, want.parts[k]!.packed!.length]) {
        const c = [...vs];
        c[k] = corruptTensor(vs[k]!, j);
        assert.equal(read(c).refusal?.check, "chunk_decode", `${want.name} part ${k} tensor ${j} corrupted`);
      }
    }
  }
  // The packed refusals, their first Tensor's data corrupted too: still refused for their check, not chunk_decode.
  const rfs = refusals.filter((r) => r.name.startsWith("chunk_packed_"));
  assert.ok(rfs.length >= 4, `${rfs.length} packed stream refusals`);
  for (const rf of rfs) {
    const vs = rf.parts.map(checkedFile);
    const k = vs.findIndex((v, i) => rf.parts[i]!.path.startsWith("stream_refusals/") && parseStreamPart(v).chunk !== undefined &&
      fromBinary(TensorMapSchema, parseStreamPart(v).chunk!.elements).tensors.length > 1);
    assert.ok(k > 0, `${rf.name}: a packed chunk of its own`);
    const c = [...vs];
    c[k] = corruptTensor(vs[k]!, 0);
    const got = read(c);
    assert.equal(got.refusal?.check, rf.check, `${rf.name}: part ${k}'s first tensor corrupted: ${got.refusal?.message}`);
    assert.match(got.refusal!.message, new RegExp(`^\\[${rf.check}\\] part ${k}: `));
    assert.equal(got.reader.pending(), 0);
  }
});

test("every changed byte of every part (three ways): the unsigned stream refused or read unchanged, the signed one refused or not verified", () => {
  for (const want of streams()) {
    const trust = want.signed ? new Map([[want.signature!.key_id, fromHex(want.signature!.public_key_hex)]]) : new Map<string, Uint8Array>();
    const vs = values(want);
    const original = read(vs).message!;
    let changed = 0;
    let unchanged = 0;
    vs.forEach((v, k) => {
      for (let i = 0; i < v.length; i++) {
        for (const x of [0x01, 0x80, 0xff]) {
          const c = [...vs];
          const b = new Uint8Array(v);
          b[i]! ^= x;
          c[k] = b;
          const got = read(c).message;
          const where = `${want.name} part ${k} byte ${i} ^ ${x}`;
          changed++;
          if (got === undefined) continue;
          if (want.signed) {
            assert.notEqual(checkOf(() => verifyStream(got, trust)), "accepted", `${where} verified`);
            continue;
          }
          assert.ok(equals(EnvelopeSchema, got.envelope, original.envelope), where);
          assert.deepEqual(got.tensors.map((t) => hex(t.raw)), original.tensors.map((t) => hex(t.raw)), where);
          unchanged++;
        }
      }
    });
    assert.ok(changed > 2000, `${changed} changed streams`);
    console.error(`${want.name}: ${changed} changed streams, ${unchanged} read unchanged, none verified`);
  }
});

/** Section 11's limits lowered for the stream-wide expansion bound of section 14.5: it trips on the golden streams. */
const lowered = (maxExpansion: number | null): StreamBounds => ({
  ...DEFAULT_STREAM_BOUNDS,
  limits: { ...DEFAULT_LIMITS, expansionFloorBytes: 256, maxExpansion },
});

/**
 * The first part at which the chunks' decoded bytes (a lossy chunk's k x width, or, with
 * `payload`, its payload's raw_size) pass max(256, x times the bytes of the records so far).
 */
function firstOver(want: StreamJson, x: number, payload = false): number | undefined {
  let arrived = 0;
  let decoded = 0;
  for (const p of want.parts) {
    arrived += p.size;
    if (p.kind !== "chunk") continue;
    decoded += payload ? p.raw_size! : (p.decoded_size ?? p.raw_size!);
    if (decoded > Math.max(256, x * arrived)) return p.index;
  }
  return undefined;
}

test("the stream-wide expansion bound (section 14.5): refused before the chunk past it is decoded; off with max_expansion null", () => {
  const all = streams();
  // The defaults (a floor of 16 MiB, 100 times) let every golden stream through.
  for (const want of all) {
    const got = read(values(want));
    assert.ok(got.message !== undefined && got.refusal === undefined, `${want.name} with the default limits`);
  }
  // A zstd stream, and a lossy one whose chunks count their logical size (k x width), not their payload's.
  const byName = new Map(all.map((w) => [w.name, w]));
  for (const name of ["stream", "stream_lossy_topk"]) {
    const want = byName.get(name)!;
    const vs = values(want);
    const over = firstOver(want, 0.5)!;
    assert.ok(over !== undefined && over > 1 && over < vs.length - 1, `${name}: the bound trips at a chunk after the first (${over})`);
    if (name === "stream_lossy_topk") assert.equal(firstOver(want, 0.5, true), undefined, "counting payloads, it would not trip");
    const r = new StreamReader(lowered(0.5));
    vs.slice(0, over).forEach((v) => assert.equal(r.add(v), undefined));
    let refusal: FlwireError | undefined;
    try {
      r.add(vs[over]!);
    } catch (e) {
      assert.ok(e instanceof FlwireError, String(e));
      refusal = e;
    }
    assert.ok(refusal !== undefined, `${name}: part ${over} refused`);
    assert.equal(refusal.check, "chunk_elements", refusal.message);
    assert.match(refusal.message, new RegExp(`^\\[chunk_elements\\] part ${over}: the stream's chunks decode to \\d+ bytes from \\d+ bytes of records, over 0\\.5 times their size`));
    // Given up: nothing held, its later parts skipped.
    assert.equal(r.pending(), 0);
    for (const v of vs.slice(over + 1)) assert.equal(r.add(v), undefined);
    assert.equal(r.skipped, vs.length - over - 1);
    // Before decoding: the same part with its chunk's data corrupted is refused for the bound,
    // where with the bound off its decoding fails (chunk_decode).
    const data = fromBinary(TensorMapSchema, parseStreamPart(vs[over]!).chunk!.elements).tensors[0]!.data; // as stored
    const bad = new Uint8Array(vs[over]!);
    const at = Buffer.from(bad).indexOf(Buffer.from(data));
    assert.ok(data.length > 0 && at > 0);
    bad[at + data.length - 1]! ^= 0xff; // its last byte
    const corrupt = [...vs.slice(0, over), bad, ...vs.slice(over + 1)];
    assert.equal(read(corrupt).refusal?.check, "chunk_decode", `${name}: part ${over} corrupted, default limits`);
    assert.equal(read(corrupt, lowered(null)).refusal?.check, "chunk_decode", `${name}: part ${over} corrupted, the bound off`);
    const tripped = read(corrupt, lowered(0.5)).refusal;
    assert.equal(tripped?.check, "chunk_elements", `${name}: part ${over} corrupted, the bound on`);
    assert.match(tripped!.message, /the stream's chunks decode to/);
    // The bound off (max_expansion null), the same limits otherwise: the stream reads as with the defaults.
    const off = read(vs, lowered(null));
    assert.equal(off.refusal, undefined, `${name} with max_expansion null: ${off.refusal?.message}`);
    const whole = read(vs).message!;
    assert.deepEqual(off.message!.tensors.map((t) => hex(t.raw)), whole.tensors.map((t) => hex(t.raw)), name);
  }
});
