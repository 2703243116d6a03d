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
import com.google.protobuf.util.JsonFormat;
import flwire.v1.TensorOuterClass.Codec;
import flwire.v1.TensorOuterClass.Filter;
import flwire.v1.TensorOuterClass.Tensor;
import flwire.v1.TensorOuterClass.TensorMap;
import java.security.PublicKey;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.StringJoiner;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.stream.Stream;
import org.apache.commons.codec.digest.Blake3;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;

/**
 * The streamed transfers of tests/vectors/messages (stream*.json) and the stream refusals
 * (manifest.json, "stream_refusals"), read with {@link StreamReader} (spec section 14.5). Each
 * result is printed as one line ("STREAM ..." and "STREAM-REFUSAL ..."), which
 * tests/conformance/test_crosslang_java.py compares with what the vectors' .json and the manifest
 * say.
 */
class StreamVectorsTest {
  private static final HexFormat HEX = HexFormat.of();
  private static final String STREAM_HEADER = "flwire-stream";

  /** The 13 check ids of section 14.5 and the four reasons of section 14.3. */
  static final Set<String> CHECKS = Set.of("stream_part", "stream_gap", "stream_no_head",
      "stream_head", "chunk_tensor_index", "chunk_offset", "chunk_elements", "chunk_overrun",
      "chunk_decode", "stream_part_count", "stream_crc32c", "stream_incomplete", "stream_signed",
      "unsigned", "bad_signature", "unknown_key", "sender_mismatch");

  /** The streams' .json, each part's file checked against the manifest. */
  private static List<JsonObject> streams() {
    List<JsonObject> out = new ArrayList<>();
    for (JsonElement e : VectorFiles.manifest().getAsJsonArray("messages")) {
      JsonObject m = e.getAsJsonObject();
      if (!m.get("message").getAsString().equals("flwire.v1.StreamPart")) {
        continue;
      }
      JsonObject files = m.getAsJsonObject("files");
      VectorFiles.checked(files.getAsJsonObject("json"));
      JsonObject want = VectorFiles.json(files.getAsJsonObject("json").get("path").getAsString());
      JsonElement[] parts = want.getAsJsonArray("parts").asList().toArray(new JsonElement[0]);
      for (int k = 0; k < parts.length; k++) {
        JsonObject f = files.getAsJsonObject("part" + k);
        assertNotNull(f, want.get("name") + ": part" + k + " in the manifest");
        assertEquals(parts[k].getAsJsonObject().get("path").getAsString(),
            f.get("path").getAsString());
        VectorFiles.checked(f);
      }
      out.add(want);
    }
    assertTrue(out.size() >= 2, out.size() + " streamed transfers in the manifest");
    return out;
  }

  private static List<byte[]> values(JsonObject stream) {
    List<byte[]> out = new ArrayList<>();
    stream.getAsJsonArray("parts")
        .forEach(p -> out.add(VectorFiles.read(p.getAsJsonObject().get("path").getAsString())));
    return out;
  }

  /** What a new reader makes of values in order: the message, and the first refusal. */
  record Read(StreamReader.StreamMessage message, FlwireException refusal, StreamReader reader) {}

  static Read read(List<byte[]> values) {
    StreamReader r = new StreamReader();
    StreamReader.StreamMessage msg = null;
    FlwireException first = null;
    for (byte[] v : values) {
      try {
        StreamReader.StreamMessage m = r.add(v);
        msg = m != null ? m : msg;
      } catch (FlwireException e) {
        first = first == null ? e : first;
      }
    }
    return new Read(msg, first, r);
  }

  private static String crcHex(int crc) {
    return String.format("%08x", crc);
  }

  private static String shapeText(long[] shape) {
    StringJoiner j = new StringJoiner(",", "[", "]");
    for (long d : shape) {
      j.add(Long.toUnsignedString(d));
    }
    return j.toString();
  }

  private static Map<String, PublicKey> trust(JsonObject keys) throws Exception {
    Map<String, PublicKey> out = new HashMap<>();
    for (Map.Entry<String, JsonElement> e : keys.entrySet()) {
      out.put(e.getKey(), Signatures.publicKey(VectorFiles.hex(e.getValue().getAsString())));
    }
    return out;
  }

  @TestFactory
  Stream<DynamicTest> streamsDecodeToTheirJson() {
    return streams().stream().map(want -> DynamicTest.dynamicTest(
        want.get("name").getAsString(), () -> readsToItsJson(want)));
  }

