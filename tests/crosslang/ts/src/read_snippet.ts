// The README's "Reading a tensor map in 15 lines" (trusted input only: decodeTensorMap makes every check).
import { readFileSync } from "node:fs";
import { fromBinary } from "@bufbuild/protobuf";
import { decompress } from "zstd-napi";
import { Codec, Dtype, Filter, TensorMapSchema } from "./gen/flwire/v1/tensor_pb.js";
import { crc32c } from "./crc32c.js";
import { dtypeWidth, unshuffle } from "./dtypes.js";

const map = fromBinary(TensorMapSchema, readFileSync(process.argv[2]!));
for (const t of map.tensors) {
  let raw = t.codec === Codec.ZSTD ? new Uint8Array(decompress(Buffer.from(t.data))) : t.data;
  if (raw.length !== Number(t.rawSize)) throw new Error(`${t.name}: ${raw.length} bytes, not raw_size`);
  if (t.filter === Filter.BYTE_SHUFFLE) raw = unshuffle(raw, dtypeWidth(t.dtype)!);
  if (crc32c(raw) !== t.crc32c) throw new Error(`${t.name}: CRC-32C mismatch`);
  console.log(t.name, Dtype[t.dtype], t.shape.map(Number), raw.length); // raw: little-endian elements
}
