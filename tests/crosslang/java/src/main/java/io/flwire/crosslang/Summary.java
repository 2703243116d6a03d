package io.flwire.crosslang;

import com.google.gson.JsonObject;
import com.google.protobuf.Descriptors.FieldDescriptor;
import flwire.v1.Messages.Envelope;
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

  /** One tensor as the summary sees it: its decoded bytes (a lossy tensor's reconstruction). */
  private record Item(String name, int dtype, long[] shape, byte[] raw, long bytes) {}

  /** The summary of a message that arrived in one record or in transfer parts. */
  static JsonObject of(Envelopes.Decoded d) {
    List<Item> ts = new ArrayList<>();
    if (d.weights() != null) {
      for (TensorMapReader.DecodedTensor t : d.weights().tensors()) {
        ts.add(new Item(t.name(), t.dtype(), t.shape(), t.raw(), t.rawSize()));
      }
    }
    return of(d.envelope(), d.type(), d.round(), ts);
  }

  /** The summary of a streamed transfer (spec section 14.5). */
  static JsonObject of(StreamReader.StreamMessage m) {
    List<Item> ts = new ArrayList<>();
    for (StreamReader.StreamTensor t : m.tensors()) {
      ts.add(new Item(t.name(), t.dtype(), t.shape(), t.raw(), t.raw().length));
    }
    FieldDescriptor f = m.body().getDescriptorForType().findFieldByName("round_id");
    return of(m.envelope(), m.type(), f == null ? -1 : (Long) m.body().getField(f), ts);
  }

  /**
   * {"message_id", "type", "sender_id", "round", "tensors", "bytes", "sha256"}: sha256 over, per
   * tensor in ascending order of the UTF-8 bytes of its name, name + 0x00 + dtype enum name +
   * 0x00 + shape dims joined by "," + 0x00 + its decoded raw bytes.
   */
  private static JsonObject of(Envelope env, String type, long round, List<Item> ts) {
    ts.sort((a, b) -> CanonicalKeys.compare(a.name(), b.name()));
    MessageDigest sha;
    try {
      sha = MessageDigest.getInstance("SHA-256");
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException(e);
    }
    long bytes = 0;
    for (Item t : ts) {
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
      bytes += t.bytes();
    }
    JsonObject o = new JsonObject();
    o.addProperty("message_id", env.getMessageId());
    o.addProperty("type", type);
    o.addProperty("sender_id", env.getSenderId());
    o.addProperty("round", round);
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