  private static void readsToItsJson(JsonObject want) throws Exception {
    String name = want.get("name").getAsString();
    List<byte[]> values = values(want);
    assertEquals(want.get("part_count").getAsInt(), values.size());
    JsonObject env = want.getAsJsonObject("envelope");
    Map<String, String> headers = new TreeMap<>();
    env.getAsJsonObject("headers").entrySet()
        .forEach(e -> headers.put(e.getKey(), e.getValue().getAsString()));
    // Every part but the seal returns nothing; the seal returns the message.
    StreamReader r = new StreamReader();
    StreamReader.StreamMessage last = null;
    for (int k = 0; k < values.size(); k++) {
      last = r.add(values.get(k));
      assertEquals(k == values.size() - 1, last != null, "a message after part " + k);
      JsonObject p = want.getAsJsonArray("parts").get(k).getAsJsonObject();
      Map<String, String> h = new TreeMap<>();
      p.getAsJsonObject("headers").entrySet()
          .forEach(e -> h.put(e.getKey(), e.getValue().getAsString()));
      assertEquals(String.valueOf(k), h.remove(STREAM_HEADER), "part " + k + "'s flwire-stream");
      assertEquals(headers, h, "part " + k + ": the message's headers");
    }
    assertEquals(0, r.pending());
    StreamReader.StreamMessage msg = last;
    assertEquals(want.get("transfer_id").getAsString(), msg.transferId());
    assertEquals(values.size(), msg.parts());
    // Section 14.5: the CRC-32C of the record values of parts 0 to n-2.
    byte[] r0 = concat(values.subList(0, values.size() - 1));
    assertEquals(want.get("stream_crc32c").getAsString(), crcHex(TensorMapReader.crc32c(r0)));
    assertEquals(TensorMapReader.crc32c(r0), msg.crc32c());
    // The envelope of the head, its body without weights in protobuf's JSON mapping.
    assertEquals(env.get("type").getAsString(), msg.type());
    assertEquals(env.get("message_id").getAsString(), msg.envelope().getMessageId());
    assertEquals(want.get("transfer_id").getAsString(), msg.envelope().getMessageId());
    assertEquals(env.get("sender_id").getAsString(), msg.envelope().getSenderId());
    assertEquals(env.getAsJsonObject("timestamp").get("seconds").getAsLong(),
        msg.envelope().getTimestamp().getSeconds());
    assertEquals(env.getAsJsonObject("timestamp").get("nanos").getAsInt(),
        msg.envelope().getTimestamp().getNanos());
    assertEquals(env.getAsJsonObject("schema_version").get("major").getAsInt(),
        msg.envelope().getSchemaVersion().getMajor());
    assertEquals(env.getAsJsonObject("schema_version").get("minor").getAsInt(),
        msg.envelope().getSchemaVersion().getMinor());
    assertEquals(headers, new TreeMap<>(Envelopes.headers(msg.envelope())));
    assertEquals(env.get("body"), JsonParser.parseString(
        JsonFormat.printer().preservingProtoFieldNames().print(msg.body())), "body");
    // The tensors, in the head's order.
    List<JsonElement> tensors = want.getAsJsonArray("tensors").asList();
    assertEquals(tensors.size(), msg.tensors().size());
    for (int i = 0; i < tensors.size(); i++) {
      JsonObject w = tensors.get(i).getAsJsonObject();
      StreamReader.StreamTensor t = msg.tensors().get(i);
      assertEquals(w.get("name").getAsString(), t.name());
      assertEquals(w.get("dtype").getAsString(), Dtypes.name(t.dtype()));
      List<Long> shape = new ArrayList<>();
      w.getAsJsonArray("shape").forEach(d -> shape.add(d.getAsLong()));
      assertArrayEquals(shape.stream().mapToLong(Long::longValue).toArray(), t.shape());
      assertEquals(w.get("raw_size").getAsInt(), t.raw().length);
      assertEquals(w.get("crc32c").getAsString(), crcHex(TensorMapReader.crc32c(t.raw())));
      assertEquals(w.get("raw_hex").getAsString(), HEX.formatHex(t.raw()), t.name());
      System.out.printf("STREAM %s tensor %s %s %s %s%n", name, t.name(), Dtypes.name(t.dtype()),
          shapeText(t.shape()), HEX.formatHex(t.raw()));
    }
    checkChunks(want, values);
    if (!want.get("signed").getAsBoolean()) {
      assertNull(msg.signature());
      assertNull(msg.digest());
      assertEquals("unsigned", assertThrows(FlwireException.class,
          () -> Signatures.verifyStream(msg, Map.of())).check());
      System.out.printf("STREAM %s unsigned%n", name);
      return;
    }
    System.out.printf("STREAM %s verified %s%n", name, checkSignature(want, msg, r0));
  }

  private static byte[] concat(List<byte[]> parts) {
    java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();
    parts.forEach(out::writeBytes);
    return out.toByteArray();
  }

