/**
 * node dist/src/cli.js --bootstrap HOST:PORT --topics t1,t2 --expect N [--timeout-s 60]
 *
 * Reads a job's topics from the earliest offset with a group id of its own,
 * puts split messages together (spec 14.1: a part delivered twice is ignored,
 * interleaved transfers are kept apart), reads streamed transfers (a record
 * with the flwire-stream header, spec 14.5), decodes every envelope and tensor map
 * with every check (CRC-32C of each tensor and of each reassembled message
 * included), and once N distinct messages are in prints one summary line per
 * message, sorted by message_id, and exits 0. Exits 1 if fewer than N arrive in
 * time; a record it refuses is reported on stderr, counted, and not printed.
 */
import { randomUUID } from "node:crypto";

import kafkajs from "kafkajs";

import { parseArgs, stderrLogCreator } from "./args.js";
import { decodeEnvelope } from "./envelope.js";
import { StreamReader } from "./stream.js";
import { type Summary, summarize, summarizeStream, summaryLine } from "./summary.js";
import { Reassembler } from "./transfer.js";

const { Kafka, logLevel } = kafkajs;

const seen = new Map<string, Summary>();
const reassembler = new Reassembler();
const streams = new StreamReader();
let refused = 0;

const header = (h: Record<string, unknown> | undefined, name: string): string | undefined => {
  const v = h?.[name];
  return v === undefined ? undefined : String(Array.isArray(v) ? v[v.length - 1] : v);
};

function handle(topic: string, offset: string, value: Buffer | null, headers: Record<string, unknown> | undefined): void {
  if (value === null) return;
  const bytes = new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  try {
    if (header(headers, "flwire-stream") !== undefined) {
      const m = streams.add(bytes);
      if (m === undefined) return;
      // The seal: its headers are the message's.
      for (const [name, want] of [["flwire-type", m.type], ["flwire-message-id", m.envelope.messageId], ["flwire-sender-id", m.envelope.senderId]] as const) {
        const got = header(headers, name);
        if (got !== undefined && got !== want) throw new Error(`header ${name} '${got}', the envelope says '${want}'`);
      }
      if (!seen.has(m.envelope.messageId)) seen.set(m.envelope.messageId, summarizeStream(m));
      return;
    }
    const whole = header(headers, "flwire-part") !== undefined ? reassembler.add(bytes) : bytes;
    if (whole === undefined) return;
    const d = decodeEnvelope(whole);
    const type = header(headers, "flwire-type");
    if (type !== undefined && type !== d.type) throw new Error(`header flwire-type '${type}', body '${d.type}'`);
    if (!seen.has(d.envelope.messageId)) seen.set(d.envelope.messageId, summarize(d));
  } catch (e) {
    refused++;
    process.stderr.write(`refused record ${topic}@${offset}: ${(e as Error).message}\n`);
  }
}

/** Runs the consume mode; resolves to the process's exit status. */
export async function consume(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { bootstrap: undefined, topics: undefined, expect: undefined, "timeout-s": "60" });
  const expect = Number(args["expect"]);
  const topics = args["topics"]!.split(",").filter((t) => t !== "");
  const kafka = new Kafka({ clientId: "flwire-ts-consumer", brokers: [args["bootstrap"]!], logLevel: logLevel.WARN, logCreator: stderrLogCreator() });
  const consumer = kafka.consumer({ groupId: `flwire-ts-${randomUUID()}`, maxBytesPerPartition: 4 * 1024 * 1024, maxBytes: 16 * 1024 * 1024 });
  await consumer.connect();
  await consumer.subscribe({ topics, fromBeginning: true });
  let finish!: (ok: boolean) => void;
  const finished = new Promise<boolean>((resolve) => (finish = resolve));
  const timer = setTimeout(() => finish(false), Number(args["timeout-s"]) * 1000);
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ topic, message }) => {
      handle(topic, message.offset, message.value, message.headers as Record<string, unknown> | undefined);
      if (seen.size >= expect) finish(true);
    },
  });
  const ok = await finished;
  clearTimeout(timer);
  await consumer.disconnect();
  const lines = [...seen.values()].sort((a, b) => (a.message_id < b.message_id ? -1 : a.message_id > b.message_id ? 1 : 0));
  process.stdout.write(lines.map((s) => summaryLine(s) + "\n").join(""));
  if (!ok) {
    process.stderr.write(`timed out: ${seen.size} of ${expect} messages (refused records: ${refused}; incomplete transfers: ${reassembler.pending().length}; streamed transfers under way: ${streams.pending()})\n`);
    return 1;
  }
  return 0;
}
