package io.flwire.crosslang;

import com.google.gson.JsonObject;
import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.StringJoiner;

/** The one-line summary of a decoded message that the live test compares with what Python sent. */
final class Summary {
  private Summary() {}

  /**
   * {"message_id", "type", "sender_id", "round", "tensors", "bytes", "sha256"}: sha256 over, per
   * tensor in ascending order of the UTF-8 bytes of its name, name + 0x00 + dtype enum name +
   * 0x00 + shape dims joined by "," + 0x00 + its decoded raw bytes.
   */
  static JsonObject of(Envelopes.Decoded d) {
    List<TensorMapReader.DecodedTensor> ts = d.weights() == null ? List.of()
        : new ArrayList<>(d.weights().tensors());
    ts.sort((a, b) -> CanonicalKeys.compare(a.name(), b.name()));
    MessageDigest sha;
    try {
      sha = MessageDigest.getInstance("SHA-256");
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException(e);
    }
    long bytes = 0;
    for (TensorMapReader.DecodedTensor t : ts) {
      ByteArrayOutputStream head = new ByteArrayOutputStream();
      head.writeBytes(t.name().getBytes(StandardCharsets.UTF_8));
      head.write(0);
      head.writeBytes(Dtypes.name(t.dtype()).getBytes(StandardCharsets.US_ASCII));
      head.write(0);
      StringJoiner dims = new StringJoiner(",");
      for (long dim : t.shape()) {
        dims.add(Long.toString(dim));
      }
      head.writeBytes(dims.toString().getBytes(StandardCharsets.US_ASCII));
      head.write(0);
      sha.update(head.toByteArray());
      sha.update(t.raw());
      bytes += t.rawSize();
    }
    JsonObject o = new JsonObject();
    o.addProperty("message_id", d.envelope().getMessageId());
    o.addProperty("type", d.type());
    o.addProperty("sender_id", d.envelope().getSenderId());
    o.addProperty("round", d.round());
    o.addProperty("tensors", ts.size());
    o.addProperty("bytes", bytes);
    o.addProperty("sha256", HexFormat.of().formatHex(sha.digest()));
    return o;
  }

  /** Ascending order of UTF-8 bytes (unsigned), a prefix first. */
  static final class CanonicalKeys {
    private CanonicalKeys() {}

    static int compare(String a, String b) {
      return java.util.Arrays.compareUnsigned(a.getBytes(StandardCharsets.UTF_8),
          b.getBytes(StandardCharsets.UTF_8));
    }
  }
}
