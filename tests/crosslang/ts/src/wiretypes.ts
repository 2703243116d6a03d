/**
 * Spec section 2.4: "a known field with a wire type other than its own SHOULD
 * be refused". @bufbuild/protobuf's parser does neither that nor skip such a
 * field: it reads the bytes as the field's own type (a string field under
 * wire type 3 is still read as a string). This walk, made before fromBinary,
 * refuses them, descending into message fields and map entries; repeated
 * numeric fields may be packed or not.
 */
import { type DescField, type DescMessage, ScalarType } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

import { refuse } from "./errors.js";

function scalarWireType(t: ScalarType): WireType {
  switch (t) {
    case ScalarType.DOUBLE:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return WireType.Bit64;
    case ScalarType.FLOAT:
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
      return WireType.Bit32;
    case ScalarType.STRING:
    case ScalarType.BYTES:
      return WireType.LengthDelimited;
    default:
      return WireType.Varint;
  }
}

interface Expect {
  wireTypes: WireType[];
  /** The message (or map entry) to descend into. */
  inner?: (bytes: Uint8Array, path: string) => void;
}

function mapEntry(f: DescField & { fieldKind: "map" }): (bytes: Uint8Array, path: string) => void {
  return (bytes, path) => {
    const r = new BinaryReader(bytes);
    while (r.pos < r.len) {
      const [no, wt] = r.tag();
      if (no === 1 && wt !== scalarWireType(f.mapKey)) refuse("protobuf", `${path}: map key with wire type ${wt}`);
      if (no === 2) {
        const want = f.mapKind === "scalar" ? scalarWireType(f.scalar) : f.mapKind === "enum" ? WireType.Varint : WireType.LengthDelimited;
        if (wt !== want) refuse("protobuf", `${path}: map value with wire type ${wt}`);
        if (f.mapKind === "message") {
          const b = r.bytes();
          checkWireTypes(f.message, b, path);
          continue;
        }
      }
      r.skip(wt, no);
    }
  };
}

function expect(f: DescField): Expect {
  switch (f.fieldKind) {
    case "message":
      return { wireTypes: [WireType.LengthDelimited], inner: (b, p) => checkWireTypes(f.message, b, p) };
    case "map":
      return { wireTypes: [WireType.LengthDelimited], inner: mapEntry(f) };
    case "enum":
      return { wireTypes: [WireType.Varint] };
    case "scalar":
      return { wireTypes: [scalarWireType(f.scalar)] };
    case "list":
      if (f.listKind === "message") return { wireTypes: [WireType.LengthDelimited], inner: (b, p) => checkWireTypes(f.message, b, p) };
      if (f.listKind === "enum") return { wireTypes: [WireType.Varint, WireType.LengthDelimited] };
      if (f.scalar === ScalarType.STRING || f.scalar === ScalarType.BYTES) return { wireTypes: [WireType.LengthDelimited] };
      return { wireTypes: [scalarWireType(f.scalar), WireType.LengthDelimited] };
  }
}

/** Throw `[protobuf]` for a known field of `schema` (or of a message inside) with a wire type not its own. */
export function checkWireTypes(schema: DescMessage, bytes: Uint8Array, path: string = schema.name): void {
  const r = new BinaryReader(bytes);
  try {
    while (r.pos < r.len) {
      const [no, wt] = r.tag();
      const f = schema.fields.find((x) => x.number === no);
      if (f === undefined) {
        r.skip(wt, no);
        continue;
      }
      const e = expect(f);
      if (!e.wireTypes.includes(wt)) refuse("protobuf", `${path}.${f.name}: wire type ${wt}, not ${e.wireTypes.join(" or ")}`);
      if (e.inner && wt === WireType.LengthDelimited) e.inner(r.bytes(), `${path}.${f.name}`);
      else r.skip(wt, no);
    }
  } catch (e) {
    if ((e as { check?: string }).check) throw e;
    refuse("protobuf", `${path}: ${(e as Error).message}`);
  }
}
