/**
 * The message vectors (tests/vectors/messages): envelopes decode to their
 * .json and re-encode byte for byte, the transfer parts reassemble (in any
 * order, with duplicates, interleaved with another transfer), and the signed
 * envelope verifies as section 14.3 says.
 */
import assert from "node:assert/strict";
import { test } from "node:test";

import { create, fromBinary, toBinary, toJson } from "@bufbuild/protobuf";

import { codecName, dtypeName, filterName } from "../src/dtypes.js";
import { decodeEnvelope, encodeEnvelope } from "../src/envelope.js";
import { FlwireError } from "../src/errors.js";
import { EnvelopeSchema } from "../src/gen/flwire/v1/messages_pb.js";
import { TransferPartSchema } from "../src/gen/flwire/v1/transfer_pb.js";
import { recordHeaders } from "../src/kafka_headers.js";
import { signedParts, verifyEnvelope } from "../src/signing.js";
import { Reassembler, splitMessage } from "../src/transfer.js";
import { checkedFile, fromHex, hex, manifest, readJson, readVector } from "./util.js";

interface EnvelopeJson {
  type: string;
  message_id: string;
  sender_id: string;
  timestamp: { seconds: number; nanos: number };
  schema_version: { major: number; minor: number };
  headers: Record<string, string>;
  body: Record<string, unknown>;
  weights?: { offset: number; tensors: { name: string; dtype: string; shape: number[]; codec: string; filter: string; raw_size: number; crc32c: string; raw_hex: string }[] };
  signature?: { key_id: string; public_key_hex: string; signed_length: number; digest_hex: string; signed_payload_hex: string; signature_hex: string };
}

const envelopes = manifest().messages.filter((m) => m.message === "flwire.v1.Envelope");

test("the manifest lists the envelope vectors", () => {
  assert.deepEqual(envelopes.map((m) => m.name).sort(), [
    "envelope_client_registration", "envelope_client_update", "envelope_custom", "envelope_global_update", "envelope_signed",
  ]);
});

for (const m of envelopes) {
  test(`${m.name}: decodes to its .json`, () => {
    const bin = checkedFile(m.files["bin"]!);
    const want = JSON.parse(Buffer.from(checkedFile(m.files["json"]!)).toString("utf8")) as EnvelopeJson;
    const d = decodeEnvelope(bin);
    const env = d.envelope;
    assert.equal(d.type, want.type);
    assert.equal(env.messageId, want.message_id);
    assert.equal(env.senderId, want.sender_id);
    assert.equal(Number(env.timestamp!.seconds), want.timestamp.seconds);
    assert.equal(env.timestamp!.nanos, want.timestamp.nanos);
    assert.deepEqual({ major: env.schemaVersion!.major, minor: env.schemaVersion!.minor }, want.schema_version);
    assert.deepEqual(recordHeaders(env, d.type), want.headers);
    const body = toJson(EnvelopeSchema, env, { useProtoFieldName: true }) as Record<string, Record<string, unknown>>;
    const bodyJson = { ...body[d.type]! };
    delete bodyJson["weights"];
    assert.deepEqual(bodyJson, want.body);
    if (want.weights) {
      assert.equal(d.weightsOffset, want.weights.offset);
      assert.equal(d.weightsOffset! % 64, 0);
      const got = d.weights!.tensors;
      assert.equal(got.length, want.weights.tensors.length);
      got.forEach((t, i) => {
        const w = want.weights!.tensors[i]!;
        assert.deepEqual(
          [t.name, dtypeName(t.dtype), t.shape.map(Number), codecName(t.codec), filterName(t.filter), Number(t.rawSize), t.crc32c.toString(16).padStart(8, "0"), hex(t.raw)],
          [w.name, w.dtype, w.shape, w.codec, w.filter, w.raw_size, w.crc32c, w.raw_hex],
        );
      });
    } else {
      assert.equal(d.weights, undefined);
    }
  });

  test(`${m.name}: the encoder writes its bytes back`, () => {
    const bin = checkedFile(m.files["bin"]!);
    const env = fromBinary(EnvelopeSchema, bin);
    const signed = env.signature !== undefined;
    const out = encodeEnvelope(env);
    if (!signed) {
      assert.equal(hex(out), hex(bin));
      return;
    }
    // A signed envelope: the bytes before the signature field, then the field itself, last.
    const p = signedParts(bin);
    assert.equal(hex(out), hex(bin.subarray(0, p.signedLength)));
    const sigField = toBinary(EnvelopeSchema, create(EnvelopeSchema, { signature: env.signature }));
    assert.equal(hex(new Uint8Array([...out, ...sigField])), hex(bin));
  });
}

