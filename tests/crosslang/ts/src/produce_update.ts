/**
 * node dist/src/cli.js produce-update --bootstrap HOST:PORT --topic JOB.updates
 *     --client-id ID --round R --from-global FILE|none [--examples 100]
 *
 * Writes one ClientUpdate with this consumer's own encoder: a weights TensorMap
 * with the names, dtypes and shapes of the global model (FILE: the encoded
 * global-update Envelope; none: w float32 [1024, 512] and b float32 [512]),
 * filled with the known values of known_values.ts, zstd level 1, in the
 * canonical form; the Envelope (schema 1.2, message id a UUID, sender = the
 * client id) split into TransferParts when above the 1,000,000-byte record
 * limit, each part in its own record with the message's headers, flwire-part
 * and the client id as key (spec 14.1). Prints the message's summary line (as
 * the consume mode prints it, from the bytes it sent, decoded with every check).
 */
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import kafkajs from "kafkajs";

import { parseArgs, stderrLogCreator } from "./args.js";
import { decodeEnvelope, encodeEnvelope } from "./envelope.js";
import { encodeTensorMap, toWire } from "./encode.js";
import { ClientUpdateSchema, EnvelopeSchema, SchemaVersionSchema } from "./gen/flwire/v1/messages_pb.js";
import { Dtype, TensorMapSchema } from "./gen/flwire/v1/tensor_pb.js";
import { TransferPartSchema } from "./gen/flwire/v1/transfer_pb.js";
import { recordHeaders } from "./kafka_headers.js";
import { knownRaw } from "./known_values.js";
import { summarize, summaryLine } from "./summary.js";
import { splitMessage } from "./transfer.js";

const { Kafka, Partitioners, logLevel } = kafkajs;
const RECORD_LIMIT = 1_000_000;

interface Layout { name: string; dtype: Dtype; shape: bigint[] }

function layout(from: string): Layout[] {
  if (from === "none") {
    return [{ name: "w", dtype: Dtype.FLOAT32, shape: [1024n, 512n] }, { name: "b", dtype: Dtype.FLOAT32, shape: [512n] }];
  }
  const d = decodeEnvelope(new Uint8Array(readFileSync(from)));
  if (!d.weights) throw new Error(`${from}: a ${d.type} without weights`);
  return d.weights.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape }));
}

export function buildUpdate(clientId: string, round: bigint, numExamples: bigint, tensors: Layout[]): Uint8Array {
  const wire = tensors.map((t, j) => {
    const n = t.shape.reduce((a, b) => a * b, 1n);
    return toWire(t.name, t.dtype, t.shape, knownRaw(j, t.dtype, Number(n)), { compression: "zstd", level: 1, shuffle: false });
  });
  const weights = fromBinary(TensorMapSchema, encodeTensorMap(wire));
  const env = create(EnvelopeSchema, {
    messageId: randomUUID(),
    senderId: clientId,
    timestamp: timestampFromMs(Date.now()),
    schemaVersion: create(SchemaVersionSchema, { major: 1, minor: 2 }),
    body: { case: "clientUpdate", value: create(ClientUpdateSchema, { clientId, roundId: round, weights, numExamples }) },
  });
  return encodeEnvelope(env);
}

/** Runs the produce-update mode; resolves to the process's exit status. */
export async function produceUpdate(argv: string[]): Promise<number> {
  const args = parseArgs(argv, {
    bootstrap: undefined, topic: undefined, "client-id": undefined, round: undefined, "from-global": undefined,
    examples: "100",
  });
  const clientId = args["client-id"]!;
  const bytes = buildUpdate(clientId, BigInt(args["round"]!), BigInt(args["examples"]!), layout(args["from-global"]!));
  const d = decodeEnvelope(bytes); // what a reader makes of it, every check included
  if (d.weightsOffset! % 64 !== 0) throw new Error(`weights at offset ${d.weightsOffset}, not 64-aligned`);
  const headers = recordHeaders(d.envelope, d.type);
  const key = Buffer.from(clientId);
  const overhead = key.length + Object.entries(headers).reduce((s, [k, v]) => s + k.length + v.length, 0) + "flwire-part".length + 24;
  const records: { value: Buffer; headers: Record<string, string> }[] = [];
  if (bytes.length + overhead <= RECORD_LIMIT) {
    records.push({ value: Buffer.from(bytes), headers });
  } else {
    // Room for the part's own fields: id (<= 128 bytes), indices, sizes, CRC, keys and lengths.
    const parts = splitMessage(d.envelope.messageId, bytes, RECORD_LIMIT - overhead - 256);
    for (const p of parts) {
      records.push({ value: Buffer.from(toBinary(TransferPartSchema, p)), headers: { ...headers, "flwire-part": `${p.partIndex}/${p.partCount}` } });
    }
  }
  const kafka = new Kafka({ clientId: "flwire-ts-producer", brokers: [args["bootstrap"]!], logLevel: logLevel.WARN, logCreator: stderrLogCreator() });
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  try {
    for (const r of records) {
      // One record per request: a batch of several ~1 MB parts would pass the broker's limit.
      await producer.send({ topic: args["topic"]!, acks: -1, messages: [{ key, value: r.value, headers: r.headers }] });
    }
  } finally {
    await producer.disconnect();
  }
  process.stderr.write(`produce-update: ${d.envelope.messageId}, ${bytes.length} bytes in ${records.length} record(s)\n`);
  process.stdout.write(summaryLine(summarize(d)) + "\n");
  return 0;
}