  /** What .json says of each part and chunk; one tensor takes several chunks, of two codecs. */
  private static void checkChunks(JsonObject want, List<byte[]> values) throws Exception {
    Map<Long, Integer> perTensor = new HashMap<>();
    Set<String> codecs = new TreeSet<>();
    for (int k = 0; k < values.size(); k++) {
      JsonObject w = want.getAsJsonArray("parts").get(k).getAsJsonObject();
      StreamReader.Part p = StreamReader.parse(values.get(k));
      String kind = p.head() != null ? "head" : p.chunk() != null ? "chunk" : "seal";
      assertEquals(w.get("kind").getAsString(), kind, "part " + k);
      assertEquals(w.get("index").getAsLong(), p.index());
      assertEquals(w.get("size").getAsInt(), values.get(k).length);
      if (p.chunk() == null) {
        continue;
      }
      Tensor c = TensorMap.parseFrom(p.chunk().elements()).getTensors(0);
      assertEquals(w.get("tensor_index").getAsLong(), p.chunk().tensorIndex(), "part " + k);
      assertEquals(w.get("element_offset").getAsLong(), p.chunk().elementOffset(), "part " + k);
      assertEquals(w.get("element_count").getAsLong(), c.getShape(0), "part " + k);
      assertEquals(w.get("codec").getAsString(), Codec.forNumber(c.getCodecValue()).name());
      assertEquals(w.get("filter").getAsString(), Filter.forNumber(c.getFilterValue()).name());
      assertEquals(w.get("raw_size").getAsLong(), c.getRawSize(), "part " + k);
      assertEquals(w.get("crc32c").getAsString(), crcHex(c.getCrc32C()), "part " + k);
      perTensor.merge(p.chunk().tensorIndex(), 1, Integer::sum);
      codecs.add(c.getCodec().name());
    }
    assertTrue(perTensor.values().stream().anyMatch(n -> n >= 2), "chunks per tensor " + perTensor);
    assertTrue(codecs.size() >= 2, "chunk codecs " + codecs);
  }

