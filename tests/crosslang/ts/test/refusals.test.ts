/**
 * The refusal vectors (tests/vectors/refusals, manifest.json "refusals"): each
 * breaks one reader check, and this reader refuses it for that check (the
 * FlwireError's check id is the spec's id).
 */
import assert from "node:assert/strict";
import { test } from "node:test";

import { FlwireError } from "../src/errors.js";
import { DEFAULT_LIMITS, type Limits, decodeTensorMap } from "../src/tensormap.js";
import { checkedFile, manifest } from "./util.js";

const refusals = manifest().refusals;

const LIMIT_NAMES: Record<string, keyof Limits> = {
  max_tensor_bytes: "maxTensorBytes",
  max_total_bytes: "maxTotalBytes",
  max_tensors: "maxTensors",
  max_rank: "maxRank",
  max_unknown_bytes: "maxUnknownBytes",
};

function limitsFor(given: Record<string, number> | undefined): Limits {
  const lim: Limits = { ...DEFAULT_LIMITS };
  for (const [name, v] of Object.entries(given ?? {})) {
    const key = LIMIT_NAMES[name];
    assert.ok(key, `unknown limit ${name}`);
    (lim as unknown as Record<string, unknown>)[key] = typeof lim[key] === "bigint" ? BigInt(v) : v;
  }
  return lim;
}

test("every check id has a refusal vector", () => {
  const checks = new Set(refusals.map((r) => r.check));
  for (const id of [
    "protobuf", "dtype", "shape", "raw_size", "limits", "codec", "filter", "data_size", "frames",
    "empty_crc32c", "unique_names", "decompress", "crc32c", "bool", "lossy_method", "lossy_dtype",
    "lossy_params", "lossy_size", "lossy_not_smaller", "lossy_filter", "topk_indices", "max_tensors",
    "max_rank", "max_unknown_bytes", "max_expansion",
  ]) {
    assert.ok(checks.has(id), `no refusal vector for [${id}]`);
  }
});

for (const r of refusals) {
  test(`refusal ${r.name} [${r.check}]`, () => {
    assert.equal(r.message, "flwire.v1.TensorMap");
    const bin = checkedFile(r.file);
    assert.throws(
      () => decodeTensorMap(bin, limitsFor(r.limits)),
      (e: unknown) => {
        assert.ok(e instanceof FlwireError, `not a FlwireError: ${String(e)}`);
        assert.equal(e.check, r.check, `${r.description}\nrefused as: ${e.message}`);
        return true;
      },
    );
  });
}
