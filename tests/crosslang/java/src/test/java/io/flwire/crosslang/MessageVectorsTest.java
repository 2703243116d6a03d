package io.flwire.crosslang;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import com.google.protobuf.Descriptors.FieldDescriptor;
import com.google.protobuf.Message;
import com.google.protobuf.util.JsonFormat;
import flwire.v1.Messages.Envelope;
import flwire.v1.Transfer.TransferPart;
import java.security.PublicKey;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;

/**
 * tests/vectors/messages: every Envelope decodes to its .json (fields, headers, body, weights at
 * a 64-aligned offset) and re-encodes byte for byte (section 14); the signed one verifies (14.3);
 * the transfer parts reassemble into the envelope they were cut from (14.1).
 */
class MessageVectorsTest {

  private static List<JsonObject> envelopes() {
    List<JsonObject> out = new ArrayList<>();
    VectorFiles.manifest().getAsJsonArray("messages").forEach(e -> {
      if (e.getAsJsonObject().get("message").getAsString().equals("flwire.v1.Envelope")) {
        out.add(e.getAsJsonObject());
      }
    });
    return out;
  }

  @TestFactory
  Stream<DynamicTest> envelopesDecodeToTheirJsonAndReEncode() {
    List<JsonObject> all = envelopes();
    assertTrue(all.size() >= 5, all.size() + " envelope vectors");
    return all.stream().map(v -> DynamicTest.dynamicTest(v.get("name").getAsString(), () -> {
      JsonObject files = v.getAsJsonObject("files");
      byte[] bin = VectorFiles.checked(files.getAsJsonObject("bin"));
      VectorFiles.checked(files.getAsJsonObject("json"));
      JsonObject want = VectorFiles.json(files.getAsJsonObject("json").get("path").getAsString());
      Envelopes.Decoded d = Envelopes.decode(bin, Limits.DEFAULT);
      Envelope env = d.envelope();
      assertEquals(want.get("type").getAsString(), d.type());
      assertEquals(want.get("message_id").getAsString(), env.getMessageId());
      assertEquals(want.get("sender_id").getAsString(), env.getSenderId());
      assertEquals(want.getAsJsonObject("timestamp").get("seconds").getAsLong(),
          env.getTimestamp().getSeconds());
      assertEquals(want.getAsJsonObject("timestamp").get("nanos").getAsInt(),
          env.getTimestamp().getNanos());
      assertEquals(want.getAsJsonObject("schema_version").get("major").getAsInt(),
          env.getSchemaVersion().getMajor());
      assertEquals(want.getAsJsonObject("schema_version").get("minor").getAsInt(),
          env.getSchemaVersion().getMinor());
      Map<String, String> headers = new TreeMap<>();
      want.getAsJsonObject("headers").entrySet()
          .forEach(e -> headers.put(e.getKey(), e.getValue().getAsString()));
      assertEquals(headers, new TreeMap<>(Envelopes.headers(env)), "headers");
      // The body in protobuf's JSON mapping, without its weights.
      Message.Builder body = d.body().toBuilder();
      FieldDescriptor wf = Envelopes.weightsField(d.body());
      if (wf != null) {
        body.clearField(wf);
      }
      JsonElement gotBody = JsonParser.parseString(
          JsonFormat.printer().preservingProtoFieldNames().print(body.build()));
      assertEquals(want.get("body"), gotBody, "body");
      if (want.has("weights")) {
        assertNotNull(d.weights(), "weights");
        JsonObject w = want.getAsJsonObject("weights");
        int offset = w.get("offset").getAsInt();
        assertEquals(0, offset % 64, "the TensorMap is 64-aligned in the envelope");
        byte[] mapBytes = TensorMapWriter.serialize((flwire.v1.TensorOuterClass.TensorMap)
            d.body().getField(wf));
        assertArrayEquals(mapBytes, java.util.Arrays.copyOfRange(bin, offset,
            offset + mapBytes.length), "the TensorMap's bytes at its offset");
        List<JsonElement> tensors = new ArrayList<>();
        w.getAsJsonArray("tensors").forEach(tensors::add);
        assertEquals(tensors.size(), d.weights().tensors().size());
        for (int i = 0; i < tensors.size(); i++) {
          TensorVectorsTest.compare(tensors.get(i).getAsJsonObject(), d.weights().tensors().get(i));
        }
      } else {
        assertNull(d.weights());
      }
      // Re-encoded with this writer: the same bytes (the signed one: re-signed with the test key).
      Envelope unsigned = env.toBuilder().clearSignature().clearPadding().build();
      byte[] mine = Envelopes.encode(unsigned);
      if (want.has("signature")) {
        JsonObject s = want.getAsJsonObject("signature");
        mine = Signatures.sign(mine, s.get("key_id").getAsString(),
            Signatures.privateKey(VectorFiles.hex(s.get("test_key_seed_hex").getAsString())));
      }
      assertEquals(VectorFiles.sha256(bin), VectorFiles.sha256(mine), "re-encoded envelope");
    }));
  }

