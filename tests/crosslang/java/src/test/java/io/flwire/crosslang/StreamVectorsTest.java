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
import flwire.v1.TensorOuterClass.Lossy;
import flwire.v1.TensorOuterClass.Tensor;
import flwire.v1.TensorOuterClass.TensorMap;
import flwire.v1.Transfer.StreamPart;
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

  /** The 14 check ids of section 14.5 and the four reasons of section 14.3. */
  static final Set<String> CHECKS = Set.of("stream_part", "stream_gap", "stream_no_head",
      "stream_head", "chunk_tensor_index", "chunk_offset", "chunk_elements", "chunk_overrun",
      "chunk_packed", "chunk_decode", "stream_part_count", "stream_crc32c", "stream_incomplete", "stream_signed",
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

  /**
   * What .json says of each part and chunk; one tensor takes several chunks, of two codecs in a
   * lossless stream. A lossy chunk (section 14.5) has its method and parameters, raw_size and
   * CRC-32C of its payload, and decodes on its own, as a whole lossy tensor of shape [k] (section
   * 9.1), to its k elements of the tensor at element_offset. A packed chunk's "packed" entries are
   * its tensors after the first, each of tensor tensor_index + i from its element 0, every one but
   * the last ending its tensor; the whole-message reader refuses its map ([unique_names]: its
   * tensors are all unnamed), so each of its tensors is decoded alone.
   */
  private static void checkChunks(JsonObject want, List<byte[]> values) throws Exception {
    Map<Long, Integer> perTensor = new HashMap<>();
    Set<String> codecs = new TreeSet<>();
    Set<String> methods = new TreeSet<>();
    int lossless = 0;
    int packedChunks = 0;
    JsonElement[] tensors = want.getAsJsonArray("tensors").asList().toArray(new JsonElement[0]);
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
      assertEquals(w.get("tensor_index").getAsLong(), p.chunk().tensorIndex(), "part " + k);
      assertEquals(w.get("element_offset").getAsLong(), p.chunk().elementOffset(), "part " + k);
      // The first tensor's entry is the part's; the packed ones follow.
      List<JsonObject> entries = new ArrayList<>(List.of(w));
      if (w.has("packed")) {
        w.getAsJsonArray("packed").forEach(e -> entries.add(e.getAsJsonObject()));
        packedChunks++;
      }
      TensorMap map = TensorMap.parseFrom(p.chunk().elements());
      assertEquals(entries.size(), map.getTensorsCount(), "part " + k + ": its tensors");
      List<TensorMapReader.DecodedTensor> decoded = new ArrayList<>();
      if (entries.size() == 1) {
        // The chunk's TensorMap read alone by the whole-message reader.
        decoded.addAll(TensorMapReader.decode(p.chunk().elements()).tensors());
      } else {
        assertEquals("unique_names", assertThrows(FlwireException.class,
            () -> TensorMapReader.decode(p.chunk().elements())).check(), "part " + k);
        List<List<Frames.Frame>> frames = TensorMapReader.check(map, p.chunk().elements().length,
            Limits.DEFAULT, false);
        for (int i = 0; i < entries.size(); i++) {
          decoded.add(TensorMapReader.decodeData(map.getTensors(i), frames.get(i)));
        }
      }
      for (int i = 0; i < entries.size(); i++) {
        JsonObject e = entries.get(i);
        String where = "part " + k + (i == 0 ? "" : " packed " + i);
        Tensor c = map.getTensors(i);
        long index = p.chunk().tensorIndex() + i;
        long offset = i == 0 ? p.chunk().elementOffset() : 0;
        assertEquals("", c.getName(), where);
        assertEquals(e.get("tensor_index").getAsLong(), index, where);
        assertEquals(e.get("element_offset").getAsLong(), offset, where);
        assertEquals(e.get("element_count").getAsLong(), c.getShape(0), where);
        assertEquals(e.get("codec").getAsString(), Codec.forNumber(c.getCodecValue()).name());
        assertEquals(e.get("filter").getAsString(), Filter.forNumber(c.getFilterValue()).name());
        assertEquals(e.get("raw_size").getAsLong(), c.getRawSize(), where);
        assertEquals(e.get("crc32c").getAsString(), crcHex(c.getCrc32C()), where);
        perTensor.merge(index, 1, Integer::sum);
        codecs.add(c.getCodec().name());
        // Its k elements are the tensor's, at its offset.
        TensorMapReader.DecodedTensor d = decoded.get(i);
        JsonObject tensor = tensors[(int) index].getAsJsonObject();
        assertEquals(tensor.get("dtype").getAsString(), Dtypes.name(c.getDtypeValue()), where);
        int width = Dtypes.width(c.getDtypeValue());
        int from = Math.toIntExact(offset * width);
        byte[] all = VectorFiles.hex(tensor.get("raw_hex").getAsString());
        assertArrayEquals(java.util.Arrays.copyOfRange(all, from, from + d.raw().length), d.raw(),
            where + ": its elements");
        assertEquals(c.getShape(0) * width, d.raw().length, where);
        if (i < entries.size() - 1) {
          assertEquals(all.length, from + d.raw().length, where + " ends its tensor");
        }
        if (!e.has("lossy")) {
          assertNull(d.lossy(), where + " is lossless");
          lossless++;
          continue;
        }
        JsonObject l = e.getAsJsonObject("lossy");
        assertNotNull(d.lossy(), where + " is lossy");
        assertEquals(l.get("method").getAsString(), Lossy.forNumber(d.lossy().method()).name());
        assertEquals(l.get("block_size").getAsLong(), d.lossy().blockSize(), where);
        assertEquals(l.get("k").getAsLong(), d.lossy().k(), where);
        assertEquals(e.get("decoded_size").getAsLong(), d.raw().length, where);
        assertEquals(c.getRawSize(), d.payload().length, where);
        assertTrue(d.payload().length < d.raw().length, where + ": its payload is smaller");
        methods.add(l.get("method").getAsString());
      }
    }
    assertTrue(perTensor.values().stream().anyMatch(n -> n >= 2), "chunks per tensor " + perTensor);
    if (want.get("name").getAsString().equals("stream_packed")) {
      assertTrue(packedChunks >= 1, "packed chunks in stream_packed");
    }
    if (methods.isEmpty()) {
      assertTrue(codecs.size() >= 2, "chunk codecs " + codecs);
    } else {
      assertTrue(lossless >= 1, "lossy and lossless chunks in one stream");
      System.err.printf("%s: lossy chunks %s%n", want.get("name").getAsString(), methods);
    }
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

  private static List<byte[]> streamValues(String name) {
    for (JsonObject want : streams()) {
      if (want.get("name").getAsString().equals(name)) {
        return values(want);
      }
    }
    throw new AssertionError("no stream " + name + " in the manifest");
  }

  /** values[part] with its chunk's one tensor changed by edit; the check that refuses it. */
  private static FlwireException refusalOf(List<byte[]> values, int part,
      java.util.function.UnaryOperator<Tensor.Builder> edit) throws Exception {
    return chunkRefusal("lossy chunk", values, part,
        m -> m.setTensors(0, edit.apply(m.getTensors(0).toBuilder())));
  }

  /** values[part] with its chunk's TensorMap changed by edit; the check that refuses it. */
  private static FlwireException chunkRefusal(String what, List<byte[]> values, int part,
      java.util.function.UnaryOperator<TensorMap.Builder> edit) throws Exception {
    StreamPart p = StreamPart.parseFrom(values.get(part));
    TensorMap changed = edit.apply(p.getChunk().getElements().toBuilder()).build();
    byte[] v = p.toBuilder().setChunk(p.getChunk().toBuilder().setElements(changed)).build()
        .toByteArray();
    StreamReader r = new StreamReader();
    for (int k = 0; k < part; k++) {
      assertNull(r.add(values.get(k)));
    }
    FlwireException e = assertThrows(FlwireException.class, () -> r.add(v));
    assertEquals(0, r.pending(), "the transfer is given up");
    System.err.println(what + ": " + e.getMessage());
    return e;
  }

  /** An unnamed raw 1-D tensor of dtype holding raw (a whole number of elements of width). */
  private static Tensor rawTensor(flwire.v1.TensorOuterClass.Dtype dtype, byte[] raw) {
    int width = Dtypes.width(dtype.getNumber());
    return Tensor.newBuilder().setDtype(dtype).addShape(raw.length / width)
        .setRawSize(raw.length).setData(com.google.protobuf.ByteString.copyFrom(raw))
        .setCrc32C(TensorMapReader.crc32c(raw)).build();
  }

  /**
   * Section 14.5, packed chunks of stream_packed (part 2: the last 22 elements of enc.weight, then
   * enc.bias and step whole; part 3: dec.weight whole, then the empty mask; part 4: dec.bias, the
   * last tensor): every tensor of a chunk is checked against its tensor before any is decoded, a
   * packed one from its element 0, every one but the last ending its tensor.
   */
  @Test
  void checksEveryTensorOfAPackedChunkBeforeDecodingAny() throws Exception {
    List<byte[]> values = streamValues("stream_packed");
    var f32 = flwire.v1.TensorOuterClass.Dtype.DTYPE_FLOAT32;
    var u8 = flwire.v1.TensorOuterClass.Dtype.DTYPE_UINT8;
    // The first tensor's CRC-32C wrong (decoding it would be [chunk_decode]) and the last one of
    // the wrong dtype: the dtype is found first, nothing decoded.
    FlwireException e = chunkRefusal("packed chunk", values, 2, m -> m
        .setTensors(0, m.getTensors(0).toBuilder().setCrc32C(m.getTensors(0).getCrc32C() ^ 1))
        .setTensors(2, rawTensor(f32, new byte[4])));
    assertEquals("chunk_elements", e.check(), e.getMessage());
    // The last one's CRC-32C wrong alone: [chunk_decode].
    e = chunkRefusal("packed chunk", values, 2, m -> m
        .setTensors(2, m.getTensors(2).toBuilder().setCrc32C(m.getTensors(2).getCrc32C() ^ 1)));
    assertEquals("chunk_decode", e.check(), e.getMessage());
    assertTrue(e.getMessage().contains("[crc32c]"), e.getMessage());
    // A packed tensor with more elements than its tensor: [chunk_overrun].
    e = chunkRefusal("packed chunk", values, 2, m -> m
        .setTensors(2, rawTensor(flwire.v1.TensorOuterClass.Dtype.DTYPE_INT64, new byte[16])));
    assertEquals("chunk_overrun", e.check(), e.getMessage());
    // A packed tensor named: [chunk_elements].
    e = chunkRefusal("packed chunk", values, 2, m -> m
        .setTensors(1, m.getTensors(1).toBuilder().setName("enc.bias")));
    assertEquals("chunk_elements", e.check(), e.getMessage());
    // Packed over the empty mask (which has no chunk): [chunk_overrun].
    e = chunkRefusal("packed chunk", values, 3, m -> m.addTensors(rawTensor(u8, new byte[1])));
    assertEquals("chunk_overrun", e.check(), e.getMessage());
    // A tensor of the chunk but its last that ends short of its tensor: [chunk_packed].
    e = chunkRefusal("packed chunk", values, 3, m -> m
        .setTensors(0, rawTensor(f32, new byte[9 * 4])).addTensors(rawTensor(u8, new byte[1])));
    assertEquals("chunk_packed", e.check(), e.getMessage());
    // Past the last tensor: [chunk_tensor_index].
    e = chunkRefusal("packed chunk", values, 4, m -> m.addTensors(rawTensor(f32, new byte[4])));
    assertEquals("chunk_tensor_index", e.check(), e.getMessage());
    // A chunk of no tensors: [chunk_elements].
    e = chunkRefusal("packed chunk", values, 4, m -> m.clearTensors());
    assertEquals("chunk_elements", e.check(), e.getMessage());
  }

  /**
   * Section 14.5: a lossy chunk passes the checks of section 9.1 as a tensor of shape [k] (a
   * failure is [chunk_elements]); its payload's CRC-32C and its reconstruction (top-k's indices)
   * are [chunk_decode].
   */
  @Test
  void refusesLossyChunksForTheChecksOfSection91() throws Exception {
    List<byte[]> int8 = streamValues("stream_lossy_int8");
    List<byte[]> topk = streamValues("stream_lossy_topk");
    List<byte[]> cast = streamValues("stream_lossy_float16");
    // Part 1 of stream_lossy_int8: 80 elements of float32, block int8 of blocks of 8.
    FlwireException e = refusalOf(int8, 1, t -> t.setLossy(t.getLossy().toBuilder().setBlockSize(4)));
    assertEquals("chunk_elements", e.check());
    assertTrue(e.getMessage().contains("[lossy_params]"), e.getMessage());
    e = refusalOf(int8, 1, t -> t.setRawSize(t.getRawSize() + 1));
    assertEquals("chunk_elements", e.check());
    assertTrue(e.getMessage().contains("[lossy_size]"), e.getMessage());
    e = refusalOf(int8, 1, t -> t.setFilter(Filter.FILTER_BYTE_SHUFFLE));
    assertEquals("chunk_elements", e.check());
    assertTrue(e.getMessage().contains("[lossy_filter]"), e.getMessage());
    e = refusalOf(int8, 1, t -> t.setLossy(t.getLossy().toBuilder().setMethodValue(99)));
    assertEquals("chunk_elements", e.check());
    assertTrue(e.getMessage().contains("[lossy_method]"), e.getMessage());
    e = refusalOf(int8, 1, t -> t.setCrc32C(t.getCrc32C() ^ 1));
    assertEquals("chunk_decode", e.check());
    assertTrue(e.getMessage().contains("[crc32c]"), e.getMessage());
    // Part 1 of stream_lossy_topk: 32 elements, k = 4 (at most 32 / 8).
    e = refusalOf(topk, 1, t -> t.setLossy(t.getLossy().toBuilder().setK(5)));
    assertEquals("chunk_elements", e.check());
    assertTrue(e.getMessage().contains("[lossy_params]"), e.getMessage());
    e = refusalOf(topk, 1, t -> {
      byte[] payload = t.getData().toByteArray(); // 4 float32 values, then 4 uint32 indices
      java.nio.ByteBuffer.wrap(payload).order(java.nio.ByteOrder.LITTLE_ENDIAN).putInt(28, 32);
      return t.setData(com.google.protobuf.ByteString.copyFrom(payload))
          .setCrc32C(TensorMapReader.crc32c(payload));
    });
    assertEquals("chunk_decode", e.check());
    assertTrue(e.getMessage().contains("[topk_indices]"), e.getMessage());
    // Part 4 of stream_lossy_float16: the chunk of "steps" (int64, 3 elements) cast to float16.
    e = refusalOf(cast, 4, t -> t.setLossy(cast(1)).setRawSize(6).setCodecValue(0)
        .setFilterValue(0).setData(com.google.protobuf.ByteString.copyFrom(new byte[6]))
        .setCrc32C(TensorMapReader.crc32c(new byte[6])));
    assertEquals("chunk_elements", e.check());
    assertTrue(e.getMessage().contains("[lossy_dtype]"), e.getMessage());
  }

  private static flwire.v1.TensorOuterClass.LossyEncoding cast(int method) {
    return flwire.v1.TensorOuterClass.LossyEncoding.newBuilder().setMethodValue(method).build();
  }

  /** The limits of section 11 with a lowered expansion bound: 0.5 x the records, at least 256 B. */
  private static final Limits TIGHT = Limits.DEFAULT.withExpansion(0.5, 256);

  /**
   * The part at which a transfer's chunks first decode to more than max(floor, max_expansion x
   * the bytes of its records so far, the head's included), from its .json alone (a chunk decodes
   * to element_count x the dtype's width: a lossy chunk's logical size, not its payload's; a
   * packed chunk, the sum over its tensors); -1 if none does.
   */
  private static int expansionPart(JsonObject want, Limits lim) {
    long arrived = 0;
    long decoded = 0;
    JsonElement[] tensors = want.getAsJsonArray("tensors").asList().toArray(new JsonElement[0]);
    for (JsonElement e : want.getAsJsonArray("parts")) {
      JsonObject p = e.getAsJsonObject();
      arrived += p.get("size").getAsLong();
      if (!p.get("kind").getAsString().equals("chunk")) {
        continue;
      }
      List<JsonObject> entries = new ArrayList<>(List.of(p));
      if (p.has("packed")) {
        p.getAsJsonArray("packed").forEach(x -> entries.add(x.getAsJsonObject()));
      }
      for (JsonObject x : entries) {
        String dtype = tensors[x.get("tensor_index").getAsInt()].getAsJsonObject().get("dtype")
            .getAsString();
        decoded += x.get("element_count").getAsLong()
            * Dtypes.width(flwire.v1.TensorOuterClass.Dtype.valueOf(dtype).getNumber());
      }
      if (decoded > Math.max((double) lim.expansionFloorBytes(), lim.maxExpansion() * arrived)) {
        return p.get("index").getAsInt();
      }
    }
    return -1;
  }

  /** values with part's chunk's CRC-32C changed (same length): decoding it would fail. */
  private static List<byte[]> badCrcAt(List<byte[]> values, int part) throws Exception {
    StreamPart p = StreamPart.parseFrom(values.get(part));
    TensorMap m = p.getChunk().getElements();
    Tensor t = m.getTensors(0);
    TensorMap changed = m.toBuilder().setTensors(0, t.toBuilder().setCrc32C(t.getCrc32C() ^ 1))
        .build();
    byte[] v = p.toBuilder().setChunk(p.getChunk().toBuilder().setElements(changed)).build()
        .toByteArray();
    assertEquals(values.get(part).length, v.length, "the changed part keeps its size");
    List<byte[]> out = new ArrayList<>(values);
    out.set(part, v);
    return out;
  }

  /** Values read in order by r: the part that was refused (-1: none), and the refusal. */
  private static FlwireException readUntilRefused(StreamReader r, List<byte[]> values, int[] at) {
    at[0] = -1;
    for (int k = 0; k < values.size(); k++) {
      try {
        r.add(values.get(k));
      } catch (FlwireException e) {
        at[0] = k;
        return e;
      }
    }
    return null;
  }

  /**
   * Section 14.5 (a SHOULD): what a transfer's chunks decode to is bounded by the bytes of its
   * records received, max(expansion_floor_bytes, max_expansion x them), checked before each chunk
   * is decoded. With the bound lowered, "stream" (zstd chunks) and "stream_lossy_topk" (top-k
   * chunks: their logical size counts, k x width, 4 times their payload's) are refused
   * [chunk_elements] at the chunk past it, the transfer given up, even when that chunk's CRC-32C
   * is wrong (decoding it would be [chunk_decode]: the bound came first); with the bound off (a
   * max_expansion of 0) the same streams read to what the defaults give.
   */
  @Test
  void refusesChunksPastTheStreamsExpansionBound() throws Exception {
    Map<String, StreamReader.StreamMessage> byDefault = new HashMap<>();
    for (JsonObject want : streams()) {
      String name = want.get("name").getAsString();
      assertEquals(-1, expansionPart(want, Limits.DEFAULT), name);
      Read got = read(values(want)); // the defaults
      assertNull(got.refusal(), name);
      assertNotNull(got.message(), name);
      byDefault.put(name, got.message());
    }
    for (String name : List.of("stream", "stream_lossy_topk")) {
      JsonObject want = streams().stream()
          .filter(w -> w.get("name").getAsString().equals(name)).findFirst().orElseThrow();
      List<byte[]> values = values(want);
      int part = expansionPart(want, TIGHT);
      assertEquals(3, part, name + ": the part past the bound");
      int[] at = new int[1];
      for (List<byte[]> v : List.of(values, badCrcAt(values, part))) {
        StreamReader r = new StreamReader(TIGHT);
        FlwireException e = readUntilRefused(r, v, at);
        assertNotNull(e, name + " read");
        assertEquals(part, at[0], name + ": refused at " + e.getMessage());
        assertEquals("chunk_elements", e.check(), e.getMessage());
        assertTrue(e.getMessage().contains("[max_expansion]")
            && e.getMessage().contains("the stream's chunks decode to "), e.getMessage());
        assertEquals(0, r.pending(), "the transfer is given up");
        for (byte[] later : v.subList(part + 1, v.size())) {
          assertNull(r.add(later)); // skipped
        }
        System.err.println(name + ": " + e.getMessage());
      }
      // The bound off, the rest of the limits as tight: the stream reads as with the defaults,
      // and the changed CRC-32C is found when the chunk is decoded.
      Limits off = TIGHT.withExpansion(0, TIGHT.expansionFloorBytes());
      StreamReader r = new StreamReader(off);
      StreamReader.StreamMessage msg = null;
      for (byte[] v : values) {
        msg = r.add(v);
      }
      assertNotNull(msg, name + " with max_expansion off");
      StreamReader.StreamMessage ref = byDefault.get(name);
      assertEquals(ref.envelope(), msg.envelope());
      assertEquals(ref.crc32c(), msg.crc32c());
      for (int t = 0; t < ref.tensors().size(); t++) {
        assertArrayEquals(ref.tensors().get(t).raw(), msg.tensors().get(t).raw(), name);
      }
      FlwireException e = readUntilRefused(new StreamReader(off), badCrcAt(values, part), at);
      assertNotNull(e, name + " with a bad CRC-32C");
      assertEquals(part, at[0]);
      assertEquals("chunk_decode", e.check(), e.getMessage());
    }
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