  /** D, M and the signature as .json gives them; verified under the test key, not another. */
  private static String checkSignature(JsonObject want, StreamReader.StreamMessage msg, byte[] r0)
      throws Exception {
    JsonObject s = want.getAsJsonObject("signature");
    assertEquals(s.get("signed_length").getAsInt(), r0.length);
    byte[] d = new byte[32];
    Blake3.initHash().update(r0).doFinalize(d);
    assertEquals(s.get("digest_hex").getAsString(), HEX.formatHex(d));
    assertArrayEquals(d, msg.digest());
    String keyId = s.get("key_id").getAsString();
    assertEquals(s.get("signed_payload_hex").getAsString(),
        HEX.formatHex(Signatures.streamPayload(1, keyId, d)));
    assertEquals(s.get("signature_hex").getAsString(),
        HEX.formatHex(msg.signature().getSignature().toByteArray()));
    assertEquals(keyId, msg.signature().getKeyId());
    PublicKey key = Signatures.publicKey(VectorFiles.hex(s.get("public_key_hex").getAsString()));
    String id = Signatures.verifyStream(msg, Map.of(keyId, key));
    assertEquals(keyId, id);
    PublicKey other = Signatures.publicKey(VectorFiles.hex(
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")); // RFC 8032 TEST 2
    assertEquals("bad_signature", assertThrows(FlwireException.class,
        () -> Signatures.verifyStream(msg, Map.of(keyId, other))).check());
    assertEquals("unknown_key", assertThrows(FlwireException.class,
        () -> Signatures.verifyStream(msg, Map.of("client-8", key))).check());
    return id;
  }

  private static List<JsonObject> refusals() {
    List<JsonObject> out = new ArrayList<>();
    VectorFiles.manifest().getAsJsonArray("stream_refusals")
        .forEach(e -> out.add(e.getAsJsonObject()));
    return out;
  }

  /** The check that refused a stream refusal's parts (or, read whole, its signature), or "". */
  private static String refusedFor(JsonObject rf) throws Exception {
    List<byte[]> values = new ArrayList<>();
    rf.getAsJsonArray("parts").forEach(p -> values.add(VectorFiles.checked(p.getAsJsonObject())));
    Read got = read(values);
    String name = rf.get("name").getAsString();
    assertEquals(0, got.reader().pending(), name + ": transfers left under way");
    if (got.message() != null) {
      assertNull(got.refusal(), name + ": a message and a refusal");
      Map<String, PublicKey> trust = rf.has("trust") ? trust(rf.getAsJsonObject("trust"))
          : Map.of();
      try {
        Signatures.verifyStream(got.message(), trust);
        return "";
      } catch (FlwireException e) {
        System.err.println(name + ": " + e.getMessage());
        return e.check();
      }
    }
    assertNotNull(got.refusal(), name + ": neither a message nor a refusal");
    System.err.println(name + ": " + got.refusal().getMessage());
    return got.refusal().check();
  }

  @TestFactory
  Stream<DynamicTest> refusesEveryStreamRefusalForItsCheck() {
    List<JsonObject> all = refusals();
    assertTrue(all.size() >= 20, all.size() + " stream refusals");
    return all.stream().map(rf -> DynamicTest.dynamicTest(rf.get("name").getAsString(), () -> {
      String check = refusedFor(rf);
      System.out.printf("STREAM-REFUSAL %s %s%n", rf.get("name").getAsString(), check);
      assertEquals(rf.get("check").getAsString(), check, rf.get("description").getAsString());
    }));
  }

  @Test
  void everyCheckHasAStreamRefusal() {
    Set<String> checks = new TreeSet<>();
    refusals().forEach(r -> checks.add(r.get("check").getAsString()));
    assertEquals(new TreeSet<>(CHECKS), checks);
  }

  /** Every part twice in a row: the copies are skipped, one message comes out. */
  @Test
  void skipsRedeliveredParts() {
    for (JsonObject want : streams()) {
      StreamReader r = new StreamReader();
      List<StreamReader.StreamMessage> got = new ArrayList<>();
      for (byte[] v : values(want)) {
        for (int copy = 0; copy < 2; copy++) {
          StreamReader.StreamMessage m = r.add(v);
          if (m != null) {
            got.add(m);
          }
        }
      }
      assertEquals(1, got.size(), want.get("name").getAsString());
      assertEquals(want.get("part_count").getAsInt(), r.skipped());
      // The head again, after the seal: a part of a transfer that ended.
      assertNull(r.add(values(want).get(0)));
      assertEquals(want.get("part_count").getAsInt() + 1, r.skipped());
      assertEquals(0, r.pending());
    }
  }

  /** A part lost: the transfer is given up at the next one, and its later parts are skipped. */
  @Test
  void givesUpAtAGap() {
    JsonObject want = streams().get(0);
    List<byte[]> values = values(want);
    StreamReader r = new StreamReader();
    r.add(values.get(0));
    r.add(values.get(1));
    FlwireException e = assertThrows(FlwireException.class, () -> r.add(values.get(3)));
    assertEquals("stream_gap", e.check());
    assertEquals(0, r.pending());
    for (byte[] v : values) {
      assertNull(r.add(v));
    }
    assertEquals(values.size(), r.skipped());
  }

  /**
   * Any byte of any part changed (three ways): the unsigned stream is refused or read unchanged
   * (the change fell where it means nothing), the signed one is refused or does not verify.
   */
  @Test
  void everyChangedByteIsRefusedOrHarmless() throws Exception {
    for (JsonObject want : streams()) {
      List<byte[]> values = values(want);
      StreamReader.StreamMessage original = read(values).message();
      Map<String, PublicKey> trust = Map.of();
      if (want.get("signed").getAsBoolean()) {
        JsonObject s = want.getAsJsonObject("signature");
        trust = Map.of(s.get("key_id").getAsString(),
            Signatures.publicKey(VectorFiles.hex(s.get("public_key_hex").getAsString())));
      }
      int changed = 0;
      int unchanged = 0;
      for (int k = 0; k < values.size(); k++) {
        for (int i = 0; i < values.get(k).length; i++) {
          for (int mask : new int[] {0x01, 0x80, 0xff}) {
            List<byte[]> c = new ArrayList<>(values);
            byte[] b = values.get(k).clone();
            b[i] ^= (byte) mask;
            c.set(k, b);
            StreamReader.StreamMessage got = read(c).message();
            String where = want.get("name").getAsString() + " part " + k + " byte " + i + " ^ "
                + mask;
            changed++;
            if (got == null) {
              continue;
            }
            if (original.signature() != null) {
              Map<String, PublicKey> keys = trust;
              assertThrows(FlwireException.class, () -> Signatures.verifyStream(got, keys),
                  where + " verified");
              continue;
            }
            assertEquals(original.envelope(), got.envelope(), where);
            for (int t = 0; t < original.tensors().size(); t++) {
              assertArrayEquals(original.tensors().get(t).raw(), got.tensors().get(t).raw(), where);
            }
            unchanged++;
          }
        }
      }
      assertTrue(changed > 2000, changed + " changed streams");
      System.err.printf("%s: %d changed streams, %d read unchanged, none verified%n",
          want.get("name").getAsString(), changed, unchanged);
    }
  }
}