  private static byte[] signed() {
    return VectorFiles.read("messages/envelope_signed.bin");
  }

  private static JsonObject signature() {
    return VectorFiles.json("messages/envelope_signed.json").getAsJsonObject("signature");
  }

  private static Map<String, PublicKey> trust() throws Exception {
    JsonObject s = signature();
    return Map.of(s.get("key_id").getAsString(),
        Signatures.publicKey(VectorFiles.hex(s.get("public_key_hex").getAsString())));
  }

  @Test
  void signedEnvelopeVerifies() throws Exception {
    byte[] b = signed();
    JsonObject s = signature();
    Signatures.Located loc = Signatures.locate(b);
    assertNotNull(loc);
    assertEquals(s.get("signed_length").getAsInt(), loc.keyStart());
    byte[] d = Signatures.digest(b, loc.keyStart());
    assertEquals(s.get("digest_hex").getAsString(), java.util.HexFormat.of().formatHex(d));
    assertEquals(s.get("signed_payload_hex").getAsString(), java.util.HexFormat.of().formatHex(
        Signatures.signedPayload(1, s.get("key_id").getAsString(), d)));
    assertEquals(s.get("signature_hex").getAsString(),
        java.util.HexFormat.of().formatHex(loc.signature().getSignature().toByteArray()));
    String key = Signatures.verify(b, trust());
    Envelopes.Decoded env = Envelopes.decode(b, Limits.DEFAULT);
    assertEquals(key, env.envelope().getSenderId(), "sender_id is the key id");
    assertEquals(key, env.envelope().getClientUpdate().getClientId(), "client_id is the key id");
  }

  @Test
  void signedEnvelopeRefusesEveryChangedByteAndTruncation() throws Exception {
    byte[] b = signed();
    Map<String, PublicKey> trust = trust();
    for (int i = 0; i < b.length; i++) {
      for (int x : new int[] {0x01, 0x80, 0xff}) {
        byte[] c = b.clone();
        c[i] ^= (byte) x;
        int at = i;
        assertThrows(FlwireException.class, () -> Signatures.verify(c, trust),
            "byte " + at + " ^ " + x);
      }
    }
    for (int n = 0; n < b.length; n++) {
      byte[] c = java.util.Arrays.copyOf(b, n);
      assertThrows(FlwireException.class, () -> Signatures.verify(c, trust), "truncated to " + n);
    }
    assertThrows(FlwireException.class, () -> Signatures.verify(b, Map.of()), "unknown key");
  }

  private static List<TransferPart> parts(JsonObject want) throws Exception {
    List<TransferPart> out = new ArrayList<>();
    for (JsonElement e : want.getAsJsonArray("parts")) {
      JsonObject p = e.getAsJsonObject();
      TransferPart part = TransferPart.parseFrom(VectorFiles.read(p.get("path").getAsString()));
      assertEquals(p.get("index").getAsInt(), part.getPartIndex());
      assertEquals(p.get("offset").getAsLong(), part.getOffset());
      assertEquals(p.get("data_size").getAsInt(), part.getData().size());
      assertEquals(want.get("transfer_id").getAsString(), part.getTransferId());
      assertEquals(want.get("part_count").getAsInt(), part.getPartCount());
      assertEquals(want.get("total_size").getAsLong(), part.getTotalSize());
      assertEquals(VectorFiles.crcHex(want.get("payload_crc32c").getAsString()),
          part.getPayloadCrc32C());
      assertEquals(part.getPartIndex() + "/" + part.getPartCount(),
          p.getAsJsonObject("headers").get("flwire-part").getAsString());
      out.add(part);
    }
    return out;
  }

