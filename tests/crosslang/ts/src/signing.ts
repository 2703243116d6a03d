/**
 * Verifying a signed envelope (spec section 14.3): the signature field once,
 * length-delimited and last; D = BLAKE3(S) (@noble/hashes); M = the domain
 * string, 0x00, uint32_le(algorithm), uint8(len(key_id)), key_id, D; pure
 * Ed25519 (node:crypto) of M under the trusted key of key_id. A streamed
 * transfer's seal (section 14.5) signs BLAKE3 of the parts before it under
 * the domain "flwire.v1 stream signature" (verifyStream).
 */
import { createPublicKey, verify } from "node:crypto";

import { fromBinary } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { blake3 } from "@noble/hashes/blake3.js";

import { type DecodedEnvelope, decodeEnvelope } from "./envelope.js";
import type { StreamMessage } from "./stream.js";
import { refuse } from "./errors.js";
import { checkWireTypes } from "./wiretypes.js";
import { type Signature, SignatureAlgorithm, SignatureSchema } from "./gen/flwire/v1/messages_pb.js";

const DOMAIN = new TextEncoder().encode("flwire.v1 envelope signature");
const STREAM_DOMAIN = new TextEncoder().encode("flwire.v1 stream signature");
const SPKI_ED25519 = Buffer.from("302a300506032b6570032100", "hex");

export interface SignedParts {
  /** The signed bytes S: everything before the signature field's key. */
  signedLength: number;
  signature: Signature;
  digest: Uint8Array;
  payload: Uint8Array;
}

/** M of section 14.3. */
export function signedPayload(algorithm: number, keyId: string, digest: Uint8Array): Uint8Array {
  return payload(DOMAIN, algorithm, keyId, digest);
}

/** M of section 14.5: as an envelope's, under the stream domain string. */
export function streamPayload(algorithm: number, keyId: string, digest: Uint8Array): Uint8Array {
  return payload(STREAM_DOMAIN, algorithm, keyId, digest);
}

function payload(domain: Uint8Array, algorithm: number, keyId: string, digest: Uint8Array): Uint8Array {
  const id = new TextEncoder().encode(keyId);
  const m = new Uint8Array(domain.length + 1 + 4 + 1 + id.length + digest.length);
  m.set(domain, 0);
  let at = domain.length + 1;
  new DataView(m.buffer).setUint32(at, algorithm, true);
  at += 4;
  m[at++] = id.length;
  m.set(id, at);
  m.set(digest, at + id.length);
  return m;
}

/** Steps 1-2: find the signature field (once, length-delimited, last), parse it, compute D and M. */
export function signedParts(bytes: Uint8Array): SignedParts {
  const r = new BinaryReader(bytes);
  let start = -1;
  let sig: Uint8Array | undefined;
  try {
    while (r.pos < r.len) {
      const keyAt = r.pos;
      const [no, wt] = r.tag();
      if (no === 7) {
        if (start >= 0) refuse("bad_signature", "the signature field appears more than once");
        if (wt !== WireType.LengthDelimited) refuse("bad_signature", "the signature field is not length-delimited");
        start = keyAt;
        sig = r.bytes();
      } else {
        if (start >= 0) refuse("bad_signature", "a field follows the signature field");
        r.skip(wt, no);
      }
    }
  } catch (e) {
    if ((e as { check?: string }).check) throw e;
    refuse("protobuf", `Envelope: ${(e as Error).message}`);
  }
  if (start < 0 || sig === undefined) refuse("unsigned", "the envelope has no signature field");
  let signature: Signature;
  try {
    checkWireTypes(SignatureSchema, sig);
    signature = fromBinary(SignatureSchema, sig);
  } catch (e) {
    refuse("bad_signature", `the signature field does not parse: ${(e as Error).message}`);
  }
  checkForm(signature);
  const digest = blake3(bytes.subarray(0, start));
  return { signedLength: start, signature, digest, payload: signedPayload(signature.algorithm, signature.keyId, digest) };
}

/** Step 2: Ed25519, a 64-byte signature, a key id of 1 to 128 bytes. */
function checkForm(signature: Signature): void {
  const idLen = new TextEncoder().encode(signature.keyId).length;
  if (signature.algorithm !== SignatureAlgorithm.ED25519) refuse("bad_signature", `algorithm ${signature.algorithm}`);
  if (signature.signature.length !== 64) refuse("bad_signature", `a signature of ${signature.signature.length} bytes`);
  if (idLen < 1 || idLen > 128) refuse("bad_signature", `key_id of ${idLen} bytes`);
}

/** Steps 3-4: the key id in the trust store, Ed25519 of M under its key. */
function checkSignature(signature: Signature, m: Uint8Array, trust: ReadonlyMap<string, Uint8Array>): void {
  const raw = trust.get(signature.keyId);
  if (raw === undefined) refuse("unknown_key", `key '${signature.keyId}' is not in the trust store`);
  const key = createPublicKey({ key: Buffer.concat([SPKI_ED25519, raw]), format: "der", type: "spki" });
  if (!verify(null, m, key, signature.signature)) refuse("bad_signature", `the signature does not verify under '${signature.keyId}'`);
}

/** Step 5: the envelope's sender_id, and its body's client_id where it has one, are the key id. */
function checkSender(env: DecodedEnvelope["envelope"], keyId: string): void {
  const body = env.body.value as { clientId?: string } | undefined;
  if (env.senderId !== keyId || (body?.clientId !== undefined && body.clientId !== keyId)) {
    refuse("sender_mismatch", `sender '${env.senderId}' (client '${body?.clientId ?? ""}') is not key '${keyId}'`);
  }
}

/**
 * Verify a streamed message's seal signature (section 14.5) as section 14.3
 * does an envelope's (steps 1-5); returns the verified key id.
 */
export function verifyStream(msg: StreamMessage, trust: ReadonlyMap<string, Uint8Array>): string {
  const s = msg.signature;
  if (s === undefined || msg.digest === undefined) refuse("unsigned", "the stream's seal carries no signature");
  checkForm(s);
  checkSignature(s, streamPayload(s.algorithm, s.keyId, msg.digest), trust);
  checkSender(msg.envelope, s.keyId);
  return s.keyId;
}

/** Verify under a trust store of raw 32-byte Ed25519 public keys; then the ids (step 5). */
export function verifyEnvelope(bytes: Uint8Array, trust: ReadonlyMap<string, Uint8Array>): DecodedEnvelope {
  const p = signedParts(bytes);
  checkSignature(p.signature, p.payload, trust);
  const d = decodeEnvelope(bytes);
  checkSender(d.envelope, p.signature.keyId);
  return d;
}
