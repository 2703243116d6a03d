/**
 * Verifying a signed envelope (spec section 14.3): the signature field once,
 * length-delimited and last; D = BLAKE3(S) (@noble/hashes); M = the domain
 * string, 0x00, uint32_le(algorithm), uint8(len(key_id)), key_id, D; pure
 * Ed25519 (node:crypto) of M under the trusted key of key_id.
 */
import { createPublicKey, verify } from "node:crypto";

import { fromBinary } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { blake3 } from "@noble/hashes/blake3.js";

import { type DecodedEnvelope, decodeEnvelope } from "./envelope.js";
import { refuse } from "./errors.js";
import { checkWireTypes } from "./wiretypes.js";
import { type Signature, SignatureAlgorithm, SignatureSchema } from "./gen/flwire/v1/messages_pb.js";

const DOMAIN = new TextEncoder().encode("flwire.v1 envelope signature");
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
  const id = new TextEncoder().encode(keyId);
  const m = new Uint8Array(DOMAIN.length + 1 + 4 + 1 + id.length + digest.length);
  m.set(DOMAIN, 0);
  let at = DOMAIN.length + 1;
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
  const idLen = new TextEncoder().encode(signature.keyId).length;
  if (signature.algorithm !== SignatureAlgorithm.ED25519) refuse("bad_signature", `algorithm ${signature.algorithm}`);
  if (signature.signature.length !== 64) refuse("bad_signature", `a signature of ${signature.signature.length} bytes`);
  if (idLen < 1 || idLen > 128) refuse("bad_signature", `key_id of ${idLen} bytes`);
  const digest = blake3(bytes.subarray(0, start));
  return { signedLength: start, signature, digest, payload: signedPayload(signature.algorithm, signature.keyId, digest) };
}

/** Verify under a trust store of raw 32-byte Ed25519 public keys; then the ids (step 5). */
export function verifyEnvelope(bytes: Uint8Array, trust: ReadonlyMap<string, Uint8Array>): DecodedEnvelope {
  const p = signedParts(bytes);
  const raw = trust.get(p.signature.keyId);
  if (raw === undefined) refuse("unknown_key", `key '${p.signature.keyId}' is not in the trust store`);
  const key = createPublicKey({ key: Buffer.concat([SPKI_ED25519, raw]), format: "der", type: "spki" });
  if (!verify(null, p.payload, key, p.signature.signature)) refuse("bad_signature", "the signature does not verify");
  const d = decodeEnvelope(bytes);
  const body = d.envelope.body.value as { clientId?: string } | undefined;
  if (d.envelope.senderId !== p.signature.keyId || (body?.clientId !== undefined && body.clientId !== p.signature.keyId)) {
    refuse("sender_mismatch", `sender '${d.envelope.senderId}' is not key '${p.signature.keyId}'`);
  }
  return d;
}
