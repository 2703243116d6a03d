package io.flwire.crosslang;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;

/**
 * tests/vectors/refusals (manifest.json, "refusals"): each breaks one reader check, named by its
 * id; the reader must refuse it for that check ({@link FlwireException#check()}).
 */
class RefusalVectorsTest {

  private static List<JsonObject> refusals() {
    List<JsonObject> r = new ArrayList<>();
    VectorFiles.manifest().getAsJsonArray("refusals").forEach(e -> r.add(e.getAsJsonObject()));
    return r;
  }

  @TestFactory
  Stream<DynamicTest> refusesEveryRefusalVectorForItsCheck() {
    return refusals().stream().map(r -> DynamicTest.dynamicTest(r.get("name").getAsString(), () -> {
      byte[] b = VectorFiles.checked(r.getAsJsonObject("file"));
      assertEquals("flwire.v1.TensorMap", r.get("message").getAsString());
      Limits lim = Limits.DEFAULT;
      if (r.has("limits")) {
        for (var e : r.getAsJsonObject("limits").entrySet()) {
          lim = lim.with(e.getKey(), e.getValue().getAsLong());
        }
      }
      Limits limits = lim;
      FlwireException e = assertThrows(FlwireException.class,
          () -> TensorMapReader.decode(b, limits), r.get("description").getAsString());
      assertEquals(r.get("check").getAsString(), e.check(), e.getMessage());
    }));
  }

  @Test
  void everyCheckHasAVector() {
    Set<String> checks = new TreeSet<>();
    refusals().forEach(r -> checks.add(r.get("check").getAsString()));
    assertTrue(refusals().size() >= 56, refusals().size() + " refusal vectors");
    assertEquals(Set.of("bool", "codec", "crc32c", "data_size", "decompress", "dtype",
        "empty_crc32c", "filter", "frames", "limits", "lossy_dtype", "lossy_filter",
        "lossy_method", "lossy_not_smaller", "lossy_params", "lossy_size", "max_expansion",
        "max_rank", "max_tensors", "max_unknown_bytes", "protobuf", "raw_size", "shape",
        "topk_indices", "unique_names"), checks);
  }
}