test("envelope_signed: D, M and the Ed25519 signature of section 14.3", () => {
  const bin = readVector("messages/envelope_signed.bin");
  const want = readJson<EnvelopeJson>("messages/envelope_signed.json").signature!;
  const p = signedParts(bin);
  assert.equal(p.signedLength, want.signed_length);
  assert.equal(hex(p.digest), want.digest_hex);
  assert.equal(hex(p.payload), want.signed_payload_hex);
  assert.equal(hex(p.signature.signature), want.signature_hex);
  const trust = new Map([[want.key_id, fromHex(want.public_key_hex)]]);
  const d = verifyEnvelope(bin, trust);
  assert.equal(d.envelope.senderId, want.key_id);
  const refused = (bytes: Uint8Array, keys = trust): string => {
    try {
      verifyEnvelope(bytes, keys);
    } catch (e) {
      assert.ok(e instanceof FlwireError, String(e));
      return e.check;
    }
    return "accepted";
  };
  assert.equal(refused(bin, new Map()), "unknown_key");
  assert.equal(refused(readVector("messages/envelope_client_update.bin")), "unsigned");
  for (let i = 0; i < bin.length; i++) {
    for (const x of [0x01, 0x80, 0xff]) {
      const b = new Uint8Array(bin);
      b[i]! ^= x;
      assert.notEqual(refused(b), "accepted", `byte ${i} ^ ${x} accepted`);
    }
  }
  for (let n = 0; n < bin.length; n++) assert.notEqual(refused(bin.subarray(0, n)), "accepted", `truncated to ${n} accepted`);
});

interface PartsJson {
  whole: string;
  transfer_id: string;
  part_count: number;
  total_size: number;
  payload_crc32c: string;
  parts: { index: number; offset: number; data_size: number; headers: Record<string, string>; path: string }[];
}

test("transfer_parts: parts and headers as the .json says; reassembled in any order, with duplicates, interleaved", () => {
  const want = readJson<PartsJson>("messages/transfer_parts.json");
  const whole = readVector(want.whole);
  const files = want.parts.map((p) => readVector(p.path));
  const env = decodeEnvelope(whole);
  files.forEach((b, i) => {
    const p = fromBinary(TransferPartSchema, b);
    const w = want.parts[i]!;
    assert.deepEqual(
      [p.transferId, p.partIndex, p.partCount, Number(p.totalSize), Number(p.offset), p.data.length, p.payloadCrc32c.toString(16).padStart(8, "0")],
      [want.transfer_id, w.index, want.part_count, want.total_size, w.offset, w.data_size, want.payload_crc32c],
    );
    assert.deepEqual(recordHeaders(env.envelope, env.type, { index: p.partIndex, count: p.partCount }), w.headers);
  });
  const feed = (order: Uint8Array[]): Uint8Array[] => {
    const r = new Reassembler();
    return order.map((b) => r.add(b)).filter((x): x is Uint8Array => x !== undefined);
  };
  assert.deepEqual(feed(files).map(hex), [hex(whole)]);
  assert.deepEqual(feed([...files].reverse()).map(hex), [hex(whole)]);
  assert.deepEqual(feed([files[0]!, files[0]!, files[2]!, files[1]!, files[1]!, files[4]!, files[3]!, files[3]!]).map(hex), [hex(whole)]);
  // Another message split by this consumer's splitter, its parts interleaved with these.
  const other = readVector("messages/envelope_custom.bin");
  const otherParts = splitMessage("16fd2706-8baf-433b-82eb-8c7fada847da", other, 100).map((p) => toBinary(TransferPartSchema, p));
  const mixed: Uint8Array[] = [];
  for (let i = 0; i < Math.max(files.length, otherParts.length); i++) {
    if (otherParts[i]) mixed.push(otherParts[i]!);
    if (files[i]) mixed.push(files[i]!);
  }
  assert.deepEqual(feed(mixed).map(hex).sort(), [hex(whole), hex(other)].sort());
  // A forged copy of a part (same fields, other bytes) does not end the transfer.
  const forged = fromBinary(TransferPartSchema, files[1]!);
  forged.data = new Uint8Array(forged.data.length);
  assert.deepEqual(feed([files[0]!, toBinary(TransferPartSchema, forged), files[2]!, files[3]!, files[4]!, files[1]!]).map(hex), [hex(whole)]);
  // Nothing incomplete is returned.
  assert.deepEqual(feed(files.slice(1)), []);
});
