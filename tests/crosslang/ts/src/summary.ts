/**
 * The summary line of one message for the live test (issue 16): type, sender,
 * round, tensor count, bytes and a SHA-256 over the decoded tensors.
 */
import { createHash } from "node:crypto";

import { dtypeName } from "./dtypes.js";
import type { DecodedEnvelope } from "./envelope.js";
import type { Envelope } from "./gen/flwire/v1/messages_pb.js";
import type { StreamMessage } from "./stream.js";

const utf8 = new TextEncoder();

export interface Summary {
  message_id: string;
  type: string;
  sender_id: string;
  round: number;
  tensors: number;
  bytes: number;
  sha256: string;
}

/**
 * sha256 over each tensor in ascending order of its name's UTF-8 bytes: name,
 * 0x00, dtype enum name, 0x00, dims joined by ",", 0x00, the decoded little-endian
 * bytes (a lossy tensor's reconstruction). `bytes` adds up those decoded sizes
 * (raw_size for every lossless tensor).
 */
export function summarize(d: DecodedEnvelope): Summary {
  return summarizeTensors(d.envelope, d.type, d.weights?.tensors ?? []);
}

/** The summary of a streamed transfer (spec section 14.5). */
export function summarizeStream(m: StreamMessage): Summary {
  return summarizeTensors(m.envelope, m.type, m.tensors.map((t) => ({ ...t, value: t.raw })));
}

interface Item {
  name: string;
  dtype: number;
  shape: bigint[];
  value: Uint8Array;
}

function summarizeTensors(env: Envelope, type: string, items: readonly Item[]): Summary {
  const body = env.body.value as { roundId?: bigint } | undefined;
  const tensors = [...items].sort((a, b) => Buffer.compare(utf8.encode(a.name), utf8.encode(b.name)));
  const h = createHash("sha256");
  let bytes = 0;
  for (const t of tensors) {
    h.update(utf8.encode(t.name)).update(Uint8Array.of(0));
    h.update(dtypeName(t.dtype)).update(Uint8Array.of(0));
    h.update(t.shape.map(String).join(",")).update(Uint8Array.of(0));
    h.update(t.value);
    bytes += t.value.length;
  }
  return {
    message_id: env.messageId,
    type,
    sender_id: env.senderId,
    round: body?.roundId !== undefined ? Number(body.roundId) : -1,
    tensors: tensors.length,
    bytes,
    sha256: h.digest("hex"),
  };
}

/** One JSON line with sorted keys and Python's json.dumps separators (", ", ": "). */
export function summaryLine(s: Summary): string {
  const keys = Object.keys(s).sort() as (keyof Summary)[];
  return `{${keys.map((k) => `${JSON.stringify(k)}: ${JSON.stringify(s[k])}`).join(", ")}}`;
}
