/**
 * Reassembling TransferParts (spec section 14.1): each part checked against
 * the rules and against the earlier parts of its transfer; a part held byte
 * for byte is ignored (redelivery); a copy with other bytes is kept beside it
 * (at most 4 per index); once every index is in, combinations of copies
 * (newest first, at most 8) are tried until the CRC-32C of the whole matches.
 */
import { create, fromBinary } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

import { crc32c } from "./crc32c.js";
import { refuse } from "./errors.js";
import { checkWireTypes } from "./wiretypes.js";
import { type TransferPart, TransferPartSchema } from "./gen/flwire/v1/transfer_pb.js";

const MAX_COPIES = 4;
const MAX_COMBINATIONS = 8;

/** Parse and check one part on its own. */
export function parsePart(bytes: Uint8Array): TransferPart {
  try {
    const r = new BinaryReader(bytes);
    while (r.pos < r.len) {
      const [no, wt] = r.tag();
      if ((no === 2 || no === 3) && wt === WireType.Varint) {
        if (BigInt(r.uint64()) >= 2n ** 32n) refuse("transfer", `part_index or part_count does not fit 32 bits`);
      } else {
        r.skip(wt, no);
      }
    }
  } catch (e) {
    if ((e as { check?: string }).check) throw e;
    refuse("protobuf", `TransferPart: ${(e as Error).message}`);
  }
  let p: TransferPart;
  checkWireTypes(TransferPartSchema, bytes);
  try {
    p = fromBinary(TransferPartSchema, bytes);
  } catch (e) {
    refuse("protobuf", `TransferPart: ${(e as Error).message}`);
  }
  const idLen = new TextEncoder().encode(p.transferId).length;
  if (idLen === 0 || idLen > 128) refuse("transfer", `transfer_id of ${idLen} bytes`);
  if (p.partCount < 1 || p.partIndex >= p.partCount) refuse("transfer", `part ${p.partIndex} of ${p.partCount}`);
  if (p.totalSize >= 2n ** 31n) refuse("transfer", `total_size ${p.totalSize} is 2^31 or more`);
  if (p.offset + BigInt(p.data.length) > p.totalSize) refuse("transfer", `part ${p.partIndex} runs past total_size`);
  return p;
}

interface Transfer {
  count: number;
  total: number;
  crc: number;
  copies: Map<number, TransferPart[]>;
}

const same = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && Buffer.compare(a, b) === 0;

export class Reassembler {
  private readonly transfers = new Map<string, Transfer>();
  private readonly done = new Set<string>();

  /** Add one part; returns the whole message once it is complete and its CRC-32C matches. */
  add(bytes: Uint8Array): Uint8Array | undefined {
    const p = parsePart(bytes);
    if (this.done.has(p.transferId)) return undefined; // a late duplicate of a finished transfer
    let t = this.transfers.get(p.transferId);
    if (t === undefined) {
      t = { count: p.partCount, total: Number(p.totalSize), crc: p.payloadCrc32c, copies: new Map() };
      this.transfers.set(p.transferId, t);
    } else if (t.count !== p.partCount || t.total !== Number(p.totalSize) || t.crc !== p.payloadCrc32c) {
      refuse("transfer", `part ${p.partIndex} of '${p.transferId}' disagrees with earlier parts on count, size or checksum`);
    }
    const copies = t.copies.get(p.partIndex) ?? [];
    if (copies.some((c) => c.offset === p.offset && same(c.data, p.data))) return undefined; // redelivery
    if (copies.length >= MAX_COPIES) return undefined;
    copies.push(p);
    t.copies.set(p.partIndex, copies);
    if (t.copies.size < t.count) return undefined;
    const whole = this.tryCombinations(t);
    if (whole !== undefined) {
      this.transfers.delete(p.transferId);
      this.done.add(p.transferId);
    }
    return whole;
  }

  /** Transfers still incomplete (or complete with a wrong CRC-32C). */
  pending(): string[] {
    return [...this.transfers.keys()];
  }

  private tryCombinations(t: Transfer): Uint8Array | undefined {
    const lists = [...Array(t.count).keys()].map((i) => [...t.copies.get(i)!].reverse()); // newest first
    const choice = new Array<number>(t.count).fill(0);
    for (let tries = 0; tries < MAX_COMBINATIONS; tries++) {
      const whole = this.join(t, lists.map((l, i) => l[choice[i]!]!));
      if (whole !== undefined) return whole;
      // next combination: odometer over the copies
      let i = 0;
      while (i < t.count && ++choice[i]! >= lists[i]!.length) choice[i++] = 0;
      if (i === t.count) break;
    }
    return undefined;
  }

  /** The parts placed at their offsets, when they tile [0, total) and the CRC-32C matches. */
  private join(t: Transfer, parts: TransferPart[]): Uint8Array | undefined {
    const sorted = [...parts].sort((a, b) => Number(a.offset - b.offset));
    let at = 0;
    const whole = new Uint8Array(t.total);
    for (const p of sorted) {
      if (Number(p.offset) !== at) return undefined; // a gap or an overlap
      whole.set(p.data, at);
      at += p.data.length;
    }
    if (at !== t.total || crc32c(whole) !== t.crc) return undefined;
    return whole;
  }
}

/** Split an encoded message into parts of `partData` bytes of data each, the last shorter (section 14.1). */
export function splitMessage(transferId: string, message: Uint8Array, partData: number): TransferPart[] {
  const count = Math.max(1, Math.ceil(message.length / partData));
  const crc = crc32c(message);
  return [...Array(count).keys()].map((i) =>
    create(TransferPartSchema, {
      transferId, partIndex: i, partCount: count, totalSize: BigInt(message.length),
      offset: BigInt(i * partData), payloadCrc32c: crc, data: message.subarray(i * partData, (i + 1) * partData),
    }),
  );
}
