/**
 * zstd through libzstd (zstd-napi's binding, libzstd 1.5.7): each walked frame
 * is decompressed on its own into exactly its slice of the output. libzstd
 * refuses a frame whose blocks regenerate more than the slice holds
 * (dstSize_tooSmall) or other than its Frame_Content_Size.
 */
import { createRequire } from "node:module";

import { refuse } from "./errors.js";
import type { Frame } from "./frames.js";

interface Binding {
  DCtx: new () => { decompress(dst: Uint8Array, src: Uint8Array): number };
  CCtx: new () => {
    setParameter(param: number, value: number): void;
    compress2(dst: Uint8Array, src: Uint8Array): number;
  };
  CParameter: Record<string, number>;
  compressBound(size: number): number;
}

const require = createRequire(import.meta.url);
const binding = require("zstd-napi/binding") as Binding;
const dctx = new binding.DCtx();

export function decodeZstdFrame(data: Uint8Array, f: Frame, out: Uint8Array): void {
  let n: number;
  try {
    n = dctx.decompress(out, data.subarray(f.start, f.end));
  } catch (e) {
    refuse("decompress", `zstd frame at byte ${f.start}: ${(e as Error).message}`);
  }
  if (n !== out.length) refuse("decompress", `zstd frame at byte ${f.start} holds ${n} bytes, not its Frame_Content_Size ${out.length}`);
}

/** One zstd frame of `src` at `level`, with Frame_Content_Size and no checksum (libzstd's defaults for ZSTD_compress2). */
export function compressZstdFrame(src: Uint8Array, level: number): Uint8Array {
  const cctx = new binding.CCtx();
  cctx.setParameter(binding.CParameter["compressionLevel"]!, level);
  cctx.setParameter(binding.CParameter["contentSizeFlag"]!, 1);
  cctx.setParameter(binding.CParameter["checksumFlag"]!, 0);
  const dst = new Uint8Array(binding.compressBound(src.length));
  const n = cctx.compress2(dst, src);
  return dst.subarray(0, n);
}
