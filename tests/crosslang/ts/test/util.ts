import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** tests/vectors, from dist/test/ (compiled) of tests/crosslang/ts. */
export const VECTORS = fileURLToPath(new URL("../../../../vectors/", import.meta.url));

export function readVector(path: string): Uint8Array {
  return new Uint8Array(readFileSync(VECTORS + path));
}

export function readJson<T = any>(path: string): T {
  return JSON.parse(readFileSync(VECTORS + path, "utf8")) as T;
}

export const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
export const fromHex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, "hex"));
export const sha256 = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

export interface FileEntry {
  path: string;
  size: number;
  sha256: string;
}

export interface Manifest {
  libzstd_version: string;
  vectors: { name: string; files: Record<string, FileEntry> }[];
  refusals: { name: string; check: string; description: string; message: string; limits?: Record<string, number>; file: FileEntry }[];
  messages: { name: string; message: string; files: Record<string, FileEntry> }[];
}

export const manifest = (): Manifest => readJson<Manifest>("manifest.json");

/** The file's bytes, after checking its size and SHA-256 against the manifest. */
export function checkedFile(f: FileEntry): Uint8Array {
  const b = readVector(f.path);
  if (b.length !== f.size || sha256(b) !== f.sha256) {
    throw new Error(`${f.path}: ${b.length} bytes, sha256 ${sha256(b)}; the manifest says ${f.size}, ${f.sha256}`);
  }
  return b;
}
