/**
 * The golden tensor-map vectors (tests/vectors/*.bin): each decodes to exactly
 * its .json, and this consumer's encoder writes each back byte for byte.
 */
import assert from "node:assert/strict";
import { test } from "node:test";

import { fromBinary } from "@bufbuild/protobuf";

import { crc32c, crc32cBitwise } from "../src/crc32c.js";
import { codecName, dtypeFromName, dtypeName, filterName, lossyName } from "../src/dtypes.js";
import { encodeTensorMap, toWire, type WireTensor } from "../src/encode.js";
import { Codec, Lossy, TensorMapSchema } from "../src/gen/flwire/v1/tensor_pb.js";
import { decodeTensorMap } from "../src/tensormap.js";
import { checkedFile, fromHex, hex, manifest } from "./util.js";

interface JsonTensor {
  name: string;
  dtype: string;
  shape: number[];
  codec: string;
  filter: string;
  raw_size: number;
  crc32c: string;
  raw_hex: string;
  lossy?: { method: string; block_size: number; k: number; decoded_hex: string; original_hex: string };
}

interface JsonVector {
  encoder: { compression: "none" | "zstd" | "lz4"; level: number; shuffle: boolean };
  metadata: Record<string, string>;
  tensors: JsonTensor[];
}

const vectors = manifest().vectors;

test("the manifest lists the vectors", () => {
  assert.ok(vectors.length >= 20, `${vectors.length} vectors`);
});

test("CRC-32C: the check value of spec section 8 and the bitwise reference", () => {
  const check = new TextEncoder().encode("123456789");
  assert.equal(crc32c(check), 0xe3069283);
  assert.equal(crc32cBitwise(check), 0xe3069283);
  const data = new Uint8Array(1000).map((_, i) => (i * 7919) & 0xff);
  for (const n of [0, 1, 7, 8, 9, 63, 1000]) assert.equal(crc32c(data.subarray(0, n)), crc32cBitwise(data.subarray(0, n)));
  assert.equal(crc32c(data.subarray(10)), crc32c(data.subarray(500), crc32c(data.subarray(10, 500))));
});

for (const v of vectors) {
  test(`vector ${v.name}: decodes to its .json`, () => {
    const bin = checkedFile(v.files["bin"]!);
    const want = JSON.parse(Buffer.from(checkedFile(v.files["json"]!)).toString("utf8")) as JsonVector;
    const got = decodeTensorMap(bin);
    assert.deepEqual(got.metadata, want.metadata);
    assert.deepEqual(got.tensors.map((t) => t.name), want.tensors.map((t) => t.name));
    got.tensors.forEach((t, i) => {
      const w = want.tensors[i]!;
      assert.equal(dtypeName(t.dtype), w.dtype, w.name);
      assert.deepEqual(t.shape.map(Number), w.shape, w.name);
      assert.equal(codecName(t.codec), w.codec, w.name);
      assert.equal(filterName(t.filter), w.filter, w.name);
      assert.equal(Number(t.rawSize), w.raw_size, w.name);
      assert.equal(t.crc32c.toString(16).padStart(8, "0"), w.crc32c, w.name);
      assert.equal(hex(t.raw), w.raw_hex, w.name);
      assert.equal(crc32cBitwise(t.raw), t.crc32c, w.name);
      if (w.lossy) {
        assert.ok(t.lossy, `${w.name}: lossy`);
        assert.equal(lossyName(t.lossy.method), w.lossy.method, w.name);
        assert.equal(t.lossy.blockSize, w.lossy.block_size, w.name);
        assert.equal(Number(t.lossy.k), w.lossy.k, w.name);
        assert.equal(hex(t.value), w.lossy.decoded_hex, `${w.name}: reconstruction`);
      } else {
        assert.equal(t.lossy, undefined, w.name);
        assert.equal(hex(t.value), w.raw_hex, w.name);
      }
    });
  });

  test(`vector ${v.name}: the encoder writes its bytes back`, () => {
    const bin = checkedFile(v.files["bin"]!);
    const want = JSON.parse(Buffer.from(checkedFile(v.files["json"]!)).toString("utf8")) as JsonVector;
    // 1. The container around the same data bytes (every vector, LZ4 included):
    //    canonical field order, defaults omitted, padding of rule 7.
    const parsed = fromBinary(TensorMapSchema, bin);
    const same: WireTensor[] = parsed.tensors.map((t) => ({
      name: t.name, dtype: t.dtype, shape: t.shape, codec: t.codec, filter: t.filter,
      rawSize: t.rawSize, crc32c: t.crc32c, data: t.data,
      ...(t.lossy ? { lossy: { method: t.lossy.method, blockSize: t.lossy.blockSize, k: t.lossy.k } } : {}),
    }));
    assert.equal(hex(encodeTensorMap(same, { ...parsed.metadata })), hex(bin));
    // 2. From the .json's raw bytes (a lossy tensor's payload) with the vector's
    //    encoder options: byte for byte for none and zstd (libzstd 1.5.7, as the
    //    manifest's); LZ4 has no compressor here (README), so only step 1.
    if (want.encoder.compression === "lz4") return;
    const opts = { compression: want.encoder.compression, level: want.encoder.level, shuffle: want.encoder.shuffle };
    const tensors = want.tensors.map((w) => {
      const dtype = dtypeFromName(w.dtype);
      const shape = w.shape.map(BigInt);
      const raw = fromHex(w.raw_hex);
      if (!w.lossy) return toWire(w.name, dtype, shape, raw, opts);
      const method = Lossy[w.lossy.method.replace(/^LOSSY_/, "") as keyof typeof Lossy];
      const cast = method === Lossy.CAST_FLOAT16 || method === Lossy.CAST_BFLOAT16;
      const wire = toWire(w.name, dtype, shape, raw, cast ? opts : { ...opts, shuffle: false }, cast ? 2 : undefined);
      return { ...wire, lossy: { method, blockSize: w.lossy.block_size, k: BigInt(w.lossy.k) } };
    });
    const out = encodeTensorMap(tensors, want.metadata);
    assert.equal(hex(out), hex(bin));
    // Uncompressed data is 64-aligned; compressed tensors have no padding.
    for (const t of fromBinary(TensorMapSchema, out).tensors) {
      if (t.codec !== Codec.UNSPECIFIED) assert.equal(t.padding.length, 0, t.name);
    }
  });
}

test("the README's snippet reads zstd_shuffle.bin and refuses a changed CRC-32C", async () => {
  const { execFileSync } = await import("node:child_process");
  const { fileURLToPath } = await import("node:url");
  const { writeFileSync, mkdtempSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const snippet = fileURLToPath(new URL("../src/read_snippet.js", import.meta.url));
  const bin = checkedFile(vectors.find((v) => v.name === "zstd_shuffle")!.files["bin"]!);
  const out = execFileSync(process.execPath, [snippet, fileURLToPath(new URL("../../../../vectors/zstd_shuffle.bin", import.meta.url))], { encoding: "utf8" });
  assert.equal(out.trim(), "smooth FLOAT32 [ 64, 64 ] 16384");
  const bad = new Uint8Array(bin);
  const at = bin.indexOf(0x3d); // crc32c's key in the one tensor: its lowest byte follows
  bad[at + 1]! ^= 1;
  const path = `${mkdtempSync(`${tmpdir()}/flwire-ts-`)}/bad.bin`;
  writeFileSync(path, bad);
  assert.throws(() => execFileSync(process.execPath, [snippet, path], { stdio: "pipe" }), /CRC-32C mismatch/);
});