  @Test
  void transferPartsReassembleInAnyOrderWithDuplicates() throws Exception {
    for (JsonElement e : VectorFiles.manifest().getAsJsonArray("messages")) {
      JsonObject m = e.getAsJsonObject();
      if (m.get("message").getAsString().equals("flwire.v1.TransferPart")) {
        VectorFiles.checked(m.getAsJsonObject("files").getAsJsonObject("json"));
      }
    }
    JsonObject want = VectorFiles.json("messages/transfer_parts.json");
    byte[] whole = VectorFiles.read(want.get("whole").getAsString());
    List<TransferPart> ps = parts(want);
    assertEquals(want.get("part_count").getAsInt(), ps.size());
    // In order.
    Reassembler r = new Reassembler();
    byte[] got = null;
    for (int i = 0; i < ps.size(); i++) {
      got = r.add(ps.get(i).toByteArray());
      if (i < ps.size() - 1) {
        assertNull(got, "complete after " + (i + 1) + " parts");
      }
    }
    assertArrayEquals(whole, got);
    // Reversed, with every part delivered twice: the copies are ignored.
    r = new Reassembler();
    got = null;
    Set<byte[]> results = new HashSet<>();
    for (int i = ps.size() - 1; i >= 0; i--) {
      for (int k = 0; k < 2; k++) {
        byte[] out = r.add(ps.get(i));
        if (out != null) {
          results.add(out);
          got = out;
        }
      }
    }
    assertEquals(1, results.size());
    assertArrayEquals(whole, got);
    assertEquals(ps.size(), r.duplicates());
    assertEquals(0, r.pending());
    assertEquals("global_update", Envelopes.decode(got, Limits.DEFAULT).type());
  }

  @Test
  void aForgedPartDoesNotEndTheTransfer() throws Exception {
    List<TransferPart> ps = parts(VectorFiles.json("messages/transfer_parts.json"));
    byte[] whole = VectorFiles.read("messages/envelope_global_update.bin");
    Reassembler r = new Reassembler();
    byte[] forgedData = ps.get(1).getData().toByteArray();
    forgedData[0] ^= 1;
    r.add(ps.get(1).toBuilder().setData(com.google.protobuf.ByteString.copyFrom(forgedData))
        .build());
    byte[] got = null;
    for (TransferPart p : ps) {
      byte[] out = r.add(p);
      got = out != null ? out : got;
    }
    assertArrayEquals(whole, got, "the real copy of part 1 completes the transfer");
  }

  @Test
  void refusesInvalidParts() throws Exception {
    TransferPart p = parts(VectorFiles.json("messages/transfer_parts.json")).get(0);
    for (TransferPart bad : List.of(
        p.toBuilder().setPartIndex(p.getPartCount()).build(),
        p.toBuilder().setPartCount(0).build(),
        p.toBuilder().setOffset(p.getTotalSize()).build(),
        p.toBuilder().setTotalSize(1L << 31).build(),
        p.toBuilder().setTransferId("x".repeat(129)).build())) {
      FlwireException e = assertThrows(FlwireException.class, () -> new Reassembler().add(bad),
          bad.toString().substring(0, 60));
      assertEquals("transfer", e.check());
    }
    // part_count 2^32 + 1 as a last, overriding field: protobuf-java would read 1.
    for (int field : new int[] {2, 3}) {
      java.io.ByteArrayOutputStream raw = new java.io.ByteArrayOutputStream();
      p.writeTo(raw);
      com.google.protobuf.CodedOutputStream out = com.google.protobuf.CodedOutputStream.newInstance(raw);
      out.writeUInt64(field, (1L << 32) + 1);
      out.flush();
      FlwireException e = assertThrows(FlwireException.class,
          () -> new Reassembler().add(raw.toByteArray()));
      assertEquals("transfer", e.check());
      assertTrue(e.getMessage().contains("4294967297 does not fit its uint32 field"), e.getMessage());
    }
    assertNull(new Reassembler().add(p.toByteArray()));  // a valid first part, raw
    Reassembler r = new Reassembler();
    r.add(p);
    TransferPart other = parts(VectorFiles.json("messages/transfer_parts.json")).get(1);
    assertThrows(FlwireException.class,
        () -> r.add(other.toBuilder().setTotalSize(other.getTotalSize() + 1).build()));
  }
}
